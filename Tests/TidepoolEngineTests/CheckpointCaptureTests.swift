@testable import TidepoolEngine
import XCTest

/// A checkpoint capture begun at one instant and completed in slices while events, timers,
/// evictions and erasures go on must hold exactly what a checkpoint taken in one call at that
/// instant holds; and the changes made during the capture must all be in the next checkpoint.
final class CheckpointCaptureTests: XCTestCase {
    let day = AggregateConfig.dayMs
    let t0: Int64 = 1_790_000_000_000

    func makeEngine() throws -> Engine {
        let agg = AggregateConfig()
        let channels = ChannelTable(agg)
        let set = try SegmentSet(ExampleSegments.definitions, aggregates: agg, channels: channels)
        let policy = ContactPolicy()
        let camps = try CampaignSet(ExampleCampaigns.definitions, policy: policy, segments: set, aggregates: agg, channels: channels)
        return Engine(config: EngineConfig(aggregates: agg, segments: set, latenessMs: 60_000,
                                           customerRetentionMs: 20 * day, campaigns: camps))
    }

    /// Purchases with order ids, refunds, duplicates, erasures, late events and customers idle
    /// long enough to be evicted, over three partitions.
    func stream(_ n: Int, seed: UInt64) -> [(PartitionID, TouchpointEvent)] {
        var state = seed
        func next(_ m: Int) -> Int {
            state &+= 0x9E37_79B9_7F4A_7C15
            return Int(StableHash.mix(state) % UInt64(m))
        }
        let types: [EventType] = [.pageView, .pageView, .purchase, .refund, .addToCart, .messageOpen, .pageView, .erase]
        let channels = ["app", "wecom", "tmall", "jd", "website"]
        var out: [(PartitionID, TouchpointEvent)] = []
        for k in 0..<n {
            let c = next(150)
            var type = types[next(types.count)]
            if type == .erase && next(8) != 0 { type = .wecomChat }
            let ts = t0 + Int64(k) * 3_600_000 * 2 - Int64(next(3)) * 3_600_000
            let props = type == .purchase || type == .refund ? RawJSONObject(validated: Array(#"{"order_id":"o\#(next(40))"}"#.utf8)) : nil
            let id = next(15) == 0 && k > 0 ? "e\(k - 1)" : "e\(k)"
            let e = TouchpointEvent(eventID: id, customerID: "c\(c)", type: type, channel: channels[next(channels.count)],
                                    timestampMs: ts, amount: props == nil ? nil : Money(major: Int64(10 + next(300))),
                                    currency: props == nil ? nil : "CNY", properties: props)
            out.append((PartitionID(topic: "touchpoints", partition: Int32(c % 3)), e))
        }
        return out
    }

    struct Contents: Equatable {
        var maxEventTimeMs: Int64
        var streamTimeMs: Int64
        var stats: PartitionStats
        var customers: [String: [UInt8]]
        var removed: [String]
        var erased: [UInt64]
    }

    func contents(_ s: PartitionSnapshot) -> Contents {
        XCTAssertEqual(Set(s.changedIDs).count, s.changedIDs.count, "each changed customer once")
        var customers: [String: [UInt8]] = [:]
        for (id, state) in s.upserts { customers[id] = state }
        return Contents(maxEventTimeMs: s.maxEventTimeMs, streamTimeMs: s.streamTimeMs, stats: s.stats, customers: customers,
                        removed: s.removed, erased: s.erased.map(\.0))
    }

    func syncCheckpoint(_ e: Engine) -> [PartitionID: Contents] {
        var out: [PartitionID: Contents] = [:]
        for p in e.partitions.keys { out[p] = e.takeCheckpoint(p).map(contents) }
        return out
    }

    func testSlicedCaptureEqualsAOneCallCheckpointAtItsStart() throws {
        for (seed, cut) in [(UInt64(1), 700), (2, 1500), (3, 2400)] {
            let events = stream(3600, seed: seed)
            let later = cut + 700
            let sliced = try makeEngine(), reference = try makeEngine()
            for (p, e) in events[..<cut] {
                sliced.apply(e, partition: p) { _ in }
                reference.apply(e, partition: p) { _ in }
            }
            // A first checkpoint in the middle, so the capture below holds one epoch's changes only.
            XCTAssertEqual(syncCheckpoint(sliced), syncCheckpoint(reference))
            for (p, e) in events[cut..<(cut + 300)] {
                sliced.apply(e, partition: p) { _ in }
                reference.apply(e, partition: p) { _ in }
            }
            let expected = syncCheckpoint(reference)
            let held = Array(sliced.partitions.keys)
            for p in held { XCTAssertTrue(sliced.beginCheckpoint(p)) }
            let pendingAtStart = held.reduce(0) { $0 + sliced.capturePending($1) }
            XCTAssertGreaterThan(pendingAtStart, 20, "the capture has work to slice")

            // Events and timers go on between slices of one customer each (or none).
            var got: [PartitionID: Contents] = [:]
            var rng = UInt64(seed * 77)
            for (k, (p, e)) in events[(cut + 300)..<later].enumerated() {
                sliced.apply(e, partition: p) { _ in }
                if k % 50 == 0 {
                    for q in held { sliced.advance(q, to: e.timestampMs - 60_000 + 3 * 3_600_000) { _ in } }
                }
                rng = StableHash.mix(rng &+ 1)
                for q in held where got[q] == nil {
                    if let s = sliced.continueCheckpoint(q, budget: rng % 4 == 0 ? 1 : 0) { got[q] = contents(s) }
                }
            }
            for q in held where got[q] == nil {
                if let s = sliced.continueCheckpoint(q, budget: .max) { got[q] = contents(s) }
            }
            XCTAssertEqual(got.count, held.count, "every capture completed")
            for q in held {
                XCTAssertEqual(got[q], expected[q], "seed \(seed), cut \(cut): partition \(q) captured as it was at the start")
                XCTAssertFalse(sliced.isCapturing(q))
            }

            // The changes made while capturing are in the next checkpoint.
            var k = 0
            for (p, e) in events[(cut + 300)..<later] {
                reference.apply(e, partition: p) { _ in }
                if k % 50 == 0 {
                    for q in held { reference.advance(q, to: e.timestampMs - 60_000 + 3 * 3_600_000) { _ in } }
                }
                k += 1
            }
            XCTAssertEqual(syncCheckpoint(sliced), syncCheckpoint(reference), "seed \(seed): the next checkpoint after the capture")
        }
    }

    func testReloadDuringACaptureCompletesItFirst() throws {
        let events = stream(800, seed: 9)
        let e = try makeEngine(), reference = try makeEngine()
        for (p, ev) in events {
            e.apply(ev, partition: p) { _ in }
            reference.apply(ev, partition: p) { _ in }
        }
        let expected = syncCheckpoint(reference)
        for p in e.partitions.keys { e.beginCheckpoint(p) }
        var config = e.config
        config.segments = try SegmentSet(Array(ExampleSegments.definitions.prefix(3)), aggregates: config.aggregates, channels: e.channels)
        config.campaigns = .empty
        _ = e.reconfigure(config, policy: .silent) { _ in }
        for p in e.partitions.keys {
            XCTAssertEqual(e.capturePending(p), 0, "the reload copied the pending customers first")
            XCTAssertEqual(e.continueCheckpoint(p, budget: 0).map(contents), expected[p], "\(p) as before the reload")
        }
    }
}
