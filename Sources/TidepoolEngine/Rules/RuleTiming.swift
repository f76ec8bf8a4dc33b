/// When can a rule's value change with no new event? Only where a time-dependent part of it
/// steps: a bucket entering or leaving a window, or a `since(...)` crossing one of the durations
/// the rule compares it with. `nextChange` returns the earliest such instant after `t`; the engine
/// arms a timer there and re-evaluates. Every real flip is at one of these instants, so flips
/// happen exactly on time; an instant where nothing flips costs one evaluation.
enum RuleTiming {
    /// The time-dependent parts of one or more rules, deduplicated, for a single pass over a
    /// customer's buckets.
    struct Terms: Sendable, Equatable {
        struct Window: Hashable, Sendable {
            var windowMs: Int64
            var type: Int16      // -1: any
            var channel: Int16   // -1: any
        }
        struct Since: Hashable, Sendable {
            var last: Bool
            var type: Int16      // -1: any
            var offsets: [Int64]
        }
        var windows: [Window] = []
        /// Indices into `windows` that apply to each event type (its own and the any-type ones),
        /// in window order.
        private var windowsByType = IndicesByEventType()
        var since: [Since] = []
        /// Set when a rule uses lifecycle(): the stage also changes `recalledForMs` after a return.
        var recalledForMs: Int64? = nil

        init(_ exprs: [RuleExpr], models m: ModelConfig = ModelConfig()) {
            var w = Set<Window>()
            var s = Set<Since>()
            for e in exprs {
                let offsets = RuleTiming.durations(in: e)
                func walk(_ e: RuleExpr) {
                    switch e {
                    case .count(let t, let win, let c), .sum(let t, let win, let c):
                        w.insert(Window(windowMs: win, type: Int16(t.rawValue), channel: c.map { Int16($0) } ?? -1))
                    case .ownedShare(let win): w.insert(Window(windowMs: win, type: -1, channel: -1))
                    case .rfm:
                        w.insert(Window(windowMs: m.lookbackMs, type: Int16(EventType.purchase.rawValue), channel: -1))
                        s.insert(Since(last: true, type: Int16(EventType.purchase.rawValue), offsets: [m.recencyMs + 1]))
                    case .lifecycle:
                        s.insert(Since(last: true, type: -1, offsets: [m.dormantAfterMs + 1, m.churnedAfterMs + 1]))
                        s.insert(Since(last: false, type: -1, offsets: [m.newForMs + 1]))
                        recalledForMs = m.recalledForMs
                    case .since(.first(let t)): s.insert(Since(last: false, type: t.map { Int16($0.rawValue) } ?? -1, offsets: offsets))
                    case .since(.last(let t)): s.insert(Since(last: true, type: t.map { Int16($0.rawValue) } ?? -1, offsets: offsets))
                    case .not(let x), .since(let x): walk(x)
                    case .compare(_, let x, let y), .and(let x, let y), .or(let x, let y): walk(x); walk(y)
                    default: break
                    }
                }
                walk(e)
            }
            windows = w.sorted { ($0.windowMs, $0.type, $0.channel) < ($1.windowMs, $1.type, $1.channel) }
            let all = windows
            windowsByType = IndicesByEventType(items: all.count) { all[$0].type < 0 || all[$0].type == Int16($1) }
            since = s.sorted { ($0.last ? 1 : 0, $0.type, $0.offsets.first ?? 0) < ($1.last ? 1 : 0, $1.type, $1.offsets.first ?? 0) }
        }

        /// Earliest instant after `t` at which any of these terms steps.
        @inline(__always)
        func nextChange(_ a: borrowing CustomerAggregates, after t: Int64, returnedAtMs: Int64 = .min) -> Int64 {
            var best = Int64.max
            if let r = recalledForMs, returnedAtMs != .min, returnedAtMs + r + 1 > t { best = returnedAtMs + r + 1 }
            if !windows.isEmpty {
                a.withBuckets { buckets in
                    windows.withUnsafeBufferPointer { windows in
                        windowsByType.withLists { byType in
                            for b in buckets {
                                let h = Int64(b.hour)
                                // A bucket that began by t has entered every window already. Its exit
                                // from a window grows with the window (whole hours up to 7d, whole days
                                // beyond, as `AggregateConfig.problem(windowMs:)` requires, so a day
                                // window's exit is later than any hour window's): the
                                // first window it has not yet left is the only one that matters.
                                let started = h * AggregateConfig.hourMs <= t
                                for k in byType[b.type] {
                                    let w = windows[Int(k)]
                                    guard w.channel < 0 || Int16(b.channel) == w.channel else { continue }
                                    let enter: Int64, leave: Int64
                                    if w.windowMs <= AggregateConfig.hourlyLimitMs {
                                        enter = h * AggregateConfig.hourMs
                                        leave = (h + w.windowMs / AggregateConfig.hourMs) * AggregateConfig.hourMs
                                    } else {
                                        let day = h / 24
                                        enter = day * AggregateConfig.dayMs
                                        leave = (day + w.windowMs / AggregateConfig.dayMs) * AggregateConfig.dayMs
                                    }
                                    if enter > t && enter < best { best = enter }
                                    if leave > t {
                                        if leave < best { best = leave }
                                        if started { break }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            for s in since {
                let time: Int64?
                if s.last { time = s.type < 0 ? a.lastSeen : a.last(rawKey: UInt8(s.type)) }
                else { time = s.type < 0 ? a.firstSeen : a.first(rawKey: UInt8(s.type)) }
                guard let ms = time else { continue }
                for d in s.offsets where ms + d > t && ms + d < best { best = ms + d }
            }
            return best
        }
    }

    /// Offsets after a `since(...)` time at which a comparison in the rule can flip:
    /// `since(x) > D` and `<= D` flip at x + D + 1 ms; `>= D` and `< D` at x + D; `== D` / `!= D` at both.
    static func durations(in e: RuleExpr) -> [Int64] {
        var out: [Int64] = []
        func offsets(_ op: CompareOp, _ d: Int64) {
            switch op {
            case .gt, .le: out.append(d + 1)
            case .ge, .lt: out.append(d)
            case .eq, .ne: out.append(d); out.append(d + 1)
            }
        }
        func walk(_ e: RuleExpr) {
            switch e {
            case .compare(let op, .since, .constant(.duration(let d))): offsets(op, d)
            case .compare(let op, .constant(.duration(let d)), .since): offsets(op.mirrored, d)
            case .compare(_, let a, let b), .and(let a, let b), .or(let a, let b): walk(a); walk(b)
            case .not(let a): walk(a)
            default: break
            }
        }
        walk(e)
        return Array(Set(out)).sorted()
    }

}

/// Explains a decision: every comparison of the rule, its left side as written and its value.
public enum RuleExplainer {
    /// The parts of a rule an explanation shows: each comparison's non-constant sides and each
    /// segment reference, with their text rendered once when the rule is loaded.
    static func parts(_ e: RuleExpr, names: [String]) -> [(String, RuleExpr)] {
        var out: [(String, RuleExpr)] = []
        func walk(_ e: RuleExpr) {
            switch e {
            case .compare(_, .rfm, _): out.append(("rfm()", .rfm))
            case .compare(_, .lifecycle, _): out.append(("lifecycle()", .lifecycle))
            case .compare(_, let a, let b):
                for side in [a, b] {
                    if case .constant = side { continue }
                    out.append((render(side, nil, names), side))
                }
            case .inSegment: out.append((render(e, nil, names), e))
            case .not(let x): walk(x)
            case .and(let x, let y), .or(let x, let y): walk(x); walk(y)
            default: break
            }
        }
        walk(e)
        return out
    }

    static func values(_ parts: [(String, RuleExpr)], _ c: RuleContext) -> [(String, RuleValue)] {
        parts.map { ($0.0, RuleEvaluator.value($0.1, c)) }
    }

    static func values(_ e: RuleExpr, _ c: RuleContext, names: [String]) -> [(String, RuleValue)] {
        values(parts(e, names: names), c)
    }

    /// Rule text of an expression (canonical form).
    static func render(_ e: RuleExpr, _ c: RuleContext? = nil, _ names: [String] = []) -> String {
        func render(_ e: RuleExpr, _ c: RuleContext?) -> String { RuleExplainer.render(e, c, names) }
        func ch(_ x: UInt8?) -> String { x.map { ", channel=\(c?.channels.names[Int($0)] ?? String($0))" } ?? "" }
        switch e {
        case .constant(let v): return v.description
        case .count(let t, let w, let x): return "count(\(t.name), \(DurationText.format(w))\(ch(x)))"
        case .sum(let t, let w, let x): return "sum(\(t.name), \(DurationText.format(w))\(ch(x)))"
        case .orders: return "orders()"
        case .spend: return "spend()"
        case .first(let t): return "first(\(t?.name ?? ""))"
        case .last(let t): return "last(\(t?.name ?? ""))"
        case .since(let x): return "since(\(render(x, c)))"
        case .distinctChannels: return "distinct_channels()"
        case .ownedShare(let w): return "owned_share(\(DurationText.format(w)))"
        case .inSegment(let i): return "in_segment(\(i < names.count ? names[i] : "#\(i)"))"
        case .rfm: return "rfm()"
        case .lifecycle: return "lifecycle()"
        case .compare(let op, let a, let b): return "\(render(a, c)) \(op.rawValue) \(render(b, c))"
        case .and(let a, let b): return "(\(render(a, c)) and \(render(b, c)))"
        case .or(let a, let b): return "(\(render(a, c)) or \(render(b, c)))"
        case .not(let a): return "not \(render(a, c))"
        }
    }
}
