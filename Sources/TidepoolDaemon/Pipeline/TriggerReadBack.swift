import TidepoolKafka
import TidepoolStore

/// Reads the trigger topic back from the offsets of the last checkpoint to its current end and
/// collects the trigger ids found there. After a crash, replaying from the checkpoint re-creates
/// the triggers produced since (same ids); the pipeline skips those already on the topic, so in
/// the normal case downstream sees each trigger once.
enum TriggerReadBack {
    static func ids(from outputs: [OutputOffset], consumerProperties: [String: String], producer: KafkaProducer,
                    timeoutMs: Int64 = 60_000) throws -> [String: (partition: Int32, offset: Int64)] {
        // Where each partition ends now (the previous process is gone: nothing more will come).
        var ends: [Int32: Int64] = [:]
        var starts: [TopicPartitionOffset] = []
        for o in outputs {
            let (_, high) = try producer.queryWatermarks(topic: o.topic, partition: o.partition)
            if high > o.nextOffset {
                ends[o.partition] = high
                starts.append(TopicPartitionOffset(topic: o.topic, partition: o.partition, offset: o.nextOffset))
            }
        }
        guard !starts.isEmpty else { return [:] }
        var props = consumerProperties
        props["group.id"] = (props["group.id"] ?? "tidepool") + ".readback"
        props["enable.auto.commit"] = "false"
        let consumer = try KafkaConsumer(properties: props, listener: NoRebalance())
        defer { consumer.close() }
        try consumer.assign(starts)
        var ids: [String: (partition: Int32, offset: Int64)] = [:]
        let deadline = WallClock.monotonicNs() + UInt64(timeoutMs) * 1_000_000
        while !ends.isEmpty {
            guard WallClock.monotonicNs() < deadline else {
                throw KafkaError.config("reading the trigger topic back did not reach its end within \(timeoutMs) ms")
            }
            consumer.poll(timeoutMs: 200) { msg in
                guard msg.error == nil else { return }
                if let id = triggerID(msg.value) { ids[id] = (msg.partition, msg.offset) }
                if let end = ends[msg.partition], msg.offset + 1 >= end { ends[msg.partition] = nil }
            }
        }
        return ids
    }

    /// The trigger_id of a record written by TriggerEncoder (it always comes second, after
    /// "schema"); nil for tombstones and foreign records.
    static func triggerID(_ value: UnsafeRawBufferPointer) -> String? {
        let prefix = Array(#"{"schema":"tidepool.trigger.v1","trigger_id":""#.utf8)
        guard value.count >= prefix.count + 33, value.starts(with: prefix) else { return nil }
        let id = value[(prefix.count)..<(prefix.count + 32)]
        guard value[prefix.count + 32] == 0x22 else { return nil }
        return String(decoding: id, as: UTF8.self)
    }

    final class NoRebalance: RebalanceListener {
        func partitionsAssigned(_ consumer: KafkaConsumer, _ partitions: [TopicPartitionOffset]) -> [TopicPartitionOffset]? { nil }
        func partitionsRevoked(_ consumer: KafkaConsumer, _ partitions: [TopicPartitionOffset]) {}
        func partitionsLost(_ consumer: KafkaConsumer, _ partitions: [TopicPartitionOffset]) {}
    }
}
