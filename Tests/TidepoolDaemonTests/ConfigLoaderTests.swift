@testable import TidepoolDaemon
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
        example.segments = []
        XCTAssertEqual(example, TidepoolConfig(), "apart from its example segments, the example documents the defaults")
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
    }
}

import Foundation
