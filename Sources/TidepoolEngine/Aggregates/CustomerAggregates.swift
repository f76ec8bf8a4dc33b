/// One bucket of activity: events of one type on one channel in one UTC hour (recent) or one UTC
/// day (older than 7 days, stored at the day's first hour). 16 bytes.
public struct ActivityBucket: Sendable, Equatable {
    /// Net amount in Money units (purchases minus refunds applied to this bucket).
    public var amount: Int64
    /// Hours since the Unix epoch.
    public var hour: UInt32
    /// Net number of events (a full refund takes one purchase away from its original bucket).
    public var count: Int16
    public var type: UInt8
    public var channel: UInt8
}

/// A purchase remembered so that a later refund or cancel can find it by `properties.order_id`.
public struct OrderRecord: Sendable, Equatable {
    public var orderKey: UInt64
    public var hour: UInt32
    public var channel: UInt8
    /// Amount not yet refunded; the order is cancelled (count removed) when it reaches 0.
    public var remaining: Int64
}

/// First and last event time for one event type (key < 64) or one channel (64 + channel index).
///
/// 16 bytes: the key rides in the top byte of the first time. Event times are between the epoch
/// and the end of year 9999 (`Timestamp.maxMs`, 48 bits), so 56 signed bits hold any of them;
/// a separate key byte padded each entry to 24 bytes (a typical customer has ~8 entries).
public struct FirstLast: Sendable, Equatable {
    private var keyAndFirst: UInt64
    public var last: Int64

    public init(key: UInt8, first: Int64, last: Int64) {
        assert(first >= -(1 << 55) && first < 1 << 55, "first time out of the 56-bit range")
        keyAndFirst = UInt64(key) << 56 | (UInt64(bitPattern: first) & Self.timeBits)
        self.last = last
    }

    private static let timeBits: UInt64 = (1 << 56) - 1

    public var key: UInt8 { UInt8(truncatingIfNeeded: keyAndFirst >> 56) }

    public var first: Int64 {
        // The low 56 bits, sign-extended.
        get { Int64(bitPattern: keyAndFirst << 8) >> 8 }
        set { keyAndFirst = (keyAndFirst & ~Self.timeBits) | (UInt64(bitPattern: newValue) & Self.timeBits) }
    }
}

/// Rolling and lifetime aggregates of one customer. Sparse by design: only buckets, types and
/// channels that occurred take memory. Every aggregate is mergeable (`merge`).
public struct CustomerAggregates: Sendable, Equatable {
    public internal(set) var buckets: [ActivityBucket] = []
    public internal(set) var orders: [OrderRecord] = []
    public internal(set) var firstLast: [FirstLast] = []
    /// Hashes of recent event ids with their event time, newest last (duplicate detection).
    public internal(set) var recentIDs: [(UInt64, Int64)] = []
    /// Lifetime: events applied, net orders, net spend (LTV).
    public internal(set) var lifetimeEvents: Int64 = 0
    public internal(set) var lifetimeOrders: Int64 = 0
    public internal(set) var lifetimeSpend: Int64 = 0
    public internal(set) var ownedEvents: Int64 = 0
    public internal(set) var platformEvents: Int64 = 0
    /// Bit i set when channel i of the ChannelTable was used.
    public internal(set) var channelsUsed: UInt64 = 0
    /// Buckets below this hour are daily (stored at their day's first hour).
    public internal(set) var dailyBelow: UInt32 = 0

    public init() {}

    public static func == (a: CustomerAggregates, b: CustomerAggregates) -> Bool {
        a.buckets == b.buckets && a.orders == b.orders && a.firstLast == b.firstLast
            && a.recentIDs.map(\.0) == b.recentIDs.map(\.0) && a.recentIDs.map(\.1) == b.recentIDs.map(\.1)
            && a.lifetimeEvents == b.lifetimeEvents && a.lifetimeOrders == b.lifetimeOrders
            && a.lifetimeSpend == b.lifetimeSpend && a.ownedEvents == b.ownedEvents
            && a.platformEvents == b.platformEvents && a.channelsUsed == b.channelsUsed && a.dailyBelow == b.dailyBelow
    }

    public enum Outcome: Equatable { case applied, duplicate }

    @inline(__always) static func hour(_ ms: Int64) -> UInt32 {
        UInt32(clamping: (ms >= 0 ? ms : ms - AggregateConfig.hourMs + 1) / AggregateConfig.hourMs)
    }

    // MARK: - Update

    /// Applies one event. `orderKey` is the hash of `properties.order_id` (purchase, refund,
    /// cancel), `streamTimeMs` the partition's stream time (for compaction and the dedupe horizon).
    public mutating func apply(_ e: TouchpointEvent, channel: UInt8, orderKey: UInt64?, eventKey: UInt64,
                               streamTimeMs: Int64, config: AggregateConfig, channels: ChannelTable) -> Outcome {
        apply(e, channel: channel, orderKey: orderKey, eventKey: eventKey, streamTimeMs: streamTimeMs, limits: config.limits(channels))
    }

    public mutating func apply(_ e: TouchpointEvent, channel: UInt8, orderKey: UInt64?, eventKey: UInt64,
                               streamTimeMs: Int64, limits config: AggregateConfig.Limits) -> Outcome {
        for (h, ts) in recentIDs where h == eventKey && abs(ts - e.timestampMs) <= config.dedupeHorizonMs {
            return .duplicate
        }
        // Drop the oldest before appending, so the array never outgrows the depth (appending
        // first doubled a full array of 8 to room for 16).
        if recentIDs.count >= config.dedupeDepth { recentIDs.removeFirst(recentIDs.count - config.dedupeDepth + 1) }
        Self.makeRoom(&recentIDs, first: 4)
        recentIDs.append((eventKey, e.timestampMs))

        let ts = e.timestampMs
        lifetimeEvents += 1
        let bit: UInt64 = 1 << UInt64(channel)
        channelsUsed |= bit
        if config.ownedMask & bit != 0 { ownedEvents += 1 } else if config.platformMask & bit != 0 { platformEvents += 1 }
        touch(key: e.type.rawValue, ts)
        touch(key: 64 + channel, ts)

        let inRetention = ts > streamTimeMs - config.retentionMs
        let amount = e.amount?.units ?? 0
        if inRetention { add(hour: Self.hour(ts), type: e.type.rawValue, channel: channel, count: 1, amount: amount) }
        switch e.type {
        case .purchase:
            lifetimeOrders += 1
            lifetimeSpend += amount
            if let orderKey, inRetention {
                Self.makeRoom(&orders, first: 2)
                orders.append(OrderRecord(orderKey: orderKey, hour: Self.hour(ts), channel: channel, remaining: amount))
            }
        case .refund, .cancel:
            applyRefund(e, orderKey: orderKey, amount: amount, channel: channel, inRetention: inRetention,
                        oldestOrderHour: Self.hour(streamTimeMs - config.retentionMs))
        default:
            break
        }
        compact(streamTimeMs: streamTimeMs, retentionMs: config.retentionMs)
        return .applied
    }

    /// A refund takes its amount off the purchase it names (by order id) in that purchase's bucket;
    /// when nothing is left of the order (or the event is a `cancel`), the order itself is taken
    /// away too. A refund whose order is unknown applies at its own time and channel.
    private mutating func applyRefund(_ e: TouchpointEvent, orderKey: UInt64?, amount: Int64, channel: UInt8, inRetention: Bool,
                                      oldestOrderHour: UInt32) {
        let purchase = EventType.purchase.rawValue
        if let orderKey, let i = orders.firstIndex(where: { $0.orderKey == orderKey && $0.remaining > 0 && $0.hour >= oldestOrderHour }) {
            let o = orders[i]
            let take = e.type == .cancel ? o.remaining : min(amount, o.remaining)
            let cancels = e.type == .cancel || take >= o.remaining
            orders[i].remaining -= take
            lifetimeSpend -= take
            if cancels { lifetimeOrders -= 1 }
            add(hour: o.hour, type: purchase, channel: o.channel, count: cancels ? -1 : 0, amount: -take)
            return
        }
        // Unknown order: a full reversal at the refund's own time.
        lifetimeSpend -= amount
        lifetimeOrders -= 1
        if inRetention { add(hour: Self.hour(e.timestampMs), type: purchase, channel: channel, count: -1, amount: -amount) }
    }

    private mutating func touch(key: UInt8, _ ts: Int64) {
        for i in firstLast.indices where firstLast[i].key == key {
            if ts < firstLast[i].first { firstLast[i].first = ts }
            if ts > firstLast[i].last { firstLast[i].last = ts }
            return
        }
        Self.makeRoom(&firstLast, first: 8)
        firstLast.append(FirstLast(key: key, first: ts, last: ts))
    }

    private mutating func add(hour h: UInt32, type: UInt8, channel: UInt8, count: Int16, amount: Int64) {
        let hour = h < dailyBelow ? h / 24 * 24 : h
        for i in buckets.indices.reversed() where buckets[i].hour == hour && buckets[i].type == type && buckets[i].channel == channel {
            buckets[i].count &+= count
            buckets[i].amount += amount
            return
        }
        // Keep buckets ordered by hour (late events insert before newer ones). Most events are
        // the newest of their customer: append (Array.insert's generic path cost ~280 instructions).
        Self.makeRoom(&buckets, first: 4)
        let b = ActivityBucket(amount: amount, hour: hour, count: count, type: type, channel: channel)
        guard let lastHour = buckets.last?.hour, lastHour > hour else {
            buckets.append(b)
            return
        }
        var at = buckets.count
        while at > 0 && buckets[at - 1].hour > hour { at -= 1 }
        buckets.insert(b, at: at)
    }

    /// Grows a full array by a quarter instead of Swift's doubling (which left a customer of 50
    /// buckets holding room for 100): state per customer is what bounds how many fit in memory.
    /// An empty array starts with room for `first` elements, the size a typical customer (~4
    /// events: ~4 buckets, ~7 first/last keys, 4 recent ids) ends with anyway: growing 1, 2, 4, 8
    /// cost ~3 reallocations per event (~800 instructions, callgrind) for the same final size.
    @inline(__always)
    static func makeRoom<T>(_ a: inout [T], first: Int) {
        let n = a.count
        guard n == a.capacity else { return }
        if n == 0 { a.reserveCapacity(first) } else if n >= 8 { a.reserveCapacity(n + n / 4) }
    }

    /// Folds buckets older than 7 days into daily buckets and drops those past retention. Runs when
    /// stream time has crossed a UTC day boundary since the last fold, so its cost is paid about
    /// once per customer per active day.
    public mutating func compact(streamTimeMs: Int64, config: AggregateConfig) {
        compact(streamTimeMs: streamTimeMs, retentionMs: config.retentionMs)
    }

    @inline(__always)
    mutating func compact(streamTimeMs: Int64, retentionMs: Int64) {
        let floor = Self.hour(streamTimeMs - AggregateConfig.hourlyLimitMs) / 24 * 24
        guard floor > dailyBelow else { return }
        compactSlowPath(streamTimeMs: streamTimeMs, retentionMs: retentionMs, floor: floor)
    }

    /// In place: building a new array here allocated once per customer per active day.
    private mutating func compactSlowPath(streamTimeMs: Int64, retentionMs: Int64, floor: UInt32) {
        dailyBelow = floor
        let dropBefore = Self.hour(streamTimeMs - retentionMs)
        guard let oldest = buckets.first, oldest.hour < floor else { return }
        var kept = 0
        buckets.withUnsafeMutableBufferPointer { bs in
            var n = 0
            for k in bs.indices {
                var b = bs[k]
                if b.hour < dropBefore { continue }
                if b.hour < floor {
                    b.hour = b.hour / 24 * 24
                    // Same-day buckets are adjacent (ordered by hour): look back over this day only.
                    var j = n - 1
                    var merged = false
                    while j >= 0 && bs[j].hour == b.hour {
                        if bs[j].type == b.type && bs[j].channel == b.channel {
                            bs[j].count &+= b.count
                            bs[j].amount += b.amount
                            merged = true
                            break
                        }
                        j -= 1
                    }
                    if merged { continue }
                }
                bs[n] = b
                n += 1
            }
            kept = n
        }
        if kept < buckets.count { buckets.removeLast(buckets.count - kept) }
        // Only when there are orders: `removeAll(where:)` on an empty array made it unique
        // first, which allocated an empty buffer, for most customers on every fold.
        if !orders.isEmpty { orders.removeAll { $0.hour < dropBefore } }
    }

    // MARK: - Queries

    /// First hour inside window `w` at time `t` (see AggregateConfig for the semantics).
    @inline(__always) static func windowStartHour(_ w: Int64, at t: Int64) -> UInt32 {
        let h = Int64(hour(t))
        if w <= AggregateConfig.hourlyLimitMs {
            return UInt32(clamping: h - w / AggregateConfig.hourMs + 1)
        }
        let day = h / 24
        return UInt32(clamping: (day - w / AggregateConfig.dayMs + 1) * 24)
    }

    /// Hot-path forms of the queries: raw type, channel -1 for any.
    @inline(__always)
    func count(rawType: UInt8, window w: Int64, at t: Int64, channel: Int16) -> Int64 {
        let from = Self.windowStartHour(w, at: t), to = Self.hour(t)
        var n: Int64 = 0
        for b in buckets where b.type == rawType && b.hour >= from && b.hour <= to && (channel < 0 || Int16(b.channel) == channel) {
            n += Int64(b.count)
        }
        return n
    }

    @inline(__always)
    func sum(rawType: UInt8, window w: Int64, at t: Int64, channel: Int16) -> Int64 {
        let from = Self.windowStartHour(w, at: t), to = Self.hour(t)
        var n: Int64 = 0
        for b in buckets where b.type == rawType && b.hour >= from && b.hour <= to && (channel < 0 || Int16(b.channel) == channel) {
            n += b.amount
        }
        return n
    }

    func first(rawKey: UInt8) -> Int64? {
        for f in firstLast where f.key == rawKey { return f.first }
        return nil
    }

    func last(rawKey: UInt8) -> Int64? {
        for f in firstLast where f.key == rawKey { return f.last }
        return nil
    }

    /// First event of any type.
    public var firstSeen: Int64? {
        // Through a buffer pointer and without an optional in the loop: rules, timers and
        // retention read these several times per evaluation, and the iterator retained the array
        // (~100 instructions per evaluation, callgrind).
        firstLast.withUnsafeBufferPointer { fl in
            var v = Int64.max, found = false
            for f in fl where f.key < 64 {
                found = true
                if f.first < v { v = f.first }
            }
            return found ? v : nil
        }
    }

    /// Net count of `type` events in window `w` ending at `t` (optionally on one channel).
    public func count(_ type: EventType, window w: Int64, at t: Int64, channel: UInt8? = nil) -> Int64 {
        let from = Self.windowStartHour(w, at: t), to = Self.hour(t)
        var n: Int64 = 0
        for b in buckets where b.type == type.rawValue && b.hour >= from && b.hour <= to && (channel == nil || b.channel == channel!) {
            n += Int64(b.count)
        }
        return n
    }

    /// Net amount of `type` events in window `w` ending at `t`.
    public func sum(_ type: EventType, window w: Int64, at t: Int64, channel: UInt8? = nil) -> Money {
        let from = Self.windowStartHour(w, at: t), to = Self.hour(t)
        var n: Int64 = 0
        for b in buckets where b.type == type.rawValue && b.hour >= from && b.hour <= to && (channel == nil || b.channel == channel!) {
            n += b.amount
        }
        return Money(units: n)
    }

    /// Net events on owned channels among owned + platform events in the window, 0...1 (nil when none).
    public func ownedShare(window w: Int64, at t: Int64, channels: ChannelTable) -> Double? {
        let from = Self.windowStartHour(w, at: t), to = Self.hour(t)
        var owned: Int64 = 0, platform: Int64 = 0
        for b in buckets where b.hour >= from && b.hour <= to {
            let bit: UInt64 = 1 << UInt64(b.channel)
            if channels.ownedMask & bit != 0 { owned += Int64(b.count) } else if channels.platformMask & bit != 0 { platform += Int64(b.count) }
        }
        return owned + platform > 0 ? Double(owned) / Double(owned + platform) : nil
    }

    /// Lifetime share of owned-channel events (nil before any owned or platform event).
    public var lifetimeOwnedShare: Double? {
        ownedEvents + platformEvents > 0 ? Double(ownedEvents) / Double(ownedEvents + platformEvents) : nil
    }

    public func first(_ type: EventType) -> Int64? { firstLast.first { $0.key == type.rawValue }?.first }
    public func last(_ type: EventType) -> Int64? { firstLast.first { $0.key == type.rawValue }?.last }
    public func first(channel: UInt8) -> Int64? { firstLast.first { $0.key == 64 + channel }?.first }
    public func last(channel: UInt8) -> Int64? { firstLast.first { $0.key == 64 + channel }?.last }
    /// Last event of any type.
    public var lastSeen: Int64? {
        firstLast.withUnsafeBufferPointer { fl in
            var v = Int64.min, found = false
            for f in fl where f.key < 64 {
                found = true
                if f.last > v { v = f.last }
            }
            return found ? v : nil
        }
    }
    public var distinctChannels: Int { channelsUsed.nonzeroBitCount }

    // MARK: - Merge

    /// Combines two states of the same customer (identity stitching, scale-out). Sums are added,
    /// first/last take min/max, buckets of the same hour, type and channel are added up.
    public mutating func merge(_ o: CustomerAggregates, config: AggregateConfig, streamTimeMs: Int64) {
        for b in o.buckets { add(hour: b.hour, type: b.type, channel: b.channel, count: b.count, amount: b.amount) }
        for r in o.orders where !orders.contains(where: { $0.orderKey == r.orderKey }) { orders.append(r) }
        for f in o.firstLast {
            touch(key: f.key, f.first)
            touch(key: f.key, f.last)
        }
        var ids = recentIDs
        for r in o.recentIDs where !ids.contains(where: { $0.0 == r.0 }) { ids.append(r) }
        ids.sort { $0.1 < $1.1 }
        recentIDs = Array(ids.suffix(config.dedupeDepth))
        lifetimeEvents += o.lifetimeEvents
        lifetimeOrders += o.lifetimeOrders
        lifetimeSpend += o.lifetimeSpend
        ownedEvents += o.ownedEvents
        platformEvents += o.platformEvents
        channelsUsed |= o.channelsUsed
        compact(streamTimeMs: streamTimeMs, config: config)
    }
}
