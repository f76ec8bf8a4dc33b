import Foundation
import Logging
import TidepoolEngine
import TidepoolKafka

/// `tidepool demo`: librdkafka's mock cluster in-process, a synthetic producer, and the real
/// daemon pipeline (the same `Pipeline` that `tidepool run` uses) between them.
///
/// It runs the way a brand's deployment does. First the history: records whose event times spread
/// over the last `historyDays` days are on the topic before the pipeline starts, and the pipeline
/// replays them in event time, so windows, dormancy and delayed campaigns play out at their
/// instants. Then live traffic, stamped with the wall clock, while the caught-up partitions'
/// stream time follows the wall clock too.
public struct Demo {
    public struct Options {
        public var customers = 50_000
        /// Records on the topic before the pipeline starts, event times spread over
        /// `historyDays` days up to now. The mock cluster keeps ~5 MiB per partition, so keep this
        /// under ~20k per partition.
        public var history = 400_000
        public var historyDays = 60
        /// Live phase: this many records per second for `seconds`, stamped with the wall clock.
        public var rate = 100_000
        public var seconds = 10
        public var partitions: Int32 = 32
        public var malformedShare = 0.01
        /// Share of records that deliver the previous valid record again (a producer retry).
        public var redeliveryShare = 0.005
        public var seed: UInt64 = 42
        public init() {}
    }

    public struct Summary {
        public var produced: Int64
        public var history: Int64
        public var expectedDeadLetters: [DeadLetterReason: Int64]
        /// Records the generator delivered twice (each must count as one duplicate).
        public var redelivered: Int64
        public var counters: PipelineCounters
        public var triggerTopicRecords: Int64
        public var deadLetterTopicRecords: Int64
        public var seconds: Double
        /// Records/s from the first history record processed to the last (the pipeline's maximum
        /// rate: the history was all there); nil without a history.
        public var drainRate: Double?
        /// Campaigns in the order the summary lists them.
        public var campaigns: [String]
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
        let input = config.kafka.inputTopics[0]
        for t in [input, config.kafka.triggerTopic, config.kafka.deadLetterTopic] {
            try cluster.createTopic(t, partitions: options.partitions)
        }
        out("mock cluster at \(cluster.bootstrapServers); topics \(input), \(config.kafka.triggerTopic), \(config.kafka.deadLetterTopic) with \(options.partitions) partitions")

        let pipeline = try Pipeline(config: config, logger: logger)
        let worker = PipelineThread(pipeline)
        var producer: KafkaProducer! = try KafkaProducer(properties: ["bootstrap.servers": cluster.bootstrapServers, "linger.ms": "20"]) { _ in }
        var inputTopic: KafkaTopic! = try producer.topic(input)
        var gen = TouchpointGenerator(customers: options.customers, malformedShare: options.malformedShare, seed: options.seed)
        gen.redeliveryShare = options.redeliveryShare
        var expected: [DeadLetterReason: Int64] = [:]
        var redelivered: Int64 = 0
        var produced: Int64 = 0
        func produceOne(at eventTime: Int64) throws {
            let r = gen.next(nowMs: eventTime)
            try producer.produce(to: inputTopic, key: r.key, value: r.value)
            if let reason = r.expectedRejection { expected[reason, default: 0] += 1 }
            if r.isRedelivery { redelivered += 1 }
            produced += 1
        }

        // 1. History: on the topic before the pipeline starts; event time walks up to now.
        let history = Int64(max(0, options.history))
        if history > 0 {
            let historyMs = Int64(options.historyDays) * 86_400_000
            let historyStart = WallClock.nowMs() - historyMs
            out("history: \(history) touchpoints over the last \(options.historyDays) days, \(options.customers) customers, \(Int(options.malformedShare * 100))% malformed")
            while produced < history {
                try produceOne(at: historyStart + Int64(Double(produced) / Double(history) * Double(historyMs)))
            }
            try producer.flush(timeoutMs: 60_000)
        }
        worker.start()
        defer { if worker.finished == nil { _ = try? worker.stop() } }

        // The mock delays the first group join by ~3 s; live traffic starts once the pipeline owns
        // its partitions (the mock keeps only ~5 MiB per partition, so nothing may pile up unread).
        let joinDeadline = WallClock.monotonicNs() + 30_000_000_000
        while pipeline.metrics.snapshot.assignedPartitions < Int(options.partitions)
                && worker.finished == nil && WallClock.monotonicNs() < joinDeadline {
            usleep(20_000)
        }
        out("pipeline joined the consumer group and owns \(pipeline.metrics.snapshot.assignedPartitions) partitions")

        let start = WallClock.monotonicNs()
        var lastReport = start
        var lastRecords: Int64 = 0
        func report() {
            let now = WallClock.monotonicNs()
            guard now - lastReport >= 1_000_000_000 else { return }
            let c = pipeline.metrics.snapshot
            out(progressLine(c, rate: Double(c.recordsIn - lastRecords) / (Double(now - lastReport) / 1e9), produced: produced))
            lastReport = now
            lastRecords = c.recordsIn
        }
        /// Waits until the pipeline has processed `n` records; false on timeout or a stopped pipeline.
        func waitProcessed(_ n: Int64, pollUs: UInt32, onFirst: (Int64) -> Void = { _ in }) -> Bool {
            let deadline = WallClock.monotonicNs() + 120_000_000_000
            var first = true
            while WallClock.monotonicNs() < deadline && worker.finished == nil {
                let seen = pipeline.metrics.snapshot.recordsIn
                if first && seen > 0 { first = false; onFirst(seen) }
                if seen >= n { return true }
                usleep(pollUs)
                report()
            }
            return false
        }

        // 2. The replay of the history, at the pipeline's maximum rate.
        var drainRate: Double? = nil
        if history > 0 {
            var firstAt: (UInt64, Int64)? = nil
            guard waitProcessed(history, pollUs: 5_000, onFirst: { firstAt = (WallClock.monotonicNs(), $0) }) else {
                throw KafkaError(code: -1, message: "the pipeline did not replay the history (\(pipeline.metrics.snapshot.recordsIn) of \(history) records)")
            }
            let end = (WallClock.monotonicNs(), pipeline.metrics.snapshot.recordsIn)
            if let f = firstAt, end.0 > f.0 { drainRate = Double(end.1 - f.1) / (Double(end.0 - f.0) / 1e9) }
            out(String(format: "history replayed: %lld records at %.0f events/s", end.1, drainRate ?? 0))
        }

        // 3. Live traffic, stamped with the wall clock.
        let live = Int64(max(0, options.rate)) * Int64(max(0, options.seconds))
        if live > 0 {
            out("live: \(live) touchpoints (\(options.rate)/s for \(options.seconds) s)")
            let liveStart = WallClock.monotonicNs()
            let total = history + live
            while produced < total {
                let elapsed = Double(WallClock.monotonicNs() - liveStart) / 1e9
                let due = min(total, history + Int64(elapsed * Double(options.rate)) + 1000)
                while produced < due { try produceOne(at: WallClock.nowMs()) }
                producer.poll(timeoutMs: 0)
                report()
                if produced < due { continue }
                usleep(2000)
            }
            try producer.flush(timeoutMs: 30_000)
            guard waitProcessed(total, pollUs: 100_000) else {
                throw KafkaError(code: -1, message: "the pipeline did not consume the live traffic (\(pipeline.metrics.snapshot.recordsIn) of \(total) records)")
            }
        }

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
        inputTopic = nil  // (the handle keeps its producer)
        producer = nil  // close the client before the cluster goes away (no disconnect noise)
        var counters = pipeline.metrics.snapshot
        counters.customers = customersBeforeStop  // the stop releases every partition's state
        counters.segmentSizes = segmentsBeforeStop
        let campaigns = ExampleCampaigns.definitions.map(\.name)
            + (config.firstPurchase.enabled ? [config.firstPurchase.campaign] : [])
        return Summary(produced: produced, history: history, expectedDeadLetters: expected, redelivered: redelivered, counters: counters,
                       triggerTopicRecords: triggerRecords, deadLetterTopicRecords: deadLetterRecords, seconds: seconds,
                       drainRate: drainRate, campaigns: campaigns)
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
        let e = c.partitionTotals
        lines.append("  engine                \(e.applied) applied, \(e.duplicates) duplicates (\(s.redelivered) redelivered by the generator), \(e.late) late, \(e.timersFired) timers fired, \(e.evicted) evicted")
        lines.append("  campaigns (sent / held out / capped / suppressed / cancelled / deferred):")
        for camp in s.campaigns {
            let n = TriggerOutcome.allCases.map { String(c.decisions(camp, $0)) }.joined(separator: " / ")
            lines.append("    \(camp.padding(toLength: 24, withPad: " ", startingAt: 0)) \(n) / \(c.campaignDeferred[camp] ?? 0)")
        }
        lines.append("  delivery failures     \(c.deliveryFailures)")
        if let r = s.drainRate {
            lines.append(String(format: "  pipeline drain rate   %.0f events/s (replay of %lld history records, %d processing threads; first to last record processed)",
                                r, s.history, c.threadEvents.count - 1))
        }
        return lines.joined(separator: "\n")
    }
}
