/// What a checkpoint of one partition holds: its clocks and counters, and the customers that
/// changed (encoded) or left memory since the previous checkpoint.
public struct PartitionSnapshot: Sendable {
    public var partition: PartitionID
    public var maxEventTimeMs: Int64
    public var streamTimeMs: Int64
    public var stats: PartitionStats
    /// Changed customers: id and state. Copies of the records share their arrays with the live
    /// engine (copy on write), so taking them is a retain per array, not a copy of the data, and
    /// encoding happens later on the writer's thread (`encodedUpserts`).
    public var changed: [(String, CustomerRecord)]
    /// Changed customers, encoded (CustomerRecordCodec): computed on each call, off the pipeline thread.
    public var upserts: [(String, [UInt8])] {
        var scratch: [UInt8] = []
        scratch.reserveCapacity(4096)
        return changed.map { id, record in
            CustomerRecordCodec.encode(record, into: &scratch)
            // One exact-size allocation per customer (Array(scratch) would share the scratch
            // buffer, and the next encode would then allocate a full-capacity copy).
            let blob = scratch.withUnsafeBufferPointer { src in
                [UInt8](unsafeUninitializedCapacity: src.count) { dst, n in
                    _ = dst.initialize(from: src)
                    n = src.count
                }
            }
            return (id, blob)
        }
    }
    /// Customers evicted or erased since the previous checkpoint.
    public var removed: [String]
    /// Erasures since the previous checkpoint: keyed hash of the id and erasure time.
    public var erased: [(UInt64, Int64)] = []
}

extension Engine {
    /// Customers changed since the last checkpoint, over all partitions.
    public var dirtyCount: Int { partitions.values.reduce(0) { $0 + $1.dirty.count } }

    /// Takes the partition's changes since the previous checkpoint and marks them clean. The
    /// caller must persist them (with the offset they reflect) before the next call.
    public func takeCheckpoint(_ p: PartitionID) -> PartitionSnapshot? {
        guard var ps = partitions[p] else { return nil }
        partitions[p] = nil  // unique ownership: edit in place, no copy of the customer table
        var changed: [(String, CustomerRecord)] = []
        changed.reserveCapacity(ps.dirty.count)
        for slot in ps.dirty {
            let s = Int(slot)
            guard ps.customers[s].dirty else { continue }
            ps.customers[s].dirty = false
            if ps.customers[s].live { changed.append((ps.ids[s], ps.customers[s])) }
        }
        let snapshot = PartitionSnapshot(partition: p, maxEventTimeMs: ps.maxEventTimeMs, streamTimeMs: ps.streamTimeMs,
                                         stats: ps.stats, changed: changed, removed: ps.removed, erased: ps.newlyErased)
        ps.newlyErased.removeAll()
        ps.dirty.removeAll(keepingCapacity: true)
        ps.removed.removeAll(keepingCapacity: true)
        partitions[p] = ps
        return snapshot
    }

    /// Replaces a partition's state with a restored one: clocks, counters and every customer
    /// (id and encoded state). Timers are re-armed from each customer's due instant.
    public func restore(_ p: PartitionID, maxEventTimeMs: Int64, streamTimeMs: Int64, stats: PartitionStats,
                        customers: [(String, [UInt8])], erased: [UInt64: Int64] = [:]) throws(CustomerRecordCodec.DecodeError) {
        var ps = PartitionState()
        ps.erased = erased
        ps.maxEventTimeMs = maxEventTimeMs
        ps.streamTimeMs = streamTimeMs
        ps.stats = stats
        ps.customers.reserveCapacity(customers.count)
        ps.ids.reserveCapacity(customers.count)
        ps.index.reserveCapacity(customers.count)
        var sizes = [Int](repeating: 0, count: config.segments.segments.count)
        for (id, blob) in customers {
            var r = try CustomerRecordCodec.decode(blob)
            let slot = ps.customers.count
            r.scheduledMs = .max
            r.idHash = StableHash.hash64(id.utf8)
            ps.customers.append(r)
            ps.ids.append(id)
            ps.index[id] = Int32(slot)
            for i in sizes.indices where r.memberships & (1 << UInt64(i)) != 0 { sizes[i] += 1 }
            if r.dueMs != .max { schedule(&ps, slot: slot, r.dueMs) }
        }
        ps.stats.segmentSizes = sizes
        partitions[p] = ps
    }
}
