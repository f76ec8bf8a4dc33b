import TidepoolEngine

/// Synthetic touchpoints for the demo and the tests: a skewed customer population, a realistic
/// mix of channels and event types, purchases with amounts, and a configurable share of malformed
/// records of every dead-letter kind. Deterministic for a given seed.
public struct TouchpointGenerator {
    public struct Record {
        public var key: [UInt8]?
        public var value: [UInt8]
        /// The dead-letter reason this record must produce, or nil for a valid event.
        public var expectedRejection: DeadLetterReason?
        /// Customer of a valid record.
        public var customerID: String?
        public var type: EventType?
        /// A second delivery of the previous valid record (a producer retry): applied once.
        public var isRedelivery = false
    }

    public var customers: Int
    public var malformedShare: Double
    /// Share of records that deliver the previous valid record again, as a producer retry does.
    public var redeliveryShare = 0.0
    private var rng: SplitMix
    private var counter: Int = 0
    private var lastValid: Record?

    static let owned = ["website", "app", "mini_program", "wechat_oa", "wecom", "sms", "email"]
    static let platforms = ["tmall", "jd", "douyin"]
    /// Event types with their weights (per cent of valid records).
    static let mix: [(EventType, Int)] = [
        (.pageView, 45), (.productView, 18), (.addToCart, 8), (.search, 6), (.messageOpen, 5),
        (.purchase, 6), (.couponRedeem, 3), (.wecomChat, 4), (.login, 3), (.refund, 1), (.consent, 1),
    ]

    public init(customers: Int, malformedShare: Double, seed: UInt64 = 42) {
        self.customers = max(1, customers)
        self.malformedShare = malformedShare
        self.rng = SplitMix(state: seed)
    }

    public static func customerID(_ n: Int) -> String { "c-" + String(n) }

    /// The next record, timestamped `nowMs`.
    public mutating func next(nowMs: Int64) -> Record {
        counter += 1
        if rng.unit() < malformedShare { return malformed(nowMs: nowMs) }
        if redeliveryShare > 0, rng.unit() < redeliveryShare, var again = lastValid {
            again.isRedelivery = true
            lastValid = nil  // one retry per record
            return again
        }
        // Skew: a quarter of customers make most of the traffic.
        let c = rng.unit() < 0.7 ? Int(rng.next() % UInt64(max(1, customers / 4))) : Int(rng.next() % UInt64(customers))
        let cid = Self.customerID(c)
        let type = pickType()
        let channel = rng.unit() < 0.75 ? Self.owned[Int(rng.next() % UInt64(Self.owned.count))]
                                         : Self.platforms[Int(rng.next() % UInt64(Self.platforms.count))]
        var json = #"{"event_id":"e-\#(counter)-\#(rng.next() % 1_000_000)","customer_id":"\#(cid)","type":"\#(type.name)","channel":"\#(channel)","timestamp":\#(nowMs)"#
        if type == .purchase || type == .refund {
            let cents = 990 + Int(rng.next() % 60_000)
            json += #","amount":\#(cents / 100).\#(cents % 100 < 10 ? "0" : "")\#(cents % 100),"currency":"CNY""#
            json += #","properties":{"order_id":"o-\#(counter)"}"#
        }
        if type == .consent {
            // Mostly opt-ins to sms (which needs one), some withdrawals.
            json += #","properties":{"status":"\#(rng.unit() < 0.8 ? "granted" : "withdrawn")","channel":"sms"}"#
        }
        if rng.unit() < 0.1 {
            json += #","identities":{"wechat_unionid":"u\#(c)","phone":"+86138\#(String(c % 100_000_000))"}"#
        }
        json += "}"
        let record = Record(key: Array(cid.utf8), value: Array(json.utf8), expectedRejection: nil, customerID: cid, type: type)
        lastValid = record
        return record
    }

    static let totalWeight = mix.reduce(0) { $0 + $1.1 }

    private mutating func pickType() -> EventType {
        // Drawn over the weights' own total: a table that does not sum to 100 cannot silently
        // starve its last type (it once did, and the demo saw no consent events at all).
        var r = Int(rng.next() % UInt64(Self.totalWeight))
        for (t, w) in Self.mix {
            if r < w { return t }
            r -= w
        }
        return .pageView
    }

    private mutating func malformed(nowMs: Int64) -> Record {
        let cid = Self.customerID(Int(rng.next() % UInt64(customers)))
        let key = Array(cid.utf8)
        let base = #""event_id":"bad-\#(counter)","customer_id":"\#(cid)","channel":"app","timestamp":\#(nowMs)"#
        switch rng.next() % 8 {
        case 0:
            return Record(key: key, value: Array(#"{"event_id":"bad-\#(counter)","customer_id":"#.utf8), expectedRejection: .invalidJSON)
        case 1:
            // A Latin-1 "é" (0xE9) where UTF-8 is required, inside a string value.
            return Record(key: key, value: Array(#"{"event_id":"x-"#.utf8) + [0xE9] + Array(#"","customer_id":"\#(cid)","type":"page_view","channel":"app","timestamp":\#(nowMs)}"#.utf8),
                          expectedRejection: .invalidUTF8)
        case 2:
            return Record(key: key, value: Array(#"{\#(base)}"#.utf8), expectedRejection: .missingField)
        case 3:
            return Record(key: key, value: Array(#"{\#(base),"type":"purchase","amount":"12.00","currency":"CNY"}"#.utf8), expectedRejection: .wrongType)
        case 4:
            return Record(key: key, value: Array(#"{\#(base),"type":"teleport"}"#.utf8), expectedRejection: .invalidValue)
        case 5:
            let v = #"{"event_id":"bad-\#(counter)","customer_id":"\#(cid)","type":"page_view","channel":"app","timestamp":"yesterday"}"#
            return Record(key: key, value: Array(v.utf8), expectedRejection: .invalidTimestamp)
        case 6:
            let v = #"{"event_id":"bad-\#(counter)","customer_id":"\#(cid)","type":"page_view","channel":"app","timestamp":\#(nowMs + 1000 * 86_400_000)}"#
            return Record(key: key, value: Array(v.utf8), expectedRejection: .timestampInFuture)
        default:
            return Record(key: Array("someone-else".utf8), value: Array(#"{\#(base),"type":"login"}"#.utf8), expectedRejection: .keyMismatch)
        }
    }
}

/// SplitMix64: small, fast, deterministic.
public struct SplitMix {
    public var state: UInt64
    public init(state: UInt64) { self.state = state }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return StableHash.mix(state)
    }
    public mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
}
