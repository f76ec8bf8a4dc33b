/// When can a segment's membership flip with no new event? Not whenever one of its terms steps
/// (`RuleTiming.Terms`), but only when the truth of the rule can change: `count(purchase, 90d)
/// >= 2` with one purchase in the window stays false however its buckets leave, and `orders() >= 1
/// and since(last()) > 30d` never flips by time for a customer who never bought.
///
/// Each comparison of a rule (an *atom*) gets the instant its truth can next change:
/// - `count/sum(T, W) op constant`: exact. The buckets in the window leave it in hour order; the
///   walk subtracts them, a group of equal leave instants at a time, and stops at the first
///   instant where the comparison's truth differs from now. A bucket dated after now (an event
///   ahead of stream time) enters the window later: its entry is a bound too.
/// - `since(first/last(...)) op duration`: exact. `since` only grows, so `> 14d` that is false
///   becomes true at last + 14d + 1 ms and, once true, stays true;
/// - comparisons with nothing time-dependent (`orders()`, `spend()`, `distinct_channels()`, ...):
///   never;
/// - anything else (`owned_share`, `rfm()`, `lifecycle()`, two terms compared): the next instant
///   any of its terms steps, as `RuleTiming.Terms` computes it, which is a bound.
///
/// `and`, `or` and `not` combine (truth, instant) pairs so that the result's truth is constant
/// until its instant: `a and b` with both false stays false until the later of the two instants,
/// with one false until that one's instant, with both true until the earlier; `or` is the dual.
/// `in_segment(S)` takes S's instant (S is evaluated first). Only the instants that decide the
/// result are computed: an `and` with one false side that never changes is false for good,
/// whatever the other side. The customer's timer is the earliest
/// instant over all segments; at it everything is evaluated again, so a bound that is early costs
/// one evaluation and is never wrong. In the example rules 61% of the timer evaluations changed
/// nothing when the timer was the earliest step of any term (2026-12-02, 100k customers).
struct FlipTiming: Sendable {
    /// A rule's boolean structure in postfix order, over its atoms.
    enum Node: Sendable, Equatable {
        case atom(Int32)
        case segment(Int32)
        case constant(Bool)
        case and, or, not
    }

    enum Atom: Sendable {
        case never
        /// `term op constant` when `termOnLeft`, else `constant op term`; the constant in the
        /// term's unit (money in units).
        case window(term: Int32, sum: Bool, op: CompareOp, constant: Double, termOnLeft: Bool)
        /// `since(last(type))` (or `first`) `op duration`; type -1: any.
        case since(last: Bool, type: Int16, op: CompareOp, duration: Int64)
        /// Index into `generals`.
        case general(Int32)
    }

    /// A general atom: its terms, and the segments referred to inside the comparison
    /// (`in_segment(x) == false`) as `generalSegments[start..<end]`. Kept in flat arrays read
    /// through buffer pointers: reading a struct of arrays out of an array retained each of them.
    struct General: Sendable {
        var terms: RuleTiming.Terms
        var segments: [Int32]
    }

    struct Run: Sendable {
        var segment: Int32
        var start: Int32
        var end: Int32
        /// Most rules are one comparison, or two joined by and/or: those skip the node passes.
        var shape: RuleShape
    }

    let nodes: [Node]
    /// Where the subtree ending at each node starts (postfix: a binary node's right operand ends
    /// just before it, its left operand just before the right operand's start).
    let subtreeStart: [Int32]
    /// One per segment, in evaluation order.
    let runs: [Run]
    /// Indexed like the `.compare` ops' atoms of the `ProgramTable`.
    let atoms: [Atom]
    let generalTerms: [RuleTiming.Terms]
    let generalSegments: [Int32]
    let generalSegmentRange: [(Int32, Int32)]
    let maxDepth: Int

    init(programs: [RuleProgram], table: ProgramTable, windowTerms: WindowTerms, models: ModelConfig) {
        var atoms = [Atom](repeating: .never, count: table.atomCount)
        var generals: [General] = []
        var nodes: [Node] = []
        var runs: [Run] = []
        var depth = 1
        var starts: [Int32] = []
        for r in table.runs {
            let p = programs[r.segment]
            let base = table.atomBase[r.segment]
            for (k, e) in p.atoms.enumerated() {
                atoms[base + k] = Self.classify(e, windowTerms: windowTerms, models: models, generals: &generals)
            }
            let shape: RuleShape
            switch p.flip.count == 3 ? (p.flip[0], p.flip[1], p.flip[2]) : nil {
            case (.atom(let x), .atom(let y), .and)?: shape = .pair(x + Int32(base), y + Int32(base), or: false)
            case (.atom(let x), .atom(let y), .or)?: shape = .pair(x + Int32(base), y + Int32(base), or: true)
            default:
                if p.flip.count == 1, case .atom(let x) = p.flip[0] { shape = .single(x + Int32(base)) } else { shape = .general }
            }
            runs.append(Run(segment: Int32(r.segment), start: Int32(nodes.count), end: Int32(nodes.count + p.flip.count), shape: shape))
            var d = 0
            for n in p.flip {
                let k = Int32(nodes.count)
                switch n {
                case .atom(let a): nodes.append(.atom(a + Int32(base))); d += 1; starts.append(k)
                case .segment, .constant: nodes.append(n); d += 1; starts.append(k)
                case .and, .or: nodes.append(n); d -= 1; starts.append(starts[Int(starts[Int(k) - 1]) - 1])
                case .not: nodes.append(n); starts.append(starts[Int(k) - 1])
                }
                depth = max(depth, d)
            }
        }
        self.nodes = nodes
        self.subtreeStart = starts
        self.runs = runs
        self.atoms = atoms
        generalTerms = generals.map(\.terms)
        generalSegments = generals.flatMap(\.segments)
        var ranges: [(Int32, Int32)] = []
        var at: Int32 = 0
        for g in generals {
            ranges.append((at, at + Int32(g.segments.count)))
            at += Int32(g.segments.count)
        }
        generalSegmentRange = ranges
        self.maxDepth = depth
    }

    private static func classify(_ e: RuleExpr, windowTerms: WindowTerms, models: ModelConfig,
                                 generals: inout [General]) -> Atom {
        guard case .compare(let op, let a, let b) = e else { return .never }
        var segments: [Int32] = []
        func timed(_ x: RuleExpr) -> Bool {
            switch x {
            case .count, .sum, .since, .ownedShare, .rfm, .lifecycle: return true
            case .inSegment(let i): segments.append(Int32(i)); return true
            case .compare(_, let p, let q), .and(let p, let q), .or(let p, let q):
                let x = timed(p), y = timed(q)  // both sides: every referenced segment is listed
                return x || y
            case .not(let p): return timed(p)
            default: return false
            }
        }
        let ta = timed(a), tb = timed(b)
        guard ta || tb else { return .never }
        func constant(_ c: RuleExpr, money: Bool) -> Double? {
            switch c {
            case .constant(.number(let d)): return money ? (d * Double(Money.scale)).rounded() : d
            case .constant(.money(let u)): return Double(u)
            default: return nil
            }
        }
        func window(_ x: RuleExpr, _ c: RuleExpr, left: Bool) -> Atom? {
            switch x {
            case .count(let t, let w, let ch):
                guard let k = constant(c, money: false) else { return nil }
                return .window(term: Int32(windowTerms.index(t, w, ch)), sum: false, op: op, constant: k, termOnLeft: left)
            case .sum(let t, let w, let ch):
                guard let k = constant(c, money: true) else { return nil }
                return .window(term: Int32(windowTerms.index(t, w, ch)), sum: true, op: op, constant: k, termOnLeft: left)
            default: return nil
            }
        }
        if let w = window(a, b, left: true) ?? window(b, a, left: false) { return w }
        func since(_ x: RuleExpr, _ c: RuleExpr, _ op: CompareOp) -> Atom? {
            guard case .since(let inner) = x, case .constant(.duration(let d)) = c else { return nil }
            switch inner {
            case .last(let t): return .since(last: true, type: t.map { Int16($0.rawValue) } ?? -1, op: op, duration: d)
            case .first(let t): return .since(last: false, type: t.map { Int16($0.rawValue) } ?? -1, op: op, duration: d)
            default: return nil
            }
        }
        if let s = since(a, b, op) ?? since(b, a, op.mirrored) { return s }
        generals.append(General(terms: RuleTiming.Terms([e], models: models), segments: segments))
        return .general(Int32(generals.count - 1))
    }

    /// The first instant after `t` at which `term op constant` can change its truth, given the
    /// term's value `v0` at `t`.
    /// `from` and `to` are the window's first and last hour at `t`.
    static func windowFlip(_ buckets: BucketSequence, term: WindowTerms.Term, value v0: Int64, sum: Bool,
                           op: CompareOp, constant c: Double, termOnLeft: Bool, from: UInt32, to: UInt32) -> Int64 {
        @inline(__always) func truth(_ v: Int64) -> Bool {
            termOnLeft ? op.holds(Double(v), c) : op.holds(c, Double(v))
        }
        let now = truth(v0)
        let w = term.windowMs
        let hourly = w <= AggregateConfig.hourlyLimitMs
        var best = Int64.max
        // A local function: its `return`s end the scan (they ended a closure before).
        @inline(__always) func scan() {
            // Buckets dated after `to` (newest last) enter the window at their hour or day.
            var end = buckets.words.count
            while end > 0 {
                let (b, start) = buckets.bucket(endingAt: end)
                guard b.hour > to else { break }
                if b.type == term.type && (term.channel < 0 || Int16(b.channel) == term.channel) {
                    let h = Int64(b.hour)
                    best = hourly ? h * AggregateConfig.hourMs : h / 24 * AggregateConfig.dayMs
                }
                end = start
            }
            // The buckets in the window leave it in hour order.
            var v = v0
            var group = Int64.min
            for b in BucketSequence(words: UnsafeBufferPointer(rebasing: buckets.words[0..<end])) {
                guard b.hour >= from, b.type == term.type, term.channel < 0 || Int16(b.channel) == term.channel else { continue }
                let h = Int64(b.hour)
                let leave = hourly ? (h + w / AggregateConfig.hourMs) * AggregateConfig.hourMs
                                   : (h / 24 + w / AggregateConfig.dayMs) * AggregateConfig.dayMs
                if leave != group {
                    if group != .min && truth(v) != now { best = min(best, group); return }
                    if leave >= best { return }
                    group = leave
                }
                v -= sum ? b.amount : Int64(b.count)
            }
            if group != .min && truth(v) != now { best = min(best, group) }
        }
        scan()
        return best
    }

    /// Which side's instant an `and` (or an `or`) keeps, from the sides' truths now: the side
    /// that decides the result alone (false for `and`, true for `or`) holds it until its own
    /// instant, whatever the other side does.
    enum Decider {
        /// Both sides decide: the result holds until the later of their instants.
        case later
        case left, right
        /// Neither decides: either side changing changes the result.
        case earlier

        @inline(__always)
        init(or: Bool, left: Bool, right: Bool) {
            switch (left == or, right == or) {
            case (true, true): self = .later
            case (true, false): self = .left
            case (false, true): self = .right
            case (false, false): self = .earlier
            }
        }

        @inline(__always)
        func instant(_ left: () -> Int64, _ right: () -> Int64) -> Int64 {
            switch self {
            case .later: return max(left(), right())
            case .left: return left()
            case .right: return right()
            case .earlier: return min(left(), right())
            }
        }
    }

    /// When `since(x) op d`, true or false now (`holds`), can next change: `since` grows with time.
    @inline(__always)
    static func sinceFlip(_ op: CompareOp, x: Int64, d: Int64, holds: Bool, after t: Int64) -> Int64 {
        let edge = x &+ d  // since(x) == d at this instant
        switch op {
        case .gt: return holds ? .max : edge &+ 1
        case .ge: return holds ? .max : edge
        case .lt: return holds ? edge : .max
        case .le: return holds ? edge &+ 1 : .max
        case .eq, .ne: return t < edge ? edge : t == edge ? edge &+ 1 : .max
        }
    }

    /// Each segment's next instant after `t` at which its membership can flip, left in `segNext`
    /// (indexed like the segments, `.max`: only an event can).
    /// `bits` are the memberships at `t`; `counts`, `sums` and `truths` what the programs computed
    /// at `t`. Only the segments at the `positions` of `runs` (bit p: `runs[p]`, see
    /// `ProgramTable.positions`) are computed (and count towards the result); the others'
    /// instants are read from `segNext` where a computed segment refers to them.
    func next(_ a: borrowing CustomerAggregates, after t: Int64, returnedAtMs: Int64, bits: UInt64,
              windowTerms: WindowTerms, counts: UnsafeMutableBufferPointer<Int64>, sums: UnsafeMutableBufferPointer<Int64>,
              from: UnsafeMutableBufferPointer<UInt32>, truths: UnsafeMutablePointer<Bool>,
              nodes node: UnsafeMutablePointer<(truth: Bool, needed: Bool, at: Int64)>,
              segNext: UnsafeMutableBufferPointer<Int64>, positions: UInt64) {
        let to = CustomerAggregates.hour(t)
        // The buckets and first/last times are taken once here, not once per term: each read of a
        // section is a closure, and per term the compiler left them out of line.
        a.withBuckets { buckets in
        a.withFirstLast { firstLast in
                nodes.withUnsafeBufferPointer { nodes in
                    subtreeStart.withUnsafeBufferPointer { starts in
                        atoms.withUnsafeBufferPointer { atoms in
                            windowTerms.terms.withUnsafeBufferPointer { terms in
                                @inline(__always) func atomInstant(_ i: Int) -> Int64 {
                                    let at: Int64
                                    switch atoms[i] {
                                    case .never: return .max
                                    case .window(let term, let sum, let op, let c, let left):
                                        let k = Int(term)
                                        at = Self.windowFlip(buckets, term: terms[k], value: sum ? sums[k] : counts[k], sum: sum,
                                                             op: op, constant: c, termOnLeft: left, from: from[k], to: to)
                                    case .since(let last, let type, let op, let d):
                                        let x: Int64?
                                        if last {
                                            x = type < 0 ? CustomerAggregates.lastSeen(firstLast)
                                                : CustomerAggregates.last(firstLast, rawKey: UInt8(type))
                                        } else {
                                            x = type < 0 ? CustomerAggregates.firstSeen(firstLast)
                                                : CustomerAggregates.first(firstLast, rawKey: UInt8(type))
                                        }
                                        // Never did it: `since` is missing and every comparison false until an event.
                                        guard let x else { return .max }
                                        at = Self.sinceFlip(op, x: x, d: d, holds: truths[i], after: t)
                                    case .general(let g):
                                        var x = generalTerms.withUnsafeBufferPointer {
                                            $0[Int(g)].nextChange(a, after: t, returnedAtMs: returnedAtMs)
                                        }
                                        let (lo, hi) = generalSegmentRange.withUnsafeBufferPointer { $0[Int(g)] }
                                        if lo < hi {
                                            generalSegments.withUnsafeBufferPointer { segs in
                                                for s in segs[Int(lo)..<Int(hi)] { x = min(x, segNext[Int(s)]) }
                                            }
                                        }
                                        at = x
                                    }
                                    // Sound whatever happens: an instant not after t re-evaluates at t + 1 ms.
                                    return at > t ? at : t + 1
                                }
                                @inline(__always) func decider(_ k: Int, _ lc: Int, _ rc: Int) -> Decider {
                                    var or = false
                                    if case .or = nodes[k] { or = true }
                                    return Decider(or: or, left: node[lc].truth, right: node[rc].truth)
                                }
                                var left = positions
                                while left != 0 {
                                    let r = runs[left.trailingZeroBitCount]
                                    left &= left - 1
                                    switch r.shape {
                                    case .single(let i):
                                        segNext[Int(r.segment)] = atomInstant(Int(i))
                                        continue
                                    case .pair(let i, let j, let or):
                                        segNext[Int(r.segment)] = Decider(or: or, left: truths[Int(i)], right: truths[Int(j)])
                                            .instant({ atomInstant(Int(i)) }, { atomInstant(Int(j)) })
                                        continue
                                    case .general: break
                                    }
                                    let start = Int(r.start), end = Int(r.end)
                                    // 1. Truth of every node, bottom up.
                                    for k in start..<end {
                                        let truth: Bool
                                        switch nodes[k] {
                                        case .atom(let i): truth = truths[Int(i)]
                                        case .segment(let s): truth = bits & (1 << UInt64(s)) != 0
                                        case .constant(let b): truth = b
                                        case .not: truth = !node[k - 1].truth
                                        case .and: truth = node[Int(starts[k - 1]) - 1].truth && node[k - 1].truth
                                        case .or: truth = node[Int(starts[k - 1]) - 1].truth || node[k - 1].truth
                                        }
                                        node[k] = (truth, false, .max)
                                    }
                                    // 2. Which instants decide the result, top down (`Decider`).
                                    node[end - 1].needed = true
                                    var k = end - 1
                                    while k >= start {
                                        if node[k].needed {
                                            switch nodes[k] {
                                            case .not: node[k - 1].needed = true
                                            case .and, .or:
                                                let rc = k - 1, lc = Int(starts[rc]) - 1
                                                switch decider(k, lc, rc) {
                                                case .left: node[lc].needed = true
                                                case .right: node[rc].needed = true
                                                case .later, .earlier: node[lc].needed = true; node[rc].needed = true
                                                }
                                            default: break
                                            }
                                        }
                                        k -= 1
                                    }
                                    // 3. The needed instants, bottom up.
                                    for k in start..<end where node[k].needed {
                                        let at: Int64
                                        switch nodes[k] {
                                        case .atom(let i): at = atomInstant(Int(i))
                                        case .segment(let s): at = segNext[Int(s)]
                                        case .constant: at = .max
                                        case .not: at = node[k - 1].at
                                        case .and, .or:
                                            let rc = k - 1, lc = Int(starts[rc]) - 1
                                            at = decider(k, lc, rc).instant({ node[lc].at }, { node[rc].at })
                                        }
                                        node[k].at = at
                                    }
                                    segNext[Int(r.segment)] = node[end - 1].at
                                }
                            }
                        }
                    }
                }
        }
        }
    }
}
