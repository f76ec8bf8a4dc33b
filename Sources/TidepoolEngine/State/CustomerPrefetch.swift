import CMemory

/// Cache prefetches of a customer's state, for the batched apply (`Engine.apply(_:partition:emit:)`
/// with a run of events) and the timer loop. With a million customers each event lands on a cold
/// customer: its index entry, id, record, next flips and aggregates are each a cache miss (~100 ns),
/// and one event at a time they stall the thread one after the other. Asked for ahead, they
/// overlap. Hints only: a slot that is stale or -1 costs a wasted hint, never a wrong result.
enum CustomerPrefetch {
    /// How many events ahead the aggregates are prefetched (their record must be in cache
    /// already, since their address is read from it).
    static let aggregatesAhead = 4

    /// Byte offset, in a `CustomerRecord`, of the reference to the words of its aggregates.
    private static let wordsOffset: Int =
        MemoryLayout<CustomerRecord>.offset(of: \CustomerRecord.aggregates)!
        + MemoryLayout<CustomerAggregates>.offset(of: \CustomerAggregates.sections)!
        + MemoryLayout<AggregateSections>.offset(of: \AggregateSections.words)!

    /// The record, the id and the row of next flips of `slot`. (It takes the partition's arrays,
    /// not the partition: passing the partition state copied it, a retain of each of its arrays.)
    @inline(__always)
    static func record(_ customers: UnsafeBufferPointer<CustomerRecord>, _ ids: UnsafeBufferPointer<String>,
                       _ flips: UnsafeBufferPointer<UInt32>, _ slot: Int32, segments: Int) {
        guard slot >= 0, Int(slot) < customers.count else { return }
        let s = Int(slot)
        let p = UnsafeRawPointer(customers.baseAddress! + s)
        // A record spans up to three cache lines.
        tp_prefetch(p)
        tp_prefetch(p + 64)
        tp_prefetch(p + MemoryLayout<CustomerRecord>.size - 1)
        if s < ids.count { tp_prefetch(ids.baseAddress! + s) }
        if segments > 0 && (s + 1) * segments <= flips.count {
            tp_prefetch(flips.baseAddress! + s * segments)
            tp_prefetch(flips.baseAddress! + s * segments + segments - 1)
        }
    }

    @inline(__always)
    static func record(_ ps: inout PartitionState, _ slot: Int32, segments: Int) {
        ps.customers.withUnsafeBufferPointer { c in
            ps.ids.withUnsafeBufferPointer { i in
                ps.flips.withUnsafeBufferPointer { f in record(c, i, f, slot, segments: segments) }
            }
        }
    }

    /// The words of the aggregates of `slot` (recent ids, first/last times, orders, buckets): the
    /// address is read straight out of the record's bytes, because reading the array would
    /// retain it (an atomic write to the very object not yet in cache).
    @inline(__always)
    static func aggregates(_ customers: UnsafeBufferPointer<CustomerRecord>, _ slot: Int32) {
        guard slot >= 0, Int(slot) < customers.count else { return }
        let p = UnsafeRawPointer(customers.baseAddress! + Int(slot))
        // The array's storage object: its header (32 bytes), then the words; a typical customer's
        // (~32 words) span the first five cache lines.
        if let obj = UnsafeRawPointer(bitPattern: p.load(fromByteOffset: wordsOffset, as: UInt.self)) {
            tp_prefetch(obj)
            tp_prefetch(obj + 64)
            tp_prefetch(obj + 128)
            tp_prefetch(obj + 192)
            tp_prefetch(obj + 256)
        }
    }
}
