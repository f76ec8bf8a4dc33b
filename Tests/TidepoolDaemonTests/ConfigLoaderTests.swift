@testable import TidepoolDaemon
import TidepoolEngine
import XCTest

final class ConfigLoaderTests: XCTestCase {
    func load(_ text: String) throws -> TidepoolConfig { try ConfigLoader(file: "t.yaml").parse(text) }

    func expectError(_ text: String, line: Int, column: Int, contains: String, file: StaticString = #filePath, _ l: UInt = #line) {
        XCTAssertThrowsError(try load(text), file: file, line: l) { e in
            guard let e = e as? ConfigError else { return XCTFail("not a ConfigError: \(e)", file: file, line: l) }
            XCTAssertEqual(e.file, "t.yaml", file: file, line: l)
            XCTAssertEqual(e.line, line, "\(e)", file: file, line: l)
            XCTAssertEqual(e.column, column, "\(e)", file: file, line: l)
            XCTAssertTrue(e.message.contains(contains), "\(e)", file: file, line: l)
        }
    }

    func testEmptyFileGivesDefaults() throws {
        XCTAssertEqual(try load(""), TidepoolConfig())
    }

    func testExampleConfigIsValidAndMatchesDefaults() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("deploy/tidepool.example.yaml")
        var example = try ConfigLoader.load(path: url.path)
        XCTAssertEqual(example.segments.map(\.name), ["repeat_buyer", "lapsed_visitor", "winback", "big_spender", "platform_heavy", "vip_at_risk", "dormant"])
        XCTAssertEqual(example.campaigns.map(\.name), ["winback_dormant", "cart_rescue", "dormant_hello"])
        XCTAssertEqual(example.allSegments.last?.name, "lifecycle_dormant")
        example.segments = []
        example.campaigns = []
        XCTAssertEqual(example, TidepoolConfig(), "apart from its example segments and campaigns, the example documents the defaults")
    }

    /// `aggregates.keep` over its defaults (purchases, refunds, cancels for the longest window,
    /// the rest 90d), and the errors that name the line.
    func testAggregatesKeep() throws {
        let d = AggregateConfig.dayMs
        let defaults = try load("")
        XCTAssertEqual(defaults.aggregates.keptMs(.purchase), 365 * d)
        XCTAssertEqual(defaults.aggregates.keptMs(.pageView), 90 * d)
        let c = try load("""
        aggregates:
          keep:
            page_view: 365d
            search: 0d
            default: 30d
        segments:
          loyal_visitor: "count(page_view, 365d) >= 50"
        """)
        XCTAssertEqual(c.aggregates.keptMs(.pageView), 365 * d)
        XCTAssertEqual(c.aggregates.keptMs(.search), 0)
        XCTAssertEqual(c.aggregates.keptMs(.messageOpen), 30 * d)
        XCTAssertEqual(c.aggregates.keptMs(.refund), 365 * d)
        expectError("""
        aggregates:
          keep:
            page_veiw: 30d
        """, line: 3, column: 5, contains: "unknown event type 'page_veiw' in aggregates.keep")
        expectError("""
        aggregates:
          windows: [1d, 90d]
          keep:
            purchase: 180d
        """, line: 4, column: 15, contains: "aggregates.keep.purchase (180d) is longer than the longest window in aggregates.windows (90d)")
        expectError("""
        aggregates:
          keep: {purchase: 30d}
        """, line: 2, column: 20, contains: "models.rfm.lookback is longer than purchases are kept (aggregates.keep.purchase: 30d)")
        expectError("""
        segments:
          loyal_visitor: "count(page_view, 365d) >= 50"
        """, line: 2, column: 36, contains: "longer than page_view is kept (90d; set aggregates.keep.page_view")
    }

    func testCampaignsAndContactPolicy() throws {
        let c = try load("""
        segments:
          lapsed: "since(last()) > 14d"
        campaigns:
          nudge:
            on: {segment_entered: lapsed}
            delay: 2h
            condition: "orders() >= 1"
            channels: [sms, wecom]
            holdout: 2.5%
            priority: 3
          cart:
            on: {event: add_to_cart, channel: app}
            channels: [wecom]
            quiet_hours: false
        contact_policy:
          caps:
            - {channel: sms, max: 1, per: 30d}
            - {max: 2, per: 7d}
          quiet_hours: "22:30-08:00"
          default_time_zone: "+07:00"
          opt_in_channels: [sms]
        """)
        XCTAssertEqual(c.campaigns.count, 2)
        XCTAssertEqual(c.campaigns[0].start, .segmentEntered("lapsed"))
        XCTAssertEqual(c.campaigns[0].delayMs, 7_200_000)
        XCTAssertEqual(c.campaigns[0].holdoutBasisPoints, 250)
        XCTAssertEqual(c.campaigns[0].channels, ["sms", "wecom"])
        XCTAssertEqual(c.campaigns[1].start, .event(.addToCart, channel: "app"))
        XCTAssertFalse(c.campaigns[1].respectsQuietHours)
        XCTAssertEqual(c.contactPolicy.caps, [ContactPolicy.Cap(channel: "sms", max: 1, windowMs: 30 * 86_400_000),
                                              ContactPolicy.Cap(channel: nil, max: 2, windowMs: 7 * 86_400_000)])
        XCTAssertEqual(c.contactPolicy.quietStartMinute, 22 * 60 + 30)
        XCTAssertEqual(c.contactPolicy.quietEndMinute, 8 * 60)
        XCTAssertEqual(c.contactPolicy.defaultTimeZone, "+07:00")
        XCTAssertFalse(try c.engineConfig().campaigns.isEmpty)
    }

    func testCampaignErrorsNameTheLine() {
        expectError("campaigns:\n  x:\n    on: {segment_entered: nope}\n    channels: [wecom]\n",
                    line: 2, column: 3, contains: "campaign 'x': no segment named 'nope'")
        expectError("campaigns:\n  x:\n    on: {event: add_to_cart}\n    channels: [pager]\n",
                    line: 2, column: 3, contains: "channel 'pager' is not in aggregates")
        expectError("campaigns:\n  x:\n    on: {event: add_to_cart}\n    channels: [wecom]\n    holdout: 0.5\n",
                    line: 5, column: 14, contains: "percentage")
        expectError("campaigns:\n  x:\n    on: {event: add_to_cart}\n    channels: [wecom]\n    condition: \"count(purchase, 1d) >\"\n",
                    line: 5, column: 38, contains: "campaign 'x'")
        expectError("campaigns:\n  x:\n    on: {lifecycle: sleepy}\n    channels: [wecom]\n",
                    line: 3, column: 21, contains: "unknown lifecycle stage 'sleepy'")
        expectError("contact_policy:\n  quiet_hours: 9pm-9am\n", line: 2, column: 16, contains: "HH:MM-HH:MM")
        expectError("contact_policy:\n  default_time_zone: Mars/Olympus\n", line: 2, column: 22, contains: "unknown time zone")
    }

    func testValuesAndPassThroughProperties() throws {
        let c = try load("""
        kafka:
          bootstrap_servers: "b1:9092,b2:9092"
          input_topics: [a, b]
          properties:
            security.protocol: SASL_SSL
            sasl.mechanisms: PLAIN
          consumer:
            session.timeout.ms: 6000
            security.protocol: SSL
        decoding:
          max_future_skew: 90s
        first_purchase:
          channel: sms
          ttl: 2d
        """)
        XCTAssertEqual(c.kafka.inputTopics, ["a", "b"])
        XCTAssertEqual(c.decoding.maxFutureSkewMs, 90_000)
        XCTAssertEqual(c.firstPurchase.ttlMs, 2 * 86_400_000)
        XCTAssertEqual(c.consumerProperties["security.protocol"], "SSL", "consumer-only properties win")
        XCTAssertEqual(c.producerProperties["security.protocol"], "SASL_SSL")
        XCTAssertEqual(c.consumerProperties["session.timeout.ms"], "6000")
        XCTAssertEqual(c.consumerProperties["bootstrap.servers"], "b1:9092,b2:9092")
        XCTAssertEqual(c.consumerProperties["group.id"], "tidepool")
    }

    func testSegmentRulesAreCheckedWithFilePositions() throws {
        let ok = try load("""
        segments:
          repeat: "count(purchase, 90d) >= 2"
          lapsed: |
            since(last(page_view)) > 14d
        """)
        XCTAssertEqual(ok.segments.map(\.name), ["repeat", "lapsed"])
        XCTAssertEqual(try ok.engineConfig().segments.segments.count, 2)
        // Errors point into the rule text: quoted scalar on the key's line, block scalar below it.
        expectError("segments:\n  a: \"count(purchse, 90d) > 1\"\n", line: 2, column: 13, contains: "unknown event type 'purchse'")
        expectError("segments:\n  a: |\n    orders() > 1 and\n    since(last(page_view)) >\n", line: 4, column: 29, contains: "expected a value")
        expectError("segments:\n  a: count(purchase, 400d) > 1\n", line: 2, column: 22, contains: "longer than the longest retained window")
        XCTAssertEqual(try load("aggregates:\n  windows: [1d, 500d]\nsegments:\n  a: count(purchase, 400d) > 1\n").segments.count, 1,
                       "a longer configured window allows the rule")
        expectError("segments:\n  a: in_segment(b)\n  b: in_segment(a)\n", line: 3, column: 17, contains: "cycle")
        expectError("aggregates:\n  windows: [90m]\n", line: 2, column: 13, contains: "whole hours")
        expectError("aggregates:\n  owned_channels: [tmall]\n", line: 2, column: 3, contains: "both owned and platform")
        expectError("segments:\n  a: rfm() == vip\n", line: 2, column: 15, contains: "unknown RFM class 'vip'")
        expectError("segments:\n  a: lifecycle() > dormant\n", line: 2, column: 18, contains: "only be compared with == or !=")
        expectError("models:\n  rfm:\n    lookback: 500d\n", line: 3, column: 15, contains: "longer than the longest window")
        expectError("models:\n  lifecycle:\n    churned_after: 10d\n", line: 3, column: 20, contains: "longer than dormant_after")
        XCTAssertEqual(try load("segments:\n  a: rfm() == 重要价值\n").segments.count, 1)
    }

    func testErrorsNameLineAndColumn() {
        expectError("kafka:\n  group_id: x\n  input_topicz: [a]\n", line: 3, column: 3, contains: "unknown key 'input_topicz'")
        expectError("decoding:\n  max_future_skew: soon\n", line: 2, column: 20, contains: "expected a duration")
        expectError("processing:\n  batch_size: -3\n", line: 2, column: 15, contains: "between 1 and")
        expectError("first_purchase:\n  channel: Big Channel\n", line: 2, column: 12, contains: "lower-case name")
        expectError("kafka: [\n", line: 2, column: 1, contains: "YAML syntax error")
        expectError("log:\n  level: loud\n", line: 2, column: 10, contains: "log.level")
        expectError("kafka:\n  consumer:\n    enable.auto.offset.store: true\n", line: 3, column: 5, contains: "must stay false")
        expectError("kafka:\n  group_id: a\n  group_id: b\n", line: 2, column: 3, contains: "duplicate key 'group_id'")
        expectError("state:\n  checkpoint_slice: 0ms\n", line: 2, column: 21, contains: "at least 1ms")
    }

    func testProcessingThreads() throws {
        XCTAssertEqual(TidepoolConfig().processing.threads, 0, "auto by default")
        XCTAssertEqual(try load("processing:\n  threads: auto\n").processing.threads, 0)
        XCTAssertEqual(try load("processing:\n  threads: 3\n").processing.threads, 3)
        expectError("processing:\n  threads: 0\n", line: 2, column: 12, contains: "between 1 and 64")
        expectError("processing:\n  threads: many\n", line: 2, column: 12, contains: "expected auto or an integer")
        XCTAssertGreaterThanOrEqual(TidepoolConfig.Processing.availableCores, 1)
    }

    func testCheckpointSlice() throws {
        XCTAssertEqual(TidepoolConfig().state.checkpointSliceMs, 5)
        XCTAssertEqual(try load("state:\n  checkpoint_slice: 20ms\n").state.checkpointSliceMs, 20)
    }
}

import Foundation

final class PipelineCountersTests: XCTestCase {
    /// Decisions are counted by `TriggerOutcome.index` and exposed in `allCases` order.
    func testOutcomeIndexIsItsPositionInAllCases() {
        for (i, o) in TriggerOutcome.allCases.enumerated() { XCTAssertEqual(o.index, i, "\(o)") }
        var c = PipelineCounters()
        c.count(.cancelled, campaign: "winback")
        c.count(.sent, campaign: "winback")
        c.count(.sent, campaign: "winback")
        XCTAssertEqual(TriggerOutcome.allCases.map { c.decisions("winback", $0) }, [2, 0, 0, 0, 1])
    }
}
