import CMemory

/// Customer id -> slot, for one partition: open addressing with linear probing on the id's
/// 64-bit stable hash, checked against the stored id (so two ids with the same hash stay two
/// customers).
///
/// Hand-written because the standard `[String: Int32]` hashed every event's customer id with
/// SipHash and compared Strings while probing: ~6% of the 1M-customer replay (perf). Here the hash
/// is the FNV/SplitMix `StableHash` the record keeps anyway (`CustomerRecord.idHash`), a probe
/// compares 64-bit integers, and an entry is 12 bytes instead of a String key and its slot.
///
/// Growth is incremental. A full table doubles into a new one, and each later insert moves a few
/// entries of the old table over (`migrate`), so no insert rehashes the whole table at once: with
/// 98,304 customers a partition's rehash held its thread ~10 ms, and all partitions of a topic
/// reach that size together (the latency run saw them as one burst). While entries move, the old
/// table is read-only except for tombstones: a lookup tries the new table, then the old one, where
/// an entry below the migration cursor has moved (the new table decides) and a tombstone (slot -1)
/// was removed.
struct CustomerIndex: Sendable {
    /// 0: empty. A real hash of 0 is stored as 1 (the id comparison still decides).
    private var hashes: [UInt64] = []
    private var slots: [Int32] = []
    private(set) var count = 0
    private var mask = -1
    /// The table being moved into `hashes`/`slots` (empty when none), and the position of the next
    /// entry to move.
    private var oldHashes: [UInt64] = []
    private var oldSlots: [Int32] = []
    private var oldMask = -1
    private var cursor = 0

    /// Old-table positions moved per insert while growing: the old table (at most 3/4 full) must
    /// be empty before the new one (twice its size) reaches 3/4, so at least 2 per insert.
    private static let migrationStep = 8

    @inline(__always)
    private static func stored(_ h: UInt64) -> UInt64 { h == 0 ? 1 : h }

    private var migrating: Bool { !oldHashes.isEmpty }

    mutating func reserveCapacity(_ n: Int) {
        finishMigration()
        var capacity = 16
        while capacity * 3 < n * 4 { capacity *= 2 }
        if capacity > hashes.count {
            let (h, sl) = (hashes, slots)
            allocate(capacity)
            for i in h.indices where h[i] != 0 { place(h[i], sl[i]) }
        }
    }

    /// The slot of `id` (whose `StableHash.hash64` is `hash`); `ids` holds the id of every slot.
    @inline(__always)
    func find(_ id: String, hash: UInt64, ids: borrowing SlotArray<String>) -> Int32? {
        if let i = Self.probe(hashes, slots, mask, hash, { ids[Int($0)] == id }) { return slots[i] }
        guard migrating, let i = oldPosition(hash, { ids[Int($0)] == id }) else { return nil }
        return oldSlots[i]
    }

    /// Where an entry with this hash whose slot `accepts` still lives in the old table, or nil.
    /// The whole run is scanned: entries below the cursor have moved, tombstones were removed.
    @inline(__always)
    private func oldPosition(_ hash: UInt64, _ accepts: (Int32) -> Bool) -> Int? {
        let cursor = self.cursor, mask = oldMask
        let h = Self.stored(hash)
        return oldHashes.withUnsafeBufferPointer { hs in
            oldSlots.withUnsafeBufferPointer { sl in
                var i = Int(truncatingIfNeeded: h) & mask
                while hs[i] != 0 {
                    if hs[i] == h && i >= cursor && sl[i] >= 0 && accepts(sl[i]) { return i }
                    i = (i + 1) & mask
                }
                return nil
            }
        }
    }

    /// The first position on `hash`'s probe run in a table whose entry has this hash and whose
    /// slot `accepts`, or nil.
    @inline(__always)
    private static func probe(_ hashes: [UInt64], _ slots: [Int32], _ mask: Int, _ hash: UInt64,
                              _ accepts: (Int32) -> Bool) -> Int? {
        guard !hashes.isEmpty else { return nil }
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
        if migrating {
            let j = Int(truncatingIfNeeded: Self.stored(hash)) & oldMask
            oldHashes.withUnsafeBufferPointer { tp_prefetch($0.baseAddress! + j) }
            oldSlots.withUnsafeBufferPointer { tp_prefetch($0.baseAddress! + j) }
        }
    }

    /// The slot of the first entry with this hash, without checking the id: a prefetch hint
    /// only (-1 when none). `find` decides.
    @inline(__always)
    func likelySlot(hash: UInt64) -> Int32 {
        if let i = Self.probe(hashes, slots, mask, hash, { _ in true }) { return slots[i] }
        guard migrating, let i = oldPosition(hash, { _ in true }) else { return -1 }
        return oldSlots[i]
    }

    /// `prefetch` of each hash.
    func prefetch(_ hashes: UnsafeBufferPointer<UInt64>) {
        for h in hashes { prefetch(hash: h) }
    }

    /// `likelySlot` of each hash.
    func likelySlots(_ hashes: UnsafeBufferPointer<UInt64>, into out: UnsafeMutableBufferPointer<Int32>) {
        for i in hashes.indices { out[i] = likelySlot(hash: hashes[i]) }
    }

    /// Adds an id known to be absent.
    mutating func insert(hash: UInt64, slot: Int32) {
        if migrating { migrate(Self.migrationStep) }
        if (count + 1) * 4 > hashes.count * 3 {
            finishMigration()
            if hashes.isEmpty {
                allocate(16)
            } else {
                oldHashes = hashes
                oldSlots = slots
                oldMask = mask
                cursor = 0
                allocate(hashes.count * 2)
                migrate(Self.migrationStep)
            }
        }
        place(Self.stored(hash), slot)
        count += 1
    }

    /// Removes `id`; returns whether it was present.
    @discardableResult
    mutating func remove(_ id: String, hash: UInt64, ids: borrowing SlotArray<String>) -> Bool {
        if let i = Self.probe(hashes, slots, mask, hash, { ids[Int($0)] == id }) {
            Self.removeShifting(at: i, &hashes, &slots, mask)
        } else if migrating, let i = oldPosition(hash, { ids[Int($0)] == id }) {
            // The old table keeps its runs intact while entries move: mark, do not shift.
            oldSlots[i] = -1
        } else {
            return false
        }
        count -= 1
        return true
    }

    /// Backward-shift deletion: move later entries of the probe run into the hole when their
    /// home position allows, so that no lookup ever stops early at it (no tombstones).
    private static func removeShifting(at i: Int, _ hashes: inout [UInt64], _ slots: inout [Int32], _ mask: Int) {
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
    }

    /// Moves the next `n` positions of the old table into the new one; drops the old table when
    /// every position has moved.
    private mutating func migrate(_ n: Int) {
        let end = min(cursor + n, oldHashes.count)
        while cursor < end {
            let h = oldHashes[cursor], sl = oldSlots[cursor]
            cursor += 1
            if h != 0 && sl >= 0 { place(h, sl) }
        }
        if cursor == oldHashes.count {
            oldHashes = []
            oldSlots = []
            oldMask = -1
            cursor = 0
        }
    }

    private mutating func finishMigration() {
        if migrating { migrate(oldHashes.count) }
    }

    private mutating func allocate(_ capacity: Int) {
        hashes = Array(repeating: 0, count: capacity)
        slots = Array(repeating: 0, count: capacity)
        mask = capacity - 1
    }

    private mutating func place(_ h: UInt64, _ slot: Int32) {
        var i = Int(truncatingIfNeeded: h) & mask
        while hashes[i] != 0 { i = (i + 1) & mask }
        hashes[i] = h
        slots[i] = slot
    }
}
