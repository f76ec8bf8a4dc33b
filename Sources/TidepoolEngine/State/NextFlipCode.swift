/// How a customer's per-segment next flips are kept between evaluations (`PartitionState.flips`):
/// 4 bytes each, whole seconds rounded down, instead of 8-byte milliseconds. With ten segments
/// that is 40 bytes of a customer's state instead of 80 (the 50-event customer measured 1,050
/// bytes with Int64s; the target is 1 KiB).
///
/// Rounding down keeps every use correct. A stored flip is only ever used as "this segment may
/// have changed by then": a segment whose stored flip is at or before `t` is evaluated again, and
/// an evaluation computes exact instants. So a rounded value can only make a segment be evaluated
/// up to a second early, never late. The customer's timer is set from the exact instants of the
/// segments just evaluated and the rounded ones of the others; when a rounded one is the earliest,
/// the timer fires up to 999 ms before the flip, evaluates that segment (nothing has changed yet),
/// and is set again at its exact instant. Transitions and their explanations use only the exact
/// instants of the segments evaluated.
enum NextFlipCode {
    /// A row whose first entry is `unknown` has never been evaluated: every segment is.
    static let unknown: UInt32 = 0
    /// Only an event can flip the segment (`Int64.max`).
    static let never: UInt32 = .max

    /// Seconds since the epoch plus one, rounded down. Instants after 2106 clamp to that year (still
    /// a lower bound); instants before the epoch, which the decoder rejects, encode as `unknown`,
    /// which reads as "evaluate now".
    @inline(__always)
    static func encode(_ ms: Int64) -> UInt32 {
        if ms == .max { return never }
        if ms < 0 { return unknown }
        let s = ms / 1000 + 1
        return s >= Int64(never) ? never - 1 : UInt32(s)
    }

    /// A lower bound of the instant encoded (exact to the second); `.min` for `unknown`.
    @inline(__always)
    static func decode(_ code: UInt32) -> Int64 {
        switch code {
        case unknown: return .min
        case never: return .max
        default: return (Int64(code) - 1) * 1000
        }
    }
}
