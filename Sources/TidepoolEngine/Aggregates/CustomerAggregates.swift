/// One bucket of activity: events of one type on one channel in one UTC hour (recent) or one UTC
/// day (older than 7 days, stored at the day's first hour). Stored as one or two words
/// (`BucketWords`); this is the form it is read in.
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

/// How an `OrderRecord` is kept: 16 bytes instead of 24 (a 50-event customer holds ~6 orders).
///
///     key (top 58 bits of the order id's hash) | channel (6 bits)
///     hour (22 bits: until year 2448)          | remaining (42 bits: 0 to 439,804,651 yuan)
///
/// Two order ids of one customer are told apart by 58 bits of their hashes. A purchase whose
/// amount or hour does not fit (negative, 440 million yuan or more, or dated before 1970 or
/// after 2447) is not remembered: a refund naming it counts as one whose order is unknown.
struct PackedOrder: Equatable {
    var keyAndChannel: UInt64
    var hourAndRemaining: UInt64

    static let remainingBits: UInt64 = 42
    static let remainingMask: UInt64 = (1 << remainingBits) - 1

    /// The part of an order id's hash that is kept and compared.
    @inline(__always) static func key(_ hash: UInt64) -> UInt64 { hash & ~63 }

    @inline(__always)
    static func fits(hour: UInt32, remaining: Int64) -> Bool {
        UInt64(hour) < 1 << (64 - remainingBits) && remaining >= 0 && UInt64(remaining) <= remainingMask
    }

    @inline(__always)
    init(_ o: OrderRecord) {
        assert(Self.fits(hour: o.hour, remaining: o.remaining) && o.channel < 64)
        keyAndChannel = Self.key(o.orderKey) | UInt64(o.channel & 63)
        hourAndRemaining = UInt64(o.hour) << Self.remainingBits | UInt64(o.remaining)
    }

    @inline(__always) var key: UInt64 { Self.key(keyAndChannel) }
    @inline(__always) var channel: UInt8 { UInt8(truncatingIfNeeded: keyAndChannel & 63) }
    @inline(__always) var hour: UInt32 { UInt32(truncatingIfNeeded: hourAndRemaining >> Self.remainingBits) }
    @inline(__always) var remaining: Int64 {
        get { Int64(hourAndRemaining & Self.remainingMask) }
        set {
            assert(newValue >= 0 && UInt64(newValue) <= Self.remainingMask)
            hourAndRemaining = (hourAndRemaining & ~Self.remainingMask) | UInt64(newValue)
        }
    }
    var record: OrderRecord { OrderRecord(orderKey: key, hour: hour, channel: channel, remaining: remaining) }
}

/// The hash of a recent event id with its event time (duplicate detection).
struct RecentID {
    var hash: UInt64
    var timeMs: Int64
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
/// channels that occurred take memory, all of it in one allocation (`AggregateSections`). Every
/// aggregate is mergeable (`merge`).
public struct CustomerAggregates: Sendable, Equatable {
    // The fields are in this order so that no byte is padding: `dailyBelow` fills the end of the
    // sections' last word, and the two 32-bit counts share one. The aggregates take 64 bytes and
    // a `CustomerRecord` 128, two cache lines (it was 144, three lines).
    var sections = AggregateSections()
    /// Buckets below this hour are daily (stored at their day's first hour).
    public internal(set) var dailyBelow: UInt32 = 0
    /// Lifetime: events applied, net orders, net spend (LTV).
    public internal(set) var lifetimeEvents: Int64 = 0
    public internal(set) var lifetimeOrders: Int64 = 0
    public internal(set) var lifetimeSpend: Int64 = 0
    /// Bit i set when channel i of the ChannelTable was used.
    public internal(set) var channelsUsed: UInt64 = 0
    /// Lifetime events on owned and on platform channels, 32 bits each. They only ever serve as a
    /// ratio (the lifetime owned share), so when one would pass 2^32 - 1 both are halved, which
    /// keeps the ratio to within an event (a customer id that 4 billion events share).
    private var ownedCount: UInt32 = 0
    private var platformCount: UInt32 = 0

    public var ownedEvents: Int64 { Int64(ownedCount) }
    public var platformEvents: Int64 { Int64(platformCount) }

    /// Sets both channel counts (a decoder, a merge), halving both until each fits in 32 bits.
    mutating func setChannelCounts(owned: Int64, platform: Int64) {
        var o = Swift.max(owned, 0), p = Swift.max(platform, 0)
        while o > Int64(UInt32.max) || p > Int64(UInt32.max) {
            o /= 2
            p /= 2
        }
        ownedCount = UInt32(o)
        platformCount = UInt32(p)
    }

    @inline(__always)
    private mutating func countChannel(owned: Bool) {
        if (owned ? ownedCount : platformCount) == .max {
            ownedCount /= 2
            platformCount /= 2
        }
        if owned { ownedCount += 1 } else { platformCount += 1 }
    }

    public init() {}

    /// Buckets ordered by hour (copies; the hot paths read them in place with `withBuckets`).
    public var buckets: [ActivityBucket] { withBuckets { Array($0) } }
    /// Remembered orders (their keys are the kept 58 bits of the hash, `PackedOrder`).
    public var orders: [OrderRecord] { sections.read(.orders, as: PackedOrder.self) { $0.map(\.record) } }
    public var firstLast: [FirstLast] { sections.array(.firstLast, as: FirstLast.self) }
    /// Hashes of recent event ids with their event time, newest last (duplicate detection).
    public var recentIDs: [(UInt64, Int64)] { sections.read(.recentIDs, as: RecentID.self) { $0.map { ($0.hash, $0.timeMs) } } }
    public var bucketCount: Int { withBuckets { $0.count } }
    /// Bytes the buckets take (8 per bucket, 16 with an amount).
    public var bucketBytes: Int { 8 * sections.count(.buckets) }
    /// Bytes the remembered orders take (16 each).
    public var orderBytes: Int { MemoryLayout<PackedOrder>.stride * sections.count(.orders) }

    /// The buckets in place, ordered by hour.
    @inline(__always)
    func withBuckets<R>(_ body: (BucketSequence) throws -> R) rethrows -> R {
        try sections.read(.buckets, as: UInt64.self) { try body(BucketSequence(words: $0)) }
    }

    @inline(__always)
    func withFirstLast<R>(_ body: (UnsafeBufferPointer<FirstLast>) throws -> R) rethrows -> R {
        try sections.read(.firstLast, as: FirstLast.self, body)
    }

    /// Words held for the sections (capacity), for memory accounting.
    public var sectionBytes: Int { sections.words.capacity * 8 }

    // MARK: - Building (the checkpoint decoder)

    /// Appends, in order, what a decoder read; `reserve` first when the counts are known.
    mutating func reserve(buckets: Int = 0, orders: Int = 0, firstLast: Int = 0, recentIDs: Int = 0) {
        sections.reserve(extraWords: buckets + 2 * orders + 2 * firstLast + 2 * recentIDs)
    }
    mutating func appendBucket(_ b: ActivityBucket) {
        sections.append(BucketWords.header(hour: b.hour, type: b.type, channel: b.channel, count: b.count), to: .buckets)
        if b.amount != 0 { sections.append(BucketWords.amountWord(b.amount), to: .buckets) }
    }
    /// After a decoder's appends: no room for growth kept.
    mutating func finishBuilding() { sections.shrinkToFit() }
    /// Remembers an order when it fits its packed form (`PackedOrder`).
    mutating func appendOrder(_ o: OrderRecord) {
        if PackedOrder.fits(hour: o.hour, remaining: o.remaining) { sections.append(PackedOrder(o), to: .orders) }
    }
    mutating func appendFirstLast(_ f: FirstLast) { sections.append(f, to: .firstLast) }
    mutating func appendRecentID(_ hash: UInt64, _ ts: Int64) { sections.append(RecentID(hash: hash, timeMs: ts), to: .recentIDs) }

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
        apply(type: e.type, timestampMs: e.timestampMs, amount: e.amount?.units ?? 0, channel: channel, orderKey: orderKey,
              eventKey: eventKey, streamTimeMs: streamTimeMs, limits: config)
    }

    /// The update itself, from the facts of the event it needs (the engine reads them out of the
    /// event where it lies: passing the whole event copied it, ~3% of the engine's instructions).
    @inline(__always)
    mutating func apply(type: EventType, timestampMs ts: Int64, amount: Int64, channel: UInt8, orderKey: UInt64?, eventKey: UInt64,
                        streamTimeMs: Int64, limits config: AggregateConfig.Limits) -> Outcome {
        // Ids of events older than stream time minus the horizon are forgotten first: a customer
        // seen once a week keeps one id, not eight (a 50-event customer's 128 bytes of ids).
        let horizonStart = streamTimeMs - config.dedupeHorizonMs
        forgetRecentIDs(before: horizonStart)
        let seen = sections.read(.recentIDs, as: RecentID.self) { ids in
            for r in ids where r.hash == eventKey && abs(r.timeMs - ts) <= config.dedupeHorizonMs { return true }
            return false
        }
        if seen { return .duplicate }
        // A full window drops its oldest id in place; the section never outgrows the depth.
        let ids = sections.count(.recentIDs)
        if ids == config.dedupeDepth && ids > 0 {
            sections.rotate(RecentID(hash: eventKey, timeMs: ts), in: .recentIDs)
        } else if config.dedupeDepth > 0 {
            if ids > config.dedupeDepth { sections.remove(.recentIDs, at: 0, count: ids - config.dedupeDepth + 1) }
            sections.append(RecentID(hash: eventKey, timeMs: ts), to: .recentIDs)
        }

        lifetimeEvents += 1
        let bit: UInt64 = 1 << UInt64(channel)
        channelsUsed |= bit
        if config.ownedMask & bit != 0 { countChannel(owned: true) } else if config.platformMask & bit != 0 { countChannel(owned: false) }
        touch(type: type.rawValue, channel: channel, ts)

        // Each type's buckets last as long as its `keep` (KeptBuckets); refunds and cancels change
        // purchase buckets and orders, which last as long as purchases are kept.
        let kept = config.kept.retentionMs(rawType: type.rawValue)
        let inRetention = kept > 0 && ts > streamTimeMs - kept
        if inRetention { add(hour: Self.hour(ts), type: type.rawValue, channel: channel, count: 1, amount: amount) }
        switch type {
        case .purchase:
            lifetimeOrders += 1
            lifetimeSpend += amount
            if let orderKey, inRetention {
                appendOrder(OrderRecord(orderKey: orderKey, hour: Self.hour(ts), channel: channel, remaining: amount))
            }
        case .refund, .cancel:
            let purchases = config.kept.retentionMs(rawType: EventType.purchase.rawValue)
            applyRefund(cancel: type == .cancel, timestampMs: ts, orderKey: orderKey, amount: amount, channel: channel,
                        inRetention: purchases > 0 && ts > streamTimeMs - purchases,
                        oldestOrderHour: Self.hour(streamTimeMs - purchases))
        default:
            break
        }
        compact(streamTimeMs: streamTimeMs, kept: config.kept)
        return .applied
    }

    /// Drops the recent ids of events dated before `start`, keeping the others in their order.
    /// Each id is dropped once, so this moves the customer's later words at most once per event.
    @inline(__always)
    mutating func forgetRecentIDs(before start: Int64) {
        sections.keep(.recentIDs, as: RecentID.self) { $0.timeMs >= start }
    }

    /// A refund takes its amount off the purchase it names (by order id) in that purchase's bucket;
    /// when nothing is left of the order (or the event is a `cancel`), the order itself is taken
    /// away too. A refund whose order is unknown applies at its own time and channel.
    private mutating func applyRefund(cancel: Bool, timestampMs: Int64, orderKey: UInt64?, amount: Int64, channel: UInt8, inRetention: Bool,
                                      oldestOrderHour: UInt32) {
        let purchase = EventType.purchase.rawValue
        let found: OrderRecord? = orderKey.flatMap { hash in
            let key = PackedOrder.key(hash)
            return sections.modify(.orders, as: PackedOrder.self) { orders -> OrderRecord? in
                guard let i = orders.firstIndex(where: { $0.key == key && $0.remaining > 0 && $0.hour >= oldestOrderHour })
                else { return nil }
                let o = orders[i].record
                orders[i].remaining -= cancel ? o.remaining : min(amount, o.remaining)
                return o
            }
        }
        if let o = found {
            let take = cancel ? o.remaining : min(amount, o.remaining)
            let cancels = cancel || take >= o.remaining
            lifetimeSpend -= take
            if cancels { lifetimeOrders -= 1 }
            add(hour: o.hour, type: purchase, channel: o.channel, count: cancels ? -1 : 0, amount: -take)
            return
        }
        // Unknown order: a full reversal at the refund's own time.
        lifetimeSpend -= amount
        lifetimeOrders -= 1
        if inRetention { add(hour: Self.hour(timestampMs), type: purchase, channel: channel, count: -1, amount: -amount) }
    }

    /// `touch(key: type)` then `touch(key: 64 + channel)` in one pass over the section (one
    /// write access to the words instead of two).
    @inline(__always)
    private mutating func touch(type: UInt8, channel: UInt8, _ ts: Int64) {
        let channelKey = 64 &+ channel
        let known = sections.modify(.firstLast, as: FirstLast.self) { fl -> (Bool, Bool) in
            var type0 = false, channel0 = false
            for i in fl.indices {
                let k = fl[i].key
                guard k == type || k == channelKey else { continue }
                if ts < fl[i].first { fl[i].first = ts }
                if ts > fl[i].last { fl[i].last = ts }
                if k == type { type0 = true } else { channel0 = true }
                if type0 && channel0 { break }
            }
            return (type0, channel0)
        }
        if !known.0 { sections.append(FirstLast(key: type, first: ts, last: ts), to: .firstLast) }
        if !known.1 { sections.append(FirstLast(key: channelKey, first: ts, last: ts), to: .firstLast) }
    }

    @inline(__always)
    private mutating func touch(key: UInt8, _ ts: Int64) {
        let known = sections.modify(.firstLast, as: FirstLast.self) { fl in
            for i in fl.indices where fl[i].key == key {
                if ts < fl[i].first { fl[i].first = ts }
                if ts > fl[i].last { fl[i].last = ts }
                return true
            }
            return false
        }
        if !known { sections.append(FirstLast(key: key, first: ts, last: ts), to: .firstLast) }
    }

    private mutating func add(hour h: UInt32, type: UInt8, channel: UInt8, count: Int16, amount: Int64) {
        let hour = h < dailyBelow ? h / 24 * 24 : h
        let key = BucketWords.key(hour: hour, type: type, channel: channel)
        // From the newest bucket back (most events are their customer's newest): the bucket of
        // this hour, type and channel if there is one (its count and an existing amount word
        // updated in place), else the word after the last bucket not newer than `hour`, where
        // buckets stay ordered by hour. Only an amount word to add or drop is left to do after.
        enum Found { case updated, addAmountWord(at: Int), dropAmountWord(at: Int), insertAt(Int) }
        let found = sections.modify(.buckets, as: UInt64.self) { w -> Found in
            var end = w.count, insertAt = -1
            while end > 0 {
                let start = BucketWords.isHeader(w[end - 1]) ? end - 1 : end - 2
                let hw = w[start]
                let bh = BucketWords.hour(hw)
                if bh <= hour && insertAt < 0 { insertAt = end }
                if bh < hour { break }
                if hw & BucketWords.keyMask == key {
                    w[start] = BucketWords.withCount(hw, BucketWords.count(hw) &+ count)
                    guard amount != 0 else { return .updated }
                    guard end - start == 2 else { return .addAmountWord(at: start + 1) }
                    let net = BucketWords.amount(w[start + 1]) + amount
                    guard net != 0 else { return .dropAmountWord(at: start + 1) }
                    w[start + 1] = BucketWords.amountWord(net)
                    return .updated
                }
                end = start
            }
            return .insertAt(insertAt < 0 ? 0 : insertAt)
        }
        let at: Int
        switch found {
        case .updated: return
        case .addAmountWord(let i): sections.insert(BucketWords.amountWord(amount), in: .buckets, at: i); return
        case .dropAmountWord(let i): sections.remove(.buckets, at: i); return
        case .insertAt(let i): at = i
        }
        sections.insert(BucketWords.withCount(key, count), in: .buckets, at: at)
        if amount != 0 { sections.insert(BucketWords.amountWord(amount), in: .buckets, at: at + 1) }
    }

    /// Folds buckets older than 7 days into daily buckets and drops those past retention. Runs when
    /// stream time has crossed a UTC day boundary since the last fold, so its cost is paid about
    /// once per customer per active day.
    public mutating func compact(streamTimeMs: Int64, config: AggregateConfig) {
        compact(streamTimeMs: streamTimeMs, kept: KeptBuckets(config))
    }

    @inline(__always)
    mutating func compact(streamTimeMs: Int64, kept: KeptBuckets) {
        let floor = Self.hour(streamTimeMs - AggregateConfig.hourlyLimitMs) / 24 * 24
        guard floor > dailyBelow else { return }
        compactSlowPath(streamTimeMs: streamTimeMs, kept: kept, floor: floor)
    }

    /// In place: building a new array here allocated once per customer per active day.
    private mutating func compactSlowPath(streamTimeMs: Int64, kept: KeptBuckets, floor: UInt32) {
        dailyBelow = floor
        // The first hour each type still keeps (an hour past the end of time for a type that
        // keeps no buckets).
        @inline(__always) func dropBefore(_ type: UInt8) -> UInt32 {
            let r = kept.retentionMs(rawType: type)
            return r > 0 ? Self.hour(streamTimeMs - r) : .max
        }
        // Orders last as long as purchase buckets (after the buckets, on every path: the order
        // section lies before them, so trimming it first would move every bucket word).
        let ordersFrom = dropBefore(EventType.purchase.rawValue)
        defer { sections.keep(.orders, as: PackedOrder.self) { $0.hour >= ordersFrom } }
        let first = sections.read(.buckets, as: UInt64.self) { $0.first.map(BucketWords.hour) }
        // A type kept less than 7 days can have buckets to drop above the daily floor.
        let shortest = kept.isUniform ? 0 : Self.hour(streamTimeMs - AggregateConfig.dayMs)
        guard let oldest = first, oldest < Swift.max(floor, shortest) else { return }
        // In place over the words: a read cursor `r` and a write cursor `n` behind it. A folded
        // bucket's words never outnumber those of the buckets folded into it (an amount word is
        // added only for an amount read with its own word), so `n` stays at or behind `r`.
        let written = sections.modify(.buckets, as: UInt64.self) { w -> Int in
            var r = 0, n = 0
            while r < w.count {
                var (h, amount) = BucketWords.read(UnsafeBufferPointer(w), &r)
                let hour = BucketWords.hour(h)
                if hour < dropBefore(BucketWords.type(h)) { continue }
                if hour < floor {
                    let day = hour / 24 * 24
                    h = BucketWords.withHour(h, day)
                    // Same-day buckets are adjacent (ordered by hour): look back over this day only.
                    var end = n
                    var merged = false
                    while end > 0 {
                        let start = BucketWords.isHeader(w[end - 1]) ? end - 1 : end - 2
                        let o = w[start]
                        guard BucketWords.hour(o) == day else { break }
                        if o & BucketWords.keyMask == h & BucketWords.keyMask {
                            w[start] = BucketWords.withCount(o, BucketWords.count(o) &+ BucketWords.count(h))
                            if amount != 0 {
                                if end - start == 2 {
                                    let net = BucketWords.amount(w[start + 1]) + amount
                                    if net != 0 {
                                        w[start + 1] = BucketWords.amountWord(net)
                                    } else {
                                        for k in (start + 1)..<(n - 1) { w[k] = w[k + 1] }
                                        n -= 1
                                    }
                                } else {
                                    var k = n
                                    while k > start + 1 { w[k] = w[k - 1]; k -= 1 }
                                    w[start + 1] = BucketWords.amountWord(amount)
                                    n += 1
                                }
                            }
                            merged = true
                            break
                        }
                        end = start
                    }
                    if merged { continue }
                }
                w[n] = h
                n += 1
                if amount != 0 {
                    w[n] = BucketWords.amountWord(amount)
                    n += 1
                }
            }
            return n
        }
        sections.truncate(.buckets, to: written)
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
        return withBuckets { bs in
            var n: Int64 = 0
            for b in bs where b.type == rawType && b.hour >= from && b.hour <= to && (channel < 0 || Int16(b.channel) == channel) {
                n += Int64(b.count)
            }
            return n
        }
    }

    @inline(__always)
    func sum(rawType: UInt8, window w: Int64, at t: Int64, channel: Int16) -> Int64 {
        let from = Self.windowStartHour(w, at: t), to = Self.hour(t)
        return withBuckets { bs in
            var n: Int64 = 0
            for b in bs where b.type == rawType && b.hour >= from && b.hour <= to && (channel < 0 || Int16(b.channel) == channel) {
                n += b.amount
            }
            return n
        }
    }

    @inline(__always)
    func first(rawKey: UInt8) -> Int64? { withFirstLast { Self.first($0, rawKey: rawKey) } }

    @inline(__always)
    func last(rawKey: UInt8) -> Int64? { withFirstLast { Self.last($0, rawKey: rawKey) } }

    /// First event of any type.
    @inline(__always)
    public var firstSeen: Int64? { withFirstLast { Self.firstSeen($0) } }

    // The same reads over a first/last section already in hand (the flip timing takes the
    // section once per evaluation instead of once per term).

    @inline(__always)
    static func first(_ fl: UnsafeBufferPointer<FirstLast>, rawKey: UInt8) -> Int64? {
        for f in fl where f.key == rawKey { return f.first }
        return nil
    }

    @inline(__always)
    static func last(_ fl: UnsafeBufferPointer<FirstLast>, rawKey: UInt8) -> Int64? {
        for f in fl where f.key == rawKey { return f.last }
        return nil
    }

    /// Without an optional in the loop: rules, timers and retention read these several times per
    /// evaluation (~100 instructions per evaluation with one, callgrind).
    @inline(__always)
    static func firstSeen(_ fl: UnsafeBufferPointer<FirstLast>) -> Int64? {
        var v = Int64.max, found = false
        for f in fl where f.key < 64 {
            found = true
            if f.first < v { v = f.first }
        }
        return found ? v : nil
    }

    @inline(__always)
    static func lastSeen(_ fl: UnsafeBufferPointer<FirstLast>) -> Int64? {
        var v = Int64.min, found = false
        for f in fl where f.key < 64 {
            found = true
            if f.last > v { v = f.last }
        }
        return found ? v : nil
    }

    /// Net count of `type` events in window `w` ending at `t` (optionally on one channel).
    public func count(_ type: EventType, window w: Int64, at t: Int64, channel: UInt8? = nil) -> Int64 {
        let from = Self.windowStartHour(w, at: t), to = Self.hour(t)
        return withBuckets { bs in
            var n: Int64 = 0
            for b in bs where b.type == type.rawValue && b.hour >= from && b.hour <= to && (channel == nil || b.channel == channel!) {
                n += Int64(b.count)
            }
            return n
        }
    }

    /// Net amount of `type` events in window `w` ending at `t`.
    public func sum(_ type: EventType, window w: Int64, at t: Int64, channel: UInt8? = nil) -> Money {
        let from = Self.windowStartHour(w, at: t), to = Self.hour(t)
        return Money(units: withBuckets { bs in
            var n: Int64 = 0
            for b in bs where b.type == type.rawValue && b.hour >= from && b.hour <= to && (channel == nil || b.channel == channel!) {
                n += b.amount
            }
            return n
        })
    }

    /// Net events on owned channels among owned + platform events in the window, 0...1 (nil when none).
    public func ownedShare(window w: Int64, at t: Int64, channels: ChannelTable) -> Double? {
        let from = Self.windowStartHour(w, at: t), to = Self.hour(t)
        var owned: Int64 = 0, platform: Int64 = 0
        withBuckets { bs in
            for b in bs where b.hour >= from && b.hour <= to {
                let bit: UInt64 = 1 << UInt64(b.channel)
                if channels.ownedMask & bit != 0 { owned += Int64(b.count) } else if channels.platformMask & bit != 0 { platform += Int64(b.count) }
            }
        }
        return owned + platform > 0 ? Double(owned) / Double(owned + platform) : nil
    }

    /// Lifetime share of owned-channel events (nil before any owned or platform event).
    public var lifetimeOwnedShare: Double? {
        ownedEvents + platformEvents > 0 ? Double(ownedEvents) / Double(ownedEvents + platformEvents) : nil
    }

    public func first(_ type: EventType) -> Int64? { first(rawKey: type.rawValue) }
    public func last(_ type: EventType) -> Int64? { last(rawKey: type.rawValue) }
    public func first(channel: UInt8) -> Int64? { first(rawKey: 64 + channel) }
    public func last(channel: UInt8) -> Int64? { last(rawKey: 64 + channel) }
    /// Last event of any type.
    @inline(__always)
    public var lastSeen: Int64? { withFirstLast { Self.lastSeen($0) } }
    public var distinctChannels: Int { channelsUsed.nonzeroBitCount }

    // MARK: - Merge

    /// Combines two states of the same customer (identity stitching, scale-out). Sums are added,
    /// first/last take min/max, buckets of the same hour, type and channel are added up.
    public mutating func merge(_ o: CustomerAggregates, config: AggregateConfig, streamTimeMs: Int64) {
        for b in o.buckets { add(hour: b.hour, type: b.type, channel: b.channel, count: b.count, amount: b.amount) }
        let mine = orders
        for r in o.orders where !mine.contains(where: { $0.orderKey == r.orderKey }) { appendOrder(r) }
        for f in o.firstLast {
            touch(key: f.key, f.first)
            touch(key: f.key, f.last)
        }
        var ids = recentIDs
        for r in o.recentIDs where !ids.contains(where: { $0.0 == r.0 }) { ids.append(r) }
        ids.sort { $0.1 < $1.1 }
        sections.truncate(.recentIDs, to: 0)
        for (h, ts) in ids.suffix(config.dedupeDepth) where ts >= streamTimeMs - config.dedupeHorizonMs { appendRecentID(h, ts) }
        lifetimeEvents += o.lifetimeEvents
        lifetimeOrders += o.lifetimeOrders
        lifetimeSpend += o.lifetimeSpend
        setChannelCounts(owned: ownedEvents + o.ownedEvents, platform: platformEvents + o.platformEvents)
        channelsUsed |= o.channelsUsed
        compact(streamTimeMs: streamTimeMs, config: config)
    }
}
