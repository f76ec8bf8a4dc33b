import ArgumentParser
import Foundation
import Logging
import TidepoolDaemon
import TidepoolEngine
import TidepoolHTTP
import TidepoolKafka
import TidepoolStore
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

@main
struct Tidepool: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tidepool",
        abstract: "Real-time customer engine: touchpoints from Kafka in, re-engagement triggers out.",
        subcommands: [Run.self, Demo.self, Validate.self, Inspect.self, Segments.self, Replay.self, Erase.self, MockBroker.self]
    )
}

/// Exit codes (sysexits.h where one fits): 0 clean stop, 1 runtime failure (systemd restarts),
/// 78 configuration error (systemd's RestartPreventExitStatus keeps it from looping).
enum ExitStatus {
    static let failure: Int32 = 1
    static let config: Int32 = 78
}

func bootstrapLogging(level: String) {
    let lvl = Logger.Level(rawValue: level) ?? .info
    LoggingSystem.bootstrap { label in JournalLogHandler(label: label, level: lvl) }
}

/// Signal sources live as long as the process. Keeping them in a local is not enough: an
/// optimized build may release a local after its last use, the source is then cancelled, and
/// SIGTERM would be swallowed (the signal is ignored so that only the source sees it).
nonisolated(unsafe) private var signalSources: [DispatchSourceSignal] = []

/// Runs `body` when SIGTERM or SIGINT arrives. The handlers stay installed for the process.
func onTerminationSignal(_ body: @escaping @Sendable () -> Void) {
    for sig in [SIGTERM, SIGINT] { installSignalSource(sig, body) }
}

/// Runs `body` on SIGHUP (systemd's ExecReload sends it).
func onReloadSignal(_ body: @escaping @Sendable () -> Void) {
    installSignalSource(SIGHUP, body)
}

private func installSignalSource(_ sig: Int32, _ body: @escaping @Sendable () -> Void) {
    signal(sig, SIG_IGN)
    let src = DispatchSource.makeSignalSource(signal: sig, queue: .global())
    src.setEventHandler(handler: body)
    src.resume()
    signalSources.append(src)
}

func loadConfig(_ path: String) throws -> TidepoolConfig {
    do {
        return try ConfigLoader.load(path: path)
    } catch let e as ConfigError {
        FileHandle.standardError.write("tidepool: configuration error: \(e)\n".data(using: .utf8)!)
        throw ExitCode(ExitStatus.config)
    }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the daemon.")

    @Option(name: .long, help: "Configuration file (YAML).")
    var config: String

    func run() throws {
        let cfg = try loadConfig(config)
        bootstrapLogging(level: cfg.logLevel)
        let logger = Logger(label: "tidepool")
        let worker = PipelineThread(try Pipeline(config: cfg, logger: logger))
        onTerminationSignal { [worker] in worker.pipeline.requestStop() }
        onReloadSignal { [worker, config] in Self.reload(worker, path: config, logger: logger) }
        var server: StatusServer? = nil
        if !cfg.http.listen.isEmpty {
            let server_ = try StatusServer(worker: worker, listen: cfg.http.listen, logger: Logger(label: "tidepool.http"))
            server = server_
            Task {
                let server = server_
                do {
                    try await server.run { port in logger.info("http listening", metadata: ["address": "\(cfg.http.listen)", "port": "\(port)"]) }
                } catch {
                    // The endpoint is for operators; the pipeline keeps running without it.
                    logger.error("http endpoint failed", metadata: ["listen": "\(cfg.http.listen)", "error": "\(error)"])
                }
            }
        }
        defer {
            if let server {
                let done = DispatchSemaphore(value: 0)
                Task {
                    await server.stop()
                    done.signal()
                }
                _ = done.wait(timeout: .now() + 5)
            }
        }
        // The processing runs here, on the main thread (PipelineThread.runOnCurrentThread says
        // why); signals and HTTP are served by other threads meanwhile.
        worker.runOnCurrentThread()
        let outcome: Pipeline.Outcome
        do {
            outcome = try worker.wait()
        } catch {
            logger.critical("cannot start", metadata: ["error": "\(error)"])
            throw ExitCode(error is KafkaError && (error as! KafkaError).code == -1 ? ExitStatus.config : ExitStatus.failure)
        }
        if outcome != .stopped { throw ExitCode(ExitStatus.failure) }
    }
}

extension Run {
    /// SIGHUP: re-read the file; a file that does not load is rejected with its file:line message
    /// and the running configuration stays. Segments, campaigns and the contact policy are
    /// swapped between two batches; the blast radius of every changed segment is logged.
    static func reload(_ worker: PipelineThread, path: String, logger: Logger) {
        let new: TidepoolConfig
        do {
            new = try ConfigLoader.load(path: path)
        } catch {
            logger.error("reload rejected: configuration error; the running configuration stays", metadata: ["error": "\(error)"])
            worker.pipeline.noteReloadRejected()
            return
        }
        worker.pipeline.reload(new) { result in
            switch result {
            case .failure(let error):
                logger.error("reload rejected; the running configuration stays", metadata: ["error": "\(error)"])
            case .success(let outcome):
                for s in outcome.report.segments where s.status != .unchanged || s.entering + s.exiting > 0 {
                    logger.notice("reload: segment \(s.status.rawValue)", metadata: [
                        "segment": "\(s.name)", "entering": "\(s.entering)", "exiting": "\(s.exiting)",
                        "transitions": "\(s.emitted ? "published" : "applied silently")"])
                }
                logger.notice("reload applied", metadata: [
                    "campaigns_added": "\(outcome.report.campaignsAdded.joined(separator: ","))",
                    "campaigns_removed": "\(outcome.report.campaignsRemoved.joined(separator: ","))",
                    "campaigns_changed": "\(outcome.report.campaignsChanged.joined(separator: ","))",
                    "needs_restart": "\(outcome.needsRestart.joined(separator: ","))"])
            }
        }
    }
}


struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check a configuration file without running it.")

    @Option(name: .long, help: "Configuration file (YAML).")
    var config: String

    func run() throws {
        _ = try loadConfig(config)
        print("\(config): OK")
    }
}

struct Erase: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Publish an erase request (GDPR/CPRA/PIPL) for a customer to the input topic.",
        discussion: "The daemon removes the customer from memory, from the checkpoint and from every segment, keeps only a keyed hash so that a replay of older events cannot bring the customer back, and writes a tombstone on the customer's key in the trigger topic.")

    @Option(name: .long, help: "Configuration file (YAML): brokers and the input topic.")
    var config: String
    @Option(name: .long, help: "The customer_id to erase.")
    var customer: String

    func run() throws {
        let cfg = try loadConfig(config)
        guard !customer.isEmpty else { throw ValidationError("--customer must not be empty") }
        var failure: KafkaError? = nil
        let producer = try KafkaProducer(properties: cfg.producerProperties) { r in if let e = r.error { failure = e } }
        let eventID = "erase-" + UUID().uuidString.lowercased()
        var body: [UInt8] = []
        TriggerEncoder().str(customer, &body)
        let json = #"{"event_id":"\#(eventID)","customer_id":"#.utf8 + body
            + #","type":"erase","channel":"privacy","timestamp":\#(WallClock.nowMs())}"#.utf8
        try producer.produce(topic: cfg.kafka.inputTopics[0], key: Array(customer.utf8), value: Array(json))
        try producer.flush(timeoutMs: 30_000)
        if let failure { throw failure }
        print("erase request \(eventID) published to \(cfg.kafka.inputTopics[0])")
    }
}

struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the real pipeline against an in-process mock Kafka cluster fed by synthetic touchpoints.")

    @Option(help: "Distinct customers.") var customers = 50_000
    @Option(help: "History: records on the topic before the pipeline starts, event times spread over --history-days up to now; replayed in event time at the pipeline's maximum rate (keep it under ~20k per partition: the mock keeps ~5 MiB per partition).") var history = 400_000
    @Option(help: "Days of history.") var historyDays = 60
    @Option(help: "Live phase after the replay: touchpoints per second, stamped with the wall clock.") var rate = 100_000
    @Option(help: "Live phase: seconds of production (0: history only).") var seconds = 10
    @Option(help: "Partitions per topic (the mock keeps ~5 MiB per partition).") var partitions: Int32 = 32
    @Option(help: "Share of malformed records (0...1).") var malformed = 0.01
    @Option(help: "Share of records delivered twice, as a producer retry does (0...1); each is applied once.") var redelivered = 0.005
    @Option(help: "Random seed.") var seed: UInt64 = 42
    @Option(help: "Log level for the pipeline's own log lines.") var logLevel = "warning"

    func run() throws {
        bootstrapLogging(level: logLevel)
        var o = TidepoolDaemon.Demo.Options()
        o.customers = customers
        o.rate = rate
        o.seconds = seconds
        o.partitions = partitions
        o.malformedShare = malformed
        o.redeliveryShare = redelivered
        o.seed = seed
        o.history = history
        o.historyDays = historyDays
        let demo = TidepoolDaemon.Demo(options: o, logger: Logger(label: "tidepool.demo"))
        let summary = try demo.run { line in print(line); fflush(stdout) }
        print(TidepoolDaemon.Demo.render(summary))
        let c = summary.counters
        guard c.recordsIn == summary.produced, c.deliveryFailures == 0,
              summary.triggerTopicRecords == c.triggersProduced,
              summary.deadLetterTopicRecords == c.deadLetters else {
            print("demo: MISMATCH between what was produced and what was processed")
            throw ExitCode(ExitStatus.failure)
        }
    }
}

struct MockBroker: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mock-broker",
        abstract: "Host librdkafka's mock Kafka cluster in this process and print its bootstrap address.",
        discussion: "Prints `bootstrap.servers=HOST:PORT` on the first line of stdout, then serves until SIGTERM or SIGINT.")

    @Option(name: .customLong("topic"), help: "Topic to create (repeatable); NAME:N gives it N partitions instead of --partitions (Kafka topic names cannot contain ':').")
    var topics: [String] = ["touchpoints", "tidepool.triggers", "tidepool.dead-letters"]
    @Option(help: "Partitions per topic.") var partitions: Int32 = 4
    @Option(help: "Number of mock brokers.") var brokers: Int32 = 1

    func run() throws {
        let cluster = try MockCluster(brokers: brokers)
        for t in topics {
            let parts = t.split(separator: ":", maxSplits: 1)
            guard let name = parts.first, !name.isEmpty else { throw ValidationError("empty topic name in --topic \(t)") }
            var n = partitions
            if parts.count == 2 {
                guard let v = Int32(parts[1]), v > 0 else { throw ValidationError("--topic \(t): partitions after ':' must be a positive number") }
                n = v
            }
            try cluster.createTopic(String(name), partitions: n)
        }
        print("bootstrap.servers=\(cluster.bootstrapServers)")
        fflush(stdout)
        let stop = DispatchSemaphore(value: 0)
        onTerminationSignal { stop.signal() }
        stop.wait()
        withExtendedLifetime(cluster) {}
    }
}


/// GET from the running daemon's HTTP endpoint; the body, or an error naming the address.
func httpGet(_ url: String) throws -> (Int, String) {
    guard let u = URL(string: url) else { throw ValidationError("not a URL: \(url)") }
    let done = DispatchSemaphore(value: 0)
    nonisolated(unsafe) var result: (Int, String)? = nil
    nonisolated(unsafe) var failure: Error? = nil
    URLSession.shared.dataTask(with: u) { data, response, error in
        if let error { failure = error } else {
            result = ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data ?? Data(), as: UTF8.self))
        }
        done.signal()
    }.resume()
    done.wait()
    if let failure { throw RuntimeError("cannot reach \(url): \(failure.localizedDescription) (is the daemon running with http.listen set?)") }
    return result!
}

struct RuntimeError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// The daemon's base URL from a configuration's http.listen.
func baseURL(_ cfg: TidepoolConfig) throws -> String {
    guard !cfg.http.listen.isEmpty else { throw ValidationError("http.listen is empty in the configuration: use --offline") }
    return "http://\(cfg.http.listen)"
}

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show one customer: aggregates, segment memberships with explanations, campaign state.",
        discussion: "Asks the running daemon (GET /customers/ID on http.listen), or with --offline reads the checkpoint file (state.path) read-only, which works while the daemon runs or when it is stopped.")

    @Option(name: .long, help: "Configuration file (YAML).")
    var config: String
    @Flag(name: .long, help: "Read the checkpoint file instead of asking the daemon.")
    var offline = false
    @Argument(help: "The customer_id.")
    var customer: String

    func run() throws {
        let cfg = try loadConfig(config)
        if !offline {
            let encoded = customer.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/"))) ?? customer
            let (status, body) = try httpGet(try baseURL(cfg) + "/customers/" + encoded)
            print(body, terminator: "")
            if status != 200 { throw ExitCode(ExitStatus.failure) }
            return
        }
        guard !cfg.state.path.isEmpty else { throw ValidationError("state.path is empty: there is no checkpoint to read") }
        let reader = try CheckpointReader(path: cfg.state.path)
        guard let (p, blob) = try reader.find(customer) else {
            FileHandle.standardError.write("tidepool: \(customer) is not in \(cfg.state.path)\n".data(using: .utf8)!)
            throw ExitCode(ExitStatus.failure)
        }
        let engine = Engine(config: try cfg.engineConfig(), offsets: SystemTimeZones())
        try engine.restore(p.partition, maxEventTimeMs: p.maxEventTimeMs, streamTimeMs: p.streamTimeMs, stats: PartitionStats(),
                           customers: [(customer, blob)])
        guard let view = engine.view(customer) else { throw ExitCode(ExitStatus.failure) }
        print(String(decoding: InspectionJSON.encode(InspectionJSON.customer(view)), as: UTF8.self), terminator: "")
    }
}

struct Segments: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Members and transitions per segment, from the running daemon (GET /segments).")

    @Option(name: .long, help: "Configuration file (YAML).")
    var config: String

    func run() throws {
        let cfg = try loadConfig(config)
        let (status, body) = try httpGet(try baseURL(cfg) + "/segments")
        guard status == 200, let doc = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
              let segs = doc["segments"] as? [[String: Any]] else {
            print(body, terminator: "")
            throw ExitCode(ExitStatus.failure)
        }
        print("rules version \(doc["rules_version"] ?? "?")")
        print("segment".padding(toLength: 28, withPad: " ", startingAt: 0) + "members".leftPad(12) + "transitions".leftPad(14))
        for s in segs {
            print("\(s["segment"] ?? "")".padding(toLength: 28, withPad: " ", startingAt: 0)
                  + "\(s["members"] ?? 0)".leftPad(12) + "\(s["transitions"] ?? 0)".leftPad(14))
        }
    }
}

extension String {
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}

struct Replay: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Backtest a draft configuration over historical events, offline.",
        discussion: "Reads a JSON-lines file of touchpoints, or a Kafka topic from its beginning to its current end (with a throwaway consumer group that commits nothing), through a fresh engine with the draft's segments and campaigns. Reports daily entries and exits per segment and, per campaign, the decisions by outcome after caps, consent and holdout. Produces nothing and never touches the live state.")

    @Option(name: .long, help: "Draft configuration file (YAML); its kafka section is used to read --from TOPIC.")
    var config: String
    @Option(name: .long, help: "A JSON-lines file (one touchpoint per line), or a topic name.")
    var from: String
    @Option(name: .long, help: "After the last event, let stream time run on this long (e.g. 30d) so that dormancy and delays fire.")
    var advance: String = "0s"

    func run() throws {
        let cfg = try loadConfig(config)
        guard let extra = DurationText.parseMs(advance) else { throw ValidationError("--advance must be a duration such as 30d") }
        let backtest = try Backtest(config: cfg)
        let now = WallClock.nowMs()
        if FileManager.default.fileExists(atPath: from) {
            try backtest.feedFile(from, nowMs: now)
        } else {
            try backtest.feedTopic(from, nowMs: now)
        }
        let partial = backtest.finish()
        if partial.events > 0 { backtest.advance(to: partial.lastEventMs - cfg.latenessMs + extra) }
        print(Backtest.render(backtest.finish()))
    }
}
