@testable import TidepoolEngine
import XCTest

/// Incremental evaluation (`EvaluationScope`: only the segments an event or a due flip can
/// change) must be invisible: against an engine that evaluates every segment every time, the same
/// random streams give the same outputs (transitions with their instants, values and predicted
/// flips, triggers) and the same memberships at every step. Timer instants may differ where a
/// flip instant is a bound (`and` of two false sides waits for the later side): a segment the
/// full engine re-evaluates in passing gets a fresh bound, the incremental one keeps the bound it
/// had, and its timer then fires, evaluates, and changes nothing. So the timer counts may differ;
/// the transitions may not.
final class IncrementalEvaluationTests: XCTestCase {
    let day = AggregateConfig.dayMs
    let t0: Int64 = 1_790_000_000_000
    let rules: [(String, String)] = ExampleSegments.standard + [
        ("top_rfm", "rfm() == important_value"),
        ("dormant", "lifecycle() == dormant"),
        ("recalled", "lifecycle() == recalled"),
        ("refunder", "count(refund, 30d) >= 1 or sum(purchase, 7d) < 0"),
        ("app_fan", "count(page_view, 2d, channel=app) >= 2 and not in_segment(multichannel)"),
        ("new_chatter", "since(first(wecom_chat)) < 3d"),
        ("lapsed_winback", "in_segment(winback) or (in_segment(dormant) and spend() >= 300)"),
        // Members with no events at all: a first event that does not touch them still enters them.
        ("never_bought", "orders() == 0"),
        ("no_view_today", "not (count(page_view, 1d) >= 1) and not in_segment(never_bought)"),
    ]

    func engine(incremental: Bool) throws -> Engine {
        let agg = AggregateConfig()
        let set = try SegmentSet(rules.map { SegmentDefinition(name: $0.0, rule: $0.1) }, aggregates: agg, channels: ChannelTable(agg))
        let camps = try CampaignSet(ExampleCampaigns.definitions, policy: ContactPolicy(), segments: set,
                                    aggregates: agg, channels: ChannelTable(agg))
        let e = Engine(config: EngineConfig(aggregates: agg, segments: set, latenessMs: 3_600_000, campaigns: camps))
        e.incrementalEvaluation = incremental
        return e
    }

    func testIncrementalEvaluationEqualsFullEvaluationAtEveryStep() throws {
        let types: [EventType] = [.pageView, .pageView, .productView, .addToCart, .purchase, .purchase, .refund, .cancel,
                                  .messageOpen, .wecomChat, .login, .couponRedeem]
        let channels = ["app", "website", "mini_program", "wecom", "tmall", "jd", "unknown_shop"]
        let parts = (0..<2).map { PartitionID(topic: "touchpoints", partition: Int32($0)) }
        var full = 0, evaluationsCompared = 0
        for seed in 1...8 {
            var rng = SeededRNG(UInt64(seed))
            let a = try engine(incremental: true), b = try engine(incremental: false)
            var clock = t0
            var orders: [String] = []
            for step in 0..<600 {
                // Many customers' first events (a first event evaluates fewer segments).
                let customer = rng.next(upTo: 40)
                let c = "c\(customer)"
                let p = parts[customer & 1]
                clock += Int64(rng.next(upTo: Int(day)))
                // Some events arrive late (inside and past the lateness), some are redelivered.
                var ts = clock
                if rng.next(upTo: 8) == 0 { ts -= Int64(rng.next(upTo: Int(5 * day))) }
                let type = types[rng.next(upTo: types.count)]
                var props: RawJSONObject? = nil
                if type == .purchase {
                    let o = "o\(seed)-\(step)"
                    orders.append(o)
                    props = RawJSONObject(validated: Array(#"{"order_id":"\#(o)"}"#.utf8))
                } else if (type == .refund || type == .cancel), let o = orders.randomElement(using: &rng), rng.next(upTo: 4) != 0 {
                    props = RawJSONObject(validated: Array(#"{"order_id":"\#(o)"}"#.utf8))
                }
                let id = rng.next(upTo: 20) == 0 && step > 0 ? "e\(step - 1)" : "e\(step)"
                let ev = TouchpointEvent(eventID: id, customerID: c, type: type, channel: channels[rng.next(upTo: channels.count)],
                                         timestampMs: ts,
                                         amount: type == .purchase || type == .refund ? Money(major: Int64(20 + rng.next(upTo: 400))) : nil,
                                         currency: type == .purchase || type == .refund ? "CNY" : nil, properties: props)
                var outA: [EngineOutput] = [], outB: [EngineOutput] = []
                if rng.next(upTo: 10) == 0 {
                    // The partition catches up and follows the wall clock: timers fire alone.
                    let to = clock + Int64(rng.next(upTo: Int(20 * day)))
                    a.advance(p, to: to) { outA.append($0) }
                    b.advance(p, to: to) { outB.append($0) }
                }
                a.apply(ev, partition: p) { outA.append($0) }
                b.apply(ev, partition: p) { outB.append($0) }
                XCTAssertEqual(outA, outB, "seed \(seed) step \(step)")
                for q in parts {
                    guard let pa = a.partitions[q], let pb = b.partitions[q] else { continue }
                    var sa = pa.stats, sb = pb.stats
                    sa.timersFired = 0; sb.timersFired = 0
                    XCTAssertEqual(sa, sb, "seed \(seed) step \(step) \(q)")
                    for (slot, id) in pa.ids.enumerated() where pa.customers[slot].live {
                        guard let r = b.record(id) else { XCTFail("seed \(seed) step \(step): \(id) missing"); continue }
                        XCTAssertEqual(pa.customers[slot].memberships, r.memberships, "seed \(seed) step \(step) \(id)")
                        evaluationsCompared += 1
                    }
                }
                full += outA.count
            }
        }
        // The streams exercise what they are meant to: many outputs and customers compared.
        XCTAssertGreaterThan(full, 2_000)
        XCTAssertGreaterThan(evaluationsCompared, 40_000)
    }

    /// The scope itself: which segments an event type reaches, closed under in_segment.
    func testScopeFollowsWhatEachRuleReads() throws {
        let agg = AggregateConfig()
        let set = try SegmentSet(ExampleSegments.definitions, aggregates: agg, channels: ChannelTable(agg))
        let names = set.segments.map(\.name)
        func affected(_ t: EventType) -> Set<String> {
            let m = set.scope.affectedBy[Int(t.rawValue)]
            return Set(names.indices.filter { m & (1 << UInt64($0)) != 0 }.map { names[$0] })
        }
        let everyEvent: Set<String> = ["platform_heavy", "multichannel", "dormant_buyer"]
        XCTAssertEqual(affected(.productView), everyEvent)
        XCTAssertEqual(affected(.pageView), everyEvent.union(["lapsed_visitor", "winback", "browsing_not_buying"]))
        XCTAssertEqual(affected(.refund), everyEvent.union(["repeat_buyer", "winback", "big_spender", "browsing_not_buying",
                                                            "cart_abandoner"]))
        XCTAssertEqual(affected(.addToCart), everyEvent.union(["cart_abandoner"]))
        let repeatBuyer = names.firstIndex(of: "repeat_buyer")!, winback = names.firstIndex(of: "winback")!
        XCTAssertEqual(set.scope.dependents[repeatBuyer], 1 << UInt64(repeatBuyer) | 1 << UInt64(winback))
    }
}
