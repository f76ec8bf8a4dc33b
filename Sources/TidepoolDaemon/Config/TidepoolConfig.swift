import Foundation
import TidepoolEngine

/// Everything `tidepool run` reads from its configuration file. Every setting has a default; the
/// file only names what differs. The YAML layout and each key are documented in README.md and in
/// deploy/tidepool.example.yaml.
public struct TidepoolConfig: Equatable, Sendable {
    public struct Kafka: Equatable, Sendable {
        public var bootstrapServers = "127.0.0.1:9092"
        public var groupID = "tidepool"
        public var inputTopics = ["touchpoints"]
        public var triggerTopic = "tidepool.triggers"
        public var deadLetterTopic = "tidepool.dead-letters"
        /// Campaign decisions that were not sent (held out, capped, suppressed, cancelled), in the
        /// trigger schema with their outcome; empty: counted in metrics only.
        public var suppressedTopic = ""
        /// librdkafka properties for both clients (security.protocol, sasl.*, ssl.*, ...), untouched.
        public var properties: [String: String] = [:]
        /// librdkafka properties for the consumer only; they win over `properties`.
        public var consumer: [String: String] = [:]
        /// librdkafka properties for the producer only; they win over `properties`.
        public var producer: [String: String] = [:]
    }

    public struct Processing: Equatable, Sendable {
        /// Most records taken from librdkafka per poll.
        public var batchSize = 10_000
        /// How long one poll waits for records when there are none. A poll takes what is already
        /// fetched without waiting; only an empty poll waits, and only until the first record
        /// (`KafkaConsumer.poll`), so this bounds how often an idle loop turns (idle-partition
        /// timers, checkpoints, jobs from other threads), not the latency of events.
        public var pollTimeoutMs: Int64 = 10
        /// How many threads apply events (0, `auto`: one per available core, at most 16). The
        /// partitions held are split over that many engines; one thread still consumes, decodes
        /// and produces (`Pipeline`).
        public var threads = 0

        /// Cores this process may run on.
        public static var availableCores: Int { min(max(ProcessInfo.processInfo.activeProcessorCount, 1), 16) }
    }

    public struct Shutdown: Equatable, Sendable {
        /// Longest a graceful stop may take (flush, commit, leave the group). Keep it below
        /// systemd's TimeoutStopSec.
        public var deadlineMs: Int64 = 20_000
    }

    public struct State: Equatable, Sendable {
        /// SQLite checkpoint file; empty: no checkpoints (state lives only in memory).
        public var path = ""
        /// How often dirty customers are checkpointed (and offsets committed after them).
        public var checkpointIntervalMs: Int64 = 5_000
        /// Also checkpoint as soon as this many customers have changed (0: by interval only).
        public var checkpointDirtyCustomers = 100_000
        /// The longest a checkpoint may hold the processing thread in one loop turn: the changed
        /// customers are copied a slice per turn, and a customer that is about to change first.
        public var checkpointSliceMs: Int64 = 5
        /// A checkpoint file that fails its integrity check or has another format: `refuse` to
        /// start (exit 1), or `rebuild`: move it aside and replay the input from its earliest
        /// retained offset.
        public var onCorrupt = "refuse"
    }

    public var kafka = Kafka()
    public var state = State()
    public var decoding = DecoderLimits()
    public var processing = Processing()
    public var firstPurchase = FirstPurchaseRule()
    public var aggregates = AggregateConfig()
    public var models = ModelConfig()
    /// Secret for the keyed hashes of erased customer ids (`privacy.erasure_key`).
    public var erasureKey = ""
    /// Segment rules in file order, with where each rule's text starts.
    public var segments: [SegmentDefinition] = []
    /// Re-engagement campaigns in file order, and the contact policy they share.
    public var campaigns: [CampaignDefinition] = []
    public var contactPolicy = ContactPolicy()
    /// Allowed lateness: stream time = newest event time - this.
    public var latenessMs: Int64 = 5 * 60_000
    /// A caught-up partition's stream time follows the wall clock (minus the lateness).
    public var idleAdvance = true
    /// Customers idle this long (stream time) leave memory.
    public var customerRetentionMs: Int64 = 400 * AggregateConfig.dayMs
    public var shutdown = Shutdown()
    /// What a reload does with the transitions it causes (`reload.transitions`, `reload.cap`).
    public var reloadPolicy = ReloadPolicy.cap(1000)
    public var http = HTTP()

    public struct HTTP: Equatable, Sendable {
        /// host:port of the operations endpoint (/metrics, /healthz, /readyz, /customers, /segments);
        /// empty: no HTTP.
        public var listen = "127.0.0.1:9464"
    }
    public var logLevel = "info"

    public init() {}

    /// The engine configuration. Segments were checked when the file was loaded. The daemon only
    /// counts transitions (metrics), so by default they are counted and not emitted; a backtest
    /// takes them without their explanation. The explanation of a customer is rendered on
    /// demand (`/customers/{id}`, `tidepool inspect`).
    public func engineConfig(transitionOutput: TransitionOutput = .counted) throws -> EngineConfig {
        let channels = ChannelTable(aggregates)
        let set = try SegmentSet(allSegments, aggregates: aggregates, channels: channels, models: models)
        let campaignSet = try CampaignSet(campaigns, policy: contactPolicy, segments: set, aggregates: aggregates, channels: channels)
        return EngineConfig(aggregates: aggregates, segments: set, latenessMs: latenessMs,
                            customerRetentionMs: customerRetentionMs, firstPurchase: firstPurchase, erasureKey: erasureKey,
                            campaigns: campaignSet, transitionOutput: transitionOutput)
    }

    /// The configured segments plus `lifecycle_<stage>` for each lifecycle a campaign starts on
    /// (unless the file defines a segment of that name).
    public var allSegments: [SegmentDefinition] {
        var out = segments
        for c in campaigns {
            guard case .lifecycle(let stage) = c.start, let name = c.startSegment, !out.contains(where: { $0.name == name }) else { continue }
            out.append(SegmentDefinition(name: name, rule: "lifecycle() == \(stage)", origin: c.origin))
        }
        return out
    }

    /// Consumer properties as handed to librdkafka. With checkpoints, offsets are committed only
    /// after the checkpoint that covers them, so auto-commit is off.
    public var consumerProperties: [String: String] {
        var p = kafka.properties
        p["bootstrap.servers"] = p["bootstrap.servers"] ?? kafka.bootstrapServers
        p["group.id"] = kafka.groupID
        for (k, v) in kafka.consumer { p[k] = v }
        if !state.path.isEmpty { p["enable.auto.commit"] = "false" }
        return p
    }

    /// Names the rules a checkpoint was computed with; recorded in the checkpoint file.
    public var ruleVersion: String {
        StableHash.hex128(["\(aggregates)", "\(models)", allSegments.map { "\($0.name)=\($0.rule)" }.joined(separator: "\n")])
    }

    /// Producer properties as handed to librdkafka.
    public var producerProperties: [String: String] {
        var p = kafka.properties
        p["bootstrap.servers"] = p["bootstrap.servers"] ?? kafka.bootstrapServers
        for (k, v) in kafka.producer { p[k] = v }
        return p
    }
}
