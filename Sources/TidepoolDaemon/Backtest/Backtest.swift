import Foundation
import TidepoolEngine
import TidepoolKafka

/// `tidepool replay`: runs a draft configuration over historical events, offline, and reports
/// what it would have done: entries and exits per segment per day, and per campaign how many
/// decisions of each outcome (sent after caps, capped, held out, ...). It uses a fresh engine of
/// its own and produces nothing: the live state, topics and consumer group are never touched.
public final class Backtest {
    public struct Report: Sendable {
        public var events: Int64 = 0
        public var rejected: Int64 = 0
        public var customers = 0
        public var firstEventMs: Int64 = .max
        public var lastEventMs: Int64 = .min
        /// "YYYY-MM-DD" (UTC) -> segment -> (entered, exited).
        public var days: [String: [String: (entered: Int, exited: Int)]] = [:]
        /// campaign -> outcome -> decisions.
        public var campaigns: [String: [String: Int]] = [:]
    }

    let engine: Engine
    let decoder: TouchpointDecoder
    let config: TidepoolConfig
    public private(set) var report = Report()

    public init(config: TidepoolConfig) throws {
        self.config = config
        self.engine = Engine(config: try config.engineConfig(transitionOutput: .plain), offsets: SystemTimeZones())
        self.decoder = TouchpointDecoder(limits: config.decoding)
    }

    /// One input record. `key` nil: not checked (JSON-lines files carry no key).
    public func feed(_ value: UnsafeRawBufferPointer, key: UnsafeRawBufferPointer?, partition: PartitionID, nowMs: Int64) {
        do throws(DecodeFailure) {
            let e = try decoder.decode(value, key: key.map { .bytes($0) } ?? .skip, nowMs: nowMs)
            report.events += 1
            report.firstEventMs = min(report.firstEventMs, e.timestampMs)
            report.lastEventMs = max(report.lastEventMs, e.timestampMs)
            engine.apply(e, partition: partition) { record($0) }
        } catch {
            report.rejected += 1
        }
    }

    /// Moves every partition's stream time to `ms`, so timers due by then (dormancy, delays) fire.
    public func advance(to ms: Int64) {
        for p in engine.partitions.keys { engine.advance(p, to: ms) { record($0) } }
    }

    public func finish() -> Report {
        report.customers = engine.customerCount
        return report
    }

    private func record(_ o: EngineOutput) {
        switch o {
        case .transition(let t):
            let day = String(Timestamp.formatRFC3339(t.atMs).prefix(10))
            var v = report.days[day, default: [:]][t.segment, default: (0, 0)]
            if t.entered { v.entered += 1 } else { v.exited += 1 }
            report.days[day, default: [:]][t.segment] = v
        case .trigger(let t):
            report.campaigns[t.campaign, default: [:]][t.outcome.rawValue, default: 0] += 1
        case .deferred(let campaign, _, _):
            report.campaigns[campaign, default: [:]]["deferred", default: 0] += 1
        case .erased:
            break
        }
    }

    /// Reads a JSON-lines file (one touchpoint per line) into the backtest.
    public func feedFile(_ path: String, nowMs: Int64) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw BacktestError(message: "cannot read \(path)")
        }
        let p = PartitionID(topic: "file", partition: 0)
        data.withUnsafeBytes { (all: UnsafeRawBufferPointer) in
            var start = 0
            while start < all.count {
                var end = start
                while end < all.count && all[end] != 0x0A { end += 1 }
                if end > start { feed(UnsafeRawBufferPointer(rebasing: all[start..<end]), key: nil, partition: p, nowMs: nowMs) }
                start = end + 1
            }
        }
    }

    /// Reads a topic from its beginning to its current end with a throwaway consumer group that
    /// commits nothing.
    public func feedTopic(_ topic: String, nowMs: Int64, timeoutMs: Int64 = 120_000) throws {
        var props = config.consumerProperties
        props["group.id"] = "tidepool-replay-\(UUID().uuidString.lowercased())"
        props["enable.auto.commit"] = "false"
        props["auto.offset.reset"] = "earliest"
        let listener = EndTracker()
        let consumer = try KafkaConsumer(properties: props, listener: listener)
        try consumer.subscribe([topic])
        let deadline = WallClock.monotonicNs() + UInt64(timeoutMs) * 1_000_000
        while !(listener.assigned > 0 && listener.atEnd.count == listener.assigned) {
            guard WallClock.monotonicNs() < deadline else { throw BacktestError(message: "\(topic): did not reach the end within \(timeoutMs) ms") }
            consumer.poll(timeoutMs: 200) { msg in
                if msg.isPartitionEOF {
                    listener.atEnd.insert(msg.partition)
                } else if msg.error == nil {
                    listener.atEnd.remove(msg.partition)
                    feed(msg.value, key: msg.key, partition: PartitionID(topic: topic, partition: msg.partition), nowMs: nowMs)
                }
            }
        }
        consumer.close()
    }

    final class EndTracker: RebalanceListener {
        var assigned = 0
        var atEnd = Set<Int32>()
        func partitionsAssigned(_ consumer: KafkaConsumer, _ partitions: [TopicPartitionOffset]) -> [TopicPartitionOffset]? {
            assigned += partitions.count
            return nil
        }
        func partitionsRevoked(_ consumer: KafkaConsumer, _ partitions: [TopicPartitionOffset]) { assigned -= partitions.count }
        func partitionsLost(_ consumer: KafkaConsumer, _ partitions: [TopicPartitionOffset]) { assigned -= partitions.count }
    }

    public struct BacktestError: Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    /// The report as text: one line per day with each segment's +entered/-exited, then campaigns.
    public static func render(_ r: Report) -> String {
        var lines: [String] = []
        let span = r.events == 0 ? "no events" :
            "\(Timestamp.formatRFC3339(r.firstEventMs)) .. \(Timestamp.formatRFC3339(r.lastEventMs))"
        lines.append("replayed \(r.events) events (\(r.rejected) rejected), \(r.customers) customers, \(span)")
        lines.append("segment entries/exits per day (UTC):")
        for day in r.days.keys.sorted() {
            let cells = r.days[day]!.sorted { $0.key < $1.key }.map { "\($0.key) +\($0.value.entered)/-\($0.value.exited)" }
            lines.append("  \(day)  " + cells.joined(separator: "  "))
        }
        lines.append("campaign decisions (sent is after caps, consent and holdout):")
        for (c, outcomes) in r.campaigns.sorted(by: { $0.key < $1.key }) {
            let order = TriggerOutcome.allCases.map(\.rawValue) + ["deferred"]
            lines.append("  \(c): " + order.map { "\($0) \(outcomes[$0] ?? 0)" }.joined(separator: ", "))
        }
        return lines.joined(separator: "\n")
    }
}
