/// A re-engagement campaign as configured (`campaigns` section): what starts it, how long it waits,
/// what must still hold when it fires, who it may contact on which channel, and how often.
public struct CampaignDefinition: Sendable, Equatable {
    /// What starts an episode of the campaign.
    public enum Start: Sendable, Equatable {
        /// The customer entered the named segment.
        case segmentEntered(String)
        /// The customer left the named segment.
        case segmentExited(String)
        /// The customer's lifecycle stage became the named one (new, active, dormant, churned,
        /// recalled). Compiled as `segmentEntered` of the segment `lifecycle_<stage>`, which is
        /// defined automatically (`lifecycle() == <stage>`) unless the configuration defines it.
        case lifecycle(String)
        /// An event of this type (and channel, when given) was applied.
        case event(EventType, channel: String?)
    }

    public var name: String
    public var start: Start
    /// Wait this long after the start before deciding (e.g. 2h after an abandoned cart).
    public var delayMs: Int64 = 0
    /// Debounce: a rule that must hold when the campaign fires (after the delay), in addition to
    /// the start condition itself still holding (still in the entered segment, still out of the
    /// exited one). Nil: only the start condition.
    public var condition: String? = nil
    public var conditionOrigin = SourceLocation(line: 1, column: 1)
    public var conditionIndent = 0
    /// Channels in order of preference; the first one with consent and under its caps is used.
    public var channels: [String]
    /// Re-eligibility: no new contact of this campaign for this customer within this long after
    /// the previous one (sent or held out).
    public var cooldownMs: Int64 = 30 * 86_400_000
    /// When two campaigns are due for a customer at the same instant, higher priority decides first
    /// (and so gets the contact budget first).
    public var priority: Int = 0
    /// Holdout (control group) share in basis points (1% = 100).
    public var holdoutBasisPoints: Int = 0
    /// Do not send after fired_at + ttl.
    public var ttlMs: Int64 = 72 * 3_600_000
    /// Deferred out of the contact policy's quiet hours (false for service messages).
    public var respectsQuietHours = true
    /// Rule expressions whose values at firing time go into the trigger's snapshot.
    public var snapshot: [String] = ["orders()", "spend()"]
    public var origin = SourceLocation(line: 1, column: 1)

    public init(name: String, start: Start, channels: [String]) {
        self.name = name
        self.start = start
        self.channels = channels
    }

    /// The segment a start refers to (after lifecycle names are turned into segment names).
    public var startSegment: String? {
        switch start {
        case .segmentEntered(let s), .segmentExited(let s): return s
        case .lifecycle(let stage): return "lifecycle_\(stage)"
        case .event: return nil
        }
    }
}

/// How much contact a customer may receive across all campaigns, and when.
public struct ContactPolicy: Sendable, Equatable {
    /// At most `max` contacts within any rolling `windowMs`; on one channel, or on all (channel nil).
    public struct Cap: Sendable, Equatable {
        public var channel: String?
        public var max: Int
        public var windowMs: Int64
        public init(channel: String?, max: Int, windowMs: Int64) {
            self.channel = channel
            self.max = max
            self.windowMs = windowMs
        }
    }

    public var caps: [Cap] = [
        Cap(channel: "sms", max: 2, windowMs: 7 * 86_400_000),
        Cap(channel: "wecom", max: 1, windowMs: 86_400_000),
        Cap(channel: nil, max: 3, windowMs: 7 * 86_400_000),
    ]
    /// Quiet hours in the customer's local time, minutes after midnight; start == end: none.
    /// A window may wrap midnight (21:00-09:00).
    public var quietStartMinute = 21 * 60
    public var quietEndMinute = 9 * 60
    /// Zone of customers whose events never named one (IANA name, or a fixed offset like +08:00).
    public var defaultTimeZone = "Asia/Shanghai"
    /// Channels that need an explicit `granted` consent event before they may be used. Other
    /// channels may be used until the customer withdraws consent for them.
    public var optInChannels: [String] = ["sms", "email"]

    public init() {}

    public var hasQuietHours: Bool { quietStartMinute != quietEndMinute }
}

/// Why a campaign configuration cannot be used.
public struct CampaignError: Error, Sendable, Equatable, CustomStringConvertible {
    public var campaign: String
    public var location: SourceLocation
    public var message: String
    public var description: String { "\(location): campaign '\(campaign)': \(message)" }
}

/// Campaigns checked against the segments and channels, ready for the engine.
public struct CampaignSet: Sendable {
    /// A class: every decision reads its campaign, and copying a struct of three strings, two
    /// arrays and a rule expression out of the array cost a retain and release of each.
    final class Compiled: Sendable {
        let name: String
        let nameHash: UInt64
        let startSegment: Int?
        let entered: Bool
        let eventType: EventType?
        let eventChannel: UInt8?
        let reasonKind: String
        let condition: RuleExpr?
        let channels: [UInt8]
        let delayMs: Int64
        let cooldownMs: Int64
        let priority: Int
        let holdoutBasisPoints: Int
        let ttlMs: Int64
        let quietHours: Bool
        let snapshot: [(String, RuleExpr)]
        /// The explanation's start, "entered <segment> at " or "<event type> at ", as UTF-8.
        let explanationLead: [UInt8]

        init(_ d: CampaignDefinition, startSegment: Int?, entered: Bool, eventType: EventType?, eventChannel: UInt8?,
             reasonKind: String, condition: RuleExpr?, channels: [UInt8], snapshot: [(String, RuleExpr)], segmentNames: [String]) {
            name = d.name
            nameHash = StableHash.hash64(d.name.utf8)
            self.startSegment = startSegment
            self.entered = entered
            self.eventType = eventType
            self.eventChannel = eventChannel
            self.reasonKind = reasonKind
            self.condition = condition
            self.channels = channels
            delayMs = d.delayMs
            cooldownMs = d.cooldownMs
            priority = d.priority
            holdoutBasisPoints = d.holdoutBasisPoints
            ttlMs = d.ttlMs
            quietHours = d.respectsQuietHours
            self.snapshot = snapshot
            let lead = startSegment.map { "\(entered ? "entered" : "left") \(segmentNames[$0]) at " }
                ?? "\(eventType?.name ?? "event") at "
            explanationLead = Array(lead.utf8)
        }
    }

    public let definitions: [CampaignDefinition]
    let campaigns: [Compiled]
    /// Campaign indices started by entering / leaving segment i, by an event of type t.
    let onEnter: [[Int]]
    let onExit: [[Int]]
    let onEvent: [[Int]]
    /// Caps with channel indices (nil: all channels).
    let caps: [(channel: UInt8?, max: Int, windowMs: Int64)]
    let longestCapWindowMs: Int64
    let optInMask: UInt64
    public let policy: ContactPolicy

    public var isEmpty: Bool { campaigns.isEmpty }

    public static let empty = CampaignSet()

    private init() {
        definitions = []
        campaigns = []
        onEnter = []
        onExit = []
        onEvent = Array(repeating: [], count: EventType.allCases.count)
        caps = []
        longestCapWindowMs = 0
        optInMask = 0
        policy = ContactPolicy()
    }

    public init(_ definitions: [CampaignDefinition], policy: ContactPolicy, segments: SegmentSet,
                aggregates: AggregateConfig, channels: ChannelTable) throws(CampaignError) {
        self.definitions = definitions
        self.policy = policy
        let segmentIndex = Dictionary(uniqueKeysWithValues: segments.segments.enumerated().map { ($1.name, $0) })
        var onEnter = [[Int]](repeating: [], count: segments.segments.count)
        var onExit = onEnter
        var onEvent = [[Int]](repeating: [], count: EventType.allCases.count)
        var compiled: [Compiled] = []
        var names = Set<String>()
        let segmentNames = segments.segments.map(\.name)
        func channel(_ name: String, _ d: CampaignDefinition) throws(CampaignError) -> UInt8 {
            guard channels.isKnown(name) else {
                throw CampaignError(campaign: d.name, location: d.origin,
                                    message: "channel '\(name)' is not in aggregates.owned_channels or aggregates.platform_channels")
            }
            return channels.index(of: name)
        }
        for d in definitions {
            guard names.insert(d.name).inserted else {
                throw CampaignError(campaign: d.name, location: d.origin, message: "a campaign named '\(d.name)' is already defined")
            }
            guard !d.channels.isEmpty else { throw CampaignError(campaign: d.name, location: d.origin, message: "channels must name at least one channel") }
            guard (0...10_000).contains(d.holdoutBasisPoints) else {
                throw CampaignError(campaign: d.name, location: d.origin, message: "holdout must be between 0% and 100%")
            }
            let i = compiled.count
            var startSegment: Int? = nil, entered = true, eventType: EventType? = nil, eventChannel: UInt8? = nil
            var reasonKind = "", condition: RuleExpr? = nil, campaignChannels: [UInt8] = [], snapshot: [(String, RuleExpr)] = []
            switch d.start {
            case .segmentEntered, .segmentExited, .lifecycle:
                let name = d.startSegment!
                guard let s = segmentIndex[name] else {
                    throw CampaignError(campaign: d.name, location: d.origin, message: "no segment named '\(name)'")
                }
                startSegment = s
                if case .segmentExited = d.start {
                    entered = false
                    reasonKind = "segment_exited"
                    onExit[s].append(i)
                } else {
                    reasonKind = { if case .lifecycle = d.start { return "lifecycle" } else { return "segment_entered" } }()
                    onEnter[s].append(i)
                }
            case .event(let type, let ch):
                eventType = type
                eventChannel = try ch.map { n throws(CampaignError) in try channel(n, d) }
                reasonKind = "event"
                onEvent[Int(type.rawValue)].append(i)
            }
            for name in d.channels { campaignChannels.append(try channel(name, d)) }
            if let text = d.condition {
                do throws(RuleError) {
                    let (e, t) = try segments.compile(text, origin: d.conditionOrigin, continuationIndent: d.conditionIndent,
                                                      aggregates: aggregates, channels: channels)
                    guard t == .bool else { throw RuleError(d.conditionOrigin, "condition must be true or false, not a \(t.rawValue)") }
                    condition = e
                } catch {
                    throw CampaignError(campaign: d.name, location: error.location, message: error.message)
                }
            }
            for text in d.snapshot {
                do throws(RuleError) {
                    let (e, _) = try segments.compile(text, origin: d.origin, continuationIndent: 0, aggregates: aggregates, channels: channels)
                    snapshot.append((RuleExplainer.render(e, nil, segmentNames), e))
                } catch {
                    throw CampaignError(campaign: d.name, location: d.origin, message: "snapshot '\(text)': \(error.message)")
                }
            }
            let c = Compiled(d, startSegment: startSegment, entered: entered, eventType: eventType, eventChannel: eventChannel,
                             reasonKind: reasonKind, condition: condition, channels: campaignChannels, snapshot: snapshot,
                             segmentNames: segmentNames)
            compiled.append(c)
        }
        guard compiled.count <= 255 else {
            throw CampaignError(campaign: "", location: SourceLocation(line: 1, column: 1), message: "at most 255 campaigns")
        }
        self.campaigns = compiled
        self.onEnter = onEnter
        self.onExit = onExit
        self.onEvent = onEvent
        var caps: [(channel: UInt8?, max: Int, windowMs: Int64)] = []
        for cap in policy.caps {
            if let ch = cap.channel {
                guard channels.isKnown(ch) else {
                    throw CampaignError(campaign: "", location: SourceLocation(line: 1, column: 1),
                                        message: "contact_policy cap names unknown channel '\(ch)'")
                }
                caps.append((channels.index(of: ch), cap.max, cap.windowMs))
            } else {
                caps.append((nil, cap.max, cap.windowMs))
            }
        }
        self.caps = caps
        self.longestCapWindowMs = caps.map(\.windowMs).max() ?? 0
        var mask: UInt64 = 0
        for ch in policy.optInChannels where channels.isKnown(ch) { mask |= 1 << UInt64(channels.index(of: ch)) }
        self.optInMask = mask
    }
}

extension SegmentSet {
    /// Compiles a rule expression (a campaign condition or snapshot value) against these segments.
    public func compile(_ text: String, origin: SourceLocation, continuationIndent: Int, aggregates: AggregateConfig,
                        channels: ChannelTable) throws(RuleError) -> (RuleExpr, RuleType) {
        let syntax = try RuleParser.parse(text, origin: origin, continuationIndent: continuationIndent)
        let index = Dictionary(uniqueKeysWithValues: segments.enumerated().map { ($1.name, $0) })
        var checker = RuleChecker(config: aggregates, channels: channels, segments: index)
        return try checker.check(syntax)
    }
}
