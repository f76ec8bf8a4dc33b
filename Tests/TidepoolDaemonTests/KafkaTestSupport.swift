import Foundation
import TidepoolDaemon
import TidepoolEngine
import TidepoolKafka
import XCTest

/// Reads whole topics back from a broker with an independent consumer group.
final class TopicReader: RebalanceListener {
    struct Record {
        var topic: String
        var partition: Int32
        var offset: Int64
        var key: [UInt8]?
        var value: [UInt8]?
        var headers: [String: String]
    }

    private(set) var c: KafkaConsumer!

    init(bootstrap: String, topics: [String], group: String = "verifier-\(UUID().uuidString)") throws {
        c = try KafkaConsumer(properties: ["bootstrap.servers": bootstrap, "group.id": group,
                                           "enable.auto.commit": "false", "session.timeout.ms": "6000"],
                              listener: self)
        if !topics.isEmpty { try c.subscribe(topics) }
    }

    /// Reads until `count` records arrived or `timeout` passed.
    func read(count: Int, timeout: TimeInterval = 60) -> [Record] {
        var out: [Record] = []
        let deadline = Date().addingTimeInterval(timeout)
        while out.count < count && Date() < deadline {
            c.poll(timeoutMs: 200) { m in
                guard m.error == nil else { return }
                var h: [String: String] = [:]
                for (k, v) in m.headers { h[k] = v.map { String(decoding: $0, as: UTF8.self) } }
                out.append(Record(topic: m.topic, partition: m.partition, offset: m.offset,
                                  key: m.key.map { Array($0) }, value: m.valueIsNull ? nil : Array(m.value), headers: h))
            }
        }
        return out
    }

    func partitionsAssigned(_ consumer: KafkaConsumer, _ partitions: [TopicPartitionOffset]) -> [TopicPartitionOffset]? { nil }
    func partitionsRevoked(_ consumer: KafkaConsumer, _ partitions: [TopicPartitionOffset]) {}
    func partitionsLost(_ consumer: KafkaConsumer, _ partitions: [TopicPartitionOffset]) {}
}

/// Polls `condition` until it holds or `timeout` passes. Used where the awaited thing is a count
/// published by another thread; each check is cheap and the loop ends as soon as it holds.
func eventually(timeout: TimeInterval = 60, _ what: String, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if condition() { return true }
        usleep(20_000)
    }
    return condition()
}
