@testable import TidepoolEngine
import XCTest

/// The batched apply (a run of one partition's events, customers looked up and prefetched first)
/// is the one-by-one apply: same outputs in the same order, same state, whatever the run length,
/// with new customers, duplicates, erasures, evictions and timers inside a run.
final class BatchedApplyTests: XCTestCase {
    func testRunsGiveTheSameOutputsAndStateAsOneByOne() throws {
        let agg = AggregateConfig()
        let set = try SegmentSet(ExampleSegments.definitions, aggregates: agg, channels: ChannelTable(agg))
        func engine() -> Engine {
            Engine(config: EngineConfig(aggregates: agg, segments: set, latenessMs: 0,
                                        customerRetentionMs: 20 * AggregateConfig.dayMs))
        }
        let p = PartitionID(topic: "touchpoints", partition: 3)
        let types: [EventType] = [.pageView, .purchase, .addToCart, .messageOpen, .wecomChat, .erase]
        for seed in 1...5 {
            var rng = SeededRNG(UInt64(seed))
            let one = engine(), runs = engine()
            var clock: Int64 = 1_790_000_000_000
            var events: [TouchpointEvent] = []
            for k in 0..<3_000 {
                clock += Int64(rng.next(upTo: 2 * 3_600_000))
                let type = types[rng.next(upTo: types.count)]
                let id = rng.next(upTo: 30) == 0 && k > 0 ? "e\(k - 1)" : "e\(k)"
                events.append(TouchpointEvent(eventID: id, customerID: "c\(rng.next(upTo: 200))", type: type, channel: "app",
                                              timestampMs: clock, amount: type == .purchase ? Money(major: 80) : nil,
                                              currency: type == .purchase ? "CNY" : nil))
            }
            var outOne: [EngineOutput] = [], outRuns: [EngineOutput] = []
            for e in events { one.apply(e, partition: p) { outOne.append($0) } }
            var at = 0
            while at < events.count {
                let n = 1 + rng.next(upTo: 100)
                runs.apply(Array(events[at..<min(at + n, events.count)]), partition: p) { outRuns.append($0) }
                at += n
            }
            XCTAssertEqual(outOne, outRuns, "seed \(seed)")
            XCTAssertGreaterThan(outOne.count, 1_000)
            let a = one.partitions[p]!, b = runs.partitions[p]!
            XCTAssertEqual(a.stats, b.stats)
            XCTAssertGreaterThan(a.stats.evicted + a.stats.erased, 0, "the stream frees slots that runs then reuse")
            XCTAssertEqual(a.ids, b.ids)
            for (slot, id) in a.ids.enumerated() where a.customers[slot].live {
                XCTAssertEqual(a.customers[slot].aggregates, b.customers[slot].aggregates, id)
                XCTAssertEqual(a.customers[slot].memberships, b.customers[slot].memberships, id)
                XCTAssertEqual(a.customers[slot].dueMs, b.customers[slot].dueMs, id)
            }
        }
    }
}
