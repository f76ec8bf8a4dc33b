import Dispatch
import Foundation
@testable import TidepoolDaemon
@testable import TidepoolEngine
import XCTest

/// The partitions split over several engines: placement, a reload decided over all of them, and
/// the threads that apply them at once.
final class EngineShardsTests: XCTestCase {
    let t0: Int64 = 1_790_042_400_000
    let agg = AggregateConfig()

    func config(_ rules: [(String, String)]) throws -> EngineConfig {
        let set = try SegmentSet(rules.map { SegmentDefinition(name: $0.0, rule: $0.1) }, aggregates: agg, channels: ChannelTable(agg))
        return EngineConfig(aggregates: agg, segments: set, firstPurchase: FirstPurchaseRule(enabled: false))
    }

    func p(_ n: Int32) -> PartitionID { PartitionID(topic: "touchpoints", partition: n) }

    func testPartitionsGoToTheLeastLoadedShardAndLeaveOnRelease() throws {
        let shards = EngineShards(config: try config([]), count: 2, offsets: FixedOffsets())
        // A member's partitions after a rebalance can be all even: they still spread.
        for n: Int32 in [0, 2, 4, 6] { shards.assign(p(n)) }
        XCTAssertEqual(shards.engines.map { $0.partitions.count }, [2, 2])
        XCTAssertEqual(shards.partitions, [p(0), p(2), p(4), p(6)])
        let first = shards.shard(of: p(0))
        XCTAssertTrue(shards.engine(for: p(0)) === shards.engines[first])
        shards.release(p(0))
        XCTAssertNil(shards.engine(for: p(0)), "a released partition is not recreated by a lookup")
        XCTAssertEqual(shards.engines[first].partitions.count, 1)
        // The next partition fills the gap.
        shards.assign(p(8))
        XCTAssertEqual(shards.shard(of: p(8)), first)
        XCTAssertEqual(shards.engines.map { $0.partitions.count }, [2, 2])
    }

    /// A `cap` reload policy counts every customer the member holds, not each shard's: 20 new
    /// members split 10 and 10 over two shards exceed a cap of 15, as they do in one engine.
    func testAReloadCapIsDecidedOverAllShardsAsOneEngineDecidesIt() throws {
        let old = try config([("buyers", "orders() >= 1")])
        let new = try config([("buyers", "orders() >= 1"), ("visitors", "count(page_view, 1d) >= 1")])
        for policy in [ReloadPolicy.cap(15), .cap(20)] {
            let (shardedCopy, singleCopy) = try populated(old)
            var shardedTransitions = 0, singleTransitions = 0
            let shardedReport = shardedCopy.reconfigure(new, policy: policy) { if case .transition = $0 { shardedTransitions += 1 } }
            let singleReport = singleCopy.reconfigure(new, policy: policy) { if case .transition = $0 { singleTransitions += 1 } }
            XCTAssertEqual(shardedReport, singleReport, "\(policy)")
            let visitors = shardedReport.segments.first { $0.name == "visitors" }!
            XCTAssertEqual(visitors.entering, 20)
            XCTAssertEqual(visitors.emitted, policy == .cap(20), "\(policy)")
            XCTAssertEqual(shardedTransitions, policy == .cap(20) ? 20 : 0, "\(policy)")
            XCTAssertEqual(shardedTransitions, singleTransitions)
            XCTAssertEqual(shardedCopy.segmentSizes, ["buyers": 0, "visitors": 20])
            XCTAssertEqual(shardedCopy.segmentSizes, singleCopy.segmentSizes)
        }
    }

    /// 20 visitors over partitions 0 and 1, in two shards and in one engine.
    func populated(_ c: EngineConfig) throws -> (EngineShards, Engine) {
        let sharded = EngineShards(config: c, count: 2, offsets: FixedOffsets())
        let single = Engine(config: c)
        for part: Int32 in 0..<2 { sharded.assign(p(part)) }
        XCTAssertNotEqual(sharded.shard(of: p(0)), sharded.shard(of: p(1)))
        for n in 0..<20 {
            let e = TouchpointEvent(eventID: "e\(n)", customerID: "c\(n)", type: .pageView, channel: "app", timestampMs: t0 + Int64(n))
            let part = p(Int32(n % 2))
            sharded.engine(for: part)!.apply(e, partition: part) { _ in }
            single.apply(e, partition: part) { _ in }
        }
        XCTAssertEqual(sharded.customerCount, 20)
        XCTAssertNotNil(sharded.view("c7"))
        return (sharded, single)
    }

    func testWorkersRunEveryShardOnceAndAtTheSameTime() {
        let workers = ShardWorkers(shards: 3)
        let calls = Calls()
        for round in 0..<50 {
            // Shard 0 waits for shards 1 and 2 inside the same run: only possible if they run at
            // the same time as it (a sequential run would time out here).
            let met = DispatchSemaphore(value: 0)
            var timedOut = false
            workers.run { k in
                calls.add(k)
                if round == 0 {
                    // Named for `top -H` from its first run (see `nameCurrentThread`).
                    let comm = (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? ""
                    calls.name(k, comm.trimmingCharacters(in: .whitespacesAndNewlines))
                }
                if k == 0 {
                    for _ in 0..<2 where met.wait(timeout: .now() + 10) == .timedOut { timedOut = true }
                } else {
                    met.signal()
                }
            }
            XCTAssertFalse(timedOut, "round \(round)")
        }
        XCTAssertEqual(calls.counts, [50, 50, 50])
        XCTAssertEqual(calls.names, [0: "tp-shard-0", 1: "tp-shard-1", 2: "tp-shard-2"])
    }

    /// `start` returns while the shards still run (the pipeline reads the next poll meanwhile);
    /// `wait` returns once every one has returned.
    func testStartReturnsBeforeTheShardsAndWaitAfterThem() {
        let workers = ShardWorkers(shards: 2)
        let calls = Calls()
        for _ in 0..<20 {
            let release = DispatchSemaphore(value: 0)
            let before = calls.counts
            workers.start { k in
                release.wait()
                calls.add(k)
            }
            XCTAssertTrue(workers.running)
            XCTAssertEqual(calls.counts, before, "no shard can have finished: each waits for this thread")
            release.signal()
            release.signal()
            workers.wait()
            XCTAssertFalse(workers.running)
            XCTAssertEqual(calls.counts, [before[0] + 1, before[1] + 1, 0])
        }
        workers.wait()  // nothing started: returns at once
    }

    private final class Calls: @unchecked Sendable {
        private let lock = NSLock()
        private var byShard = [0, 0, 0]
        private var threadNames: [Int: String] = [:]
        func add(_ k: Int) { lock.lock(); byShard[k] += 1; lock.unlock() }
        func name(_ k: Int, _ n: String) { lock.lock(); threadNames[k] = n; lock.unlock() }
        var names: [Int: String] { lock.lock(); defer { lock.unlock() }; return threadNames }
        var counts: [Int] { lock.lock(); defer { lock.unlock() }; return byShard }
    }
}
