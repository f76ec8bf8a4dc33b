import XCTest
@testable import TidepoolEngine

/// The four sections share one array of words: changing one must leave the others intact.
final class AggregateSectionsTests: XCTestCase {
    func testEachSectionChangesWithoutDisturbingTheOthers() {
        var s = AggregateSections()
        var ids: [RecentID] = [], fls: [FirstLast] = [], orders: [OrderRecord] = [], buckets: [ActivityBucket] = []
        func check(_ step: String) {
            XCTAssertEqual(s.array(.recentIDs, as: RecentID.self).map(\.hash), ids.map(\.hash), step)
            XCTAssertEqual(s.array(.recentIDs, as: RecentID.self).map(\.timeMs), ids.map(\.timeMs), step)
            XCTAssertEqual(s.array(.firstLast, as: FirstLast.self), fls, step)
            XCTAssertEqual(s.array(.orders, as: OrderRecord.self), orders, step)
            XCTAssertEqual(s.array(.buckets, as: ActivityBucket.self), buckets, step)
            XCTAssertEqual(s.words.count, 2 * ids.count + 2 * fls.count + 3 * orders.count + 2 * buckets.count, step)
        }
        var rng = SeededRNG(5)
        for step in 0..<400 {
            let k = UInt64(step)
            switch rng.next() % 9 {
            case 0:
                let b = ActivityBucket(amount: Int64(step), hour: UInt32(step), count: Int16(step % 100), type: 3, channel: 2)
                let at = buckets.isEmpty ? 0 : Int(rng.next() % UInt64(buckets.count + 1))
                s.insert(b, in: .buckets, at: at); buckets.insert(b, at: at)
            case 1:
                let o = OrderRecord(orderKey: k, hour: UInt32(step), channel: 1, remaining: -Int64(step))
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
}
