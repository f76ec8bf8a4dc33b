import CRdKafka

/// Receives partition assignment changes. The daemon owns this: it is called on the consumer's
/// polling thread, inside the poll, before librdkafka applies the change, so the listener can
/// finish in-flight work, store and commit offsets for partitions that are about to go.
public protocol RebalanceListener: AnyObject {
    /// Partitions were added to this member's assignment. Return the start offset for each
    /// partition if the listener wants to seek (nil: resume from the committed offset).
    func partitionsAssigned(_ consumer: KafkaConsumer, _ partitions: [TopicPartitionOffset]) -> [TopicPartitionOffset]?
    /// Partitions are about to be taken away in an orderly way. Offsets can still be stored and
    /// committed for them during this call.
    func partitionsRevoked(_ consumer: KafkaConsumer, _ partitions: [TopicPartitionOffset])
    /// Partitions were lost (session timeout, fenced): another member may own them already, so
    /// nothing must be committed for them.
    func partitionsLost(_ consumer: KafkaConsumer, _ partitions: [TopicPartitionOffset])
}

/// One consumed record, borrowed from librdkafka until the batch is released.
public struct KafkaMessage {
    let ptr: UnsafeMutablePointer<rd_kafka_message_t>
    public let topic: String

    /// nil for a normal record; otherwise the consumer error (partition EOF included).
    public var error: KafkaError? {
        let e = ptr.pointee.err
        return e == RD_KAFKA_RESP_ERR_NO_ERROR ? nil : KafkaError(e, errorText)
    }
    public var isPartitionEOF: Bool { ptr.pointee.err == RD_KAFKA_RESP_ERR__PARTITION_EOF }
    public var partition: Int32 { ptr.pointee.partition }
    public var offset: Int64 { ptr.pointee.offset }
    /// The key bytes, or nil when the record has no key.
    public var key: UnsafeRawBufferPointer? {
        guard let k = ptr.pointee.key else { return nil }
        return UnsafeRawBufferPointer(start: k, count: ptr.pointee.key_len)
    }
    /// The value bytes (empty for a null value).
    public var value: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: ptr.pointee.payload, count: ptr.pointee.payload == nil ? 0 : ptr.pointee.len)
    }
    public var valueIsNull: Bool { ptr.pointee.payload == nil }
    /// Broker/producer timestamp in ms, when the record has one.
    public var timestampMs: Int64? {
        var type = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
        let ts = rd_kafka_message_timestamp(ptr, &type)
        return type == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? nil : ts
    }
    /// The record's headers in order (name, value bytes; nil value for a null header).
    public var headers: [(String, [UInt8]?)] {
        var hdrs: OpaquePointer? = nil
        guard rd_kafka_message_headers(ptr, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR, let hdrs else { return [] }
        var out: [(String, [UInt8]?)] = []
        var idx = 0
        while true {
            var name: UnsafePointer<CChar>? = nil
            var value: UnsafeRawPointer? = nil
            var size = 0
            guard rd_kafka_header_get_all(hdrs, idx, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR, let name else { break }
            out.append((String(cString: name), value.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) }))
            idx += 1
        }
        return out
    }

    /// The first header named `name`, as UTF-8 text.
    public func header(_ name: String) -> String? {
        headers.first { $0.0 == name }?.1.map { String(decoding: $0, as: UTF8.self) }
    }

    private var errorText: String {
        guard let p = ptr.pointee.payload, ptr.pointee.len > 0 else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: p, count: ptr.pointee.len), as: UTF8.self)
    }
}

/// A high-level (group) consumer over librdkafka with batch consumption and manual offset store.
///
/// - `enable.auto.offset.store` is always false: an offset is stored only when the daemon says its
///   record is fully processed (`store`). Auto-commit, when on, commits only stored offsets.
/// - `partition.assignment.strategy` defaults to cooperative-sticky; the rebalance callback is
///   routed to the `RebalanceListener`, which runs before the assignment changes.
/// - Every other librdkafka property comes from the configuration untouched.
public final class KafkaConsumer {
    let rk: OpaquePointer
    let queue: OpaquePointer
    private weak var listener: RebalanceListener?
    /// Room for one poll's messages. Memory of its own, not an array property: reading an
    /// array property of a class is an exclusivity-checked access (~80 instructions per record).
    private let buffer: UnsafeMutableBufferPointer<UnsafeMutablePointer<rd_kafka_message_t>?>
    private var topicNames: [OpaquePointer: String] = [:]
    /// Partitions currently assigned to this member.
    public private(set) var assignment: Set<TopicPartitionKey> = []
    public private(set) var closed = false

    public struct TopicPartitionKey: Hashable, Sendable {
        public var topic: String
        public var partition: Int32
        public init(topic: String, partition: Int32) { self.topic = topic; self.partition = partition }
    }

    /// Properties set unless the configuration overrides them.
    public static let defaults: [String: String] = [
        "partition.assignment.strategy": "cooperative-sticky",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": "true",
        "auto.commit.interval.ms": "1000",
        "enable.partition.eof": "true",
        // librdkafka's 500 ms default holds a fetch that long when a partition is quiet.
        "fetch.wait.max.ms": "50",
        "queued.min.messages": "1000000",
    ]

    public init(properties: [String: String], listener: RebalanceListener, maxBatch: Int = 10_000) throws {
        if let v = properties["enable.auto.offset.store"], v != "false" {
            throw KafkaError.config("enable.auto.offset.store must stay false: Tidepool stores an offset only after its event is processed")
        }
        guard properties["group.id"] != nil else { throw KafkaError.config("group.id is required for the consumer") }
        var props = KafkaConsumer.defaults
        for (k, v) in properties { props[k] = v }
        props["enable.auto.offset.store"] = "false"
        let conf = try makeConf(props)
        self.listener = listener
        buffer = .allocate(capacity: maxBatch)
        buffer.initialize(repeating: nil)
        let box = Unmanaged<ConsumerBox>.passRetained(ConsumerBox())
        rd_kafka_conf_set_opaque(conf, box.toOpaque())
        rd_kafka_conf_set_rebalance_cb(conf) { rk, err, partitions, opaque in
            guard let opaque, let partitions else { return }
            let box = Unmanaged<ConsumerBox>.fromOpaque(opaque).takeUnretainedValue()
            if let consumer = box.consumer {
                consumer.handleRebalance(err: err, partitions: partitions)
            } else if let rk {
                // The consumer is being deinitialised (its close runs from deinit, when weak
                // references are already nil). librdkafka still needs the change applied, or
                // close would wait for it forever.
                KafkaConsumer.applyWithoutListener(rk, err, partitions)
            }
        }
        var errbuf = [CChar](repeating: 0, count: 512)
        guard let handle = rd_kafka_new(RD_KAFKA_CONSUMER, conf, &errbuf, errbuf.count) else {
            box.release()
            buffer.deallocate()
            throw KafkaError.config("cannot create consumer: \(String(cString: errbuf))")
        }
        rk = handle
        rd_kafka_poll_set_consumer(rk)
        queue = rd_kafka_queue_get_consumer(rk)
        boxRef = box
        box.takeUnretainedValue().consumer = self
    }

    private var boxRef: Unmanaged<ConsumerBox>

    deinit {
        if !closed { close() }
        rd_kafka_queue_destroy(queue)
        rd_kafka_destroy(rk)
        boxRef.release()
        buffer.deallocate()
    }

    public func subscribe(_ topics: [String]) throws {
        let list = rd_kafka_topic_partition_list_new(Int32(topics.count))!
        defer { rd_kafka_topic_partition_list_destroy(list) }
        for t in topics { rd_kafka_topic_partition_list_add(list, t, -1) }
        let err = rd_kafka_subscribe(rk, list)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, "subscribe") }
    }

    /// Hands up to `maxBatch` records already fetched to `body`, then releases them; when none
    /// are, waits up to `timeoutMs` for the first one and hands over it and whatever came with it.
    /// Rebalance callbacks run inside this call. Returns the number of messages.
    @discardableResult
    public func poll(timeoutMs: Int32, _ body: (KafkaMessage) -> Void) -> Int {
        // librdkafka's batch consume waits until the batch is full or the timeout has passed, so
        // records that arrive early in the wait would sit out the rest of it (up to the poll
        // timeout of added latency at moderate rates). Instead: take what is already fetched;
        // when that is nothing, wait for the first record alone (rd_kafka_consume_queue returns
        // as soon as one is there) and then take what came with it.
        let n = { (b: UnsafeMutableBufferPointer<UnsafeMutablePointer<rd_kafka_message_t>?>) -> Int in
            let got = Int(rd_kafka_consume_batch_queue(queue, 0, b.baseAddress, b.count))
            guard got == 0, timeoutMs > 0, b.count > 0 else { return got }
            guard let first = rd_kafka_consume_queue(queue, Int32(timeoutMs)) else { return 0 }
            b[0] = first
            let more = b.count > 1 ? rd_kafka_consume_batch_queue(queue, 0, b.baseAddress! + 1, b.count - 1) : 0
            return 1 + max(0, Int(more))
        }(buffer)
        guard n > 0 else { return 0 }
        // A poll's records come in runs of one topic: the name of the last one is kept here
        // (looked up in `topicNames` for every record, it was a hash of the pointer each time).
        var last: (rkt: OpaquePointer, name: String)? = nil
        for k in 0..<n {
            let m = buffer[k]!
            let topic: String
            if let rkt = m.pointee.rkt, let l = last, l.rkt == rkt {
                topic = l.name
            } else {
                topic = topicName(m.pointee.rkt)
                if let rkt = m.pointee.rkt { last = (rkt, topic) }
            }
            body(KafkaMessage(ptr: m, topic: topic))
            rd_kafka_message_destroy(m)
            buffer[k] = nil
        }
        return n
    }

    private func topicName(_ rkt: OpaquePointer?) -> String {
        guard let rkt else { return "" }
        if let s = topicNames[rkt] { return s }
        let s = String(cString: rd_kafka_topic_name(rkt))
        topicNames[rkt] = s
        return s
    }

    /// Marks records as processed: `offsets` are the next offsets to read (last processed + 1).
    /// Offsets of partitions no longer assigned are skipped (librdkafka would refuse them).
    public func store(_ offsets: [TopicPartitionOffset]) throws {
        let mine = offsets.filter { assignment.contains(TopicPartitionKey(topic: $0.topic, partition: $0.partition)) }
        guard !mine.isEmpty else { return }
        let list = partitionList(mine)
        defer { rd_kafka_topic_partition_list_destroy(list) }
        let err = rd_kafka_offsets_store(rk, list)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, "offsets_store") }
    }

    /// Commits the stored offsets synchronously. "Nothing to commit" is not an error.
    public func commitStored() throws {
        let err = rd_kafka_commit(rk, nil, 0)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR__NO_OFFSET {
            throw KafkaError(err, "commit")
        }
    }

    /// Reads these partitions from these offsets without joining a group (no rebalances, nothing
    /// committed unless asked): for reading a topic back, e.g. the trigger topic on restore.
    public func assign(_ partitions: [TopicPartitionOffset]) throws {
        let list = partitionList(partitions)
        defer { rd_kafka_topic_partition_list_destroy(list) }
        let err = rd_kafka_assign(rk, list)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, "assign") }
    }

    /// Commits exactly these offsets (next offsets to read) synchronously, skipping partitions this
    /// member no longer owns: their new owner commits for them now.
    public func commit(_ offsets: [TopicPartitionOffset]) throws {
        let mine = offsets.filter { assignment.contains(TopicPartitionKey(topic: $0.topic, partition: $0.partition)) }
        guard !mine.isEmpty else { return }
        let list = partitionList(mine)
        defer { rd_kafka_topic_partition_list_destroy(list) }
        let err = rd_kafka_commit(rk, list, 0)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR__NO_OFFSET { throw KafkaError(err, "commit") }
    }

    /// The group's committed offsets for `partitions` (offset -1001 when none).
    public func committed(_ partitions: [TopicPartitionKey], timeoutMs: Int32 = 5000) throws -> [TopicPartitionOffset] {
        let list = partitionList(partitions.map { TopicPartitionOffset(topic: $0.topic, partition: $0.partition, offset: -1001) })
        defer { rd_kafka_topic_partition_list_destroy(list) }
        let err = rd_kafka_committed(rk, list, timeoutMs)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, "committed") }
        return items(of: list)
    }

    /// High watermark of a partition as last seen in fetch responses (no network round trip;
    /// nil until the first fetch). Consumer lag = this - the next offset to process.
    public func cachedHighWatermark(topic: String, partition: Int32) -> Int64? {
        var lo: Int64 = -1, hi: Int64 = -1
        let err = rd_kafka_get_watermark_offsets(rk, topic, partition, &lo, &hi)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR, hi >= 0 else { return nil }
        return hi
    }

    /// Leaves the group: the listener sees the final revoke, then the handle closes.
    public func close() {
        guard !closed else { return }
        closed = true
        _ = rd_kafka_consumer_close(rk)
    }

    // MARK: - Rebalance

    static func applyWithoutListener(_ rk: OpaquePointer, _ err: rd_kafka_resp_err_t,
                                     _ partitions: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) {
        let cooperative = String(cString: rd_kafka_rebalance_protocol(rk)) == "COOPERATIVE"
        if err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS {
            if cooperative {
                if let r = rd_kafka_incremental_assign(rk, partitions) { rd_kafka_error_destroy(r) }
            } else {
                _ = rd_kafka_assign(rk, partitions)
            }
        } else if cooperative && err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
            if let r = rd_kafka_incremental_unassign(rk, partitions) { rd_kafka_error_destroy(r) }
        } else {
            _ = rd_kafka_assign(rk, nil)
        }
    }

    private func handleRebalance(err: rd_kafka_resp_err_t, partitions: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) {
        let cooperative = String(cString: rd_kafka_rebalance_protocol(rk)) == "COOPERATIVE"
        let parts = items(of: partitions)
        switch err {
        case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
            for p in parts { assignment.insert(TopicPartitionKey(topic: p.topic, partition: p.partition)) }
            var list = partitions
            var owned: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>? = nil
            if let seeks = listener?.partitionsAssigned(self, parts) {
                owned = partitionList(seeks)
                list = owned!
            }
            let e: rd_kafka_resp_err_t
            if cooperative {
                let r = rd_kafka_incremental_assign(rk, list)
                e = r.map { rd_kafka_error_code($0) } ?? RD_KAFKA_RESP_ERR_NO_ERROR
                if let r { rd_kafka_error_destroy(r) }
            } else {
                e = rd_kafka_assign(rk, list)
            }
            if let owned { rd_kafka_topic_partition_list_destroy(owned) }
            if e != RD_KAFKA_RESP_ERR_NO_ERROR {
                fputs("tidepool: assign failed: \(KafkaError(e))\n", stderr)
            }
        case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
            if rd_kafka_assignment_lost(rk) != 0 {
                listener?.partitionsLost(self, parts)
            } else {
                listener?.partitionsRevoked(self, parts)
            }
            for p in parts { assignment.remove(TopicPartitionKey(topic: p.topic, partition: p.partition)) }
            if cooperative {
                if let r = rd_kafka_incremental_unassign(rk, partitions) { rd_kafka_error_destroy(r) }
            } else {
                _ = rd_kafka_assign(rk, nil)
            }
        default:
            fputs("tidepool: rebalance error: \(KafkaError(err))\n", stderr)
            assignment.removeAll()
            _ = rd_kafka_assign(rk, nil)
        }
    }
}

/// Carries the consumer through librdkafka's opaque pointer (C callbacks cannot capture).
final class ConsumerBox {
    weak var consumer: KafkaConsumer?
}
