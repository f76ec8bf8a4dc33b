@testable import TidepoolEngine
import XCTest

/// The engine arms one timer per customer, at the earliest instant a membership can flip
/// (`FlipTiming`). If that instant is ever too late, a membership is stale between two
/// evaluations; if a flip is invented, it is wrong. Both show here: after every event and every
/// clock move, every customer's memberships must equal a brute-force reference at stream time.
final class FlipTimingTests: XCTestCase {
    let day = AggregateConfig.dayMs
    let hour = AggregateConfig.hourMs
    let t0: Int64 = 1_790_000_000_123
    let p0 = PartitionID(topic: "touchpoints", partition: 0)

    /// Every operator, hourly and daily windows, counts and sums that refunds lower, since() of
    /// first and last, and/or/not, and segments that use segments.
    let rules: [(String, String)] = [
        // Refers to segments defined after it: evaluated after them, out of definition order.
        ("early_either", "in_segment(big_month) or in_segment(not_lapsed)"),
        ("pair_6h", "count(page_view, 6h) == 2"),
        ("not_three_1d", "count(page_view, 1d) != 3"),
        ("few_buys", "count(purchase, 30d) < 2 and orders() >= 1"),
        ("low_or_quiet", "sum(purchase, 7d) <= 150 or since(last(purchase)) >= 3d"),
        ("new", "since(first()) < 10d"),
        ("not_lapsed", "not (since(last(page_view)) > 2d)"),
        ("combo", "in_segment(pair_6h) or (count(purchase, 1d) >= 1 and not in_segment(few_buys))"),
        ("exactly_a_day", "since(last()) == 1d"),
        ("big_month", "sum(purchase, 30d) > 200"),
        ("buyer_left", "count(purchase, 2d) > 0 and since(last(page_view)) <= 1d"),
        // Three comparisons under and/or/not: the general path, with no segment to hide behind.
        ("mixed", "(count(page_view, 1d) >= 2 or since(last(purchase)) > 2d) and not (sum(purchase, 2d) > 100)"),
    ]

    /// One customer's events as the reference keeps them: purchases with what refunds left.
    struct Customer {
        struct Purchase { var id: String; var ts: Int64; var remaining: Int64; var cancelled: Bool }
        var purchases: [Purchase] = []
        var views: [Int64] = []
        var all: [Int64] = []
    }

    func hourOf(_ ms: Int64) -> Int64 { Int64((Double(ms) / Double(hour)).rounded(.down)) }

    func inWindow(_ ts: Int64, _ w: Int64, at t: Int64) -> Bool {
        if w <= AggregateConfig.hourlyLimitMs {
            return hourOf(ts) <= hourOf(t) && hourOf(ts) > hourOf(t) - w / hour
        }
        let d = hourOf(ts) / 24, today = hourOf(t) / 24
        return d <= today && d > today - w / day
    }

    func reference(_ c: Customer, at t: Int64) -> Set<String> {
        func purchases(_ w: Int64) -> (Int64, Int64) {
            var n: Int64 = 0, sum: Int64 = 0
            for p in c.purchases where inWindow(p.ts, w, at: t) {
                if !p.cancelled { n += 1 }
                sum += p.remaining
            }
            return (n, sum)
        }
        func views(_ w: Int64) -> Int { c.views.filter { inWindow($0, w, at: t) }.count }
        let money = { (major: Int64) in Money(major: major).units }
        let orders = c.purchases.filter { !$0.cancelled }.count
        let lastPurchase = c.purchases.map(\.ts).max()
        let lastView = c.views.max()
        var m: Set<String> = []
        if views(6 * hour) == 2 { m.insert("pair_6h") }
        if views(day) != 3 { m.insert("not_three_1d") }
        let fewBuys = purchases(30 * day).0 < 2 && orders >= 1
        if fewBuys { m.insert("few_buys") }
        if purchases(7 * day).1 <= money(150) || lastPurchase.map({ t - $0 >= 3 * day }) == true { m.insert("low_or_quiet") }
        if let first = c.all.min(), t - first < 10 * day { m.insert("new") }
        if !(lastView.map { t - $0 > 2 * day } ?? false) { m.insert("not_lapsed") }
        if views(6 * hour) == 2 || (purchases(day).0 >= 1 && !fewBuys) { m.insert("combo") }
        if let last = c.all.max(), t - last == day { m.insert("exactly_a_day") }
        if purchases(30 * day).1 > money(200) { m.insert("big_month") }
        if purchases(2 * day).0 > 0 && lastView.map({ t - $0 <= day }) == true { m.insert("buyer_left") }
        if (views(day) >= 2 || lastPurchase.map({ t - $0 > 2 * day }) == true) && !(purchases(2 * day).1 > money(100)) { m.insert("mixed") }
        if m.contains("big_month") || m.contains("not_lapsed") { m.insert("early_either") }
        return m
    }

    func testMembershipsEqualTheReferenceWheneverStreamTimeMoves() throws {
        let agg = AggregateConfig()
        let set = try SegmentSet(rules.map { SegmentDefinition(name: $0.0, rule: $0.1) }, aggregates: agg, channels: ChannelTable(agg))
        var checks = 0, timerFlips = 0
        for seed in 1...12 {
            var rng = SeededRNG(UInt64(seed))
            let e = Engine(config: EngineConfig(aggregates: agg, segments: set, latenessMs: 0, firstPurchase: FirstPurchaseRule(enabled: false)))
            var customers: [String: Customer] = [:]
            var clock = t0
            func check(_ what: String) {
                let now = e.streamTime(p0)!
                for (id, c) in customers.sorted(by: { $0.key < $1.key }) {
                    checks += 1
                    XCTAssertEqual(Set(e.memberships(id)), reference(c, at: now),
                                   "seed \(seed) \(what): \(id) at t0 + \(now - t0) ms")
                }
            }
            for step in 0..<400 {
                let id = "c\(rng.next(upTo: 4))"
                var c = customers[id] ?? Customer()
                // Mostly forward by up to a day and a half (any millisecond); sometimes late by up to 6 h.
                clock += Int64(rng.next(upTo: Int(36 * hour)))
                let ts = rng.next(upTo: 8) == 0 ? clock - Int64(rng.next(upTo: Int(6 * hour))) : clock
                let roll = rng.next(upTo: 20)
                // Refunds of purchases the engine still holds (buckets and orders are kept for the
                // longest window plus a day; older refunds apply at their own time, a case the
                // reference does not model).
                let refundable = c.purchases.indices.filter {
                    !c.purchases[$0].cancelled && c.purchases[$0].remaining > 0 && c.purchases[$0].ts > clock - 300 * day
                }
                let ev: TouchpointEvent
                if roll < 4, let i = refundable.randomElement(using: &rng) {
                    // Full or partial refund of an earlier purchase, by its order id.
                    let full = rng.next(upTo: 2) == 0
                    let amount = full ? c.purchases[i].remaining : Int64(rng.next(upTo: Int(c.purchases[i].remaining)))
                    let take = min(amount, c.purchases[i].remaining)
                    if take >= c.purchases[i].remaining { c.purchases[i].cancelled = true }
                    c.purchases[i].remaining -= take
                    ev = TouchpointEvent(eventID: "e\(step)", customerID: id, type: .refund, channel: "app", timestampMs: ts,
                                         amount: Money(units: amount), currency: "CNY",
                                         properties: RawJSONObject(validated: Array(#"{"order_id":"\#(c.purchases[i].id)"}"#.utf8)))
                } else if roll < 11 {
                    let amount = Money(major: Int64(20 + rng.next(upTo: 160))).units
                    let order = "o\(seed)-\(step)"
                    c.purchases.append(.init(id: order, ts: ts, remaining: amount, cancelled: false))
                    ev = TouchpointEvent(eventID: "e\(step)", customerID: id, type: .purchase, channel: "app", timestampMs: ts,
                                         amount: Money(units: amount), currency: "CNY",
                                         properties: RawJSONObject(validated: Array(#"{"order_id":"\#(order)"}"#.utf8)))
                } else {
                    c.views.append(ts)
                    ev = TouchpointEvent(eventID: "e\(step)", customerID: id, type: .pageView, channel: "app", timestampMs: ts)
                }
                c.all.append(ts)
                customers[id] = c
                e.apply(ev, partition: p0) { _ in }
                check("step \(step) after its event")
                // The clock moves on without events, sometimes to the very millisecond a
                // since() rule flips at.
                if rng.next(upTo: 3) == 0 {
                    let target: Int64
                    if rng.next(upTo: 2) == 0, let last = customers.values.compactMap({ $0.all.max() }).randomElement(using: &rng) {
                        target = max(clock, last + day + Int64(rng.next(upTo: 3)) - 1)
                    } else {
                        target = clock + Int64(rng.next(upTo: Int(3 * day)))
                    }
                    e.advance(p0, to: target) { o in if case .transition(let t) = o, t.causeEventID == nil { timerFlips += 1 } }
                    clock = max(clock, target)
                    check("step \(step) after the clock moved")
                }
            }
        }
        XCTAssertGreaterThan(checks, 10_000)
        XCTAssertGreaterThan(timerFlips, 500, "time alone must flip memberships often enough for this test to mean something")
    }
}
