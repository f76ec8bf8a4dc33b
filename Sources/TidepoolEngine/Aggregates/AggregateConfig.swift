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

    public init(windowsMs: [Int64] = [1, 7, 30, 90, 365].map { $0 * AggregateConfig.dayMs },
                ownedChannels: [String] = ["website", "app", "mini_program", "wechat_oa", "wecom", "sms", "email", "offline_store"],
                platformChannels: [String] = ["tmall", "jd", "douyin", "kuaishou", "taobao", "pinduoduo"],
                dedupeHorizonMs: Int64 = 7 * AggregateConfig.dayMs, dedupeDepth: Int = 8) {
        self.windowsMs = windowsMs
        self.ownedChannels = ownedChannels
        self.platformChannels = platformChannels
        self.dedupeHorizonMs = dedupeHorizonMs
        self.dedupeDepth = dedupeDepth
    }

    /// Buckets older than this (relative to stream time) are dropped; they are still in lifetime totals.
    public var retentionMs: Int64 { (windowsMs.max() ?? AggregateConfig.dayMs) + AggregateConfig.dayMs }

    /// The scalars an event update needs, computed once: passing the whole configuration (three
    /// arrays) to every update cost retains, and `retentionMs` a scan of the windows.
    public struct Limits: Sendable, Equatable {
        public var retentionMs: Int64
        public var dedupeHorizonMs: Int64
        public var dedupeDepth: Int
        public var ownedMask: UInt64
        public var platformMask: UInt64
    }

    public func limits(_ channels: ChannelTable) -> Limits {
        Limits(retentionMs: retentionMs, dedupeHorizonMs: dedupeHorizonMs, dedupeDepth: dedupeDepth,
               ownedMask: channels.ownedMask, platformMask: channels.platformMask)
    }

    /// Why a window is not allowed, or nil.
    public static func problem(windowMs w: Int64) -> String? {
        if w <= 0 { return "a window must be positive" }
        if w <= hourlyLimitMs { return w % hourMs == 0 ? nil : "windows up to 7d must be whole hours" }
        return w % dayMs == 0 ? nil : "windows longer than 7d must be whole days"
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
        self.index = index
        self.ownedMask = owned
        self.platformMask = platform
    }

    /// Every event's channel is looked up here. Comparing against a few names is cheaper than
    /// hashing the String (SipHash, ~300 instructions): channel names are short, and two small
    /// strings compare as two machine words.
    @inline(__always) public func index(of channel: String) -> UInt8 {
        if names.count <= 24 {
            for i in 1..<names.count where names[i] == channel { return UInt8(i) }
            return ChannelTable.other
        }
        return index[channel] ?? ChannelTable.other
    }
    public func isKnown(_ channel: String) -> Bool { index[channel] != nil }
}
