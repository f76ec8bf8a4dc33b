/// A strict byte-level JSON scanner (RFC 8259) over borrowed bytes.
///
/// Written by hand because the hot path decodes millions of events per second and Foundation's
/// JSONDecoder manages ~160k events/s on the target machine (BRIEF.md). It never allocates
/// except to build the Strings the caller asks for, validates UTF-8 inside strings (outside
/// strings JSON is ASCII, which the grammar checks), and rejects everything RFC 8259 rejects:
/// control characters in strings, bad escapes, lone surrogates, leading zeros, trailing commas.
struct JSONScanner {
    let base: UnsafePointer<UInt8>
    let count: Int
    var i: Int = 0
    static let maxDepth = 32

    init(_ buf: UnsafeRawBufferPointer) {
        if let b = buf.baseAddress {
            base = b.assumingMemoryBound(to: UInt8.self)
        } else {
            // An empty buffer: point at a static byte, count 0.
            base = JSONScanner.emptyByte
        }
        count = buf.count
    }

    private static let emptyByte: UnsafePointer<UInt8> = {
        let p = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)
        p.pointee = 0
        return UnsafePointer(p)
    }()

    @inline(__always) var atEnd: Bool { i >= count }
    @inline(__always) func peek() -> UInt8 { i < count ? base[i] : 0 }

    @inline(__always) mutating func skipWS() {
        while i < count {
            let c = base[i]
            if c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 { i += 1 } else { break }
        }
    }

    func syntax(_ what: String, field: String? = nil) -> DecodeFailure {
        if i >= count { return DecodeFailure(.invalidJSON, field: field, "unexpected end of input, expected \(what)", offset: i) }
        let c = base[i]
        let shown = c >= 0x20 && c < 0x7F ? "'\(Character(Unicode.Scalar(c)))'" : "byte 0x\(String(c, radix: 16))"
        return DecodeFailure(.invalidJSON, field: field, "expected \(what), found \(shown)", offset: i)
    }

    @inline(__always) mutating func expect(_ c: UInt8, _ what: String) throws(DecodeFailure) {
        skipWS()
        guard i < count, base[i] == c else { throw syntax(what) }
        i += 1
    }

    /// A scanned string: the bytes between the quotes, and whether they hold escapes.
    struct StringSpan {
        var start: Int
        var end: Int
        var escaped: Bool
        var length: Int { end - start }
    }

    /// Scans a string starting at the opening quote (already checked by the caller).
    mutating func scanString(field: String? = nil) throws(DecodeFailure) -> StringSpan {
        i += 1 // opening quote
        let start = i
        var escaped = false
        while true {
            // Fast path: plain ASCII that needs no checks, eight bytes at a time. A byte needs a
            // look when it is '"', '\\', a control character (< 0x20) or not ASCII (>= 0x80);
            // the lowest byte the bit tricks flag is exact (false flags only appear above a true
            // one), and the byte loop below decides about it. One byte at a time this loop was
            // ~8 instructions per byte, a fifth of decoding (callgrind).
            while i + 8 <= count {
                let w = UInt64(littleEndian: UnsafeRawPointer(base + i).loadUnaligned(as: UInt64.self))
                let ones: UInt64 = 0x0101_0101_0101_0101, highs: UInt64 = 0x8080_8080_8080_8080
                @inline(__always) func zeroByte(_ v: UInt64) -> UInt64 { (v &- ones) & ~v & highs }
                let flagged = zeroByte(w ^ (ones &* 0x22)) | zeroByte(w ^ (ones &* 0x5C))
                    | ((w &- ones &* 0x20) & ~w & highs) | (w & highs)
                if flagged != 0 {
                    i += flagged.trailingZeroBitCount >> 3
                    break
                }
                i += 8
            }
            while i < count {
                let c = base[i]
                if c == 0x22 || c == 0x5C || c < 0x20 || c >= 0x80 { break }
                i += 1
            }
            guard i < count else {
                throw DecodeFailure(.invalidJSON, field: field, "unterminated string", offset: start - 1)
            }
            let c = base[i]
            if c == 0x22 {
                let span = StringSpan(start: start, end: i, escaped: escaped)
                i += 1
                return span
            } else if c == 0x5C {
                escaped = true
                try scanEscape(field: field)
            } else if c < 0x20 {
                throw DecodeFailure(.invalidJSON, field: field, "unescaped control character 0x\(String(c, radix: 16)) in string", offset: i)
            } else {
                try scanUTF8Sequence(field: field)
            }
        }
    }

    private mutating func scanEscape(field: String?) throws(DecodeFailure) {
        // At the backslash.
        guard i + 1 < count else { throw DecodeFailure(.invalidJSON, field: field, "unterminated escape", offset: i) }
        let e = base[i + 1]
        switch e {
        case 0x22, 0x5C, 0x2F, 0x62, 0x66, 0x6E, 0x72, 0x74:
            i += 2
        case 0x75: // \uXXXX
            let u = try hex4(at: i + 2, field: field)
            i += 6
            if u >= 0xD800 && u <= 0xDBFF {
                guard i + 1 < count, base[i] == 0x5C, base[i + 1] == 0x75 else {
                    throw DecodeFailure(.invalidJSON, field: field, "lone high surrogate escape", offset: i)
                }
                let lo = try hex4(at: i + 2, field: field)
                guard lo >= 0xDC00 && lo <= 0xDFFF else {
                    throw DecodeFailure(.invalidJSON, field: field, "high surrogate not followed by a low surrogate", offset: i)
                }
                i += 6
            } else if u >= 0xDC00 && u <= 0xDFFF {
                throw DecodeFailure(.invalidJSON, field: field, "lone low surrogate escape", offset: i - 6)
            }
        default:
            throw DecodeFailure(.invalidJSON, field: field, "invalid escape sequence", offset: i)
        }
    }

    private func hex4(at j: Int, field: String?) throws(DecodeFailure) -> UInt32 {
        guard j + 4 <= count else { throw DecodeFailure(.invalidJSON, field: field, "truncated \\u escape", offset: j) }
        var v: UInt32 = 0
        for k in 0..<4 {
            let c = base[j + k]
            let d: UInt32
            switch c {
            case 0x30...0x39: d = UInt32(c - 0x30)
            case 0x41...0x46: d = UInt32(c - 0x41 + 10)
            case 0x61...0x66: d = UInt32(c - 0x61 + 10)
            default: throw DecodeFailure(.invalidJSON, field: field, "invalid hex digit in \\u escape", offset: j + k)
            }
            v = v << 4 | d
        }
        return v
    }

    /// Validates one multi-byte UTF-8 sequence at `i` (Unicode 15, table 3-7).
    private mutating func scanUTF8Sequence(field: String?) throws(DecodeFailure) {
        let c0 = base[i]
        @inline(__always) func cont(_ k: Int, _ lo: UInt8 = 0x80, _ hi: UInt8 = 0xBF) -> Bool {
            i + k < count && base[i + k] >= lo && base[i + k] <= hi
        }
        let n: Int
        switch c0 {
        case 0xC2...0xDF: n = cont(1) ? 2 : 0
        case 0xE0: n = cont(1, 0xA0) && cont(2) ? 3 : 0
        case 0xE1...0xEC, 0xEE...0xEF: n = cont(1) && cont(2) ? 3 : 0
        case 0xED: n = cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0
        case 0xF0: n = cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0
        case 0xF1...0xF3: n = cont(1) && cont(2) && cont(3) ? 4 : 0
        case 0xF4: n = cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0
        default: n = 0
        }
        guard n > 0 else { throw DecodeFailure(.invalidUTF8, field: field, "invalid UTF-8 sequence", offset: i) }
        i += n
    }

    /// Builds a Swift String from a scanned span, resolving escapes.
    func string(_ s: StringSpan) -> String {
        let raw = UnsafeBufferPointer(start: base + s.start, count: s.length)
        if !s.escaped { return String(decoding: raw, as: UTF8.self) }
        var out: [UInt8] = []
        out.reserveCapacity(s.length)
        var j = s.start
        while j < s.end {
            let c = base[j]
            if c != 0x5C { out.append(c); j += 1; continue }
            let e = base[j + 1]
            switch e {
            case 0x62: out.append(0x08); j += 2
            case 0x66: out.append(0x0C); j += 2
            case 0x6E: out.append(0x0A); j += 2
            case 0x72: out.append(0x0D); j += 2
            case 0x74: out.append(0x09); j += 2
            case 0x75:
                var u = (try? hex4(at: j + 2, field: nil)) ?? 0xFFFD
                j += 6
                if u >= 0xD800 && u <= 0xDBFF {
                    let lo = (try? hex4(at: j + 2, field: nil)) ?? 0xDC00
                    u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00)
                    j += 6
                }
                let scalar = Unicode.Scalar(u) ?? "\u{FFFD}"
                out.append(contentsOf: Array(String(Character(scalar)).utf8))
            default: out.append(e); j += 2
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// True when the span's bytes equal `lit` (spans with escapes never match a literal key).
    @inline(__always) func equals(_ s: StringSpan, _ lit: StaticString) -> Bool {
        guard !s.escaped, s.length == lit.utf8CodeUnitCount else { return false }
        let p = lit.utf8Start
        var k = 0
        while k < s.length {
            if base[s.start + k] != p[k] { return false }
            k += 1
        }
        return true
    }

    /// A scanned number and its shape.
    struct NumberSpan {
        var start: Int
        var end: Int
        var negative: Bool
        var intStart: Int
        var intEnd: Int
        var fracEnd: Int   // == intEnd + 1 + fracDigits when there is a fraction, else intEnd
        var hasFraction: Bool
        var hasExponent: Bool
    }

    mutating func scanNumber(field: String? = nil) throws(DecodeFailure) -> NumberSpan {
        let start = i
        var neg = false
        if peek() == 0x2D { neg = true; i += 1 }
        let intStart = i
        guard i < count, base[i] >= 0x30, base[i] <= 0x39 else { throw syntax("a digit", field: field) }
        if base[i] == 0x30 {
            i += 1
        } else {
            while i < count, base[i] >= 0x30, base[i] <= 0x39 { i += 1 }
        }
        let intEnd = i
        var hasFrac = false
        if i < count, base[i] == 0x2E {
            hasFrac = true
            i += 1
            guard i < count, base[i] >= 0x30, base[i] <= 0x39 else { throw syntax("a digit after '.'", field: field) }
            while i < count, base[i] >= 0x30, base[i] <= 0x39 { i += 1 }
        }
        let fracEnd = i
        var hasExp = false
        if i < count, base[i] == 0x65 || base[i] == 0x45 {
            hasExp = true
            i += 1
            if i < count, base[i] == 0x2B || base[i] == 0x2D { i += 1 }
            guard i < count, base[i] >= 0x30, base[i] <= 0x39 else { throw syntax("a digit in exponent", field: field) }
            while i < count, base[i] >= 0x30, base[i] <= 0x39 { i += 1 }
        }
        return NumberSpan(start: start, end: i, negative: neg, intStart: intStart, intEnd: intEnd,
                          fracEnd: fracEnd, hasFraction: hasFrac, hasExponent: hasExp)
    }

    /// Skips any JSON value, validating it.
    mutating func skipValue(depth: Int = 0, field: String? = nil) throws(DecodeFailure) {
        skipWS()
        guard i < count else { throw syntax("a value", field: field) }
        switch base[i] {
        case 0x22: _ = try scanString(field: field)
        case 0x7B: try skipObject(depth: depth + 1, field: field)
        case 0x5B:
            guard depth + 1 <= JSONScanner.maxDepth else {
                throw DecodeFailure(.invalidJSON, field: field, "nesting deeper than \(JSONScanner.maxDepth)", offset: i)
            }
            i += 1
            skipWS()
            if peek() == 0x5D { i += 1; return }
            while true {
                try skipValue(depth: depth + 1, field: field)
                skipWS()
                guard i < count else { throw syntax("',' or ']'", field: field) }
                if base[i] == 0x2C { i += 1; continue }
                if base[i] == 0x5D { i += 1; return }
                throw syntax("',' or ']'", field: field)
            }
        case 0x74: try literal("true", field: field)
        case 0x66: try literal("false", field: field)
        case 0x6E: try literal("null", field: field)
        case 0x2D, 0x30...0x39: _ = try scanNumber(field: field)
        default: throw syntax("a value", field: field)
        }
    }

    mutating func skipObject(depth: Int, field: String?) throws(DecodeFailure) {
        guard depth <= JSONScanner.maxDepth else {
            throw DecodeFailure(.invalidJSON, field: field, "nesting deeper than \(JSONScanner.maxDepth)", offset: i)
        }
        i += 1 // '{'
        skipWS()
        if peek() == 0x7D { i += 1; return }
        while true {
            skipWS()
            guard peek() == 0x22 else { throw syntax("a member name", field: field) }
            _ = try scanString(field: field)
            try expect(0x3A, "':'")
            try skipValue(depth: depth, field: field)
            skipWS()
            guard i < count else { throw syntax("',' or '}'", field: field) }
            if base[i] == 0x2C { i += 1; continue }
            if base[i] == 0x7D { i += 1; return }
            throw syntax("',' or '}'", field: field)
        }
    }

    private mutating func literal(_ word: StaticString, field: String?) throws(DecodeFailure) {
        let n = word.utf8CodeUnitCount
        guard i + n <= count else { throw syntax("'\(word)'", field: field) }
        for k in 0..<n where base[i + k] != word.utf8Start[k] { throw syntax("'\(word)'", field: field) }
        i += n
    }

    // MARK: - Lookups on already-validated objects (RawJSONObject)

    /// The string value of one top-level member. Member names are compared in place; only the
    /// value found becomes a String (this runs for every purchase and refund: `order_id`).
    mutating func lookupTopLevelString(key: [UInt8]) throws(DecodeFailure) -> String? {
        try expect(0x7B, "'{'")
        skipWS()
        if peek() == 0x7D { return nil }
        while true {
            skipWS()
            guard peek() == 0x22 else { throw syntax("a member name") }
            let k = try scanString()
            try expect(0x3A, "':'")
            skipWS()
            let matches = k.escaped
                ? Array(string(k).utf8) == key
                : k.length == key.count
                    && key.withUnsafeBufferPointer { kb in kb.isEmpty || memEqual(UnsafeRawPointer(kb.baseAddress!), base + k.start, k.length) }
            if peek() == 0x22 {
                let v = try scanString()
                if matches { return string(v) }
            } else {
                try skipValue(depth: 1)
            }
            skipWS()
            if peek() == 0x2C { i += 1; continue }
            return nil
        }
    }

    mutating func topLevelStringMembers() throws(DecodeFailure) -> [(key: String, value: String)] {
        var out: [(key: String, value: String)] = []
        try expect(0x7B, "'{'")
        skipWS()
        if peek() == 0x7D { return out }
        while true {
            skipWS()
            guard peek() == 0x22 else { throw syntax("a member name") }
            let k = try scanString()
            try expect(0x3A, "':'")
            skipWS()
            if peek() == 0x22 {
                let v = try scanString()
                out.append((string(k), string(v)))
            } else {
                try skipValue(depth: 1)
            }
            skipWS()
            if peek() == 0x2C { i += 1; continue }
            return out
        }
    }
}
