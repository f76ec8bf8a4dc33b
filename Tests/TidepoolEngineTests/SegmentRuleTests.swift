@testable import TidepoolEngine
import XCTest

final class SegmentRuleTests: XCTestCase {
    // Every type kept for the longest window: these rules read a year of visits.
    let config = AggregateConfig.keepingEverything()
    lazy var channels = ChannelTable(config)
    let day = AggregateConfig.dayMs
    let t0: Int64 = 1_790_000_000_000

    func compile(_ defs: [(String, String)]) throws(SegmentError) -> SegmentSet {
        try SegmentSet(defs.map { SegmentDefinition(name: $0.0, rule: $0.1, origin: SourceLocation(line: 10, column: 12)) },
                       aggregates: config, channels: channels)
    }

    func expectError(_ defs: [(String, String)], at line: Int, _ column: Int, _ contains: String, file: StaticString = #filePath, l: UInt = #line) {
        do {
            _ = try compile(defs)
            XCTFail("expected an error containing \(contains)", file: file, line: l)
        } catch {
            XCTAssertEqual(error.error.location, SourceLocation(line: line, column: column), "\(error)", file: file, line: l)
            XCTAssertTrue(error.error.message.contains(contains), "\(error)", file: file, line: l)
        }
    }

    func customer(_ events: [(EventType, Int64, String)]) -> CustomerAggregates {
        var a = CustomerAggregates()
        for (n, (type, ts, channel)) in events.enumerated() {
            let e = TouchpointEvent(eventID: "e\(n)", customerID: "c", type: type, channel: channel, timestampMs: ts,
                                    amount: type == .purchase ? Money(major: 100) : nil, currency: type == .purchase ? "CNY" : nil)
            _ = a.apply(e, channel: channels.index(of: channel), orderKey: nil, eventKey: UInt64(n + 1),
                        streamTimeMs: events.map(\.1).max()!, config: config, channels: channels)
        }
        return a
    }

    func testParseErrorsNameLineColumnAndWhatWasExpected() {
        // Rule text starts at line 10, column 12 of the configuration file.
        expectError([("a", "count(purchase, 90d) >= ")], at: 10, 35, "expected a value")
        expectError([("a", "count(purchase 90d) >= 2")], at: 10, 27, "expected ',' or ')'")
        expectError([("a", "count(purchase, 90d) >= 2\nand since(last(page_view)) > 14x")], at: 11, 30, "not a duration")
        expectError([("a", "orders() >= 2 orders()")], at: 10, 26, "expected 'and', 'or' or the end of the rule")
        expectError([("a", "orders() # 2")], at: 10, 21, "unexpected character '#'")
    }

    func testLoadRejectsUnknownTypesFunctionsWindowsChannelsSegmentsAndCycles() {
        expectError([("a", "count(teleport, 30d) > 0")], at: 10, 18, "unknown event type 'teleport'")
        expectError([("a", "clicks(30d) > 0")], at: 10, 12, "unknown function 'clicks'")
        expectError([("a", "count(purchase, 400d) > 0")], at: 10, 28, "longer than the longest retained window 365d")
        expectError([("a", "count(purchase, 90m) > 0")], at: 10, 28, "whole hours")
        expectError([("a", "count(purchase, 30d, channel=myspace) > 0")], at: 10, 41, "unknown channel 'myspace'")
        expectError([("a", "in_segment(b)")], at: 10, 23, "unknown segment 'b'")
        expectError([("a", "spend() > 14d")], at: 10, 20, "cannot compare a money with a duration")
        expectError([("a", "orders()")], at: 10, 12, "must be a condition")
        expectError([("a", "since(last(page_view)) > since(last(purchase))")], at: 10, 35, "fixed duration")
        expectError([("a", "in_segment(b)"), ("b", "in_segment(c) and orders() > 1"), ("c", "in_segment(a)")], at: 10, 23,
                    "cycle: a -> b -> c -> a")
        expectError([("Bad Name", "orders() > 1")], at: 10, 12, "lower-case")
        expectError([("a", "orders() > 1"), ("a", "orders() > 2")], at: 10, 12, "already defined")
    }

    /// `aggregates.keep`: a window over a type must fit in how long that type is kept, and
    /// owned_share's window (which counts every type) in how long each type is kept.
    func testWindowsMustFitWhatEachTypeKeeps() throws {
        let defaults = AggregateConfig()  // purchases, refunds, cancels 365d; the rest 90d
        func check(_ rule: String, _ agg: AggregateConfig) throws(SegmentError) {
            _ = try SegmentSet([SegmentDefinition(name: "s", rule: rule, origin: SourceLocation(line: 3, column: 5))],
                               aggregates: agg, channels: ChannelTable(agg))
        }
        XCTAssertNoThrow(try check("sum(purchase, 365d) >= 2000 and count(page_view, 90d) >= 3", defaults))
        for (rule, column, message) in [
            ("count(page_view, 365d) >= 50", 22, "window 365d is longer than page_view is kept (90d; set aggregates.keep.page_view"),
            ("owned_share(91d) < 0.3", 17, "window 91d counts every event type, and page_view is kept 90d"),
        ] {
            do {
                try check(rule, defaults)
                XCTFail("\(rule) should not load")
            } catch {
                XCTAssertTrue(error.error.message.contains(message), "\(error.error.message)")
                XCTAssertEqual(error.error.location, SourceLocation(line: 3, column: column))
            }
        }
        var none = AggregateConfig()
        none.keepMs[.search] = 0
        XCTAssertThrowsError(try check("count(search, 1d) >= 1", none)) {
            XCTAssertTrue(($0 as! SegmentError).error.message.contains("no buckets are kept for search"))
        }
        // A type kept 0 does not count in owned_share: its window is still accepted.
        XCTAssertNoThrow(try check("owned_share(90d) < 0.3", none))
        var longer = AggregateConfig()
        longer.keepMs[.pageView] = 365 * day
        XCTAssertNoThrow(try check("count(page_view, 365d) >= 50", longer))
    }

    /// More than four different keep values: each extra one is rounded up to a kept retention,
    /// never down, and a type kept 0 is in no set.
    func testKeptBucketsRoundExtraRetentionsUp() {
        var agg = AggregateConfig()
        agg.keepMs = [.purchase: 365 * day, .pageView: 1 * day, .addToCart: 2 * day, .messageOpen: 30 * day, .search: 0,
                      .wecomChat: 7 * day]
        agg.keepOthersMs = 90 * day
        let kept = KeptBuckets(agg)
        func r(_ t: EventType) -> Int64 { kept.retentionMs(rawType: t.rawValue) }
        XCTAssertEqual(r(.purchase), 366 * day)
        XCTAssertEqual(r(.login), 91 * day)
        XCTAssertEqual(r(.messageOpen), 31 * day)
        XCTAssertEqual(r(.wecomChat), 8 * day)
        XCTAssertEqual(r(.addToCart), 8 * day, "2d rounded up to the 7d level")
        XCTAssertEqual(r(.pageView), 8 * day, "1d rounded up to the 7d level")
        XCTAssertEqual(r(.search), 0)
        XCTAssertFalse(kept.isUniform)
        XCTAssertTrue(KeptBuckets(.keepingEverything()).isUniform)
    }

    func testEvaluationFollowsTheAggregates() throws {
        let set = try compile([
            ("repeat_buyer", "count(purchase, 90d) >= 2"),
            ("lapsed_visitor", "since(last(page_view)) > 14d"),
            ("winback", "in_segment(repeat_buyer) and in_segment(lapsed_visitor)"),
            ("big_spender", "sum(purchase, 365d) >= 150 and spend() > 199.99"),
            ("tmall_only", "count(purchase, 365d, channel=tmall) >= 1 and not (owned_share(365d) > 0.5)"),
            ("never_clicked", "since(last(message_click)) > 1d"),
        ])
        let now = t0 + 100 * day
        let a = customer([(.purchase, t0 + 20 * day, "tmall"), (.purchase, t0 + 60 * day, "tmall"),
                          (.pageView, t0 + 80 * day, "tmall"), (.pageView, t0 + 70 * day, "app")])
        let m = set.evaluate(a, now: now, channels: channels)
        XCTAssertEqual(m, [true, true, true, true, true, false], "never clicked: a missing time compares false")

        // 14 days after the last visit exactly: not yet lapsed; one millisecond later it is.
        let b = customer([(.pageView, t0, "app")])
        let lapsed = try compile([("lapsed", "since(last(page_view)) > 14d")])
        XCTAssertEqual(lapsed.evaluate(b, now: t0 + 14 * day, channels: channels), [false])
        XCTAssertEqual(lapsed.evaluate(b, now: t0 + 14 * day + 1, channels: channels), [true])
        // The 90d window is the 90 UTC days ending today: the purchase of day D counts through
        // day D + 89 and leaves at the start of day D + 90.
        let repeatBuyer = try compile([("r", "count(purchase, 90d) >= 2")])
        let dayOfFirst = (t0 + 20 * day) / day
        XCTAssertEqual(repeatBuyer.evaluate(a, now: (dayOfFirst + 90) * day - 1, channels: channels), [true])
        XCTAssertEqual(repeatBuyer.evaluate(a, now: (dayOfFirst + 90) * day, channels: channels), [false])
    }

    /// The compiled programs (one `.test` per value-against-constant comparison, the stack
    /// machine otherwise) agree with the tree evaluator on every rule shape: the constant on
    /// either side, money against a plain number or against money, two values compared, since()
    /// of first and last, missing values, RFM and lifecycle.
    func testCompiledProgramsAgreeWithTheTreeEvaluator() throws {
        let rules: [(String, String)] = [
            ("left", "count(purchase, 90d) >= 2"), ("right", "2 <= count(purchase, 90d)"),
            ("money_number", "sum(purchase, 365d) > 150"), ("number_money", "150 < sum(purchase, 365d)"),
            ("spend", "spend() >= 200"), ("ne_missing", "since(last(message_click)) != 1d"),
            ("first", "since(first(purchase)) > 30d"), ("last_any", "since(last()) <= 20d"),
            ("two_values", "count(page_view, 30d) > count(purchase, 30d)"),
            ("money_vs_count", "sum(purchase, 30d) > count(page_view, 365d)"),
            ("times", "first(purchase) < last(page_view)"),
            ("orders", "orders() == 2 or distinct_channels() < 2"), ("share", "0.5 > owned_share(365d)"),
            ("rfm", "rfm() != important_value"), ("stage", "lifecycle() == active"),
            ("nested", "not (in_segment(left) and since(last(page_view)) > 14d) or in_segment(rfm)"),
        ]
        let set = try compile(rules)
        let customers = [
            customer([]),
            customer([(.purchase, t0 + 20 * day, "tmall"), (.purchase, t0 + 60 * day, "tmall"),
                      (.pageView, t0 + 80 * day, "tmall"), (.pageView, t0 + 70 * day, "app")]),
            customer([(.pageView, t0, "app"), (.pageView, t0 + day, "website"), (.messageClick, t0 + 2 * day, "wecom")]),
            customer([(.purchase, t0, "app"), (.purchase, t0 + 5 * day, "app"), (.purchase, t0 + 6 * day, "jd")]),
        ]
        var compared = 0
        for a in customers {
            for now in [t0 + 10 * day, t0 + 50 * day, t0 + 100 * day, t0 + 400 * day] {
                let got = set.evaluate(a, now: now, channels: channels)
                var expected = [Bool](repeating: false, count: rules.count)
                for i in set.order {
                    let bits = expected.indices.reduce(UInt64(0)) { $0 | (expected[$1] ? 1 << UInt64($1) : 0) }
                    let ctx = RuleContext(aggregates: a, now: now, channels: channels, memberships: bits, models: set.models)
                    expected[i] = RuleEvaluator.value(set.segments[i].expr, ctx) == .bool(true)
                }
                XCTAssertEqual(got, expected, "at day \((now - t0) / day)")
                compared += 1
            }
        }
        XCTAssertEqual(compared, 16)
        // Both kinds of comparison were compiled, and the mirrored ones into tests.
        let ops = set.compiled.table.ops
        let tests = ops.filter { if case .test = $0 { return true } else { return false } }.count
        let stackCompares = ops.filter { if case .compare = $0 { return true } else { return false } }.count
        XCTAssertEqual(stackCompares, 3, "two_values, money_vs_count and times compare two values")
        XCTAssertEqual(tests, 14)
    }

    func testSegmentsAreEvaluatedAfterTheSegmentsTheyUse() throws {
        let set = try compile([("top", "in_segment(base) and orders() >= 1"), ("base", "distinct_channels() >= 2")])
        XCTAssertEqual(set.order, [1, 0])
        let a = customer([(.purchase, t0, "app"), (.pageView, t0, "wecom")])
        XCTAssertEqual(set.evaluate(a, now: t0, channels: channels), [true, true])
    }
}
