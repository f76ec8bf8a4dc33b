import Foundation
import TidepoolEngine
import TidepoolStore
import XCTest

/// The configuration file changed between a stop and a start: memberships in the checkpoint are
/// carried over by segment name, and new or changed segments follow the reload policy.
final class RuleChangeRestoreTests: XCTestCase {
    let t0: Int64 = 1_790_042_400_000
    let p = PartitionID(topic: "touchpoints", partition: 0)

    func engine(_ rules: [(String, String)]) throws -> Engine {
        let agg = AggregateConfig()
        let set = try SegmentSet(rules.map { SegmentDefinition(name: $0.0, rule: $0.1) }, aggregates: agg, channels: ChannelTable(agg))
        return Engine(config: EngineConfig(aggregates: agg, segments: set, firstPurchase: FirstPurchaseRule(enabled: false)))
    }

    func testMembershipsFollowNamesAndChangedRulesFollowThePolicy() throws {
        let before = [("buyers", "orders() >= 1"), ("visitors", "count(page_view, 1d) >= 1")]
        let e = try engine(before)
        for n in 0..<30 {
            let buy = n < 10
            e.apply(TouchpointEvent(eventID: "e\(n)", customerID: "c\(n)", type: buy ? .purchase : .pageView, channel: "app",
                                    timestampMs: t0 + Int64(n), amount: buy ? Money(major: 5) : nil, currency: buy ? "CNY" : nil),
                    partition: p) { _ in }
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rules-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("s.sqlite").path
        try CheckpointStore(path: path, configVersion: "v1").write([(e.takeCheckpoint(p)!, nextOffset: 30)],
                                                                   segments: before.map { ($0.0, $0.1) })

        // Reordered, one rule changed, one segment added; the cap keeps the big change silent.
        let after = [("visitors", "count(page_view, 1d) >= 1"), ("buyers", "orders() >= 2"), ("everyone", "count(page_view, 1d) >= 0")]
        let restored = try engine(after)
        let store = try CheckpointStore(path: path, configVersion: "v2")
        XCTAssertEqual(try store.storedSegments(p)?.map(\.name), ["buyers", "visitors"])
        let (next, report) = try XCTUnwrap(try store.restore(p, into: restored, policy: .cap(15)))
        XCTAssertEqual(next, 30)
        let byName = Dictionary(uniqueKeysWithValues: try XCTUnwrap(report).segments.map { ($0.name, $0) })
        XCTAssertEqual(byName["visitors"]?.status, .unchanged)
        XCTAssertEqual(byName["buyers"]?.status, .changed)
        XCTAssertEqual(byName["buyers"]?.exiting, 10)
        XCTAssertEqual(byName["buyers"]?.emitted, true, "10 <= cap 15")
        XCTAssertEqual(byName["everyone"]?.entering, 30)
        XCTAssertEqual(byName["everyone"]?.emitted, false, "30 > cap 15: taken silently")
        XCTAssertEqual(restored.segmentSizes, ["visitors": 20, "buyers": 10, "everyone": 30],
                       "visitors kept by name; buyers still holds its old members until re-evaluated")
        XCTAssertEqual(restored.memberships("c12"), ["visitors", "everyone"])

        // The next advance re-evaluates everyone under the new rules: buyers' exits are published.
        var transitions: [SegmentTransition] = []
        restored.advance(p, to: t0 + 100) { if case .transition(let t) = $0 { transitions.append(t) } }
        XCTAssertEqual(transitions.count, 10)
        XCTAssertTrue(transitions.allSatisfy { $0.segment == "buyers" && !$0.entered })
        XCTAssertEqual(restored.segmentSizes["buyers"], 0)
    }
}
