@testable import TidepoolDaemon
import TidepoolEngine
import XCTest

final class BacktestTests: XCTestCase {
    func testReplayOfAFileReportsDailyTransitionsAndCampaignOutcomes() throws {
        var config = try ConfigLoader(file: "draft.yaml").parse("""
        first_purchase:
          enabled: false
        segments:
          dormant_buyer: "orders() >= 1 and since(last()) > 30d"
        campaigns:
          winback:
            on: {segment_entered: dormant_buyer}
            channels: [wecom]
            holdout: 50%
        contact_policy:
          quiet_hours: none
        """)
        config.latenessMs = 0
        let t0: Int64 = 1_790_042_400_000  // 2026-09-22T02:00:00Z
        var lines: [String] = []
        for n in 0..<40 {
            lines.append(#"{"event_id":"e\#(n)","customer_id":"c\#(n)","type":"purchase","channel":"app","timestamp":\#(t0 + Int64(n % 2) * 86_400_000),"amount":10,"currency":"CNY"}"#)
        }
        lines.append("not json")
        let path = NSTemporaryDirectory() + "backtest-\(getpid()).jsonl"
        try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        defer { unlink(path) }
        let b = try Backtest(config: config)
        try b.feedFile(path, nowMs: t0 + 100 * 86_400_000)
        b.advance(to: t0 + 40 * 86_400_000)
        let r = b.finish()
        XCTAssertEqual(r.events, 40)
        XCTAssertEqual(r.rejected, 1)
        XCTAssertEqual(r.days["2026-10-22"]?["dormant_buyer"]?.entered, 20)
        XCTAssertEqual(r.days["2026-10-23"]?["dormant_buyer"]?.entered, 20)
        let w = try XCTUnwrap(r.campaigns["winback"])
        XCTAssertEqual((w["sent"] ?? 0) + (w["held_out"] ?? 0), 40)
        XCTAssertGreaterThan(w["held_out"] ?? 0, 5)
        XCTAssertTrue(Backtest.render(r).contains("2026-10-22  dormant_buyer +20/-0"))
    }
}
