import CRdKafka

/// An error reported by librdkafka, with its code name (e.g. `_TRANSPORT`, `UNKNOWN_TOPIC_OR_PART`).
public struct KafkaError: Error, CustomStringConvertible, Equatable {
    public var code: Int32
    public var message: String

    public init(code: Int32, message: String) {
        self.code = code
        self.message = message
    }

    init(_ err: rd_kafka_resp_err_t, _ context: String = "") {
        code = err.rawValue
        let text = String(cString: rd_kafka_err2str(err))
        message = context.isEmpty ? text : "\(context): \(text)"
    }

    /// librdkafka's short name of the code, as used in metrics labels.
    public var name: String { String(cString: rd_kafka_err2name(rd_kafka_resp_err_t(rawValue: code))) }

    public var description: String { "\(message) (\(name))" }

    public static func config(_ message: String) -> KafkaError { KafkaError(code: -1, message: message) }
}

/// A topic, partition and offset. `offset` follows Kafka's convention for commits: the next
/// offset to read.
public struct TopicPartitionOffset: Hashable, Sendable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    public init(topic: String, partition: Int32, offset: Int64) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
    }
    public var description: String { "\(topic)[\(partition)]@\(offset)" }
}

/// Builds a `rd_kafka_conf_t` from string properties, passed to librdkafka untouched.
func makeConf(_ properties: [String: String]) throws -> OpaquePointer {
    let conf = rd_kafka_conf_new()!
    var errbuf = [CChar](repeating: 0, count: 512)
    for (k, v) in properties.sorted(by: { $0.key < $1.key }) {
        if rd_kafka_conf_set(conf, k, v, &errbuf, errbuf.count) != RD_KAFKA_CONF_OK {
            rd_kafka_conf_destroy(conf)
            throw KafkaError.config("librdkafka property \(k): \(String(cString: errbuf))")
        }
    }
    return conf
}

func partitionList(_ items: [TopicPartitionOffset]) -> UnsafeMutablePointer<rd_kafka_topic_partition_list_t> {
    let list = rd_kafka_topic_partition_list_new(Int32(max(items.count, 1)))!
    for it in items {
        let tp = rd_kafka_topic_partition_list_add(list, it.topic, it.partition)!
        tp.pointee.offset = it.offset
    }
    return list
}

func items(of list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) -> [TopicPartitionOffset] {
    var out: [TopicPartitionOffset] = []
    let n = Int(list.pointee.cnt)
    out.reserveCapacity(n)
    for k in 0..<n {
        let e = list.pointee.elems[k]
        out.append(TopicPartitionOffset(topic: String(cString: e.topic), partition: e.partition, offset: e.offset))
    }
    return out
}

/// The version of the librdkafka the process runs with.
public var librdkafkaVersion: String { String(cString: rd_kafka_version_str()) }
