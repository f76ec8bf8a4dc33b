/// Why an input record was rejected. The raw value is the machine-readable reason written to the
/// dead-letter record's `tidepool.reason` header and used as the metrics label.
public enum DeadLetterReason: String, CaseIterable, Sendable {
    /// The payload is not valid UTF-8.
    case invalidUTF8 = "invalid_utf8"
    /// The payload is not one well-formed JSON object (syntax error, trailing data, too deep).
    case invalidJSON = "invalid_json"
    /// A required field is absent.
    case missingField = "missing_field"
    /// A field has the wrong JSON type (for example a number where a string is required).
    case wrongType = "wrong_type"
    /// A field has the right type but a value the contract does not allow.
    case invalidValue = "invalid_value"
    /// A top-level field that the v1 contract does not define (put extensions in `properties`).
    case unknownField = "unknown_field"
    /// The same top-level field appears twice.
    case duplicateField = "duplicate_field"
    /// `timestamp` is neither RFC 3339 text nor integer epoch milliseconds.
    case invalidTimestamp = "invalid_timestamp"
    /// `timestamp` lies further in the future than `decoding.max_future_skew` allows.
    case timestampInFuture = "timestamp_in_future"
    /// The record is larger than `decoding.max_event_bytes`.
    case oversize = "oversize"
    /// The Kafka message key is missing or differs from `customer_id`.
    case keyMismatch = "key_mismatch"

    public var index: Int { DeadLetterReason.allCases.firstIndex(of: self)! }
}

/// A rejection with the field it concerns (when there is one) and a human-readable detail.
public struct DecodeFailure: Error, Equatable, Sendable, CustomStringConvertible {
    public var reason: DeadLetterReason
    public var field: String?
    public var detail: String
    /// Byte offset in the payload where the problem was found, when it has one.
    public var offset: Int?

    public init(_ reason: DeadLetterReason, field: String? = nil, _ detail: String, offset: Int? = nil) {
        self.reason = reason
        self.field = field
        self.detail = detail
        self.offset = offset
    }

    public var description: String {
        var s = reason.rawValue
        if let field { s += " [\(field)]" }
        s += ": " + detail
        if let offset { s += " (at byte \(offset))" }
        return s
    }
}
