@testable import TidepoolEngine
import XCTest

final class EngineTests: XCTestCase {
    let p0 = PartitionID(topic: "touchpoints", partition: 0)

    func event(_ id: String, _ customer: String, _ type: EventType, at ms: Int64, amount: Int64? = nil) -> TouchpointEvent {
        TouchpointEvent(eventID: id, customerID: customer, type: type, channel: "app", timestampMs: ms,
                        amount: amount.map { Money(major: $0) }, currency: amount == nil ? nil : "CNY")
    }

    func testFirstPurchaseFiresOnceWithStableIDAndSnapshot() {
        let engine = Engine()
        var fired: [Trigger] = []
        engine.apply(event("e1", "c1", .pageView, at: 1_000), partition: p0) { if case .trigger(let t) = $0 { fired.append(t) } }
        engine.apply(event("e2", "c1", .purchase, at: 2_000, amount: 120), partition: p0) { if case .trigger(let t) = $0 { fired.append(t) } }
        engine.apply(event("e3", "c1", .purchase, at: 3_000, amount: 30), partition: p0) { if case .trigger(let t) = $0 { fired.append(t) } }
        XCTAssertEqual(fired.count, 1)
        let t = fired[0]
        XCTAssertEqual(t.triggerID, Trigger.id(customerID: "c1", campaign: "first_purchase_welcome", episode: 1))
        XCTAssertEqual(t.causeEventID, "e2")
        XCTAssertEqual(t.firedAtMs, 2_000)
        XCTAssertEqual(t.expiresAtMs, 2_000 + 72 * 3_600_000)
        XCTAssertEqual(t.snapshot.first?.1, .int(1))
        let c = engine.record("c1")!.aggregates
        XCTAssertEqual(c.lifetimeOrders, 2)
        XCTAssertEqual(c.lifetimeSpend, Money(major: 150).units)
        XCTAssertEqual(c.first(.pageView), 1_000)
        XCTAssertEqual(c.lastSeen, 3_000)
    }

    func testDisabledRuleAndReleasedPartition() {
        let engine = Engine(firstPurchase: FirstPurchaseRule(enabled: false))
        var fired = 0
        engine.apply(event("e1", "c1", .purchase, at: 1, amount: 5), partition: p0) { if case .trigger = $0 { fired += 1 } }
        XCTAssertEqual(fired, 0)
        XCTAssertEqual(engine.customerCount, 1)
        engine.release(p0)
        XCTAssertEqual(engine.customerCount, 0)
    }

    func testSameInputGivesSameTriggers() {
        func run() -> [Trigger] {
            let engine = Engine()
            var out: [Trigger] = []
            for n in 0..<500 {
                let type: EventType = n % 7 == 0 ? .purchase : .pageView
                engine.apply(event("e\(n)", "c\(n % 37)", type, at: Int64(n), amount: type == .purchase ? 10 : nil),
                             partition: PartitionID(topic: "t", partition: Int32(n % 37 % 3))) { if case .trigger(let t) = $0 { out.append(t) } }
            }
            return out
        }
        let a = run(), b = run()
        XCTAssertEqual(a, b)
        XCTAssertEqual(Set(a.map(\.triggerID)).count, a.count)
    }

    func testTriggerEncodingIsValidJSONWithEscapes() throws {
        var t = Trigger(triggerID: "abc", campaign: "welcome", customerID: "c\"1\\\n", channel: "sms",
                        reasonKind: "first_purchase", reasonDetail: "x", causeEventID: "e", episode: 1,
                        firedAtMs: 0, expiresAtMs: 1000, snapshot: [("spend", .money(Money(units: 1_299_000))), ("n", .int(3))])
        var out: [UInt8] = []
        TriggerEncoder().encode(t, emittedAtMs: 86_400_000, into: &out)
        let obj = try JSONSerialization.jsonObject(with: Data(out)) as! [String: Any]
        XCTAssertEqual(obj["customer_id"] as? String, "c\"1\\\n")
        XCTAssertEqual(obj["fired_at"] as? String, "1970-01-01T00:00:00.000Z")
        XCTAssertEqual(obj["emitted_at"] as? String, "1970-01-02T00:00:00.000Z")
        let snap = obj["snapshot"] as! [String: Any]
        XCTAssertEqual((snap["spend"] as! NSNumber).doubleValue, 129.9, accuracy: 1e-9)
        t.customerID = "c1"
        XCTAssertNotEqual(t, Trigger(triggerID: "abc", campaign: "welcome", customerID: "c2", channel: "sms",
                                     reasonKind: "first_purchase", reasonDetail: "x", causeEventID: "e", episode: 1,
                                     firedAtMs: 0, expiresAtMs: 1000, snapshot: []))
    }
}

import Foundation

final class RawJSONObjectTests: XCTestCase {
    func testStringLookupSkipsOtherValuesAndHandlesEscapedNames() {
        let o = RawJSONObject(validated: Array(#"{"a":{"order_id":"nested"},"n":3,"order\u005fid":"o-1","z":"x"}"#.utf8))
        XCTAssertEqual(o.string(forKey: "order_id"), "o-1")
        XCTAssertEqual(o.string(forKey: "z"), "x")
        XCTAssertNil(o.string(forKey: "n"), "not a string")
        XCTAssertNil(o.string(forKey: "missing"))
        XCTAssertNil(RawJSONObject(validated: Array("{}".utf8)).string(forKey: "a"))
    }
}
