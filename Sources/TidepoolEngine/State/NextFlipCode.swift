/// How a customer's per-segment next flips are kept between evaluations (`PartitionState.flips`):
/// 4 bytes each instead of an 8-byte time, relative to the customer's last evaluation
/// (`CustomerRecord.evaluatedAtMs`, which every evaluation moves forward and rewrites the row
/// against). With ten segments that is 40 bytes of a customer's state instead of 80 (the
/// 50-event customer measured 1,050 bytes with 8-byte times; the target is 1 KiB).
///
/// - An instant less than ~24.8 days (2^31 - 2 ms) after the evaluation is kept exactly, in
///   milliseconds: dormancy thresholds, and most instants that come soon enough to matter.
/// - A later one is kept in whole seconds (up to ~34 years ahead, clamped below), with a bit
///   saying whether that is exact: window exits fall on whole hours, so they are; an instant
///   with milliseconds (`since(last(x)) > 180d`) is kept rounded down, a lower bound.
///
/// The engine never lets a rounded instant reach a result (`Engine.evaluate`): a segment that
/// reads a rounded instant of another through `in_segment`, or a rounded instant that would be a
/// customer's earliest, has that segment evaluated again, which gives the exact instant. So the
/// instants, the customer's timer and everything checkpointed are what a full evaluation gives,
/// whatever happened to the row (a restart, which starts every row anew, changes nothing).
enum NextFlipCode {
    /// A row whose first entry is `unknown` has never been evaluated: every segment is. Elsewhere
    /// it reads as "evaluate at once".
    static let unknown: UInt32 = 0
    /// Only an event can flip the segment (`Int64.max`).
    static let never: UInt32 = .max
    private static let secondsFrom: UInt32 = 1 << 31
    private static let maxSeconds = Int64((never - 2 - secondsFrom) >> 1)  // the largest code stays below `never`

    /// `ms` relative to `base` (the evaluation that writes the row). `exact` false: `ms` is itself
    /// only a lower bound (a rounded instant read back and not evaluated since), and stays marked
    /// so, however near it now is.
    @inline(__always)
    static func encode(_ ms: Int64, base: Int64, exact: Bool = true) -> UInt32 {
        if ms == .max { return never }
        let d = ms &- base
        if d < 0 || base == .min { return unknown }
        if exact && d < Int64(secondsFrom) - 1 { return UInt32(d + 1) }
        let s = d / 1000
        if s > maxSeconds { return secondsFrom + (UInt32(maxSeconds) << 1) }
        return secondsFrom + (UInt32(s) << 1) + (exact && d % 1000 == 0 ? 1 : 0)
    }

    /// The instant encoded against `base`, or (`isExact` false) a lower bound of it; `.min` for
    /// `unknown`.
    @inline(__always)
    static func decode(_ code: UInt32, base: Int64) -> Int64 {
        if code == unknown { return .min }
        if code == never { return .max }
        if code < secondsFrom { return base &+ Int64(code - 1) }
        return base &+ Int64((code - secondsFrom) >> 1) * 1000
    }

    /// Whether `decode` gives the instant itself (`unknown` counts as exact: it is evaluated).
    @inline(__always)
    static func isExact(_ code: UInt32) -> Bool {
        code < secondsFrom || code == never || code & 1 == 1
    }
}
