/// When can a rule's value change with no new event? Only where a time-dependent part of it
/// steps: a bucket entering or leaving a window, or a `since(...)` crossing one of the durations
/// the rule compares it with. `nextChange` returns the earliest such instant after `t`; the engine
/// arms a timer there and re-evaluates. Every real flip is at one of these instants, so flips
/// happen exactly on time; an instant where nothing flips costs one evaluation.
enum RuleTiming {
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
        func mirror(_ op: CompareOp) -> CompareOp {
            switch op {
            case .lt: return .gt
            case .le: return .ge
            case .gt: return .lt
            case .ge: return .le
            case .eq, .ne: return op
            }
        }
        func walk(_ e: RuleExpr) {
            switch e {
            case .compare(let op, .since, .constant(.duration(let d))): offsets(op, d)
            case .compare(let op, .constant(.duration(let d)), .since): offsets(mirror(op), d)
            case .compare(_, let a, let b), .and(let a, let b), .or(let a, let b): walk(a); walk(b)
            case .not(let a): walk(a)
            default: break
            }
        }
        walk(e)
        return Array(Set(out)).sorted()
    }

    static func nextChange(_ e: RuleExpr, _ a: CustomerAggregates, after t: Int64, durations: [Int64]) -> Int64 {
        var best = Int64.max
        @inline(__always) func consider(_ x: Int64) { if x > t && x < best { best = x } }
        func windowEdges(_ w: Int64, type: UInt8?, channel: UInt8?) {
            for b in a.buckets where (type == nil || b.type == type!) && (channel == nil || b.channel == channel!) {
                let h = Int64(b.hour)
                if w <= AggregateConfig.hourlyLimitMs {
                    consider(h * AggregateConfig.hourMs)                                   // enters
                    consider((h + w / AggregateConfig.hourMs) * AggregateConfig.hourMs)    // leaves
                } else {
                    let day = h / 24
                    consider(day * AggregateConfig.dayMs)
                    consider((day + w / AggregateConfig.dayMs) * AggregateConfig.dayMs)
                }
            }
        }
        func walk(_ e: RuleExpr) {
            switch e {
            case .count(let type, let w, let ch), .sum(let type, let w, let ch):
                windowEdges(w, type: type.rawValue, channel: ch)
            case .ownedShare(let w):
                windowEdges(w, type: nil, channel: nil)
            case .since(let inner):
                let time: Int64?
                switch inner {
                case .first(let type): time = type.map { a.first($0) } ?? a.firstLast.lazy.filter { $0.key < 64 }.map(\.first).min()
                case .last(let type): time = type.map { a.last($0) } ?? a.lastSeen
                default: time = nil
                }
                if let ms = time {
                    for d in durations { consider(ms + d) }
                }
            case .not(let x): walk(x)
            case .compare(_, let x, let y), .and(let x, let y), .or(let x, let y): walk(x); walk(y)
            default: break
            }
        }
        walk(e)
        return best
    }
}

/// Explains a decision: every comparison of the rule, its left side as written and its value.
public enum RuleExplainer {
    static func values(_ e: RuleExpr, _ c: RuleContext, names: [String]) -> [(String, RuleValue)] {
        var out: [(String, RuleValue)] = []
        func walk(_ e: RuleExpr) {
            switch e {
            case .compare(_, let a, let b):
                for side in [a, b] {
                    if case .constant = side { continue }
                    out.append((render(side, c, names), RuleEvaluator.value(side, c)))
                }
            case .inSegment:
                out.append((render(e, c, names), RuleEvaluator.value(e, c)))
            case .not(let x): walk(x)
            case .and(let x, let y), .or(let x, let y): walk(x); walk(y)
            default: break
            }
        }
        walk(e)
        return out
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
        case .compare(let op, let a, let b): return "\(render(a, c)) \(op.rawValue) \(render(b, c))"
        case .and(let a, let b): return "(\(render(a, c)) and \(render(b, c)))"
        case .or(let a, let b): return "(\(render(a, c)) or \(render(b, c)))"
        case .not(let a): return "not \(render(a, c))"
        }
    }
}
