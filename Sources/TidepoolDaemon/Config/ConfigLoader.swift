import Foundation
import TidepoolEngine
import Yams

/// A configuration problem, located in its file: `FILE:LINE:COLUMN: message`.
public struct ConfigError: Error, CustomStringConvertible, Equatable {
    public var file: String
    public var line: Int
    public var column: Int
    public var message: String

    public var description: String { "\(file):\(line):\(column): \(message)" }
}

/// Reads the YAML configuration into `TidepoolConfig`, rejecting unknown keys and wrong types
/// with the file, line and column of the offending node (Yams keeps source marks per node).
public struct ConfigLoader {
    public let file: String

    public init(file: String) { self.file = file }

    public static func load(path: String) throws -> TidepoolConfig {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigError(file: path, line: 0, column: 0, message: "cannot read configuration: \(error.localizedDescription)")
        }
        return try ConfigLoader(file: path).parse(text)
    }

    public func parse(_ text: String) throws -> TidepoolConfig {
        var config = TidepoolConfig()
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let root: Node
        do {
            guard let n = try Yams.compose(yaml: text) else { return config }  // empty file: all defaults
            root = n
        } catch let e as YamlError {
            throw yamlError(e)
        }
        let top = try mapping(root, "the configuration")
        var lookbackNode: Node? = nil, churnNode: Node? = nil
        var keepNodes: [(Node, String, Int64)] = []
        for (k, v) in top {
            switch k.string ?? "" {
            case "kafka": try parseKafka(v, &config.kafka)
            case "decoding":
                for (k2, v2) in try mapping(v, "decoding") {
                    switch k2.string ?? "" {
                    case "max_event_bytes": config.decoding.maxEventBytes = try int(v2, min: 64, max: 16 << 20)
                    case "max_future_skew": config.decoding.maxFutureSkewMs = try duration(v2)
                    case "max_id_bytes": config.decoding.maxIDBytes = try int(v2, min: 1, max: 1024)
                    default: throw unknown(k2, in: "decoding", known: ["max_event_bytes", "max_future_skew", "max_id_bytes"])
                    }
                }
            case "processing":
                for (k2, v2) in try mapping(v, "processing") {
                    switch k2.string ?? "" {
                    case "batch_size": config.processing.batchSize = try int(v2, min: 1, max: 1_000_000)
                    case "poll_timeout": config.processing.pollTimeoutMs = try duration(v2)
                    case "threads":
                        if v2.string == "auto" {
                            config.processing.threads = 0
                        } else {
                            guard Int(v2.string ?? "") != nil else { throw error(v2, "expected auto or an integer between 1 and 64") }
                            config.processing.threads = try int(v2, min: 1, max: 64)
                        }
                    default: throw unknown(k2, in: "processing", known: ["batch_size", "poll_timeout", "threads"])
                    }
                }
            case "first_purchase":
                for (k2, v2) in try mapping(v, "first_purchase") {
                    switch k2.string ?? "" {
                    case "enabled": config.firstPurchase.enabled = try bool(v2)
                    case "campaign": config.firstPurchase.campaign = try token(v2)
                    case "channel": config.firstPurchase.channel = try token(v2)
                    case "ttl": config.firstPurchase.ttlMs = try duration(v2)
                    default: throw unknown(k2, in: "first_purchase", known: ["enabled", "campaign", "channel", "ttl"])
                    }
                }
            case "aggregates":
                for (k2, v2) in try mapping(v, "aggregates") {
                    switch k2.string ?? "" {
                    case "windows":
                        guard case .sequence(let seq) = v2, !seq.isEmpty else { throw error(v2, "aggregates.windows must be a non-empty list of durations") }
                        config.aggregates.windowsMs = try seq.map { n in
                            let ms = try duration(n)
                            if let p = AggregateConfig.problem(windowMs: ms) { throw error(n, p) }
                            return ms
                        }
                    case "owned_channels": config.aggregates.ownedChannels = try tokens(v2, "aggregates.owned_channels")
                    case "platform_channels": config.aggregates.platformChannels = try tokens(v2, "aggregates.platform_channels")
                    case "dedupe_horizon": config.aggregates.dedupeHorizonMs = try duration(v2)
                    case "dedupe_depth": config.aggregates.dedupeDepth = try int(v2, min: 0, max: 64)
                    case "keep":
                        // Over the defaults: a type not named keeps what `default` says, or the
                        // built-in default (AggregateConfig.defaultKeepMs).
                        for (k3, v3) in try mapping(v2, "aggregates.keep") {
                            let name = k3.string ?? ""
                            let ms = try duration(v3)
                            if ms != 0, let p = AggregateConfig.problem(windowMs: ms) { throw error(v3, "aggregates.keep.\(name): \(p)") }
                            keepNodes.append((v3, name, ms))
                            if name == "default" {
                                config.aggregates.keepOthersMs = ms
                            } else if let t = EventType(name: name) {
                                config.aggregates.keepMs[t] = ms
                            } else {
                                throw error(k3, "unknown event type '\(name)' in aggregates.keep; expected default or one of \(EventType.allCases.map(\.name).joined(separator: ", "))")
                            }
                        }
                    default: throw unknown(k2, in: "aggregates", known: ["windows", "owned_channels", "platform_channels", "dedupe_horizon", "dedupe_depth", "keep"])
                    }
                }
                let longest = config.aggregates.longestWindowMs
                if let (n, name, ms) = keepNodes.first(where: { $0.2 > longest }) {
                    throw error(n, "aggregates.keep.\(name) (\(DurationText.format(ms))) is longer than the longest window in aggregates.windows (\(DurationText.format(longest))); add the window there")
                }
                let both = Set(config.aggregates.ownedChannels).intersection(config.aggregates.platformChannels)
                if let c = both.sorted().first { throw error(v, "channel '\(c)' is listed as both owned and platform") }
                if config.aggregates.ownedChannels.count + config.aggregates.platformChannels.count > 63 {
                    throw error(v, "at most 63 owned and platform channels can be tracked")
                }
            case "models":
                for (k2, v2) in try mapping(v, "models") {
                    switch k2.string ?? "" {
                    case "rfm":
                        for (k3, v3) in try mapping(v2, "models.rfm") {
                            switch k3.string ?? "" {
                            case "recency": config.models.recencyMs = try duration(v3)
                            case "frequency": config.models.frequency = Int64(try int(v3, min: 1, max: 1_000_000))
                            case "monetary":
                                guard case .scalar(let sc) = v3, let d = Double(sc.string), d >= 0 else { throw error(v3, "expected an amount such as 1000 or 999.50") }
                                config.models.monetary = Money(units: Int64((d * Double(Money.scale)).rounded()))
                            case "lookback":
                                config.models.lookbackMs = try duration(v3)
                                if let p = AggregateConfig.problem(windowMs: config.models.lookbackMs) { throw error(v3, p) }
                                lookbackNode = v3
                            default: throw unknown(k3, in: "models.rfm", known: ["recency", "frequency", "monetary", "lookback"])
                            }
                        }
                    case "lifecycle":
                        for (k3, v3) in try mapping(v2, "models.lifecycle") {
                            switch k3.string ?? "" {
                            case "new_for": config.models.newForMs = try duration(v3)
                            case "dormant_after": config.models.dormantAfterMs = try duration(v3)
                            case "churned_after":
                                config.models.churnedAfterMs = try duration(v3)
                                churnNode = v3
                            case "recalled_for": config.models.recalledForMs = try duration(v3)
                            default: throw unknown(k3, in: "models.lifecycle", known: ["new_for", "dormant_after", "churned_after", "recalled_for"])
                            }
                        }
                    default: throw unknown(k2, in: "models", known: ["rfm", "lifecycle"])
                    }
                }
            case "privacy":
                for (k2, v2) in try mapping(v, "privacy") {
                    switch k2.string ?? "" {
                    case "erasure_key": config.erasureKey = try string(v2)
                    default: throw unknown(k2, in: "privacy", known: ["erasure_key"])
                    }
                }
            case "state":
                for (k2, v2) in try mapping(v, "state") {
                    switch k2.string ?? "" {
                    case "path": config.state.path = try string(v2)
                    case "checkpoint_interval": config.state.checkpointIntervalMs = try duration(v2)
                    case "checkpoint_dirty_customers": config.state.checkpointDirtyCustomers = try int(v2, min: 0, max: 100_000_000)
                    case "checkpoint_slice":
                        config.state.checkpointSliceMs = try duration(v2)
                        guard config.state.checkpointSliceMs >= 1 else { throw error(v2, "state.checkpoint_slice must be at least 1ms") }
                    case "on_corrupt":
                        let v = try string(v2)
                        guard v == "refuse" || v == "rebuild" else { throw error(v2, "state.on_corrupt must be refuse or rebuild") }
                        config.state.onCorrupt = v
                    default: throw unknown(k2, in: "state", known: ["path", "checkpoint_interval", "checkpoint_dirty_customers", "checkpoint_slice", "on_corrupt"])
                    }
                }
                if let consumer = config.kafka.consumer["enable.auto.commit"], consumer == "true", !config.state.path.isEmpty {
                    throw error(v, "with state.path set, offsets are committed after checkpoints: do not set enable.auto.commit=true")
                }
            case "time":
                for (k2, v2) in try mapping(v, "time") {
                    switch k2.string ?? "" {
                    case "allowed_lateness": config.latenessMs = try duration(v2)
                    case "idle_advance": config.idleAdvance = try bool(v2)
                    default: throw unknown(k2, in: "time", known: ["allowed_lateness", "idle_advance"])
                    }
                }
            case "customers":
                for (k2, v2) in try mapping(v, "customers") {
                    switch k2.string ?? "" {
                    case "retention": config.customerRetentionMs = try duration(v2)
                    default: throw unknown(k2, in: "customers", known: ["retention"])
                    }
                }
            case "segments":
                for (k2, v2) in try mapping(v, "segments") {
                    guard case .scalar(let sc) = v2 else { throw error(v2, "segment '\(k2.string!)' must be a rule text") }
                    let origin = ruleOrigin(sc, lines)
                    let block = sc.style == .literal || sc.style == .folded
                    config.segments.append(SegmentDefinition(name: k2.string!, rule: sc.string, origin: origin,
                                                             continuationIndent: block ? origin.column - 1 : 0))
                }
                guard config.segments.count <= 64 else { throw error(v, "at most 64 segments") }
            case "campaigns":
                for (k2, v2) in try mapping(v, "campaigns") { config.campaigns.append(try campaign(k2, v2, lines)) }
            case "contact_policy":
                config.contactPolicy = try contactPolicy(v)
            case "http":
                for (k2, v2) in try mapping(v, "http") {
                    switch k2.string ?? "" {
                    case "listen":
                        let text = try string(v2)
                        if !text.isEmpty {
                            guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
                                  (0...65535).contains(port), colon != text.startIndex else {
                                throw error(v2, "http.listen must be host:port (e.g. 127.0.0.1:9464), or empty to disable")
                            }
                        }
                        config.http.listen = text
                    default: throw unknown(k2, in: "http", known: ["listen"])
                    }
                }
            case "reload":
                var mode = "cap", cap = 1000
                for (k2, v2) in try mapping(v, "reload") {
                    switch k2.string ?? "" {
                    case "transitions":
                        mode = try string(v2)
                        guard ["emit", "silent", "cap"].contains(mode) else { throw error(v2, "reload.transitions must be emit, silent or cap") }
                    case "cap": cap = try int(v2, min: 0, max: 1_000_000_000)
                    default: throw unknown(k2, in: "reload", known: ["transitions", "cap"])
                    }
                }
                config.reloadPolicy = mode == "emit" ? .emit : mode == "silent" ? .silent : .cap(cap)
            case "shutdown":
                for (k2, v2) in try mapping(v, "shutdown") {
                    switch k2.string ?? "" {
                    case "deadline": config.shutdown.deadlineMs = try duration(v2)
                    default: throw unknown(k2, in: "shutdown", known: ["deadline"])
                    }
                }
            case "log":
                for (k2, v2) in try mapping(v, "log") {
                    switch k2.string ?? "" {
                    case "level":
                        let s = try string(v2)
                        guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(s) else {
                            throw error(v2, "log.level must be one of trace, debug, info, notice, warning, error, critical")
                        }
                        config.logLevel = s
                    default: throw unknown(k2, in: "log", known: ["level"])
                    }
                }
            default:
                throw unknown(k, in: "the top level", known: ["kafka", "decoding", "processing", "first_purchase", "aggregates",
                                                               "models", "state", "privacy", "time", "customers", "segments", "campaigns",
                                                               "contact_policy", "reload", "http", "shutdown", "log"])
            }
        }
        if config.models.lookbackMs > (config.aggregates.windowsMs.max() ?? 0) {
            throw ConfigError(file: file, line: lookbackNode?.mark?.line ?? 0, column: lookbackNode?.mark?.column ?? 0,
                              message: "models.rfm.lookback is longer than the longest window in aggregates.windows")
        }
        if config.models.lookbackMs > config.aggregates.keptMs(.purchase) {
            let at = lookbackNode ?? keepNodes.first { $0.1 == "purchase" }?.0
            throw ConfigError(file: file, line: at?.mark?.line ?? 0, column: at?.mark?.column ?? 0,
                              message: "models.rfm.lookback is longer than purchases are kept (aggregates.keep.purchase: \(DurationText.format(config.aggregates.keptMs(.purchase))))")
        }
        if config.models.churnedAfterMs <= config.models.dormantAfterMs {
            throw ConfigError(file: file, line: churnNode?.mark?.line ?? 0, column: churnNode?.mark?.column ?? 0,
                              message: "models.lifecycle.churned_after must be longer than dormant_after")
        }
        // Rules are checked once every section is read (windows and channels come from `aggregates`).
        do {
            _ = try config.engineConfig()
        } catch let e as SegmentError {
            throw ConfigError(file: file, line: e.error.location.line, column: e.error.location.column,
                              message: "segment '\(e.segment)': \(e.error.message)")
        } catch let e as CampaignError {
            throw ConfigError(file: file, line: e.location.line, column: e.location.column,
                              message: e.campaign.isEmpty ? e.message : "campaign '\(e.campaign)': \(e.message)")
        }
        return config
    }

    private func parseKafka(_ v: Node, _ kafka: inout TidepoolConfig.Kafka) throws {
        for (k, v) in try mapping(v, "kafka") {
            switch k.string ?? "" {
            case "bootstrap_servers": kafka.bootstrapServers = try string(v)
            case "group_id": kafka.groupID = try string(v)
            case "input_topics":
                guard case .sequence(let seq) = v, !seq.isEmpty else { throw error(v, "kafka.input_topics must be a non-empty list of topic names") }
                kafka.inputTopics = try seq.map { try string($0) }
            case "trigger_topic": kafka.triggerTopic = try string(v)
            case "dead_letter_topic": kafka.deadLetterTopic = try string(v)
            case "suppressed_topic": kafka.suppressedTopic = try string(v)
            case "properties": kafka.properties = try properties(v, "kafka.properties")
            case "consumer":
                kafka.consumer = try properties(v, "kafka.consumer")
                if let bad = kafka.consumer["enable.auto.offset.store"], bad != "false" {
                    throw error(v, "kafka.consumer: enable.auto.offset.store must stay false (Tidepool stores offsets after processing)")
                }
            case "producer": kafka.producer = try properties(v, "kafka.producer")
            default:
                throw unknown(k, in: "kafka", known: ["bootstrap_servers", "group_id", "input_topics", "trigger_topic",
                                                       "dead_letter_topic", "suppressed_topic", "properties", "consumer", "producer"])
            }
        }
    }

    // MARK: - Campaigns

    private func campaign(_ k: Node, _ v: Node, _ lines: [Substring]) throws -> CampaignDefinition {
        let name = try token(k)
        let known = ["on", "delay", "condition", "channels", "cooldown", "priority", "holdout", "ttl", "quiet_hours", "snapshot"]
        let fields = try mapping(v, "campaign '\(name)'")
        guard let on = fields.first(where: { $0.0.string == "on" })?.1 else { throw error(k, "campaign '\(name)' needs on: (what starts it)") }
        guard let chNode = fields.first(where: { $0.0.string == "channels" })?.1 else {
            throw error(k, "campaign '\(name)' needs channels: (a list, most preferred first)")
        }
        var d = CampaignDefinition(name: name, start: try campaignStart(on, name), channels: try tokens(chNode, "channels"))
        d.origin = SourceLocation(line: k.mark?.line ?? 1, column: k.mark?.column ?? 1)
        for (k2, v2) in fields {
            switch k2.string ?? "" {
            case "on", "channels": break
            case "delay": d.delayMs = try duration(v2)
            case "condition":
                guard case .scalar(let sc) = v2 else { throw error(v2, "condition must be a rule text") }
                d.condition = sc.string
                d.conditionOrigin = ruleOrigin(sc, lines)
                d.conditionIndent = sc.style == .literal || sc.style == .folded ? d.conditionOrigin.column - 1 : 0
            case "cooldown": d.cooldownMs = try duration(v2)
            case "priority": d.priority = try int(v2, min: -1000, max: 1000)
            case "holdout": d.holdoutBasisPoints = try percent(v2)
            case "ttl": d.ttlMs = try duration(v2)
            case "quiet_hours": d.respectsQuietHours = try bool(v2)
            case "snapshot":
                guard case .sequence(let seq) = v2 else { throw error(v2, "snapshot must be a list of rule expressions such as orders()") }
                d.snapshot = try seq.map { try string($0) }
            default: throw unknown(k2, in: "campaign '\(name)'", known: known)
            }
        }
        return d
    }

    private func campaignStart(_ on: Node, _ name: String) throws -> CampaignDefinition.Start {
        let m = try mapping(on, "on")
        let kinds = ["segment_entered", "segment_exited", "lifecycle", "event"]
        let starts = m.filter { kinds.contains($0.0.string ?? "") }
        guard starts.count == 1 else {
            throw error(on, "on: needs exactly one of segment_entered, segment_exited, lifecycle, event")
        }
        let (k, v) = starts[0]
        for (k2, _) in m where !kinds.contains(k2.string ?? "") && !(k.string == "event" && k2.string == "channel") {
            throw unknown(k2, in: "on", known: kinds + (k.string == "event" ? ["channel"] : []))
        }
        switch k.string! {
        case "segment_entered": return .segmentEntered(try token(v))
        case "segment_exited": return .segmentExited(try token(v))
        case "lifecycle":
            let stage = try token(v)
            guard LifecycleStage(name: stage) != nil else {
                throw error(v, "unknown lifecycle stage '\(stage)'; expected one of: \(LifecycleStage.allCases.map(\.name).joined(separator: ", "))")
            }
            return .lifecycle(stage)
        default:
            let typeName = try string(v)
            guard let type = EventType(name: typeName) else {
                throw error(v, "unknown event type '\(typeName)'; expected one of: \(EventType.allCases.map(\.name).joined(separator: ", "))")
            }
            let ch = try m.first(where: { $0.0.string == "channel" }).map { try token($0.1) }
            return .event(type, channel: ch)
        }
    }

    private func contactPolicy(_ v: Node) throws -> ContactPolicy {
        var p = ContactPolicy()
        for (k, v2) in try mapping(v, "contact_policy") {
            switch k.string ?? "" {
            case "caps":
                guard case .sequence(let seq) = v2 else { throw error(v2, "contact_policy.caps must be a list of {channel, max, per}") }
                p.caps = try seq.map { item in
                    var ch: String? = nil, max: Int? = nil, per: Int64? = nil
                    for (k3, v3) in try mapping(item, "a cap") {
                        switch k3.string ?? "" {
                        case "channel": ch = try token(v3)
                        case "max": max = try int(v3, min: 0, max: 1000)
                        case "per": per = try duration(v3)
                        default: throw unknown(k3, in: "a cap", known: ["channel", "max", "per"])
                        }
                    }
                    guard let max, let per, per > 0 else { throw error(item, "a cap needs max: and per: (e.g. {channel: sms, max: 2, per: 7d})") }
                    return ContactPolicy.Cap(channel: ch, max: max, windowMs: per)
                }
            case "quiet_hours":
                let text = try string(v2)
                if text == "none" {
                    p.quietStartMinute = 0
                    p.quietEndMinute = 0
                } else {
                    let parts = text.split(separator: "-").map { $0.trimmingCharacters(in: .whitespaces) }
                    guard parts.count == 2, let a = minuteOfDay(parts[0]), let b = minuteOfDay(parts[1]) else {
                        throw error(v2, "quiet_hours must be HH:MM-HH:MM in the customer's local time (e.g. 21:00-09:00) or none")
                    }
                    p.quietStartMinute = a
                    p.quietEndMinute = b
                }
            case "default_time_zone":
                let zone = try string(v2)
                guard SystemTimeZones().offsetSeconds(zone: zone, atMs: 0) != nil else {
                    throw error(v2, "unknown time zone '\(zone)'; use an IANA name such as Asia/Shanghai or an offset such as +08:00")
                }
                p.defaultTimeZone = zone
            case "opt_in_channels": p.optInChannels = try tokens(v2, "contact_policy.opt_in_channels")
            default: throw unknown(k, in: "contact_policy", known: ["caps", "quiet_hours", "default_time_zone", "opt_in_channels"])
            }
        }
        return p
    }

    private func minuteOfDay(_ s: String) -> Int? {
        let hm = s.split(separator: ":")
        guard hm.count == 2, hm[0].count == 2, hm[1].count == 2, let h = Int(hm[0]), let m = Int(hm[1]), (0..<24).contains(h), (0..<60).contains(m) else {
            return nil
        }
        return h * 60 + m
    }

    /// `10%`, `0.5%` or `2.25%` -> basis points.
    private func percent(_ n: Node) throws -> Int {
        let s = try string(n)
        guard s.hasSuffix("%"), let v = Double(s.dropLast()), v >= 0, v <= 100, (v * 100).rounded() == v * 100 else {
            throw error(n, "expected a percentage between 0% and 100% with at most two decimals, e.g. 10% or 2.5%")
        }
        return Int((v * 100).rounded())
    }

    // MARK: - Node readers

    private func mapping(_ n: Node, _ what: String) throws -> [(Node, Node)] {
        guard case .mapping(let m) = n else { throw error(n, "\(what) must be a mapping of key: value") }
        var seen = Set<String>()
        var out: [(Node, Node)] = []
        for (k, v) in m {
            guard let key = k.string else { throw error(k, "keys must be strings") }
            guard seen.insert(key).inserted else { throw error(k, "duplicate key '\(key)'") }
            out.append((k, v))
        }
        return out
    }

    private func properties(_ n: Node, _ what: String) throws -> [String: String] {
        var out: [String: String] = [:]
        for (k, v) in try mapping(n, what) {
            guard case .scalar(let s) = v else { throw error(v, "\(what).\(k.string ?? "") must be a scalar (librdkafka takes strings)") }
            out[k.string!] = s.string
        }
        return out
    }

    /// Where a rule's text starts in the file: after the quote of a quoted scalar, on the next line
    /// (at its indentation) for a block scalar (`|` or `>`).
    private func ruleOrigin(_ s: Node.Scalar, _ lines: [Substring]) -> SourceLocation {
        guard let m = s.mark else { return SourceLocation(line: 1, column: 1) }
        switch s.style {
        case .singleQuoted, .doubleQuoted:
            return SourceLocation(line: m.line, column: m.column + 1)
        case .literal, .folded:
            let next = m.line  // 0-based index of the following line
            let indent = next < lines.count ? lines[next].prefix { $0 == " " }.count : 0
            return SourceLocation(line: m.line + 1, column: indent + 1)
        default:
            return SourceLocation(line: m.line, column: m.column)
        }
    }

    private func tokens(_ n: Node, _ what: String) throws -> [String] {
        guard case .sequence(let seq) = n else { throw error(n, "\(what) must be a list of channel names") }
        return try seq.map { try token($0) }
    }

    private func string(_ n: Node) throws -> String {
        guard case .scalar(let s) = n else { throw error(n, "expected a string") }
        return s.string
    }

    private func token(_ n: Node) throws -> String {
        let s = try string(n)
        guard let f = s.utf8.first, f >= 0x61, f <= 0x7A,
              s.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5F }) else {
            throw error(n, "expected a lower-case name such as first_purchase_welcome ([a-z][a-z0-9_]*), found '\(s)'")
        }
        return s
    }

    private func int(_ n: Node, min: Int, max: Int) throws -> Int {
        guard case .scalar(let s) = n, let v = Int(s.string.replacingOccurrences(of: "_", with: "")) else {
            throw error(n, "expected an integer")
        }
        guard v >= min && v <= max else { throw error(n, "expected an integer between \(min) and \(max), found \(v)") }
        return v
    }

    private func bool(_ n: Node) throws -> Bool {
        guard case .scalar(let s) = n else { throw error(n, "expected true or false") }
        switch s.string {
        case "true": return true
        case "false": return false
        default: throw error(n, "expected true or false, found '\(s.string)'")
        }
    }

    /// Durations: an integer followed by ms, s, m, h or d (`250ms`, `30s`, `5m`, `72h`, `14d`).
    private func duration(_ n: Node) throws -> Int64 {
        let s = try string(n)
        guard let ms = DurationText.parseMs(s) else {
            throw error(n, "expected a duration such as 250ms, 30s, 5m, 72h or 14d, found '\(s)'")
        }
        return ms
    }

    private func unknown(_ k: Node, in section: String, known: [String]) -> ConfigError {
        error(k, "unknown key '\(k.string ?? "?")' in \(section); expected one of: \(known.joined(separator: ", "))")
    }

    private func error(_ n: Node, _ message: String) -> ConfigError {
        ConfigError(file: file, line: n.mark?.line ?? 0, column: n.mark?.column ?? 0, message: message)
    }

    private func yamlError(_ e: YamlError) -> ConfigError {
        switch e {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _):
            return ConfigError(file: file, line: mark.line, column: mark.column, message: "YAML syntax error: \(problem)")
        case .composer(_, let problem, let mark, _):
            return ConfigError(file: file, line: mark.line, column: mark.column, message: "YAML error: \(problem)")
        case .duplicatedKeysInMapping(let duplicates, let context):
            return ConfigError(file: file, line: context.mark.line, column: context.mark.column,
                               message: "duplicate key '\(duplicates.joined(separator: "', '"))' in the mapping that starts here")
        default:
            return ConfigError(file: file, line: 0, column: 0, message: "YAML error: \(e)")
        }
    }
}
