/// Identifies a Kafka partition. State is kept per partition from the start so that a partition's
/// customers can move between hosts with it.
public struct PartitionID: Hashable, Sendable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32
    public init(topic: String, partition: Int32) {
        self.topic = topic
        self.partition = partition
    }
    public var description: String { "\(topic)[\(partition)]" }
}

/// What the engine keeps for one customer. The state-engine issue grows this into windowed
/// aggregates; the foundation keeps lifetime totals and first/last seen.
public struct CustomerState: Sendable, Equatable {
    public var firstSeenMs: Int64
    public var lastSeenMs: Int64
    public var events: Int64 = 0
    public var orders: Int64 = 0
    public var spend: Money = Money(units: 0)
    public var firstPurchaseMs: Int64? = nil
}

/// The built-in rule of the foundation: contact a customer once, right after the first purchase.
public struct FirstPurchaseRule: Sendable, Equatable {
    public var enabled: Bool
    public var campaign: String
    public var channel: String
    /// How long downstream may still send the message after it fired.
    public var ttlMs: Int64

    public init(enabled: Bool = true, campaign: String = "first_purchase_welcome", channel: String = "wecom",
                ttlMs: Int64 = 72 * 3_600_000) {
        self.enabled = enabled
        self.campaign = campaign
        self.channel = channel
        self.ttlMs = ttlMs
    }
}

/// The per-partition state of one partition.
public struct PartitionState: Sendable {
    public var customers: [String: CustomerState] = [:]
    /// Maximum event time seen on the partition.
    public var maxEventTimeMs: Int64 = .min
    public init() {}
}

/// The pure customer engine: events in, state updated, triggers out. It has no I/O and no clock;
/// the same events in the same order always give the same state and the same triggers.
public final class Engine {
    public private(set) var partitions: [PartitionID: PartitionState] = [:]
    public var firstPurchase: FirstPurchaseRule

    public init(firstPurchase: FirstPurchaseRule = FirstPurchaseRule()) {
        self.firstPurchase = firstPurchase
    }

    /// Starts keeping state for a partition (empty until the store issue restores it).
    public func assign(_ p: PartitionID) {
        if partitions[p] == nil { partitions[p] = PartitionState() }
    }

    /// Drops a partition's state from memory (it was revoked or lost).
    public func release(_ p: PartitionID) {
        partitions[p] = nil
    }

    public var customerCount: Int { partitions.values.reduce(0) { $0 + $1.customers.count } }

    public func customer(_ id: String) -> CustomerState? {
        for p in partitions.values { if let c = p.customers[id] { return c } }
        return nil
    }

    /// Applies one event of partition `p` and calls `emit` for each trigger it causes.
    @inline(__always)
    public func apply(_ e: TouchpointEvent, partition p: PartitionID, emit: (Trigger) -> Void) {
        // A partition used without `assign` (e.g. a test driving the engine directly) gets state
        // on first use (`withState` inserts it).
        var fired: Trigger? = nil
        withState(p) { ps in
            if e.timestampMs > ps.maxEventTimeMs { ps.maxEventTimeMs = e.timestampMs }
            var c = ps.customers[e.customerID] ?? CustomerState(firstSeenMs: e.timestampMs, lastSeenMs: e.timestampMs)
            c.events += 1
            if e.timestampMs < c.firstSeenMs { c.firstSeenMs = e.timestampMs }
            if e.timestampMs > c.lastSeenMs { c.lastSeenMs = e.timestampMs }
            if e.type == .purchase {
                c.orders += 1
                if let a = e.amount { c.spend = c.spend + a }
                if c.firstPurchaseMs == nil {
                    c.firstPurchaseMs = e.timestampMs
                    if firstPurchase.enabled { fired = firstPurchaseTrigger(e, c) }
                }
            }
            ps.customers[e.customerID] = c
        }
        if let fired { emit(fired) }
    }

    @inline(__always)
    private func withState(_ p: PartitionID, _ body: (inout PartitionState) -> Void) {
        // Mutate in place through the dictionary's accessor: no copy of the customer table.
        body(&partitions[p, default: PartitionState()])
    }

    private func firstPurchaseTrigger(_ e: TouchpointEvent, _ c: CustomerState) -> Trigger {
        let rule = firstPurchase
        return Trigger(
            triggerID: Trigger.id(customerID: e.customerID, campaign: rule.campaign, episode: 1),
            campaign: rule.campaign, customerID: e.customerID, channel: rule.channel,
            reasonKind: "first_purchase",
            reasonDetail: "first purchase of \(e.amount.map { $0.description } ?? "0") \(e.currency ?? "") on \(e.channel)",
            causeEventID: e.eventID, episode: 1,
            firedAtMs: e.timestampMs, expiresAtMs: e.timestampMs + rule.ttlMs,
            snapshot: [("orders", .int(c.orders)), ("spend", .money(c.spend)),
                       ("first_seen", .time(c.firstSeenMs))])
    }
}
