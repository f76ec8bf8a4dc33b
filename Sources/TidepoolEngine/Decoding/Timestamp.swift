/// RFC 3339 timestamps to and from epoch milliseconds, without Foundation (which is slow here and
/// locale-sensitive). Accepts `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`, with `t`/`z` in
/// either case and a space instead of `T` (RFC 3339 section 5.6 note). Fractions beyond
/// milliseconds are truncated. A leap second (:60) is read as :59.999.
public enum Timestamp {
    /// Latest accepted instant: 9999-12-31T23:59:59.999Z.
    public static let maxMs: Int64 = 253_402_300_799_999

    public static func parseRFC3339(_ p: UnsafePointer<UInt8>, _ n: Int) -> Int64? {
        @inline(__always) func digit(_ k: Int) -> Int? {
            guard k < n else { return nil }
            let c = p[k]
            return c >= 0x30 && c <= 0x39 ? Int(c - 0x30) : nil
        }
        @inline(__always) func num(_ k: Int, _ width: Int) -> Int? {
            var v = 0
            for j in k..<(k + width) { guard let d = digit(j) else { return nil }; v = v * 10 + d }
            return v
        }
        guard n >= 20,
              let year = num(0, 4), p[4] == 0x2D,
              let month = num(5, 2), p[7] == 0x2D,
              let day = num(8, 2),
              p[10] == 0x54 || p[10] == 0x74 || p[10] == 0x20,
              let hour = num(11, 2), p[13] == 0x3A,
              let minute = num(14, 2), p[16] == 0x3A,
              var second = num(17, 2)
        else { return nil }
        guard month >= 1, month <= 12, day >= 1, day <= daysInMonth(year, month),
              hour <= 23, minute <= 59, second <= 60 else { return nil }
        var k = 19
        var millis = 0
        if k < n, p[k] == 0x2E {
            k += 1
            var digits = 0
            while let d = digit(k) {
                if digits < 3 { millis = millis * 10 + d }
                digits += 1
                k += 1
            }
            guard digits > 0 else { return nil }
            while digits < 3 { millis *= 10; digits += 1 }
        }
        if second == 60 { second = 59; millis = 999 }
        guard k < n else { return nil }
        var offsetMinutes = 0
        switch p[k] {
        case 0x5A, 0x7A:
            k += 1
        case 0x2B, 0x2D:
            let sign = p[k] == 0x2D ? -1 : 1
            guard let oh = num(k + 1, 2), k + 3 < n, p[k + 3] == 0x3A, let om = num(k + 4, 2),
                  oh <= 23, om <= 59 else { return nil }
            offsetMinutes = sign * (oh * 60 + om)
            k += 6
        default:
            return nil
        }
        guard k == n else { return nil }
        let days = daysFromCivil(year, month, day)
        let secs = Int64(days) * 86_400 + Int64(hour * 3600 + minute * 60 + second) - Int64(offsetMinutes * 60)
        let ms = secs * 1000 + Int64(millis)
        // The same range as numeric timestamps: the epoch up to the end of year 9999 (UTC).
        return ms >= 0 && ms <= maxMs ? ms : nil
    }

    public static func parseRFC3339(_ s: String) -> Int64? {
        var s = s
        return s.withUTF8 { b in b.baseAddress.flatMap { parseRFC3339($0, b.count) } }
    }

    static func daysInMonth(_ y: Int, _ m: Int) -> Int {
        switch m {
        case 2: return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's algorithm).
    static func daysFromCivil(_ y0: Int, _ m: Int, _ d: Int) -> Int {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (m + 9) % 12
        let doy = (153 * mp + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func civilFromDays(_ z0: Int) -> (Int, Int, Int) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let y = yoe + era * 400
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (m <= 2 ? y + 1 : y, m, d)
    }

    /// Appends `formatRFC3339(ms)`'s bytes to `out` without building the String. The 24 bytes
    /// are written on the stack and appended in one copy: appending 24 zeros (a generic
    /// `repeatElement` append) and writing them through the array cost about as much as the
    /// calendar arithmetic, and the trigger encoder writes three times per trigger.
    public static func appendRFC3339(_ ms: Int64, to out: inout [UInt8]) {
        let f = fields(ms)
        guard f.y >= 0 && f.y <= 9999 else { return out.append(contentsOf: formatRFC3339(ms).utf8) }
        var bytes: (UInt64, UInt64, UInt64) = (0, 0, 0)
        withUnsafeMutableBytes(of: &bytes) { raw in
            write(f, into: raw.bindMemory(to: UInt8.self))
        }
        withUnsafeBytes(of: &bytes) { out.append(contentsOf: $0) }
    }

    /// Calendar fields of `ms`: year, month, day, second of the day, millisecond.
    private static func fields(_ ms: Int64) -> (y: Int, m: Int, d: Int, sod: Int, milli: Int) {
        let secs = ms >= 0 ? ms / 1000 : (ms - 999) / 1000
        let milli = Int(ms - secs * 1000)
        let days = Int(secs >= 0 ? secs / 86_400 : (secs - 86_399) / 86_400)
        let sod = Int(secs - Int64(days) * 86_400)
        let (y, m, d) = civilFromDays(days)
        return (y, m, d, sod, milli)
    }

    /// The 24 bytes of `2026-11-22T08:53:07.123Z`. Written as bytes: the interpolation of seven
    /// padded numbers cost ~4k instructions, and campaigns format a timestamp or two per decision.
    @inline(__always)
    private static func write(_ f: (y: Int, m: Int, d: Int, sod: Int, milli: Int), into out: UnsafeMutableBufferPointer<UInt8>) {
        let p = out.baseAddress!
        @inline(__always) func two(_ v: Int, at i: Int) {
            p[i] = UInt8(truncatingIfNeeded: 0x30 + v / 10)
            p[i + 1] = UInt8(truncatingIfNeeded: 0x30 + v % 10)
        }
        two(f.y / 100, at: 0); two(f.y % 100, at: 2); p[4] = 0x2D
        two(f.m, at: 5); p[7] = 0x2D
        two(f.d, at: 8); p[10] = 0x54
        two(f.sod / 3600, at: 11); p[13] = 0x3A
        two(f.sod / 60 % 60, at: 14); p[16] = 0x3A
        two(f.sod % 60, at: 17); p[19] = 0x2E
        p[20] = UInt8(truncatingIfNeeded: 0x30 + f.milli / 100); two(f.milli % 100, at: 21); p[23] = 0x5A
    }

    /// `2026-11-22T08:53:07.123Z` (years outside 0...9999 with more digits or a sign).
    public static func formatRFC3339(_ ms: Int64) -> String {
        let f = fields(ms)
        if f.y >= 0 && f.y <= 9999 {
            return String(unsafeUninitializedCapacity: 24) { out in
                write(f, into: out)
                return 24
            }
        }
        let (y, m, d, sod, milli) = f
        func pad(_ v: Int, _ w: Int) -> String {
            let s = String(v)
            return s.count >= w ? s : String(repeating: "0", count: w - s.count) + s
        }
        return "\(pad(y, 4))-\(pad(m, 2))-\(pad(d, 2))T\(pad(sod / 3600, 2)):\(pad(sod / 60 % 60, 2)):\(pad(sod % 60, 2)).\(pad(milli, 3))Z"
    }
}
