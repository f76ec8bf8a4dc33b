/// A checked rule compiled to a flat list of stack-machine operations, evaluated once per
/// segment per customer evaluation on the hot path. The tree form (`RuleExpr`) stays for
/// explanations; this form avoids the reference counting of walking indirect enums.
///
/// Every value is a Double: counts, money in units (1/10000), durations and times in ms,
/// booleans as 0/1. "Missing" (a customer who never did something) is NaN, and IEEE comparisons
/// with NaN are false: exactly the rule language's semantics.
///
/// The common comparison, one value against a constant (`count(purchase, 90d) >= 2`,
/// `since(last(page_view)) > 14d`, `orders() == 0`), is one `.test` operation instead of three
/// or four (push the value, push the constant, compare): the example rules ran 2.4x as many
/// operations before, and dispatching them was about a sixth of the engine's instructions.
struct RuleProgram: Sendable, Equatable {
    /// A value read from the customer's state.
    enum Leaf: Sendable, Equatable {
        /// Value of window term i (see `WindowTerms`): its count, or its sum.
        case count(term: Int32)
        case sum(term: Int32)
        case orders
        case spend
        /// First or last time of an event type (-1: any), or the time since it.
        case first(type: Int16)
        case last(type: Int16)
        case sinceFirst(type: Int16)
        case sinceLast(type: Int16)
        case distinctChannels
        case ownedShare(windowMs: Int64)
        case rfm
        case lifecycle
    }

    enum Op: Sendable, Equatable {
        case constant(Double)
        case leaf(Leaf)
        case toMoney
        case inSegment(Int)
        /// Also records its result as atom `atom` (see `FlipTiming`).
        case compare(CompareOp, atom: Int32)
        /// `leaf op constant` (the constant in the leaf's unit), recorded as atom `atom`.
        case test(Leaf, CompareOp, constant: Double, atom: Int32)
        case and, or, not

        /// The same operation with its atom numbered from `base` (`ProgramTable`).
        func atomsFrom(_ base: Int32) -> Op {
            switch self {
            case .compare(let c, let a): return .compare(c, atom: a + base)
            case .test(let l, let c, let k, let a): return .test(l, c, constant: k, atom: a + base)
            default: return self
            }
        }
    }

    var ops: [Op] = []
    var maxDepth = 0
    /// The rule's comparisons in the order their `.compare` ops run (atom i is `atoms[i]`), and
    /// the rule's boolean structure over them, for the next-flip computation.
    var atoms: [RuleExpr] = []
    var flip: [FlipTiming.Node] = []

    init(_ e: RuleExpr, terms: WindowTerms) {
        var depth = 0
        func push(_ op: Op, _ delta: Int) {
            ops.append(op)
            depth += delta
            maxDepth = max(maxDepth, depth)
        }
        func isMoney(_ e: RuleExpr) -> Bool {
            switch e {
            case .sum, .spend, .constant(.money): return true
            default: return false
            }
        }
        /// The value `e` reads, when it is one read from the customer's state.
        func leaf(_ e: RuleExpr) -> Leaf? {
            func type(_ t: EventType?) -> Int16 { t.map { Int16($0.rawValue) } ?? -1 }
            switch e {
            case .count(let t, let w, let c): return .count(term: Int32(terms.index(t, w, c)))
            case .sum(let t, let w, let c): return .sum(term: Int32(terms.index(t, w, c)))
            case .orders: return .orders
            case .spend: return .spend
            case .first(let t): return .first(type: type(t))
            case .last(let t): return .last(type: type(t))
            case .since(.first(let t)): return .sinceFirst(type: type(t))
            case .since(.last(let t)): return .sinceLast(type: type(t))
            case .distinctChannels: return .distinctChannels
            case .ownedShare(let w): return .ownedShare(windowMs: w)
            case .rfm: return .rfm
            case .lifecycle: return .lifecycle
            default: return nil
            }
        }
        /// `x op c` as one test when `x` is a leaf and `c` a constant in its unit (a plain number
        /// against money is scaled here, as `emit` scales it).
        func test(_ op: CompareOp, _ x: RuleExpr, _ c: RuleExpr) -> (Leaf, CompareOp, Double)? {
            guard let l = leaf(x), case .constant(let v) = c else { return nil }
            switch (v, isMoney(x)) {
            case (.number(let d), true): return (l, op, (d * Double(Money.scale)).rounded())
            case (.money(let u), true): return (l, op, Double(u))
            case (.number(let d), false): return (l, op, d)
            case (.duration(let ms), false), (.time(let ms), false): return (l, op, Double(ms))
            default: return nil
            }
        }
        func emit(_ e: RuleExpr) {
            switch e {
            case .constant(let v):
                switch v {
                case .number(let d): push(.constant(d), 1)
                case .money(let u): push(.constant(Double(u)), 1)
                case .duration(let ms), .time(let ms): push(.constant(Double(ms)), 1)
                case .bool(let b): push(.constant(b ? 1 : 0), 1)
                case .missing, .text: push(.constant(.nan), 1)
                }
            case .inSegment(let i): push(.inSegment(i), 1)
            case .count, .sum, .orders, .spend, .first, .last, .since, .distinctChannels, .ownedShare, .rfm, .lifecycle:
                // (The checker lets `since` take only first() or last(), the one source of times.)
                push(.leaf(leaf(e)!), 1)
            case .compare(let op, let a, let b):
                if let (l, op, k) = test(op, a, b) ?? test(op.mirrored, b, a) {
                    push(.test(l, op, constant: k, atom: Int32(atoms.count)), 1)
                    atoms.append(e)
                    return
                }
                // A plain number compared with money is a money amount: scale it to units.
                // A constant is scaled here, once, instead of on every evaluation (a libm call).
                func side(_ x: RuleExpr, scaled: Bool) {
                    if scaled, case .constant(.number(let d)) = x {
                        push(.constant((d * Double(Money.scale)).rounded()), 1)
                        return
                    }
                    emit(x)
                    if scaled { push(.toMoney, 0) }
                }
                side(a, scaled: isMoney(b) && !isMoney(a))
                side(b, scaled: isMoney(a) && !isMoney(b))
                push(.compare(op, atom: Int32(atoms.count)), -1)
                atoms.append(e)
            case .and(let a, let b): emit(a); emit(b); push(.and, -1)
            case .or(let a, let b): emit(a); emit(b); push(.or, -1)
            case .not(let a): emit(a); push(.not, 0)
            }
        }
        emit(e)
        // The boolean structure, numbering comparisons as `emit` did (operands first, so a
        // comparison's number counts the comparisons inside it).
        var numbered = 0
        func comparisons(_ e: RuleExpr) -> Int {
            switch e {
            case .compare(_, let a, let b): return 1 + comparisons(a) + comparisons(b)
            case .and(let a, let b), .or(let a, let b): return comparisons(a) + comparisons(b)
            case .not(let a), .since(let a): return comparisons(a)
            default: return 0
            }
        }
        func structure(_ e: RuleExpr) {
            switch e {
            case .and(let a, let b): structure(a); structure(b); flip.append(.and)
            case .or(let a, let b): structure(a); structure(b); flip.append(.or)
            case .not(let a): structure(a); flip.append(.not)
            case .inSegment(let i): flip.append(.segment(Int32(i)))
            case .constant(.bool(let b)): flip.append(.constant(b))
            default:
                // A comparison (the only other condition the checker lets through).
                numbered += comparisons(e)
                flip.append(.atom(Int32(numbered - 1)))
            }
        }
        structure(e)
    }

    /// The value of `leaf` for one customer at `now` (NaN: missing). Out of line: inlined into
    /// every test of the evaluation it cost more instructions (callgrind, eighth session).
    @inline(never)
    static func value(_ leaf: Leaf, _ a: borrowing CustomerAggregates, now: Int64, channels: ChannelTable,
                      models: ModelConfig, returnedAtMs: Int64, counts: UnsafeMutableBufferPointer<Int64>,
                      sums: UnsafeMutableBufferPointer<Int64>) -> Double {
        switch leaf {
        case .count(let i): return Double(counts[Int(i)])
        case .sum(let i): return Double(sums[Int(i)])
        case .orders: return Double(a.lifetimeOrders)
        case .spend: return Double(a.lifetimeSpend)
        case .first(let t):
            return (t < 0 ? a.firstSeen : a.first(rawKey: UInt8(t))).map { Double($0) } ?? .nan
        case .last(let t):
            return (t < 0 ? a.lastSeen : a.last(rawKey: UInt8(t))).map { Double($0) } ?? .nan
        case .sinceFirst(let t):
            return (t < 0 ? a.firstSeen : a.first(rawKey: UInt8(t))).map { Double(now) - Double($0) } ?? .nan
        case .sinceLast(let t):
            return (t < 0 ? a.lastSeen : a.last(rawKey: UInt8(t))).map { Double(now) - Double($0) } ?? .nan
        case .distinctChannels: return Double(a.distinctChannels)
        case .ownedShare(let w): return a.ownedShare(window: w, at: now, channels: channels) ?? .nan
        case .rfm: return Double(RFMClass.of(a, at: now, models).rawValue)
        case .lifecycle: return LifecycleStage.of(a, returnedAtMs: returnedAtMs, at: now, models).map { Double($0.rawValue) } ?? .nan
        }
    }

    /// Runs `ops` (a program's slice of a `ProgramTable`) for one customer at `now` on `stack`,
    /// which holds at least the program's `maxDepth` values; `memberships` holds segments
    /// evaluated earlier. Reading the operations through a buffer pointer keeps the
    /// hot loop free of reference counting (iterating the `[Op]` retained it once per program).
    @inline(__always)
    static func run(_ ops: UnsafeBufferPointer<Op>, stack: UnsafeMutableBufferPointer<Double>,
                    _ a: borrowing CustomerAggregates, now: Int64, channels: ChannelTable, memberships: UInt64,
                    models: ModelConfig, returnedAtMs: Int64, counts: UnsafeMutableBufferPointer<Int64>,
                    sums: UnsafeMutableBufferPointer<Int64>, atoms: UnsafeMutablePointer<Bool>) -> Bool {
        var sp = 0
        for op in ops {
            switch op {
            case .test(let l, let op, let c, let atom):
                let r = op.holds(value(l, a, now: now, channels: channels, models: models, returnedAtMs: returnedAtMs,
                                       counts: counts, sums: sums), c)
                stack[sp] = r ? 1 : 0; sp += 1
                atoms[Int(atom)] = r
            case .constant(let d): stack[sp] = d; sp += 1
            case .leaf(let l):
                stack[sp] = value(l, a, now: now, channels: channels, models: models, returnedAtMs: returnedAtMs,
                                  counts: counts, sums: sums)
                sp += 1
            case .toMoney: stack[sp - 1] = (stack[sp - 1] * Double(Money.scale)).rounded()
            case .inSegment(let i): stack[sp] = memberships & (1 << UInt64(i)) != 0 ? 1 : 0; sp += 1
            case .compare(let op, let atom):
                let y = stack[sp - 1], x = stack[sp - 2]
                sp -= 1
                let r = op.holds(x, y)
                stack[sp - 1] = r ? 1 : 0
                atoms[Int(atom)] = r
            case .and: stack[sp - 2] = stack[sp - 2] == 1 && stack[sp - 1] == 1 ? 1 : 0; sp -= 1
            case .or: stack[sp - 2] = stack[sp - 2] == 1 || stack[sp - 1] == 1 ? 1 : 0; sp -= 1
            case .not: stack[sp - 1] = stack[sp - 1] == 1 ? 0 : 1
            }
        }
        return stack[0] == 1
    }
}

/// The fast paths of a rule's evaluation (`ProgramTable`) and of its flip timing (`FlipTiming`):
/// one atom, or two atoms joined by and/or (atoms numbered as in `ProgramTable`), else the
/// general path (the stack machine, the node passes). The two passes classify a rule apart: an
/// atom that compares two terms is a flip-timing atom but not a table test.
enum RuleShape: Sendable {
    case single(Int32)
    case pair(Int32, Int32, or: Bool)
    case general
}

/// Every segment's program in one array, in evaluation order, so that evaluating all segments
/// of a customer walks one buffer with one value stack.
struct ProgramTable: Sendable {
    struct Run: Sendable {
        var segment: Int
        var start: Int
        var end: Int
        /// Most rules are one comparison, or two joined by and/or: those are decided directly
        /// from `tests`, without the stack machine's dispatch.
        var shape: RuleShape
    }
    /// One comparison, `leaf op constant` (`RuleProgram.Op.test`).
    struct Test: Sendable {
        var leaf: RuleProgram.Leaf
        var op: CompareOp
        var constant: Double
    }
    let ops: [RuleProgram.Op]
    /// One entry per segment, in dependency order.
    let runs: [Run]
    /// The deepest value stack any program needs.
    let maxDepth: Int
    /// Comparisons of all programs; each program's atoms are numbered from `atomBase[segment]`.
    let atomCount: Int
    let atomBase: [Int]
    /// Indexed by atom: the comparison when it is a `.test` (the shapes `test` and `pair` read
    /// only these).
    let tests: [Test]
    /// Indexed by segment: its position in `runs` (the flip timing's runs are in the same order).
    let positionOf: [UInt8]
    /// Whether every segment is at its own position (no `in_segment` reorders them).
    let inOrder: Bool

    /// The positions in `runs` of the segments in `mask` (bit p: `runs[p]`): the evaluation
    /// loops visit only these, in dependency order, instead of testing every run.
    @inline(__always)
    func positions(_ mask: UInt64) -> UInt64 {
        if inOrder { return mask }
        return positionOf.withUnsafeBufferPointer { at in
            var p: UInt64 = 0, m = mask
            while m != 0 {
                p |= 1 << UInt64(at[m.trailingZeroBitCount])
                m &= m - 1
            }
            return p
        }
    }

    init(_ programs: [RuleProgram], order: [Int]) {
        var ops: [RuleProgram.Op] = []
        var runs: [Run] = []
        var base = [Int](repeating: 0, count: programs.count)
        var atoms = 0
        var tests: [Test] = []
        for i in order {
            base[i] = atoms
            let own = programs[i].ops.map { $0.atomsFrom(Int32(atoms)) }
            for _ in programs[i].atoms { tests.append(Test(leaf: .orders, op: .eq, constant: .nan)) }
            for op in own {
                if case .test(let l, let c, let k, let a) = op { tests[Int(a)] = Test(leaf: l, op: c, constant: k) }
            }
            let shape: RuleShape
            switch own.count == 3 ? (own[0], own[1], own[2]) : nil {
            case (.test(_, _, _, let x), .test(_, _, _, let y), .and)?: shape = .pair(x, y, or: false)
            case (.test(_, _, _, let x), .test(_, _, _, let y), .or)?: shape = .pair(x, y, or: true)
            default:
                if own.count == 1, case .test(_, _, _, let x) = own[0] { shape = .single(x) } else { shape = .general }
            }
            runs.append(Run(segment: i, start: ops.count, end: ops.count + own.count, shape: shape))
            ops += own
            atoms += programs[i].atoms.count
        }
        self.ops = ops
        self.runs = runs
        self.tests = tests
        var at = [UInt8](repeating: 0, count: programs.count)
        for (p, r) in runs.enumerated() { at[r.segment] = UInt8(p) }
        positionOf = at
        inOrder = at.enumerated().allSatisfy { Int($1) == $0 }
        maxDepth = max(programs.map(\.maxDepth).max() ?? 1, 1)
        atomCount = atoms
        atomBase = base
    }
}


/// The distinct (event type, window, channel) terms of all rules, evaluated together in one pass
/// over a customer's buckets: each bucket is checked only against the terms of its own type.
struct WindowTerms: Sendable {
    struct Term: Hashable, Sendable {
        var type: UInt8
        var windowMs: Int64
        var channel: Int16  // -1: any
    }
    private(set) var terms: [Term] = []
    private var lookup: [Term: Int] = [:]
    /// Term indices by event type.
    private var byType = IndicesByEventType()

    init(_ exprs: [RuleExpr]) {
        func walk(_ e: RuleExpr) {
            switch e {
            case .count(let t, let w, let c), .sum(let t, let w, let c): add(Term(type: t.rawValue, windowMs: w, channel: c.map { Int16($0) } ?? -1))
            case .since(let x), .not(let x): walk(x)
            case .compare(_, let x, let y), .and(let x, let y), .or(let x, let y): walk(x); walk(y)
            default: break
            }
        }
        for e in exprs { walk(e) }
        let all = terms
        byType = IndicesByEventType(items: all.count) { all[$0].type == $1 }
        let lookup = self.lookup
        /// Bit i: term i, read by `e` (every bit when there are more than 64 terms).
        func reads(_ e: RuleExpr) -> UInt64 {
            switch e {
            case .count(let t, let w, let c), .sum(let t, let w, let c):
                let i = lookup[Term(type: t.rawValue, windowMs: w, channel: c.map { Int16($0) } ?? -1)]!
                return i < 64 ? 1 << UInt64(i) : .max
            case .since(let x), .not(let x): return reads(x)
            case .compare(_, let x, let y), .and(let x, let y), .or(let x, let y): return reads(x) | reads(y)
            default: return 0
            }
        }
        termsRead = exprs.map(reads)
    }

    /// Indexed like the rules given to `init`: the terms each one reads itself (a segment it
    /// refers to with `in_segment` is read as a membership bit, not through its terms).
    private(set) var termsRead: [UInt64] = []

    private mutating func add(_ t: Term) {
        guard lookup[t] == nil else { return }
        lookup[t] = terms.count
        terms.append(t)
    }

    func index(_ t: EventType, _ w: Int64, _ c: UInt8?) -> Int {
        lookup[Term(type: t.rawValue, windowMs: w, channel: c.map { Int16($0) } ?? -1)]!
    }

    var count: Int { terms.count }

    /// Fills counts and sums at time `t` of the terms in `needed` (bit i: term i; the others are
    /// left unset). An evaluation of some of the segments reads only their terms: after a page
    /// view, the purchase terms are not summed. Out of line, as `RuleProgram.value`: inlined it
    /// cost more.
    @inline(never)
    func evaluate(_ a: borrowing CustomerAggregates, at t: Int64, needed: UInt64, counts: UnsafeMutableBufferPointer<Int64>,
                  sums: UnsafeMutableBufferPointer<Int64>, from: UnsafeMutableBufferPointer<UInt32>) {
        guard needed != 0 else { return }
        let to = CustomerAggregates.hour(t)
        // Over 64 terms every bit is set (`termsRead`) and every term is filled.
        let all = needed == .max
        var types: UInt64 = 0
        for i in terms.indices where all || needed & (1 << UInt64(i)) != 0 {
            counts[i] = 0
            sums[i] = 0
            from[i] = CustomerAggregates.windowStartHour(terms[i].windowMs, at: t)
            types |= 1 << UInt64(terms[i].type)
        }
        terms.withUnsafeBufferPointer { terms in
            byType.withLists { byType in
                a.withBuckets { buckets in
                    for b in buckets where b.hour <= to && types & (1 << UInt64(b.type)) != 0 {
                        for k in byType[b.type] {
                            let i = Int(k)
                            guard all || needed & (1 << UInt64(i)) != 0 else { continue }
                            guard b.hour >= from[i] && (terms[i].channel < 0 || Int16(b.channel) == terms[i].channel) else { continue }
                            counts[i] += Int64(b.count)
                            sums[i] += b.amount
                        }
                    }
                }
            }
        }
    }
}
