import Foundation
import Logging
import TidepoolEngine
import TidepoolKafka

/// `tidepool demo`: librdkafka's mock cluster in-process, a synthetic producer, and the real
/// daemon pipeline (the same `Pipeline` that `tidepool run` uses) between them.
public struct Demo {
    public struct Options {
        public var customers = 50_000
        public var rate = 100_000
        public var seconds = 15
        public var partitions: Int32 = 32
        public var malformedShare = 0.01
        public var seed: UInt64 = 42
        /// When > 0: produce this many records before the pipeline starts, then measure how fast
        /// it drains them (its maximum rate, not the offered load). `rate`/`seconds` are ignored.
        public var preload = 0
        /// Event times spread over this many days up to now, so that windows, dormancy and
        /// timers have history to work on (0: every event is stamped with the wall clock).
        public var historyDays = 60
        public init() {}
    }

    public struct Summary {
        public var produced: Int64
        public var expectedDeadLetters: [DeadLetterReason: Int64]
        public var counters: PipelineCounters
        public var triggerTopicRecords: Int64
        public var deadLetterTopicRecords: Int64
        public var seconds: Double
        /// Preload mode: records/s from the first record processed to the last.
        public var drainRate: Double?
    }

    public let options: Options
    let logger: Logger

    public init(options: Options, logger: Logger) {
        self.options = options
        self.logger = logger
    }

    public func run(print out: @escaping (String) -> Void) throws -> Summary {
        let cluster = try MockCluster()
        var config = TidepoolConfig()
        config.kafka.bootstrapServers = cluster.bootstrapServers
        config.kafka.groupID = "tidepool-demo"
        config.kafka.consumer = ["session.timeout.ms": "6000"]
        config.segments = ExampleSegments.definitions
        config.campaigns = ExampleCampaigns.definitions
        for t in [config.kafka.inputTopics[0], config.kafka.triggerTopic, config.kafka.deadLetterTopic] {
            try cluster.createTopic(t, partitions: options.partitions)
        }
        out("mock cluster at \(cluster.bootstrapServers); topics \(config.kafka.inputTopics[0]), \(config.kafka.triggerTopic), \(config.kafka.deadLetterTopic) with \(options.partitions) partitions")

        let pipeline = try Pipeline(config: config, logger: logger)
        let worker = PipelineThread(pipeline)
        var producer: KafkaProducer! = try KafkaProducer(properties: ["bootstrap.servers": cluster.bootstrapServers, "linger.ms": "20"]) { _ in }
        var gen = TouchpointGenerator(customers: options.customers, malformedShare: options.malformedShare, seed: options.seed)
        var expected: [DeadLetterReason: Int64] = [:]
        var produced: Int64 = 0
        let plannedTotal = options.preload > 0 ? Int64(options.preload) : Int64(options.rate) * Int64(options.seconds)
        let historyMs = Int64(options.historyDays) * 86_400_000
        let historyStart = WallClock.nowMs() - historyMs
        func produceOne() throws {
            // Event time walks through the history window as production proceeds.
            let eventTime = historyMs == 0 ? WallClock.nowMs()
                : historyStart + Int64(Double(produced) / Double(max(plannedTotal, 1)) * Double(historyMs))
            let r = gen.next(nowMs: eventTime)
            try producer.produce(topic: config.kafka.inputTopics[0], key: r.key, value: r.value)
            if let reason = r.expectedRejection { expected[reason, default: 0] += 1 }
            produced += 1
        }
        if options.preload > 0 {
            out("preloading \(options.preload) touchpoints before the pipeline starts")
            while produced < Int64(options.preload) { try produceOne() }
            try producer.flush(timeoutMs: 60_000)
        }
        worker.start()

        // The mock cluster keeps only ~5 MiB per partition: start producing once the pipeline owns
        // its partitions (the mock delays the first group join by ~3 s), so nothing is dropped
        // before it is read.
        let joinDeadline = WallClock.monotonicNs() + 30_000_000_000
        while pipeline.metrics.snapshot.assignedPartitions < Int(options.partitions)
                && worker.finished == nil && WallClock.monotonicNs() < joinDeadline {
            usleep(20_000)
        }
        out("pipeline joined the consumer group and owns \(pipeline.metrics.snapshot.assignedPartitions) partitions")
        var drainStart: (UInt64, Int64)? = nil

        let start = WallClock.monotonicNs()
        let total = plannedTotal
        var lastReport = start
        var lastRecords: Int64 = 0
        if options.preload == 0 {
            out("producing \(total) touchpoints (\(options.rate)/s for \(options.seconds) s, \(options.customers) customers, \(Int(options.malformedShare * 100))% malformed)")
        }
        while produced < total {
            let elapsed = Double(WallClock.monotonicNs() - start) / 1e9
            let due = min(total, Int64(elapsed * Double(options.rate)) + 1000)
            while produced < due { try produceOne() }
            producer.poll(timeoutMs: 0)
            let now = WallClock.monotonicNs()
            if now - lastReport >= 1_000_000_000 {
                let c = pipeline.metrics.snapshot
                let rate = Double(c.recordsIn - lastRecords) / (Double(now - lastReport) / 1e9)
                out(progressLine(c, rate: rate, produced: produced))
                lastReport = now
                lastRecords = c.recordsIn
            }
            if produced < due { continue }
            usleep(2000)
        }
        try producer.flush(timeoutMs: 30_000)

        // Wait until the pipeline has consumed everything that was produced.
        let waitDeadline = WallClock.monotonicNs() + 120_000_000_000
        while pipeline.metrics.snapshot.recordsIn < produced && WallClock.monotonicNs() < waitDeadline && worker.finished == nil {
            usleep(options.preload > 0 ? 5_000 : 200_000)
            if drainStart == nil, case let n = pipeline.metrics.snapshot.recordsIn, n > 0 { drainStart = (WallClock.monotonicNs(), n) }
            let now = WallClock.monotonicNs()
            if now - lastReport >= 1_000_000_000 {
                let c = pipeline.metrics.snapshot
                out(progressLine(c, rate: Double(c.recordsIn - lastRecords) / (Double(now - lastReport) / 1e9), produced: produced))
                lastReport = now
                lastRecords = c.recordsIn
            }
        }
        let drainEnd = (WallClock.monotonicNs(), pipeline.metrics.snapshot.recordsIn)
        let drainRate = drainStart.map { Double(drainEnd.1 - $0.1) / (Double(drainEnd.0 - $0.0) / 1e9) }
        let customersBeforeStop = pipeline.metrics.snapshot.customers
        let segmentsBeforeStop = pipeline.metrics.snapshot.segmentSizes
        let outcome = try worker.stop()
        if outcome != .stopped { throw KafkaError(code: -1, message: "pipeline ended with \(outcome)") }
        let seconds = Double(WallClock.monotonicNs() - start) / 1e9

        func topicTotal(_ topic: String) -> Int64 {
            (0..<options.partitions).reduce(Int64(0)) { acc, p in
                acc + ((try? producer.queryWatermarks(topic: topic, partition: p)).map { $0.high - $0.low } ?? 0)
            }
        }
        let triggerRecords = topicTotal(config.kafka.triggerTopic)
        let deadLetterRecords = topicTotal(config.kafka.deadLetterTopic)
        producer = nil  // close the client before the cluster goes away (no disconnect noise)
        var counters = pipeline.metrics.snapshot
        counters.customers = customersBeforeStop  // the stop releases every partition's state
        counters.segmentSizes = segmentsBeforeStop
        return Summary(produced: produced, expectedDeadLetters: expected, counters: counters,
                       triggerTopicRecords: triggerRecords, deadLetterTopicRecords: deadLetterRecords, seconds: seconds,
                       drainRate: options.preload > 0 ? drainRate : nil)
    }

    func progressLine(_ c: PipelineCounters, rate: Double, produced: Int64) -> String {
        let lag = max(0, produced - c.recordsIn)
        return String(format: "  %9.0f events/s | in %9lld | customers %7d | dead letters %6lld | triggers %6lld | lag %lld",
                      rate, c.recordsIn, c.customers, c.deadLetters, c.triggersProduced, lag)
    }

    public static func render(_ s: Summary) -> String {
        var lines: [String] = []
        let c = s.counters
        lines.append("summary after \(String(format: "%.1f", s.seconds)) s:")
        lines.append("  records produced      \(s.produced)")
        lines.append("  records processed     \(c.recordsIn)  (valid \(c.eventsIn), dead letters \(c.deadLetters))")
        lines.append("  customers in memory   \(c.customers)")
        lines.append("  triggers              \(c.triggersProduced) produced, \(c.triggersDelivered) acknowledged, \(s.triggerTopicRecords) on the trigger topic")
        lines.append("  dead-letter topic     \(s.deadLetterTopicRecords) records")
        lines.append("  events by type:")
        for t in EventType.allCases where c.events(t) > 0 {
            lines.append("    \(t.name.padding(toLength: 18, withPad: " ", startingAt: 0)) \(c.events(t))")
        }
        lines.append("  dead letters by reason (expected from the generator):")
        for r in DeadLetterReason.allCases where c.deadLetters(r) > 0 || (s.expectedDeadLetters[r] ?? 0) > 0 {
            lines.append("    \(r.rawValue.padding(toLength: 20, withPad: " ", startingAt: 0)) \(c.deadLetters(r)) (\(s.expectedDeadLetters[r] ?? 0))")
        }
        lines.append("  segments (members at the end; entered + exited transitions):")
        for (name, _) in ExampleSegments.standard {
            lines.append("    \(name.padding(toLength: 20, withPad: " ", startingAt: 0)) \(c.segmentSizes[name] ?? 0) (\(c.segmentTransitions[name] ?? 0))")
        }
        lines.append("  campaigns (sent / held out / capped / suppressed / cancelled / deferred):")
        for camp in ExampleCampaigns.definitions.map(\.name) {
            let n = TriggerOutcome.allCases.map { String(c.decisions(camp, $0)) }.joined(separator: " / ")
            lines.append("    \(camp.padding(toLength: 20, withPad: " ", startingAt: 0)) \(n) / \(c.campaignDeferred[camp] ?? 0)")
        }
        lines.append("  delivery failures     \(c.deliveryFailures)")
        if let r = s.drainRate {
            lines.append(String(format: "  pipeline drain rate   %.0f events/s (%lld preloaded records, one pipeline thread; first to last record processed)", r, s.produced))
        }
        return lines.joined(separator: "\n")
    }
}
