import CPrefetch

/// Cache prefetches of a customer's state, for the batched apply (`Engine.apply(_:partition:emit:)`
/// with a run of events) and the timer loop. With a million customers each event lands on a cold
/// customer: its index entry, id, record, next flips and arrays are each a cache miss (~100 ns),
/// and one event at a time they stall the thread one after the other. Asked for ahead, they
/// overlap. Hints only: a slot that is stale or -1 costs a wasted hint, never a wrong result.
enum CustomerPrefetch {
    /// How many events ahead the arrays are prefetched (their record must be in cache already,
    /// since the array addresses are read from it).
    static let arraysAhead = 4

    /// Byte offsets, in a `CustomerRecord`, of the references to the arrays an event reads.
    private static let arrayOffsets: (Int, Int, Int) = {
        let base = MemoryLayout<CustomerRecord>.offset(of: \CustomerRecord.aggregates)!
        return (base + MemoryLayout<CustomerAggregates>.offset(of: \CustomerAggregates.buckets)!,
                base + MemoryLayout<CustomerAggregates>.offset(of: \CustomerAggregates.firstLast)!,
                base + MemoryLayout<CustomerAggregates>.offset(of: \CustomerAggregates.recentIDs)!)
    }()

    /// The record, the id and the row of next flips of `slot`.
    @inline(__always)
    static func record(_ ps: borrowing PartitionState, _ slot: Int32, segments: Int) {
        guard slot >= 0, Int(slot) < ps.customers.count else { return }
        let s = Int(slot)
        ps.customers.withUnsafeBufferPointer { cs in
            let p = UnsafeRawPointer(cs.baseAddress! + s)
            // A record spans up to three cache lines.
            tp_prefetch(p)
            tp_prefetch(p + 64)
            tp_prefetch(p + MemoryLayout<CustomerRecord>.size - 1)
        }
        ps.ids.withUnsafeBufferPointer { tp_prefetch($0.baseAddress! + s) }
        if segments > 0 && (s + 1) * segments <= ps.flips.count {
            ps.flips.withUnsafeBufferPointer { f in
                tp_prefetch(f.baseAddress! + s * segments)
                tp_prefetch(f.baseAddress! + s * segments + segments - 1)
            }
        }
    }

    /// The storage of the buckets, first/last times and recent ids of `slot`: their addresses are
    /// read straight out of the record's bytes, because reading the arrays would retain them
    /// (an atomic write to the very object not yet in cache).
    @inline(__always)
    static func arrays(_ ps: borrowing PartitionState, _ slot: Int32) {
        guard slot >= 0, Int(slot) < ps.customers.count else { return }
        ps.customers.withUnsafeBufferPointer { cs in
            let p = UnsafeRawPointer(cs.baseAddress! + Int(slot))
            @inline(__always) func storage(_ off: Int) {
                // The array's storage object: its header (32 bytes), then the first elements.
                if let obj = UnsafeRawPointer(bitPattern: p.load(fromByteOffset: off, as: UInt.self)) {
                    tp_prefetch(obj)
                    tp_prefetch(obj + 64)
                }
            }
            let (b, f, r) = arrayOffsets
            storage(b)
            storage(f)
            storage(r)
        }
    }
}
