/// Which segments an evaluation has to look at. A segment's truth and its next possible flip
/// (`FlipTiming`) are functions of the aggregates it reads and of time. Time alone changes them
/// only at that next flip, where the customer's timer fires; so between two evaluations a
/// segment can change only when
/// - an event changed what its rule reads (`affectedBy`): `count(purchase, 90d)` reads purchase
///   buckets, which purchases, refunds and cancels change; `since(last())`, `distinct_channels()`,
///   `owned_share(...)` and `lifecycle()` read every event; or
/// - stream time reached its own next flip;
/// and in either case every segment that refers to it with `in_segment` (`dependents`).
///
/// The engine keeps each customer's per-segment next flips and evaluates only these segments:
/// with the ten example rules an event touches five of them on average, and a timer one or two,
/// instead of all ten (`Engine.evaluate`). Compaction of old buckets into daily ones never changes
/// a window's value or its leave instants (a folded bucket stays on its side of every window
/// boundary), so it does not count as a change.
struct EvaluationScope: Sendable {
    /// Indexed by `EventType.rawValue`: the segments an event of that type can change, closed
    /// under `in_segment`.
    let affectedBy: [UInt64]
    /// Indexed by segment: the segment itself and every segment that refers to it, directly or
    /// through others.
    let dependents: [UInt64]
    /// Every segment.
    let all: UInt64

    init(_ exprs: [RuleExpr], order: [Int]) {
        let n = exprs.count
        all = n == 0 ? 0 : n >= 64 ? .max : (1 << UInt64(n)) - 1
        let anyEvent = UInt64.max
        let orderChanges: UInt64 = Self.bit(.purchase) | Self.bit(.refund) | Self.bit(.cancel)
        /// Event types whose events change what `e` reads (as a bit set), and the segments it refers to.
        func reads(_ e: RuleExpr) -> (types: UInt64, refs: UInt64) {
            switch e {
            case .constant: return (0, 0)
            case .count(let t, _, _), .sum(let t, _, _):
                // Refunds and cancels take amounts and counts off purchase buckets.
                return (t == .purchase ? orderChanges : Self.bit(t), 0)
            case .orders, .spend, .rfm: return (orderChanges, 0)
            case .first(let t), .last(let t): return (t.map(Self.bit) ?? anyEvent, 0)
            case .distinctChannels, .ownedShare, .lifecycle: return (anyEvent, 0)
            case .inSegment(let i): return (0, 1 << UInt64(i))
            case .since(let x), .not(let x): return reads(x)
            case .compare(_, let x, let y), .and(let x, let y), .or(let x, let y):
                let (a, b) = (reads(x), reads(y))
                return (a.types | b.types, a.refs | b.refs)
            }
        }
        let direct = exprs.map(reads)
        /// Adds every segment that refers to one in `m` (order: referenced segments come first).
        func closed(_ m: UInt64) -> UInt64 {
            var m = m
            for j in order where direct[j].refs & m != 0 { m |= 1 << UInt64(j) }
            return m
        }
        dependents = (0..<n).map { closed(1 << UInt64($0)) }
        affectedBy = EventType.allCases.map { t in
            var m: UInt64 = 0
            for i in 0..<n where direct[i].types & Self.bit(t) != 0 { m |= 1 << UInt64(i) }
            return closed(m)
        }
    }

    /// How many event types there are (`affectedBy.count`).
    static let typeCount = EventType.allCases.count

    @inline(__always) static func bit(_ t: EventType) -> UInt64 { 1 << UInt64(t.rawValue) }
}
