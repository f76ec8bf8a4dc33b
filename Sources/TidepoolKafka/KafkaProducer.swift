import CRdKafka

/// The outcome of one produced record, reported on the thread that calls `poll` or `flush`.
public struct DeliveryReport {
    /// The value passed to `produce(opaque:)`.
    public var opaque: UInt
    public var error: KafkaError?
    public var topic: String
    public var partition: Int32
    public var offset: Int64
}

/// An idempotent producer over librdkafka (`enable.idempotence=true`: no duplicates or reordering
/// from internal retries). Delivery failures are never silent: each one reaches `onDelivery` with
/// its error, and `fatalError` is set when librdkafka declares the producer unusable.
public final class KafkaProducer {
    let rk: OpaquePointer
    private let box: Unmanaged<ProducerBox>

    /// Properties set unless the configuration overrides them.
    public static let defaults: [String: String] = [
        "enable.idempotence": "true",
        "acks": "all",
        "linger.ms": "5",
        "batch.num.messages": "10000",
        "compression.codec": "lz4",
        // Java clients partition by murmur2 of the key: use the same so triggers land where a
        // Java producer would put the same customer.
        "partitioner": "murmur2_random",
        "queue.buffering.max.messages": "1000000",
    ]

    public init(properties: [String: String], onDelivery: @escaping (DeliveryReport) -> Void) throws {
        var props = KafkaProducer.defaults
        for (k, v) in properties { props[k] = v }
        let conf = try makeConf(props)
        let b = ProducerBox(onDelivery: onDelivery)
        box = Unmanaged.passRetained(b)
        rd_kafka_conf_set_opaque(conf, box.toOpaque())
        rd_kafka_conf_set_dr_msg_cb(conf) { _, msg, opaque in
            guard let msg, let opaque else { return }
            let b = Unmanaged<ProducerBox>.fromOpaque(opaque).takeUnretainedValue()
            let m = msg.pointee
            let err = m.err == RD_KAFKA_RESP_ERR_NO_ERROR ? nil : KafkaError(m.err, "delivery")
            let topic = m.rkt.map { b.topicName($0) } ?? ""
            b.onDelivery(DeliveryReport(opaque: UInt(bitPattern: m._private), error: err,
                                        topic: topic, partition: m.partition, offset: m.offset))
        }
        rd_kafka_conf_set_error_cb(conf) { rk, code, reason, opaque in
            guard let opaque else { return }
            let b = Unmanaged<ProducerBox>.fromOpaque(opaque).takeUnretainedValue()
            let code = rd_kafka_resp_err_t(rawValue: code)
            if code == RD_KAFKA_RESP_ERR__FATAL, let rk {
                var buf = [CChar](repeating: 0, count: 512)
                let orig = rd_kafka_fatal_error(rk, &buf, buf.count)
                b.fatal = KafkaError(orig, "fatal producer error: \(String(cString: buf))")
            } else {
                b.lastError = KafkaError(code, reason.map { String(cString: $0) } ?? "")
            }
        }
        var errbuf = [CChar](repeating: 0, count: 512)
        guard let handle = rd_kafka_new(RD_KAFKA_PRODUCER, conf, &errbuf, errbuf.count) else {
            box.release()
            throw KafkaError.config("cannot create producer: \(String(cString: errbuf))")
        }
        rk = handle
    }

    deinit {
        rd_kafka_flush(rk, 10_000)
        rd_kafka_destroy(rk)
        box.release()
    }

    /// Set when librdkafka raised a fatal error: the producer must not be used any more.
    public var fatalError: KafkaError? { box.takeUnretainedValue().fatal }
    /// The last non-fatal error librdkafka reported (connection loss and the like; it retries).
    public var lastError: KafkaError? { box.takeUnretainedValue().lastError }

    /// A handle of `name` for `produce(to:)`.
    public func topic(_ name: String) throws -> KafkaTopic {
        guard let rkt = rd_kafka_topic_new(rk, name, nil) else {
            throw KafkaError(rd_kafka_last_error(), "topic handle for \(name)")
        }
        return KafkaTopic(name: name, rkt: rkt, producer: self)
    }

    /// Enqueues one record. The bytes are copied. When the local queue is full this serves
    /// delivery reports and retries, so it blocks only as long as the broker is behind.
    /// (A handle for this one record, as librdkafka takes one by name: a caller producing many
    /// records keeps a `topic(_:)` and produces `to:` it.)
    public func produce(topic: String, key: UnsafeRawBufferPointer?, value: UnsafeRawBufferPointer?,
                        headers: [(String, [UInt8])] = [], opaque: UInt = 0) throws {
        try produce(to: self.topic(topic), key: key, value: value, headers: headers, opaque: opaque)
    }

    /// `produce(topic:...)` by the topic's handle: librdkafka does not look the topic up by name
    /// (under the client's write lock) for every record.
    public func produce(to topic: KafkaTopic, key: UnsafeRawBufferPointer?, value: UnsafeRawBufferPointer?,
                        headers: [(String, [UInt8])] = [], opaque: UInt = 0) throws {
        while true {
            var hdrs: OpaquePointer? = nil
            if !headers.isEmpty {
                hdrs = rd_kafka_headers_new(headers.count)
                for (name, v) in headers {
                    v.withUnsafeBytes { b in _ = rd_kafka_header_add(hdrs, name, -1, b.baseAddress, b.count) }
                }
            }
            let err = tp_produce(rk, topic.rkt, tp_partition_ua(), key?.baseAddress, key?.count ?? 0, value?.baseAddress,
                                 value?.count ?? 0, hdrs, UnsafeMutableRawPointer(bitPattern: opaque))
            if err == RD_KAFKA_RESP_ERR_NO_ERROR { return }
            // librdkafka owns the headers only once it accepts the record.
            if let hdrs { rd_kafka_headers_destroy(hdrs) }
            if err == RD_KAFKA_RESP_ERR__QUEUE_FULL {
                rd_kafka_poll(rk, 50)
                continue
            }
            throw KafkaError(err, "produce to \(topic.name)")
        }
    }

    public func produce(topic: String, key: [UInt8]?, value: [UInt8]?, headers: [(String, [UInt8])] = [], opaque: UInt = 0) throws {
        try Self.withBytes(key, value) { k, v in try produce(topic: topic, key: k, value: v, headers: headers, opaque: opaque) }
    }

    public func produce(to topic: KafkaTopic, key: [UInt8]?, value: [UInt8]?, headers: [(String, [UInt8])] = [], opaque: UInt = 0) throws {
        try Self.withBytes(key, value) { k, v in try produce(to: topic, key: k, value: v, headers: headers, opaque: opaque) }
    }

    private static func withBytes(_ key: [UInt8]?, _ value: [UInt8]?,
                                  _ body: (UnsafeRawBufferPointer?, UnsafeRawBufferPointer?) throws -> Void) rethrows {
        func withOpt(_ a: [UInt8]?, _ body: (UnsafeRawBufferPointer?) throws -> Void) rethrows {
            if let a { try a.withUnsafeBytes { try body($0) } } else { try body(nil) }
        }
        try withOpt(key) { k in try withOpt(value) { v in try body(k, v) } }
    }

    /// Serves delivery reports; returns how many were served.
    @discardableResult
    public func poll(timeoutMs: Int32 = 0) -> Int { Int(rd_kafka_poll(rk, timeoutMs)) }

    /// Records enqueued but not yet acknowledged (or failed).
    public var outstanding: Int { Int(rd_kafka_outq_len(rk)) }

    /// Waits until every enqueued record is acknowledged or has failed, serving delivery reports.
    public func flush(timeoutMs: Int32) throws {
        let err = rd_kafka_flush(rk, timeoutMs)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, "flush (\(outstanding) records outstanding)") }
    }

    /// High watermark of a partition, asked of the broker.
    public func queryWatermarks(topic: String, partition: Int32, timeoutMs: Int32 = 5000) throws -> (low: Int64, high: Int64) {
        var lo: Int64 = 0, hi: Int64 = 0
        let err = rd_kafka_query_watermark_offsets(rk, topic, partition, &lo, &hi, timeoutMs)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, "query watermarks \(topic)[\(partition)]") }
        return (lo, hi)
    }

    /// Number of partitions of `topic` from the broker's metadata.
    public func partitionCount(topic: String, timeoutMs: Int32 = 5000) throws -> Int {
        let rkt = rd_kafka_topic_new(rk, topic, nil)
        defer { rd_kafka_topic_destroy(rkt) }
        var md: UnsafePointer<rd_kafka_metadata>? = nil
        let err = rd_kafka_metadata(rk, 0, rkt, &md, timeoutMs)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR, let md else { throw KafkaError(err, "metadata for \(topic)") }
        defer { rd_kafka_metadata_destroy(md) }
        guard md.pointee.topic_cnt > 0 else { return 0 }
        let t = md.pointee.topics[0]
        if t.err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(t.err, "metadata for \(topic)") }
        return Int(t.partition_cnt)
    }
}

/// A topic of a producer, by librdkafka's handle (`KafkaProducer.topic(_:)`). It keeps its
/// producer alive: a handle must be destroyed before its client.
public final class KafkaTopic {
    public let name: String
    let rkt: OpaquePointer
    private let producer: KafkaProducer

    init(name: String, rkt: OpaquePointer, producer: KafkaProducer) {
        self.name = name
        self.rkt = rkt
        self.producer = producer
    }

    deinit { rd_kafka_topic_destroy(rkt) }
}

final class ProducerBox {
    let onDelivery: (DeliveryReport) -> Void
    var fatal: KafkaError?
    var lastError: KafkaError?
    /// The topic of the last delivery report, by its handle and its name's address: reports come
    /// in runs of one topic, and a String made from the C name was an allocation per report (a
    /// name over 15 bytes, as `tidepool.triggers`, is not stored inline).
    private var lastTopic: (rkt: OpaquePointer, cName: UnsafePointer<CChar>, name: String)?
    init(onDelivery: @escaping (DeliveryReport) -> Void) { self.onDelivery = onDelivery }

    func topicName(_ rkt: OpaquePointer) -> String {
        let cName = rd_kafka_topic_name(rkt)!
        if let l = lastTopic, l.rkt == rkt, l.cName == cName { return l.name }
        let name = String(cString: cName)
        lastTopic = (rkt, cName, name)
        return name
    }
}
