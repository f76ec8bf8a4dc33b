/// Everything the engine knows about one customer at one instant, with the reasons for each
/// membership: the answer to "who is this customer and why are they in this segment".
public struct CustomerView: Sendable, Equatable {
    public struct Membership: Sendable, Equatable {
        public var segment: String
        public var member: Bool
        public var ruleVersion: String
        public var rule: String
        /// The values each comparison of the rule saw.
        public var values: [String]
        public var nextFlipMs: Int64?
    }

    public var customerID: String
    public var partition: PartitionID
    public var atMs: Int64
    public var lifetimeEvents: Int64
    public var lifetimeOrders: Int64
    public var lifetimeSpend: Money
    public var firstSeenMs: Int64?
    public var lastSeenMs: Int64?
    public var distinctChannels: Int
    public var lifetimeOwnedShare: Double?
    public var rfm: RFMClass
    public var lifecycle: LifecycleStage?
    /// Windowed counts and sums: "count(purchase, 30d)" -> value, for every configured window and
    /// every event type the customer has in its buckets.
    public var windows: [(String, String)]
    public var memberships: [Membership]
    /// Campaign episodes waiting (campaign, due), what each campaign did (campaign, episodes,
    /// last contact), contacts in the ledger (channel, at), channels with consent now, time zone.
    public var pending: [(campaign: String, dueMs: Int64)] = []
    public var campaigns: [(campaign: String, episodes: Int, lastContactMs: Int64?)] = []
    public var ledger: [(channel: String, atMs: Int64)] = []
    public var consentedChannels: [String] = []
    public var timeZone: String = ""

    public static func == (a: CustomerView, b: CustomerView) -> Bool {
        a.customerID == b.customerID && a.atMs == b.atMs && a.memberships == b.memberships
            && a.windows.map(\.0) == b.windows.map(\.0) && a.windows.map(\.1) == b.windows.map(\.1)
    }
}

extension Engine {
    /// The view of a customer at the partition's current evaluation time (nil when not in memory).
    public func view(_ id: String) -> CustomerView? {
        for (pid, ps) in partitions {
            guard let slot = ps.slot(of: id) else { continue }
            let r = ps.customers[slot]
            let a = r.aggregates
            let t = max(r.evaluatedAtMs, ps.streamTimeMs)
            let segs = config.segments
            let bits = segs.memberships(a, now: t, channels: channels, returnedAtMs: r.returnedAtMs)
            let ctx = RuleContext(aggregates: a, now: t, channels: channels, memberships: bits,
                                  models: segs.models, returnedAtMs: r.returnedAtMs)
            let names = segs.segments.map(\.name)
            let flips = segs.nextFlips(a, now: t, channels: channels, returnedAtMs: r.returnedAtMs)
            let memberships = segs.segments.indices.map { i -> CustomerView.Membership in
                let flip = flips[i]
                return CustomerView.Membership(
                    segment: segs.segments[i].name, member: bits & (1 << UInt64(i)) != 0,
                    ruleVersion: String(StableHash.hex128([segs.segments[i].rule]).prefix(12)), rule: segs.segments[i].rule,
                    values: RuleExplainer.values(segs.segments[i].expr, ctx, names: names).map { "\($0.0) = \($0.1)" },
                    nextFlipMs: flip == .max ? nil : flip)
            }
            var windows: [(String, String)] = []
            let types = Set(a.buckets.map(\.type)).sorted().compactMap { EventType(rawValue: $0) }
            for type in types {
                // Only the windows the type is kept for (aggregates.keep): a longer one would
                // count part of its history.
                for w in config.aggregates.windowsMs where w <= config.aggregates.keptMs(type) {
                    windows.append(("count(\(type.name), \(DurationText.format(w)))", String(a.count(type, window: w, at: t))))
                    if type == .purchase || type == .refund {
                        windows.append(("sum(\(type.name), \(DurationText.format(w)))", a.sum(type, window: w, at: t).description))
                    }
                }
            }
            let camps = config.campaigns
            func name(_ h: UInt64) -> String { camps.index(of: h).map { camps.campaigns[$0].name } ?? "(removed campaign)" }
            var view = CustomerView(
                customerID: id, partition: pid, atMs: t, lifetimeEvents: a.lifetimeEvents, lifetimeOrders: a.lifetimeOrders,
                lifetimeSpend: Money(units: a.lifetimeSpend), firstSeenMs: a.firstSeen, lastSeenMs: a.lastSeen,
                distinctChannels: a.distinctChannels, lifetimeOwnedShare: a.lifetimeOwnedShare,
                rfm: RFMClass.of(a, at: t, segs.models),
                lifecycle: LifecycleStage.of(a, returnedAtMs: r.returnedAtMs, at: t, segs.models),
                windows: windows, memberships: memberships)
            view.pending = r.contact.pending.map { (name($0.campaign), $0.dueMs) }
            view.campaigns = r.contact.marks.map { (name($0.campaign), Int($0.episodes), $0.lastContactMs == .min ? nil : $0.lastContactMs) }
            view.ledger = r.contact.ledger.map { (channels.names[Int($0.channel)], $0.atMs) }
            view.consentedChannels = channels.names.indices.dropFirst()
                .filter { r.contact.consented(UInt8($0), optInMask: camps.optInMask) }.map { channels.names[$0] }
            view.timeZone = r.contact.timeZone.isEmpty ? camps.policy.defaultTimeZone : r.contact.timeZone
            return view
        }
        return nil
    }
}
