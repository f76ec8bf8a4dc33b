/// Gives the UTC offset of a time zone at an instant. The engine does no I/O, so the zone database
/// is behind this protocol: the daemon passes one backed by the system's tzdata, tests and replays
/// can pass `FixedOffsets`.
public protocol UTCOffsetSource: Sendable {
    /// Seconds east of UTC in `zone` at `atMs`, or nil when the zone is unknown.
    func offsetSeconds(zone: String, atMs: Int64) -> Int?
}

/// Fixed offsets only: `UTC`, `Z`, `+08:00`, `-05:30`, `UTC+8`, plus the zones of mainland China,
/// Hong Kong, Macau, Taiwan and Singapore, which have no daylight saving time.
public struct FixedOffsets: UTCOffsetSource {
    public init() {}
    static let named: [String: Int] = [
        "Asia/Shanghai": 28_800, "Asia/Chongqing": 28_800, "Asia/Harbin": 28_800, "Asia/Urumqi": 21_600, "PRC": 28_800,
        "Asia/Hong_Kong": 28_800, "Asia/Macau": 28_800, "Asia/Taipei": 28_800, "Asia/Singapore": 28_800,
        "UTC": 0, "Etc/UTC": 0, "GMT": 0, "Z": 0,
    ]

    public func offsetSeconds(zone: String, atMs: Int64) -> Int? {
        if let s = FixedOffsets.named[zone] { return s }
        return FixedOffsets.parseOffset(zone)
    }

    /// `+08:00`, `-0530`, `UTC+8`, `UTC-03:30`.
    public static func parseOffset(_ text: String) -> Int? {
        var s = Substring(text)
        if s.hasPrefix("UTC") || s.hasPrefix("GMT") { s = s.dropFirst(3) }
        guard let sign = s.first, sign == "+" || sign == "-" else { return nil }
        s = s.dropFirst()
        let digits = s.filter { $0 != ":" }
        guard !digits.isEmpty, digits.count <= 4, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        let h: Int, m: Int
        if digits.count <= 2 { h = Int(digits)!; m = 0 } else {
            h = Int(digits.dropLast(2))!
            m = Int(digits.suffix(2))!
        }
        guard h <= 14, m < 60 else { return nil }
        return (sign == "-" ? -1 : 1) * (h * 3600 + m * 60)
    }
}

/// Quiet hours in local time.
enum QuietHours {
    /// The instant quiet hours end if `t` lies in them, else nil. `offset` is the zone's offset at t.
    static func end(of t: Int64, offsetSeconds: Int, startMinute: Int, endMinute: Int) -> Int64? {
        guard startMinute != endMinute else { return nil }
        let day: Int64 = 86_400_000
        let local = t + Int64(offsetSeconds) * 1000
        let dayStart = local >= 0 ? local / day * day : (local - day + 1) / day * day
        let minute = Int((local - dayStart) / 60_000)
        let quiet = startMinute < endMinute
            ? minute >= startMinute && minute < endMinute
            : minute >= startMinute || minute < endMinute
        guard quiet else { return nil }
        var endLocal = dayStart + Int64(endMinute) * 60_000
        if endLocal <= local { endLocal += day }
        return endLocal - Int64(offsetSeconds) * 1000
    }
}
