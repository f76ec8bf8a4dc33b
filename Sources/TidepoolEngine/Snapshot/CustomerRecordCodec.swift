/// Binary form of one customer's state, as checkpoints store it. Little-endian, versioned, with
/// bounds checks on every read: a truncated or foreign blob is an error, never a crash.
public enum CustomerRecordCodec {
    /// 3 is the compact form (varints and deltas); 2 added the campaign state (pending episodes,
    /// marks, ledger, consent, zone). 1 and 2 are still read.
    public static let version: UInt8 = 3

    public struct DecodeError: Error, Equatable, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    /// Encodes into `out` (replacing its contents; its capacity is reused).
    ///
    /// Format 3 is compact: integers are LEB128 varints (signed ones zigzag), times are deltas
    /// from the evaluation time, bucket hours deltas from the previous bucket. A customer of the
    /// benchmark takes about half the bytes of format 2, and bytes are what a checkpoint pays
    /// for (SQLite's B-tree, the WAL, the fold into the database file, the restore's read).
    /// Fields are stored through a raw pointer into a buffer sized for the worst case: appending
    /// field by field cost a capacity and uniqueness check per field.
    public static func encode(_ r: borrowing CustomerRecord, into out: inout [UInt8]) {
        let n = encode(r, reusing: &out)
        out.removeLast(out.count - n)
    }

    /// Encodes into the first bytes of `buffer`, growing it when needed, and returns how many
    /// bytes the encoding took (the rest of the buffer is scratch). The checkpoint writer's form:
    /// no allocation per customer.
    public static func encode(_ r: borrowing CustomerRecord, reusing out: inout [UInt8]) -> Int {
        let a = r.aggregates
        let c = r.contact
        var bound = 2 + 10 * 12
        bound += 10 + a.sections.count(.buckets) * 32 + 10 + a.sections.count(.orders) * 29 + 10 + a.sections.count(.firstLast) * 21
            + 10 + a.sections.count(.recentIDs) * 18
        bound += 10 + c.marks.count * 28 + 10 + c.ledger.count * 11 + 20 + 10 + c.timeZone.utf8.count
        for p in c.pending { bound += 8 + 10 + 10 + 1 + 10 + (p.causeEventID?.utf8.count ?? 0) }
        if out.count < bound { out = [UInt8](repeating: 0, count: max(bound, 2 * out.count, 1024)) }
        return out.withUnsafeMutableBytes { buf -> Int in
            var w = RawWriter(p: buf.baseAddress!)
            let base = r.evaluatedAtMs
            w.u8(version)
            w.u8((r.firstPurchaseFired ? 1 : 0) | (r.dueMs != .max ? 2 : 0) | (r.returnedAtMs != .min ? 4 : 0))
            w.svar(base)
            if r.dueMs != .max { w.svar(r.dueMs &- base) }
            if r.returnedAtMs != .min { w.svar(r.returnedAtMs &- base) }
            w.uvar(r.memberships)
            w.svar(a.lifetimeEvents); w.svar(a.lifetimeOrders); w.svar(a.lifetimeSpend)
            w.svar(a.ownedEvents); w.svar(a.platformEvents)
            w.uvar(a.channelsUsed); w.uvar(UInt64(a.dailyBelow))
            // Each section is read in place (its array form would be a copy per customer).
            a.withBuckets { buckets in
                w.uvar(UInt64(buckets.count))
                var prev = Int64(a.dailyBelow)
                for b in buckets {
                    w.svar(Int64(b.hour) - prev); prev = Int64(b.hour)
                    w.u8(b.type); w.u8(b.channel); w.svar(Int64(b.count)); w.svar(b.amount)
                }
            }
            a.sections.read(.orders, as: PackedOrder.self) { orders in
                w.uvar(UInt64(orders.count))
                for o in orders { w.u64(o.key); w.svar(Int64(o.hour) - Int64(a.dailyBelow)); w.u8(o.channel); w.svar(o.remaining) }
            }
            a.withFirstLast { firstLast in
                w.uvar(UInt64(firstLast.count))
                for f in firstLast { w.u8(f.key); w.svar(f.first &- base); w.svar(f.last &- f.first) }
            }
            a.sections.read(.recentIDs, as: RecentID.self) { ids in
                w.uvar(UInt64(ids.count))
                for r in ids { w.u64(r.hash); w.svar(r.timeMs &- base) }
            }
            w.uvar(UInt64(c.pending.count))
            for p in c.pending {
                w.u64(p.campaign); w.svar(p.dueMs &- base); w.svar(p.startedAtMs &- base); w.u8(p.deferrals)
                w.text(p.causeEventID)
            }
            w.uvar(UInt64(c.marks.count))
            for m in c.marks { w.u64(m.campaign); w.uvar(UInt64(m.episodes)); w.svar(m.lastContactMs &- base) }
            w.uvar(UInt64(c.ledger.count))
            for e in c.ledger { w.u8(e.channel); w.svar(e.atMs &- base) }
            w.uvar(c.consentGranted); w.uvar(c.consentWithdrawn)
            w.text(c.timeZone)
            precondition(w.offset <= bound, "customer state bound miscounted")
            return w.offset
        }
    }

    public static func encode(_ r: CustomerRecord) -> [UInt8] {
        var out: [UInt8] = []
        encode(r, into: &out)
        return out
    }

    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(DecodeError) -> CustomerRecord {
        var rd = ByteReader(bytes)
        let v = try rd.u8()
        if v == 3 { return try decodeCompact(&rd) }
        guard v == 1 || v == 2 else { throw DecodeError(message: "customer state format \(v), this build reads 1 to \(version)") }
        var a = CustomerAggregates()
        a.lifetimeEvents = try rd.i64(); a.lifetimeOrders = try rd.i64(); a.lifetimeSpend = try rd.i64()
        a.setChannelCounts(owned: try rd.i64(), platform: try rd.i64())
        a.channelsUsed = try rd.u64(); a.dailyBelow = try rd.u32()
        var r = CustomerRecord()
        r.memberships = try rd.u64(); r.evaluatedAtMs = try rd.i64(); r.dueMs = try rd.i64(); r.returnedAtMs = try rd.i64()
        r.firstPurchaseFired = try rd.u8() != 0
        let nb = Int(try rd.u32())
        guard nb <= bytes.count / 16 else { throw DecodeError(message: "bucket count \(nb) exceeds the blob") }
        a.reserve(buckets: nb)
        for _ in 0..<nb {
            let amount = try rd.i64(), hour = try rd.u32(), count = Int16(bitPattern: try rd.u16()), type = try rd.u8(), ch = try rd.u8()
            try checkBucket(type: type, channel: ch, amount: amount)
            a.appendBucket(ActivityBucket(amount: amount, hour: hour, count: count, type: type, channel: ch))
        }
        let no = Int(try rd.u32())
        guard no <= bytes.count / 21 else { throw DecodeError(message: "order count \(no) exceeds the blob") }
        for _ in 0..<no {
            let key = try rd.u64(), hour = try rd.u32(), ch = try rd.u8(), rem = try rd.i64()
            a.appendOrder(OrderRecord(orderKey: key, hour: hour, channel: ch, remaining: rem))
        }
        let nf = Int(try rd.u32())
        guard nf <= bytes.count / 17 else { throw DecodeError(message: "first/last count \(nf) exceeds the blob") }
        guard nf <= 255 else { throw DecodeError(message: "first/last count \(nf) above 255") }
        for _ in 0..<nf { a.appendFirstLast(FirstLast(key: try rd.u8(), first: try rd.i64(), last: try rd.i64())) }
        let nr = Int(try rd.u32())
        guard nr <= bytes.count / 16 else { throw DecodeError(message: "recent id count \(nr) exceeds the blob") }
        guard nr <= 255 else { throw DecodeError(message: "recent id count \(nr) above 255") }
        for _ in 0..<nr { a.appendRecentID(try rd.u64(), try rd.i64()) }
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
        a.finishBuilding()
        r.aggregates = a
        return r
    }

    /// What a bucket word can hold (`BucketWords`): a state outside it is foreign or corrupt.
    private static func checkBucket(type: UInt8, channel: UInt8, amount: Int64) throws(DecodeError) {
        guard type < 64, channel < 64 else { throw DecodeError(message: "bucket type \(type) or channel \(channel) above 63") }
        guard BucketWords.holds(amount) else { throw DecodeError(message: "bucket amount \(amount) beyond 2^62 units") }
    }

    /// Format 3 (after its version byte).
    static func decodeCompact(_ rd: inout ByteReader) throws(DecodeError) -> CustomerRecord {
        var r = CustomerRecord()
        var a = CustomerAggregates()
        let flags = try rd.u8()
        let base = try rd.svar()
        r.evaluatedAtMs = base
        r.firstPurchaseFired = flags & 1 != 0
        r.dueMs = flags & 2 != 0 ? base &+ (try rd.svar()) : .max
        r.returnedAtMs = flags & 4 != 0 ? base &+ (try rd.svar()) : .min
        r.memberships = try rd.uvar()
        a.lifetimeEvents = try rd.svar(); a.lifetimeOrders = try rd.svar(); a.lifetimeSpend = try rd.svar()
        a.setChannelCounts(owned: try rd.svar(), platform: try rd.svar())
        a.channelsUsed = try rd.uvar()
        a.dailyBelow = try rd.u32var()
        let nb = try rd.count(minBytes: 4, "bucket")
        a.reserve(buckets: nb)
        var prev = Int64(a.dailyBelow)
        for _ in 0..<nb {
            let hour = prev &+ (try rd.svar())
            guard let h = UInt32(exactly: hour) else { throw DecodeError(message: "bucket hour \(hour) out of range") }
            prev = hour
            let type = try rd.u8(), ch = try rd.u8()
            let count = try rd.svar()
            guard let n = Int16(exactly: count) else { throw DecodeError(message: "bucket count \(count) out of range") }
            let amount = try rd.svar()
            try checkBucket(type: type, channel: ch, amount: amount)
            a.appendBucket(ActivityBucket(amount: amount, hour: h, count: n, type: type, channel: ch))
        }
        let no = try rd.count(minBytes: 11, "order")
        a.reserve(orders: no)
        for _ in 0..<no {
            let key = try rd.u64(), hour = Int64(a.dailyBelow) &+ (try rd.svar())
            guard let h = UInt32(exactly: hour) else { throw DecodeError(message: "order hour \(hour) out of range") }
            a.appendOrder(OrderRecord(orderKey: key, hour: h, channel: try rd.u8(), remaining: try rd.svar()))
        }
        let nf = try rd.count(minBytes: 3, "first/last")
        guard nf <= 255 else { throw DecodeError(message: "first/last count \(nf) above 255") }
        a.reserve(firstLast: nf)
        for _ in 0..<nf {
            let key = try rd.u8(), first = base &+ (try rd.svar())
            a.appendFirstLast(FirstLast(key: key, first: first, last: first &+ (try rd.svar())))
        }
        let nr = try rd.count(minBytes: 9, "recent id")
        guard nr <= 255 else { throw DecodeError(message: "recent id count \(nr) above 255") }
        a.reserve(recentIDs: nr)
        for _ in 0..<nr { a.appendRecentID(try rd.u64(), base &+ (try rd.svar())) }
        var c = ContactState()
        let np = try rd.count(minBytes: 12, "pending")
        for _ in 0..<np {
            let camp = try rd.u64(), due = base &+ (try rd.svar()), started = base &+ (try rd.svar()), deferrals = try rd.u8()
            c.pending.append(PendingTrigger(campaign: camp, dueMs: due, startedAtMs: started, causeEventID: try rd.vtext(),
                                            deferrals: deferrals))
        }
        let nm = try rd.count(minBytes: 10, "mark")
        for _ in 0..<nm {
            let camp = try rd.u64(), episodes = try rd.u32var()
            c.marks.append(CampaignMark(campaign: camp, episodes: episodes, lastContactMs: base &+ (try rd.svar())))
        }
        let nl = try rd.count(minBytes: 2, "ledger")
        for _ in 0..<nl { c.ledger.append(ContactEntry(channel: try rd.u8(), atMs: base &+ (try rd.svar()))) }
        // Each field is set only when it holds something: the first write allocates the contact
        // storage, which most customers never need.
        let granted = try rd.uvar(), withdrawn = try rd.uvar()
        if granted != 0 { c.consentGranted = granted }
        if withdrawn != 0 { c.consentWithdrawn = withdrawn }
        if let zone = try rd.vtext(), !zone.isEmpty { c.timeZone = zone }
        guard rd.atEnd else { throw DecodeError(message: "\(rd.b.count - rd.i) unexpected trailing bytes") }
        r.contact = c
        a.finishBuilding()
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

/// Little-endian stores through a raw pointer into a buffer sized beforehand.
struct RawWriter {
    let p: UnsafeMutableRawPointer
    var offset = 0
    @inline(__always) mutating func u8(_ v: UInt8) { p.storeBytes(of: v, toByteOffset: offset, as: UInt8.self); offset += 1 }
    @inline(__always) mutating func u16(_ v: UInt16) { p.storeBytes(of: v.littleEndian, toByteOffset: offset, as: UInt16.self); offset += 2 }
    @inline(__always) mutating func u32(_ v: UInt32) { p.storeBytes(of: v.littleEndian, toByteOffset: offset, as: UInt32.self); offset += 4 }
    @inline(__always) mutating func u64(_ v: UInt64) { p.storeBytes(of: v.littleEndian, toByteOffset: offset, as: UInt64.self); offset += 8 }
    @inline(__always) mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    /// LEB128: 7 bits per byte, low first, high bit set on all but the last.
    @inline(__always) mutating func uvar(_ v0: UInt64) {
        var v = v0
        while v >= 0x80 {
            u8(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        u8(UInt8(v))
    }
    /// Zigzag, then LEB128: small magnitudes of either sign take few bytes.
    @inline(__always) mutating func svar(_ v: Int64) { uvar(UInt64(bitPattern: (v << 1) ^ (v >> 63))) }
    /// UTF-8 with its length + 1 as a varint (0: nil).
    mutating func text(_ s: String?) {
        guard let s else { return uvar(0) }
        uvar(UInt64(s.utf8.count) + 1)
        for b in s.utf8 { u8(b) }
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
    mutating func uvar() throws(CustomerRecordCodec.DecodeError) -> UInt64 {
        var v: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard i < b.count else { throw CustomerRecordCodec.DecodeError(message: "customer state truncated at byte \(i)") }
            let byte = b[i]
            i += 1
            guard shift < 64, shift < 63 || byte <= 1 else { throw CustomerRecordCodec.DecodeError(message: "varint too long at byte \(i)") }
            v |= UInt64(byte & 0x7F) << shift
            if byte < 0x80 { return v }
            shift += 7
        }
    }
    mutating func svar() throws(CustomerRecordCodec.DecodeError) -> Int64 {
        let u = try uvar()
        return Int64(bitPattern: (u >> 1) ^ (0 &- (u & 1)))
    }
    mutating func u32var() throws(CustomerRecordCodec.DecodeError) -> UInt32 {
        let v = try uvar()
        guard let x = UInt32(exactly: v) else { throw CustomerRecordCodec.DecodeError(message: "value \(v) out of range at byte \(i)") }
        return x
    }
    /// A count of elements of at least `minBytes` each, checked against what is left.
    mutating func count(minBytes: Int, _ what: String) throws(CustomerRecordCodec.DecodeError) -> Int {
        let n = try uvar()
        guard n <= UInt64((b.count - i) / minBytes) else { throw CustomerRecordCodec.DecodeError(message: "\(what) count \(n) exceeds the blob") }
        return Int(n)
    }
    /// Text written by `RawWriter.text`.
    mutating func vtext() throws(CustomerRecordCodec.DecodeError) -> String? {
        let n1 = try uvar()
        if n1 == 0 { return nil }
        let n = Int(n1 - 1)
        guard n <= b.count - i else { throw CustomerRecordCodec.DecodeError(message: "customer state truncated at byte \(i)") }
        let s = String(decoding: UnsafeRawBufferPointer(rebasing: b[i..<(i + n)]), as: UTF8.self)
        i += n
        return s
    }
    mutating func text() throws(CustomerRecordCodec.DecodeError) -> String? {
        let n = Int(try u16())
        if n == 0xFFFF { return nil }
        guard i + n <= b.count else { throw CustomerRecordCodec.DecodeError(message: "customer state truncated at byte \(i)") }
        let s = String(decoding: UnsafeRawBufferPointer(rebasing: b[i..<(i + n)]), as: UTF8.self)
        i += n
        return s
    }
}
