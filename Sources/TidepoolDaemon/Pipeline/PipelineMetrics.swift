import Synchronization
import TidepoolEngine

/// Counters of the processing pipeline. The pipeline thread owns the live values and publishes a
/// copy once per batch (one lock per batch, none per event); readers take the published copy.
public struct PipelineCounters: Sendable, Equatable {
    /// Valid events by EventType.rawValue.
    public var eventsByType = [Int64](repeating: 0, count: EventType.allCases.count)
    /// Dead letters by DeadLetterReason.index.
    public var deadLettersByReason = [Int64](repeating: 0, count: DeadLetterReason.allCases.count)
    public var triggersProduced: Int64 = 0
    /// Triggers a replay after a crash re-created but the trigger topic already had (not produced again).
    public var triggersDeduplicated: Int64 = 0
    /// Campaign decisions by campaign name, indexed by `TriggerOutcome.allCases` order.
    public var campaignOutcomes: [String: [Int64]] = [:]
    /// Campaign episodes deferred out of quiet hours, by campaign name.
    public var campaignDeferred: [String: Int64] = [:]
    /// Records acknowledged on the suppressed topic.
    public var suppressedDelivered: Int64 = 0
    /// Segment transitions (entered + exited) by segment name.
    public var segmentTransitions: [String: Int64] = [:]
    /// Members per segment (segment name -> customers), over the assigned partitions.
    public var segmentSizes: [String: Int] = [:]
    /// Records acknowledged on the trigger topic (triggers and erasure tombstones).
    public var triggersDelivered: Int64 = 0
    /// Customers erased (each also a tombstone on the trigger topic).
    public var erasures: Int64 = 0
    public var deadLettersDelivered: Int64 = 0
    public var deliveryFailures: Int64 = 0
    public var consumerErrors: Int64 = 0
    public var batches: Int64 = 0
    /// Events applied by each thread: 0 is the pipeline thread, which applies polls below 2,048
    /// events alone; 1 + k is shard k's thread (`tp-shard-k`, `processing.threads` of them),
    /// which applies its shard's part of larger polls.
    public var threadEvents: [Int64] = []
    /// Polls whose events were handed to the shard threads.
    public var parallelPolls: Int64 = 0
    /// Records replayed to rebuild the state of partitions this member had no state for, below
    /// the group's committed offset (applied, nothing produced).
    public var rebuildRecords: Int64 = 0
    public var customers: Int = 0
    public var assignedPartitions: Int = 0
    /// Next offset to process per partition ("topic[p]" -> offset).
    public var positions: [String: Int64] = [:]
    public var offsetsStored: Int64 = 0
    public var commits: Int64 = 0
    public var checkpoints: Int64 = 0
    public var checkpointFailures: Int64 = 0
    /// Duration of the last checkpoint write (on the writer thread), ms.
    public var lastCheckpointMs: Double = 0
    /// Duration of the last WAL fold after a checkpoint commit (writer thread), ms.
    public var lastFoldMs: Double = 0
    /// How long taking a checkpoint stopped processing (flush + snapshot), last and longest, ms.
    public var lastCheckpointStallMs: Double = 0
    public var maxCheckpointStallMs: Double = 0
    /// Wall-clock time of the last completed checkpoint (ms since the epoch; 0: none yet).
    public var lastCheckpointAtMs: Int64 = 0
    /// Consumer lag per partition ("topic[p]" -> records behind the high watermark).
    public var lag: [String: Int64] = [:]
    /// Restored and processing (systemd READY=1 sent).
    public var ready = false
    /// Configuration reloads applied and rejected.
    public var reloadsApplied: Int64 = 0
    public var reloadsRejected: Int64 = 0
    /// Version (hash) of the segments and campaigns running now.
    public var rulesVersion = ""
    /// The engine's own counters per input partition, since this process started. A
    /// partition this member no longer owns keeps its last values, and one that comes back
    /// continues from them.
    /// (`segmentSizes` is left empty here: sizes are in `segmentSizes` above.)
    public var partitionCounters: [PartitionID: PartitionStats] = [:]

    public init() {}

    public var eventsIn: Int64 { eventsByType.reduce(0, +) }
    public var deadLetters: Int64 { deadLettersByReason.reduce(0, +) }
    /// Every record consumed, valid or not.
    public var recordsIn: Int64 { eventsIn + deadLetters }
    /// Valid events the engines have taken, as of the figures published last: applied,
    /// duplicates, erasures and events of erased customers dropped. Equal to `eventsIn` once no
    /// poll is left to apply; behind it while a catch-up poll is on the shard threads (events are
    /// counted in when decoded).
    public var eventsTaken: Int64 {
        partitionCounters.values.reduce(0) { $0 + $1.applied + $1.duplicates + $1.erased + $1.droppedAfterErasure }
    }

    public func deadLetters(_ r: DeadLetterReason) -> Int64 { deadLettersByReason[r.index] }
    public func events(_ t: EventType) -> Int64 { eventsByType[Int(t.rawValue)] }

    public mutating func count(_ outcome: TriggerOutcome, campaign: String) {
        let i = outcome.index
        campaignOutcomes[campaign, default: [Int64](repeating: 0, count: TriggerOutcome.allCases.count)][i] += 1
    }

    public func decisions(_ campaign: String, _ outcome: TriggerOutcome) -> Int64 {
        campaignOutcomes[campaign]?[outcome.index] ?? 0
    }
}

extension TriggerOutcome {
    /// The position in `allCases`, without building that array (it is built on every call, and
    /// every trigger is counted).
    var index: Int {
        switch self {
        case .sent: 0
        case .heldOut: 1
        case .capped: 2
        case .suppressed: 3
        case .cancelled: 4
        }
    }
}

extension PipelineCounters {
    /// Engine counters summed over every partition seen.
    public var partitionTotals: PartitionStats {
        partitionCounters.values.reduce(into: PartitionStats()) { $0.addCounters($1) }
    }
}

public final class PipelineMetrics: Sendable {
    private let published = Mutex(PipelineCounters())
    public init() {}
    public func publish(_ c: PipelineCounters) { published.withLock { $0 = c } }
    public var snapshot: PipelineCounters { published.withLock { $0 } }
}
