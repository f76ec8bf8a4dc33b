@testable import TidepoolEngine
import XCTest

/// Segment memberships over time: exact timer flips, lateness, and a brute-force reference.
final class EngineTimeTests: XCTestCase {
    let day = AggregateConfig.dayMs
    let t0: Int64 = 1_790_000_000_000
    let p0 = PartitionID(topic: "touchpoints", partition: 0)

    func engine(_ rules: [(String, String)], lateness: Int64 = 0) throws -> Engine {
        let agg = AggregateConfig()
        let set = try SegmentSet(rules.map { SegmentDefinition(name: $0.0, rule: $0.1) }, aggregates: agg, channels: ChannelTable(agg))
        return Engine(config: EngineConfig(aggregates: agg, segments: set, latenessMs: lateness,
                                           firstPurchase: FirstPurchaseRule(enabled: false)))
    }

    func event(_ id: String, _ c: String, _ type: EventType, _ ts: Int64) -> TouchpointEvent {
        TouchpointEvent(eventID: id, customerID: c, type: type, channel: "app", timestampMs: ts,
                        amount: type == .purchase ? Money(major: 100) : nil, currency: type == .purchase ? "CNY" : nil)
    }

    func transitions(_ out: [EngineOutput]) -> [SegmentTransition] {
        out.compactMap { if case .transition(let t) = $0 { return t } else { return nil } }
    }

    func testDormancyFlipsAtTheExactInstantWhenReplayingInEventTime() throws {
        let e = try engine([("lapsed", "since(last(page_view)) > 14d")])
        var out: [EngineOutput] = []
        e.apply(event("a", "c1", .pageView, t0), partition: p0) { out.append($0) }
        // Other customers' events carry stream time far past c1's due instant.
        e.apply(event("b", "c2", .pageView, t0 + 30 * day), partition: p0) { out.append($0) }
        let c1 = transitions(out).filter { $0.customerID == "c1" }
        XCTAssertEqual(c1.count, 1)
        XCTAssertEqual(c1[0].segment, "lapsed")
        XCTAssertTrue(c1[0].entered)
        XCTAssertEqual(c1[0].atMs, t0 + 14 * day + 1, "strictly more than 14 days: the first millisecond after")
        XCTAssertNil(c1[0].causeEventID, "time alone flipped it")
        XCTAssertEqual(c1[0].values.first?.0, "since(last(page_view))")
        XCTAssertEqual(c1[0].values.first?.1, .duration(14 * day + 1))
        XCTAssertEqual(e.stats(p0)?.timersFired, 1)
    }

    func testDormancyFlipsAtTheExactInstantInWallClockMode() throws {
        let e = try engine([("lapsed", "since(last(page_view)) > 14d")], lateness: 60_000)
        var out: [EngineOutput] = []
        e.apply(event("a", "c1", .pageView, t0), partition: p0) { out.append($0) }
        e.advance(p0, to: t0 + 14 * day) { out.append($0) }
        XCTAssertTrue(transitions(out).isEmpty, "not yet due")
        e.advance(p0, to: t0 + 14 * day + 1) { out.append($0) }
        XCTAssertEqual(transitions(out).map(\.atMs), [t0 + 14 * day + 1])
        XCTAssertEqual(e.memberships("c1"), ["lapsed"])
        // A visit ends it, at the visit.
        out = []
        e.apply(event("b", "c1", .pageView, t0 + 20 * day), partition: p0) { out.append($0) }
        XCTAssertEqual(transitions(out).map(\.entered), [false])
        XCTAssertEqual(transitions(out).first?.causeEventID, "b")
        XCTAssertEqual(transitions(out).first?.nextFlipMs, t0 + 34 * day + 1)
    }

    func testWindowExitFlipsWhenTheSecondNewestPurchaseLeaves() throws {
        let e = try engine([("repeat", "count(purchase, 90d) >= 2")])
        var out: [EngineOutput] = []
        e.apply(event("p1", "c", .purchase, t0), partition: p0) { out.append($0) }
        e.apply(event("p2", "c", .purchase, t0 + 10 * day), partition: p0) { out.append($0) }
        XCTAssertEqual(transitions(out).map(\.entered), [true])
        let leaves = (t0 / day + 90) * day  // the 90 UTC days starting with p1's day end here
        XCTAssertEqual(transitions(out).first?.nextFlipMs, leaves)
        e.advance(p0, to: leaves + 5 * day) { out.append($0) }
        XCTAssertEqual(transitions(out).map(\.atMs), [t0 + 10 * day, leaves])
        XCTAssertEqual(transitions(out).last?.entered, false)
    }

    /// The predicted flip is when the membership can change, not when a term steps: after leaving
    /// `count(page_view, 7d) >= 3`, the later visits leaving the window cannot bring the customer
    /// back, so there is no predicted flip (and no timer).
    func testPredictedFlipIsWhenTheMembershipCanChange() throws {
        let e = try engine([("three_visits", "count(page_view, 7d) >= 3")])
        var out: [EngineOutput] = []
        for (k, h) in [0, 2, 4].enumerated() {
            e.apply(event("v\(k)", "c", .pageView, t0 + Int64(h) * AggregateConfig.hourMs), partition: p0) { out.append($0) }
        }
        let firstLeaves = (t0 / AggregateConfig.hourMs + 168) * AggregateConfig.hourMs
        XCTAssertEqual(transitions(out).map(\.entered), [true])
        XCTAssertEqual(transitions(out).first?.nextFlipMs, firstLeaves, "the first visit's exit takes the count to 2")
        e.advance(p0, to: firstLeaves + 30 * day) { out.append($0) }
        XCTAssertEqual(transitions(out).map(\.atMs), [t0 + 4 * AggregateConfig.hourMs, firstLeaves])
        XCTAssertNil(transitions(out).last?.nextFlipMs, "two visits leaving cannot make three")
        XCTAssertNil(e.view("c")?.memberships.first?.nextFlipMs)
        XCTAssertEqual(e.stats(p0)?.timersFired, 1, "one timer, at the exit; none for the later visits leaving")
    }

    func testLateEventsAreCountedAndDoNotRewriteThePast() throws {
        let e = try engine([("buyer", "count(purchase, 30d) >= 1")], lateness: 60_000)
        var out: [EngineOutput] = []
        e.apply(event("v", "c", .pageView, t0 + 10 * day), partition: p0) { out.append($0) }
        e.apply(event("late", "c", .purchase, t0), partition: p0) { out.append($0) }  // 10 days late
        XCTAssertEqual(e.stats(p0)?.late, 1)
        let t = transitions(out)
        XCTAssertEqual(t.count, 1)
        XCTAssertEqual(t[0].atMs, t0 + 10 * day, "entered now, at stream time, not back at the purchase")
        XCTAssertEqual(e.record("c")?.aggregates.lifetimeOrders, 1, "lifetime totals still count it")
    }

    func testIdleCustomersAreEvictedAndCounted() throws {
        let agg = AggregateConfig()
        let e = Engine(config: EngineConfig(aggregates: agg, latenessMs: 0, customerRetentionMs: 30 * day,
                                            firstPurchase: FirstPurchaseRule(enabled: false)))
        e.apply(event("a", "gone", .pageView, t0), partition: p0) { _ in }
        e.apply(event("b", "stays", .pageView, t0 + 20 * day), partition: p0) { _ in }
        e.advance(p0, to: t0 + 31 * day) { _ in }
        XCTAssertNil(e.record("gone"))
        XCTAssertNotNil(e.record("stays"))
        XCTAssertEqual(e.stats(p0)?.evicted, 1)
    }

    /// Random streams against a reference that recomputes each rule from the raw event list.
    func testMembershipsMatchABruteForceReferenceAtEveryStep() throws {
        let rules: [(String, String)] = [
            ("repeat", "count(purchase, 90d) >= 2"),
            ("lapsed", "since(last(page_view)) > 14d"),
            ("recent_spender", "sum(purchase, 7d) >= 300"),
            ("winback", "in_segment(repeat) and in_segment(lapsed)"),
            ("idle_buyer", "orders() >= 1 and not (count(page_view, 30d) > 0)"),
            ("dormant", "lifecycle() == dormant"),
            ("top_rfm", "rfm() == 重要价值"),
        ]
        func reference(_ events: [TouchpointEvent], at t: Int64) -> [String] {
            let hour = { (ms: Int64) -> Int64 in ms / AggregateConfig.hourMs }
            let dayOf = { (ms: Int64) -> Int64 in ms / AggregateConfig.dayMs }
            let purchases90 = events.filter { $0.type == .purchase && dayOf($0.timestampMs) <= dayOf(t) && dayOf($0.timestampMs) > dayOf(t) - 90 }.count
            let lastVisit = events.filter { $0.type == .pageView }.map(\.timestampMs).max()
            let spend7 = events.filter { $0.type == .purchase && hour($0.timestampMs) <= hour(t) && hour($0.timestampMs) > hour(t) - 168 }
                .reduce(Int64(0)) { $0 + $1.amount!.units }
            let visits30 = events.filter { $0.type == .pageView && dayOf($0.timestampMs) <= dayOf(t) && dayOf($0.timestampMs) > dayOf(t) - 30 }.count
            let orders = events.filter { $0.type == .purchase }.count
            var m: [String] = []
            let rep = purchases90 >= 2
            let lapsed = lastVisit.map { t - $0 > 14 * day } ?? false
            if rep { m.append("repeat") }
            if lapsed { m.append("lapsed") }
            if spend7 >= Money(major: 300).units { m.append("recent_spender") }
            if rep && lapsed { m.append("winback") }
            if orders >= 1 && !(visits30 > 0) { m.append("idle_buyer") }
            if let last = events.map(\.timestampMs).max(), t - last > 30 * day, t - last <= 180 * day { m.append("dormant") }
            let lastPurchase = events.filter { $0.type == .purchase }.map(\.timestampMs).max()
            let year = events.filter { $0.type == .purchase && dayOf($0.timestampMs) <= dayOf(t) && dayOf($0.timestampMs) > dayOf(t) - 365 }
            if let lp = lastPurchase, t - lp <= 90 * day, year.count >= 2,
               year.reduce(Int64(0), { $0 + $1.amount!.units }) >= Money(major: 1000).units { m.append("top_rfm") }
            return m
        }
        for seed in 1...6 {
            var rng = SeededRNG(UInt64(seed))
            let e = try engine(rules)
            var clock = t0
            var seen: [String: [TouchpointEvent]] = [:]
            var members: [String: Set<String>] = [:]
            for step in 0..<300 {
                let c = "c\(rng.next(upTo: 5))"
                clock += Int64(rng.next(upTo: Int(3 * day)))
                let type: EventType = rng.next(upTo: 3) == 0 ? .purchase : .pageView
                let ev = TouchpointEvent(eventID: "e\(step)", customerID: c, type: type, channel: "app", timestampMs: clock,
                                         amount: type == .purchase ? Money(major: Int64(50 + rng.next(upTo: 200))) : nil,
                                         currency: type == .purchase ? "CNY" : nil)
                var out: [EngineOutput] = []
                e.apply(ev, partition: p0) { out.append($0) }
                seen[c, default: []].append(ev)
                // Replay every transition in order; each must agree with the reference at its instant.
                for t in transitions(out) {
                    var s = members[t.customerID] ?? []
                    if t.entered { s.insert(t.segment) } else { s.remove(t.segment) }
                    members[t.customerID] = s
                    let evs = (seen[t.customerID] ?? []).filter { t.causeEventID != nil || $0.eventID != ev.eventID || t.customerID != c }
                    XCTAssertEqual(Set(reference(evs, at: t.atMs)).contains(t.segment), t.entered,
                                   "seed \(seed) step \(step): \(t.customerID) \(t.segment) at \(t.atMs - t0)")
                    // Exactly on time: just before a timer flip, or just before its event was
                    // applied, the reference still says the opposite (a late flip would fail here).
                    let before = t.causeEventID == nil
                        ? reference(evs, at: t.atMs - 1)
                        : reference(evs.filter { $0.eventID != t.causeEventID }, at: t.atMs)
                    XCTAssertEqual(Set(before).contains(t.segment), !t.entered,
                                   "seed \(seed) step \(step): \(t.customerID) \(t.segment) flipped late at \(t.atMs - t0)")
                }
                // And the current memberships equal the reference at each customer's evaluation time.
                for (id, evs) in seen {
                    let r = e.record(id)!
                    XCTAssertEqual(Set(e.memberships(id)), Set(reference(evs, at: r.evaluatedAtMs)), "seed \(seed) step \(step) \(id)")
                    XCTAssertEqual(Set(e.memberships(id)), members[id] ?? [], "transitions replay to the same memberships")
                }
            }
        }
    }

    /// A stored next flip is exact up to ~48.9 days after the customer's last evaluation; beyond,
    /// it is kept as its UTC hour, exact when the instant is a whole hour (window exits) and
    /// otherwise a lower bound less than an hour below it, which `isExact` says. "Only an event"
    /// and "never evaluated" survive the round trip, far instants clamp to a lower bound, and
    /// what cannot be kept reads as "evaluate now".
    func testStoredNextFlipsAreExactOrMarkedLowerBounds() {
        var rng = SeededRNG(11)
        let exactSpan: Int64 = (1 << 32) - (1 << 26) - 2, hour: Int64 = 3_600_000
        for step in 0..<100_000 {
            let base = Int64(rng.next(upTo: 1 << 40))
            var ms = base + (rng.next(upTo: 2) == 0 ? Int64(rng.next(upTo: 1 << 33)) : Int64(rng.next(upTo: 1 << 45)))
            if step % 3 == 0 { ms -= ms % hour }  // a whole hour
            let ahead = ms - base
            if ahead < 0 { continue }  // before its evaluation: "evaluate now", below
            let code = NextFlipCode.encode(ms, base: base)
            let back = NextFlipCode.decode(code, base: base)
            if ahead <= exactSpan || ms % hour == 0 {
                XCTAssertEqual(back, ms, "\(ahead) ms ahead")
                XCTAssertTrue(NextFlipCode.isExact(code), "\(ahead) ms ahead")
            } else {
                XCTAssertFalse(NextFlipCode.isExact(code), "\(ahead) ms ahead")
                XCTAssertLessThanOrEqual(back, ms, "\(ahead) ms ahead")
                XCTAssertLessThan(ms - back, hour, "\(ahead) ms ahead")
            }
        }
        // A lower bound read back stays marked as one, even once near.
        let near = NextFlipCode.encode(10 * hour + 500, base: 10 * hour, exact: false)
        XCTAssertFalse(NextFlipCode.isExact(near))
        XCTAssertEqual(NextFlipCode.decode(near, base: 10 * hour), 10 * hour)
        XCTAssertEqual(NextFlipCode.decode(NextFlipCode.encode(.max, base: 7), base: 7), .max)
        XCTAssertTrue(NextFlipCode.isExact(NextFlipCode.never))
        XCTAssertEqual(NextFlipCode.decode(NextFlipCode.unknown, base: 7), .min)
        XCTAssertEqual(NextFlipCode.encode(6, base: 7), NextFlipCode.unknown, "before its evaluation: evaluate now")
        let far = NextFlipCode.encode(Timestamp.maxMs, base: 0)
        XCTAssertNotEqual(far, NextFlipCode.never)
        XCTAssertFalse(NextFlipCode.isExact(far))
        XCTAssertLessThanOrEqual(NextFlipCode.decode(far, base: 0), Timestamp.maxMs)
    }

    /// A customer's due instant (its timer, and what a checkpoint stores) is the exact earliest
    /// flip whatever rounding the row holds: an engine evaluating incrementally has, after every
    /// step, the due of one that evaluates every segment afresh. (A restart starts every row
    /// anew; a rounded due once made the SIGKILL end-to-end test's state differ.)
    func testDueInstantsEqualAFreshEvaluationAtEveryStep() throws {
        for seed in 1...4 as ClosedRange<UInt64> {
            var rng = SeededRNG(seed)
            let incremental = Engine(config: Self.dueConfig())
            let fresh = Engine(config: Self.dueConfig())
            fresh.incrementalEvaluation = false
            let p = PartitionID(topic: "t", partition: 0)
            var t: Int64 = 1_790_000_000_000
            for step in 0..<400 {
                t += Int64(rng.next(upTo: 6 * 86_400_000)) + Int64(rng.next(upTo: 1000))
                let types: [EventType] = [.pageView, .purchase, .messageOpen, .addToCart, .wecomChat]
                let type = types[rng.next(upTo: types.count)]
                let e = TouchpointEvent(eventID: "e\(step)", customerID: "c\(rng.next(upTo: 6))", type: type, channel: "app",
                                        timestampMs: t, amount: type == .purchase ? Money(major: 100) : nil,
                                        currency: type == .purchase ? "CNY" : nil)
                var a: [EngineOutput] = [], b: [EngineOutput] = []
                incremental.apply(e, partition: p) { a.append($0) }
                fresh.apply(e, partition: p) { b.append($0) }
                XCTAssertEqual(a, b, "seed \(seed) step \(step)")
                let ip = try XCTUnwrap(incremental.partitions[p]), fp = try XCTUnwrap(fresh.partitions[p])
                for slot in ip.customers.indices where ip.customers[slot].live {
                    let id = ip.ids[slot]
                    let other = try XCTUnwrap(fp.ids.firstIndex(of: id))
                    XCTAssertEqual(ip.customers[slot].dueMs, fp.customers[other].dueMs, "seed \(seed) step \(step) \(id)")
                    XCTAssertEqual(ip.customers[slot].evaluatedAtMs, fp.customers[other].evaluatedAtMs, "seed \(seed) step \(step) \(id)")
                }
            }
        }
    }

    /// The example segments with one whose instants are far and have milliseconds (kept rounded
    /// in the row) and one that refers to it.
    static func dueConfig() -> EngineConfig {
        let agg = AggregateConfig.keepingEverything()
        var defs = ExampleSegments.definitions
        defs.append(SegmentDefinition(name: "long_quiet", rule: "since(last(page_view)) > 60d"))
        defs.append(SegmentDefinition(name: "long_quiet_buyer", rule: "in_segment(long_quiet) and orders() >= 1"))
        let segs = try! SegmentSet(defs, aggregates: agg, channels: ChannelTable(agg))
        return EngineConfig(aggregates: agg, segments: segs, transitionOutput: .explained)
    }

    /// The timer heap pops in (due, key) order under any mix of pushes and pops.
    func testTimerHeapPopsInOrderAgainstASortedReference() {
        var rng = SeededRNG(7)
        var heap = TimerHeap()
        var reference: [(Int64, UInt64)] = []
        for step in 0..<20_000 {
            if rng.next(upTo: 3) > 0 || reference.isEmpty {
                let e = TimerHeap.Entry(due: Int64(rng.next(upTo: 500)), key: UInt64(rng.next(upTo: 50)), slot: Int32(step))
                heap.push(e)
                reference.append((e.due, e.key))
            } else {
                reference.sort { $0 < $1 }
                let want = reference.removeFirst()
                let got = heap.pop()!
                XCTAssertTrue(got.due == want.0 && got.key == want.1, "step \(step): \(got) != \(want)")
            }
            XCTAssertEqual(heap.count, reference.count)
        }
    }

    /// The timer wheel pops in (due, key) order, only what is due, under any mix of pushes (into
    /// past, current and future hours, and far ahead) and pops with stream time moving forward.
    func testTimerWheelPopsDueEntriesInOrderAgainstASortedReference() {
        let hour = TimerWheel.bucketMs
        for seed in 1...20 {
            var rng = SeededRNG(UInt64(seed))
            var wheel = TimerWheel()
            var reference: [(Int64, UInt64)] = []
            var t: Int64 = -3 * hour  // negative times too: the hour of a due is a floor division
            for step in 0..<3_000 {
                if rng.next(upTo: 3) > 0 {
                    // Mostly near the present, sometimes in the past, weeks ahead, or past the
                    // wheel's ring of hours (the dictionary of far hours).
                    let due: Int64
                    switch rng.next(upTo: 12) {
                    case 0: due = t - Int64(rng.next(upTo: Int(5 * hour)))
                    case 1: due = t + Int64(rng.next(upTo: Int(1000 * hour)))
                    case 2: due = t + (TimerWheel.ringHours - 2) * hour + Int64(rng.next(upTo: Int(5 * hour)))
                    case 3: due = t + Int64(rng.next(upTo: Int(3 * TimerWheel.ringHours * hour)))
                    default: due = t + Int64(rng.next(upTo: Int(3 * hour)))
                    }
                    let e = TimerWheel.Entry(due: due, key: UInt64(rng.next(upTo: 20)), slot: Int32(step))
                    wheel.push(e)
                    reference.append((e.due, e.key))
                } else {
                    // Stream time mostly moves by minutes to hours; sometimes it jumps by up to
                    // twice the ring (a partition idle for a long time, then the wall clock).
                    t += rng.next(upTo: 50) == 0 ? Int64(rng.next(upTo: Int(2 * TimerWheel.ringHours * hour)))
                                                 : Int64(rng.next(upTo: Int(2 * hour)))
                    reference.sort { $0 < $1 }
                    let due = reference.prefix { $0.0 <= t }
                    for want in due {
                        guard let got = wheel.popDue(through: t) else { return XCTFail("seed \(seed) step \(step): \(want) is due by \(t), nothing popped") }
                        XCTAssertTrue(got.due == want.0 && got.key == want.1, "seed \(seed) step \(step): \(got) != \(want)")
                    }
                    reference.removeFirst(due.count)
                    XCTAssertNil(wheel.popDue(through: t), "seed \(seed) step \(step): popped an entry not due by \(t)")
                }
                XCTAssertEqual(wheel.count, reference.count)
            }
        }
    }

    /// The daemon turns explanations off; the transitions themselves must not change.
    func testTransitionsWithoutExplanationsAreTheSameTransitions() throws {
        let agg = AggregateConfig()
        let set = try SegmentSet(ExampleSegments.definitions, aggregates: agg, channels: ChannelTable(agg))
        let explained = Engine(config: EngineConfig(aggregates: agg, segments: set, firstPurchase: FirstPurchaseRule(enabled: false)))
        let bare = Engine(config: EngineConfig(aggregates: agg, segments: set, firstPurchase: FirstPurchaseRule(enabled: false),
                                               transitionOutput: .plain))
        var rng = SeededRNG(42)
        var a: [SegmentTransition] = [], b: [SegmentTransition] = []
        var clock = t0
        let types: [EventType] = [.pageView, .purchase, .addToCart, .messageOpen]
        let channels = ["app", "tmall", "wecom", "jd"]
        for step in 0..<3000 {
            clock += Int64(rng.next(upTo: Int(day / 2)))
            let type = types[rng.next(upTo: types.count)]
            let ev = TouchpointEvent(eventID: "e\(step)", customerID: "c\(rng.next(upTo: 40))", type: type,
                                     channel: channels[rng.next(upTo: channels.count)], timestampMs: clock,
                                     amount: type == .purchase ? Money(major: 700) : nil, currency: type == .purchase ? "CNY" : nil)
            explained.apply(ev, partition: p0) { if case .transition(let t) = $0 { a.append(t) } }
            bare.apply(ev, partition: p0) { if case .transition(let t) = $0 { b.append(t) } }
        }
        XCTAssertGreaterThan(a.count, 500)
        XCTAssertEqual(a.count, b.count)
        XCTAssertTrue(a.allSatisfy { !$0.values.isEmpty }, "explained transitions carry their values")
        XCTAssertTrue(b.allSatisfy { $0.values.isEmpty && $0.nextFlipMs == nil })
        for (x, y) in zip(a, b) {
            XCTAssertEqual([x.customerID, x.segment, x.ruleVersion, x.causeEventID ?? "-"], [y.customerID, y.segment, y.ruleVersion, y.causeEventID ?? "-"])
            XCTAssertEqual(x.entered, y.entered)
            XCTAssertEqual(x.atMs, y.atMs)
        }
    }
}

final class ModelTests: XCTestCase {
    let day = AggregateConfig.dayMs
    let t0: Int64 = 1_790_000_000_000
    let p0 = PartitionID(topic: "t", partition: 0)

    func engine(_ rules: [(String, String)]) throws -> Engine {
        let agg = AggregateConfig()
        let set = try SegmentSet(rules.map { SegmentDefinition(name: $0.0, rule: $0.1) }, aggregates: agg, channels: ChannelTable(agg))
        return Engine(config: EngineConfig(aggregates: agg, segments: set, latenessMs: 0, firstPurchase: FirstPurchaseRule(enabled: false)))
    }

    func purchase(_ id: String, _ c: String, _ ts: Int64, _ amount: Int64) -> TouchpointEvent {
        TouchpointEvent(eventID: id, customerID: c, type: .purchase, channel: "app", timestampMs: ts, amount: Money(major: amount), currency: "CNY")
    }

    func testRFMClassesCoverAllEightCombinations() {
        let m = ModelConfig()  // R: 90d, F: 2 orders, M: 1000 over 365d
        let ch = ChannelTable(AggregateConfig())
        func rfm(_ purchases: [(Int64, Int64)], at t: Int64) -> RFMClass {
            var a = CustomerAggregates()
            for (n, (ts, amount)) in purchases.enumerated() {
                _ = a.apply(purchase("p\(n)", "c", ts, amount), channel: 1, orderKey: nil, eventKey: UInt64(n + 1),
                            streamTimeMs: t, config: AggregateConfig(), channels: ch)
            }
            return RFMClass.of(a, at: t, m)
        }
        let now = t0 + 400 * day
        let recent = now - 10 * day, old = now - 200 * day
        XCTAssertEqual(rfm([(recent, 600), (recent, 600)], at: now), .importantValue)
        XCTAssertEqual(rfm([(old, 600), (old, 600)], at: now), .importantRetain)
        XCTAssertEqual(rfm([(recent, 1200)], at: now), .importantDevelop)
        XCTAssertEqual(rfm([(old, 1200)], at: now), .importantWinback)
        XCTAssertEqual(rfm([(recent, 10), (recent, 10)], at: now), .generalValue)
        XCTAssertEqual(rfm([(old, 10), (old, 10)], at: now), .generalRetain)
        XCTAssertEqual(rfm([(recent, 10)], at: now), .generalDevelop)
        XCTAssertEqual(rfm([], at: now), .generalWinback)
        XCTAssertEqual(RFMClass.importantValue.chineseName, "重要价值")
        XCTAssertEqual(RFMClass(name: "一般挽留"), .generalWinback)
    }

    func testLifecycleMovesOnTimeThroughDormantChurnedRecalledAndActive() throws {
        let e = try engine(LifecycleStage.allCases.map { ($0.name, "lifecycle() == \($0.name)") })
        var out: [SegmentTransition] = []
        let collect: (EngineOutput) -> Void = { if case .transition(let t) = $0, t.entered { out.append(t) } }
        e.apply(purchase("a", "c", t0, 10), partition: p0, emit: collect)
        e.advance(p0, to: t0 + 200 * day, emit: collect)
        // new_for and dormant_after are both 30d: a one-time buyer goes from new straight to dormant.
        XCTAssertEqual(out.map(\.segment), ["new", "dormant", "churned"])
        XCTAssertEqual(out.map(\.atMs), [t0, t0 + 30 * day + 1, t0 + 180 * day + 1])
        out = []
        e.apply(purchase("b", "c", t0 + 200 * day, 10), partition: p0, emit: collect)
        e.advance(p0, to: t0 + 300 * day, emit: collect)
        XCTAssertEqual(out.map(\.segment), ["recalled", "dormant"])
        XCTAssertEqual(out.map(\.atMs), [t0 + 200 * day, t0 + 230 * day + 1])
        // A customer who keeps coming back becomes active once the recall period ends.
        out = []
        for k in 0..<8 { e.apply(purchase("r\(k)", "d", t0 + 400 * day + Int64(k) * 10 * day, 10), partition: p0, emit: collect) }
        let d = out.filter { $0.customerID == "d" }
        XCTAssertEqual(d.map(\.segment), ["new", "active"])
        XCTAssertEqual(d.last?.atMs, t0 + 430 * day + 1)
        XCTAssertEqual(out.filter { $0.customerID == "c" }.map(\.segment), ["churned"], "c churned meanwhile, on time")
    }
}

final class CustomerViewTests: XCTestCase {
    func testViewShowsAggregatesMembershipsAndWhy() throws {
        let agg = AggregateConfig()
        let set = try SegmentSet([SegmentDefinition(name: "repeat", rule: "count(purchase, 90d) >= 2"),
                                  SegmentDefinition(name: "lapsed", rule: "since(last(page_view)) > 14d")],
                                 aggregates: agg, channels: ChannelTable(agg))
        let e = Engine(config: EngineConfig(aggregates: agg, segments: set, latenessMs: 0, firstPurchase: FirstPurchaseRule(enabled: false)))
        let t0: Int64 = 1_790_000_000_000
        let p = PartitionID(topic: "t", partition: 3)
        for (n, ts) in [t0, t0 + 86_400_000].enumerated() {
            e.apply(TouchpointEvent(eventID: "p\(n)", customerID: "c", type: .purchase, channel: "tmall", timestampMs: ts,
                                    amount: Money(major: 99), currency: "CNY"), partition: p) { _ in }
        }
        let v = try XCTUnwrap(e.view("c"))
        XCTAssertEqual(v.partition, p)
        XCTAssertEqual(v.lifetimeOrders, 2)
        XCTAssertEqual(v.lifetimeSpend, Money(major: 198))
        XCTAssertEqual(v.rfm, .generalValue)
        XCTAssertEqual(v.lifecycle, .new)
        XCTAssertTrue(v.windows.contains { $0.0 == "count(purchase, 30d)" && $0.1 == "2" })
        XCTAssertTrue(v.windows.contains { $0.0 == "sum(purchase, 7d)" && $0.1 == "198.00" })
        XCTAssertEqual(v.memberships.map(\.member), [true, false])
        XCTAssertEqual(v.memberships[0].values, ["count(purchase, 90d) = 2"])
        XCTAssertEqual(v.memberships[1].values, ["since(last(page_view)) = none"], "never visited: the value is missing")
        XCTAssertNotNil(v.memberships[0].nextFlipMs)
        XCTAssertNil(e.view("nobody"))
    }
}
