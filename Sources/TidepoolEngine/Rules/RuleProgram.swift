/// A checked rule compiled to a flat list of stack-machine operations, evaluated once per
/// segment per customer evaluation on the hot path. The tree form (`RuleExpr`) stays for
/// explanations; this form avoids the reference counting of walking indirect enums.
///
/// Every value is a Double: counts, money in units (1/10000), durations and times in ms,
/// booleans as 0/1. "Missing" (a customer who never did something) is NaN, and IEEE comparisons
/// with NaN are false: exactly the rule language's semantics.
struct RuleProgram: Sendable, Equatable {
    enum Op: Sendable, Equatable {
        case constant(Double)
        /// Value of window term i (see `WindowTerms`): its count, or its sum.
        case count(term: Int)
        case sum(term: Int)
        case orders
        case spend
        case first(type: Int16)
        case last(type: Int16)
        case since
        case toMoney
        case distinctChannels
        case ownedShare(windowMs: Int64)
        case inSegment(Int)
        case rfm
        case lifecycle
        /// Also records its result as atom `atom` (see `FlipTiming`).
        case compare(CompareOp, atom: Int32)
        case and, or, not
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
            case .count(let t, let w, let c): push(.count(term: terms.index(t, w, c)), 1)
            case .sum(let t, let w, let c): push(.sum(term: terms.index(t, w, c)), 1)
            case .orders: push(.orders, 1)
            case .spend: push(.spend, 1)
            case .first(let t): push(.first(type: t.map { Int16($0.rawValue) } ?? -1), 1)
            case .last(let t): push(.last(type: t.map { Int16($0.rawValue) } ?? -1), 1)
            case .since(let x): emit(x); push(.since, 0)
            case .distinctChannels: push(.distinctChannels, 1)
            case .ownedShare(let w): push(.ownedShare(windowMs: w), 1)
            case .inSegment(let i): push(.inSegment(i), 1)
            case .rfm: push(.rfm, 1)
            case .lifecycle: push(.lifecycle, 1)
            case .compare(let op, let a, let b):
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
            case .constant(let d): stack[sp] = d; sp += 1
            case .count(let i): stack[sp] = Double(counts[i]); sp += 1
            case .sum(let i): stack[sp] = Double(sums[i]); sp += 1
            case .orders: stack[sp] = Double(a.lifetimeOrders); sp += 1
            case .spend: stack[sp] = Double(a.lifetimeSpend); sp += 1
            case .first(let t):
                let v = t < 0 ? a.firstSeen : a.first(rawKey: UInt8(t))
                stack[sp] = v.map { Double($0) } ?? .nan; sp += 1
            case .last(let t):
                let v = t < 0 ? a.lastSeen : a.last(rawKey: UInt8(t))
                stack[sp] = v.map { Double($0) } ?? .nan; sp += 1
            case .since: stack[sp - 1] = Double(now) - stack[sp - 1]
            case .toMoney: stack[sp - 1] = (stack[sp - 1] * Double(Money.scale)).rounded()
            case .distinctChannels: stack[sp] = Double(a.distinctChannels); sp += 1
            case .ownedShare(let w): stack[sp] = a.ownedShare(window: w, at: now, channels: channels) ?? .nan; sp += 1
            case .inSegment(let i): stack[sp] = memberships & (1 << UInt64(i)) != 0 ? 1 : 0; sp += 1
            case .rfm: stack[sp] = Double(RFMClass.of(a, at: now, models).rawValue); sp += 1
            case .lifecycle:
                stack[sp] = LifecycleStage.of(a, returnedAtMs: returnedAtMs, at: now, models).map { Double($0.rawValue) } ?? .nan
                sp += 1
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

/// Every segment's program in one array, in evaluation order, so that evaluating all segments
/// of a customer walks one buffer with one value stack.
struct ProgramTable: Sendable {
    struct Run: Sendable {
        var segment: Int
        var start: Int
        var end: Int
    }
    let ops: [RuleProgram.Op]
    /// One entry per segment, in dependency order.
    let runs: [Run]
    /// The deepest value stack any program needs.
    let maxDepth: Int
    /// Comparisons of all programs; each program's atoms are numbered from `atomBase[segment]`.
    let atomCount: Int
    let atomBase: [Int]

    init(_ programs: [RuleProgram], order: [Int]) {
        var ops: [RuleProgram.Op] = []
        var runs: [Run] = []
        var base = [Int](repeating: 0, count: programs.count)
        var atoms = 0
        for i in order {
            base[i] = atoms
            runs.append(Run(segment: i, start: ops.count, end: ops.count + programs[i].ops.count))
            ops += programs[i].ops.map { op in
                if case .compare(let c, let a) = op { return .compare(c, atom: a + Int32(atoms)) }
                return op
            }
            atoms += programs[i].atoms.count
        }
        self.ops = ops
        self.runs = runs
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
    }

    private mutating func add(_ t: Term) {
        guard lookup[t] == nil else { return }
        lookup[t] = terms.count
        terms.append(t)
    }

    func index(_ t: EventType, _ w: Int64, _ c: UInt8?) -> Int {
        lookup[Term(type: t.rawValue, windowMs: w, channel: c.map { Int16($0) } ?? -1)]!
    }

    var count: Int { terms.count }

    /// Fills counts and sums of every term at time `t`.
    @inline(__always)
    func evaluate(_ a: borrowing CustomerAggregates, at t: Int64, counts: UnsafeMutableBufferPointer<Int64>,
                  sums: UnsafeMutableBufferPointer<Int64>, from: UnsafeMutableBufferPointer<UInt32>) {
        let to = CustomerAggregates.hour(t)
        for i in terms.indices {
            counts[i] = 0
            sums[i] = 0
            from[i] = CustomerAggregates.windowStartHour(terms[i].windowMs, at: t)
        }
        terms.withUnsafeBufferPointer { terms in
            byType.withLists { byType in
                a.withBuckets { buckets in
                    for b in buckets where b.hour <= to {
                        for k in byType[b.type] {
                            let i = Int(k)
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
