import TidepoolEngine

/// The partitions this member holds, split over several engines so that their events can be
/// applied on several cores at once (`ShardWorkers`). Each engine is one shard: it owns the state
/// of the partitions assigned to it, and no two threads touch one engine at the same time. A
/// partition's state lives in exactly one shard, from its assignment (or restore) to its release;
/// which shard does not change any output, since all state is per partition.
///
/// Kafka Streams runs one consumer per stream thread. Here one consumer and one producer serve
/// every shard: the offsets, the trigger read-back after a crash and the checkpoint stay one per
/// process, and only the engine work is spread.
final class EngineShards {
    let engines: [Engine]
    private var shardOf: [PartitionID: Int] = [:]
    private var load: [Int]

    init(config: EngineConfig, count: Int, offsets: @autoclosure () -> any UTCOffsetSource) {
        precondition(count >= 1)
        engines = (0..<count).map { _ in Engine(config: config, offsets: offsets()) }
        load = [Int](repeating: 0, count: count)
    }

    var count: Int { engines.count }
    /// The running configuration (every shard has the same).
    var config: EngineConfig { engines[0].config }

    /// Places `p` in the shard holding the fewest partitions (a member's partitions after a
    /// rebalance are any subset, so a fixed `partition % count` could put them all in one).
    @discardableResult
    func assign(_ p: PartitionID) -> Engine {
        if let s = shardOf[p] { return engines[s] }
        let s = load.indices.min { load[$0] < load[$1] }!
        shardOf[p] = s
        load[s] += 1
        engines[s].assign(p)
        return engines[s]
    }

    func release(_ p: PartitionID) {
        guard let s = shardOf.removeValue(forKey: p) else { return }
        load[s] -= 1
        engines[s].release(p)
    }

    /// The shard holding `p`, assigning it when it is not held yet (records of a partition can
    /// arrive in the poll that assigns it).
    @inline(__always)
    func shard(of p: PartitionID) -> Int {
        if let s = shardOf[p] { return s }
        assign(p)
        return shardOf[p]!
    }

    /// The engine holding `p`; nil when `p` is not held (released since, or never assigned).
    func engine(for p: PartitionID) -> Engine? { shardOf[p].map { engines[$0] } }

    /// Every partition held, in (topic, partition) order.
    var partitions: [PartitionID] {
        shardOf.keys.sorted { ($0.topic, $0.partition) < ($1.topic, $1.partition) }
    }

    func stats(_ p: PartitionID) -> PartitionStats? { shardOf[p].flatMap { engines[$0].stats(p) } }
    var customerCount: Int { engines.reduce(0) { $0 + $1.customerCount } }
    var dirtyCount: Int { engines.reduce(0) { $0 + $1.dirtyCount } }

    var segmentSizes: [String: Int] {
        engines.dropFirst().reduce(engines[0].segmentSizes) { sum, e in sum.merging(e.segmentSizes, uniquingKeysWith: +) }
    }

    var transitionCounts: [String: Int64] {
        engines.dropFirst().reduce(engines[0].transitionCounts) { sum, e in sum.merging(e.transitionCounts, uniquingKeysWith: +) }
    }

    func view(_ id: String) -> CustomerView? {
        for e in engines { if let v = e.view(id) { return v } }
        return nil
    }

    /// A reload over every shard: the dry runs are summed first, so that a `cap` policy is decided
    /// over all the customers this member holds, as one engine would decide it.
    func reconfigure(_ new: EngineConfig, policy: ReloadPolicy, emit: (EngineOutput) -> Void) -> ReconfigureReport {
        let impact = engines.dropFirst().reduce(engines[0].reloadImpact(new)) { $0.adding($1.reloadImpact(new)) }
        var report = ReconfigureReport()
        for (i, e) in engines.enumerated() {
            let r = e.reconfigure(new, policy: policy, impact: impact, emit: emit)
            if i == 0 { report = r }
        }
        return report
    }
}
