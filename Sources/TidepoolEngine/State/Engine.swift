/// Identifies a Kafka partition. State is kept per partition so that a partition's customers can
/// move between hosts with it.
public struct PartitionID: Hashable, Sendable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32
    public init(topic: String, partition: Int32) {
        self.topic = topic
        self.partition = partition
    }
    public var description: String { "\(topic)[\(partition)]" }

    /// Hashes the partition number alone: the engine looks a partition up for every event, and
    /// SipHash over the topic's bytes was ~350 instructions of each lookup. A daemon reads a
    /// handful of topics, so ids that differ only by topic rarely share a bucket.
    public func hash(into h: inout Hasher) { h.combine(partition) }
}

/// The built-in rule of the foundation: contact a customer once, right after the first purchase.
public struct FirstPurchaseRule: Sendable, Equatable {
    public var enabled: Bool
    public var campaign: String
    public var channel: String
    /// How long downstream may still send the message after it fired.
    public var ttlMs: Int64

    public init(enabled: Bool = true, campaign: String = "first_purchase_welcome", channel: String = "wecom",
                ttlMs: Int64 = 72 * 3_600_000) {
        self.enabled = enabled
        self.campaign = campaign
        self.channel = channel
        self.ttlMs = ttlMs
    }
}

/// Everything the engine is configured with.
public struct EngineConfig: Sendable, Equatable {
    public var aggregates: AggregateConfig
    public var segments: SegmentSet
    /// Allowed lateness: stream time is the maximum event time seen minus this.
    public var latenessMs: Int64
    /// Customers with no event for this long (in stream time) are evicted from memory.
    public var customerRetentionMs: Int64
    public var firstPurchase: FirstPurchaseRule
    /// Secret mixed into the hashes of erased ids, so that the erasure list cannot be checked
    /// against guessed ids (`privacy.erasure_key`). Changing it forgets past erasures.
    public var erasureKey: String
    /// Re-engagement campaigns and the contact policy they share.
    public var campaigns: CampaignSet
    /// What the engine emits for each segment transition (`TransitionOutput`). Every transition
    /// is counted either way (`Engine.transitionCounts`).
    public var transitionOutput: TransitionOutput

    public init(aggregates: AggregateConfig = AggregateConfig(), segments: SegmentSet? = nil, latenessMs: Int64 = 5 * 60_000,
                customerRetentionMs: Int64 = 400 * AggregateConfig.dayMs, firstPurchase: FirstPurchaseRule = FirstPurchaseRule(),
                erasureKey: String = "", campaigns: CampaignSet = .empty, transitionOutput: TransitionOutput = .explained) {
        self.transitionOutput = transitionOutput
        self.erasureKey = erasureKey
        self.campaigns = campaigns
        self.aggregates = aggregates
        // An empty set always compiles.
        self.segments = segments ?? (try! SegmentSet([], aggregates: aggregates, channels: ChannelTable(aggregates)))
        self.latenessMs = latenessMs
        self.customerRetentionMs = customerRetentionMs
        self.firstPurchase = firstPurchase
    }
}

/// What the engine emits for each segment transition.
public enum TransitionOutput: Sendable, Equatable {
    /// A `SegmentTransition` with the values that decided it and the next predicted flip.
    case explained
    /// A `SegmentTransition` without values or next flip: rendering them costs more than the
    /// rest of an evaluation.
    case plain
    /// Nothing: the transition is only counted (`Engine.transitionCounts`). For a consumer that
    /// only counts them (the daemon): building and emitting a `SegmentTransition` (five strings)
    /// cost ~470 instructions per transition in the engine (callgrind, the benchmark replay has
    /// about one per event), and the caller's count by segment name more; together 4-5% of the
    /// replay's throughput. Campaigns start on transitions either way, and any customer's
    /// explanation is still available on demand (`Engine.view`).
    case counted
}

/// A customer entered or left a segment.
public struct SegmentTransition: Sendable, Equatable {
    public var customerID: String
    public var segment: String
    public var entered: Bool
    /// The instant (stream/event time) at which membership changed.
    public var atMs: Int64
    /// Stable version of the segment's rule (hash of its text).
    public var ruleVersion: String
    /// What decided it: each comparison's left side and its value at `atMs` (empty unless
    /// `EngineConfig.transitionOutput` is `.explained`).
    public var values: [(String, RuleValue)]
    /// The next instant at which this membership can flip without new events (nil: only an event
    /// can, or the output is not `.explained`).
    public var nextFlipMs: Int64?
    /// The event that caused it, or nil when time alone did (a timer).
    public var causeEventID: String?

    public static func == (a: SegmentTransition, b: SegmentTransition) -> Bool {
        a.customerID == b.customerID && a.segment == b.segment && a.entered == b.entered && a.atMs == b.atMs
            && a.ruleVersion == b.ruleVersion && a.nextFlipMs == b.nextFlipMs && a.causeEventID == b.causeEventID
            && a.values.map(\.0) == b.values.map(\.0) && a.values.map(\.1) == b.values.map(\.1)
    }
}

public enum EngineOutput: Sendable, Equatable {
    case trigger(Trigger)
    case transition(SegmentTransition)
    /// A customer was erased (data-subject request): downstream gets a tombstone on its key.
    case erased(customerID: String)
    /// A campaign episode fell in the customer's quiet hours and will be decided at `untilMs`.
    case deferred(campaign: String, customerID: String, untilMs: Int64)
}

/// One customer in memory. The fields are in an order that leaves no padding (144 bytes): the
/// 4-byte epoch fills the end of the aggregates' last word, the two flags come last.
public struct CustomerRecord: Sendable {
    public var aggregates = CustomerAggregates()
    /// The checkpoint epoch in which this customer last changed (`PartitionState.epoch`; listed
    /// in `PartitionState.dirty`), 0 when unchanged since its state was last captured.
    var dirtyEpoch: UInt32 = 0
    // The two flags sit beside the epoch, in what was padding: the record is 128 bytes, two
    // cache lines (`CustomerAggregates`).
    public var firstPurchaseFired = false
    public var live = true
    /// Bit i: member of segment i.
    public var memberships: UInt64 = 0
    /// Time of the last evaluation (evaluation time never goes backwards for a customer).
    public var evaluatedAtMs: Int64 = .min
    /// When this customer's timer is due (next possible flip or eviction), .max for none.
    public var dueMs: Int64 = .max
    /// Due time of the heap entry that stands for this customer (.max: none). A due that moves
    /// later keeps the earlier entry, which re-arms itself when it comes up: the heap never grows
    /// by one entry per event.
    var scheduledMs: Int64 = .max
    /// When the customer last came back from dormant or churned (.min: never); lifecycle `recalled`.
    public var returnedAtMs: Int64 = .min
    /// Stable hash of the customer id: orders timers due at the same instant the same way in
    /// every run, whatever slot the customer occupies (a restored engine fills slots differently).
    var idHash: UInt64 = 0
    /// Campaign episodes, contact ledger, consent and time zone.
    public var contact = ContactState()
}

/// Counters of one partition.
public struct PartitionStats: Sendable, Equatable {
    public var applied: Int64 = 0
    public var duplicates: Int64 = 0
    /// Events older than stream time when they arrived (applied, but no retroactive transitions).
    public var late: Int64 = 0
    public var timersFired: Int64 = 0
    public var transitions: Int64 = 0
    public var evicted: Int64 = 0
    public var erased: Int64 = 0
    /// Events of erased customers dated at or before their erasure (a replay), dropped.
    public var droppedAfterErasure: Int64 = 0
    /// Members per segment (indexed like the SegmentSet).
    public var segmentSizes: [Int] = []
    public init() {}

    /// Adds another period's counters; `segmentSizes` (a gauge, not a counter) stays as it is.
    public mutating func addCounters(_ o: PartitionStats) {
        applied += o.applied; duplicates += o.duplicates; late += o.late; timersFired += o.timersFired
        transitions += o.transitions; evicted += o.evicted; erased += o.erased; droppedAfterErasure += o.droppedAfterErasure
    }
}

/// The state of one partition: its customers, stream time and timers.
public struct PartitionState: Sendable {
    var index = CustomerIndex()
    /// Per-slot state in `SlotArray`s, which grow without copying (no stall as a partition grows).
    public internal(set) var ids = SlotArray<String>()
    public internal(set) var customers = SlotArray<CustomerRecord>()
    var free: [Int32] = []
    public internal(set) var maxEventTimeMs: Int64 = .min
    /// Maximum event time seen minus the allowed lateness (or the wall clock when idle).
    public internal(set) var streamTimeMs: Int64 = .min
    var timers = TimerWheel()
    /// Each customer's next possible flip per segment: `segments.count` entries from
    /// `slot * segments.count` (`Engine.evaluate`). Derived state, not checkpointed: a slot whose
    /// first entry is `unknown` (new, reused, restored, or after a reload) is evaluated in full.
    /// 4 bytes each: exact near, far ones possibly rounded down and marked so (`NextFlipCode`).
    var flips = SlotArray<UInt32>()
    public internal(set) var stats = PartitionStats()
    /// Slots changed in the current epoch, and customers evicted since the last capture began.
    var dirty: [Int32] = []
    /// Changes are recorded under this epoch. A checkpoint capture takes the slots of the current
    /// epoch and starts the next one (`beginCheckpoint`).
    var epoch: UInt32 = 1
    /// The epoch being captured, 0 when no capture is in progress: a customer still marked with it
    /// is copied into the capture before anything changes it (`preserve`).
    var capturingEpoch: UInt32 = 0
    var capture: CheckpointCapture?
    var removed: [String] = []
    /// Erased customers: keyed hash of the id -> erasure time. Older events of theirs are dropped,
    /// so a replay cannot bring them back; the id itself is not kept.
    public internal(set) var erased: [UInt64: Int64] = [:]
    /// Erasures since the last checkpoint.
    var newlyErased: [(UInt64, Int64)] = []
    public init() {}

    public var customerCount: Int { index.count }

    /// The slot of a customer in memory, or nil.
    public func slot(of id: String) -> Int? {
        index.find(id, hash: StableHash.hash64(id), ids: ids).map(Int.init)
    }
}

/// The pure customer engine: events and time in, state updated, triggers and segment transitions
/// out. No I/O and no clock of its own: the same events and `advance` calls in the same order
/// always give the same state and outputs.
public final class Engine {
    public private(set) var config: EngineConfig
    public let channels: ChannelTable
    /// Hot-path copies of configuration scalars (reading them through `config` copied structs).
    private var limits: AggregateConfig.Limits
    private var latenessMs: Int64
    private var retentionMs: Int64
    private var hasCampaigns: Bool
    private var firstPurchaseEnabled: Bool
    /// Change only through `setPartition`, which keeps `lastPartition` valid.
    public private(set) var partitions: [PartitionID: PartitionState] = [:]
    /// The partition of the previous `withPartition` and its index in `partitions`: consecutive
    /// events mostly come from one partition (a consumer hands them over in per-partition
    /// batches), and looking the key up hashed its topic String with SipHash twice per event
    /// (~700 instructions, 7% of `apply`).
    private var lastPartition: (id: PartitionID, index: Dictionary<PartitionID, PartitionState>.Index)?
    private var ruleVersions: [String]
    private let erasureSeed: UInt64
    private var usesLifecycle: Bool
    /// Time zone offsets for quiet hours.
    let offsets: any UTCOffsetSource
    /// Evaluate only the segments that can have changed (`EvaluationScope`); off, every
    /// evaluation runs every segment. Tests compare the two.
    var incrementalEvaluation = true
    /// The `EvaluationScope` of the current segments as raw memory: the segments each event type
    /// affects (`EventType.allCases.count` masks), then each segment's dependents, then the
    /// memberships of a customer with no events and the segments whose membership an empty
    /// customer can change with time (`emptyCustomer`). Read on every
    /// evaluation; reading them through the scope's arrays retained and released the arrays each
    /// time (~250 instructions per evaluation, callgrind).
    private var scopeMasks: UnsafeMutablePointer<UInt64>
    /// `EvaluationScope.all` of the current segments.
    private var allSegments: UInt64
    private var transitionOutput: TransitionOutput
    /// Transitions (entered + exited) of each current segment since this engine was created or
    /// last reconfigured, indexed like the segments. Raw memory, like `scopeMasks`: an array
    /// stored in the engine was checked for exclusive access and uniqueness on every increment.
    private var transitionsBySegment: UnsafeMutablePointer<Int64>
    /// Memory for one evaluation at a time (`EvaluationScratch`), sized for the current segments.
    private var scratch: EvaluationScratch
    /// Transitions counted under earlier configurations, by segment name (a reload renumbers
    /// segments; a removed segment keeps its count).
    private var earlierTransitions: [String: Int64] = [:]

    private static func scopeMasks(_ segments: SegmentSet, channels: ChannelTable) -> UnsafeMutablePointer<UInt64> {
        let s = segments.scope
        let p = UnsafeMutablePointer<UInt64>.allocate(capacity: s.affectedBy.count + s.dependents.count + 2)
        p.initialize(from: s.affectedBy, count: s.affectedBy.count)
        (p + s.affectedBy.count).initialize(from: s.dependents, count: s.dependents.count)
        let empty = emptyCustomer(segments, channels: channels)
        (p + s.affectedBy.count + s.dependents.count).initialize(to: empty.bits)
        (p + s.affectedBy.count + s.dependents.count + 1).initialize(to: empty.timed)
        return p
    }

    /// A customer's first event changes only the segments its type affects; every other segment
    /// reads nothing but empty state, and is what it is for a customer with no events. Those
    /// memberships (`bits`) are computed once here. `timed`: the segments an empty customer's
    /// membership could still change with time (none in the example rules), with the segments
    /// that refer to them; a first event evaluates those too. A new customer's first
    /// evaluation was every segment; with the ten example segments it is about half of them.
    private static func emptyCustomer(_ segments: SegmentSet, channels: ChannelTable) -> (bits: UInt64, timed: UInt64) {
        let empty = CustomerAggregates()
        let bits = segments.memberships(empty, now: 0, channels: channels)
        var timed: UInt64 = 0
        for (i, at) in segments.nextFlips(empty, now: 0, channels: channels).enumerated() where at != .max {
            timed |= segments.scope.dependents[i]
        }
        return (bits, timed)
    }

    private static func counters(_ segments: SegmentSet) -> UnsafeMutablePointer<Int64> {
        let n = max(segments.segments.count, 1)
        let p = UnsafeMutablePointer<Int64>.allocate(capacity: n)
        p.initialize(repeating: 0, count: n)
        return p
    }

    deinit {
        scopeMasks.deallocate()
        transitionsBySegment.deallocate()
        scratch.deallocate()
    }

    /// Segment transitions (entered + exited) since this engine was created, by segment name,
    /// over every partition it held: a counter that never goes backwards, whatever reloads and
    /// partition moves happened (a segment removed by a reload keeps its last count).
    public var transitionCounts: [String: Int64] {
        var out = earlierTransitions
        for (i, s) in config.segments.segments.enumerated() { out[s.name, default: 0] += transitionsBySegment[i] }
        return out
    }

    public init(config: EngineConfig = EngineConfig(), offsets: any UTCOffsetSource = FixedOffsets()) {
        self.config = config
        self.offsets = offsets
        self.channels = ChannelTable(config.aggregates)
        (limits, latenessMs, retentionMs, hasCampaigns, firstPurchaseEnabled) = Engine.hot(config, channels)
        self.ruleVersions = config.segments.segments.map { String(StableHash.hex128([$0.rule]).prefix(12)) }
        self.usesLifecycle = config.segments.allTerms.recalledForMs != nil
        self.scopeMasks = Engine.scopeMasks(config.segments, channels: ChannelTable(config.aggregates))
        self.allSegments = config.segments.scope.all
        self.transitionOutput = config.transitionOutput
        self.transitionsBySegment = Engine.counters(config.segments)
        self.scratch = EvaluationScratch(for: config.segments)
        self.erasureSeed = StableHash.hash64(Array("tidepool-erasure:".utf8) + Array(config.erasureKey.utf8))
    }

    private static func hot(_ c: EngineConfig, _ channels: ChannelTable) -> (AggregateConfig.Limits, Int64, Int64, Bool, Bool) {
        (c.aggregates.limits(channels), c.latenessMs, c.customerRetentionMs, !c.campaigns.isEmpty, c.firstPurchase.enabled)
    }

    public convenience init(firstPurchase: FirstPurchaseRule) {
        self.init(config: EngineConfig(firstPurchase: firstPurchase))
    }

    public func assign(_ p: PartitionID) {
        if partitions[p] == nil { setPartition(p, PartitionState()) }
    }

    public func release(_ p: PartitionID) { setPartition(p, nil) }

    /// Every insertion or removal of a partition goes through here: it moves dictionary indices.
    func setPartition(_ p: PartitionID, _ ps: PartitionState?) {
        lastPartition = nil
        partitions[p] = ps
    }

    public var customerCount: Int { partitions.values.reduce(0) { $0 + $1.customerCount } }

    /// Members per segment over all partitions held.
    public var segmentSizes: [String: Int] {
        var out: [String: Int] = [:]
        for (i, s) in config.segments.segments.enumerated() {
            out[s.name] = partitions.values.reduce(0) { $0 + ($1.stats.segmentSizes.count > i ? $1.stats.segmentSizes[i] : 0) }
        }
        return out
    }

    public func record(_ id: String) -> CustomerRecord? {
        for p in partitions.values { if let s = p.slot(of: id) { return p.customers[s] } }
        return nil
    }

    public func stats(_ p: PartitionID) -> PartitionStats? { partitions[p]?.stats }
    public func streamTime(_ p: PartitionID) -> Int64? { partitions[p]?.streamTimeMs }

    /// Names of the segments a customer belongs to.
    public func memberships(_ id: String) -> [String] {
        guard let r = record(id) else { return [] }
        return config.segments.segments.indices.filter { r.memberships & (1 << UInt64($0)) != 0 }.map { config.segments.segments[$0].name }
    }

    // MARK: - Events

    /// Applies one event of partition `p`.
    public func apply(_ e: TouchpointEvent, partition p: PartitionID, emit: (EngineOutput) -> Void) {
        withPartition(p) { ps in
            withUnsafePointer(to: e) { apply($0, idHash: StableHash.hash64(e.customerID), &ps, emit: emit) }
        }
    }

    /// Applies a run of events of partition `p`, in order: the same state and outputs as applying
    /// them one by one. First it finds every customer of the run and asks the CPU to bring their
    /// state into cache (`CustomerPrefetch`), so that the cache misses of many customers overlap
    /// instead of stalling one event at a time. A consumer hands events over in such runs.
    public func apply(_ events: [TouchpointEvent], partition p: PartitionID, emit: (EngineOutput) -> Void) {
        apply(events[...], partition: p, emit: emit)
    }

    /// Applies a run of events of partition `p` held in part of a larger array (the daemon keeps
    /// one poll's events of a shard in one array).
    public func apply(_ events: ArraySlice<TouchpointEvent>, partition p: PartitionID, emit: (EngineOutput) -> Void) {
        withPartition(p) { ps in
            let n = events.count
            events.withUnsafeBufferPointer { ev in
                withUnsafeTemporaryAllocation(of: UInt64.self, capacity: n) { hashes in
                    withUnsafeTemporaryAllocation(of: Int32.self, capacity: n) { slots in
                        let segments = config.segments.segments.count
                        // 1. Hash every id and prefetch its index entry; 2. read the entries
                        // (now in cache) and prefetch the records; 3. apply, prefetching the
                        // aggregates of a customer a few events ahead (its record is in cache by then).
                        for i in 0..<n { hashes[i] = StableHash.hash64(ev[i].customerID) }
                        // One call each for the whole run: called per event from this loop, the
                        // index was copied (four retains and releases) for every event.
                        ps.index.prefetch(UnsafeBufferPointer(hashes))
                        ps.index.likelySlots(UnsafeBufferPointer(hashes), into: slots)
                        ps.customers.withUnsafeBufferPointer { c in
                            ps.ids.withUnsafeBufferPointer { ids in
                                ps.flips.withUnsafeBufferPointer { f in
                                    for i in 0..<n { CustomerPrefetch.record(c, ids, f, slots[i], segments: segments) }
                                }
                            }
                        }
                        for i in 0..<n {
                            // The current table: applying may have grown it.
                            if i + CustomerPrefetch.aggregatesAhead < n {
                                ps.customers.withUnsafeBufferPointer { CustomerPrefetch.aggregates($0, slots[i + CustomerPrefetch.aggregatesAhead]) }
                            }
                            apply(ev.baseAddress! + i, idHash: hashes[i], &ps, emit: emit)
                        }
                    }
                }
            }
        }
    }

    /// One event, read where it lies: passed as a value, it was copied (every String and
    /// optional retained, then released: ~220 instructions, 3.3% of the engine's on the
    /// callgrind input), since the compiler cannot prove the caller's buffer unchanged during the
    /// call. The common path reads only the fields it needs; rare paths take a copy.
    private func apply(_ ep: UnsafePointer<TouchpointEvent>, idHash: UInt64, _ ps: inout PartitionState, emit: (EngineOutput) -> Void) {
        let timestampMs = ep.pointee.timestampMs, type = ep.pointee.type
        // 1. Stream time moves with the newest event; timers due by then fire first.
        if timestampMs > ps.maxEventTimeMs { ps.maxEventTimeMs = timestampMs }
        let late = timestampMs < ps.streamTimeMs
        advance(&ps, to: ps.maxEventTimeMs - latenessMs, emit: emit)
        if late { ps.stats.late += 1 }

        // Erasure: the customer leaves memory and every segment; only a keyed hash remains.
        if type == .erase {
            let e = ep.pointee
            let erasureKey = self.keyedHash(e.customerID)
            if let s = ps.slot(of: e.customerID) {
                preserve(&ps, s)
                self.remove(&ps, slot: s)
            }
            let at = max(e.timestampMs, ps.erased[erasureKey] ?? .min)
            ps.erased[erasureKey] = at
            ps.newlyErased.append((erasureKey, at))
            ps.stats.erased += 1
            emit(.erased(customerID: e.customerID))
            return
        }
        // Only hash the id when someone in this partition was erased (the common case: nobody).
        if !ps.erased.isEmpty, let at = ps.erased[self.keyedHash(ep.pointee.customerID)], timestampMs <= at {
            ps.stats.droppedAfterErasure += 1
            return
        }

        let slot = self.slot(for: ep.pointee.customerID, hash: idHash, in: &ps)
        // Never evaluated: a customer new to this partition, whose state is this event alone.
        let first = ps.customers[slot].evaluatedAtMs == .min
        preserve(&ps, slot)
        // 2. Evaluation time never goes backwards for a customer, and never before stream time:
        //    a late event updates state now, it does not rewrite past memberships.
        let evalAt = max(ps.customers[slot].evaluatedAtMs, timestampMs, ps.streamTimeMs)
        // 3. Flips of this customer due before this event happen first, at their instant.
        while ps.customers[slot].dueMs <= evalAt {
            let due = ps.customers[slot].dueMs
            evaluate(&ps, slot: slot, at: due, cause: nil, type: nil, emit: emit)
            if ps.customers[slot].dueMs == due { break }
        }
        // 4. The event itself.
        let orderKey = (type == .purchase || type == .refund || type == .cancel)
            ? ep.pointee.properties?.string(forKey: "order_id").map { StableHash.hash64($0) } : nil
        // The lifecycle's `recalled` stage needs to know when a dormant customer came back;
        // skip the work when no rule uses lifecycle().
        let stageBefore = usesLifecycle
            ? LifecycleStage.of(ps.customers[slot].aggregates, returnedAtMs: ps.customers[slot].returnedAtMs,
                                at: evalAt, config.segments.models)
            : nil
        let channel = channels.index(of: ep.pointee.channel)
        let outcome = ps.customers[slot].aggregates.apply(
            type: type, timestampMs: timestampMs, amount: ep.pointee.amount?.units ?? 0, channel: channel, orderKey: orderKey,
            eventKey: StableHash.hash64(ep.pointee.eventID), streamTimeMs: max(ps.streamTimeMs, timestampMs), limits: limits)
        guard outcome == .applied else {
            ps.stats.duplicates += 1
            return
        }
        if stageBefore == .dormant || stageBefore == .churned { ps.customers[slot].returnedAtMs = evalAt }
        ps.stats.applied += 1
        if type == .consent || type == .profileUpdate || type == .signup { self.applyProfile(ep.pointee, &ps.customers[slot].contact) }
        if hasCampaigns {
            startEventCampaigns(&ps, slot: slot, event: ep.pointee, channel: channel, at: evalAt)
        }
        if type == .purchase && firstPurchaseEnabled && !ps.customers[slot].firstPurchaseFired {
            ps.customers[slot].firstPurchaseFired = true
            emit(.trigger(firstPurchaseTrigger(ep.pointee, ps.customers[slot].aggregates)))
        }
        evaluate(&ps, slot: slot, at: evalAt, cause: ep.pointee.eventID, type: type, firstEvent: first, emit: emit)
    }

    /// Moves a partition's stream time forward to `streamTimeMs` (the pipeline calls this with the
    /// wall clock minus the lateness when the partition is caught up and idle) and fires every
    /// timer due by then, each at its own instant.
    public func advance(_ p: PartitionID, to streamTimeMs: Int64, emit: (EngineOutput) -> Void) {
        withPartition(p) { ps in advance(&ps, to: streamTimeMs, emit: emit) }
    }

    private func advance(_ ps: inout PartitionState, to t: Int64, emit: (EngineOutput) -> Void) {
        guard t > ps.streamTimeMs else { return }
        ps.streamTimeMs = t
        let segments = config.segments.segments.count
        while let top = ps.timers.popDue(through: t) {
            // The next timer's customer is as cold as this one: ask for it now.
            CustomerPrefetch.record(&ps, ps.timers.nextSlot, segments: segments)
            let slot = Int(top.slot)
            // Entries are not removed when a customer's due changes; stale ones are skipped here.
            guard slot < ps.customers.count, ps.customers[slot].live, ps.customers[slot].scheduledMs == top.due else { continue }
            ps.customers[slot].scheduledMs = .max
            if ps.customers[slot].dueMs > top.due {
                // The due moved later since this entry was pushed: re-arm at the new instant.
                if ps.customers[slot].dueMs != .max { schedule(&ps, slot: slot, ps.customers[slot].dueMs) }
                continue
            }
            ps.stats.timersFired += 1
            preserve(&ps, slot)
            if let last = Self.lastSeen(&ps.customers[slot].aggregates), last + retentionMs <= top.due,
               ps.customers[slot].contact.pending.isEmpty {
                evict(&ps, slot: slot)
                continue
            }
            evaluate(&ps, slot: slot, at: top.due, cause: nil, type: nil, emit: emit)
        }
    }

    // MARK: - Evaluation

    /// Evaluates a customer's segments at `t`: after an event of `type`, or (nil) when its timer
    /// fired. Only the segments that can have changed are evaluated (`EvaluationScope`): those the
    /// event's type affects and those whose own next flip has come, with their dependents; the
    /// others keep their bit and their next flip from the customer's row of `ps.flips`.
    ///
    /// `firstEvent`: the customer's state is this one event (`emptyCustomer`).
    private func evaluate(_ ps: inout PartitionState, slot: Int, at t: Int64, cause: String?, type: EventType?,
                          firstEvent: Bool = false, emit: (EngineOutput) -> Void) {
        let segs = config.segments
        markChanged(&ps, slot)
        // The record in place: nothing below adds a customer (the table does not move).
        let rec = ps.customers.uniquePointer(to: slot)
        // The row of next flips is relative to the last evaluation (`NextFlipCode`).
        let previousBase = rec.pointee.evaluatedAtMs
        if rec.pointee.evaluatedAtMs < t { rec.pointee.evaluatedAtMs = t }
        let base = rec.pointee.evaluatedAtMs
        var next: Int64 = .max
        let n = segs.segments.count
        if n > 0 {
            let row = slot * n
            if ps.flips.count < row + n {
                // Grows with the customer table (a slot not seen yet starts unknown).
                if ps.flips.capacity < row + n { ps.flips.reserveCapacity(max(ps.customers.capacity, slot + 1) * n) }
                ps.flips.append(contentsOf: repeatElement(NextFlipCode.unknown, count: row + n - ps.flips.count))
            }
            let returned = rec.pointee.returnedAtMs
            let channels = self.channels
            let stored = rec.pointee.memberships
            let masks = scopeMasks, incremental = incrementalEvaluation, everySegment = allSegments
            // The row, decoded: exact instants for the segments evaluated below; for the others,
            // the instants kept, exact except those in `rounded` (lower bounds, `NextFlipCode`).
            do {
                let exact = scratch.flips
                let dependents = masks + EvaluationScope.typeCount
                // After the dependents (`scopeMasks`): what a customer with no events is in, and
                // the segments its membership could change with time.
                let emptyMembers = dependents[n], emptyTimed = dependents[n + 1]
                /// `m` with every segment whose rounded instant a segment in `m` would read
                /// (through `in_segment`), and the segments that refer to it: evaluated, it
                /// gives its exact instant to them.
                func readingExact(_ m: UInt64, _ rounded: UInt64) -> UInt64 {
                    var m = m
                    while true {
                        var added: UInt64 = 0
                        var r = rounded & ~m
                        while r != 0 {
                            let i = r.trailingZeroBitCount
                            r &= r - 1
                            if dependents[i] & m != 0 { added |= dependents[i] }
                        }
                        if added == 0 { return m }
                        m |= added
                    }
                }
                // Which segments to evaluate, read from the row alone (a closure that also captured
                // the aggregates copied them, four retains per evaluation).
                var rounded: UInt64 = 0
                var mask: UInt64 = ps.flips.withUnsafeBufferPointer { all in
                    for i in 0..<n {
                        exact[i] = NextFlipCode.decode(all[row + i], base: previousBase)
                        if !NextFlipCode.isExact(all[row + i]) { rounded |= 1 << UInt64(i) }
                    }
                    var mask = everySegment
                    if incremental && all[row] != NextFlipCode.unknown {
                        mask = type.map { masks[Int($0.rawValue)] } ?? 0
                        for i in 0..<n where exact[i] <= t { mask |= dependents[i] }
                    } else if incremental && firstEvent, let type {
                        // The others are as for an empty customer, and stay so until an event.
                        mask = masks[Int(type.rawValue)] | emptyTimed
                        for i in 0..<n where mask & (1 << UInt64(i)) == 0 { exact[i] = .max }
                    }
                    return mask
                }
                if rounded & ~mask != 0 { mask = readingExact(mask, rounded) }
                // Borrow the aggregates in place. Through the array subscript they were copied (a retain
                // and release per array) on every evaluation; through an unsafe pointer too, because the
                // compiler cannot rule out a write to that memory during the calls. An `inout` access is
                // exclusive, so the calls read the record where it lies.
                func run(_ a: inout CustomerAggregates, _ bits: UInt64, _ mask: UInt64) -> UInt64 {
                    mask == 0 ? bits
                        : segs.evaluate(a, now: t, channels: channels, returnedAtMs: returned, stored: bits, mask: mask,
                                        flips: exact, scratch: scratch)
                }
                var bits = run(&rec.pointee.aggregates, firstEvent && incremental ? emptyMembers : stored, mask)
                var nextFlip = Int64.max
                while true {
                    var earliest = -1
                    nextFlip = .max
                    for i in 0..<n where exact[i] < nextFlip { nextFlip = exact[i]; earliest = i }
                    // A rounded instant as the customer's earliest would set the timer early (and
                    // the checkpointed due): that segment is evaluated for its exact instant. Its
                    // truth cannot have changed (its instant is after `t`), so neither can the
                    // bits of those that refer to it.
                    guard earliest >= 0, mask & (1 << UInt64(earliest)) == 0, rounded & (1 << UInt64(earliest)) != 0 else { break }
                    let more = readingExact(mask | dependents[earliest], rounded)
                    bits = run(&rec.pointee.aggregates, bits, more & ~mask)
                    mask |= more
                }
                ps.flips.withUnsafeMutableBufferPointer { all in
                    // What was rounded and not evaluated stays marked rounded.
                    let stillRounded = rounded & ~mask
                    for i in 0..<n {
                        all[row + i] = NextFlipCode.encode(exact[i], base: base, exact: stillRounded & (1 << UInt64(i)) == 0)
                    }
                }
                next = nextFlip
                let changed = bits ^ stored
                if changed != 0 {
                    if ps.stats.segmentSizes.count != segs.segments.count { ps.stats.segmentSizes = Array(repeating: 0, count: segs.segments.count) }
                    if transitionOutput != .counted {
                        emitTransitions(&ps, slot: slot, changed: changed, bits: bits, at: t, cause: cause,
                                        flips: exact, emit: emit)
                    }
                    var rest = changed
                    while rest != 0 {
                        let i = rest.trailingZeroBitCount
                        rest &= rest - 1
                        let entered = bits & (1 << UInt64(i)) != 0
                        ps.stats.transitions += 1
                        ps.stats.segmentSizes[i] += entered ? 1 : -1
                        transitionsBySegment[i] += 1
                        if hasCampaigns {
                            startSegmentCampaigns(&ps, slot: slot, segment: i, entered: entered, at: t, cause: cause)
                        }
                    }
                    rec.pointee.memberships = bits
                }
            }
        }
        if rec.pointee.contact.hasPending {
            decideDue(&ps, slot: slot, at: t, memberships: rec.pointee.memberships, emit: emit)
            next = min(next, rec.pointee.contact.earliestDue)
        }
        // Through an `inout` access, which is exclusive: read through the buffer pointer, the
        // aggregates were copied (the call may not prove that memory unchanged).
        if let last = Self.lastSeen(&rec.pointee.aggregates) { next = min(next, max(last + retentionMs, t + 1)) }
        rec.pointee.dueMs = next
        if next < rec.pointee.scheduledMs { schedule(&ps, slot: slot, next) }
    }

    /// The `SegmentTransition`s of one evaluation (`transitionOutput` other than `.counted`), with
    /// the values that decided each and its next flip when `.explained`. Out of line: the daemon
    /// only counts transitions, and building the optional context in the evaluation cost it
    /// ~2% of the engine's instructions though it was never used.
    @inline(never)
    private func emitTransitions(_ ps: inout PartitionState, slot: Int, changed: UInt64, bits: UInt64, at t: Int64, cause: String?,
                                 flips exact: UnsafeMutableBufferPointer<Int64>, emit: (EngineOutput) -> Void) {
        let segs = config.segments
        let ctx: RuleContext? = transitionOutput == .explained
            ? RuleContext(aggregates: ps.customers[slot].aggregates, now: t, channels: channels,
                          memberships: bits,
                          models: segs.models, returnedAtMs: ps.customers[slot].returnedAtMs)
            : nil
        var rest = changed
        while rest != 0 {
            let i = rest.trailingZeroBitCount
            rest &= rest - 1
            var values: [(String, RuleValue)] = []
            var flip: Int64? = nil
            if let ctx {
                values = RuleExplainer.values(segs.explanationParts[i], ctx)
                let f = exact[i]  // evaluated: exact
                flip = f == .max ? nil : f
            }
            emit(.transition(SegmentTransition(
                customerID: ps.ids[slot], segment: segs.segments[i].name, entered: bits & (1 << UInt64(i)) != 0, atMs: t,
                ruleVersion: ruleVersions[i], values: values, nextFlipMs: flip, causeEventID: cause)))
        }
    }

    @inline(__always)
    private static func lastSeen(_ a: inout CustomerAggregates) -> Int64? { a.lastSeen }

    func schedule(_ ps: inout PartitionState, slot: Int, _ due: Int64) {
        ps.customers[slot].scheduledMs = due
        ps.timers.push(TimerWheel.Entry(due: due, key: ps.customers[slot].idHash, slot: Int32(slot)))
    }

    // MARK: - Reconfiguration

    /// Swaps in new segments, campaigns and contact policy (a configuration reload) without losing
    /// any customer state. Memberships carry over by segment name; every customer is re-evaluated
    /// at its evaluation time under the new rules. Transitions caused by the change itself are
    /// emitted (and start campaigns) according to `policy`. Aggregates and models must not change
    /// (their state layout depends on them); the caller checks that.
    public func reconfigure(_ new: EngineConfig, policy: ReloadPolicy, emit: (EngineOutput) -> Void) -> ReconfigureReport {
        reconfigure(new, policy: policy, impact: reloadImpact(new), emit: emit)
    }

    /// Maps old membership bits to the new segments' bits by segment name.
    private func membershipRemap(to new: EngineConfig) -> (UInt64) -> UInt64 {
        let newSegs = new.segments.segments
        var map: [(UInt64, UInt64)] = []
        for (i, s) in config.segments.segments.enumerated() {
            if let j = newSegs.firstIndex(where: { $0.name == s.name }) { map.append((1 << UInt64(i), 1 << UInt64(j))) }
        }
        return { bits in
            var out: UInt64 = 0
            for (a, b) in map where bits & a != 0 { out |= b }
            return out
        }
    }

    /// The dry run of a reload: how many customers each new segment would gain and lose, and how
    /// many each removed segment holds. Nothing changes. A daemon that splits its partitions over
    /// several engines sums the impacts (`ReloadImpact.adding`) so that a `cap` is decided over
    /// every customer it holds, then passes the sum to `reconfigure(_:policy:impact:emit:)`.
    public func reloadImpact(_ new: EngineConfig) -> ReloadImpact {
        let oldSegs = config.segments.segments
        let newSegs = new.segments.segments
        let remap = membershipRemap(to: new)
        var entering = [Int](repeating: 0, count: newSegs.count), exiting = entering
        var removedMembers = [Int](repeating: 0, count: oldSegs.count)
        for ps in partitions.values {
            for slot in ps.customers.indices where ps.customers[slot].live {
                let r = ps.customers[slot]
                let t = max(r.evaluatedAtMs, ps.streamTimeMs)
                let before = remap(r.memberships)
                let after = new.segments.memberships(r.aggregates, now: t, channels: channels, returnedAtMs: r.returnedAtMs)
                for j in newSegs.indices {
                    let bit: UInt64 = 1 << UInt64(j)
                    if after & bit != 0 && before & bit == 0 { entering[j] += 1 }
                    if after & bit == 0 && before & bit != 0 { exiting[j] += 1 }
                }
                for i in oldSegs.indices where r.memberships & (1 << UInt64(i)) != 0 && !newSegs.contains(where: { $0.name == oldSegs[i].name }) {
                    removedMembers[i] += 1
                }
            }
        }
        return ReloadImpact(entering: entering, exiting: exiting, removedMembers: removedMembers)
    }

    /// `reconfigure(_:policy:emit:)` with the dry run's counts given (summed over every engine
    /// of the process): `policy` decides on them, and the report states them.
    public func reconfigure(_ new: EngineConfig, policy: ReloadPolicy, impact: ReloadImpact,
                            emit: (EngineOutput) -> Void) -> ReconfigureReport {
        precondition(new.aggregates == config.aggregates && new.segments.models == config.segments.models,
                     "aggregates and models cannot change on reload")
        let oldSegs = config.segments.segments
        let newSegs = new.segments.segments
        precondition(impact.entering.count == newSegs.count && impact.removedMembers.count == oldSegs.count,
                     "the impact was computed for another configuration")
        // Every customer is about to change: captures in progress take their states first.
        completeCaptures()
        let remap = membershipRemap(to: new)
        let (entering, exiting, removedMembers) = (impact.entering, impact.exiting, impact.removedMembers)
        // Which segments publish their reload transitions.
        var loud: UInt64 = 0
        for j in newSegs.indices {
            switch policy {
            case .emit: loud |= 1 << UInt64(j)
            case .silent: break
            case .cap(let n): if entering[j] + exiting[j] <= n { loud |= 1 << UInt64(j) }
            }
        }
        var report = ReconfigureReport()
        for (j, s) in newSegs.enumerated() {
            let old = oldSegs.first { $0.name == s.name }
            let status: ReconfigureReport.Status = old == nil ? .added : old!.rule == s.rule ? .unchanged : .changed
            report.segments.append(.init(name: s.name, status: status, entering: entering[j], exiting: exiting[j],
                                         emitted: loud & (1 << UInt64(j)) != 0))
        }
        for (i, s) in oldSegs.enumerated() where !newSegs.contains(where: { $0.name == s.name }) {
            report.segments.append(.init(name: s.name, status: .removed, entering: 0, exiting: removedMembers[i], emitted: false))
        }
        let oldCampaigns = Set(config.campaigns.definitions.map(\.name)), newCampaigns = Set(new.campaigns.definitions.map(\.name))
        report.campaignsAdded = newCampaigns.subtracting(oldCampaigns).sorted()
        report.campaignsRemoved = oldCampaigns.subtracting(newCampaigns).sorted()
        report.campaignsChanged = new.campaigns.definitions.filter { d in
            config.campaigns.definitions.contains { $0.name == d.name && $0 != d }
        }.map(\.name)

        // Switch, then bring every customer up to date under the new rules. Transitions counted
        // so far stay with their segment's name.
        for (i, s) in oldSegs.enumerated() { earlierTransitions[s.name, default: 0] += transitionsBySegment[i] }
        transitionsBySegment.deallocate()
        transitionsBySegment = Engine.counters(new.segments)
        transitionOutput = new.transitionOutput
        config = new
        (limits, latenessMs, retentionMs, hasCampaigns, firstPurchaseEnabled) = Engine.hot(new, channels)
        ruleVersions = new.segments.segments.map { String(StableHash.hex128([$0.rule]).prefix(12)) }
        usesLifecycle = new.segments.allTerms.recalledForMs != nil
        scopeMasks.deallocate()
        scopeMasks = Engine.scopeMasks(new.segments, channels: channels)
        scratch.deallocate()
        scratch = EvaluationScratch(for: new.segments)
        allSegments = new.segments.scope.all
        for p in Array(partitions.keys) {
            withPartition(p) { ps in
                var sizes = [Int](repeating: 0, count: newSegs.count)
                for slot in ps.customers.indices where ps.customers[slot].live {
                    let r = ps.customers[slot]
                    let t = max(r.evaluatedAtMs, ps.streamTimeMs)
                    var bits = remap(r.memberships)
                    if loud != UInt64.max >> UInt64(64 - max(newSegs.count, 1)) {
                        // Quiet segments take their new membership without a transition.
                        let after = new.segments.memberships(r.aggregates, now: t, channels: channels, returnedAtMs: r.returnedAtMs)
                        bits = (bits & loud) | (after & ~loud)
                    }
                    ps.customers[slot].memberships = bits
                    for j in newSegs.indices where bits & (1 << UInt64(j)) != 0 { sizes[j] += 1 }
                }
                ps.stats.segmentSizes = sizes
                // Next flips computed under the old rules mean nothing now: every customer is
                // evaluated in full.
                ps.flips.removeAll()
                for slot in ps.customers.indices where ps.customers[slot].live {
                    let t = max(ps.customers[slot].evaluatedAtMs, ps.streamTimeMs)
                    evaluate(&ps, slot: slot, at: t, cause: nil, type: nil, emit: emit)
                }
            }
        }
        return report
    }

    // MARK: - Customers

    private func slot(for id: String, hash: UInt64, in ps: inout PartitionState) -> Int {
        if let s = ps.index.find(id, hash: hash, ids: ps.ids) { return Int(s) }
        let s: Int
        var record = CustomerRecord()
        record.idHash = hash
        if let f = ps.free.popLast() {
            s = Int(f)
            ps.customers[s] = record
            ps.ids[s] = id
        } else {
            s = ps.customers.count
            ps.customers.append(record)
            ps.ids.append(id)
        }
        ps.index.insert(hash: hash, slot: Int32(s))
        let n = config.segments.segments.count
        if n > 0 && ps.flips.count > s * n { ps.flips[s * n] = NextFlipCode.unknown }
        return s
    }

    /// Consent (`properties.status` granted or withdrawn for `properties.channel`, default the
    /// event's channel) and the customer's time zone (`properties.time_zone`).
    private func applyProfile(_ e: TouchpointEvent, _ contact: inout ContactState) {
        guard let props = e.properties else { return }
        if let zone = props.string(forKey: "time_zone"), !zone.isEmpty, zone.utf8.count <= 64 { contact.timeZone = zone }
        if e.type == .consent, let status = props.string(forKey: "status") {
            let ch = props.string(forKey: "channel") ?? e.channel
            guard channels.isKnown(ch) else { return }
            contact.setConsent(channels.index(of: ch), granted: status == "granted")
        }
    }

    private func evict(_ ps: inout PartitionState, slot: Int) {
        remove(&ps, slot: slot)
        ps.stats.evicted += 1
    }

    /// Keyed hash of a customer id for the erasure list (key: `EngineConfig.erasureKey`).
    public func keyedHash(_ id: String) -> UInt64 {
        StableHash.hash64(id, seed: erasureSeed)
    }

    /// A customer leaves memory, and with it every segment (sizes follow); the next checkpoint
    /// deletes its row.
    private func remove(_ ps: inout PartitionState, slot: Int) {
        ps.removed.append(ps.ids[slot])
        let m = ps.customers[slot].memberships
        for i in ps.stats.segmentSizes.indices where m & (1 << UInt64(i)) != 0 { ps.stats.segmentSizes[i] -= 1 }
        ps.index.remove(ps.ids[slot], hash: ps.customers[slot].idHash, ids: ps.ids)
        ps.ids[slot] = ""
        ps.customers[slot] = CustomerRecord()
        ps.customers[slot].live = false
        ps.free.append(Int32(slot))
    }

    @inline(__always)
    func withPartition(_ p: PartitionID, _ body: (inout PartitionState) -> Void) {
        if let last = lastPartition, last.id == p {
            body(&partitions.values[last.index])
            return
        }
        var found = partitions.index(forKey: p)
        if found == nil {
            setPartition(p, PartitionState())
            found = partitions.index(forKey: p)
        }
        let i = found!
        lastPartition = (p, i)
        body(&partitions.values[i])
    }

    private func firstPurchaseTrigger(_ e: TouchpointEvent, _ a: CustomerAggregates) -> Trigger {
        let rule = config.firstPurchase
        let firstSeen = a.firstSeen ?? e.timestampMs
        return Trigger(
            triggerID: Trigger.id(customerID: e.customerID, campaign: rule.campaign, episode: 1),
            campaign: rule.campaign, customerID: e.customerID, channel: rule.channel,
            reasonKind: "first_purchase",
            reasonDetail: "first purchase of \(e.amount.map { $0.description } ?? "0") \(e.currency ?? "") on \(e.channel)",
            causeEventID: e.eventID, episode: 1,
            firedAtMs: e.timestampMs, expiresAtMs: e.timestampMs + rule.ttlMs,
            snapshot: [("orders", .int(a.lifetimeOrders)), ("spend", .money(Money(units: a.lifetimeSpend))),
                       ("first_seen", .time(firstSeen))])
    }
}

/// What a reload does with the segment transitions it causes itself.
public enum ReloadPolicy: Sendable, Equatable {
    /// Publish them like any other transition (campaigns start).
    case emit
    /// Apply the new memberships without transitions (no campaign starts).
    case silent
    /// Publish a segment's transitions only when at most this many customers enter or leave it;
    /// larger changes are applied silently (a rule typo cannot message the whole base).
    case cap(Int)
}

/// The dry run of a reload over the customers of one engine (`Engine.reloadImpact`).
public struct ReloadImpact: Sendable, Equatable {
    /// Per new segment: customers who would enter and leave it.
    public var entering: [Int]
    public var exiting: [Int]
    /// Per old segment: its members (only counted for segments the reload removes).
    public var removedMembers: [Int]

    /// The impact over the customers of both (two engines holding different partitions).
    public func adding(_ o: ReloadImpact) -> ReloadImpact {
        ReloadImpact(entering: zip(entering, o.entering).map(+), exiting: zip(exiting, o.exiting).map(+),
                     removedMembers: zip(removedMembers, o.removedMembers).map(+))
    }
}

/// The blast radius of a reload: per segment, how many customers enter and leave.
public struct ReconfigureReport: Sendable, Equatable {
    public enum Status: String, Sendable { case added, changed, unchanged, removed }
    public struct Segment: Sendable, Equatable {
        public var name: String
        public var status: Status
        public var entering: Int
        public var exiting: Int
        /// Whether its transitions were published (policy).
        public var emitted: Bool
    }
    public var segments: [Segment] = []
    public var campaignsAdded: [String] = []
    public var campaignsRemoved: [String] = []
    public var campaignsChanged: [String] = []
    public init() {}
}
