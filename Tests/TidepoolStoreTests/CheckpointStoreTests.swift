import Foundation
@testable import TidepoolEngine
@testable import TidepoolStore
import XCTest

final class CheckpointStoreTests: XCTestCase {
    let day = AggregateConfig.dayMs
    let t0: Int64 = 1_790_000_000_000
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("tidepool-store-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func makeEngine() throws -> Engine {
        let agg = AggregateConfig()
        let set = try SegmentSet(ExampleSegments.definitions, aggregates: agg, channels: ChannelTable(agg))
        return Engine(config: EngineConfig(aggregates: agg, segments: set, latenessMs: 60_000,
                                           customerRetentionMs: 20 * day))
    }

    /// A stream with purchases (order ids), refunds, duplicates and idle customers who get evicted.
    func stream(_ n: Int) -> [(PartitionID, TouchpointEvent)] {
        var out: [(PartitionID, TouchpointEvent)] = []
        var state: UInt64 = 5
        func next(_ m: Int) -> Int {
            state &+= 0x9E37_79B9_7F4A_7C15
            return Int(StableHash.mix(state) % UInt64(m))
        }
        let types: [EventType] = [.pageView, .pageView, .purchase, .refund, .addToCart, .messageOpen]
        let channels = ["app", "wecom", "tmall", "jd", "website"]
        for k in 0..<n {
            let c = next(60)
            let type = types[next(types.count)]
            let ts = t0 + Int64(k) * 3_600_000 * 3 - Int64(next(2) * 1_800_000)
            let props = type == .purchase || type == .refund ? RawJSONObject(validated: Array(#"{"order_id":"o\#(next(40))"}"#.utf8)) : nil
            let id = next(15) == 0 && k > 0 ? "e\(k - 1)" : "e\(k)"
            let e = TouchpointEvent(eventID: id, customerID: "c\(c)", type: type, channel: channels[next(channels.count)],
                                    timestampMs: ts, amount: props == nil ? nil : Money(major: Int64(10 + next(300))),
                                    currency: props == nil ? nil : "CNY", properties: props)
            out.append((PartitionID(topic: "touchpoints", partition: Int32(c % 3)), e))
        }
        return out
    }

    func encodedStates(_ e: Engine) -> [String: [UInt8]] {
        var out: [String: [UInt8]] = [:]
        for (_, ps) in e.partitions {
            for slot in ps.customers.indices where ps.customers[slot].live {
                XCTAssertEqual(ps.slot(of: ps.ids[slot]), slot, "the index finds \(ps.ids[slot])")
                out[ps.ids[slot]] = CustomerRecordCodec.encode(ps.customers[slot])
            }
        }
        return out
    }

    func testRestoredEngineContinuesExactlyLikeAnUninterruptedOne() throws {
        let events = stream(3000)
        let uninterrupted = try makeEngine()
        var expected: [EngineOutput] = []
        for (p, e) in events { uninterrupted.apply(e, partition: p) { expected.append($0) } }
        // Then time passes with no events: dormancy, window exits and evictions fire on timers alone.
        let partitions = (0..<3).map { PartitionID(topic: "touchpoints", partition: Int32($0)) }
        let later = events.last!.1.timestampMs + 60 * day
        for p in partitions { uninterrupted.advance(p, to: later) { expected.append($0) } }

        let path = dir.appendingPathComponent("state.sqlite").path
        let first = try makeEngine()
        var got: [EngineOutput] = []
        let crashAt = 2000
        var store: CheckpointStore? = try CheckpointStore(path: path, configVersion: "v1")
        var offsets: [PartitionID: Int64] = [:]
        for (k, (p, e)) in events.prefix(crashAt).enumerated() {
            first.apply(e, partition: p) { got.append($0) }
            offsets[p] = Int64(k + 1)
            if k % 250 == 249 {  // incremental checkpoints of dirty customers
                let snaps = first.partitions.keys.sorted { $0.partition < $1.partition }.compactMap { first.takeCheckpoint($0) }
                try store!.write(snaps.map { ($0, nextOffset: offsets[$0.partition] ?? 0) })
            }
        }
        XCTAssertGreaterThan(first.partitions.values.reduce(0) { $0 + $1.stats.evicted }, 0, "the stream exercises eviction")
        store = nil  // "crash": the process is gone; only the file remains

        let reopened = try CheckpointStore(path: path, configVersion: "v1")
        XCTAssertEqual(reopened.storedConfigVersion, "v1")
        let second = try makeEngine()
        var resumeAt: [PartitionID: Int64] = [:]
        for p in (0..<3).map({ PartitionID(topic: "touchpoints", partition: Int32($0)) }) {
            resumeAt[p] = try reopened.restore(p, into: second)?.nextOffset
        }
        // Replay from each partition's checkpointed position: outputs after that point are re-emitted.
        let checkpointed = 2000  // the last checkpoint was after record 2000
        var replayed: [EngineOutput] = []
        // (Offsets in this test are positions in the global stream: each partition resumes after
        // its last record covered by the checkpoint.)
        for (k, (p, e)) in events.enumerated() where Int64(k) >= resumeAt[p]! {
            XCTAssertGreaterThanOrEqual(k, checkpointed, "nothing after the checkpoint is lost, nothing before it is replayed")
            second.apply(e, partition: p) { replayed.append($0) }
        }
        for p in partitions { second.advance(p, to: later) { replayed.append($0) } }
        XCTAssertTrue(replayed.contains { if case .transition(let t) = $0 { return t.causeEventID == nil } else { return false } },
                      "restored timers fire")
        // Up to the checkpoint the first engine's outputs, after it the restored engine's: together
        // they are exactly the uninterrupted run's.
        var firstUpToCheckpoint: [EngineOutput] = []
        let replay = try makeEngine()
        for (p, e) in events.prefix(checkpointed) { replay.apply(e, partition: p) { firstUpToCheckpoint.append($0) } }
        XCTAssertEqual(firstUpToCheckpoint + replayed, expected)
        XCTAssertEqual(encodedStates(second), encodedStates(uninterrupted), "final per-customer state is identical")
        XCTAssertEqual(second.segmentSizes, uninterrupted.segmentSizes)
    }

    /// A revoke or shutdown during a sliced checkpoint writes the capture (state at its cut) and a
    /// one-call checkpoint of what changed since, in one transaction: the file then holds the
    /// state and offsets of the later one, with the customers evicted in between gone.
    func testCaptureAndLaterCheckpointInOneTransactionRestoreTheLaterState() throws {
        let events = stream(1800)
        let e = try makeEngine()
        var offsets: [PartitionID: Int64] = [:]
        for (k, (p, ev)) in events.prefix(1000).enumerated() {
            e.apply(ev, partition: p) { _ in }
            offsets[p] = Int64(k + 1)
        }
        let held = e.partitions.keys.sorted { $0.partition < $1.partition }
        let cutOffsets = offsets
        for p in held { XCTAssertTrue(e.beginCheckpoint(p)) }
        for (k, (p, ev)) in events.enumerated().dropFirst(1000) {
            e.apply(ev, partition: p) { _ in }
            offsets[p] = Int64(k + 1)
            for q in held { _ = e.continueCheckpoint(q, budget: 0) }  // nothing but copy on write
        }
        XCTAssertGreaterThan(e.partitions.values.reduce(0) { $0 + $1.stats.evicted }, 0, "the stream evicts customers")
        var snaps: [(PartitionSnapshot, nextOffset: Int64)] = []
        for p in held { snaps.append((try XCTUnwrap(e.continueCheckpoint(p, budget: .max)), nextOffset: cutOffsets[p]!)) }
        for p in held { snaps.append((try XCTUnwrap(e.takeCheckpoint(p)), nextOffset: offsets[p]!)) }
        let path = dir.appendingPathComponent("merged.sqlite").path
        try CheckpointStore(path: path, configVersion: "v1").write(snaps)

        let store = try CheckpointStore(path: path, configVersion: "v1")
        let restored = try makeEngine()
        for p in held { XCTAssertEqual(try store.restore(p, into: restored)?.nextOffset, offsets[p], "the later offset of \(p)") }
        XCTAssertEqual(encodedStates(restored), encodedStates(e), "the state of the later checkpoint")
        XCTAssertEqual(restored.segmentSizes, e.segmentSizes)
    }

    func testCorruptAndForeignFilesAreRefusedWithAReason() throws {
        let garbage = dir.appendingPathComponent("garbage.sqlite")
        try Data(repeating: 0x5A, count: 8192).write(to: garbage)
        XCTAssertThrowsError(try CheckpointStore(path: garbage.path, configVersion: "v1")) { e in
            XCTAssertTrue("\(e)".contains("not a usable checkpoint"), "\(e)")
        }
        let other = dir.appendingPathComponent("other.sqlite").path
        _ = try CheckpointStore(path: other, configVersion: "v1")
        let c = try SQLiteConnection(path: other)
        try c.exec("UPDATE meta SET value = '99' WHERE key = 'format_version'")
        XCTAssertThrowsError(try CheckpointStore(path: other, configVersion: "v1")) { e in
            XCTAssertEqual("\(e)", "\(other): checkpoint format 99, this build reads formats 1 and 2")
        }
    }

    /// A checkpoint larger than one encoder chunk goes through the helper thread: every row
    /// arrives, in key order, and a second, partial checkpoint overwrites only its customers.
    func testLargeCheckpointRoundTripsThroughTheEncoderThread() throws {
        let path = dir.appendingPathComponent("large.sqlite").path
        let store = try CheckpointStore(path: path, configVersion: "v1")
        let e = try makeEngine()
        let ps = (0..<2).map { PartitionID(topic: "touchpoints", partition: Int32($0)) }
        for k in 0..<12_000 {
            let ev = TouchpointEvent(eventID: "e\(k)", customerID: "c\(k % 9_000)", type: k % 5 == 0 ? .purchase : .pageView,
                                     channel: "app", timestampMs: t0 + Int64(k) * 1000,
                                     amount: k % 5 == 0 ? Money(major: 20) : nil, currency: k % 5 == 0 ? "CNY" : nil)
            e.apply(ev, partition: ps[k % 9_000 % 2]) { _ in }
        }
        XCTAssertGreaterThan(e.dirtyCount, 2 * ChunkedRows.chunkRows)
        try store.write(ps.compactMap { e.takeCheckpoint($0) }.map { ($0, nextOffset: Int64(1)) })
        for k in 0..<3_000 {  // some customers change again
            e.apply(TouchpointEvent(eventID: "f\(k)", customerID: "c\(k * 3)", type: .addToCart, channel: "wecom",
                                    timestampMs: t0 + 20_000_000 + Int64(k)), partition: ps[k * 3 % 2]) { _ in }
        }
        try store.write(ps.compactMap { e.takeCheckpoint($0) }.map { ($0, nextOffset: Int64(2)) })
        let restored = try makeEngine()
        for p in ps { XCTAssertEqual(try store.restore(p, into: restored)?.nextOffset, 2) }
        XCTAssertEqual(restored.customerCount, 9_000)
        XCTAssertEqual(encodedStates(restored), encodedStates(e))
    }

    /// A row that does not decode (restored on the helper thread) fails the restore with the
    /// partition and the customer named, and leaves the partition out of the engine.
    func testUnreadableCustomerRowFailsTheRestoreWithItsName() throws {
        let path = dir.appendingPathComponent("bad-row.sqlite").path
        let store = try CheckpointStore(path: path, configVersion: "v1")
        let e = try makeEngine()
        let p = PartitionID(topic: "touchpoints", partition: 0)
        for k in 0..<5_000 {
            e.apply(TouchpointEvent(eventID: "e\(k)", customerID: "c\(k)", type: .pageView, channel: "app",
                                    timestampMs: t0 + Int64(k)), partition: p) { _ in }
        }
        try store.write([(try XCTUnwrap(e.takeCheckpoint(p)), nextOffset: 9)])
        let c = try SQLiteConnection(path: path)
        try c.exec("UPDATE customers SET state = x'0300' WHERE customer_id = 'c4321'")
        let restored = try makeEngine()
        XCTAssertThrowsError(try store.restore(p, into: restored)) { err in
            XCTAssertTrue("\(err)".contains("customer state of touchpoints[0] cannot be read: customer c4321:"), "\(err)")
        }
        XCTAssertNil(restored.partitions[p])
    }

    /// The helper thread stops when the consumer fails, and `run` returns only after it has.
    func testChunkedRowsStopItsHelperWhenTheConsumerThrows() {
        struct Stop: Error {}
        final class Count: @unchecked Sendable { var encoded = 0 }
        let count = Count()
        var consumed: [Int] = []
        XCTAssertThrowsError(try ChunkedRows.run(count: 50_000, key: { "id\($0)" }, value: { k, bytes in
            count.encoded += 1
            withUnsafeBytes(of: UInt64(k).littleEndian) { bytes.append(contentsOf: $0) }
        }, consume: { rows in
            for i in 0..<rows.count {
                let k = consumed.count
                XCTAssertEqual(String(decoding: rows.key(i), as: UTF8.self), "id\(k)")
                XCTAssertEqual(rows.value(i).count, 8)
                XCTAssertEqual(rows.value(i).loadUnaligned(as: UInt64.self), UInt64(k))
                if k == 5_000 { throw Stop() }
                consumed.append(k)
            }
        }))
        XCTAssertEqual(consumed, Array(0..<5_000), "rows arrive in order, each once")
        let atReturn = count.encoded
        // At most the failing chunk and the one after it were encoded; the helper is finished.
        XCTAssertLessThanOrEqual(atReturn, (5_000 / ChunkedRows.chunkRows + 2) * ChunkedRows.chunkRows)
        XCTAssertEqual(count.encoded, atReturn)
    }

    /// A format 1 file (customer rows keyed by topic, partition and id) is migrated in place when
    /// opened, and restores the same state.
    func testFormat1FileIsMigratedWhenOpened() throws {
        let path = dir.appendingPathComponent("v1.sqlite").path
        let e = try makeEngine()
        for (p, ev) in stream(1500) { e.apply(ev, partition: p) { _ in } }
        do {
            let c = try SQLiteConnection(path: path)
            try c.exec("""
                PRAGMA journal_mode=WAL;
                CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
                CREATE TABLE partitions(topic TEXT NOT NULL, partition INTEGER NOT NULL,
                    next_offset INTEGER NOT NULL, max_event_time INTEGER NOT NULL, stream_time INTEGER NOT NULL,
                    PRIMARY KEY(topic, partition)) WITHOUT ROWID;
                CREATE TABLE customers(topic TEXT NOT NULL, partition INTEGER NOT NULL,
                    customer_id TEXT NOT NULL, state BLOB NOT NULL,
                    PRIMARY KEY(topic, partition, customer_id)) WITHOUT ROWID;
                INSERT INTO meta VALUES('format_version', '1');
                """)
            let part = try c.prepare("INSERT INTO partitions VALUES(?, ?, ?, ?, ?)")
            let row = try c.prepare("INSERT INTO customers VALUES(?, ?, ?, ?)")
            for (p, ps) in e.partitions {
                part.reset()
                part.bind(1, p.topic); part.bind(2, Int64(p.partition)); part.bind(3, Int64(40 + p.partition))
                part.bind(4, ps.maxEventTimeMs); part.bind(5, ps.streamTimeMs)
                try part.run()
                for slot in ps.customers.indices where ps.customers[slot].live {
                    row.reset()
                    row.bind(1, p.topic); row.bind(2, Int64(p.partition)); row.bind(3, ps.ids[slot])
                    row.bind(4, CustomerRecordCodec.encode(ps.customers[slot]))
                    try row.run()
                }
            }
        }
        XCTAssertThrowsError(try CheckpointReader(path: path)) { err in
            XCTAssertTrue("\(err)".contains("migrates a format 1 file"), "\(err)")
        }
        let store = try CheckpointStore(path: path, configVersion: "v1")
        let restored = try makeEngine()
        for p in e.partitions.keys { XCTAssertEqual(try store.restore(p, into: restored)?.nextOffset, Int64(40 + p.partition)) }
        XCTAssertEqual(encodedStates(restored), encodedStates(e))
        let reader = try CheckpointReader(path: path)
        XCTAssertEqual(try reader.partitionSizes().reduce(0) { $0 + $1.1 }, e.customerCount)
        let someone = e.partitions.values.first!.ids.first { !$0.isEmpty }!
        XCTAssertNotNil(try reader.find(someone))
    }

    /// The commit leaves the checkpoint in the WAL (no automatic WAL checkpoint inside it);
    /// `foldWAL` copies it into the database file, and a fresh reader sees the same rows either way.
    func testCheckpointCommitsToTheWALAndFoldCopiesItIntoTheDatabaseFile() throws {
        let path = dir.appendingPathComponent("fold.sqlite").path
        let store = try CheckpointStore(path: path, configVersion: "v1")
        let e = try makeEngine()
        for (p, ev) in stream(3000) { e.apply(ev, partition: p) { _ in } }
        let snaps = e.partitions.keys.sorted { $0.partition < $1.partition }.compactMap { e.takeCheckpoint($0) }.map { ($0, nextOffset: Int64(7)) }
        let before = try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int
        try store.write(snaps)
        let afterCommit = try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int
        XCTAssertEqual(afterCommit, before, "the commit wrote the WAL only")
        XCTAssertEqual(try CheckpointReader(path: path).partitionSizes().reduce(0) { $0 + $1.1 }, e.customerCount, "readers see the committed rows through the WAL")
        store.foldWAL()
        let afterFold = try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int
        XCTAssertGreaterThan(afterFold, before, "the fold copied the pages into the database file")
        let restored = try makeEngine()
        for p in e.partitions.keys { XCTAssertEqual(try store.restore(p, into: restored)?.nextOffset, 7) }
        XCTAssertEqual(encodedStates(restored), encodedStates(e))
    }

    func testCodecRejectsTruncatedState() throws {
        let e = try makeEngine()
        for (p, ev) in stream(200) { e.apply(ev, partition: p) { _ in } }
        let blob = CustomerRecordCodec.encode(e.partitions.values.first!.customers[0])
        XCTAssertEqual(CustomerRecordCodec.encode(try CustomerRecordCodec.decode(blob)), blob)
        for cut in [0, 1, 20, blob.count - 1] {
            XCTAssertThrowsError(try CustomerRecordCodec.decode(Array(blob.prefix(cut))))
        }
        XCTAssertThrowsError(try CustomerRecordCodec.decode(blob + [0]))
    }

    /// The compact format (varints, deltas from the evaluation time) round-trips every field,
    /// including sentinels, negative amounts, far times and campaign state, and every cut of it
    /// is an error rather than a wrong record.
    func testCompactCodecRoundTripsExtremesAndRejectsEveryCut() throws {
        var r = CustomerRecord()
        r.evaluatedAtMs = 1_790_000_000_000
        r.memberships = 1 << 63 | 5
        r.firstPurchaseFired = true
        var a = CustomerAggregates()
        let agg = AggregateConfig(), channels = ChannelTable(agg)
        let events: [(EventType, Int64, Int64)] = [(.purchase, 1_789_000_000_000, 12_345_678), (.pageView, 1_790_000_000_000, 0),
                                                   (.refund, 1_789_500_000_000, 99_999_999_999)]
        for (k, (t, ts, units)) in events.enumerated() {
            let e = TouchpointEvent(eventID: "e\(k)", customerID: "c", type: t, channel: "tmall", timestampMs: ts,
                                    amount: units > 0 ? Money(units: units) : nil, currency: units > 0 ? "CNY" : nil)
            _ = a.apply(e, channel: channels.index(of: "tmall"), orderKey: t == .purchase ? 7 : nil, eventKey: UInt64(k) &* 0x9E37_79B9_7F4A_7C15,
                        streamTimeMs: 1_790_000_000_000, config: agg, channels: channels)
        }
        r.aggregates = a
        r.contact.pending = [PendingTrigger(campaign: .max, dueMs: .max, startedAtMs: .min, causeEventID: "起因-事件", deferrals: 3),
                             PendingTrigger(campaign: 1, dueMs: 0, startedAtMs: -5, causeEventID: nil)]
        r.contact.marks = [CampaignMark(campaign: 9, episodes: .max, lastContactMs: .min)]
        r.contact.ledger = [ContactEntry(channel: 63, atMs: 1)]
        r.contact.setConsent(3, granted: false)
        r.contact.timeZone = "Asia/Shanghai"
        for (due, returned) in [(Int64.max, Int64.min), (r.evaluatedAtMs + 14 * AggregateConfig.dayMs, r.evaluatedAtMs - 1)] {
            r.dueMs = due
            r.returnedAtMs = returned
            let blob = CustomerRecordCodec.encode(r)
            XCTAssertEqual(blob.first, 3)
            let back = try CustomerRecordCodec.decode(blob)
            XCTAssertEqual(back.aggregates, r.aggregates)
            XCTAssertEqual(back.contact, r.contact)
            XCTAssertEqual([back.memberships, UInt64(bitPattern: back.evaluatedAtMs), UInt64(bitPattern: back.dueMs),
                            UInt64(bitPattern: back.returnedAtMs)],
                           [r.memberships, UInt64(bitPattern: r.evaluatedAtMs), UInt64(bitPattern: due), UInt64(bitPattern: returned)])
            XCTAssertTrue(back.firstPurchaseFired)
            for cut in 0..<blob.count {
                XCTAssertThrowsError(try CustomerRecordCodec.decode(Array(blob.prefix(cut))), "cut at \(cut)")
            }
        }
        // A customer without campaign state decodes without allocating any.
        var plain = r
        plain.contact = ContactState()
        XCTAssertTrue(try CustomerRecordCodec.decode(CustomerRecordCodec.encode(plain)).contact.isEmpty)
    }
}

final class ErasureTests: XCTestCase {
    let t0: Int64 = 1_790_000_000_000
    let p = PartitionID(topic: "touchpoints", partition: 0)

    func ev(_ id: String, _ c: String, _ type: EventType, _ ts: Int64) -> TouchpointEvent {
        TouchpointEvent(eventID: id, customerID: c, type: type, channel: "app", timestampMs: ts,
                        amount: type == .purchase ? Money(major: 50) : nil, currency: type == .purchase ? "CNY" : nil)
    }

    func engine() throws -> Engine {
        let agg = AggregateConfig()
        let set = try SegmentSet([SegmentDefinition(name: "buyer", rule: "orders() >= 1")], aggregates: agg, channels: ChannelTable(agg))
        return Engine(config: EngineConfig(aggregates: agg, segments: set, latenessMs: 0, erasureKey: "secret"))
    }

    func testEraseRemovesTheCustomerEverywhereAndSurvivesAReplayAndARestart() throws {
        let e = try engine()
        var out: [EngineOutput] = []
        e.apply(ev("a", "alice", .purchase, t0), partition: p) { out.append($0) }
        e.apply(ev("b", "bob", .purchase, t0 + 1), partition: p) { out.append($0) }
        XCTAssertEqual(e.segmentSizes["buyer"], 2)
        out = []
        e.apply(ev("x", "alice", .erase, t0 + 10), partition: p) { out.append($0) }
        XCTAssertEqual(out, [.erased(customerID: "alice")])
        XCTAssertNil(e.record("alice"))
        XCTAssertEqual(e.segmentSizes["buyer"], 1)
        XCTAssertEqual(e.partitions[p]?.erased.count, 1)
        XCTAssertFalse(e.partitions[p]!.erased.keys.contains(StableHash.hash64("alice".utf8)), "the stored hash is keyed, not the plain id hash")

        // Checkpoint, restart from the file, then replay alice's old events: she does not come back.
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("erase-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("s.sqlite").path
        let store = try CheckpointStore(path: path, configVersion: "v")
        try store.write([(e.takeCheckpoint(p)!, nextOffset: 3)])
        XCTAssertEqual(try store.customers(p).map(\.0), ["bob"], "her row is deleted from the checkpoint")
        let restored = try engine()
        XCTAssertEqual(try CheckpointStore(path: path, configVersion: "v").restore(p, into: restored)?.nextOffset, 3)
        out = []
        restored.apply(ev("a", "alice", .purchase, t0), partition: p) { out.append($0) }
        XCTAssertNil(restored.record("alice"))
        XCTAssertTrue(out.isEmpty, "no trigger, no transition for a replayed event of an erased customer")
        XCTAssertEqual(restored.stats(p)?.droppedAfterErasure, 1)
        // A genuinely new event after the erasure starts a new, empty customer.
        restored.apply(ev("n", "alice", .pageView, t0 + 100), partition: p) { _ in }
        XCTAssertEqual(restored.record("alice")?.aggregates.lifetimeEvents, 1)
        XCTAssertEqual(restored.record("alice")?.aggregates.lifetimeOrders, 0)
    }
}
