import Foundation
import TidepoolKafka
import XCTest

/// `KafkaConsumer.poll` against librdkafka's mock cluster: it returns as soon as records are
/// there instead of waiting for a full batch or the whole timeout (librdkafka's batch consume
/// does the latter, which added up to the poll timeout to every event's latency).
final class ConsumerPollTests: XCTestCase, RebalanceListener {
    func partitionsAssigned(_ consumer: KafkaConsumer, _ partitions: [TopicPartitionOffset]) -> [TopicPartitionOffset]? { nil }
    func partitionsRevoked(_ consumer: KafkaConsumer, _ partitions: [TopicPartitionOffset]) {}
    func partitionsLost(_ consumer: KafkaConsumer, _ partitions: [TopicPartitionOffset]) {}

    func testPollReturnsWhenTheFirstRecordArrivesAndTakesWhatIsFetched() throws {
        let cluster = try MockCluster()
        try cluster.createTopic("poll", partitions: 2)
        let consumer = try KafkaConsumer(properties: [
            "bootstrap.servers": cluster.bootstrapServers, "group.id": "poll-test", "auto.offset.reset": "earliest",
            "enable.partition.eof": "false", "fetch.wait.max.ms": "5", "session.timeout.ms": "6000",
        ], listener: self, maxBatch: 10_000)
        try consumer.subscribe(["poll"])
        let joinDeadline = Date().addingTimeInterval(30)
        while consumer.assignment.count < 2 && Date() < joinDeadline { consumer.poll(timeoutMs: 100) { _ in } }
        XCTAssertEqual(consumer.assignment.count, 2, "joined the group")

        let producer = try KafkaProducer(properties: ["bootstrap.servers": cluster.bootstrapServers, "linger.ms": "0"], onDelivery: { _ in })
        // Nothing there: a long poll waits for the first record, produced 300 ms into the wait,
        // and returns with it (the batch of 10,000 is far from full).
        let sender = Thread {
            usleep(300_000)
            try? producer.produce(topic: "poll", key: Array("k".utf8), value: Array("first".utf8))
            producer.poll(timeoutMs: 0)
        }
        sender.start()
        var got: [String] = []
        let t0 = Date()
        while got.isEmpty && Date().timeIntervalSince(t0) < 20 {
            consumer.poll(timeoutMs: 10_000) { m in if m.error == nil { got.append(String(decoding: m.value, as: UTF8.self)) } }
        }
        let waited = Date().timeIntervalSince(t0)
        XCTAssertEqual(got, ["first"])
        XCTAssertLessThan(waited, 5, "poll returned \(waited) s in, not at its 10 s timeout")

        // Records already fetched come back without waiting, all of them up to the batch size.
        for i in 0..<200 { try producer.produce(topic: "poll", key: Array("k\(i % 7)".utf8), value: Array("r\(i)".utf8)) }
        try producer.flush(timeoutMs: 10_000)
        var rest = 0
        let t1 = Date()
        while rest < 200 && Date().timeIntervalSince(t1) < 20 {
            consumer.poll(timeoutMs: 10_000) { m in if m.error == nil { rest += 1 } }
        }
        XCTAssertEqual(rest, 200)
        XCTAssertLessThan(Date().timeIntervalSince(t1), 5)
        consumer.close()
    }

    /// Each delivery report and each polled record names its own topic when records of two topics
    /// interleave (both clients keep the name of the last topic seen), for a name stored inline
    /// and one that is not (over 15 bytes), produced by handle and by name.
    func testReportsAndRecordsNameTheirTopicWhenTopicsInterleave() throws {
        let cluster = try MockCluster()
        let long = "tidepool.triggers.interleaved", short = "dl"
        try cluster.createTopic(long, partitions: 2)
        try cluster.createTopic(short, partitions: 1)
        var reports: [(topic: String, opaque: UInt)] = []
        let producer = try KafkaProducer(properties: ["bootstrap.servers": cluster.bootstrapServers, "linger.ms": "0"]) { r in
            XCTAssertNil(r.error)
            reports.append((r.topic, r.opaque))
        }
        let longTopic = try producer.topic(long)
        XCTAssertEqual(longTopic.name, long)
        for i in 0..<300 {
            let value = Array("\(i % 3 == 0 ? short : long) \(i)".utf8)
            if i % 3 == 0 {
                try producer.produce(topic: short, key: Array("k".utf8), value: value, opaque: UInt(i))
            } else {
                try producer.produce(to: longTopic, key: Array("k\(i % 5)".utf8), value: value, opaque: UInt(i))
            }
            if i % 7 == 0 { producer.poll(timeoutMs: 0) }
        }
        try producer.flush(timeoutMs: 10_000)
        XCTAssertEqual(reports.count, 300)
        for r in reports { XCTAssertEqual(r.topic, r.opaque % 3 == 0 ? short : long, "report of record \(r.opaque)") }

        let consumer = try KafkaConsumer(properties: [
            "bootstrap.servers": cluster.bootstrapServers, "group.id": "topics-test", "auto.offset.reset": "earliest",
            "enable.partition.eof": "false", "fetch.wait.max.ms": "5", "session.timeout.ms": "6000",
        ], listener: self, maxBatch: 64)
        try consumer.subscribe([long, short])
        var seen = 0
        let t0 = Date()
        while seen < 300 && Date().timeIntervalSince(t0) < 30 {
            consumer.poll(timeoutMs: 200) { m in
                guard m.error == nil else { return }
                let text = String(decoding: m.value, as: UTF8.self)
                XCTAssertEqual(m.topic, String(text.split(separator: " ")[0]), text)
                seen += 1
            }
        }
        XCTAssertEqual(seen, 300)
        consumer.close()
    }
}
