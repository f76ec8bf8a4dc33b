/// The built-in models private-domain teams operate by: RFM classes and lifecycle stages.
/// Both are pure functions of a customer's aggregates and the evaluation time, so they are
/// deterministic, usable in rules (`rfm() == important_value`, `lifecycle() == dormant`), and
/// their next change is predictable (timers fire exactly when a customer turns dormant).
public struct ModelConfig: Sendable, Equatable {
    /// RFM: R is high when the last purchase is at most `recencyMs` ago; F is high with at least
    /// `frequency` net orders over `lookbackMs`; M is high with at least `monetary` net spend over it.
    public var recencyMs: Int64
    public var frequency: Int64
    public var monetary: Money
    public var lookbackMs: Int64
    /// Lifecycle thresholds.
    public var newForMs: Int64
    public var dormantAfterMs: Int64
    public var churnedAfterMs: Int64
    public var recalledForMs: Int64

    public init(recencyMs: Int64 = 90 * AggregateConfig.dayMs, frequency: Int64 = 2, monetary: Money = Money(major: 1000),
                lookbackMs: Int64 = 365 * AggregateConfig.dayMs, newForMs: Int64 = 30 * AggregateConfig.dayMs,
                dormantAfterMs: Int64 = 30 * AggregateConfig.dayMs, churnedAfterMs: Int64 = 180 * AggregateConfig.dayMs,
                recalledForMs: Int64 = 30 * AggregateConfig.dayMs) {
        self.recencyMs = recencyMs
        self.frequency = frequency
        self.monetary = monetary
        self.lookbackMs = lookbackMs
        self.newForMs = newForMs
        self.dormantAfterMs = dormantAfterMs
        self.churnedAfterMs = churnedAfterMs
        self.recalledForMs = recalledForMs
    }
}

/// The eight RFM classes. Raw value bits: R (4), F (2), M (1); high = 1.
public enum RFMClass: Int, CaseIterable, Sendable {
    case generalWinback = 0    // 一般挽留: R low, F low, M low
    case importantWinback = 1  // 重要挽留: R low, F low, M high
    case generalRetain = 2     // 一般保持: R low, F high, M low
    case importantRetain = 3   // 重要保持: R low, F high, M high
    case generalDevelop = 4    // 一般发展: R high, F low, M low
    case importantDevelop = 5  // 重要发展: R high, F low, M high
    case generalValue = 6      // 一般价值: R high, F high, M low
    case importantValue = 7    // 重要价值: R high, F high, M high

    private static let names = ["general_winback", "important_winback", "general_retain", "important_retain",
                                "general_develop", "important_develop", "general_value", "important_value"]
    private static let chineseNames = ["一般挽留", "重要挽留", "一般保持", "重要保持", "一般发展", "重要发展", "一般价值", "重要价值"]

    public var name: String { RFMClass.names[rawValue] }
    public var chineseName: String { RFMClass.chineseNames[rawValue] }

    public init?(name: String) {
        guard let c = RFMClass.allCases.first(where: { $0.name == name || $0.chineseName == name }) else { return nil }
        self = c
    }

    public static func of(_ a: borrowing CustomerAggregates, at t: Int64, _ m: ModelConfig) -> RFMClass {
        let lastPurchase = a.last(.purchase)
        let r = lastPurchase.map { t - $0 <= m.recencyMs } ?? false
        let f = a.count(.purchase, window: m.lookbackMs, at: t) >= m.frequency
        let money = a.sum(.purchase, window: m.lookbackMs, at: t) >= m.monetary
        return RFMClass(rawValue: (r ? 4 : 0) | (f ? 2 : 0) | (money ? 1 : 0))!
    }
}

/// Lifecycle stages. A customer is `new` for `newForMs` after the first event, `active` while
/// seen within `dormantAfterMs`, `dormant` after that, `churned` after `churnedAfterMs`, and
/// `recalled` for `recalledForMs` after coming back from dormant or churned.
public enum LifecycleStage: Int, CaseIterable, Sendable {
    case new = 0, active, dormant, churned, recalled

    private static let names = ["new", "active", "dormant", "churned", "recalled"]
    public var name: String { LifecycleStage.names[rawValue] }

    public init?(name: String) {
        guard let s = LifecycleStage.allCases.first(where: { $0.name == name }) else { return nil }
        self = s
    }

    /// `returnedAtMs`: when the customer last came back from dormant/churned (.min: never).
    public static func of(_ a: borrowing CustomerAggregates, returnedAtMs: Int64, at t: Int64, _ m: ModelConfig) -> LifecycleStage? {
        guard let last = a.lastSeen, let first = a.firstSeen else { return nil }
        if t - last > m.churnedAfterMs { return .churned }
        if t - last > m.dormantAfterMs { return .dormant }
        if returnedAtMs != .min && t - returnedAtMs <= m.recalledForMs { return .recalled }
        if t - first <= m.newForMs { return .new }
        return .active
    }
}
