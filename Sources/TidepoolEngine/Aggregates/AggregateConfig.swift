/// What the per-customer aggregates keep, from the `aggregates` section of the configuration.
///
/// Window semantics (README, "Aggregates"): a window of W at time t covers whole buckets.
/// Windows up to 7 days use hourly buckets (UTC hours): `count(x, W)` counts events whose hour is
/// one of the W/1h hours ending with t's hour. Longer windows use daily buckets (UTC days): the
/// W/1d days ending with t's day. Windows must therefore be whole hours (≤ 7d) or whole days.
public struct AggregateConfig: Sendable, Equatable {
    public static let hourMs: Int64 = 3_600_000
    public static let dayMs: Int64 = 86_400_000
    /// Longest window with hourly resolution.
    public static let hourlyLimitMs: Int64 = 7 * dayMs

    /// Windows the rules may use, in milliseconds.
    public var windowsMs: [Int64]
    /// Channels operated by the brand (owned) and marketplaces (platform). Channels in neither list
    /// are tracked together as "other".
    public var ownedChannels: [String]
    public var platformChannels: [String]
    /// A repeated event_id is applied once when it arrives within this horizon (event time) of the
    /// original and among the customer's last `dedupeDepth` events. Ids of events dated before
    /// stream time minus the horizon are forgotten. Seven days by default: a producer's retries
    /// and a batch of yesterday's orders sent again are caught, and a customer seen once a week
    /// or less keeps one id.
    public var dedupeHorizonMs: Int64
    public var dedupeDepth: Int
    /// How long each event type's buckets are kept (`aggregates.keep`): the longest window a rule
    /// may use over that type. Types not named keep `keepOthersMs`; nil there means the longest
    /// window. 0 keeps no buckets for a type (it still counts in lifetime totals and first/last).
    public var keepMs: [EventType: Int64]
    public var keepOthersMs: Int64?

    /// What `aggregates.keep` is when the configuration does not say: purchases, refunds and
    /// cancels for the longest window (spend and orders over a year: RFM, LTV rules), every other
    /// type for 90 days. Engagement rules (visits, opens, chats) look back days or weeks; keeping
    /// a year of them was most of a heavy customer's memory (a 50-event customer's buckets
    /// beyond 90 days, ~260 bytes). A rule that needs longer names the type in `keep`.
    public static let defaultKeepMs: [EventType: Int64] = [.purchase: .max, .refund: .max, .cancel: .max]
    public static let defaultKeepOthersMs: Int64 = 90 * dayMs

    public init(windowsMs: [Int64] = [1, 7, 30, 90, 365].map { $0 * AggregateConfig.dayMs },
                ownedChannels: [String] = ["website", "app", "mini_program", "wechat_oa", "wecom", "sms", "email", "offline_store"],
                platformChannels: [String] = ["tmall", "jd", "douyin", "kuaishou", "taobao", "pinduoduo"],
                dedupeHorizonMs: Int64 = 7 * AggregateConfig.dayMs, dedupeDepth: Int = 8,
                keepMs: [EventType: Int64] = AggregateConfig.defaultKeepMs, keepOthersMs: Int64? = AggregateConfig.defaultKeepOthersMs) {
        self.windowsMs = windowsMs
        self.ownedChannels = ownedChannels
        self.platformChannels = platformChannels
        self.dedupeHorizonMs = dedupeHorizonMs
        self.dedupeDepth = dedupeDepth
        self.keepMs = keepMs
        self.keepOthersMs = keepOthersMs
    }

    /// Every type for the longest window (the behaviour before `keep` existed; tests that read
    /// long windows over any type use it).
    public static func keepingEverything(windowsMs: [Int64] = [1, 7, 30, 90, 365].map { $0 * AggregateConfig.dayMs }) -> AggregateConfig {
        AggregateConfig(windowsMs: windowsMs, keepMs: [:], keepOthersMs: nil)
    }

    public var longestWindowMs: Int64 { windowsMs.max() ?? AggregateConfig.dayMs }

    /// The longest window over `type` that rules may use: its `keep`, never beyond the longest
    /// window (`.max` in `keepMs` means the longest window).
    public func keptMs(_ type: EventType) -> Int64 {
        Swift.min(keepMs[type] ?? keepOthersMs ?? .max, longestWindowMs)
    }

    /// Buckets older than this (relative to stream time) are dropped; they are still in lifetime totals.
    public var retentionMs: Int64 { longestWindowMs + AggregateConfig.dayMs }

    /// Types whose buckets are kept less than the longest window, with how long (the customer
    /// view and the rule checker name them).
    public var shorterKept: [(EventType, Int64)] {
        EventType.allCases.compactMap { t in keptMs(t) < longestWindowMs ? (t, keptMs(t)) : nil }
    }

    /// The scalars an event update needs, computed once: passing the whole configuration (three
    /// arrays) to every update cost retains, and each type's retention a scan of the windows.
    public struct Limits: Sendable, Equatable {
        public var dedupeHorizonMs: Int64
        public var dedupeDepth: Int
        public var ownedMask: UInt64
        public var platformMask: UInt64
        public var kept: KeptBuckets
    }

    public func limits(_ channels: ChannelTable) -> Limits {
        Limits(dedupeHorizonMs: dedupeHorizonMs, dedupeDepth: dedupeDepth,
               ownedMask: channels.ownedMask, platformMask: channels.platformMask, kept: KeptBuckets(self))
    }

    /// Why a window is not allowed, or nil.
    public static func problem(windowMs w: Int64) -> String? {
        if w <= 0 { return "a window must be positive" }
        if w <= hourlyLimitMs { return w % hourMs == 0 ? nil : "windows up to 7d must be whole hours" }
        return w % dayMs == 0 ? nil : "windows longer than 7d must be whole days"
    }
}

/// How long each event type's buckets stay, in the scalar form the update path carries (an array
/// in `Limits` cost a retain and a release per event): up to four retentions, each with the set
/// of types it applies to. A configuration with more than four different `keep` values has each
/// extra one rounded up to the next kept retention: a type then keeps buckets a little longer
/// than it needs, never shorter, and no figure changes (the checker lets no rule read past a
/// type's `keep`). A type in no set keeps no buckets.
public struct KeptBuckets: Sendable, Equatable {
    /// Retention (the kept window plus one day, as for the longest window), longest first, and
    /// the types (bit = raw value) each applies to.
    public private(set) var retentionMs: (Int64, Int64, Int64, Int64) = (0, 0, 0, 0)
    public private(set) var types: (UInt32, UInt32, UInt32, UInt32) = (0, 0, 0, 0)

    public init(_ config: AggregateConfig) {
        var levels = Set(EventType.allCases.map { config.keptMs($0) }.filter { $0 > 0 }).sorted(by: >)
        if levels.count > 4 { levels = Array(levels.prefix(4)) }
        var r: [Int64] = levels.map { $0 + AggregateConfig.dayMs }, m = [UInt32](repeating: 0, count: 4)
        for t in EventType.allCases {
            let k = config.keptMs(t)
            guard k > 0 else { continue }
            // The shortest level that is still at least this type's keep.
            let i = levels.lastIndex { $0 >= k } ?? 0
            m[i] |= 1 << UInt32(t.rawValue)
        }
        while r.count < 4 { r.append(0) }
        retentionMs = (r[0], r[1], r[2], r[3])
        types = (m[0], m[1], m[2], m[3])
    }

    /// How long buckets of raw type `t` stay behind stream time (0: none are kept).
    @inline(__always) public func retentionMs(rawType t: UInt8) -> Int64 {
        let bit = UInt32(1) << UInt32(t & 31)
        if types.0 & bit != 0 { return retentionMs.0 }
        if types.1 & bit != 0 { return retentionMs.1 }
        if types.2 & bit != 0 { return retentionMs.2 }
        if types.3 & bit != 0 { return retentionMs.3 }
        return 0
    }

    /// True when every type keeps the same retention (the fold then drops by one hour).
    public var isUniform: Bool { types.1 == 0 && types.2 == 0 && types.3 == 0 && types.0 == Self.allTypes }
    static let allTypes: UInt32 = EventType.allCases.reduce(0) { $0 | 1 << UInt32($1.rawValue) }

    public static func == (a: KeptBuckets, b: KeptBuckets) -> Bool {
        a.retentionMs == b.retentionMs && a.types == b.types
    }
}

/// Channel names to small indices, fixed by the configuration so that every host and every replay
/// numbers channels the same way. Index 0 is "other".
public struct ChannelTable: Sendable, Equatable {
    public static let other: UInt8 = 0
    public let names: [String]
    public let ownedMask: UInt64
    public let platformMask: UInt64
    private let index: [String: UInt8]
    /// Each name's length in UTF-8 bytes (`index(of:)` compares only names of the event's length).
    private let lengths: [Int]

    public init(_ config: AggregateConfig) {
        var names = ["other"]
        var index: [String: UInt8] = [:]
        var owned: UInt64 = 0, platform: UInt64 = 0
        for c in config.ownedChannels + config.platformChannels where index[c] == nil && names.count < 64 {
            index[c] = UInt8(names.count)
            if config.ownedChannels.contains(c) { owned |= 1 << UInt64(names.count) } else { platform |= 1 << UInt64(names.count) }
            names.append(c)
        }
        self.names = names
        self.lengths = names.map(\.utf8.count)
        self.index = index
        self.ownedMask = owned
        self.platformMask = platform
    }

    /// Every event's channel is looked up here. Comparing against a few names is cheaper than
    /// hashing the String (SipHash, ~300 instructions): channel names are short, and two equal
    /// small strings compare as two machine words. Only names of the channel's length are
    /// compared: two different strings go through the standard library's out-of-line comparison,
    /// and against all 14 default names that was 12 calls per event (with the loop around them
    /// 1.9% of the engine's instructions on the callgrind input, Benchmarks/README.md).
    @inline(__always) public func index(of channel: String) -> UInt8 {
        if names.count <= 24 {
            let n = channel.utf8.count
            return lengths.withUnsafeBufferPointer { lengths in
                for i in 1..<lengths.count where lengths[i] == n && names[i] == channel { return UInt8(i) }
                return ChannelTable.other
            }
        }
        return index[channel] ?? ChannelTable.other
    }
    public func isKnown(_ channel: String) -> Bool { index[channel] != nil }
}
