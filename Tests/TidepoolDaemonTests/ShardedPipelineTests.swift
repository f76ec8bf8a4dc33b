import Foundation
import Logging
@testable import TidepoolDaemon
import TidepoolEngine
import TidepoolKafka
import XCTest

/// `processing.threads` changes where events are applied, never what comes out: the same input
/// through one thread and through three gives the same triggers, segments and counters.
final class ShardedPipelineTests: XCTestCase {
    func testThreeProcessingThreadsProduceWhatOneProduces() throws {
        let cluster = try MockCluster()
        let partitions: Int32 = 8
        for t in ["touchpoints", "triggers-1", "triggers-3", "dead-letters"] { try cluster.createTopic(t, partitions: partitions) }

        // 30 days of history for 1,500 customers, all on the topic before either run starts, so
        // that polls are large enough to be applied in parallel.
        let count = 24_000
        let now = WallClock.nowMs()
        let start = now - 30 * 86_400_000
        var gen = TouchpointGenerator(customers: 1_500, malformedShare: 0.02, seed: 11)
        let producer = try KafkaProducer(properties: ["bootstrap.servers": cluster.bootstrapServers, "linger.ms": "20"]) { r in
            XCTAssertNil(r.error)
        }
        for i in 0..<count {
            let r = gen.next(nowMs: start + Int64(Double(i) / Double(count) * 30 * 86_400_000))
            try producer.produce(topic: "touchpoints", key: r.key, value: r.value)
        }
        try producer.flush(timeoutMs: 30_000)

        /// The counters once every record is processed (the state is still held), the counters
        /// after the stop, and the triggers.
        func run(threads: Int) throws -> (PipelineCounters, PipelineCounters, [String: String]) {
            var config = TidepoolConfig()
            config.kafka.bootstrapServers = cluster.bootstrapServers
            config.kafka.groupID = "sharded-\(threads)"
            config.kafka.consumer = ["session.timeout.ms": "6000"]
            config.kafka.triggerTopic = "triggers-\(threads)"
            config.kafka.deadLetterTopic = "dead-letters"
            config.segments = ExampleSegments.definitions
            config.campaigns = ExampleCampaigns.definitions
            // Stream time follows the events only: the two runs happen seconds apart.
            config.idleAdvance = false
            config.processing.threads = threads
            let worker = PipelineThread(try Pipeline(config: config, logger: Logger(label: "sharded-\(threads)")))
            XCTAssertEqual(worker.pipeline.processingThreads, threads)
            worker.start()
            XCTAssertTrue(eventually("all records processed") { let s = worker.pipeline.metrics.snapshot; return s.recordsIn == Int64(count) && s.eventsTaken == s.eventsIn })
            let live = worker.pipeline.metrics.snapshot
            XCTAssertEqual(try worker.stop(), .stopped)
            let c = worker.pipeline.metrics.snapshot
            // Every trigger, by id, with its body less the one field that differs (emitted_at).
            let records = try TopicReader(bootstrap: cluster.bootstrapServers, topics: [config.kafka.triggerTopic]).read(count: Int(c.triggersProduced))
            var byID: [String: String] = [:]
            for r in records {
                var obj = try JSONSerialization.jsonObject(with: Data(r.value!)) as! [String: Any]
                obj["emitted_at"] = nil
                let body = String(decoding: try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys]), as: UTF8.self)
                byID[obj["trigger_id"] as! String] = body
            }
            XCTAssertEqual(byID.count, Int(c.triggersProduced), "trigger ids are distinct")
            return (live, c, byID)
        }

        let (oneLive, one, oneTriggers) = try run(threads: 1)
        let (threeLive, three, threeTriggers) = try run(threads: 3)

        // Index 0: the pipeline thread (small polls); 1 + k: shard k's thread (catch-up polls).
        XCTAssertGreaterThan(one.parallelPolls, 0, "the history was handed to the shard thread")
        XCTAssertEqual(one.threadEvents.count, 2)
        XCTAssertGreaterThan(one.threadEvents[1], 0)
        XCTAssertEqual(one.threadEvents.reduce(0, +), one.eventsIn)
        XCTAssertGreaterThan(three.parallelPolls, 0, "the history was applied on several threads")
        XCTAssertEqual(three.threadEvents.count, 4)
        XCTAssertTrue(three.threadEvents[1...].allSatisfy { $0 > 0 }, "\(three.threadEvents)")
        XCTAssertEqual(three.threadEvents.reduce(0, +), three.eventsIn)

        XCTAssertGreaterThan(one.triggersProduced, 100)
        XCTAssertEqual(threeTriggers, oneTriggers)
        XCTAssertEqual(three.eventsIn, one.eventsIn)
        XCTAssertEqual(three.deadLetters, one.deadLetters)
        XCTAssertGreaterThan(oneLive.customers, 1_000)
        XCTAssertEqual(threeLive.customers, oneLive.customers)
        XCTAssertGreaterThan(oneLive.segmentSizes.values.reduce(0, +), 500)
        XCTAssertEqual(threeLive.segmentSizes, oneLive.segmentSizes)
        XCTAssertEqual(three.segmentTransitions, one.segmentTransitions)
        XCTAssertEqual(three.campaignOutcomes, one.campaignOutcomes)
        XCTAssertEqual(three.partitionCounters, one.partitionCounters)
        XCTAssertGreaterThan(one.segmentTransitions.values.reduce(0, +), 1_000)
    }
}
