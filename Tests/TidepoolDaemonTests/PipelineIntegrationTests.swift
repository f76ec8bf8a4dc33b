import Foundation
import Logging
@testable import TidepoolDaemon
import TidepoolEngine
import TidepoolKafka
import XCTest

/// The daemon pipeline against librdkafka's mock cluster: real produce, group consumption,
/// offset commits; triggers and dead letters observed on their topics.
final class PipelineIntegrationTests: XCTestCase {
    func testEventsFlowToTriggersAndDeadLettersAndOffsetsAreCommitted() throws {
        let cluster = try MockCluster()
        var config = TidepoolConfig()
        config.kafka.bootstrapServers = cluster.bootstrapServers
        config.kafka.groupID = "itest"
        config.kafka.consumer = ["session.timeout.ms": "6000"]
        let partitions: Int32 = 4
        for t in [config.kafka.inputTopics[0], config.kafka.triggerTopic, config.kafka.deadLetterTopic] {
            try cluster.createTopic(t, partitions: partitions)
        }

        // Input: a generated mix with 10% malformed records of every kind.
        let now = WallClock.nowMs()
        var gen = TouchpointGenerator(customers: 200, malformedShare: 0.1, seed: 7)
        let records = (0..<3000).map { _ in gen.next(nowMs: now) }
        let producer = try KafkaProducer(properties: ["bootstrap.servers": cluster.bootstrapServers]) { r in
            XCTAssertNil(r.error)
        }
        for r in records { try producer.produce(topic: "touchpoints", key: r.key, value: r.value) }
        try producer.flush(timeoutMs: 10_000)

        var expectedReasons: [String: Int] = [:]
        for r in records { if let reason = r.expectedRejection { expectedReasons[reason.rawValue, default: 0] += 1 } }
        let expectedDeadLetters = expectedReasons.values.reduce(0, +)
        let buyers = Set(records.filter { $0.expectedRejection == nil && $0.type == .purchase }.compactMap(\.customerID))
        XCTAssertGreaterThan(expectedDeadLetters, 100)
        XCTAssertEqual(Set(expectedReasons.keys).count, 8, "the generator covers eight rejection kinds")
        XCTAssertGreaterThan(buyers.count, 20)

        let worker = PipelineThread(try Pipeline(config: config, logger: Logger(label: "test")))
        worker.start()
        XCTAssertTrue(eventually("all records processed") { let s = worker.pipeline.metrics.snapshot; return s.recordsIn == Int64(records.count) && s.eventsTaken == s.eventsIn })
        XCTAssertEqual(try worker.stop(), .stopped)

        let c = worker.pipeline.metrics.snapshot
        XCTAssertEqual(c.deadLetters, Int64(expectedDeadLetters))
        XCTAssertEqual(c.triggersProduced, Int64(buyers.count))
        XCTAssertEqual(c.deliveryFailures, 0)

        // Triggers: one per first-time buyer, keyed by customer, with stable distinct ids.
        let triggers = try TopicReader(bootstrap: cluster.bootstrapServers, topics: [config.kafka.triggerTopic]).read(count: buyers.count)
        XCTAssertEqual(triggers.count, buyers.count)
        var seenCustomers = Set<String>()
        for t in triggers {
            let obj = try JSONSerialization.jsonObject(with: Data(t.value!)) as! [String: Any]
            let customer = obj["customer_id"] as! String
            XCTAssertEqual(String(decoding: t.key!, as: UTF8.self), customer)
            XCTAssertEqual(obj["trigger_id"] as? String, Trigger.id(customerID: customer, campaign: "first_purchase_welcome", episode: 1))
            XCTAssertEqual(obj["schema"] as? String, "tidepool.trigger.v1")
            seenCustomers.insert(customer)
        }
        XCTAssertEqual(seenCustomers, buyers)

        // Dead letters: original bytes, reasons and source coordinates in headers.
        let dls = try TopicReader(bootstrap: cluster.bootstrapServers, topics: [config.kafka.deadLetterTopic]).read(count: expectedDeadLetters)
        XCTAssertEqual(dls.count, expectedDeadLetters)
        var reasons: [String: Int] = [:]
        let originals = Set(records.filter { $0.expectedRejection != nil }.map(\.value))
        for d in dls {
            reasons[d.headers["tidepool.reason"] ?? "none", default: 0] += 1
            XCTAssertTrue(originals.contains(d.value ?? []), "dead letter carries the original bytes")
            XCTAssertEqual(d.headers["tidepool.source.topic"], "touchpoints")
            XCTAssertNotNil(d.headers["tidepool.source.offset"].flatMap { Int64($0) })
            XCTAssertNotNil(d.headers["tidepool.detail"])
        }
        XCTAssertEqual(reasons, expectedReasons)

        // Offsets: the group's committed offsets are the end of every input partition.
        let reader = try TopicReader(bootstrap: cluster.bootstrapServers, topics: [], group: "itest")
        let keys = (0..<partitions).map { KafkaConsumer.TopicPartitionKey(topic: "touchpoints", partition: $0) }
        let committed = try reader.c.committed(keys)
        var total: Int64 = 0
        for tp in committed {
            let (_, high) = try producer.queryWatermarks(topic: "touchpoints", partition: tp.partition)
            XCTAssertEqual(tp.offset, high, "partition \(tp.partition) committed to its end")
            total += high
        }
        XCTAssertEqual(total, Int64(records.count))
    }
}
