import CPrefetch

/// Customer id -> slot, for one partition: open addressing with linear probing on the id's
/// 64-bit stable hash, checked against the stored id (so two ids with the same hash stay two
/// customers).
///
/// Hand-written because the standard `[String: Int32]` hashed every event's customer id with
/// SipHash and compared Strings while probing: ~6% of the 1M-customer replay (perf). Here the hash
/// is the FNV/SplitMix `StableHash` the record keeps anyway (`CustomerRecord.idHash`), a probe
/// compares 64-bit integers, and an entry is 12 bytes instead of a String key and its slot.
struct CustomerIndex: Sendable {
    /// 0: empty. A real hash of 0 is stored as 1 (the id comparison still decides).
    private var hashes: [UInt64] = []
    private var slots: [Int32] = []
    private(set) var count = 0
    private var mask = -1

    @inline(__always)
    private static func stored(_ h: UInt64) -> UInt64 { h == 0 ? 1 : h }

    mutating func reserveCapacity(_ n: Int) {
        var capacity = 16
        while capacity * 3 < n * 4 { capacity *= 2 }
        if capacity > hashes.count { rehash(capacity) }
    }

    /// The slot of `id` (whose `StableHash.hash64` is `hash`); `ids` holds the id of every slot.
    @inline(__always)
    func find(_ id: String, hash: UInt64, ids: borrowing [String]) -> Int32? {
        position(of: id, hash: hash, ids: ids).map { slots[$0] }
    }

    /// Where `id` sits in the table, or nil.
    @inline(__always)
    private func position(of id: String, hash: UInt64, ids: borrowing [String]) -> Int? {
        probe(hash) { ids[Int($0)] == id }
    }

    /// The first table position on `hash`'s probe run whose entry has this hash and whose slot
    /// `accepts`, or nil.
    @inline(__always)
    private func probe(_ hash: UInt64, accepts: (Int32) -> Bool) -> Int? {
        guard count > 0 else { return nil }
        let h = Self.stored(hash)
        return hashes.withUnsafeBufferPointer { hashes in
            slots.withUnsafeBufferPointer { slots in
                var i = Int(truncatingIfNeeded: h) & mask
                while true {
                    let k = hashes[i]
                    if k == 0 { return nil }
                    if k == h && accepts(slots[i]) { return i }
                    i = (i + 1) & mask
                }
            }
        }
    }

    /// Asks the CPU to bring the table entries where `hash` starts probing into cache.
    @inline(__always)
    func prefetch(hash: UInt64) {
        guard count > 0 else { return }
        let i = Int(truncatingIfNeeded: Self.stored(hash)) & mask
        hashes.withUnsafeBufferPointer { tp_prefetch($0.baseAddress! + i) }
        slots.withUnsafeBufferPointer { tp_prefetch($0.baseAddress! + i) }
    }

    /// The slot of the first entry with this hash, without checking the id: a prefetch hint
    /// only (-1 when none). `find` decides.
    @inline(__always)
    func likelySlot(hash: UInt64) -> Int32 {
        probe(hash) { _ in true }.map { slots[$0] } ?? -1
    }

    /// Adds an id known to be absent.
    mutating func insert(hash: UInt64, slot: Int32) {
        if (count + 1) * 4 > hashes.count * 3 { rehash(max(16, hashes.count * 2)) }
        place(Self.stored(hash), slot)
        count += 1
    }

    /// Removes `id`; returns whether it was present.
    @discardableResult
    mutating func remove(_ id: String, hash: UInt64, ids: borrowing [String]) -> Bool {
        guard let i = position(of: id, hash: hash, ids: ids) else { return false }
        // Backward-shift deletion: move later entries of the probe run into the hole when their
        // home position allows, so that no lookup ever stops early at it (no tombstones).
        var hole = i
        var j = (i + 1) & mask
        while hashes[j] != 0 {
            let home = Int(truncatingIfNeeded: hashes[j]) & mask
            // Can the entry at j move to the hole? Only if its home is not cyclically in (hole, j].
            let inRange = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j)
            if !inRange {
                hashes[hole] = hashes[j]
                slots[hole] = slots[j]
                hole = j
            }
            j = (j + 1) & mask
        }
        hashes[hole] = 0
        count -= 1
        return true
    }

    private mutating func place(_ h: UInt64, _ slot: Int32) {
        var i = Int(truncatingIfNeeded: h) & mask
        while hashes[i] != 0 { i = (i + 1) & mask }
        hashes[i] = h
        slots[i] = slot
    }

    private mutating func rehash(_ capacity: Int) {
        let oldHashes = hashes, oldSlots = slots
        hashes = Array(repeating: 0, count: capacity)
        slots = Array(repeating: 0, count: capacity)
        mask = capacity - 1
        for i in oldHashes.indices where oldHashes[i] != 0 { place(oldHashes[i], oldSlots[i]) }
    }
}
