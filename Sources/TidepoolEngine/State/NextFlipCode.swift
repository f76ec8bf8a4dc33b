/// How a customer's per-segment next flips are kept between evaluations (`PartitionState.flips`):
/// 4 bytes each instead of an 8-byte time. With ten segments that is 40 bytes of a customer's
/// state instead of 80 (the 50-event customer measured 1,050 bytes with 8-byte times; the
/// target is 1 KiB).
///
/// - An instant less than ~48.9 days (2^32 - 2^26 - 1 ms) after the customer's last evaluation
///   (`CustomerRecord.evaluatedAtMs`, which every evaluation moves forward and rewrites the row
///   against) is kept exactly, in milliseconds: dormancy thresholds, `since(...) > 30d`, and
///   everything that comes soon.
/// - A later one is kept as its UTC hour since the epoch, with a bit saying whether it is that
///   hour exactly: window exits fall on whole hours, so they are kept exactly; an instant with
///   minutes or milliseconds (`since(last(x)) > 180d`, churn) is kept rounded down to its hour,
///   a lower bound. Hours clamp at ~3,800 years after 1970 (still a lower bound).
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
    /// Codes from here on hold an hour (and the exact bit); below, a millisecond offset plus one.
    private static let hoursFrom: UInt32 = 0xFC00_0000
    private static let hourMs: Int64 = 3_600_000
    /// The largest hour kept (its code, with the exact bit, stays below `never`).
    private static let maxHour = Int64((never - 1 - hoursFrom) >> 1) - 1

    /// `ms` relative to `base` (the evaluation that writes the row). `exact` false: `ms` is itself
    /// only a lower bound (a rounded instant read back and not evaluated since), and stays marked
    /// so, however near it now is.
    @inline(__always)
    static func encode(_ ms: Int64, base: Int64, exact: Bool = true) -> UInt32 {
        if ms == .max { return never }
        let d = ms &- base
        if d < 0 || ms < 0 || base == .min { return unknown }
        if exact && d < Int64(hoursFrom) - 1 { return UInt32(d + 1) }
        let h = ms / hourMs
        if h > maxHour { return hoursFrom + (UInt32(maxHour) << 1) }
        return hoursFrom + (UInt32(h) << 1) + (exact && ms % hourMs == 0 ? 1 : 0)
    }

    /// The instant encoded against `base`, or (`isExact` false) a lower bound of it; `.min` for
    /// `unknown`.
    @inline(__always)
    static func decode(_ code: UInt32, base: Int64) -> Int64 {
        if code == unknown { return .min }
        if code == never { return .max }
        if code < hoursFrom { return base &+ Int64(code - 1) }
        return Int64((code - hoursFrom) >> 1) * hourMs
    }

    /// Whether `decode` gives the instant itself (`unknown` counts as exact: it is evaluated).
    @inline(__always)
    static func isExact(_ code: UInt32) -> Bool {
        code < hoursFrom || code == never || code & 1 == 1
    }
}
