/// Limits the decoder enforces; they come from the `decoding` section of the configuration.
public struct DecoderLimits: Sendable, Equatable {
    /// Largest accepted record, in bytes.
    public var maxEventBytes: Int
    /// How far in the future (relative to the wall clock at decode time) an event may lie.
    public var maxFutureSkewMs: Int64
    /// Longest accepted `event_id` / `customer_id`, in bytes.
    public var maxIDBytes: Int

    public init(maxEventBytes: Int = 65_536, maxFutureSkewMs: Int64 = 5 * 60_000, maxIDBytes: Int = 128) {
        self.maxEventBytes = maxEventBytes
        self.maxFutureSkewMs = maxFutureSkewMs
        self.maxIDBytes = maxIDBytes
    }
}

/// Decodes and validates one touchpoint record against schemas/touchpoint-event.v1.schema.json.
///
/// Strict: unknown top-level fields, duplicates, wrong types and malformed JSON are all rejected
/// with the first problem found in document order. Pure: the caller passes the wall-clock time
/// used for the future-skew check.
public struct TouchpointDecoder: Sendable {
    public var limits: DecoderLimits

    public init(limits: DecoderLimits = DecoderLimits()) {
        self.limits = limits
    }

    private struct Seen: OptionSet {
        let rawValue: UInt16
        static let eventID = Seen(rawValue: 1 << 0)
        static let customerID = Seen(rawValue: 1 << 1)
        static let type = Seen(rawValue: 1 << 2)
        static let channel = Seen(rawValue: 1 << 3)
        static let timestamp = Seen(rawValue: 1 << 4)
        static let amount = Seen(rawValue: 1 << 5)
        static let currency = Seen(rawValue: 1 << 6)
        static let identities = Seen(rawValue: 1 << 7)
        static let properties = Seen(rawValue: 1 << 8)
    }

    /// Decodes `payload`. `key` is the Kafka message key (nil when the record has none); it must
    /// equal `customer_id` byte for byte. Pass `key: .skip` to decode without the key check
    /// (for files read by the backtest, which have no keys).
    public func decode(_ payload: UnsafeRawBufferPointer, key: KeyCheck, nowMs: Int64) throws(DecodeFailure) -> TouchpointEvent {
        guard payload.count <= limits.maxEventBytes else {
            throw DecodeFailure(.oversize, "record is \(payload.count) bytes, limit is \(limits.maxEventBytes)")
        }
        var s = JSONScanner(payload)
        s.skipWS()
        guard s.peek() == 0x7B else {
            if s.atEnd { throw DecodeFailure(.invalidJSON, "empty record") }
            if s.peek() >= 0x80 { try Self.failOnUTF8(payload) }
            throw s.syntax("a JSON object")
        }
        s.i += 1

        var seen: Seen = []
        var eventID = "", customerID = "", channel = ""
        var customerSpan = JSONScanner.StringSpan(start: 0, end: 0, escaped: false)
        var type = EventType.pageView
        var ts: Int64 = 0
        var amount: Money? = nil
        var currency: String? = nil
        var identities: RawJSONObject? = nil
        var properties: RawJSONObject? = nil

        s.skipWS()
        if s.peek() == 0x7D {
            s.i += 1
        } else {
            while true {
                s.skipWS()
                guard s.peek() == 0x22 else { throw s.syntax("a member name") }
                let keySpan = try s.scanString()
                try s.expect(0x3A, "':'")
                s.skipWS()
                let f = Self.field(s, keySpan)
                if f.isEmpty {
                    let name = s.string(keySpan)
                    throw DecodeFailure(.unknownField, field: name, "field \"\(name)\" is not part of touchpoint-event v1; put extensions in properties", offset: keySpan.start)
                }
                if seen.contains(f) {
                    throw DecodeFailure(.duplicateField, field: s.string(keySpan), "field appears more than once", offset: keySpan.start)
                }
                switch f {
                case .eventID:
                    let v = try stringValue(&s, "event_id")
                    eventID = s.string(v)
                    try checkID(v, eventID, "event_id")
                case .customerID:
                    let v = try stringValue(&s, "customer_id")
                    customerSpan = v
                    customerID = s.string(v)
                    try checkID(v, customerID, "customer_id")
                case .type:
                    let v = try stringValue(&s, "type")
                    guard !v.escaped, let t = Self.eventType(s, v) else {
                        throw DecodeFailure(.invalidValue, field: "type", "unknown event type \"\(s.string(v))\"", offset: v.start)
                    }
                    type = t
                case .channel:
                    let v = try stringValue(&s, "channel")
                    guard Self.isToken(s, v, max: 32) else {
                        throw DecodeFailure(.invalidValue, field: "channel", "channel must match ^[a-z][a-z0-9_]{0,31}$", offset: v.start)
                    }
                    channel = s.string(v)
                case .timestamp:
                    ts = try timestampValue(&s)
                case .amount:
                    amount = try amountValue(&s)
                case .currency:
                    let v = try stringValue(&s, "currency")
                    guard v.length == 3, !v.escaped,
                          (0..<3).allSatisfy({ s.base[v.start + $0] >= 0x41 && s.base[v.start + $0] <= 0x5A }) else {
                        throw DecodeFailure(.invalidValue, field: "currency", "currency must be an ISO 4217 code such as CNY", offset: v.start)
                    }
                    currency = s.string(v)
                case .identities:
                    identities = try objectValue(&s, "identities", stringValuesOnly: true)
                default:
                    properties = try objectValue(&s, "properties", stringValuesOnly: false)
                }
                seen.insert(f)
                s.skipWS()
                guard !s.atEnd else { throw s.syntax("',' or '}'") }
                if s.base[s.i] == 0x2C { s.i += 1; continue }
                if s.base[s.i] == 0x7D { s.i += 1; break }
                throw s.syntax("',' or '}'")
            }
        }
        s.skipWS()
        guard s.atEnd else { throw DecodeFailure(.invalidJSON, "trailing data after the JSON object", offset: s.i) }

        if !seen.contains(.eventID) { throw DecodeFailure(.missingField, field: "event_id", "event_id is required") }
        if !seen.contains(.customerID) { throw DecodeFailure(.missingField, field: "customer_id", "customer_id is required") }
        if !seen.contains(.type) { throw DecodeFailure(.missingField, field: "type", "type is required") }
        if !seen.contains(.channel) { throw DecodeFailure(.missingField, field: "channel", "channel is required") }
        if !seen.contains(.timestamp) { throw DecodeFailure(.missingField, field: "timestamp", "timestamp is required") }
        if (type == .purchase || type == .refund) && amount == nil {
            throw DecodeFailure(.missingField, field: "amount", "\(type.name) events require amount")
        }
        if amount != nil && currency == nil {
            throw DecodeFailure(.missingField, field: "currency", "amount requires currency")
        }
        if type == .consent {
            // A consent change that cannot be read must not be silently ignored: the campaign
            // policy would keep contacting a customer who withdrew.
            guard let status = properties?.string(forKey: "status") else {
                throw DecodeFailure(.missingField, field: "properties.status", "consent events require properties.status (granted or withdrawn)")
            }
            guard status == "granted" || status == "withdrawn" else {
                throw DecodeFailure(.invalidValue, field: "properties.status", "properties.status must be granted or withdrawn, found \"\(status)\"")
            }
        }

        switch key {
        case .skip: break
        case .none:
            throw DecodeFailure(.keyMismatch, field: "customer_id", "record has no key; the key must equal customer_id")
        case .bytes(let k):
            let matches = !customerSpan.escaped && k.count == customerSpan.length
                && (k.count == 0 || memEqual(k.baseAddress!, s.base + customerSpan.start, k.count))
            if !matches && !(customerSpan.escaped && Array(k) == Array(customerID.utf8)) {
                throw DecodeFailure(.keyMismatch, field: "customer_id", "record key differs from customer_id")
            }
        }
        if ts > nowMs + limits.maxFutureSkewMs {
            throw DecodeFailure(.timestampInFuture, field: "timestamp",
                                "timestamp \(Timestamp.formatRFC3339(ts)) is more than \(limits.maxFutureSkewMs) ms ahead of now")
        }
        return TouchpointEvent(eventID: eventID, customerID: customerID, type: type, channel: channel,
                               timestampMs: ts, amount: amount, currency: currency,
                               identities: identities, properties: properties)
    }

    /// Convenience for tests and tools.
    public func decode(_ payload: [UInt8], key: [UInt8]?, nowMs: Int64) throws(DecodeFailure) -> TouchpointEvent {
        let r: Result<TouchpointEvent, DecodeFailure> = payload.withUnsafeBytes { p in
            if let key {
                return key.withUnsafeBytes { k in Result { () throws(DecodeFailure) in try decode(p, key: .bytes(k), nowMs: nowMs) } }
            }
            return Result { () throws(DecodeFailure) in try decode(p, key: KeyCheck.none, nowMs: nowMs) }
        }
        return try r.get()
    }

    public func decode(_ payload: [UInt8], nowMs: Int64) throws(DecodeFailure) -> TouchpointEvent {
        let r: Result<TouchpointEvent, DecodeFailure> = payload.withUnsafeBytes { p in
            Result { () throws(DecodeFailure) in try decode(p, key: .skip, nowMs: nowMs) }
        }
        return try r.get()
    }

    // MARK: - Field readers

    @inline(__always)
    private func stringValue(_ s: inout JSONScanner, _ field: StaticString) throws(DecodeFailure) -> JSONScanner.StringSpan {
        guard s.peek() == 0x22 else { throw wrongType(&s, "\(field)", expected: "a string") }
        // The field name is attached only on failure: building it per call costs an allocation.
        do {
            return try s.scanString(field: nil)
        } catch {
            var e = error
            e.field = "\(field)"
            throw e
        }
    }

    /// Reports a wrong type, but only after checking the value is at least valid JSON, so that
    /// garbage is reported as invalid_json rather than wrong_type.
    private func wrongType(_ s: inout JSONScanner, _ field: String, expected: String) -> DecodeFailure {
        let at = s.i
        do { try s.skipValue(field: field) } catch { return error }
        let kind: String
        switch s.base[at] {
        case 0x22: kind = "a string"
        case 0x7B: kind = "an object"
        case 0x5B: kind = "an array"
        case 0x74, 0x66: kind = "a boolean"
        case 0x6E: kind = "null"
        default: kind = "a number"
        }
        return DecodeFailure(.wrongType, field: field, "\(field) must be \(expected), found \(kind)", offset: at)
    }

    private func checkID(_ v: JSONScanner.StringSpan, _ value: String, _ field: String) throws(DecodeFailure) {
        // Measured on the decoded text: escapes in the JSON do not count against the limit.
        let bytes = v.escaped ? value.utf8.count : v.length
        guard bytes > 0 else { throw DecodeFailure(.invalidValue, field: field, "\(field) must not be empty", offset: v.start) }
        guard bytes <= limits.maxIDBytes else {
            throw DecodeFailure(.invalidValue, field: field, "\(field) is longer than \(limits.maxIDBytes) bytes", offset: v.start)
        }
    }

    private func timestampValue(_ s: inout JSONScanner) throws(DecodeFailure) -> Int64 {
        let c = s.peek()
        if c == 0x22 {
            let v = try s.scanString(field: "timestamp")
            guard !v.escaped, let ms = Timestamp.parseRFC3339(s.base + v.start, v.length) else {
                throw DecodeFailure(.invalidTimestamp, field: "timestamp", "\"\(s.string(v))\" is not an RFC 3339 timestamp", offset: v.start)
            }
            return ms
        }
        if c == 0x2D || (c >= 0x30 && c <= 0x39) {
            let n = try s.scanNumber(field: "timestamp")
            guard !n.negative, !n.hasFraction, !n.hasExponent, n.intEnd - n.intStart <= 15,
                  let ms = parseDigits(s, n.intStart, n.intEnd), ms <= Timestamp.maxMs else {
                throw DecodeFailure(.invalidTimestamp, field: "timestamp", "a numeric timestamp must be non-negative integer epoch milliseconds", offset: n.start)
            }
            return ms
        }
        throw wrongType(&s, "timestamp", expected: "an RFC 3339 string or epoch milliseconds")
    }

    private func amountValue(_ s: inout JSONScanner) throws(DecodeFailure) -> Money {
        let c = s.peek()
        guard c == 0x2D || (c >= 0x30 && c <= 0x39) else { throw wrongType(&s, "amount", expected: "a number") }
        let n = try s.scanNumber(field: "amount")
        let fracDigits = n.hasFraction ? n.fracEnd - n.intEnd - 1 : 0
        guard !n.negative, !n.hasExponent, fracDigits <= 4, n.intEnd - n.intStart <= 12,
              let whole = parseDigits(s, n.intStart, n.intEnd) else {
            throw DecodeFailure(.invalidValue, field: "amount",
                                "amount must be a non-negative decimal below 10^12 with at most 4 fraction digits and no exponent", offset: n.start)
        }
        var frac: Int64 = 0
        if fracDigits > 0 {
            frac = parseDigits(s, n.intEnd + 1, n.fracEnd) ?? 0
            for _ in fracDigits..<4 { frac *= 10 }
        }
        return Money(units: whole * Money.scale + frac)
    }

    private func objectValue(_ s: inout JSONScanner, _ field: String, stringValuesOnly: Bool) throws(DecodeFailure) -> RawJSONObject {
        guard s.peek() == 0x7B else { throw wrongType(&s, field, expected: "an object") }
        let start = s.i
        if stringValuesOnly {
            s.i += 1
            s.skipWS()
            if s.peek() == 0x7D {
                s.i += 1
            } else {
                while true {
                    s.skipWS()
                    guard s.peek() == 0x22 else { throw s.syntax("a member name", field: field) }
                    let k = try s.scanString(field: field)
                    try s.expect(0x3A, "':'")
                    s.skipWS()
                    guard s.peek() == 0x22 else {
                        throw wrongType(&s, "\(field).\(s.string(k))", expected: "a string")
                    }
                    let v = try s.scanString(field: field)
                    guard v.length > 0 else {
                        throw DecodeFailure(.invalidValue, field: "\(field).\(s.string(k))", "identity values must not be empty", offset: v.start)
                    }
                    s.skipWS()
                    guard !s.atEnd else { throw s.syntax("',' or '}'", field: field) }
                    if s.base[s.i] == 0x2C { s.i += 1; continue }
                    if s.base[s.i] == 0x7D { s.i += 1; break }
                    throw s.syntax("',' or '}'", field: field)
                }
            }
        } else {
            try s.skipObject(depth: 1, field: field)
        }
        return RawJSONObject(validated: Array(UnsafeBufferPointer(start: s.base + start, count: s.i - start)))
    }

    // MARK: - Helpers

    @inline(__always)
    private func parseDigits(_ s: JSONScanner, _ a: Int, _ b: Int) -> Int64? {
        guard b > a, b - a <= 18 else { return nil }
        var v: Int64 = 0
        var k = a
        while k < b { v = v &* 10 &+ Int64(s.base[k] &- 0x30); k += 1 }
        return v
    }

    /// Which v1 field a member name is (empty for an unknown name). Escaped names never match.
    @inline(__always)
    private static func field(_ s: JSONScanner, _ k: JSONScanner.StringSpan) -> Seen {
        switch k.length {
        case 4: return s.equals(k, "type") ? .type : []
        case 6: return s.equals(k, "amount") ? .amount : []
        case 7: return s.equals(k, "channel") ? .channel : []
        case 8: return s.equals(k, "event_id") ? .eventID : s.equals(k, "currency") ? .currency : []
        case 9: return s.equals(k, "timestamp") ? .timestamp : []
        case 10: return s.equals(k, "identities") ? .identities : s.equals(k, "properties") ? .properties : []
        case 11: return s.equals(k, "customer_id") ? .customerID : []
        default: return []
        }
    }

    private static func eventType(_ s: JSONScanner, _ v: JSONScanner.StringSpan) -> EventType? {
        // Compare against the wire names through one flat, immortal byte table: no per-call
        // array retains on the hot path.
        let table = EventTypeTable.shared
        let p = s.base + v.start
        for t in 0..<table.count where table.lengths[t] == v.length {
            if memEqual(UnsafeRawPointer(table.bytes + table.offsets[t]), p, v.length) { return EventType(rawValue: UInt8(t)) }
        }
        return nil
    }

    private static func isToken(_ s: JSONScanner, _ v: JSONScanner.StringSpan, max: Int) -> Bool {
        guard !v.escaped, v.length >= 1, v.length <= max else { return false }
        let first = s.base[v.start]
        guard first >= 0x61 && first <= 0x7A else { return false }
        for k in 1..<v.length {
            let c = s.base[v.start + k]
            if !((c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39) || c == 0x5F) { return false }
        }
        return true
    }

    private static func failOnUTF8(_ payload: UnsafeRawBufferPointer) throws(DecodeFailure) {
        // The record does not start like JSON and has a non-ASCII byte there: say whether it is
        // even UTF-8, which is the more useful answer for a producer sending binary data.
        var it = payload.makeIterator()
        var utf8 = UTF8()
        loop: while true {
            switch utf8.decode(&it) {
            case .scalarValue: continue
            case .emptyInput: break loop
            case .error: throw DecodeFailure(.invalidUTF8, "record is not valid UTF-8")
            }
        }
    }
}

/// How the decoder treats the Kafka message key.
public enum KeyCheck {
    /// The record has no key: a keyed topic requires one, so this is a `key_mismatch`.
    case none
    /// The key must equal `customer_id`.
    case bytes(UnsafeRawBufferPointer)
    /// No key check (records read from files).
    case skip
}

/// The wire names of all event types in one allocation that lives for the whole process.
final class EventTypeTable: @unchecked Sendable {
    static let shared = EventTypeTable()
    let bytes: UnsafeMutablePointer<UInt8>
    let offsets: UnsafeMutablePointer<Int>
    let lengths: UnsafeMutablePointer<Int>
    let count = EventType.allCases.count

    private init() {
        let names = EventType.allCases.map { Array($0.name.utf8) }
        bytes = .allocate(capacity: names.reduce(0) { $0 + $1.count })
        offsets = .allocate(capacity: names.count)
        lengths = .allocate(capacity: names.count)
        var at = 0
        for (k, n) in names.enumerated() {
            offsets[k] = at
            lengths[k] = n.count
            for (j, b) in n.enumerated() { bytes[at + j] = b }
            at += n.count
        }
    }
}

@inline(__always)
func memEqual(_ a: UnsafeRawPointer, _ b: UnsafePointer<UInt8>, _ n: Int) -> Bool {
    var k = 0
    let pa = a.assumingMemoryBound(to: UInt8.self)
    while k < n { if pa[k] != b[k] { return false }; k += 1 }
    return true
}
