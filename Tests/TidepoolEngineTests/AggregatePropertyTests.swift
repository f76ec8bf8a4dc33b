@testable import TidepoolEngine
import XCTest

/// Random streams (out of order, late, very late, refunds by order id and unknown, duplicate
/// event ids) against a brute-force reference that keeps the full event list and recomputes
/// every figure from it at every step.
final class AggregatePropertyTests: XCTestCase {
    let config = AggregateConfig(windowsMs: [3_600_000, 6 * 3_600_000, AggregateConfig.dayMs, 7 * AggregateConfig.dayMs,
                                             30 * AggregateConfig.dayMs, 90 * AggregateConfig.dayMs],
                                 dedupeHorizonMs: AggregateConfig.dayMs, dedupeDepth: 8)
    lazy var channels = ChannelTable(config)
    /// The same windows with some types kept less (`aggregates.keep`): every window a rule may
    /// still use over each type must give what the full state gives.
    lazy var keepConfig: AggregateConfig = {
        var c = config
        c.keepMs = [.pageView: AggregateConfig.dayMs, .messageOpen: 7 * AggregateConfig.dayMs, .refund: 30 * AggregateConfig.dayMs]
        c.keepOthersMs = nil
        return c
    }()
    let channelNames = ["website", "app", "wecom", "tmall", "jd", "kiosk"]

    /// The reference: the whole list, recomputed on every query.
    struct Reference {
        struct Applied { var e: TouchpointEvent; var stream: Int64; var orderKey: UInt64?; var channel: UInt8 }
        var applied: [Applied] = []
        var recent: [(UInt64, Int64)] = []

        mutating func apply(_ e: TouchpointEvent, orderKey: UInt64?, eventKey: UInt64, channel: UInt8, stream: Int64, config: AggregateConfig) -> Bool {
            // Ids of events before stream time minus the horizon are forgotten.
            recent.removeAll { $0.1 < stream - config.dedupeHorizonMs }
            if recent.contains(where: { $0.0 == eventKey && abs($0.1 - e.timestampMs) <= config.dedupeHorizonMs }) { return false }
            recent.append((eventKey, e.timestampMs))
            if recent.count > config.dedupeDepth { recent.removeFirst() }
            applied.append(Applied(e: e, stream: stream, orderKey: orderKey, channel: channel))
            return true
        }

        static func hour(_ ms: Int64) -> Int64 { Int64(floor(Double(ms) / 3_600_000)) }

        func inWindow(_ hourOfEvent: Int64, _ w: Int64, _ t: Int64) -> Bool {
            if w <= AggregateConfig.hourlyLimitMs {
                let n = w / 3_600_000
                return hourOfEvent <= Self.hour(t) && hourOfEvent > Self.hour(t) - n
            }
            let n = w / AggregateConfig.dayMs
            let day = hourOfEvent / 24, today = Self.hour(t) / 24
            return day <= today && day > today - n
        }

        /// (hour, channel, count, amount) contributions to the purchase figures, refunds included.
        func purchaseContributions(config: AggregateConfig) -> [(Int64, UInt8, Int64, Int64)] {
            struct Order { var key: UInt64; var hour: Int64; var channel: UInt8; var remaining: Int64 }
            var orders: [Order] = []
            var out: [(Int64, UInt8, Int64, Int64)] = []
            for a in applied {
                let amount = a.e.amount?.units ?? 0
                let h = Self.hour(a.e.timestampMs)
                let inRetention = a.e.timestampMs > a.stream - config.retentionMs
                switch a.e.type {
                case .purchase:
                    out.append((h, a.channel, 1, amount))
                    if let k = a.orderKey, inRetention { orders.append(Order(key: k, hour: h, channel: a.channel, remaining: amount)) }
                case .refund, .cancel:
                    let oldest = Self.hour(a.stream - config.retentionMs)
                    if let k = a.orderKey, let i = orders.firstIndex(where: { $0.key == k && $0.remaining > 0 && $0.hour >= oldest }) {
                        let take = a.e.type == .cancel ? orders[i].remaining : min(amount, orders[i].remaining)
                        let cancels = a.e.type == .cancel || take >= orders[i].remaining
                        orders[i].remaining -= take
                        out.append((orders[i].hour, orders[i].channel, cancels ? -1 : 0, -take))
                    } else {
                        out.append((h, a.channel, -1, -amount))
                    }
                default: break
                }
            }
            return out
        }

        func count(_ type: EventType, _ w: Int64, _ t: Int64, config: AggregateConfig) -> (Int64, Int64) {
            var n: Int64 = 0, sum: Int64 = 0
            for a in applied where a.e.type == type && inWindow(Self.hour(a.e.timestampMs), w, t) {
                n += 1
                sum += a.e.amount?.units ?? 0
            }
            if type == .purchase {
                n = 0; sum = 0
                for (h, _, c, amt) in purchaseContributions(config: config) where inWindow(h, w, t) { n += c; sum += amt }
            }
            return (n, sum)
        }

        func lifetime(config: AggregateConfig) -> (events: Int64, orders: Int64, spend: Int64) {
            var o: Int64 = 0, s: Int64 = 0
            for (_, _, c, amt) in purchaseContributions(config: config) { o += c; s += amt }
            return (Int64(applied.count), o, s)
        }
    }

    func testAggregatesMatchBruteForceReferenceAtEveryStep() {
        for seed in 1...12 {
            run(seed: UInt64(seed), steps: 400)
        }
    }

    func run(seed: UInt64, steps: Int) {
        var rng = SeededRNG(seed)
        var agg = CustomerAggregates()
        var kept = CustomerAggregates()
        var ref = Reference()
        var stream: Int64 = 1_790_000_000_000
        var clock = stream
        var sent: [TouchpointEvent] = []
        var orderIDs: [String] = []
        for step in 0..<steps {
            // Time: mostly forward by minutes to days; some late and very late events.
            clock += Int64(rng.next(upTo: 6 * 3_600_000))
            var ts = clock
            let r = rng.next(upTo: 100)
            if r < 15 { ts -= Int64(rng.next(upTo: 3 * Int(AggregateConfig.dayMs))) }
            if r == 15 { ts -= 400 * AggregateConfig.dayMs }
            var e: TouchpointEvent
            if rng.next(upTo: 10) == 0, let dup = sent.randomElement(using: &rng) {
                e = dup  // a duplicate delivery
            } else {
                let typePick = rng.next(upTo: 10)
                let type: EventType = typePick < 3 ? .purchase : typePick < 4 ? .refund : typePick == 4 ? .cancel : typePick < 7 ? .pageView : .messageOpen
                let channel = channelNames[rng.next(upTo: channelNames.count)]
                var props: RawJSONObject? = nil
                var amount: Money? = nil
                if type == .purchase {
                    let oid = "o-\(seed)-\(step)"
                    orderIDs.append(oid)
                    props = RawJSONObject(validated: Array(#"{"order_id":"\#(oid)"}"#.utf8))
                    amount = Money(units: Int64(1 + rng.next(upTo: 500)) * 10_000)
                } else if type == .refund || type == .cancel {
                    let oid = rng.next(upTo: 5) == 0 || orderIDs.isEmpty ? "unknown-\(step)" : orderIDs.randomElement(using: &rng)!
                    props = RawJSONObject(validated: Array(#"{"order_id":"\#(oid)"}"#.utf8))
                    amount = Money(units: Int64(1 + rng.next(upTo: 300)) * 10_000)
                }
                e = TouchpointEvent(eventID: "e-\(seed)-\(step)", customerID: "c", type: type, channel: channel,
                                    timestampMs: ts, amount: amount, currency: amount == nil ? nil : "CNY", properties: props)
                sent.append(e)
            }
            stream = max(stream, e.timestampMs)
            let orderKey = e.properties?.string(forKey: "order_id").map { StableHash.hash64($0.utf8) }
            let eventKey = StableHash.hash64(e.eventID.utf8)
            let ch = channels.index(of: e.channel)
            let outcome = agg.apply(e, channel: ch, orderKey: orderKey, eventKey: eventKey, streamTimeMs: stream, config: config, channels: channels)
            let refApplied = ref.apply(e, orderKey: orderKey, eventKey: eventKey, channel: ch, stream: stream, config: config)
            XCTAssertEqual(outcome == .applied, refApplied, "seed \(seed) step \(step): dedupe decision")
            let keptOutcome = kept.apply(e, channel: ch, orderKey: orderKey, eventKey: eventKey, streamTimeMs: stream, config: keepConfig, channels: channels)
            XCTAssertEqual(keptOutcome, outcome, "seed \(seed) step \(step): dedupe decision with keep")

            for t in [stream, stream + Int64(rng.next(upTo: 3 * Int(AggregateConfig.dayMs)))] {
                for w in config.windowsMs {
                    for type in [EventType.purchase, .refund, .pageView, .cancel, .messageOpen] {
                        let (n, sum) = ref.count(type, w, t, config: config)
                        XCTAssertEqual(agg.count(type, window: w, at: t), n, "seed \(seed) step \(step) count(\(type.name), \(w / 3_600_000)h) at +\(t - stream)")
                        XCTAssertEqual(agg.sum(type, window: w, at: t).units, sum, "seed \(seed) step \(step) sum(\(type.name), \(w / 3_600_000)h)")
                        if w <= keepConfig.keptMs(type) {
                            XCTAssertEqual(kept.count(type, window: w, at: t), n, "seed \(seed) step \(step) kept count(\(type.name), \(w / 3_600_000)h)")
                            XCTAssertEqual(kept.sum(type, window: w, at: t).units, sum, "seed \(seed) step \(step) kept sum(\(type.name), \(w / 3_600_000)h)")
                        }
                    }
                    if w <= AggregateConfig.dayMs {
                        XCTAssertEqual(kept.ownedShare(window: w, at: t, channels: channels), agg.ownedShare(window: w, at: t, channels: channels))
                    }
                }
            }
            let life = ref.lifetime(config: config)
            XCTAssertEqual(agg.lifetimeEvents, life.events, "seed \(seed) step \(step)")
            XCTAssertEqual(agg.lifetimeOrders, life.orders, "seed \(seed) step \(step)")
            XCTAssertEqual(agg.lifetimeSpend, life.spend, "seed \(seed) step \(step)")
            for type in [EventType.purchase, .pageView] {
                let times = ref.applied.filter { $0.e.type == type }.map(\.e.timestampMs)
                XCTAssertEqual(agg.first(type), times.min())
                XCTAssertEqual(agg.last(type), times.max())
            }
            XCTAssertEqual(agg.distinctChannels, Set(ref.applied.map(\.channel)).count)
            XCTAssertEqual(kept.lifetimeEvents, agg.lifetimeEvents)
            XCTAssertEqual(kept.lifetimeOrders, agg.lifetimeOrders)
            XCTAssertEqual(kept.lifetimeSpend, agg.lifetimeSpend)
            XCTAssertEqual(kept.firstLast, agg.firstLast)
            XCTAssertLessThanOrEqual(kept.bucketBytes, agg.bucketBytes, "seed \(seed) step \(step): keeping less never holds more")
        }
        XCTAssertLessThan(kept.bucketBytes, agg.bucketBytes, "seed \(seed): visits and opens beyond a day or a week are dropped")
    }

    func testMergeOfTwoHalvesEqualsOneStream() {
        var rng = SeededRNG(99)
        let start: Int64 = 1_790_000_000_000
        let events: [TouchpointEvent] = (0..<300).map { n in
            let type: EventType = n % 4 == 0 ? .purchase : .pageView
            return TouchpointEvent(eventID: "e\(n)", customerID: "c", type: type, channel: channelNames[n % channelNames.count],
                                   timestampMs: start + Int64(n) * 3_000_000 + Int64(rng.next(upTo: 1000)),
                                   amount: type == .purchase ? Money(major: Int64(n)) : nil, currency: type == .purchase ? "CNY" : nil)
        }
        let stream = events.map(\.timestampMs).max()!
        func build(_ es: [TouchpointEvent]) -> CustomerAggregates {
            var a = CustomerAggregates()
            for e in es {
                _ = a.apply(e, channel: channels.index(of: e.channel), orderKey: nil, eventKey: StableHash.hash64(e.eventID.utf8),
                            streamTimeMs: stream, config: config, channels: channels)
            }
            return a
        }
        let whole = build(events)
        var left = build(events.enumerated().filter { $0.offset % 2 == 0 }.map(\.element))
        left.merge(build(events.enumerated().filter { $0.offset % 2 == 1 }.map(\.element)), config: config, streamTimeMs: stream)
        for w in config.windowsMs {
            for type in [EventType.purchase, .pageView] {
                XCTAssertEqual(left.count(type, window: w, at: stream), whole.count(type, window: w, at: stream))
                XCTAssertEqual(left.sum(type, window: w, at: stream), whole.sum(type, window: w, at: stream))
            }
        }
        XCTAssertEqual(left.lifetimeSpend, whole.lifetimeSpend)
        XCTAssertEqual(left.lifetimeOrders, whole.lifetimeOrders)
        XCTAssertEqual(left.first(.purchase), whole.first(.purchase))
        XCTAssertEqual(left.last(.pageView), whole.last(.pageView))
        XCTAssertEqual(left.distinctChannels, whole.distinctChannels)
        XCTAssertEqual(left.ownedShare(window: 30 * AggregateConfig.dayMs, at: stream, channels: channels),
                       whole.ownedShare(window: 30 * AggregateConfig.dayMs, at: stream, channels: channels))
    }

    func testWindowBoundariesAreWholeBuckets() {
        var a = CustomerAggregates()
        let t0: Int64 = 1_790_000_000_000 / AggregateConfig.hourMs * AggregateConfig.hourMs  // an hour boundary
        let e = TouchpointEvent(eventID: "e", customerID: "c", type: .pageView, channel: "app", timestampMs: t0 + 59 * 60_000)
        _ = a.apply(e, channel: channels.index(of: "app"), orderKey: nil, eventKey: 1, streamTimeMs: e.timestampMs, config: config, channels: channels)
        // A 1h window counts the current hour only: the event leaves it exactly at the next-but-one hour start.
        XCTAssertEqual(a.count(.pageView, window: AggregateConfig.hourMs, at: t0 + AggregateConfig.hourMs - 1), 1)
        XCTAssertEqual(a.count(.pageView, window: AggregateConfig.hourMs, at: t0 + AggregateConfig.hourMs), 0)
        XCTAssertEqual(a.count(.pageView, window: 6 * AggregateConfig.hourMs, at: t0 + 6 * AggregateConfig.hourMs - 1), 1)
        XCTAssertEqual(a.count(.pageView, window: 6 * AggregateConfig.hourMs, at: t0 + 6 * AggregateConfig.hourMs), 0)
        XCTAssertEqual(AggregateConfig.problem(windowMs: 90 * 60_000), "windows up to 7d must be whole hours")
        XCTAssertEqual(AggregateConfig.problem(windowMs: 8 * AggregateConfig.dayMs + AggregateConfig.hourMs), "windows longer than 7d must be whole days")
        XCTAssertNil(AggregateConfig.problem(windowMs: 90 * AggregateConfig.dayMs))
    }

    /// A first/last entry keeps its key and both times exactly over the whole range event times
    /// can take, in 16 bytes; a customer record has no padding and fills two cache lines.
    func testFirstLastPacksKeyAndTimesAndRecordsStayCompact() {
        for (key, first, last) in [(UInt8(0), Int64(0), Int64(0)), (255, Timestamp.maxMs, Timestamp.maxMs), (64 + 7, 1_790_000_000_123, 1_790_000_999_999),
                                   (3, -86_400_000, 5)] {
            var f = FirstLast(key: key, first: first, last: last)
            XCTAssertEqual(f.key, key)
            XCTAssertEqual(f.first, first)
            XCTAssertEqual(f.last, last)
            f.first = first / 2
            XCTAssertEqual(f.key, key, "setting the first time keeps the key")
            XCTAssertEqual(f.first, first / 2)
        }
        XCTAssertEqual(MemoryLayout<FirstLast>.stride, 16)
        XCTAssertEqual(MemoryLayout<CustomerAggregates>.size, 64)
        XCTAssertEqual(MemoryLayout<CustomerRecord>.stride, 128, "two cache lines")
    }

    /// A re-delivered event is dropped while its original is within the horizon of stream time,
    /// and applied again once stream time has moved past it; a customer seen once a week keeps
    /// one id, not eight.
    func testRecentIDsAreForgottenBehindTheHorizonOfStreamTime() {
        let weekly = AggregateConfig(dedupeHorizonMs: 7 * AggregateConfig.dayMs, dedupeDepth: 8)
        let ch = ChannelTable(weekly)
        var a = CustomerAggregates()
        let t0: Int64 = 1_790_000_000_000
        func send(_ id: String, at ts: Int64, stream: Int64) -> CustomerAggregates.Outcome {
            let e = TouchpointEvent(eventID: id, customerID: "c", type: .pageView, channel: "app", timestampMs: ts)
            return a.apply(e, channel: ch.index(of: "app"), orderKey: nil, eventKey: StableHash.hash64(id.utf8),
                           streamTimeMs: stream, config: weekly, channels: ch)
        }
        XCTAssertEqual(send("e1", at: t0, stream: t0), .applied)
        // Yesterday's event sent again today: remembered.
        XCTAssertEqual(send("e1", at: t0, stream: t0 + AggregateConfig.dayMs), .duplicate)
        // At exactly the horizon still remembered; one millisecond later forgotten, and applied.
        XCTAssertEqual(send("e1", at: t0, stream: t0 + 7 * AggregateConfig.dayMs), .duplicate)
        XCTAssertEqual(send("e1", at: t0, stream: t0 + 7 * AggregateConfig.dayMs + 1), .applied)
        XCTAssertEqual(a.lifetimeEvents, 2)
        // Ten weekly events: each forgets the one before.
        for k in 1...10 {
            let ts = t0 + Int64(k) * 8 * AggregateConfig.dayMs
            XCTAssertEqual(send("w\(k)", at: ts, stream: ts), .applied)
        }
        XCTAssertEqual(a.recentIDs.count, 1)
        XCTAssertEqual(a.recentIDs.first?.1, t0 + 80 * AggregateConfig.dayMs)
        // Eight events in one day: all eight kept (the depth), the ninth pushes out the oldest.
        let day = t0 + 100 * AggregateConfig.dayMs
        for k in 0..<9 { XCTAssertEqual(send("d\(k)", at: day + Int64(k), stream: day + Int64(k)), .applied) }
        XCTAssertEqual(a.recentIDs.count, 8)
        XCTAssertEqual(send("d0", at: day, stream: day + 9), .applied, "beyond the depth")
        XCTAssertEqual(send("d8", at: day + 8, stream: day + 9), .duplicate)
    }

    /// A channel is found by name whatever its length or storage: names of equal length ("app",
    /// "sms"), names longer than a small string (16 bytes and more), a name built at run time from
    /// bytes, unknown and empty names (`other`), and a table past the linear scan's 24 names.
    func testChannelIndexFindsEveryNameAndOnlyThose() {
        let owned = ["app", "sms", "website", "wecom", "email", "offline_store_shanghai_01"]
        let platform = ["jd", "tmall", "douyin", "pinduoduo_flagship_store"]
        let table = ChannelTable(AggregateConfig(ownedChannels: owned, platformChannels: platform))
        for (i, name) in (owned + platform).enumerated() {
            XCTAssertEqual(table.index(of: name), UInt8(i + 1), name)
            let built = String(decoding: Array(name.utf8), as: UTF8.self)
            XCTAssertEqual(table.index(of: built), UInt8(i + 1), "\(name), built from its bytes")
            XCTAssertEqual(table.index(of: String(name.dropLast())), ChannelTable.other, "\(name) less its last character")
            XCTAssertEqual(table.index(of: name + "x"), ChannelTable.other, "\(name) + x")
        }
        for unknown in ["", "ap", "smt", "APP", "offline_store_shanghai_02"] {
            XCTAssertEqual(table.index(of: unknown), ChannelTable.other, unknown)
        }
        let many = (0..<30).map { "channel_\($0)" }
        let big = ChannelTable(AggregateConfig(ownedChannels: many, platformChannels: []))
        for (i, name) in many.enumerated() { XCTAssertEqual(big.index(of: name), UInt8(i + 1), name) }
        XCTAssertEqual(big.index(of: "channel_30"), ChannelTable.other)
    }

    /// The lifetime owned and platform counts are 32 bits: past 2^32 - 1 both halve, and the
    /// lifetime owned share stays what it was (to within an event).
    func testChannelCountsHalveTogetherAndKeepTheirRatio() {
        var a = CustomerAggregates()
        a.setChannelCounts(owned: Int64(UInt32.max) - 1, platform: 1_000_000_000)
        let share = a.lifetimeOwnedShare!
        let owned = channels.index(of: "app")
        for k in 0..<3 {
            let e = TouchpointEvent(eventID: "e\(k)", customerID: "c", type: .pageView, channel: "app", timestampMs: 1_790_000_000_000 + Int64(k))
            XCTAssertEqual(a.apply(e, channel: owned, orderKey: nil, eventKey: UInt64(k + 1), streamTimeMs: e.timestampMs, config: config, channels: channels), .applied)
        }
        // max - 1, then max, then both halved and one more, then one more.
        XCTAssertEqual(a.ownedEvents, Int64(UInt32.max / 2 + 2))
        XCTAssertEqual(a.platformEvents, 500_000_000)
        XCTAssertEqual(a.lifetimeOwnedShare!, share, accuracy: 1e-9)
        // A decoded or merged count beyond 32 bits halves both as often as it takes.
        a.setChannelCounts(owned: 6 * Int64(UInt32.max), platform: 2 * Int64(UInt32.max))
        XCTAssertLessThanOrEqual(a.ownedEvents, Int64(UInt32.max))
        XCTAssertEqual(Double(a.ownedEvents) / Double(a.platformEvents), 3, accuracy: 1e-6)
    }
}

/// Deterministic generator for tests (SplitMix64).
struct SeededRNG: RandomNumberGenerator {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return StableHash.mix(state)
    }
    mutating func next(upTo n: Int) -> Int { Int(next() % UInt64(n)) }
}

import Foundation
