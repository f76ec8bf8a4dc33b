/// How a customer's per-segment next flips are kept between evaluations (`PartitionState.flips`):
/// 4 bytes each instead of an 8-byte time, relative to the customer's last evaluation
/// (`CustomerRecord.evaluatedAtMs`, which every evaluation moves forward and rewrites the row
/// against). With ten segments that is 40 bytes of a customer's state instead of 80 (the
/// 50-event customer measured 1,050 bytes with 8-byte times; the target is 1 KiB).
///
/// - An instant less than ~24.8 days (2^31 - 2 ms) after the evaluation is kept exactly, in
///   milliseconds; dormancy thresholds and most window exits are that close.
/// - A later one is kept in whole seconds, rounded down (up to 68 years ahead, clamped below).
///
/// Rounding down keeps every use correct: a stored flip is only ever used as "this segment may
/// have changed by then". A segment whose stored flip is at or before `t` is evaluated again, and
/// an evaluation computes exact instants; so a rounded value can only make a segment be evaluated
/// up to a second early, never late. (Kept in seconds for every instant, the 1M-customer replay
/// fired 28% more timers: each early one evaluates and is set again at the exact instant.)
/// Transitions and their explanations use exact instants only.
enum NextFlipCode {
    /// A row whose first entry is `unknown` has never been evaluated: every segment is. Elsewhere
    /// it reads as "evaluate at once".
    static let unknown: UInt32 = 0
    /// Only an event can flip the segment (`Int64.max`).
    static let never: UInt32 = .max
    private static let secondsFrom: UInt32 = 1 << 31

    /// `ms` relative to `base` (the evaluation it was computed in).
    @inline(__always)
    static func encode(_ ms: Int64, base: Int64) -> UInt32 {
        if ms == .max { return never }
        let d = ms &- base
        if d < 0 || base == .min { return unknown }
        if d < Int64(secondsFrom) - 1 { return UInt32(d + 1) }
        return secondsFrom + UInt32(min(d / 1000, Int64(never - secondsFrom) - 1))
    }

    /// The instant encoded against `base`, or a lower bound of it within a second; `.min` for
    /// `unknown`.
    @inline(__always)
    static func decode(_ code: UInt32, base: Int64) -> Int64 {
        if code == unknown { return .min }
        if code == never { return .max }
        if code < secondsFrom { return base &+ Int64(code - 1) }
        return base &+ Int64(code - secondsFrom) * 1000
    }
}
