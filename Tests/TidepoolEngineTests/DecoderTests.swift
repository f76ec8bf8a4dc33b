@testable import TidepoolEngine
import XCTest

/// Tests of the touchpoint decoder against the v1 contract (schemas/touchpoint-event.v1.schema.json),
/// plus the helpers whose output is part of a wire format (timestamps, money, trigger ids).
final class DecoderTests: XCTestCase {
    /// 2026-11-22T08:53:07.123Z, the wall clock the decoder is given unless a test says otherwise.
    static let now: Int64 = 1_795_337_587_123

    // MARK: - Helpers

    /// How a test hands the Kafka key to the decoder.
    enum Key {
        /// The record has this key.
        case bytes([UInt8])
        /// The record has no key.
        case absent
        /// No key check (decode(_:nowMs:)).
        case skip

        static let c1 = Key.bytes(Array("c-1".utf8))
    }

    /// The members of a minimal valid event, in order, as (name, raw JSON value).
    static let minimalMembers: [(String, String)] = [
        ("event_id", #""e-1""#),
        ("customer_id", #""c-1""#),
        ("type", #""page_view""#),
        ("channel", #""website""#),
        ("timestamp", "1795337587000"),
    ]

    /// A JSON event: the minimal members with `set` replacing same-named members in place (or
    /// appended after them, in order) and `removing` left out.
    static func event(_ set: [(String, String)] = [], removing: Set<String> = []) -> String {
        var members = minimalMembers.filter { !removing.contains($0.0) }
        for (name, value) in set {
            if let k = members.firstIndex(where: { $0.0 == name }) {
                members[k].1 = value
            } else {
                members.append((name, value))
            }
        }
        return "{" + members.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}"
    }

    static func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    /// `template` with each "@@" replaced by `raw` (to put arbitrary bytes into a payload).
    static func splice(_ template: String, _ raw: [UInt8]) -> [UInt8] {
        let parts = template.components(separatedBy: "@@")
        var out: [UInt8] = []
        for (n, p) in parts.enumerated() {
            if n > 0 { out += raw }
            out += Array(p.utf8)
        }
        return out
    }

    func decode(_ payload: [UInt8], key: Key = .c1, decoder: TouchpointDecoder = TouchpointDecoder(),
                now: Int64 = DecoderTests.now) throws(DecodeFailure) -> TouchpointEvent {
        switch key {
        case .bytes(let k): return try decoder.decode(payload, key: k, nowMs: now)
        case .absent: return try decoder.decode(payload, key: nil, nowMs: now)
        case .skip: return try decoder.decode(payload, nowMs: now)
        }
    }

    /// Decodes a payload that must be accepted; fails the test (and returns nil) otherwise.
    func accept(_ payload: [UInt8], key: Key = .c1, decoder: TouchpointDecoder = TouchpointDecoder(),
                now: Int64 = DecoderTests.now, file: StaticString = #filePath, line: UInt = #line) -> TouchpointEvent? {
        do {
            return try decode(payload, key: key, decoder: decoder, now: now)
        } catch {
            XCTFail("expected the record to be accepted, got \(error)", file: file, line: line)
            return nil
        }
    }

    func accept(_ json: String, key: Key = .c1, decoder: TouchpointDecoder = TouchpointDecoder(),
                now: Int64 = DecoderTests.now, file: StaticString = #filePath, line: UInt = #line) -> TouchpointEvent? {
        accept(Self.bytes(json), key: key, decoder: decoder, now: now, file: file, line: line)
    }

    /// Asserts that the payload is rejected with exactly `reason` and `field`.
    @discardableResult
    func reject(_ payload: [UInt8], _ reason: DeadLetterReason, field: String?, key: Key = .c1,
                decoder: TouchpointDecoder = TouchpointDecoder(), now: Int64 = DecoderTests.now,
                file: StaticString = #filePath, line: UInt = #line) -> DecodeFailure? {
        do {
            let e = try decode(payload, key: key, decoder: decoder, now: now)
            XCTFail("expected \(reason.rawValue) [\(field ?? "-")], but the record was accepted: \(e)", file: file, line: line)
            return nil
        } catch {
            XCTAssertEqual(error.reason, reason, "\(error)", file: file, line: line)
            XCTAssertEqual(error.field, field, "\(error)", file: file, line: line)
            return error
        }
    }

    @discardableResult
    func reject(_ json: String, _ reason: DeadLetterReason, field: String?, key: Key = .c1,
                decoder: TouchpointDecoder = TouchpointDecoder(), now: Int64 = DecoderTests.now,
                file: StaticString = #filePath, line: UInt = #line) -> DecodeFailure? {
        reject(Self.bytes(json), reason, field: field, key: key, decoder: decoder, now: now, file: file, line: line)
    }

    /// The timestamp the decoder reads from `value` (a raw JSON value), or nil when it is rejected
    /// with invalid_timestamp (any other outcome fails the test).
    func timestamp(_ value: String, file: StaticString = #filePath, line: UInt = #line) -> Int64? {
        do {
            return try decode(Self.bytes(Self.event([("timestamp", value)])), key: .skip, now: Timestamp.maxMs).timestampMs
        } catch {
            XCTAssertEqual(error.reason, .invalidTimestamp, "\(value): \(error)", file: file, line: line)
            XCTAssertEqual(error.field, "timestamp", file: file, line: line)
            return nil
        }
    }

    // MARK: - Valid events

    func testMinimalEvent() throws {
        let e = try XCTUnwrap(accept(Self.event()))
        XCTAssertEqual(e, TouchpointEvent(eventID: "e-1", customerID: "c-1", type: .pageView, channel: "website",
                                          timestampMs: 1_795_337_587_000))
        XCTAssertNil(e.amount)
        XCTAssertNil(e.currency)
        XCTAssertNil(e.identities)
        XCTAssertNil(e.properties)
    }

    func testMembersInAnyOrderAndWhitespace() throws {
        let json = " \t\r\n{ \"timestamp\" : 0 ,\n\"channel\":\"app\", \"type\":\"login\",\"customer_id\":\"c-1\" ,\"event_id\" : \"e-9\" }\n "
        let e = try XCTUnwrap(accept(json))
        XCTAssertEqual(e, TouchpointEvent(eventID: "e-9", customerID: "c-1", type: .login, channel: "app", timestampMs: 0))
    }

    func testFullEvent() throws {
        let identities = #"{"phone":"+8613800138000","wechat_unionid":"o6_bmasd","tmall_buyer_id":"tb_2207781"}"#
        let properties = #"{"order_id":"TB-20261122-7781","sku":"SKU-1029","quantity":2,"tags":["new",null,true,1.5e3],"nested":{"a":{"b":[]}}}"#
        let json = """
        {"event_id":"evt-20261122-000123","customer_id":"c-1","type":"purchase","channel":"tmall",\
        "timestamp":"2026-11-22T16:53:07.123+08:00","amount":129.9,"currency":"CNY",\
        "identities":\(identities),"properties":\(properties)}
        """
        let e = try XCTUnwrap(accept(json))
        XCTAssertEqual(e.eventID, "evt-20261122-000123")
        XCTAssertEqual(e.customerID, "c-1")
        XCTAssertEqual(e.type, .purchase)
        XCTAssertEqual(e.channel, "tmall")
        XCTAssertEqual(e.timestampMs, 1_795_337_587_123)
        XCTAssertEqual(e.amount, Money(units: 1_299_000))
        XCTAssertEqual(e.amount?.description, "129.90")
        XCTAssertEqual(e.currency, "CNY")
        // identities and properties are kept as their exact original bytes.
        XCTAssertEqual(e.identities?.text, identities)
        XCTAssertEqual(e.properties?.text, properties)
        XCTAssertEqual(e.identities?.string(forKey: "phone"), "+8613800138000")
        XCTAssertEqual(e.identities?.string(forKey: "tmall_buyer_id"), "tb_2207781")
        XCTAssertNil(e.identities?.string(forKey: "email"))
        XCTAssertEqual(e.identities?.stringMembers().map(\.key), ["phone", "wechat_unionid", "tmall_buyer_id"])
        XCTAssertEqual(e.identities?.stringMembers().map(\.value), ["+8613800138000", "o6_bmasd", "tb_2207781"])
        XCTAssertEqual(e.properties?.string(forKey: "order_id"), "TB-20261122-7781")
        XCTAssertNil(e.properties?.string(forKey: "quantity"), "not a string")
        XCTAssertEqual(e.properties?.stringMembers().map(\.key), ["order_id", "sku"])
    }

    func testRefundWithOrderID() throws {
        let e = try XCTUnwrap(accept(Self.event([("type", #""refund""#), ("amount", "0"), ("currency", #""HKD""#),
                                                 ("properties", #"{"order_id":"o-77"}"#)])))
        XCTAssertEqual(e.type, .refund)
        XCTAssertEqual(e.amount, Money(units: 0))
        XCTAssertEqual(e.currency, "HKD")
        XCTAssertEqual(e.properties?.string(forKey: "order_id"), "o-77")
    }

    func testEveryEventTypeWireName() throws {
        let expected = ["page_view", "product_view", "search", "add_to_cart", "remove_from_cart", "checkout_start",
                        "purchase", "refund", "cancel", "message_open", "message_click", "coupon_claim",
                        "coupon_redeem", "wecom_chat", "wecom_add_contact", "group_join", "signup", "login",
                        "profile_update", "consent", "erase"]
        XCTAssertEqual(EventType.allCases.map(\.name), expected)
        for t in EventType.allCases {
            var set = [("type", "\"\(t.name)\"")]
            if t == .purchase || t == .refund { set += [("amount", "1"), ("currency", #""CNY""#)] }
            if t == .consent { set += [("properties", #"{"status":"granted"}"#)] }
            let e = try XCTUnwrap(accept(Self.event(set)), t.name)
            XCTAssertEqual(e.type, t)
            XCTAssertEqual(EventType(name: t.name), t)
        }
        XCTAssertNil(EventType(name: "click"))
    }

    func testAmountsAreExactFixedPoint() throws {
        let cases: [(String, Int64, String)] = [
            ("0", 0, "0.00"),
            ("5", 50_000, "5.00"),
            ("129.9", 1_299_000, "129.90"),
            ("129.90", 1_299_000, "129.90"),
            ("19.99", 199_900, "19.99"),
            ("0.3", 3_000, "0.30"),
            ("0.001", 10, "0.001"),
            ("0.0001", 1, "0.0001"),
            ("0.1000", 1_000, "0.10"),
            ("123.4567", 1_234_567, "123.4567"),
            ("999999999999.9999", 9_999_999_999_999_999, "999999999999.9999"),
        ]
        for (text, units, shown) in cases {
            let e = try XCTUnwrap(accept(Self.event([("amount", text), ("currency", #""CNY""#)])), text)
            XCTAssertEqual(e.amount?.units, units, text)
            XCTAssertEqual(e.amount?.description, shown, text)
        }
    }

    func testIDLengthLimitIsInclusive() throws {
        let id128 = String(repeating: "a", count: 128)
        let e = try XCTUnwrap(accept(Self.event([("event_id", "\"\(id128)\""), ("customer_id", "\"\(id128)\"")]),
                                     key: .bytes(Array(id128.utf8))))
        XCTAssertEqual(e.customerID, id128)
        XCTAssertEqual(e.eventID, id128)
        // 64 two-byte characters are 128 bytes: accepted; one more byte is not.
        let wide = String(repeating: "é", count: 64)
        XCTAssertEqual(accept(Self.event([("customer_id", "\"\(wide)\"")]), key: .bytes(Array(wide.utf8)))?.customerID, wide)
        reject(Self.event([("customer_id", "\"\(wide)x\"")]), .invalidValue, field: "customer_id", key: .bytes(Array((wide + "x").utf8)))
        // A custom limit.
        let small = TouchpointDecoder(limits: DecoderLimits(maxIDBytes: 3))
        XCTAssertNotNil(accept(Self.event([("event_id", #""abc""#)]), decoder: small))
        reject(Self.event([("event_id", #""abcd""#)]), .invalidValue, field: "event_id", decoder: small)
    }

    // MARK: - Escapes and the key

    func testEscapedCustomerIDMatchesDecodedKey() throws {
        // "cé-😀" written with a \u escape and a surrogate pair.
        let json = Self.event([("customer_id", #""c\u00e9-\ud83d\ude00""#)])
        let e = try XCTUnwrap(accept(json, key: .bytes(Array("cé-😀".utf8))))
        XCTAssertEqual(e.customerID, "cé-😀")
        XCTAssertEqual(Array(e.customerID.utf8), [0x63, 0xC3, 0xA9, 0x2D, 0xF0, 0x9F, 0x98, 0x80])
        // The key must be the decoded UTF-8, not the escaped JSON text.
        reject(json, .keyMismatch, field: "customer_id", key: .bytes(Array(#"c\u00e9-\ud83d\ude00"#.utf8)))
        // Upper-case hex digits are the same escape.
        XCTAssertEqual(accept(Self.event([("customer_id", #""c\u00E9-\uD83D\uDE00""#)]), key: .bytes(Array("cé-😀".utf8)))?.customerID,
                       "cé-😀")
    }

    func testSimpleEscapesInStrings() throws {
        let json = Self.event([("customer_id", #""a\"b\\c\/d\be\ff\ng\rh\ti\u0000j""#)])
        let expected = "a\"b\\c/d\u{8}e\u{C}f\ng\rh\ti\u{0}j"
        let e = try XCTUnwrap(accept(json, key: .bytes(Array(expected.utf8))))
        XCTAssertEqual(e.customerID, expected)
        let slash = try XCTUnwrap(accept(Self.event([("customer_id", #""a\/b""#)]), key: .bytes(Array("a/b".utf8))))
        XCTAssertEqual(slash.customerID, "a/b")
        reject(Self.event([("customer_id", #""a\/b""#)]), .keyMismatch, field: "customer_id", key: .bytes(Array(#"a\/b"#.utf8)))
    }

    func testRawUTF8InCustomerID() throws {
        let id = "客户-😀-é"
        let e = try XCTUnwrap(accept(Self.event([("customer_id", "\"\(id)\"")]), key: .bytes(Array(id.utf8))))
        XCTAssertEqual(e.customerID, id)
        // Same characters in another normalization form are different bytes: no match.
        reject(Self.event([("customer_id", "\"e\u{301}\"")]), .keyMismatch, field: "customer_id", key: .bytes(Array("\u{E9}".utf8)))
    }

    func testNoKeyCheckWhenSkipped() throws {
        XCTAssertEqual(accept(Self.event([("customer_id", #""someone-else""#)]), key: .skip)?.customerID, "someone-else")
    }

    // MARK: - Timestamps

    func testRFC3339Variants() {
        let base: Int64 = 1_795_337_587_000 // 2026-11-22T08:53:07Z
        let cases: [(String, Int64)] = [
            ("2026-11-22T08:53:07Z", base),
            ("2026-11-22T08:53:07.123Z", base + 123),
            ("2026-11-22T16:53:07.123+08:00", base + 123),
            ("2026-11-22T03:23:07.123-05:30", base + 123),
            ("2026-11-22T08:53:07+00:00", base),
            ("2026-11-22T08:53:07-00:00", base),
            ("2026-11-23T08:52:07+23:59", base),
            ("2026-11-22t08:53:07.123z", base + 123),
            ("2026-11-22T08:53:07.123z", base + 123),
            ("2026-11-22t08:53:07Z", base),
            ("2026-11-22 08:53:07.123Z", base + 123),
            ("2026-11-22 16:53:07+08:00", base),
            // Fractions of 1 to 3 digits are scaled to milliseconds.
            ("2026-11-22T08:53:07.1Z", base + 100),
            ("2026-11-22T08:53:07.12Z", base + 120),
            ("2026-11-22T08:53:07.120Z", base + 120),
            ("2026-11-22T08:53:07.007Z", base + 7),
            ("2026-11-22T08:53:07.0Z", base),
            // Leap second: read as :59.999.
            ("2016-12-31T23:59:60Z", 1_483_228_799_999),
            ("2016-12-31T23:59:60.5Z", 1_483_228_799_999),
            ("2017-01-01T07:59:60+08:00", 1_483_228_799_999),
            // Calendar edges.
            ("1970-01-01T00:00:00Z", 0),
            ("2024-02-29T00:00:00Z", 1_709_164_800_000),
            ("2000-02-29T00:00:00Z", 951_782_400_000),
            ("2100-01-01T00:00:00Z", 4_102_444_800_000),
            ("9999-12-31T23:59:59.999Z", Timestamp.maxMs),
        ]
        for (text, ms) in cases {
            XCTAssertEqual(Timestamp.parseRFC3339(text), ms, text)
            XCTAssertEqual(timestamp("\"\(text)\""), ms, text)
        }
    }

    /// Fractions beyond milliseconds must be accepted and truncated.
    ///
    /// DECODER BUG (reported, not fixed here): Timestamp.parseRFC3339 evaluates
    /// `for _ in digits..<3 where digits < 3`, which builds the invalid range 4..<3 for a fraction of
    /// 4 or more digits: debug and -O builds trap ("Range requires lowerBound <= upperBound"), the
    /// -Ounchecked release build loops for ~2^63 iterations. Running these inputs today would crash
    /// the whole test process, so the test is skipped until the fix lands; delete the skip then.
    func testRFC3339LongFractionsAreTruncated() throws {
        let base: Int64 = 1_795_337_587_000
        let cases: [(String, Int64)] = [
            ("2026-11-22T08:53:07.1234Z", base + 123),
            ("2026-11-22T08:53:07.12345Z", base + 123),
            ("2026-11-22T08:53:07.123456Z", base + 123),
            ("2026-11-22T08:53:07.1234567Z", base + 123),
            ("2026-11-22T08:53:07.12345678Z", base + 123),
            ("2026-11-22T08:53:07.123456789Z", base + 123),
            ("2026-11-22T08:53:07.999999999Z", base + 999),
            ("2026-11-22T16:53:07.123456+08:00", base + 123),
            ("2026-11-22 03:23:07.000000001-05:30", base),
        ]
        for (text, ms) in cases {
            XCTAssertEqual(Timestamp.parseRFC3339(text), ms, text)
            XCTAssertEqual(timestamp("\"\(text)\""), ms, text)
        }
    }

    func testInvalidRFC3339() {
        let bad = [
            "2026-02-30T00:00:00Z",       // no such day
            "2026-02-29T00:00:00Z",       // not a leap year
            "1900-02-29T00:00:00Z",       // not a leap year (century)
            "2026-04-31T00:00:00Z",
            "2026-00-10T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-00T00:00:00Z",
            "2026-11-22T24:00:00Z",       // hours run 00-23
            "2026-11-22T23:60:00Z",
            "2026-11-22T23:59:61Z",
            "2026-11-22T08:53:07",        // no offset
            "2026-11-22T08:53:07.123",    // no offset
            "2026-11-22T08:53:07+0800",   // offset without colon
            "2026-11-22T08:53:07+08",
            "2026-11-22T08:53:07+24:00",
            "2026-11-22T08:53:07+08:60",
            "2026-11-22T08:53:07.Z",      // empty fraction
            "2026-11-22T08:53:07,123Z",   // comma fraction
            "2026-11-22X08:53:07Z",
            "2026-11-22T08:53:07ZZ",
            "2026-11-22T08:53:07Z ",
            " 2026-11-22T08:53:07Z",
            "2026-11-22",
            "2026-1-22T08:53:07Z",
            "26-11-22T08:53:07Z",
            "2026/11/22T08:53:07Z",
            "2026-11-22T8:53:07Z",
            "+2026-11-22T08:53:07Z",
            "",
            "now",
        ]
        for text in bad {
            XCTAssertNil(Timestamp.parseRFC3339(text), text)
            XCTAssertNil(timestamp("\"\(text)\""), text)
        }
        // An escape inside the timestamp string is not accepted (even one that spells a valid time).
        XCTAssertNil(timestamp(#""2026\u002d11-22T08:53:07Z""#))
    }

    func testEpochMillisecondTimestamps() {
        XCTAssertEqual(timestamp("0"), 0)
        XCTAssertEqual(timestamp("1"), 1)
        XCTAssertEqual(timestamp("1795337587123"), 1_795_337_587_123)
        XCTAssertEqual(timestamp("253402300799999"), Timestamp.maxMs)
        XCTAssertNil(timestamp("253402300800000"))   // after 9999-12-31T23:59:59.999Z
        XCTAssertNil(timestamp("999999999999999"))
        XCTAssertNil(timestamp("1234567890123456"))  // 16 digits
        XCTAssertNil(timestamp("-1"))
        XCTAssertNil(timestamp("-0"))
        XCTAssertNil(timestamp("1.5"))
        XCTAssertNil(timestamp("1.0"))
        XCTAssertNil(timestamp("1e3"))
        XCTAssertNil(timestamp("1E3"))
    }

    func testTimestampInFuture() throws {
        let d = TouchpointDecoder(limits: DecoderLimits(maxFutureSkewMs: 60_000))
        let now: Int64 = 1_795_337_587_123
        XCTAssertEqual(accept(Self.event([("timestamp", "\(now + 60_000)")]), decoder: d, now: now)?.timestampMs, now + 60_000)
        reject(Self.event([("timestamp", "\(now + 60_001)")]), .timestampInFuture, field: "timestamp", decoder: d, now: now)
        // 2026-11-22T08:54:07.124Z is 60_001 ms after now.
        reject(Self.event([("timestamp", #""2026-11-22T16:54:07.124+08:00""#)]), .timestampInFuture, field: "timestamp",
               decoder: d, now: now)
        XCTAssertNotNil(accept(Self.event([("timestamp", #""2026-11-22T08:54:07.123Z""#)]), decoder: d, now: now))
        // Old events are fine.
        XCTAssertEqual(accept(Self.event([("timestamp", "0")]), decoder: d, now: now)?.timestampMs, 0)
        // The default skew is 5 minutes.
        XCTAssertNotNil(accept(Self.event([("timestamp", "\(now + 300_000)")]), now: now))
        reject(Self.event([("timestamp", "\(now + 300_001)")]), .timestampInFuture, field: "timestamp", now: now)
        // No skew at all.
        let strict = TouchpointDecoder(limits: DecoderLimits(maxFutureSkewMs: 0))
        XCTAssertNotNil(accept(Self.event([("timestamp", "\(now)")]), decoder: strict, now: now))
        reject(Self.event([("timestamp", "\(now + 1)")]), .timestampInFuture, field: "timestamp", decoder: strict, now: now)
    }

    func testFormatRFC3339() {
        XCTAssertEqual(Timestamp.formatRFC3339(0), "1970-01-01T00:00:00.000Z")
        XCTAssertEqual(Timestamp.formatRFC3339(1), "1970-01-01T00:00:00.001Z")
        XCTAssertEqual(Timestamp.formatRFC3339(1_795_337_587_123), "2026-11-22T08:53:07.123Z")
        XCTAssertEqual(Timestamp.formatRFC3339(951_782_400_000), "2000-02-29T00:00:00.000Z")
        XCTAssertEqual(Timestamp.formatRFC3339(1_483_228_799_999), "2016-12-31T23:59:59.999Z")
        XCTAssertEqual(Timestamp.formatRFC3339(4_102_444_800_000), "2100-01-01T00:00:00.000Z")
        XCTAssertEqual(Timestamp.formatRFC3339(Timestamp.maxMs), "9999-12-31T23:59:59.999Z")
        XCTAssertEqual(Timestamp.formatRFC3339(-1), "1969-12-31T23:59:59.999Z")
        // Every field's carry, against Foundation's formatter.
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        var rng = SeededRNG(9)
        for _ in 0..<2_000 {
            let ms = Int64(rng.next(upTo: Int(Timestamp.maxMs)))
            XCTAssertEqual(Timestamp.formatRFC3339(ms), f.string(from: Date(timeIntervalSince1970: Double(ms) / 1000)), "\(ms)")
            // The trigger encoder's form: the same bytes, appended after what is there.
            var out: [UInt8] = [0x7B]
            Timestamp.appendRFC3339(ms, to: &out)
            XCTAssertEqual(out, [0x7B] + Array(Timestamp.formatRFC3339(ms).utf8), "\(ms)")
        }
        var wide: [UInt8] = []
        Timestamp.appendRFC3339(Timestamp.maxMs + 86_400_000, to: &wide)
        XCTAssertEqual(String(decoding: wide, as: UTF8.self), "10000-01-01T23:59:59.999Z")
    }

    func testFormatParseRoundTrip() {
        // SplitMix64 with a fixed seed: the same 10_000 values on every run.
        var state: UInt64 = 0x7469_6465_706F_6F6C
        func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        let upper: UInt64 = 4_102_444_800_000 // 2100-01-01
        var failures = 0
        var previous: (Int64, String)? = nil
        for n in 0..<10_000 {
            let ms = Int64(next() % upper)
            let text = Timestamp.formatRFC3339(ms)
            let ok = text.utf8.count == 24 && text.hasSuffix("Z") && Timestamp.parseRFC3339(text) == ms
            if !ok {
                failures += 1
                if failures <= 5 { XCTFail("\(ms) -> \(text) -> \(String(describing: Timestamp.parseRFC3339(text)))") }
            }
            // Formatting preserves order (fixed-width text).
            if case let (pm, pt)? = previous { XCTAssertEqual(pm < ms, pt < text, "\(pm) \(ms)") }
            previous = (ms, text)
            // Every 100th value also goes through the decoder, as text and as a number.
            if n % 100 == 0 {
                XCTAssertEqual(timestamp("\"\(text)\""), ms)
                XCTAssertEqual(timestamp("\(ms)"), ms)
            }
        }
        XCTAssertEqual(failures, 0)
        // Day boundaries around the epoch, leap days and the year 2000.
        for ms: Int64 in [0, 86_399_999, 86_400_000, 951_782_399_999, 951_782_400_000, 951_868_800_000, 4_102_444_799_999] {
            XCTAssertEqual(Timestamp.parseRFC3339(Timestamp.formatRFC3339(ms)), ms)
        }
    }

    // MARK: - Money, hashes, triggers

    func testMoneyDescription() {
        XCTAssertEqual(Money(units: 0).description, "0.00")
        XCTAssertEqual(Money(major: 3).description, "3.00")
        XCTAssertEqual(Money(units: 1_299_000).description, "129.90")
        XCTAssertEqual(Money(units: 1_299_900).description, "129.99")
        XCTAssertEqual(Money(units: 1_230).description, "0.123")
        XCTAssertEqual(Money(units: 10).description, "0.001")
        XCTAssertEqual(Money(units: 1).description, "0.0001")
        XCTAssertEqual(Money(units: 1_234_567).description, "123.4567")
        XCTAssertEqual(Money(units: 100_000_000).description, "10000.00")
        XCTAssertEqual(Money(units: -1_299_000).description, "-129.90")
        XCTAssertEqual(Money(units: -1).description, "-0.0001")
        XCTAssertEqual(Money(units: 9_999_999_999_999_999).description, "999999999999.9999")
        // Exact arithmetic: 129.90 + 0.10 == 130.
        XCTAssertEqual((Money(units: 1_299_000) + Money(units: 1_000)).description, "130.00")
        XCTAssertEqual(Money(units: 1_299_000) + Money(units: 1_000), Money(major: 130))
        XCTAssertEqual((Money(major: 1) - Money(units: 1)).description, "0.9999")
        XCTAssertLessThan(Money(units: 1), Money(units: 2))
    }

    /// The one-pass hex128 equals its definition: two FNV-1a hashes of the NUL-joined UTF-8.
    func testHex128EqualsTheHashOfTheJoinedBytes() {
        var rng = SeededRNG(5)
        let alphabet = Array("ab-_9Zé中\u{0}".unicodeScalars)
        for _ in 0..<500 {
            let parts = (0..<(1 + rng.next(upTo: 4))).map { _ in
                String(String.UnicodeScalarView((0..<rng.next(upTo: 20)).map { _ in alphabet[rng.next(upTo: alphabet.count)] }))
            }
            var joined: [UInt8] = []
            for (n, p) in parts.enumerated() {
                if n > 0 { joined.append(0) }
                joined += Array(p.utf8)
            }
            let want = StableHash.hex(StableHash.hash64(joined, seed: 0x7469_6465)) + StableHash.hex(StableHash.hash64(joined, seed: 0x706F_6F6C))
            XCTAssertEqual(StableHash.hex128(parts), want, "\(parts)")
        }
    }

    /// The id hashes the episode's decimal digits without building its String: the same id as
    /// the definition, `hex128([customer, campaign, String(episode)])`, for every kind of number.
    func testTriggerIDHashesTheEpisodeAsItsDecimalDigits() {
        for ep in [0, 1, 9, 10, 99, 100, 12_345, 1_000_000_007, Int.max, -1, -42, Int.min] {
            XCTAssertEqual(Trigger.id(customerID: "c-1", campaign: "winback", episode: ep),
                           StableHash.hex128(["c-1", "winback", String(ep)]), "episode \(ep)")
        }
    }

    func testTriggerIDIsStable() {
        let a = Trigger.id(customerID: "c-1", campaign: "welcome", episode: 1)
        let b = Trigger.id(customerID: "c-1", campaign: "welcome", episode: 1)
        XCTAssertEqual(a, b)
        XCTAssertEqual(a.utf8.count, 32)
        XCTAssertTrue(a.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }, a)
        XCTAssertNotEqual(a, Trigger.id(customerID: "c-1", campaign: "welcome", episode: 2))
        XCTAssertNotEqual(a, Trigger.id(customerID: "c-2", campaign: "welcome", episode: 1))
        XCTAssertNotEqual(a, Trigger.id(customerID: "c-1", campaign: "winback", episode: 1))
        // The parts are separated, not just concatenated.
        XCTAssertNotEqual(StableHash.hex128(["ab", "c"]), StableHash.hex128(["a", "bc"]))
        // Golden values: the id must be the same in every process, on every machine and in every
        // release, or replays would re-send triggers. They were checked against an independent
        // implementation (FNV-1a 64 over the NUL-joined UTF-8, SplitMix64 finisher, seeds
        // "tide" and "pool").
        XCTAssertEqual(a, "d74faf8a9e37971252ce3a31f72ebac5")
        XCTAssertEqual(Trigger.id(customerID: "c-1", campaign: "welcome", episode: 2), "f076497ae14a956dff80d8181e94de70")
        XCTAssertEqual(Trigger.id(customerID: "cust-8f3a21", campaign: "first_purchase_welcome", episode: 1),
                       "6d6d768e459bb66d7a33a804259caa36")
        XCTAssertEqual(StableHash.hex128(["c-1", "welcome", "1"]), a)
        XCTAssertEqual(StableHash.hex(0x1), "0000000000000001")
    }

    func testTriggerEncoderOutput() {
        let fired: Int64 = 1_795_337_587_123
        let t = Trigger(triggerID: Trigger.id(customerID: "cust-8f3a21", campaign: "first_purchase_welcome", episode: 1),
                        campaign: "first_purchase_welcome", customerID: "cust-8f3a21", channel: "wecom",
                        reasonKind: "first_purchase", reasonDetail: "first purchase of 129.90 CNY on tmall",
                        causeEventID: "evt-20261122-000123", episode: 1, firedAtMs: fired,
                        expiresAtMs: fired + 72 * 3_600_000,
                        snapshot: [("orders", .int(1)), ("spend", .money(Money(units: 1_299_000))), ("first_seen", .time(fired))])
        var out: [UInt8] = [1, 2, 3]
        TriggerEncoder().encode(t, emittedAtMs: fired + 412, into: &out)
        XCTAssertEqual(String(decoding: out, as: UTF8.self),
                       #"{"schema":"tidepool.trigger.v1","trigger_id":"6d6d768e459bb66d7a33a804259caa36","#
                       + #""campaign":"first_purchase_welcome","customer_id":"cust-8f3a21","channel":"wecom","episode":1,"#
                       + #""reason":{"kind":"first_purchase","detail":"first purchase of 129.90 CNY on tmall","#
                       + #""event_id":"evt-20261122-000123"},"fired_at":"2026-11-22T08:53:07.123Z","#
                       + #""emitted_at":"2026-11-22T08:53:07.535Z","expires_at":"2026-11-25T08:53:07.123Z","#
                       + #""snapshot":{"orders":1,"spend":129.90,"first_seen":"2026-11-22T08:53:07.123Z"},"#
                       + #""outcome":"sent","outcome_reason":null}"#)
        // Strings are escaped.
        var t2 = t
        t2.customerID = "q\"b\\n\nt\t\u{1}é"
        t2.snapshot = [("seg\"ment", .text("v\u{1F}"))]
        TriggerEncoder().encode(t2, emittedAtMs: 0, into: &out)
        let text = String(decoding: out, as: UTF8.self)
        XCTAssertTrue(text.contains(#""customer_id":"q\"b\\n\nt\t\u0001é""#), text)
        XCTAssertTrue(text.contains(#""snapshot":{"seg\"ment":"v\u001f"},"#), text)
        // A decision that was not sent, caused by time alone.
        t2.causeEventID = nil
        t2.outcome = .capped
        t2.outcomeReason = "capped"
        TriggerEncoder().encode(t2, emittedAtMs: 0, into: &out)
        let capped = String(decoding: out, as: UTF8.self)
        XCTAssertTrue(capped.contains(#""event_id":null}"#), capped)
        XCTAssertTrue(capped.hasSuffix(#""outcome":"capped","outcome_reason":"capped"}"#), capped)
    }

    // MARK: - Rejections, one reason at a time

    func testDeadLetterReasonRawValues() {
        XCTAssertEqual(DeadLetterReason.allCases.map(\.rawValue), [
            "invalid_utf8", "invalid_json", "missing_field", "wrong_type", "invalid_value", "unknown_field",
            "duplicate_field", "invalid_timestamp", "timestamp_in_future", "oversize", "key_mismatch",
        ])
        for (n, r) in DeadLetterReason.allCases.enumerated() { XCTAssertEqual(r.index, n) }
    }

    /// One input per reason, and a check that the table covers every reason.
    func testEveryReasonHasAnInput() {
        let tiny = TouchpointDecoder(limits: DecoderLimits(maxEventBytes: 10))
        let table: [(DeadLetterReason, String?, [UInt8], Key, TouchpointDecoder)] = [
            (.invalidUTF8, nil, [0xFF], .c1, TouchpointDecoder()),
            (.invalidJSON, nil, Self.bytes(Self.event() + ","), .c1, TouchpointDecoder()),
            (.missingField, "event_id", Self.bytes(Self.event(removing: ["event_id"])), .c1, TouchpointDecoder()),
            (.wrongType, "customer_id", Self.bytes(Self.event([("customer_id", "1")])), .c1, TouchpointDecoder()),
            (.invalidValue, "type", Self.bytes(Self.event([("type", #""click""#)])), .c1, TouchpointDecoder()),
            (.unknownField, "extra", Self.bytes(Self.event([("extra", "1")])), .c1, TouchpointDecoder()),
            (.duplicateField, "channel", Self.bytes(String(Self.event().dropLast()) + #","channel":"app"}"#), .c1, TouchpointDecoder()),
            (.invalidTimestamp, "timestamp", Self.bytes(Self.event([("timestamp", #""yesterday""#)])), .c1, TouchpointDecoder()),
            (.timestampInFuture, "timestamp", Self.bytes(Self.event([("timestamp", "\(Self.now + 3_600_000)")])), .c1, TouchpointDecoder()),
            (.oversize, nil, Self.bytes(Self.event()), .c1, tiny),
            (.keyMismatch, "customer_id", Self.bytes(Self.event()), .bytes(Array("c-2".utf8)), TouchpointDecoder()),
        ]
        for (reason, field, payload, key, decoder) in table {
            reject(payload, reason, field: field, key: key, decoder: decoder)
        }
        XCTAssertEqual(Set(table.map { $0.0 }), Set(DeadLetterReason.allCases))
    }

    func testInvalidUTF8() {
        let template = Self.event([("customer_id", #""c@@""#)])
        // 0xC3 must be followed by a continuation byte, not '('.
        reject(Self.splice(template, [0xC3, 0x28]), .invalidUTF8, field: "customer_id")
        // A lone 0xFF at the start of the record.
        reject([0xFF], .invalidUTF8, field: nil)
        reject([0xFF] + Self.bytes(Self.event()), .invalidUTF8, field: nil)
        reject([0xC3, 0xA9, 0xFF], .invalidUTF8, field: nil)
        // Bytes never valid in UTF-8, overlong forms, encoded surrogates, truncated sequences,
        // code points above U+10FFFF.
        for raw: [UInt8] in [[0xFF], [0xFE], [0xC0, 0xAF], [0xC1, 0xBF], [0xE0, 0x80, 0xAF], [0xED, 0xA0, 0x80],
                             [0xF0, 0x80, 0x80, 0xAF], [0xF4, 0x90, 0x80, 0x80], [0xF5, 0x80, 0x80, 0x80],
                             [0x80], [0xBF], [0xE4, 0xB8], [0xF0, 0x9F, 0x98]] {
            reject(Self.splice(template, raw), .invalidUTF8, field: "customer_id")
        }
        reject(Self.splice(Self.event([("event_id", #""@@""#)]), [0xE4, 0xB8]), .invalidUTF8, field: "event_id")
        // Inside properties and identities.
        reject(Self.splice(Self.event([("properties", #"{"note":"@@"}"#)]), [0xC3, 0x28]), .invalidUTF8, field: "properties")
        reject(Self.splice(Self.event([("properties", #"{"a":{"b":["@@"]}}"#)]), [0xFF]), .invalidUTF8, field: "properties")
        reject(Self.splice(Self.event([("identities", #"{"phone":"@@"}"#)]), [0xC3, 0x28]), .invalidUTF8, field: "identities")
        // In a top-level member name.
        reject(Self.splice(#"{"@@":1}"#, [0xC3, 0x28]), .invalidUTF8, field: nil)
        // The valid neighbours of those sequences are accepted.
        for raw: [UInt8] in [[0xC2, 0x80], [0xDF, 0xBF], [0xE0, 0xA0, 0x80], [0xED, 0x9F, 0xBF], [0xEE, 0x80, 0x80],
                             [0xF0, 0x90, 0x80, 0x80], [0xF4, 0x8F, 0xBF, 0xBF]] {
            let id = Array("c".utf8) + raw
            XCTAssertEqual(accept(Self.splice(template, raw), key: .bytes(id)).map { Array($0.customerID.utf8) }, id)
        }
    }

    /// Strings are scanned eight bytes at a time: every special byte (quote, backslash, control
    /// character, non-ASCII) must be found at every position of a word, and everything between
    /// them kept. Random event ids built from pieces whose decoded text is known.
    func testStringsWithSpecialBytesAtEveryPosition() {
        let valid: [(json: [UInt8], text: String)] = [
            (Array("a".utf8), "a"), (Array("Z9_-".utf8), "Z9_-"), (Array(#"\""#.utf8), "\""), (Array(#"\\"#.utf8), "\\"),
            (Array(#"\n"#.utf8), "\n"), (Array(#"\u00e9"#.utf8), "é"), ([0xC3, 0xA9], "é"), ([0xE4, 0xB8, 0xAD], "中"),
            (Array("~ ".utf8), "~ "), ([0x7F], "\u{7F}"),
        ]
        let invalid: [(json: [UInt8], reason: DeadLetterReason)] = [([0x01], .invalidJSON), ([0x1F], .invalidJSON), ([0xFF], .invalidUTF8),
                                                                     ([0xC3, 0x28], .invalidUTF8), (Array(#"\x"#.utf8), .invalidJSON)]
        var rng = SeededRNG(99)
        for _ in 0..<3_000 {
            var json: [UInt8] = [], text = ""
            let pieces = 1 + rng.next(upTo: 24)
            var bad: DeadLetterReason? = nil
            for _ in 0..<pieces {
                if rng.next(upTo: 40) == 0 {
                    let b = invalid[rng.next(upTo: invalid.count)]
                    json += b.json
                    bad = bad ?? b.reason
                } else {
                    let v = valid[rng.next(upTo: valid.count)]
                    json += v.json
                    text += v.text
                }
            }
            let payload = Self.splice(Self.event([("event_id", #""@@""#)]), json)
            if let bad {
                reject(payload, bad, field: "event_id")
            } else if text.utf8.count <= 128 {
                XCTAssertEqual(accept(payload)?.eventID, text, "\(json)")
            }
        }
    }

    func testInvalidJSON() {
        let ok = Self.event()
        // Trailing commas.
        reject(String(ok.dropLast()) + ",}", .invalidJSON, field: nil)
        reject(Self.event([("properties", #"{"a":1,}"#)]), .invalidJSON, field: "properties")
        reject(Self.event([("properties", #"{"a":[1,2,]}"#)]), .invalidJSON, field: "properties")
        reject(Self.event([("identities", #"{"phone":"1",}"#)]), .invalidJSON, field: "identities")
        // Truncated.
        reject(String(ok.dropLast()), .invalidJSON, field: nil)
        reject(#"{"event_id":"e-1","customer_id":"c-1""#, .invalidJSON, field: nil)
        reject(#"{"event_id":"e-1","customer_id":"c-"#, .invalidJSON, field: "customer_id")
        reject(#"{"event_id""#, .invalidJSON, field: nil)
        reject(#"{"event_id":"#, .invalidJSON, field: "event_id")
        reject("{", .invalidJSON, field: nil)
        reject(Self.event([("properties", #"{"a":{"b":1}"#)]), .invalidJSON, field: nil) // properties never closed
        reject(Self.event([("customer_id", #""c-1\u00""#)]), .invalidJSON, field: "customer_id")
        // Trailing data after the object.
        reject(ok + "x", .invalidJSON, field: nil)
        reject(ok + " {}", .invalidJSON, field: nil)
        reject(ok + "\n" + ok, .invalidJSON, field: nil)
        reject(ok + ",", .invalidJSON, field: nil)
        // Leading zeros.
        reject(Self.event([("timestamp", "012")]), .invalidJSON, field: nil)
        reject(Self.event([("amount", "012"), ("currency", #""CNY""#)]), .invalidJSON, field: nil)
        reject(Self.event([("properties", #"{"n":012}"#)]), .invalidJSON, field: "properties")
        reject(Self.event([("properties", #"{"n":-01}"#)]), .invalidJSON, field: "properties")
        // Other malformed numbers.
        reject(Self.event([("amount", "1."), ("currency", #""CNY""#)]), .invalidJSON, field: "amount")
        reject(Self.event([("amount", ".5"), ("currency", #""CNY""#)]), .invalidJSON, field: "amount")
        reject(Self.event([("properties", #"{"n":1e}"#)]), .invalidJSON, field: "properties")
        reject(Self.event([("properties", #"{"n":+1}"#)]), .invalidJSON, field: "properties")
        reject(Self.event([("properties", #"{"n":-}"#)]), .invalidJSON, field: "properties")
        reject(Self.event([("properties", #"{"n":NaN}"#)]), .invalidJSON, field: "properties")
        // Bad escapes and lone surrogates.
        reject(Self.event([("customer_id", #""c\x1""#)]), .invalidJSON, field: "customer_id")
        reject(Self.event([("customer_id", #""c\'1""#)]), .invalidJSON, field: "customer_id")
        reject(Self.event([("customer_id", #""c\u12G4""#)]), .invalidJSON, field: "customer_id")
        reject(Self.event([("customer_id", #""c\ud83d""#)]), .invalidJSON, field: "customer_id")
        reject(Self.event([("customer_id", #""c\ud83dx""#)]), .invalidJSON, field: "customer_id")
        reject(Self.event([("customer_id", #""c\ud83d\u0041""#)]), .invalidJSON, field: "customer_id")
        reject(Self.event([("customer_id", #""c\ude00""#)]), .invalidJSON, field: "customer_id")
        reject(Self.event([("properties", #"{"a":"\q"}"#)]), .invalidJSON, field: "properties")
        // Control characters must be escaped inside strings.
        reject(Self.event([("event_id", "\"e\n1\"")]), .invalidJSON, field: "event_id")
        reject(Self.event([("event_id", "\"e\t1\"")]), .invalidJSON, field: "event_id")
        reject(Self.splice(Self.event([("customer_id", #""c@@1""#)]), [0x01]), .invalidJSON, field: "customer_id")
        reject(Self.splice(Self.event([("properties", #"{"a":"@@"}"#)]), [0x1F]), .invalidJSON, field: "properties")
        reject(Self.splice(Self.event([("customer_id", #""c@@1""#)]), [0x00]), .invalidJSON, field: "customer_id")
        // Bad literals and structure.
        reject(Self.event([("properties", #"{"a":nul}"#)]), .invalidJSON, field: "properties")
        reject(Self.event([("properties", #"{"a":True}"#)]), .invalidJSON, field: "properties")
        reject(Self.event([("properties", #"{a:1}"#)]), .invalidJSON, field: "properties")
        reject(Self.event([("properties", #"{"a" 1}"#)]), .invalidJSON, field: nil)
        reject(Self.event([("properties", #"{"a":1 "b":2}"#)]), .invalidJSON, field: "properties")
        reject(#"{"event_id" "e-1"}"#, .invalidJSON, field: nil)
        reject(#"{'event_id':'e-1'}"#, .invalidJSON, field: nil)
        reject(#"{"event_id":"e-1" "customer_id":"c-1"}"#, .invalidJSON, field: nil)
        reject(#"{,}"#, .invalidJSON, field: nil)
        // Not an object at all.
        for text in ["", " \n\t ", "[]", "[{}]", "\"x\"", "1", "null", "true", #"}{"#] {
            reject(text, .invalidJSON, field: nil)
        }
        // A UTF-8 byte order mark is valid UTF-8 but not JSON.
        reject([0xEF, 0xBB, 0xBF] + Self.bytes(ok), .invalidJSON, field: nil)
        // Raw non-ASCII outside strings (valid UTF-8) is a syntax error.
        reject(Self.splice(#"{"event_id":@@}"#, Array("é".utf8)), .invalidJSON, field: "event_id")
    }

    func testNestingLimitInsideProperties() {
        // properties counts as the first level; 32 levels are accepted, 33 are not.
        func objects(_ n: Int) -> String { String(repeating: #"{"a":"#, count: n) + "1" + String(repeating: "}", count: n) }
        func arrays(_ n: Int) -> String { #"{"a":"# + String(repeating: "[", count: n) + String(repeating: "]", count: n) + "}" }
        XCTAssertNotNil(accept(Self.event([("properties", objects(32))])))
        reject(Self.event([("properties", objects(33))]), .invalidJSON, field: "properties")
        XCTAssertNotNil(accept(Self.event([("properties", arrays(31))])))
        reject(Self.event([("properties", arrays(32))]), .invalidJSON, field: "properties")
        // Far deeper nesting is rejected, not a stack overflow.
        let roomy = TouchpointDecoder(limits: DecoderLimits(maxEventBytes: 1 << 20))
        reject(Self.event([("properties", objects(10_000))]), .invalidJSON, field: "properties", decoder: roomy)
        reject(Self.event([("properties", arrays(200_000))]), .invalidJSON, field: "properties", decoder: roomy)
        let failure = reject(Self.event([("properties", objects(40))]), .invalidJSON, field: "properties")
        XCTAssertEqual(failure?.detail, "nesting deeper than 32")
    }

    func testMissingFields() {
        for name in ["event_id", "customer_id", "type", "channel", "timestamp"] {
            reject(Self.event(removing: [name]), .missingField, field: name)
        }
        // The first missing one in contract order is reported.
        reject("{}", .missingField, field: "event_id")
        reject(Self.event(removing: ["channel", "type"]), .missingField, field: "type")
        // purchase and refund need amount; amount needs currency.
        reject(Self.event([("type", #""purchase""#)]), .missingField, field: "amount")
        reject(Self.event([("type", #""refund""#), ("currency", #""CNY""#)]), .missingField, field: "amount")
        reject(Self.event([("type", #""purchase""#), ("amount", "129.9")]), .missingField, field: "currency")
        reject(Self.event([("amount", "1")]), .missingField, field: "currency")
        // Other types do not need an amount; currency alone is allowed.
        XCTAssertNotNil(accept(Self.event([("type", #""cancel""#)])))
        XCTAssertEqual(accept(Self.event([("currency", #""CNY""#)]))?.currency, "CNY")
        XCTAssertNil(accept(Self.event([("currency", #""CNY""#)]))?.amount)
    }

    func testConsentNeedsAStatus() {
        reject(Self.event([("type", #""consent""#)]), .missingField, field: "properties.status")
        reject(Self.event([("type", #""consent""#), ("properties", #"{"channel":"sms"}"#)]), .missingField, field: "properties.status")
        reject(Self.event([("type", #""consent""#), ("properties", #"{"status":"maybe"}"#)]), .invalidValue, field: "properties.status")
        let e = accept(Self.event([("type", #""consent""#), ("properties", #"{"status":"withdrawn","channel":"sms"}"#)]))
        XCTAssertEqual(e?.properties?.string(forKey: "status"), "withdrawn")
    }

    func testWrongTypes() {
        reject(Self.event([("customer_id", "42")]), .wrongType, field: "customer_id")
        reject(Self.event([("customer_id", "null")]), .wrongType, field: "customer_id")
        reject(Self.event([("event_id", "true")]), .wrongType, field: "event_id")
        reject(Self.event([("event_id", #"["e-1"]"#)]), .wrongType, field: "event_id")
        reject(Self.event([("type", #"{"name":"purchase"}"#)]), .wrongType, field: "type")
        reject(Self.event([("channel", #"["app"]"#)]), .wrongType, field: "channel")
        reject(Self.event([("timestamp", "true")]), .wrongType, field: "timestamp")
        reject(Self.event([("timestamp", "null")]), .wrongType, field: "timestamp")
        reject(Self.event([("timestamp", #"{"ms":1}"#)]), .wrongType, field: "timestamp")
        reject(Self.event([("amount", #""129.90""#), ("currency", #""CNY""#)]), .wrongType, field: "amount")
        reject(Self.event([("amount", "null"), ("currency", #""CNY""#)]), .wrongType, field: "amount")
        reject(Self.event([("amount", "1"), ("currency", "156")]), .wrongType, field: "currency")
        reject(Self.event([("properties", "[]")]), .wrongType, field: "properties")
        reject(Self.event([("properties", #"[{"order_id":"o-1"}]"#)]), .wrongType, field: "properties")
        reject(Self.event([("properties", #""order_id=o-1""#)]), .wrongType, field: "properties")
        reject(Self.event([("identities", #"["13800138000"]"#)]), .wrongType, field: "identities")
        reject(Self.event([("identities", "null")]), .wrongType, field: "identities")
        reject(Self.event([("identities", #"{"phone":13800138000}"#)]), .wrongType, field: "identities.phone")
        reject(Self.event([("identities", #"{"email":"a@b.c","device_id":{"id":"x"}}"#)]), .wrongType, field: "identities.device_id")
        reject(Self.event([("identities", #"{"phone":null}"#)]), .wrongType, field: "identities.phone")
        // A wrongly typed value that is not even valid JSON is reported as invalid_json.
        reject(Self.event([("customer_id", "[1,]")]), .invalidJSON, field: "customer_id")
        reject(Self.event([("customer_id", "nope")]), .invalidJSON, field: "customer_id")
    }

    func testInvalidValues() {
        for type in ["click", "Purchase", "PAGE_VIEW", "page-view", "page_view ", "", "page_views", "page_vie"] {
            reject(Self.event([("type", "\"\(type)\"")]), .invalidValue, field: "type")
        }
        for channel in ["Web Site", "Website", "web site", "1app", "_app", "app-store", "", "é",
                        String(repeating: "a", count: 33)] {
            reject(Self.event([("channel", "\"\(channel)\"")]), .invalidValue, field: "channel")
        }
        for channel in ["a", "app", "mini_program", "wechat_oa", "offline_store", "jd", "x9", "a_", String(repeating: "a", count: 32)] {
            XCTAssertEqual(accept(Self.event([("channel", "\"\(channel)\"")]))?.channel, channel)
        }
        reject(Self.event([("customer_id", #""""#)]), .invalidValue, field: "customer_id", key: .bytes([]))
        reject(Self.event([("event_id", #""""#)]), .invalidValue, field: "event_id")
        reject(Self.event([("customer_id", "\"\(String(repeating: "x", count: 129))\"")]), .invalidValue, field: "customer_id",
               key: .bytes(Array(repeating: 0x78, count: 129)))
        reject(Self.event([("event_id", "\"\(String(repeating: "x", count: 129))\"")]), .invalidValue, field: "event_id")
        // Amounts: at most 4 decimals, non-negative, below 10^12, no exponent.
        for amount in ["1.00001", "0.00000", "129.90000", "-1", "-0", "-0.01", "1e2", "1E2", "1.5e0", "1.0E-2",
                       "1000000000000", "1000000000000.0", "99999999999999999999"] {
            reject(Self.event([("amount", amount), ("currency", #""CNY""#)]), .invalidValue, field: "amount")
        }
        // Currency: three upper-case ASCII letters.
        for currency in ["cny", "Cny", "CN", "CNYY", "", "C1Y", "¥¥¥"] {
            reject(Self.event([("amount", "1"), ("currency", "\"\(currency)\"")]), .invalidValue, field: "currency")
        }
        // Identity values must not be empty.
        reject(Self.event([("identities", #"{"phone":""}"#)]), .invalidValue, field: "identities.phone")
        XCTAssertNotNil(accept(Self.event([("identities", "{}"), ("properties", "{}")])))
    }

    func testEscapedEnumValuesAreRejected() {
        // The decoder compares type, channel and currency byte for byte without resolving escapes.
        reject(Self.event([("type", #""page\u005fview""#)]), .invalidValue, field: "type")
        reject(Self.event([("channel", #""web\u0073ite""#)]), .invalidValue, field: "channel")
        reject(Self.event([("amount", "1"), ("currency", #""CN\u0059""#)]), .invalidValue, field: "currency")
    }

    func testUnknownFields() {
        reject(Self.event([("extra", "1")]), .unknownField, field: "extra")
        reject(Self.event([("Event_ID", #""e""#)]), .unknownField, field: "Event_ID")
        reject(Self.event([("order_id", #""o-1""#)]), .unknownField, field: "order_id")
        reject(Self.event([("", "1")]), .unknownField, field: "")
        reject(#"{"v":1}"#, .unknownField, field: "v")
        // Reported before the value is even looked at.
        reject(#"{"zzz":[[[["#, .unknownField, field: "zzz")
        // Member names are compared without resolving escapes: an escaped "event_id" is unknown.
        reject(#"{"event\u005fid":"e-1","customer_id":"c-1","type":"page_view","channel":"app","timestamp":0}"#,
               .unknownField, field: "event_id")
        // Unknown members are fine inside properties.
        XCTAssertNotNil(accept(Self.event([("properties", #"{"extra":1,"extra":2}"#)])))
    }

    func testDuplicateFields() {
        let ok = String(Self.event().dropLast())
        reject(ok + #","event_id":"e-2"}"#, .duplicateField, field: "event_id")
        reject(ok + #","customer_id":"c-1"}"#, .duplicateField, field: "customer_id")
        reject(ok + #","timestamp":0}"#, .duplicateField, field: "timestamp")
        reject(ok + #","properties":{},"properties":{}}"#, .duplicateField, field: "properties")
        reject(ok + #","identities":{},"identities":{}}"#, .duplicateField, field: "identities")
        reject(ok + #","amount":1,"currency":"CNY","amount":1}"#, .duplicateField, field: "amount")
        reject(ok + #","currency":"CNY","currency":"CNY"}"#, .duplicateField, field: "currency")
        reject(ok + #","type":"page_view"}"#, .duplicateField, field: "type")
        reject(ok + #","channel":"app"}"#, .duplicateField, field: "channel")
        // Duplicate names inside identities and properties are not checked (kept as raw bytes).
        XCTAssertNotNil(accept(Self.event([("identities", #"{"phone":"1","phone":"2"}"#)])))
    }

    func testInvalidTimestamps() {
        reject(Self.event([("timestamp", #""2026-02-30T00:00:00Z""#)]), .invalidTimestamp, field: "timestamp")
        reject(Self.event([("timestamp", #""2026-11-22T24:00:00Z""#)]), .invalidTimestamp, field: "timestamp")
        reject(Self.event([("timestamp", #""2026-11-22T08:53:07""#)]), .invalidTimestamp, field: "timestamp")
        reject(Self.event([("timestamp", #""""#)]), .invalidTimestamp, field: "timestamp")
        reject(Self.event([("timestamp", #""1795337587123""#)]), .invalidTimestamp, field: "timestamp")
        reject(Self.event([("timestamp", "-1")]), .invalidTimestamp, field: "timestamp")
        reject(Self.event([("timestamp", "1795337587123.5")]), .invalidTimestamp, field: "timestamp")
        reject(Self.event([("timestamp", "1.795337587123e12")]), .invalidTimestamp, field: "timestamp")
        reject(Self.event([("timestamp", "253402300800000")]), .invalidTimestamp, field: "timestamp")
        // The first problem in document order wins: an invalid timestamp before a missing field.
        reject(#"{"timestamp":"soon"}"#, .invalidTimestamp, field: "timestamp")
    }

    func testOversize() {
        let ok = Self.bytes(Self.event())
        let exact = TouchpointDecoder(limits: DecoderLimits(maxEventBytes: ok.count))
        XCTAssertNotNil(accept(ok, decoder: exact))
        let smaller = TouchpointDecoder(limits: DecoderLimits(maxEventBytes: ok.count - 1))
        let failure = reject(ok, .oversize, field: nil, decoder: smaller)
        XCTAssertEqual(failure?.detail, "record is \(ok.count) bytes, limit is \(ok.count - 1)")
        // Checked before anything else, even for garbage.
        reject(Array(repeating: 0xFF, count: 1_000), .oversize, field: nil, decoder: smaller)
        // The default limit is 64 KiB, padding included.
        let big = Self.event([("properties", "{\"pad\":\"\(String(repeating: "x", count: 70_000))\"}")])
        reject(big, .oversize, field: nil)
        let padded = Self.bytes(Self.event()) + Array(repeating: 0x20, count: 65_536 - ok.count)
        XCTAssertEqual(padded.count, 65_536)
        XCTAssertNotNil(accept(padded))
        reject(padded + [0x20], .oversize, field: nil)
    }

    func testKeyMismatch() {
        let ok = Self.event()
        reject(ok, .keyMismatch, field: "customer_id", key: .bytes(Array("c-2".utf8)))
        reject(ok, .keyMismatch, field: "customer_id", key: .absent)
        reject(ok, .keyMismatch, field: "customer_id", key: .bytes([]))
        reject(ok, .keyMismatch, field: "customer_id", key: .bytes(Array("C-1".utf8)))
        reject(ok, .keyMismatch, field: "customer_id", key: .bytes(Array("c-".utf8)))
        reject(ok, .keyMismatch, field: "customer_id", key: .bytes(Array("c-11".utf8)))
        reject(ok, .keyMismatch, field: "customer_id", key: .bytes(Array("c-1 ".utf8)))
        reject(ok, .keyMismatch, field: "customer_id", key: .bytes(Array("\"c-1\"".utf8)))
        reject(ok, .keyMismatch, field: "customer_id", key: .bytes(Array("c-1".utf8) + [0]))
        XCTAssertNotNil(accept(ok, key: .bytes(Array("c-1".utf8))))
    }

    func testCheckOrder() {
        // Missing fields are reported before a key mismatch.
        reject(Self.event(removing: ["channel"]), .missingField, field: "channel", key: .absent)
        // A key mismatch is reported before a timestamp in the future.
        reject(Self.event([("timestamp", "\(Self.now + 3_600_000)")]), .keyMismatch, field: "customer_id", key: .absent)
        // Syntax errors anywhere beat missing fields.
        reject(#"{"event_id":"e-1"} x"#, .invalidJSON, field: nil)
        // The first problem in document order is reported.
        reject(#"{"extra":1,"type":"nope"}"#, .unknownField, field: "extra")
        reject(#"{"type":"nope","extra":1}"#, .invalidValue, field: "type")
    }

    func testDecodeFailureDescription() {
        let f = DecodeFailure(.invalidValue, field: "amount", "too many decimals", offset: 42)
        XCTAssertEqual(f.description, "invalid_value [amount]: too many decimals (at byte 42)")
        XCTAssertEqual(DecodeFailure(.oversize, "big").description, "oversize: big")
        // Offsets point into the payload.
        let json = Self.event([("channel", #""Web Site""#)])
        let failure = reject(json, .invalidValue, field: "channel")
        let offset = json.utf8.count - json.drop(while: { $0 != "W" }).utf8.count
        XCTAssertEqual(failure?.offset, offset)
    }
}
