import Logging
@testable import TidepoolDaemon
import TidepoolEngine
import XCTest

/// The embedded demo end to end (mock cluster in-process, the real pipeline): its history is
/// replayed in event time, so every example campaign reaches decisions, nothing is late, and every
/// redelivered record is applied once.
final class DemoTests: XCTestCase {
    func testGeneratorCoversEveryTypeOfItsMix() {
        var gen = TouchpointGenerator(customers: 100, malformedShare: 0, seed: 1)
        var seen = Set<EventType>()
        for _ in 0..<5_000 { if let t = gen.next(nowMs: 0).type { seen.insert(t) } }
        XCTAssertEqual(seen, Set(TouchpointGenerator.mix.map(\.0)))
    }

    func testHistoryReplaysInEventTimeAndEveryCampaignDecides() throws {
        var o = Demo.Options()
        o.customers = 3_000
        o.history = 60_000
        o.rate = 5_000
        o.seconds = 2
        o.partitions = 4
        var lines: [String] = []
        let s = try Demo(options: o, logger: Logger(label: "test")).run { lines.append($0) }
        let c = s.counters
        XCTAssertEqual(s.produced, 70_000)
        XCTAssertEqual(c.recordsIn, s.produced)
        XCTAssertEqual(s.triggerTopicRecords, c.triggersProduced)
        XCTAssertEqual(s.deadLetterTopicRecords, c.deadLetters)
        XCTAssertGreaterThan(c.events(.consent), 0)
        XCTAssertNotNil(s.drainRate)
        // The history arrived in event-time order per partition and the live phase is stamped with
        // the wall clock: nothing is behind stream time. (Before the history was replayed before
        // the pipeline caught up, every record was late and delayed campaigns never came due.)
        let e = c.partitionTotals
        XCTAssertEqual(e.late, 0)
        // Every redelivered record counts as a duplicate and is applied once.
        XCTAssertGreaterThan(s.redelivered, 0)
        XCTAssertEqual(e.duplicates, s.redelivered)
        XCTAssertEqual(e.applied + e.duplicates, c.eventsIn)
        XCTAssertGreaterThan(e.timersFired, 0)
        for camp in ["winback", "cart_rescue", "first_purchase_welcome"] {
            XCTAssertGreaterThan(c.decisions(camp, .sent), 0, "\(camp) sent nothing:\n" + Demo.render(s))
        }
        // SMS needs an opt-in, which few dormant customers of a small run have: it must decide,
        // whatever the outcome.
        let sms = TriggerOutcome.allCases.reduce(Int64(0)) { $0 + c.decisions("dormant_buyer_sms", $1) }
        XCTAssertGreaterThan(sms, 0, Demo.render(s))
        XCTAssertGreaterThan(c.decisions("cart_rescue", .cancelled), 0, "some carts were bought within the delay")
        XCTAssertTrue(lines.contains { $0.hasPrefix("history replayed: 60000 records") }, lines.joined(separator: "\n"))
    }
}
