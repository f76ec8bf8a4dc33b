/// A checkpoint capture in progress (`Engine.beginCheckpoint`): the slots changed in the
/// captured epoch, how far the slices have gone through them, and the snapshot being filled.
struct CheckpointCapture: Sendable {
    var slots: [Int32]
    var cursor = 0
    var snapshot: PartitionSnapshot
    /// Where each customer is encoded before its bytes are appended to the snapshot.
    var scratch: [UInt8] = []
    init(slots: [Int32], snapshot: PartitionSnapshot) {
        self.slots = slots
        self.snapshot = snapshot
    }
}

/// Encoded customer states (`CustomerRecordCodec`), one after another in chunks of 64 KiB: a
/// capture appends up to millions of them a slice at a time, where one array would reallocate
/// (copying everything so far) inside one slice.
public struct EncodedStates: RandomAccessCollection, Sendable {
    /// Below glibc's mmap threshold (128 KiB): chunks come from the heap and reuse the memory of
    /// earlier checkpoints. Fresh memory is what bounds a slice: on the benchmark VM, first
    /// touches of a few hundred KiB (page faults) took ~10 ms, the longest slices of a first
    /// checkpoint after start.
    static let chunkBytes = 1 << 16
    struct Span: Sendable {
        var chunk: UInt32
        var start: UInt32
        var count: UInt32
    }
    var chunks: [[UInt8]] = []
    var spans: [Span] = []
    public init() {}
    public var startIndex: Int { 0 }
    public var endIndex: Int { spans.count }
    /// A copy of state i.
    public subscript(i: Int) -> [UInt8] { withBytes(i) { Array($0) } }
    /// State i in place.
    public func withBytes<R>(_ i: Int, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        let s = spans[i]
        return try chunks[Int(s.chunk)].withUnsafeBytes { all in
            try body(UnsafeRawBufferPointer(rebasing: all[Int(s.start)..<Int(s.start + s.count)]))
        }
    }
    /// Bytes of all states.
    public var totalBytes: Int { chunks.reduce(0) { $0 + $1.count } }
    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        if chunks.isEmpty || chunks[chunks.count - 1].count + bytes.count > Self.chunkBytes {
            var c: [UInt8] = []
            c.reserveCapacity(Swift.max(Self.chunkBytes, bytes.count))
            chunks.append(c)
        }
        let last = chunks.count - 1
        let start = chunks[last].count
        chunks[last].append(contentsOf: bytes)
        spans.append(Span(chunk: UInt32(last), start: UInt32(start), count: UInt32(bytes.count)))
    }
}

/// What a checkpoint of one partition holds: its clocks and counters, and the customers that
/// changed (encoded) or left memory since the previous checkpoint.
public struct PartitionSnapshot: Sendable {
    public var partition: PartitionID
    public var maxEventTimeMs: Int64
    public var streamTimeMs: Int64
    public var stats: PartitionStats
    /// Ids of the changed customers, and their encoded states at the same index. The capture
    /// encodes each customer as it copies it: a copy of the record instead (a retain per array
    /// it holds, each a cache miss on a cold object) cost as much as encoding it, the writer's
    /// thread then spent as long again encoding the copies, and every captured customer that
    /// changed before the write had its arrays copied by copy on write. The ids are an array of
    /// their own: the writer sorts them.
    public var changedIDs: [String]
    public var changedStates: EncodedStates
    /// The changed customers as (id, encoded state) pairs.
    public var upserts: [(String, [UInt8])] {
        changedIDs.indices.map { (changedIDs[$0], changedStates[$0]) }
    }
    /// Customers evicted or erased since the previous checkpoint.
    public var removed: [String]
    /// Erasures since the previous checkpoint: keyed hash of the id and erasure time.
    public var erased: [(UInt64, Int64)] = []
}

extension Engine {
    /// Customers changed since the last checkpoint, over all partitions.
    public var dirtyCount: Int { partitions.values.reduce(0) { $0 + $1.dirty.count } }

    /// Takes the partition's changes since the previous checkpoint and marks them clean, in one
    /// call (`beginCheckpoint` and `continueCheckpoint` without a budget). The caller must persist
    /// them (with the offset they reflect) before the next call.
    public func takeCheckpoint(_ p: PartitionID) -> PartitionSnapshot? {
        guard beginCheckpoint(p) else { return nil }
        return continueCheckpoint(p, budget: .max)
    }

    /// Starts a checkpoint capture of partition `p` at this instant: the snapshot that
    /// `continueCheckpoint` completes holds every customer changed since the previous capture, in
    /// the state it has now, with the clocks and counters of now, however many events are applied
    /// in between. Constant time: the changed customers are copied later, a slice per call, or
    /// just before an event or a timer changes one of them (copy on write, per customer).
    /// Returns false when `p` is not held. One capture per partition at a time: finish the one in
    /// progress (`continueCheckpoint` until it returns its snapshot) before beginning another.
    @discardableResult
    public func beginCheckpoint(_ p: PartitionID) -> Bool {
        guard var ps = partitions[p] else { return false }
        precondition(ps.capture == nil, "a checkpoint capture of \(p) is already in progress")
        setPartition(p, nil)  // unique ownership: edit in place, no copy of the customer table
        ps.capture = CheckpointCapture(
            slots: ps.dirty,
            snapshot: PartitionSnapshot(partition: p, maxEventTimeMs: ps.maxEventTimeMs, streamTimeMs: ps.streamTimeMs,
                                        stats: ps.stats, changedIDs: [], changedStates: EncodedStates(),
                                        removed: ps.removed, erased: ps.newlyErased))
        ps.capturingEpoch = ps.epoch
        ps.epoch = ps.epoch == .max ? 1 : ps.epoch + 1
        ps.dirty = []
        ps.removed = []
        ps.newlyErased = []
        setPartition(p, ps)
        return true
    }

    /// Copies up to `budget` of the changed customers into the capture begun by
    /// `beginCheckpoint`; returns the snapshot once every one of them is in it (and ends the
    /// capture), nil while some remain or when no capture is in progress.
    public func continueCheckpoint(_ p: PartitionID, budget: Int) -> PartitionSnapshot? {
        var snapshot: PartitionSnapshot?
        guard isCapturing(p) else { return nil }  // (withPartition would create a partition not held)
        withPartition(p) { ps in
            captureSlice(&ps, budget: budget)
            guard ps.capturingEpoch == 0 else { return }
            snapshot = ps.capture!.snapshot
            ps.capture = nil
        }
        return snapshot
    }

    /// Whether a capture of `p` is in progress (begun, its snapshot not yet returned).
    public func isCapturing(_ p: PartitionID) -> Bool { partitions[p]?.capture != nil }

    /// Changed customers still to be copied by the capture in progress (0: none in progress).
    public func capturePending(_ p: PartitionID) -> Int {
        guard let ps = partitions[p], ps.capturingEpoch != 0, let c = ps.capture else { return 0 }
        return c.slots.count - c.cursor
    }

    /// Copies customers of the capture's list, from its cursor, until `budget` were copied or the
    /// list ends (then no customer needs preserving any more).
    func captureSlice(_ ps: inout PartitionState, budget: Int) {
        guard ps.capturingEpoch != 0 else { return }
        var copied = 0
        while copied < budget, ps.capture!.cursor < ps.capture!.slots.count {
            let slot = Int(ps.capture!.slots[ps.capture!.cursor])
            ps.capture!.cursor += 1
            // Already copied before a change, or removed since (a slot can also be listed twice).
            guard ps.customers[slot].dirtyEpoch == ps.capturingEpoch else { continue }
            capture(&ps, slot)
            copied += 1
        }
        if ps.capture!.cursor == ps.capture!.slots.count {
            ps.capturingEpoch = 0
            ps.capture!.slots = []
        }
    }

    /// Completes every capture in progress (a reload is about to change every customer).
    func completeCaptures() {
        for p in Array(partitions.keys) where partitions[p]?.capturingEpoch != 0 {
            withPartition(p) { ps in captureSlice(&ps, budget: .max) }
        }
    }

    /// Called before anything changes the customer in `slot`: while a capture is in progress and
    /// the customer changed in the epoch being captured, its current state goes into the capture.
    @inline(__always)
    func preserve(_ ps: inout PartitionState, _ slot: Int) {
        if ps.capturingEpoch != 0 && ps.customers[slot].dirtyEpoch == ps.capturingEpoch { capture(&ps, slot) }
    }

    private func capture(_ ps: inout PartitionState, _ slot: Int) {
        ps.customers[slot].dirtyEpoch = 0
        guard ps.customers[slot].live else { return }
        var scratch = ps.capture!.scratch
        ps.capture!.scratch = []  // uniquely referenced while encoding
        // The record is read in place (through the subscript it was copied: a retain per array).
        let n = ps.customers.withUnsafeBufferPointer { CustomerRecordCodec.encode($0[slot], reusing: &scratch) }
        ps.capture!.snapshot.changedIDs.append(ps.ids[slot])
        scratch.withUnsafeBytes { ps.capture!.snapshot.changedStates.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        ps.capture!.scratch = scratch
    }

    /// Records that the customer in `slot` changed in the current epoch (listed once per epoch).
    @inline(__always)
    func markChanged(_ ps: inout PartitionState, _ slot: Int) {
        assert(ps.capturingEpoch == 0 || ps.customers[slot].dirtyEpoch != ps.capturingEpoch,
               "a customer of the epoch being captured changed before it was preserved")
        if ps.customers[slot].dirtyEpoch != ps.epoch {
            ps.customers[slot].dirtyEpoch = ps.epoch
            ps.dirty.append(Int32(slot))
        }
    }

    /// Replaces a partition's state with a restored one: clocks, counters and every customer
    /// (id and encoded state). Timers are re-armed from each customer's due instant.
    ///
    /// `storedSegments`: the segments (name, rule) the checkpoint was written with. When they
    /// differ from the running ones (the file was edited between a stop and a start), memberships
    /// are carried over by name, and the segments that are new or whose rule changed are handled
    /// like a reload under `policy`: their transitions fire at the customer's next evaluation
    /// (which is scheduled now), or their new memberships are taken silently. The returned report
    /// says how many customers enter and leave each segment.
    @discardableResult
    public func restore(_ p: PartitionID, maxEventTimeMs: Int64, streamTimeMs: Int64, stats: PartitionStats,
                        customers: [(String, [UInt8])], erased: [UInt64: Int64] = [:],
                        storedSegments: [(name: String, rule: String)]? = nil,
                        policy: ReloadPolicy = .emit) throws(CustomerRecordCodec.DecodeError) -> ReconfigureReport? {
        var b = beginRestore(maxEventTimeMs: maxEventTimeMs, streamTimeMs: streamTimeMs, stats: stats,
                             customerCount: customers.count, erased: erased)
        for (id, blob) in customers { add(id, try CustomerRecordCodec.decode(blob), to: &b) }
        return finishRestore(p, b, storedSegments: storedSegments, policy: policy)
    }

    /// A partition being restored customer by customer (`beginRestore`, `add`, `finishRestore`):
    /// the checkpoint store decodes rows on a helper thread and hands them over in chunks.
    public struct RestoringPartition {
        var ps = PartitionState()
    }

    public func beginRestore(maxEventTimeMs: Int64, streamTimeMs: Int64, stats: PartitionStats, customerCount: Int,
                             erased: [UInt64: Int64] = [:]) -> RestoringPartition {
        var b = RestoringPartition()
        b.ps.erased = erased
        b.ps.maxEventTimeMs = maxEventTimeMs
        b.ps.streamTimeMs = streamTimeMs
        b.ps.stats = stats
        // Recounted from the customers as they arrive.
        b.ps.stats.segmentSizes = [Int](repeating: 0, count: config.segments.segments.count)
        b.ps.customers.reserveCapacity(customerCount)
        b.ps.ids.reserveCapacity(customerCount)
        b.ps.index.reserveCapacity(customerCount)
        return b
    }

    /// One restored customer; its timer is re-armed from its due instant.
    public func add(_ id: String, _ record: consuming CustomerRecord, to b: inout RestoringPartition) {
        var r = record
        let slot = b.ps.customers.count
        r.scheduledMs = .max
        r.idHash = StableHash.hash64(id)
        let bits = r.memberships, due = r.dueMs
        b.ps.index.insert(hash: r.idHash, slot: Int32(slot))
        b.ps.customers.append(r)
        b.ps.ids.append(id)
        var rest = bits
        while rest != 0 {
            let i = rest.trailingZeroBitCount
            rest &= rest - 1
            if i < b.ps.stats.segmentSizes.count { b.ps.stats.segmentSizes[i] += 1 }
        }
        if due != .max { schedule(&b.ps, slot: slot, due) }
    }

    /// Installs the restored partition. When the checkpoint was written under other segment rules
    /// (`storedSegments`), memberships are adopted as described at `restore`.
    @discardableResult
    public func finishRestore(_ p: PartitionID, _ b: RestoringPartition, storedSegments: [(name: String, rule: String)]? = nil,
                              policy: ReloadPolicy = .emit) -> ReconfigureReport? {
        var ps = b.ps
        var report: ReconfigureReport? = nil
        let current = config.segments.segments
        if let stored = storedSegments,
           stored.map(\.name) != current.map(\.name) || stored.map(\.rule) != current.map(\.rule) {
            report = adoptChangedRules(&ps, stored: stored, policy: policy)
        }
        setPartition(p, ps)
        return report
    }

    /// Memberships restored under other rules: remap by name, then treat new and changed
    /// segments like a reload (see `restore`).
    private func adoptChangedRules(_ ps: inout PartitionState, stored: [(name: String, rule: String)],
                                   policy: ReloadPolicy) -> ReconfigureReport {
        let current = config.segments.segments
        var map: [(UInt64, UInt64)] = []
        var stale: UInt64 = 0
        for (j, s) in current.enumerated() {
            if let i = stored.firstIndex(where: { $0.name == s.name }) {
                map.append((1 << UInt64(i), 1 << UInt64(j)))
                if stored[i].rule != s.rule { stale |= 1 << UInt64(j) }
            } else {
                stale |= 1 << UInt64(j)
            }
        }
        var entering = [Int](repeating: 0, count: current.count), exiting = entering
        var after = [UInt64](repeating: 0, count: ps.customers.count)
        for slot in ps.customers.indices where ps.customers[slot].live {
            var bits: UInt64 = 0
            for (a, b) in map where ps.customers[slot].memberships & a != 0 { bits |= b }
            ps.customers[slot].memberships = bits
            let r = ps.customers[slot]
            let t = max(r.evaluatedAtMs, ps.streamTimeMs)
            after[slot] = config.segments.memberships(r.aggregates, now: t, channels: channels, returnedAtMs: r.returnedAtMs)
            for j in current.indices where stale & (1 << UInt64(j)) != 0 {
                let bit: UInt64 = 1 << UInt64(j)
                if after[slot] & bit != 0 && bits & bit == 0 { entering[j] += 1 }
                if after[slot] & bit == 0 && bits & bit != 0 { exiting[j] += 1 }
            }
        }
        var quiet: UInt64 = 0
        for j in current.indices where stale & (1 << UInt64(j)) != 0 {
            switch policy {
            case .emit: break
            case .silent: quiet |= 1 << UInt64(j)
            case .cap(let n): if entering[j] + exiting[j] > n { quiet |= 1 << UInt64(j) }
            }
        }
        var sizes = [Int](repeating: 0, count: current.count)
        for slot in ps.customers.indices where ps.customers[slot].live {
            let bits = (ps.customers[slot].memberships & ~quiet) | (after[slot] & quiet)
            ps.customers[slot].memberships = bits
            // The next checkpoint rewrites every row in the new layout.
            markChanged(&ps, slot)
            for j in current.indices where bits & (1 << UInt64(j)) != 0 { sizes[j] += 1 }
            // Evaluate under the new rules at the next advance (timers were computed under the old ones).
            if stale != 0 {
                let t = max(ps.customers[slot].evaluatedAtMs, ps.streamTimeMs)
                ps.customers[slot].dueMs = t
                if t < ps.customers[slot].scheduledMs { schedule(&ps, slot: slot, t) }
            }
        }
        ps.stats.segmentSizes = sizes
        var report = ReconfigureReport()
        for (j, s) in current.enumerated() {
            let old = stored.first { $0.name == s.name }
            report.segments.append(.init(name: s.name, status: old == nil ? .added : old!.rule == s.rule ? .unchanged : .changed,
                                         entering: entering[j], exiting: exiting[j],
                                         emitted: stale & (1 << UInt64(j)) != 0 && quiet & (1 << UInt64(j)) == 0))
        }
        for s in stored where !current.contains(where: { $0.name == s.name }) {
            report.segments.append(.init(name: s.name, status: .removed, entering: 0, exiting: 0, emitted: false))
        }
        return report
    }
}
