import Foundation
import Logging
@testable import TidepoolDaemon
import TidepoolEngine
import TidepoolKafka
import XCTest

/// A member assigned partitions the group has already processed, without their state (another
/// host's checkpoint, or no checkpoints at all): the state is rebuilt from the input, and what the
/// group already produced is not produced again.
final class RebuildPipelineTests: XCTestCase {
    func testAMemberWithoutTheStateRebuildsItFromTheInputAndProducesNothingTwice() throws {
        let cluster = try MockCluster()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tp-rebuild-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for t in ["touchpoints", "tidepool.triggers", "tidepool.dead-letters"] { try cluster.createTopic(t, partitions: 4) }
        var gen = TouchpointGenerator(customers: 300, malformedShare: 0.03, seed: 5)
        let producer = try KafkaProducer(properties: ["bootstrap.servers": cluster.bootstrapServers]) { r in XCTAssertNil(r.error) }
        let now = WallClock.nowMs()
        let total = 3000
        var records: [TouchpointGenerator.Record] = []
        for k in 0..<total {
            let r = gen.next(nowMs: now - Int64(total - k) * 60_000)
            records.append(r)
            try producer.produce(topic: "touchpoints", key: r.key, value: r.value)
        }
        try producer.flush(timeoutMs: 10_000)
        let buyers = Set(records.filter { $0.expectedRejection == nil && $0.type == .purchase }.compactMap(\.customerID))
        let rejected = records.filter { $0.expectedRejection != nil }.count
        XCTAssertGreaterThan(buyers.count, 20)
        XCTAssertGreaterThan(rejected, 20)

        func config(state: String) -> TidepoolConfig {
            var c = TidepoolConfig()
            c.kafka.bootstrapServers = cluster.bootstrapServers
            c.kafka.groupID = "rebuild"
            c.kafka.consumer = ["session.timeout.ms": "6000"]
            c.state.path = state
            c.segments = ExampleSegments.definitions
            c.idleAdvance = false
            return c
        }

        // Member A processes everything with its own checkpoint file, commits and leaves.
        let a = PipelineThread(try Pipeline(config: config(state: dir.appendingPathComponent("a.sqlite").path), logger: Logger(label: "a")))
        a.start()
        XCTAssertTrue(eventually("A processed everything") { let s = a.pipeline.metrics.snapshot; return s.recordsIn == Int64(total) && s.eventsTaken == s.eventsIn })
        let aLive = a.pipeline.metrics.snapshot
        XCTAssertEqual(try a.stop(), .stopped)
        XCTAssertEqual(a.pipeline.metrics.snapshot.triggersProduced, Int64(buyers.count))
        XCTAssertEqual(aLive.deadLetters, Int64(rejected))

        // Member B, on another host (a checkpoint file of its own, empty), then a third member
        // with no checkpoints at all: each rebuilds every partition from the input. The group
        // had committed everything, so B resuming there would have had no customers.
        for (round, (name, state)) in [("b", dir.appendingPathComponent("b.sqlite").path), ("memory-only", "")].enumerated() {
            let committed = Int64(total + 2 * round)  // each round adds two records
            let b = PipelineThread(try Pipeline(config: config(state: state), logger: Logger(label: name)))
            b.start()
            XCTAssertTrue(eventually("\(name) rebuilt the state") { b.pipeline.metrics.snapshot.rebuildRecords == committed }, name)
            XCTAssertTrue(eventually("\(name) published") { b.pipeline.metrics.snapshot.customers == aLive.customers + round }, name)
            let bLive = b.pipeline.metrics.snapshot
            if round == 0 { XCTAssertEqual(bLive.segmentSizes, aLive.segmentSizes, name) }
            XCTAssertEqual(bLive.triggersProduced, 0, "\(name): the group produced those triggers already")
            XCTAssertEqual(bLive.deadLetters, 0, "\(name): and those dead letters")

            // New input after the rebuild: an earlier buyer buys again (no first-purchase
            // trigger: the rebuilt state knows), a new customer buys for the first time (one).
            let again = buyers.sorted()[0], newcomer = "\(name)-new"
            for (i, c) in [again, newcomer].enumerated() {
                let json = #"{"event_id":"\#(name)-x\#(i)","customer_id":"\#(c)","type":"purchase","channel":"app","timestamp":\#(WallClock.nowMs()),"amount":10,"currency":"CNY"}"#
                try producer.produce(topic: "touchpoints", key: Array(c.utf8), value: Array(json.utf8))
            }
            try producer.flush(timeoutMs: 10_000)
            XCTAssertTrue(eventually("\(name) processed the new records") { let s = b.pipeline.metrics.snapshot; return s.eventsIn == bLive.eventsIn + 2 && s.eventsTaken == s.eventsIn }, name)
            XCTAssertEqual(try b.stop(), .stopped)
            XCTAssertEqual(b.pipeline.metrics.snapshot.triggersProduced, 1, "\(name): only the newcomer's first purchase")
        }
        let triggers = try TopicReader(bootstrap: cluster.bootstrapServers, topics: ["tidepool.triggers"]).read(count: buyers.count + 2)
        XCTAssertEqual(triggers.count, buyers.count + 2)
        let customers = triggers.map { String(decoding: $0.key!, as: UTF8.self) }
        XCTAssertEqual(Set(customers), buyers.union(["b-new", "memory-only-new"]))
        XCTAssertEqual(customers.count, Set(customers).count, "no customer's first purchase announced twice")
    }
}
