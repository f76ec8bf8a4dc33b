/// Binary form of one customer's state, as checkpoints store it. Little-endian, versioned, with
/// bounds checks on every read: a truncated or foreign blob is an error, never a crash.
public enum CustomerRecordCodec {
    /// 2 adds the campaign state (pending episodes, marks, ledger, consent, zone); 1 is still read.
    public static let version: UInt8 = 2

    public struct DecodeError: Error, Equatable, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    public static func encode(_ r: CustomerRecord, into out: inout [UInt8]) {
        out.removeAll(keepingCapacity: true)
        let a = r.aggregates
        // Move the buffer into the writer (and back at the end) so that appends never copy it.
        var w = ByteWriter(out: [])
        swap(&w.out, &out)
        w.u8(version)
        w.i64(a.lifetimeEvents); w.i64(a.lifetimeOrders); w.i64(a.lifetimeSpend)
        w.i64(a.ownedEvents); w.i64(a.platformEvents)
        w.u64(a.channelsUsed); w.u32(a.dailyBelow)
        w.u64(r.memberships); w.i64(r.evaluatedAtMs); w.i64(r.dueMs); w.i64(r.returnedAtMs)
        w.u8(r.firstPurchaseFired ? 1 : 0)
        w.u32(UInt32(a.buckets.count))
        for b in a.buckets { w.i64(b.amount); w.u32(b.hour); w.u16(UInt16(bitPattern: b.count)); w.u8(b.type); w.u8(b.channel) }
        w.u32(UInt32(a.orders.count))
        for o in a.orders { w.u64(o.orderKey); w.u32(o.hour); w.u8(o.channel); w.i64(o.remaining) }
        w.u32(UInt32(a.firstLast.count))
        for f in a.firstLast { w.u8(f.key); w.i64(f.first); w.i64(f.last) }
        w.u32(UInt32(a.recentIDs.count))
        for (h, ts) in a.recentIDs { w.u64(h); w.i64(ts) }
        let c = r.contact
        w.u32(UInt32(c.pending.count))
        for p in c.pending {
            w.u64(p.campaign); w.i64(p.dueMs); w.i64(p.startedAtMs); w.u8(p.deferrals)
            w.text(p.causeEventID)
        }
        w.u32(UInt32(c.marks.count))
        for m in c.marks { w.u64(m.campaign); w.u32(m.episodes); w.i64(m.lastContactMs) }
        w.u32(UInt32(c.ledger.count))
        for e in c.ledger { w.u8(e.channel); w.i64(e.atMs) }
        w.u64(c.consentGranted); w.u64(c.consentWithdrawn)
        w.text(c.timeZone)
        swap(&w.out, &out)
    }

    public static func encode(_ r: CustomerRecord) -> [UInt8] {
        var out: [UInt8] = []
        encode(r, into: &out)
        return out
    }

    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(DecodeError) -> CustomerRecord {
        var rd = ByteReader(bytes)
        let v = try rd.u8()
        guard v == 1 || v == version else { throw DecodeError(message: "customer state format \(v), this build reads 1 and \(version)") }
        var a = CustomerAggregates()
        a.lifetimeEvents = try rd.i64(); a.lifetimeOrders = try rd.i64(); a.lifetimeSpend = try rd.i64()
        a.ownedEvents = try rd.i64(); a.platformEvents = try rd.i64()
        a.channelsUsed = try rd.u64(); a.dailyBelow = try rd.u32()
        var r = CustomerRecord()
        r.memberships = try rd.u64(); r.evaluatedAtMs = try rd.i64(); r.dueMs = try rd.i64(); r.returnedAtMs = try rd.i64()
        r.firstPurchaseFired = try rd.u8() != 0
        let nb = Int(try rd.u32())
        guard nb <= bytes.count / 16 else { throw DecodeError(message: "bucket count \(nb) exceeds the blob") }
        a.buckets.reserveCapacity(nb)
        for _ in 0..<nb {
            let amount = try rd.i64(), hour = try rd.u32(), count = Int16(bitPattern: try rd.u16()), type = try rd.u8(), ch = try rd.u8()
            a.buckets.append(ActivityBucket(amount: amount, hour: hour, count: count, type: type, channel: ch))
        }
        let no = Int(try rd.u32())
        guard no <= bytes.count / 21 else { throw DecodeError(message: "order count \(no) exceeds the blob") }
        for _ in 0..<no {
            let key = try rd.u64(), hour = try rd.u32(), ch = try rd.u8(), rem = try rd.i64()
            a.orders.append(OrderRecord(orderKey: key, hour: hour, channel: ch, remaining: rem))
        }
        let nf = Int(try rd.u32())
        guard nf <= bytes.count / 17 else { throw DecodeError(message: "first/last count \(nf) exceeds the blob") }
        for _ in 0..<nf { a.firstLast.append(FirstLast(key: try rd.u8(), first: try rd.i64(), last: try rd.i64())) }
        let nr = Int(try rd.u32())
        guard nr <= bytes.count / 16 else { throw DecodeError(message: "recent id count \(nr) exceeds the blob") }
        for _ in 0..<nr { a.recentIDs.append((try rd.u64(), try rd.i64())) }
        if v >= 2 {
            var c = ContactState()
            let np = Int(try rd.u32())
            guard np <= bytes.count / 27 else { throw DecodeError(message: "pending count \(np) exceeds the blob") }
            for _ in 0..<np {
                let camp = try rd.u64(), due = try rd.i64(), started = try rd.i64(), deferrals = try rd.u8()
                c.pending.append(PendingTrigger(campaign: camp, dueMs: due, startedAtMs: started, causeEventID: try rd.text(),
                                                deferrals: deferrals))
            }
            let nm = Int(try rd.u32())
            guard nm <= bytes.count / 20 else { throw DecodeError(message: "mark count \(nm) exceeds the blob") }
            for _ in 0..<nm { c.marks.append(CampaignMark(campaign: try rd.u64(), episodes: try rd.u32(), lastContactMs: try rd.i64())) }
            let nl = Int(try rd.u32())
            guard nl <= bytes.count / 9 else { throw DecodeError(message: "ledger count \(nl) exceeds the blob") }
            for _ in 0..<nl { c.ledger.append(ContactEntry(channel: try rd.u8(), atMs: try rd.i64())) }
            c.consentGranted = try rd.u64(); c.consentWithdrawn = try rd.u64()
            c.timeZone = try rd.text() ?? ""
            r.contact = c
        }
        guard rd.atEnd else { throw DecodeError(message: "\(bytes.count - rd.i) unexpected trailing bytes") }
        r.aggregates = a
        return r
    }

    public static func decode(_ bytes: [UInt8]) throws(DecodeError) -> CustomerRecord {
        let result: Result<CustomerRecord, DecodeError> = bytes.withUnsafeBytes { b in
            Result { () throws(DecodeError) in try decode(b) }
        }
        return try result.get()
    }
}

struct ByteWriter {
    var out: [UInt8]
    @inline(__always) mutating func u8(_ v: UInt8) { out.append(v) }
    @inline(__always) mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
    @inline(__always) mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
    @inline(__always) mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
    @inline(__always) mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    /// Length-prefixed UTF-8 (0xFFFF: nil).
    mutating func text(_ s: String?) {
        guard let s else { return u16(0xFFFF) }
        let b = Array(s.utf8.prefix(0xFFFE))
        u16(UInt16(b.count))
        out.append(contentsOf: b)
    }
}

struct ByteReader {
    let b: UnsafeRawBufferPointer
    var i = 0
    init(_ b: UnsafeRawBufferPointer) { self.b = b }
    var atEnd: Bool { i == b.count }
    @inline(__always) mutating func take<T: FixedWidthInteger>(_: T.Type) throws(CustomerRecordCodec.DecodeError) -> T {
        let n = MemoryLayout<T>.size
        guard i + n <= b.count else { throw CustomerRecordCodec.DecodeError(message: "customer state truncated at byte \(i)") }
        let v = b.loadUnaligned(fromByteOffset: i, as: T.self)
        i += n
        return T(littleEndian: v)
    }
    mutating func u8() throws(CustomerRecordCodec.DecodeError) -> UInt8 { try take(UInt8.self) }
    mutating func u16() throws(CustomerRecordCodec.DecodeError) -> UInt16 { try take(UInt16.self) }
    mutating func u32() throws(CustomerRecordCodec.DecodeError) -> UInt32 { try take(UInt32.self) }
    mutating func u64() throws(CustomerRecordCodec.DecodeError) -> UInt64 { try take(UInt64.self) }
    mutating func i64() throws(CustomerRecordCodec.DecodeError) -> Int64 { Int64(bitPattern: try take(UInt64.self)) }
    mutating func text() throws(CustomerRecordCodec.DecodeError) -> String? {
        let n = Int(try u16())
        if n == 0xFFFF { return nil }
        guard i + n <= b.count else { throw CustomerRecordCodec.DecodeError(message: "customer state truncated at byte \(i)") }
        let s = String(decoding: UnsafeRawBufferPointer(rebasing: b[i..<(i + n)]), as: UTF8.self)
        i += n
        return s
    }
}
