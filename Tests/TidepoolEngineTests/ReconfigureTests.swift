@testable import TidepoolEngine
import XCTest

/// Configuration reload: memberships carry over by name, the blast radius is reported, and the
/// policy decides which transitions the change publishes.
final class ReconfigureTests: XCTestCase {
    let t0: Int64 = 1_790_042_400_000
    let p0 = PartitionID(topic: "touchpoints", partition: 0)
    let agg = AggregateConfig()

    func config(_ rules: [(String, String)], campaigns: [CampaignDefinition] = []) throws -> EngineConfig {
        let channels = ChannelTable(agg)
        let set = try SegmentSet(rules.map { SegmentDefinition(name: $0.0, rule: $0.1) }, aggregates: agg, channels: channels)
        var policy = ContactPolicy()
        policy.quietStartMinute = 0
        policy.quietEndMinute = 0
        let camps = try CampaignSet(campaigns, policy: policy, segments: set, aggregates: agg, channels: channels)
        return EngineConfig(aggregates: agg, segments: set, firstPurchase: FirstPurchaseRule(enabled: false), campaigns: camps)
    }

    /// 30 customers: c0-c9 bought once, c10-c29 only browsed.
    func populated(_ rules: [(String, String)]) throws -> Engine {
        let e = Engine(config: try config(rules))
        for n in 0..<30 {
            let type: EventType = n < 10 ? .purchase : .pageView
            e.apply(TouchpointEvent(eventID: "e\(n)", customerID: "c\(n)", type: type, channel: "app", timestampMs: t0 + Int64(n),
                                    amount: n < 10 ? Money(major: 5) : nil, currency: n < 10 ? "CNY" : nil), partition: p0) { _ in }
        }
        return e
    }

    func testBlastRadiusAndMembershipsCarryOverByName() throws {
        let e = try populated([("visitors", "count(page_view, 1d) >= 1"), ("buyers", "orders() >= 1")])
        XCTAssertEqual(e.segmentSizes, ["visitors": 20, "buyers": 10])
        var transitions: [SegmentTransition] = []
        // buyers unchanged but moved to index 0; visitors removed; everyone added.
        let report = e.reconfigure(try config([("buyers", "orders() >= 1"), ("everyone", "count(page_view, 1d) >= 0")]), policy: .emit) {
            if case .transition(let t) = $0 { transitions.append(t) }
        }
        let byName = Dictionary(uniqueKeysWithValues: report.segments.map { ($0.name, $0) })
        XCTAssertEqual(byName["buyers"]?.status, .unchanged)
        XCTAssertEqual(byName["buyers"]?.entering, 0)
        XCTAssertEqual(byName["everyone"]?.status, .added)
        XCTAssertEqual(byName["everyone"]?.entering, 30)
        XCTAssertEqual(byName["visitors"]?.status, .removed)
        XCTAssertEqual(byName["visitors"]?.exiting, 20)
        XCTAssertEqual(transitions.count, 30, "only the new segment's entries")
        XCTAssertTrue(transitions.allSatisfy { $0.segment == "everyone" && $0.entered })
        XCTAssertEqual(e.segmentSizes, ["buyers": 10, "everyone": 30])
        XCTAssertEqual(e.memberships("c3"), ["buyers", "everyone"])
    }

    /// `.counted` emits no transition values, and counts the same transitions per segment as the
    /// emitted ones; a reload keeps every count with its segment's name (the daemon publishes
    /// them as counters, which must never go backwards).
    func testCountedTransitionsMatchEmittedOnesAndSurviveAReload() throws {
        let rules = [("visitors", "count(page_view, 1d) >= 1"), ("buyers", "orders() >= 1")]
        var plainConfig = try config(rules)
        plainConfig.transitionOutput = .plain
        var countedConfig = try config(rules)
        countedConfig.transitionOutput = .counted
        let plain = Engine(config: plainConfig), counted = Engine(config: countedConfig)
        var emitted: [String: Int64] = [:]
        var countedOutputs = 0
        for n in 0..<40 {
            // Purchases and visits, then a day later the visits leave the window (exits by timer).
            let type: EventType = n % 3 == 0 ? .purchase : .pageView
            let e = TouchpointEvent(eventID: "e\(n)", customerID: "c\(n % 13)", type: type, channel: "app", timestampMs: t0 + Int64(n) * 60_000,
                                    amount: type == .purchase ? Money(major: 5) : nil, currency: type == .purchase ? "CNY" : nil)
            plain.apply(e, partition: p0) { if case .transition(let t) = $0 { emitted[t.segment, default: 0] += 1 } }
            counted.apply(e, partition: p0) { if case .transition = $0 { countedOutputs += 1 } }
        }
        plain.advance(p0, to: t0 + 3 * 86_400_000) { if case .transition(let t) = $0 { emitted[t.segment, default: 0] += 1 } }
        counted.advance(p0, to: t0 + 3 * 86_400_000) { if case .transition = $0 { countedOutputs += 1 } }
        XCTAssertEqual(countedOutputs, 0, "no transition values with .counted")
        XCTAssertEqual(emitted["visitors"], 26, "13 customers entered and left")
        XCTAssertEqual(emitted["buyers"], 13, "every customer bought")
        XCTAssertEqual(counted.transitionCounts, emitted)
        XCTAssertEqual(plain.transitionCounts, emitted, "emitted transitions are counted too")

        // buyers moves to index 0, visitors is removed, everyone is added (all 13 customers enter it).
        var reloadConfig = try config([("buyers", "orders() >= 1"), ("everyone", "count(page_view, 1d) >= 0")])
        reloadConfig.transitionOutput = .counted
        _ = counted.reconfigure(reloadConfig, policy: .emit) { _ in }
        XCTAssertEqual(counted.transitionCounts, ["visitors": 26, "buyers": 13, "everyone": 13])
        counted.apply(TouchpointEvent(eventID: "new", customerID: "n1", type: .purchase, channel: "app", timestampMs: t0 + 3 * 86_400_000,
                                      amount: Money(major: 5), currency: "CNY"), partition: p0) { _ in }
        XCTAssertEqual(counted.transitionCounts, ["visitors": 26, "buyers": 14, "everyone": 14])
    }

    func testCapPolicyAppliesLargeChangesSilentlyAndCampaignsDoNotFire() throws {
        let e = try populated([("buyers", "orders() >= 1")])
        var out: [EngineOutput] = []
        var welcome = CampaignDefinition(name: "hi_visitor", start: .segmentEntered("visitors"), channels: ["wecom"])
        welcome.cooldownMs = 0
        var big = CampaignDefinition(name: "hi_buyer2", start: .segmentEntered("big"), channels: ["wecom"])
        big.cooldownMs = 0
        let new = try config([("buyers", "orders() >= 1"), ("visitors", "count(page_view, 1d) >= 1"), ("big", "orders() >= 1")],
                             campaigns: [welcome, big])
        let report = e.reconfigure(new, policy: .cap(15)) { out.append($0) }
        let byName = Dictionary(uniqueKeysWithValues: report.segments.map { ($0.name, $0) })
        XCTAssertEqual(byName["visitors"]?.entering, 20)
        XCTAssertEqual(byName["visitors"]?.emitted, false, "20 > cap 15: silent")
        XCTAssertEqual(byName["big"]?.entering, 10)
        XCTAssertEqual(byName["big"]?.emitted, true)
        XCTAssertEqual(report.campaignsAdded, ["hi_buyer2", "hi_visitor"])
        let triggers = out.compactMap { if case .trigger(let t) = $0 { return t } else { return nil } }
        XCTAssertEqual(Set(triggers.map(\.campaign)), ["hi_buyer2"])
        XCTAssertEqual(triggers.count, 10)
        XCTAssertEqual(e.segmentSizes, ["buyers": 10, "visitors": 20, "big": 10], "silent segments still have their members")
    }

    func testSilentPolicyEmitsNothingAndChangedRuleIsReported() throws {
        let e = try populated([("buyers", "orders() >= 1")])
        var out: [EngineOutput] = []
        let report = e.reconfigure(try config([("buyers", "orders() >= 2")]), policy: .silent) { out.append($0) }
        XCTAssertEqual(report.segments.first?.status, .changed)
        XCTAssertEqual(report.segments.first?.exiting, 10)
        XCTAssertTrue(out.isEmpty)
        XCTAssertEqual(e.segmentSizes, ["buyers": 0])
    }
}
