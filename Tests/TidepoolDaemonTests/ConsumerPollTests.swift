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
}
