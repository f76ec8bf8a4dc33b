import Foundation
import Logging
@testable import TidepoolDaemon
import TidepoolEngine
import TidepoolKafka
import TidepoolStore
import XCTest

/// The pipeline with checkpoints on, against the mock cluster: asynchronous checkpoint writes,
/// Kafka commits equal to the checkpointed offsets, and a second run restoring the state.
final class CheckpointPipelineTests: XCTestCase {
    func testCheckpointsCommitWhatTheyCoverAndASecondRunRestoresTheState() throws {
        let cluster = try MockCluster()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tp-cp-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var config = TidepoolConfig()
        config.kafka.bootstrapServers = cluster.bootstrapServers
        config.kafka.groupID = "cp-test"
        config.kafka.consumer = ["session.timeout.ms": "6000"]
        config.state.path = dir.appendingPathComponent("state.sqlite").path
        config.state.checkpointIntervalMs = 100
        config.segments = ExampleSegments.definitions
        for t in [config.kafka.inputTopics[0], config.kafka.triggerTopic, config.kafka.deadLetterTopic] {
            try cluster.createTopic(t, partitions: 4)
        }
        var gen = TouchpointGenerator(customers: 300, malformedShare: 0.02, seed: 3)
        let producer = try KafkaProducer(properties: ["bootstrap.servers": cluster.bootstrapServers]) { _ in }
        let now = WallClock.nowMs()
        let total = 4000
        for k in 0..<total {
            let r = gen.next(nowMs: now - Int64(total - k) * 60_000)
            try producer.produce(topic: "touchpoints", key: r.key, value: r.value)
        }
        try producer.flush(timeoutMs: 10_000)

        let first = PipelineThread(try Pipeline(config: config, logger: Logger(label: "cp1")))
        first.start()
        XCTAssertTrue(eventually("all processed") { let s = first.pipeline.metrics.snapshot; return s.recordsIn == Int64(total) && s.eventsTaken == s.eventsIn })
        // Let at least one periodic (asynchronous) checkpoint complete after the last record.
        let seen = first.pipeline.metrics.snapshot.checkpoints
        XCTAssertTrue(eventually("a checkpoint after the input") { first.pipeline.metrics.snapshot.checkpoints >= seen + 2 })
        let customers = first.pipeline.metrics.snapshot.customers
        XCTAssertEqual(try first.stop(), .stopped)
        let c1 = first.pipeline.metrics.snapshot
        XCTAssertEqual(c1.checkpointFailures, 0)
        XCTAssertGreaterThan(c1.maxCheckpointStallMs, 0)
        XCTAssertGreaterThan(c1.lastFoldMs, 0, "each commit is followed by a WAL fold on the writer thread")
        XCTAssertGreaterThan(customers, 250)

        // The file covers every record, and Kafka's committed offsets equal its offsets.
        let store = try CheckpointStore(path: config.state.path, configVersion: config.ruleVersion)
        let reader = try TopicReader(bootstrap: cluster.bootstrapServers, topics: [], group: "cp-test")
        let committed = try reader.c.committed((0..<4).map { KafkaConsumer.TopicPartitionKey(topic: "touchpoints", partition: $0) })
        var covered: Int64 = 0
        var rows = 0
        for tp in committed {
            let cp = try XCTUnwrap(store.partition(PartitionID(topic: "touchpoints", partition: tp.partition)))
            XCTAssertEqual(cp.nextOffset, tp.offset, "partition \(tp.partition): commit equals checkpoint")
            covered += cp.nextOffset
            rows += try store.customers(PartitionID(topic: "touchpoints", partition: tp.partition)).count
        }
        XCTAssertEqual(covered, Int64(total))
        XCTAssertEqual(rows, customers, "every customer in memory is in the file")

        // A second run restores every customer and has nothing left to process.
        let second = PipelineThread(try Pipeline(config: config, logger: Logger(label: "cp2")))
        second.start()
        XCTAssertTrue(eventually("restored") { second.pipeline.metrics.snapshot.customers == customers })
        XCTAssertEqual(try second.stop(), .stopped)
        XCTAssertEqual(second.pipeline.metrics.snapshot.recordsIn, 0, "nothing reprocessed")

        // The file is damaged. Default policy: refuse to start, with the reason.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: config.state.path))
        try Data(repeating: 0x5A, count: bytes.count).write(to: URL(fileURLWithPath: config.state.path))
        for suffix in ["-wal", "-shm"] { unlink(config.state.path + suffix) }
        XCTAssertThrowsError(try Pipeline(config: config, logger: Logger(label: "cp3")).run()) { e in
            XCTAssertTrue("\(e)".contains("not a usable checkpoint"), "\(e)")
        }
        // rebuild: the file is moved aside and the state is rebuilt from the earliest offsets,
        // although the group has committed everything; what the group produced before its
        // committed offsets (triggers, dead letters) is not produced again.
        config.state.onCorrupt = "rebuild"
        let third = PipelineThread(try Pipeline(config: config, logger: Logger(label: "cp4")))
        third.start()
        XCTAssertTrue(eventually("rebuilt") { third.pipeline.metrics.snapshot.rebuildRecords == Int64(total) })
        XCTAssertTrue(eventually("same customers") { third.pipeline.metrics.snapshot.customers == customers })
        XCTAssertEqual(try third.stop(), .stopped)
        XCTAssertEqual(third.pipeline.metrics.snapshot.triggersProduced, 0)
        XCTAssertEqual(third.pipeline.metrics.snapshot.deadLetters, 0)
        let aside = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix("state.sqlite.corrupt-") }
        XCTAssertEqual(aside.count, 1, "the damaged file is kept for a post-mortem")
    }
}
