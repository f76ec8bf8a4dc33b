import TidepoolKafka

/// Decides when a consumed offset may be stored: only when every record produced because of it
/// (triggers, dead letters) has been acknowledged by the broker. Records are grouped by poll
/// batch; batches complete in order, so stored offsets only move forward.
struct OffsetTracker {
    struct Batch {
        var seq: UInt
        var outstanding: Int
        var closed: Bool
        var offsets: [PartitionKey: Int64]
    }

    struct PartitionKey: Hashable {
        var topic: String
        var partition: Int32
    }

    private(set) var batches: [Batch] = []
    private var head = 0
    private var nextSeq: UInt = 1

    /// Opens the batch that the next records belong to; returns its sequence number, which is the
    /// delivery opaque of every record produced for it.
    mutating func open() -> UInt {
        let seq = nextSeq
        nextSeq += 1
        batches.append(Batch(seq: seq, outstanding: 0, closed: false, offsets: [:]))
        return seq
    }

    /// A record was produced on behalf of the open batch.
    mutating func produced() { batches[batches.count - 1].outstanding += 1 }

    /// Marks `offset` of a partition processed in the open batch (stores `offset + 1`).
    mutating func processed(topic: String, partition: Int32, offset: Int64) {
        batches[batches.count - 1].offsets[PartitionKey(topic: topic, partition: partition)] = offset + 1
    }

    mutating func close() { batches[batches.count - 1].closed = true }

    /// A produced record of batch `seq` was acknowledged.
    mutating func delivered(seq: UInt) {
        guard let firstSeq = batches.indices.contains(head) ? batches[head].seq : nil, seq >= firstSeq else { return }
        let idx = head + Int(seq - firstSeq)
        guard idx < batches.count else { return }
        batches[idx].outstanding -= 1
    }

    /// Removes completed batches from the front and returns the newest offset per partition.
    mutating func takeCompleted() -> [TopicPartitionOffset] {
        var merged: [PartitionKey: Int64] = [:]
        while head < batches.count, batches[head].closed, batches[head].outstanding == 0 {
            for (k, v) in batches[head].offsets { merged[k] = v }
            head += 1
        }
        if head > 64 && head * 2 > batches.count {
            batches.removeFirst(head)
            head = 0
        }
        return merged.map { TopicPartitionOffset(topic: $0.key.topic, partition: $0.key.partition, offset: $0.value) }
    }

    /// Whether every record produced for batches up to `seq` has been acknowledged (those
    /// batches are closed).
    func allDelivered(through seq: UInt) -> Bool {
        for k in head..<batches.count {
            if batches[k].seq > seq { return true }
            if !batches[k].closed || batches[k].outstanding != 0 { return false }
        }
        return true
    }

    /// Batches still waiting for acknowledgements.
    var pending: Int { batches.count - head }

    /// Forgets offsets of partitions that were lost: they must not be stored or committed.
    mutating func forget(_ lost: Set<PartitionKey>) {
        for k in head..<batches.count {
            for key in lost { batches[k].offsets[key] = nil }
        }
    }
}
