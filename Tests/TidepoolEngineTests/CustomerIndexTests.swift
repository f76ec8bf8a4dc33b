@testable import TidepoolEngine
import XCTest

final class CustomerIndexTests: XCTestCase {
    /// Random inserts and removals agree with a dictionary at every step, also when many ids share
    /// a hash (forced here: hashes drawn from a handful of values, 0 among them), so that probe
    /// runs are long, wrap around the end of the table and are cut by removals.
    func testIndexAgreesWithADictionaryUnderCollisionsAndRemovals() {
        // (seed, how many distinct hashes, whether they sit at the top of the range: their home is
        // the end of the table, so their probe runs wrap around to its start)
        // The index grows incrementally (entries move from the old table a few per insert), so
        // lookups, inserts and removals also run while a table is half moved; seeds 6 and 7 keep
        // up to 3,000 customers, through eight doublings.
        for (seed, hashSpace, top) in [(1, 3, false), (2, 8, false), (3, 1 << 20, false), (4, 1, false), (5, 4, true),
                                       (6, 1 << 40, false), (7, 16, true)] {
            var rng = SeededRNG(UInt64(seed))
            var index = CustomerIndex()
            var ids = SlotArray<String>()
            var hashOf: [String: UInt64] = [:]
            var reference: [String: Int32] = [:]
            let distinct = seed >= 6 ? 3_000 : hashSpace <= 8 ? 60 : 300
            for step in 0..<(seed >= 6 ? 12_000 : 4_000) {
                let id = "c\(rng.next(upTo: distinct))"
                let drawn = UInt64(rng.next(upTo: hashSpace))
                let hash = hashOf[id] ?? (top ? UInt64.max - drawn : drawn)
                hashOf[id] = hash
                if reference[id] == nil, rng.next(upTo: 3) > 0 {
                    let slot = Int32(ids.count)
                    ids.append(id)
                    index.insert(hash: hash, slot: slot)
                    reference[id] = slot
                } else if reference[id] != nil {
                    XCTAssertTrue(index.remove(id, hash: hash, ids: ids), "seed \(seed) step \(step): remove \(id)")
                    reference[id] = nil
                }
                XCTAssertEqual(index.count, reference.count, "seed \(seed) step \(step)")
                if step % (seed >= 6 ? 97 : hashSpace <= 8 ? 5 : 50) == 0 {
                    for (known, h) in hashOf {
                        XCTAssertEqual(index.find(known, hash: h, ids: ids), reference[known], "seed \(seed) step \(step): \(known)")
                    }
                }
            }
        }
    }

    /// The engine finds its customers through the index after evictions reuse slots.
    func testEngineFindsCustomersAfterEvictionsReuseSlots() {
        let day = AggregateConfig.dayMs
        let engine = Engine(config: EngineConfig(customerRetentionMs: 2 * day, firstPurchase: FirstPurchaseRule(enabled: false)))
        let p = PartitionID(topic: "t", partition: 0)
        engine.assign(p)
        func visit(_ id: String, _ t: Int64) {
            let e = TouchpointEvent(eventID: "\(id)@\(t)", customerID: id, type: .pageView, channel: "app", timestampMs: t)
            engine.apply(e, partition: p) { _ in }
        }
        for n in 0..<500 { visit("old-\(n)", 0) }
        // Idle for more than the 2-day retention: when stream time reaches day 10 every old
        // customer is evicted, and the new ones take their slots.
        for n in 0..<300 { visit("new-\(n)", 10 * day + Int64(n)) }
        XCTAssertEqual(engine.customerCount, 300)
        XCTAssertEqual(engine.stats(p)?.evicted, 500)
        for n in 0..<300 { XCTAssertEqual(engine.record("new-\(n)")?.aggregates.lifetimeEvents, 1, "new-\(n)") }
        for n in 0..<500 { XCTAssertNil(engine.record("old-\(n)"), "old-\(n)") }
    }
}
