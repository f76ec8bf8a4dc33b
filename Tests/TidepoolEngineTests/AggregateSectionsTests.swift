import XCTest
@testable import TidepoolEngine

/// The four sections share one array of words: changing one must leave the others intact.
final class AggregateSectionsTests: XCTestCase {
    func testEachSectionChangesWithoutDisturbingTheOthers() {
        var s = AggregateSections()
        var ids: [RecentID] = [], fls: [FirstLast] = [], orders: [PackedOrder] = [], buckets: [UInt64] = []
        func check(_ step: String) {
            XCTAssertEqual(s.array(.recentIDs, as: RecentID.self).map(\.hash), ids.map(\.hash), step)
            XCTAssertEqual(s.array(.recentIDs, as: RecentID.self).map(\.timeMs), ids.map(\.timeMs), step)
            XCTAssertEqual(s.array(.firstLast, as: FirstLast.self), fls, step)
            XCTAssertEqual(s.array(.orders, as: PackedOrder.self), orders, step)
            XCTAssertEqual(s.array(.buckets, as: UInt64.self), buckets, step)
            XCTAssertEqual(s.words.count, 2 * ids.count + 2 * fls.count + 2 * orders.count + buckets.count, step)
        }
        var rng = SeededRNG(5)
        for step in 0..<400 {
            let k = UInt64(step)
            switch rng.next() % 9 {
            case 0:
                let b = UInt64(step) &* 0xA5A5_5A5A_0F0F_F0F0
                let at = buckets.isEmpty ? 0 : Int(rng.next() % UInt64(buckets.count + 1))
                s.insert(b, in: .buckets, at: at); buckets.insert(b, at: at)
            case 1:
                let o = PackedOrder(OrderRecord(orderKey: k &* 0x9E37_79B9_7F4A_7C15, hour: UInt32(step), channel: 1, remaining: Int64(step)))
                s.append(o, to: .orders); orders.append(o)
            case 2:
                let f = FirstLast(key: UInt8(step % 128), first: Int64(step), last: Int64(step) * 7)
                let at = fls.isEmpty ? 0 : Int(rng.next() % UInt64(fls.count + 1))
                s.insert(f, in: .firstLast, at: at); fls.insert(f, at: at)
            case 3:
                let r = RecentID(hash: k &* 0x9E37_79B9_7F4A_7C15, timeMs: -Int64(step))
                if ids.count == 8 { s.rotate(r, in: .recentIDs); ids.removeFirst(); ids.append(r) } else { s.append(r, to: .recentIDs); ids.append(r) }
            case 4 where !orders.isEmpty:
                let at = Int(rng.next() % UInt64(orders.count))
                s.remove(.orders, at: at); orders.remove(at: at)
            case 5 where !buckets.isEmpty:
                let n = Int(rng.next() % UInt64(buckets.count + 1))
                s.truncate(.buckets, to: n); buckets.removeLast(buckets.count - n)
            case 6 where !fls.isEmpty:
                s.modify(.firstLast, as: FirstLast.self) { $0[0].first = -1 }
                fls[0].first = -1
            case 7 where !ids.isEmpty:
                let n = Int(rng.next() % UInt64(ids.count)) + 1
                s.remove(.recentIDs, at: 0, count: n); ids.removeFirst(n)
            default:
                s.reserve(extraWords: 3)
            }
            check("step \(step)")
        }
        XCTAssertFalse(buckets.isEmpty && orders.isEmpty && fls.isEmpty, "the walk exercised the sections")
    }

    /// An order keeps 58 bits of its key, its channel, hour and remaining amount over their whole
    /// ranges in 16 bytes; a purchase that does not fit is not remembered, and its refund counts
    /// as one of an unknown order.
    func testPackedOrdersRoundTripAndOrdersThatDoNotFitAreNotRemembered() {
        XCTAssertEqual(MemoryLayout<PackedOrder>.stride, 16)
        for (key, hour, channel, remaining) in [(UInt64.max, UInt32((1 << 22) - 1), UInt8(63), Int64((1 << 42) - 1)),
                                                (0, 0, 0, 0), (0x1234_5678_9ABC_DEF0, 493_000, 5, 1_299_000)] {
            var o = PackedOrder(OrderRecord(orderKey: key, hour: hour, channel: channel, remaining: remaining))
            XCTAssertEqual(o.record, OrderRecord(orderKey: key & ~63, hour: hour, channel: channel, remaining: remaining))
            o.remaining = remaining / 3
            XCTAssertEqual(o.record, OrderRecord(orderKey: key & ~63, hour: hour, channel: channel, remaining: remaining / 3))
        }
        XCTAssertFalse(PackedOrder.fits(hour: 1 << 22, remaining: 0))
        XCTAssertFalse(PackedOrder.fits(hour: 0, remaining: 1 << 42))
        XCTAssertFalse(PackedOrder.fits(hour: 0, remaining: -1))

        let config = AggregateConfig()
        let channels = ChannelTable(config)
        let t0: Int64 = 1_790_000_000_000
        var a = CustomerAggregates()
        func send(_ id: String, _ type: EventType, _ units: Int64, order: String, at ts: Int64) {
            let e = TouchpointEvent(eventID: id, customerID: "c", type: type, channel: "app", timestampMs: ts,
                                    amount: Money(units: units), currency: "CNY")
            _ = a.apply(e, channel: channels.index(of: "app"), orderKey: StableHash.hash64(order.utf8), eventKey: StableHash.hash64(id.utf8),
                        streamTimeMs: ts, config: config, channels: channels)
        }
        send("p1", .purchase, 1 << 42, order: "big", at: t0)                  // 439.8M yuan: not remembered
        send("p2", .purchase, 500_000, order: "small", at: t0 + 1)
        XCTAssertEqual(a.orders.map(\.remaining), [500_000])
        send("r1", .refund, 100_000, order: "small", at: t0 + 3 * AggregateConfig.dayMs)
        XCTAssertEqual(a.orders.map(\.remaining), [400_000], "found by its order id")
        // The big order's refund is one of an unknown order: a full reversal at its own time.
        send("r2", .refund, 1 << 42, order: "big", at: t0 + 3 * AggregateConfig.dayMs)
        XCTAssertEqual(a.lifetimeOrders, 1)
        XCTAssertEqual(a.lifetimeSpend, 400_000)
        XCTAssertEqual(a.count(.purchase, window: AggregateConfig.dayMs, at: t0 + 3 * AggregateConfig.dayMs), -1)
        XCTAssertEqual(a.count(.purchase, window: 7 * AggregateConfig.dayMs, at: t0 + 3 * AggregateConfig.dayMs), 1)
    }

    /// A bucket is one header word, plus an amount word when its amount is not zero; both read
    /// back exactly, forwards and backwards, over the whole range of each field.
    func testBucketWordsRoundTripInBothDirections() {
        var rng = SeededRNG(9)
        var buckets: [ActivityBucket] = []
        var words: [UInt64] = []
        for k in 0..<300 {
            let amount: Int64 = k % 3 == 0 ? 0 : [1, -1, (1 << 62) - 1, -(1 << 62), Int64(rng.next() % 1_000_000_000)][k % 5]
            let b = ActivityBucket(amount: amount, hour: [0, UInt32.max, UInt32(rng.next() % 1_000_000)][k % 3],
                                   count: [Int16.min, Int16.max, 0, -1, Int16(truncatingIfNeeded: rng.next())][k % 5],
                                   type: UInt8(rng.next() % 64), channel: UInt8(rng.next() % 64))
            buckets.append(b)
            words.append(BucketWords.header(hour: b.hour, type: b.type, channel: b.channel, count: b.count))
            if amount != 0 { words.append(BucketWords.amountWord(amount)) }
        }
        words.withUnsafeBufferPointer { w in
            let seq = BucketSequence(words: w)
            XCTAssertEqual(Array(seq), buckets)
            XCTAssertEqual(seq.count, buckets.count)
            var end = w.count, back: [ActivityBucket] = []
            while end > 0 {
                let (b, start) = seq.bucket(endingAt: end)
                back.append(b)
                end = start
            }
            XCTAssertEqual(back.reversed(), buckets)
        }
        let h = BucketWords.header(hour: 7, type: 3, channel: 5, count: 2)
        XCTAssertEqual(BucketWords.withCount(h, -3) & BucketWords.keyMask, BucketWords.key(hour: 7, type: 3, channel: 5))
        XCTAssertEqual(BucketWords.count(BucketWords.withCount(h, -3)), -3)
    }

    /// The daily fold merges a day's hourly buckets in place: an amount joining a bucket that had
    /// none gets its word, amounts that cancel lose theirs, and what the queries read is the same
    /// before and after.
    func testDailyFoldMergesAmountsInPlace() {
        let agg = AggregateConfig(), channels = ChannelTable(agg)
        let day: Int64 = 1_790_035_200_000 / AggregateConfig.dayMs * AggregateConfig.dayMs
        let hourMs = AggregateConfig.hourMs
        var a = CustomerAggregates()
        var k: UInt64 = 0
        func apply(_ type: EventType, _ hour: Int64, _ units: Int64?, channel: String = "app") {
            k += 1
            let e = TouchpointEvent(eventID: "e\(k)", customerID: "c", type: type, channel: channel, timestampMs: day + hour * hourMs,
                                    amount: units.map { Money(units: $0) }, currency: units == nil ? nil : "CNY")
            _ = a.apply(e, channel: channels.index(of: channel), orderKey: nil, eventKey: k, streamTimeMs: day + 23 * hourMs,
                        config: agg, channels: channels)
        }
        apply(.purchase, 1, nil)            // no amount word
        apply(.pageView, 2, nil)
        apply(.purchase, 3, 500)            // joins the first purchase: its amount gets a word
        apply(.refund, 4, 200, channel: "jd")   // an unknown order: -1 purchase, -200 on jd
        apply(.purchase, 5, 200, channel: "jd") // cancels the refund's amount and count
        apply(.pageView, 6, nil)
        let at = day + 30 * AggregateConfig.dayMs
        let before = (a.count(.purchase, window: 90 * AggregateConfig.dayMs, at: at), a.sum(.purchase, window: 90 * AggregateConfig.dayMs, at: at),
                      a.count(.pageView, window: 90 * AggregateConfig.dayMs, at: at))
        // The refund is a bucket of its own too (type refund, +200 on jd).
        XCTAssertEqual(a.bucketCount, 7)
        a.compact(streamTimeMs: day + 10 * AggregateConfig.dayMs, config: agg)
        let after = (a.count(.purchase, window: 90 * AggregateConfig.dayMs, at: at), a.sum(.purchase, window: 90 * AggregateConfig.dayMs, at: at),
                     a.count(.pageView, window: 90 * AggregateConfig.dayMs, at: at))
        XCTAssertEqual(before.0, after.0)
        XCTAssertEqual(before.1, after.1)
        XCTAssertEqual(before.2, after.2)
        let dayHour = UInt32(day / hourMs)
        let app = channels.index(of: "app"), jd = channels.index(of: "jd")
        XCTAssertEqual(a.buckets, [
            ActivityBucket(amount: 500, hour: dayHour, count: 2, type: EventType.purchase.rawValue, channel: app),
            ActivityBucket(amount: 0, hour: dayHour, count: 2, type: EventType.pageView.rawValue, channel: app),
            ActivityBucket(amount: 200, hour: dayHour, count: 1, type: EventType.refund.rawValue, channel: jd),
            ActivityBucket(amount: 0, hour: dayHour, count: 0, type: EventType.purchase.rawValue, channel: jd),
        ])
        // Four header words and two amount words (the app purchases', the refund's): the jd
        // purchases' amounts cancelled, and so did their word.
        XCTAssertEqual(a.bucketBytes, 48)
    }
}
