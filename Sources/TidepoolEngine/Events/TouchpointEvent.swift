/// The kinds of touchpoint the v1 contract knows (schemas/touchpoint-event.v1.schema.json).
/// The list is closed on purpose: an unknown type is a producer bug and goes to the dead-letter
/// topic with reason `invalid_value`, instead of silently counting as nothing.
public enum EventType: UInt8, CaseIterable, Sendable {
    case pageView, productView, search, addToCart, removeFromCart, checkoutStart
    case purchase, refund, cancel
    case messageOpen, messageClick
    case couponClaim, couponRedeem
    case wecomChat, wecomAddContact, groupJoin
    case signup, login, profileUpdate
    case consent, erase

    /// The wire name, as producers write it.
    public var name: String {
        switch self {
        case .pageView: return "page_view"
        case .productView: return "product_view"
        case .search: return "search"
        case .addToCart: return "add_to_cart"
        case .removeFromCart: return "remove_from_cart"
        case .checkoutStart: return "checkout_start"
        case .purchase: return "purchase"
        case .refund: return "refund"
        case .cancel: return "cancel"
        case .messageOpen: return "message_open"
        case .messageClick: return "message_click"
        case .couponClaim: return "coupon_claim"
        case .couponRedeem: return "coupon_redeem"
        case .wecomChat: return "wecom_chat"
        case .wecomAddContact: return "wecom_add_contact"
        case .groupJoin: return "group_join"
        case .signup: return "signup"
        case .login: return "login"
        case .profileUpdate: return "profile_update"
        case .consent: return "consent"
        case .erase: return "erase"
        }
    }

    public init?(name: String) {
        guard let t = EventType.allCases.first(where: { $0.name == name }) else { return nil }
        self = t
    }
}

/// An amount of money in fixed point: 1/10_000 of the currency's major unit.
/// Integer arithmetic keeps sums and refunds exact (129.90 + 0.10 is exactly 130).
public struct Money: Hashable, Comparable, Sendable, CustomStringConvertible {
    public static let scale: Int64 = 10_000
    public var units: Int64
    public init(units: Int64) { self.units = units }
    public init(major: Int64) { self.units = major * Money.scale }
    public static func < (a: Money, b: Money) -> Bool { a.units < b.units }
    public static func + (a: Money, b: Money) -> Money { Money(units: a.units + b.units) }
    public static func - (a: Money, b: Money) -> Money { Money(units: a.units - b.units) }

    /// Decimal text without trailing zeros beyond two places: "129.9" -> "129.90", "3" -> "3.00".
    public var description: String {
        let neg = units < 0
        let u = neg ? -units : units
        let whole = u / Money.scale
        var frac = u % Money.scale
        var digits = 4
        while digits > 2 && frac % 10 == 0 { frac /= 10; digits -= 1 }
        var f = String(frac)
        while f.count < digits { f = "0" + f }
        return (neg ? "-" : "") + String(whole) + "." + f
    }
}

/// A validated JSON object kept as its original bytes (`identities`, `properties`).
/// The hot path never needs most of these, so they are not expanded into dictionaries;
/// `string(forKey:)` scans on demand.
public struct RawJSONObject: Hashable, Sendable {
    public let bytes: [UInt8]
    public init(validated bytes: [UInt8]) { self.bytes = bytes }

    /// The value of a top-level string member, or nil when absent or not a string.
    public func string(forKey key: String) -> String? {
        bytes.withUnsafeBytes { buf in
            var s = JSONScanner(buf)
            return try? s.lookupTopLevelString(key: Array(key.utf8))
        } ?? nil
    }

    /// All top-level members whose values are strings, in document order.
    public func stringMembers() -> [(key: String, value: String)] {
        bytes.withUnsafeBytes { buf in
            var s = JSONScanner(buf)
            return (try? s.topLevelStringMembers()) ?? []
        }
    }

    public var text: String { String(decoding: bytes, as: UTF8.self) }
}

/// One touchpoint, decoded and validated.
public struct TouchpointEvent: Sendable, Equatable {
    public var eventID: String
    public var customerID: String
    public var type: EventType
    public var channel: String
    /// Event time, milliseconds since the Unix epoch (UTC).
    public var timestampMs: Int64
    public var amount: Money?
    public var currency: String?
    public var identities: RawJSONObject?
    public var properties: RawJSONObject?

    public init(eventID: String, customerID: String, type: EventType, channel: String, timestampMs: Int64,
                amount: Money? = nil, currency: String? = nil,
                identities: RawJSONObject? = nil, properties: RawJSONObject? = nil) {
        self.eventID = eventID
        self.customerID = customerID
        self.type = type
        self.channel = channel
        self.timestampMs = timestampMs
        self.amount = amount
        self.currency = currency
        self.identities = identities
        self.properties = properties
    }
}
