/// A value a rule expression produces. `missing` stands for "the customer never did that"
/// (e.g. `last(page_view)` without any page view): every comparison with it is false.
public enum RuleValue: Sendable, Equatable, CustomStringConvertible {
    case number(Double)
    case money(Int64)
    case duration(Int64)
    case time(Int64)
    case bool(Bool)
    /// An RFM class or lifecycle stage.
    case text(String)
    case missing

    public var description: String {
        switch self {
        case .number(let v): return Self.whole(v).map { String($0) } ?? String(v)
        case .money(let u): return Money(units: u).description
        case .duration(let ms): return DurationText.format(ms)
        case .time(let ms): return Timestamp.formatRFC3339(ms)
        case .bool(let b): return String(b)
        case .text(let t): return t
        case .missing: return "none"
        }
    }

    /// A number written without a fraction (and given to triggers as an integer): a whole value
    /// below 10^15.
    static func whole(_ v: Double) -> Int64? { v == v.rounded() && abs(v) < 1e15 ? Int64(v) : nil }
}

public enum RuleType: String, Sendable, Equatable {
    case number, money, duration, time, bool
    case rfmClass = "RFM class"
    case stage = "lifecycle stage"
}

/// A checked, typed rule expression.
public indirect enum RuleExpr: Sendable, Equatable {
    case constant(RuleValue)
    case count(EventType, windowMs: Int64, channel: UInt8?)
    case sum(EventType, windowMs: Int64, channel: UInt8?)
    case orders
    case spend
    case first(EventType?)
    case last(EventType?)
    case since(RuleExpr)
    case distinctChannels
    case ownedShare(windowMs: Int64)
    case inSegment(Int)
    case rfm
    case lifecycle
    case compare(CompareOp, RuleExpr, RuleExpr)
    case and(RuleExpr, RuleExpr)
    case or(RuleExpr, RuleExpr)
    case not(RuleExpr)
}

/// One segment as written in the configuration.
public struct SegmentDefinition: Sendable, Equatable {
    public var name: String
    public var rule: String
    /// Where the rule text starts in its file.
    public var origin: SourceLocation
    /// Columns to add on the rule's later lines (YAML block scalars lose their indentation).
    public var continuationIndent: Int
    public init(name: String, rule: String, origin: SourceLocation = SourceLocation(line: 1, column: 1), continuationIndent: Int = 0) {
        self.name = name
        self.rule = rule
        self.origin = origin
        self.continuationIndent = continuationIndent
    }
}

/// A rule problem that names its segment.
public struct SegmentError: Error, Sendable, Equatable, CustomStringConvertible {
    public var segment: String
    public var error: RuleError
    public var description: String { "\(error.location): segment '\(segment)': \(error.message)" }
}

/// Everything a rule reads about one customer at one instant.
public struct RuleContext {
    public var aggregates: CustomerAggregates
    public var now: Int64
    public var channels: ChannelTable
    /// Memberships of segments already evaluated, bit i for `SegmentSet.segments[i]` (the
    /// engine's own form: an array of flags was an allocation for every campaign decision).
    public var memberships: UInt64
    public var models: ModelConfig = ModelConfig()
    /// When the customer last came back from dormant or churned (.min: never).
    public var returnedAtMs: Int64 = .min
}

/// The compiled segments of a configuration: checked, ordered so that a segment is evaluated
/// after every segment it refers to.
public struct SegmentSet: Sendable, Equatable {
    public struct Segment: Sendable, Equatable {
        public var name: String
        public var rule: String
        public var expr: RuleExpr
    }

    /// Everything compiled, behind one reference: the engine reads the set on every evaluation,
    /// and copying a struct of ten arrays there cost ten retains and releases each time.
    final class Compiled: Sendable {
        let segments: [Segment]
        let order: [Int]
        /// Every segment's compiled program, in evaluation order.
        let table: ProgramTable
        /// When each segment's truth can next change without an event.
        let flip: FlipTiming
        let windowTerms: WindowTerms
        let allTerms: RuleTiming.Terms
        let explanationParts: [[(String, RuleExpr)]]
        let models: ModelConfig
        /// What can change when (`EvaluationScope`).
        let scope: EvaluationScope
        init(segments: [Segment], order: [Int], programs: [RuleProgram], windowTerms: WindowTerms, allTerms: RuleTiming.Terms,
             explanationParts: [[(String, RuleExpr)]], models: ModelConfig) {
            self.segments = segments; self.order = order; self.windowTerms = windowTerms
            table = ProgramTable(programs, order: order)
            flip = FlipTiming(programs: programs, table: table, windowTerms: windowTerms, models: models)
            self.allTerms = allTerms; self.explanationParts = explanationParts; self.models = models
            scope = EvaluationScope(segments.map(\.expr), order: order)
        }
    }
    let compiled: Compiled

    public var segments: [Segment] { compiled.segments }
    /// Evaluation order: indices into `segments`.
    public var order: [Int] { compiled.order }
    var windowTerms: WindowTerms { compiled.windowTerms }
    /// Time-dependent terms of all rules together (lifecycle use; per-segment flip instants are
    /// `nextFlips`).
    var allTerms: RuleTiming.Terms { compiled.allTerms }
    /// What an explanation of each segment shows, rendered once.
    var explanationParts: [[(String, RuleExpr)]] { compiled.explanationParts }

    public static func == (a: SegmentSet, b: SegmentSet) -> Bool {
        a.segments == b.segments && a.order == b.order && a.models == b.models
    }

    public var models: ModelConfig { compiled.models }

    public init(_ definitions: [SegmentDefinition], aggregates config: AggregateConfig, channels: ChannelTable,
                models: ModelConfig = ModelConfig()) throws(SegmentError) {
        var index: [String: Int] = [:]
        for (i, d) in definitions.enumerated() {
            guard d.name.utf8.first.map({ $0 >= 0x61 && $0 <= 0x7A }) == true,
                  d.name.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5F }) else {
                throw SegmentError(segment: d.name, error: RuleError(d.origin, "segment names are lower-case words ([a-z][a-z0-9_]*)"))
            }
            guard index[d.name] == nil else {
                throw SegmentError(segment: d.name, error: RuleError(d.origin, "a segment named '\(d.name)' is already defined"))
            }
            index[d.name] = i
        }
        var compiled: [Segment] = []
        var deps: [[(Int, SourceLocation)]] = []
        for d in definitions {
            do throws(RuleError) {
                let syntax = try RuleParser.parse(d.rule, origin: d.origin, continuationIndent: d.continuationIndent)
                var checker = RuleChecker(config: config, channels: channels, segments: index)
                let (expr, type) = try checker.check(syntax)
                guard type == .bool else {
                    throw RuleError(syntax.location, "a segment rule must be a condition (true or false), not a \(type.rawValue)")
                }
                compiled.append(Segment(name: d.name, rule: d.rule, expr: expr))
                deps.append(checker.references)
            } catch {
                throw SegmentError(segment: d.name, error: error)
            }
        }
        // Cycles between segments, found by depth-first search; the error names the whole cycle.
        var state = [UInt8](repeating: 0, count: definitions.count)  // 0 new, 1 on stack, 2 done
        var order: [Int] = []
        var stack: [Int] = []
        func visit(_ i: Int) throws(SegmentError) {
            state[i] = 1
            stack.append(i)
            for (j, loc) in deps[i] {
                if state[j] == 1 {
                    let cycle = stack[stack.firstIndex(of: j)!...].map { definitions[$0].name } + [definitions[j].name]
                    throw SegmentError(segment: definitions[i].name,
                                       error: RuleError(loc, "segments refer to each other in a cycle: \(cycle.joined(separator: " -> "))"))
                }
                if state[j] == 0 { try visit(j) }
            }
            stack.removeLast()
            state[i] = 2
            order.append(i)
        }
        for i in definitions.indices where state[i] == 0 { try visit(i) }
        let windowTerms = WindowTerms(compiled.map(\.expr))
        let names = compiled.map(\.name)
        self.compiled = Compiled(
            segments: compiled, order: order, programs: compiled.map { RuleProgram($0.expr, terms: windowTerms) },
            windowTerms: windowTerms, allTerms: RuleTiming.Terms(compiled.map(\.expr), models: models),
            explanationParts: compiled.map { RuleExplainer.parts($0.expr, names: names) }, models: models)
    }

    /// Memberships as a bit set (bit i: segment i), evaluated in dependency order.
    @inline(__always)
    func memberships(_ a: borrowing CustomerAggregates, now: Int64, channels: ChannelTable, returnedAtMs: Int64 = .min) -> UInt64 {
        evaluate(a, now: now, channels: channels, returnedAtMs: returnedAtMs, flips: nil)
    }

    /// The engine's incremental evaluation: only the segments in `mask` (closed under
    /// `in_segment`, see `EvaluationScope`) are evaluated at `now`; every other segment keeps its
    /// bit from `stored` and its next flip in `flips` (indexed like `segments`), which receives
    /// the new instants of the segments in `mask`. Returns the memberships at `now`.
    @inline(__always)
    func evaluate(_ a: borrowing CustomerAggregates, now: Int64, channels: ChannelTable, returnedAtMs: Int64,
                  stored: UInt64, mask: UInt64, flips: UnsafeMutableBufferPointer<Int64>, scratch: EvaluationScratch) -> UInt64 {
        evaluate(a, now: now, channels: channels, returnedAtMs: returnedAtMs, flips: Optional(flips), stored: stored, mask: mask,
                 scratch: scratch)
    }

    var scope: EvaluationScope { compiled.scope }

    /// Each segment's next possible flip after `now` (indexed like `segments`; `.max`: only an
    /// event can flip it), as the engine's timer computes it. For explanations and inspection.
    func nextFlips(_ a: borrowing CustomerAggregates, now: Int64, channels: ChannelTable, returnedAtMs: Int64 = .min) -> [Int64] {
        var out = [Int64](repeating: .max, count: segments.count)
        out.withUnsafeMutableBufferPointer { out in
            _ = evaluate(a, now: now, channels: channels, returnedAtMs: returnedAtMs, flips: out)
        }
        return out
    }

    /// Memberships at `now` of the segments in `mask` (the others keep their bit from `stored`);
    /// with `flips`, each evaluated segment's next possible flip is written there too. For the
    /// occasional caller (views, reloads, which call it for every customer, the engine's setup):
    /// its scratch memory is on the stack. The engine evaluates through
    /// `evaluate(_:now:channels:returnedAtMs:flips:stored:mask:scratch:)` with memory of its own.
    private func evaluate(_ a: borrowing CustomerAggregates, now: Int64, channels: ChannelTable, returnedAtMs: Int64,
                          flips: UnsafeMutableBufferPointer<Int64>?, stored: UInt64 = 0, mask: UInt64 = .max) -> UInt64 {
        EvaluationScratch.withTemporary(for: self) { scratch in
            evaluate(a, now: now, channels: channels, returnedAtMs: returnedAtMs, flips: flips, stored: stored, mask: mask,
                     scratch: scratch)
        }
    }

    @inline(__always)
    func evaluate(_ a: borrowing CustomerAggregates, now: Int64, channels: ChannelTable, returnedAtMs: Int64,
                  flips: UnsafeMutableBufferPointer<Int64>?, stored: UInt64, mask: UInt64, scratch: EvaluationScratch) -> UInt64 {
        let c = compiled
        let counts = scratch.counts, sums = scratch.sums, from = scratch.from, truths = scratch.truths
        // Only the terms the evaluated segments read.
        var needed: UInt64 = 0
        c.windowTerms.termsRead.withUnsafeBufferPointer { read in
            var m = mask & c.scope.all
            while m != 0 {
                needed |= read[m.trailingZeroBitCount]
                m &= m - 1
            }
        }
        c.windowTerms.evaluate(a, at: now, needed: needed, counts: counts, sums: sums, from: from)
        let models = c.models
        let positions = c.table.positions(mask & c.scope.all)
        let bits = c.table.ops.withUnsafeBufferPointer { ops in
            c.table.runs.withUnsafeBufferPointer { runs in
              c.table.tests.withUnsafeBufferPointer { tests in
                @inline(__always) func test(_ i: Int32) -> Bool {
                    let x = tests[Int(i)]
                    let r = x.op.holds(RuleProgram.value(x.leaf, a, now: now, channels: channels, models: models,
                                                         returnedAtMs: returnedAtMs, counts: counts, sums: sums), x.constant)
                    truths[Int(i)] = r
                    return r
                }
                // Segments outside the mask keep their stored truth; those inside are
                // evaluated in dependency order, so `in_segment` reads current bits.
                var bits: UInt64 = stored & ~mask
                var left = positions
                while left != 0 {
                    let r = runs[left.trailingZeroBitCount]
                    left &= left - 1
                    let truth: Bool
                    switch r.shape {
                    case .single(let i): truth = test(i)
                    case .pair(let i, let j, let or):
                        // Both sides: the flip timing reads both truths.
                        let x = test(i), y = test(j)
                        truth = or ? x || y : x && y
                    case .general:
                        truth = RuleProgram.run(
                            UnsafeBufferPointer(rebasing: ops[r.start..<r.end]), stack: scratch.stack, a, now: now,
                            channels: channels, memberships: bits, models: models, returnedAtMs: returnedAtMs,
                            counts: counts, sums: sums, atoms: truths)
                    }
                    if truth { bits |= 1 << UInt64(r.segment) }
                }
                return bits
              }
            }
        }
        if let flips {
            c.flip.next(a, after: now, returnedAtMs: returnedAtMs, bits: bits, windowTerms: c.windowTerms,
                        counts: counts, sums: sums, from: from, truths: truths, nodes: scratch.nodes, segNext: flips,
                        positions: positions)
        }
        return bits
    }

    /// Membership of every segment (indexed like `segments`) for one customer at `now`.
    public func evaluate(_ aggregates: CustomerAggregates, now: Int64, channels: ChannelTable) -> [Bool] {
        let bits = memberships(aggregates, now: now, channels: channels)
        return segments.indices.map { bits & (1 << UInt64($0)) != 0 }
    }
}

/// Type-checks parsed rules against what the engine keeps.
struct RuleChecker {
    let config: AggregateConfig
    let channels: ChannelTable
    let segments: [String: Int]
    var references: [(Int, SourceLocation)] = []

    static let functions = ["count", "sum", "orders", "spend", "ltv", "first", "last", "since",
                            "distinct_channels", "owned_share", "in_segment", "rfm", "lifecycle"]

    mutating func check(_ s: RuleSyntax) throws(RuleError) -> (RuleExpr, RuleType) {
        switch s {
        case .number(let v, _): return (.constant(.number(v)), .number)
        case .duration(let ms, _): return (.constant(.duration(ms)), .duration)
        case .boolean(let b, _): return (.constant(.bool(b)), .bool)
        case .name(let n, let l):
            throw RuleError(l, "unknown name '\(n)'; expected a number, a duration such as 14d, or a function call such as count(purchase, 90d)")
        case .not(let inner, let l):
            let (e, t) = try check(inner)
            guard t == .bool else { throw RuleError(l, "'not' needs a condition, found a \(t.rawValue)") }
            return (.not(e), .bool)
        case .and(let a, let b), .or(let a, let b):
            let (ea, ta) = try check(a)
            let (eb, tb) = try check(b)
            guard ta == .bool else { throw RuleError(a.location, "expected a condition, found a \(ta.rawValue)") }
            guard tb == .bool else { throw RuleError(b.location, "expected a condition, found a \(tb.rawValue)") }
            if case .and = s { return (.and(ea, eb), .bool) }
            return (.or(ea, eb), .bool)
        case .compare(let op, .call(let f, let args, let fl), .name(let n, let nl), let l) where f == "rfm" || f == "lifecycle":
            return try category(op, f, args, fl, n, nl, l)
        case .compare(let op, .name(let n, let nl), .call(let f, let args, let fl), let l) where f == "rfm" || f == "lifecycle":
            return try category(op, f, args, fl, n, nl, l)
        case .compare(let op, let a, let b, let l):
            let (ea, ta) = try check(a)
            let (eb, tb) = try check(b)
            let ok: Bool
            switch (ta, tb) {
            case (.number, .number), (.money, .money), (.money, .number), (.number, .money),
                 (.duration, .duration), (.time, .time): ok = true
            case (.bool, .bool): ok = op == .eq || op == .ne
            default: ok = false
            }
            guard ok else { throw RuleError(l, "cannot compare a \(ta.rawValue) with a \(tb.rawValue)") }
            // The engine predicts when `since(...)` crosses a threshold only for fixed thresholds.
            switch (ea, eb) {
            case (.since, .constant(.duration)), (.constant(.duration), .since): break
            case (.since, _), (_, .since):
                throw RuleError(l, "since(...) must be compared with a fixed duration such as 14d")
            default: break
            }
            return (.compare(op, ea, eb), .bool)
        case .call(let name, let args, let l):
            return try call(name, args, l)
        }
    }

    /// `rfm() == important_value`, `lifecycle() != churned`: the name must be a class or stage.
    private func category(_ op: CompareOp, _ f: String, _ args: [RuleSyntax.Argument], _ fl: SourceLocation,
                          _ n: String, _ nl: SourceLocation, _ l: SourceLocation) throws(RuleError) -> (RuleExpr, RuleType) {
        guard args.isEmpty else { throw RuleError(fl, "\(f) takes no arguments") }
        guard op == .eq || op == .ne else { throw RuleError(l, "\(f)() can only be compared with == or !=") }
        if f == "rfm" {
            guard let c = RFMClass(name: n) else {
                throw RuleError(nl, "unknown RFM class '\(n)'; expected one of \(RFMClass.allCases.map { "\($0.name) (\($0.chineseName))" }.joined(separator: ", "))")
            }
            return (.compare(op, .rfm, .constant(.number(Double(c.rawValue)))), .bool)
        }
        guard let st = LifecycleStage(name: n) else {
            throw RuleError(nl, "unknown lifecycle stage '\(n)'; expected one of \(LifecycleStage.allCases.map(\.name).joined(separator: ", "))")
        }
        return (.compare(op, .lifecycle, .constant(.number(Double(st.rawValue)))), .bool)
    }

    private mutating func call(_ name: String, _ args: [RuleSyntax.Argument], _ l: SourceLocation) throws(RuleError) -> (RuleExpr, RuleType) {
        func arity(_ n: Int, _ usage: String) throws(RuleError) {
            guard args.filter({ $0.label == nil }).count == n else { throw RuleError(l, "\(name) takes \(usage)") }
        }
        func eventType(_ a: RuleSyntax.Argument) throws(RuleError) -> EventType {
            guard a.label == nil, case .name(let n, let al) = a.value else {
                throw RuleError(a.value.location, "expected an event type such as purchase")
            }
            guard let t = EventType(name: n) else {
                throw RuleError(al, "unknown event type '\(n)'; expected one of \(EventType.allCases.map(\.name).joined(separator: ", "))")
            }
            return t
        }
        /// A window over `type` (nil: over every type, as `owned_share` counts) must fit in what
        /// is kept: the longest window, and each type's `aggregates.keep`.
        func window(_ a: RuleSyntax.Argument, over type: EventType?) throws(RuleError) -> Int64 {
            guard a.label == nil, case .duration(let ms, let al) = a.value else {
                throw RuleError(a.value.location, "expected a window such as 30d")
            }
            if let p = AggregateConfig.problem(windowMs: ms) { throw RuleError(al, p) }
            let longest = config.windowsMs.max() ?? 0
            guard ms <= longest else {
                throw RuleError(al, "window \(DurationText.format(ms)) is longer than the longest retained window \(DurationText.format(longest)) (aggregates.windows)")
            }
            if let type {
                let kept = config.keptMs(type)
                guard ms <= kept else {
                    throw RuleError(al, kept == 0
                        ? "no buckets are kept for \(type.name) (aggregates.keep.\(type.name) is 0), so it has no windows"
                        : "window \(DurationText.format(ms)) is longer than \(type.name) is kept (\(DurationText.format(kept)); set aggregates.keep.\(type.name) to keep it longer)")
                }
            } else {
                let short = config.shorterKept.filter { $0.1 > 0 && $0.1 < ms }
                guard short.isEmpty else {
                    throw RuleError(al, "window \(DurationText.format(ms)) counts every event type, and "
                        + short.map { "\($0.0.name) is kept \(DurationText.format($0.1))" }.joined(separator: ", ")
                        + " (aggregates.keep)")
                }
            }
            return ms
        }
        func channel() throws(RuleError) -> UInt8? {
            var found: UInt8? = nil
            for a in args where a.label != nil {
                guard a.label == "channel", case .name(let c, let cl) = a.value else {
                    throw RuleError(a.value.location, "unknown argument '\(a.label!)'; only channel= is allowed here")
                }
                guard channels.isKnown(c) else {
                    throw RuleError(cl, "unknown channel '\(c)'; configured channels: \(channels.names.dropFirst().joined(separator: ", "))")
                }
                found = channels.index(of: c)
            }
            return found
        }
        let positional = args.filter { $0.label == nil }
        switch name {
        case "count", "sum":
            try arity(2, "(event_type, window[, channel=name])")
            let t = try eventType(positional[0])
            let w = try window(positional[1], over: t)
            let c = try channel()
            return name == "count" ? (.count(t, windowMs: w, channel: c), .number) : (.sum(t, windowMs: w, channel: c), .money)
        case "orders":
            try arity(0, "no arguments")
            return (.orders, .number)
        case "spend", "ltv":
            try arity(0, "no arguments")
            return (.spend, .money)
        case "first", "last":
            guard args.count <= 1 else { throw RuleError(l, "\(name) takes (event_type) or nothing for any event") }
            let t = try args.first.map { a throws(RuleError) in try eventType(a) }
            return (name == "first" ? .first(t) : .last(t), .time)
        case "since":
            try arity(1, "(time), e.g. since(last(page_view))")
            let (e, t) = try check(positional[0].value)
            guard t == .time else { throw RuleError(positional[0].value.location, "since needs a time such as last(page_view), found a \(t.rawValue)") }
            return (.since(e), .duration)
        case "distinct_channels":
            try arity(0, "no arguments")
            return (.distinctChannels, .number)
        case "owned_share":
            try arity(1, "(window)")
            return (.ownedShare(windowMs: try window(positional[0], over: nil)), .number)
        case "rfm", "lifecycle":
            throw RuleError(l, "\(name)() is compared with a name, e.g. \(name == "rfm" ? "rfm() == important_value" : "lifecycle() == dormant")")
        case "in_segment":
            guard args.count == 1, args[0].label == nil, case .name(let seg, let sl) = args[0].value else {
                throw RuleError(l, "in_segment takes (segment_name)")
            }
            guard let i = segments[seg] else { throw RuleError(sl, "unknown segment '\(seg)'") }
            references.append((i, sl))
            return (.inSegment(i), .bool)
        default:
            throw RuleError(l, "unknown function '\(name)'; expected one of \(Self.functions.joined(separator: ", "))")
        }
    }
}

/// Evaluates checked expressions.
enum RuleEvaluator {
    static func value(_ e: RuleExpr, _ c: RuleContext) -> RuleValue {
        switch e {
        case .constant(let v): return v
        case .count(let t, let w, let ch): return .number(Double(c.aggregates.count(t, window: w, at: c.now, channel: ch)))
        case .sum(let t, let w, let ch): return .money(c.aggregates.sum(t, window: w, at: c.now, channel: ch).units)
        case .orders: return .number(Double(c.aggregates.lifetimeOrders))
        case .spend: return .money(c.aggregates.lifetimeSpend)
        case .first(let t):
            let v = t.map { c.aggregates.first($0) } ?? c.aggregates.firstSeen
            return v.map { .time($0) } ?? .missing
        case .last(let t):
            let v = t.map { c.aggregates.last($0) } ?? c.aggregates.lastSeen
            return v.map { .time($0) } ?? .missing
        case .since(let inner):
            if case .time(let ms) = value(inner, c) { return .duration(c.now - ms) }
            return .missing
        case .distinctChannels: return .number(Double(c.aggregates.distinctChannels))
        case .ownedShare(let w): return c.aggregates.ownedShare(window: w, at: c.now, channels: c.channels).map { .number($0) } ?? .missing
        case .inSegment(let i): return .bool(c.memberships & (1 << UInt64(i)) != 0)
        case .rfm: return .text(RFMClass.of(c.aggregates, at: c.now, c.models).name)
        case .lifecycle:
            return LifecycleStage.of(c.aggregates, returnedAtMs: c.returnedAtMs, at: c.now, c.models).map { .text($0.name) } ?? .missing
        case .not(let inner):
            if case .bool(let b) = value(inner, c) { return .bool(!b) }
            return .bool(false)
        case .and(let a, let b):
            guard case .bool(true) = value(a, c) else { return .bool(false) }
            return value(b, c) == .bool(true) ? .bool(true) : .bool(false)
        case .or(let a, let b):
            if case .bool(true) = value(a, c) { return .bool(true) }
            return value(b, c) == .bool(true) ? .bool(true) : .bool(false)
        case .compare(let op, .rfm, .constant(.number(let code))):
            let v = Double(RFMClass.of(c.aggregates, at: c.now, c.models).rawValue)
            return .bool(compare(op, .number(v), .number(code)))
        case .compare(let op, .lifecycle, .constant(.number(let code))):
            guard let st = LifecycleStage.of(c.aggregates, returnedAtMs: c.returnedAtMs, at: c.now, c.models) else { return .bool(false) }
            return .bool(compare(op, .number(Double(st.rawValue)), .number(code)))
        case .compare(let op, let a, let b):
            return .bool(compare(op, value(a, c), value(b, c)))
        }
    }

    static func compare(_ op: CompareOp, _ a: RuleValue, _ b: RuleValue) -> Bool {
        let x: Double, y: Double
        switch (a, b) {
        case (.missing, _), (_, .missing): return false
        case (.number(let p), .number(let q)): x = p; y = q
        case (.money(let p), .money(let q)): x = Double(p); y = Double(q)
        case (.money(let p), .number(let q)): x = Double(p); y = (q * Double(Money.scale)).rounded()
        case (.number(let p), .money(let q)): x = (p * Double(Money.scale)).rounded(); y = Double(q)
        case (.duration(let p), .duration(let q)), (.time(let p), .time(let q)): x = Double(p); y = Double(q)
        case (.bool(let p), .bool(let q)): x = p ? 1 : 0; y = q ? 1 : 0
        default: return false
        }
        return op.holds(x, y)
    }
}

/// The memory one evaluation works in: the window terms' counts, sums and first hours, each
/// comparison's truth, the rule programs' value stack, the flip timing's nodes and the row of
/// next flips. The engine allocates it once per configuration: allocated on the stack for every
/// evaluation (six `withUnsafeTemporaryAllocation`s, each ~30 instructions with its closure) it
/// cost ~3% of the engine's instructions. Not shared: each engine (thread) has its own.
struct EvaluationScratch {
    let counts: UnsafeMutableBufferPointer<Int64>
    let sums: UnsafeMutableBufferPointer<Int64>
    let from: UnsafeMutableBufferPointer<UInt32>
    let truths: UnsafeMutablePointer<Bool>
    let stack: UnsafeMutableBufferPointer<Double>
    let nodes: UnsafeMutablePointer<(truth: Bool, needed: Bool, at: Int64)>
    /// One entry per segment (`Engine.evaluate`'s decoded row of next flips).
    let flips: UnsafeMutableBufferPointer<Int64>

    private typealias Node = (truth: Bool, needed: Bool, at: Int64)

    /// Element counts of each part for `set`, in the order they are laid out.
    private static func sizes(_ set: SegmentSet) -> (terms: Int, atoms: Int, depth: Int, nodes: Int, segments: Int) {
        let c = set.compiled
        return (max(c.windowTerms.count, 1), max(c.table.atomCount, 1), max(c.table.maxDepth, 1), max(c.flip.nodes.count, 1),
                max(c.segments.count, 1))
    }

    /// Bytes for `set`'s scratch: every part 8-byte aligned in one block.
    private static func byteCount(_ set: SegmentSet) -> Int {
        let n = sizes(set)
        @inline(__always) func words(_ bytes: Int) -> Int { (bytes + 7) / 8 * 8 }
        return words(3 * 8 * n.terms) + words(n.atoms) + 8 * n.depth + MemoryLayout<Node>.stride * n.nodes + 8 * n.segments
    }

    /// The parts laid out in `raw` (at least `byteCount(set)` bytes, 8-byte aligned).
    private init(for set: SegmentSet, in raw: UnsafeMutableRawPointer) {
        let n = Self.sizes(set)
        var at = raw
        func take<T>(_ type: T.Type, _ count: Int) -> UnsafeMutablePointer<T> {
            let p = at.bindMemory(to: T.self, capacity: count)
            at += (MemoryLayout<T>.stride * count + 7) / 8 * 8
            return p
        }
        counts = UnsafeMutableBufferPointer(start: take(Int64.self, n.terms), count: n.terms)
        sums = UnsafeMutableBufferPointer(start: take(Int64.self, n.terms), count: n.terms)
        from = UnsafeMutableBufferPointer(start: take(UInt32.self, n.terms), count: n.terms)
        truths = take(Bool.self, n.atoms)
        stack = UnsafeMutableBufferPointer(start: take(Double.self, n.depth), count: n.depth)
        nodes = take(Node.self, n.nodes)
        flips = UnsafeMutableBufferPointer(start: take(Int64.self, n.segments), count: n.segments)
    }

    /// A scratch of its own for an engine (`deallocate` when done).
    init(for set: SegmentSet) {
        self.init(for: set, in: .allocate(byteCount: Self.byteCount(set), alignment: 8))
    }

    func deallocate() { UnsafeMutableRawPointer(counts.baseAddress!).deallocate() }

    /// A scratch on the stack for one call.
    static func withTemporary<R>(for set: SegmentSet, _ body: (EvaluationScratch) -> R) -> R {
        withUnsafeTemporaryAllocation(byteCount: byteCount(set), alignment: 8) { raw in
            body(EvaluationScratch(for: set, in: raw.baseAddress!))
        }
    }
}
