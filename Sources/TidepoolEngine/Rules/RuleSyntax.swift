/// The segment rule language: small, readable, checked when loaded.
///
///     count(purchase, 90d) >= 2 and since(last(page_view)) > 14d
///     sum(purchase, 365d) >= 1000 or in_segment(vip)
///     not in_segment(churn_risk) and owned_share(30d) < 0.3
///
/// Grammar (lowest precedence first):
///
///     rule       := or
///     or         := and ("or" and)*
///     and        := unary ("and" unary)*
///     unary      := "not" unary | comparison
///     comparison := primary (("<" | "<=" | ">" | ">=" | "==" | "!=") primary)?
///     primary    := NUMBER | DURATION | "true" | "false" | NAME | call | "(" or ")"
///     call       := NAME "(" [arg ("," arg)*] ")"
///     arg        := or | NAME "=" NAME
///
/// NUMBER is decimal (`2`, `0.3`, `129.90`); DURATION is an integer with ms, s, m, h or d.
public struct SourceLocation: Sendable, Equatable, CustomStringConvertible {
    public var line: Int
    public var column: Int
    public init(line: Int, column: Int) { self.line = line; self.column = column }
    public var description: String { "\(line):\(column)" }
}

/// A problem in a rule, at a line and column of the rule text (1-based).
public struct RuleError: Error, Sendable, Equatable, CustomStringConvertible {
    public var location: SourceLocation
    public var message: String
    public init(_ location: SourceLocation, _ message: String) { self.location = location; self.message = message }
    public var description: String { "\(location): \(message)" }
}

public indirect enum RuleSyntax: Sendable, Equatable {
    case number(Double, SourceLocation)
    case duration(Int64, SourceLocation)
    case boolean(Bool, SourceLocation)
    case name(String, SourceLocation)
    case call(String, [Argument], SourceLocation)
    case compare(CompareOp, RuleSyntax, RuleSyntax, SourceLocation)
    case and(RuleSyntax, RuleSyntax)
    case or(RuleSyntax, RuleSyntax)
    case not(RuleSyntax, SourceLocation)

    public struct Argument: Sendable, Equatable {
        public var label: String?
        public var value: RuleSyntax
    }

    public var location: SourceLocation {
        switch self {
        case .number(_, let l), .duration(_, let l), .boolean(_, let l), .name(_, let l), .call(_, _, let l),
             .compare(_, _, _, let l), .not(_, let l): return l
        case .and(let a, _), .or(let a, _): return a.location
        }
    }
}

public enum CompareOp: String, Sendable, Equatable {
    case lt = "<", le = "<=", gt = ">", ge = ">=", eq = "==", ne = "!="

    /// `x op y` in the rule language: every comparison with a missing value (NaN) is false.
    @inline(__always)
    func holds(_ x: Double, _ y: Double) -> Bool {
        switch self {
        case .lt: return x < y
        case .le: return x <= y
        case .gt: return x > y
        case .ge: return x >= y
        case .eq: return x == y
        case .ne: return x != y && !x.isNaN && !y.isNaN
        }
    }

    /// The operator with its sides swapped: `a < b` is `b > a`.
    var mirrored: CompareOp {
        switch self {
        case .lt: return .gt
        case .le: return .ge
        case .gt: return .lt
        case .ge: return .le
        case .eq, .ne: return self
        }
    }
}

/// Tokenizer and recursive-descent parser for rule text.
public struct RuleParser {
    enum Token: Equatable {
        case number(Double), duration(Int64), name(String), symbol(String), end
        var text: String {
            switch self {
            case .number(let v): return v == v.rounded() ? String(Int64(v)) : String(v)
            case .duration(let ms): return "\(ms)ms"
            case .name(let n): return "'\(n)'"
            case .symbol(let s): return "'\(s)'"
            case .end: return "end of rule"
            }
        }
    }

    private var tokens: [(Token, SourceLocation)] = []
    private var pos = 0

    /// Parses `text`. `origin` is where the text starts in its file (for YAML block scalars the
    /// rule's first line); locations in errors are file positions.
    /// `continuationIndent` is added to columns of the text's second and later lines (a YAML block
    /// scalar's indentation, which YAML removes from the text).
    public static func parse(_ text: String, origin: SourceLocation = SourceLocation(line: 1, column: 1),
                             continuationIndent: Int = 0) throws(RuleError) -> RuleSyntax {
        var p = RuleParser()
        try p.tokenize(text, origin: origin, continuationIndent: continuationIndent)
        let expr = try p.parseOr()
        guard case .end = p.peek else { throw p.expected("'and', 'or' or the end of the rule") }
        return expr
    }

    private mutating func tokenize(_ text: String, origin: SourceLocation, continuationIndent: Int) throws(RuleError) {
        let b = Array(text.utf8)
        var i = 0
        var line = origin.line, lineStart = 0, firstLine = true
        func loc(_ at: Int) -> SourceLocation {
            SourceLocation(line: line, column: (firstLine ? origin.column - 1 : continuationIndent) + (at - lineStart) + 1)
        }
        var endLoc = loc(0)
        func add(_ t: Token, _ start: Int, _ end: Int) {
            tokens.append((t, loc(start)))
            endLoc = loc(end)
        }
        while i < b.count {
            let c = b[i]
            if c == 0x0A { i += 1; line += 1; lineStart = i; firstLine = false; continue }
            if c == 0x20 || c == 0x09 || c == 0x0D { i += 1; continue }
            let start = i
            if c >= 0x30 && c <= 0x39 {
                while i < b.count && ((b[i] >= 0x30 && b[i] <= 0x39) || b[i] == 0x2E) { i += 1 }
                let numText = String(decoding: b[start..<i], as: UTF8.self)
                var unitEnd = i
                while unitEnd < b.count && b[unitEnd] >= 0x61 && b[unitEnd] <= 0x7A { unitEnd += 1 }
                if unitEnd > i {
                    let whole = String(decoding: b[start..<unitEnd], as: UTF8.self)
                    guard let ms = DurationText.parseMs(whole) else {
                        throw RuleError(loc(start), "'\(whole)' is not a duration; use an integer with ms, s, m, h or d (e.g. 14d)")
                    }
                    add(.duration(ms), start, unitEnd)
                    i = unitEnd
                } else {
                    guard let v = Double(numText) else { throw RuleError(loc(start), "'\(numText)' is not a number") }
                    add(.number(v), start, i)
                }
                continue
            }
            if (c >= 0x61 && c <= 0x7A) || (c >= 0x41 && c <= 0x5A) || c == 0x5F || c >= 0x80 {
                while i < b.count && ((b[i] >= 0x61 && b[i] <= 0x7A) || (b[i] >= 0x41 && b[i] <= 0x5A) || b[i] == 0x5F
                                      || (b[i] >= 0x30 && b[i] <= 0x39) || b[i] >= 0x80) { i += 1 }
                add(.name(String(decoding: b[start..<i], as: UTF8.self)), start, i)
                continue
            }
            let two = i + 1 < b.count ? String(decoding: b[i...(i + 1)], as: UTF8.self) : ""
            if ["<=", ">=", "==", "!="].contains(two) {
                add(.symbol(two), start, i + 2)
                i += 2
                continue
            }
            if "()<>,=".utf8.contains(c) {
                add(.symbol(String(UnicodeScalar(c))), start, i + 1)
                i += 1
                continue
            }
            throw RuleError(loc(start), "unexpected character '\(String(decoding: [c], as: UTF8.self))'")
        }
        // "End of rule" is reported just after the last token, not after trailing blank lines.
        tokens.append((.end, endLoc))
    }

    private var peek: Token { tokens[pos].0 }
    private var here: SourceLocation { tokens[pos].1 }

    private func expected(_ what: String) -> RuleError {
        RuleError(here, "expected \(what), found \(peek.text)")
    }

    private mutating func isKeyword(_ k: String) -> Bool {
        if case .name(let n) = peek, n == k { return true }
        return false
    }

    private mutating func parseOr() throws(RuleError) -> RuleSyntax {
        var lhs = try parseAnd()
        while isKeyword("or") {
            pos += 1
            lhs = .or(lhs, try parseAnd())
        }
        return lhs
    }

    private mutating func parseAnd() throws(RuleError) -> RuleSyntax {
        var lhs = try parseUnary()
        while isKeyword("and") {
            pos += 1
            lhs = .and(lhs, try parseUnary())
        }
        return lhs
    }

    private mutating func parseUnary() throws(RuleError) -> RuleSyntax {
        if isKeyword("not") {
            let l = here
            pos += 1
            return .not(try parseUnary(), l)
        }
        let lhs = try parsePrimary()
        if case .symbol(let s) = peek, let op = CompareOp(rawValue: s) {
            let l = here
            pos += 1
            return .compare(op, lhs, try parsePrimary(), l)
        }
        return lhs
    }

    private mutating func parsePrimary() throws(RuleError) -> RuleSyntax {
        let l = here
        switch peek {
        case .number(let v):
            pos += 1
            return .number(v, l)
        case .duration(let ms):
            pos += 1
            return .duration(ms, l)
        case .symbol("("):
            pos += 1
            let e = try parseOr()
            guard case .symbol(")") = peek else { throw expected("')'") }
            pos += 1
            return e
        case .name(let n):
            if ["and", "or", "not"].contains(n) { throw expected("a value, a function call or '('") }
            pos += 1
            if n == "true" || n == "false" { return .boolean(n == "true", l) }
            guard case .symbol("(") = peek else { return .name(n, l) }
            pos += 1
            var args: [RuleSyntax.Argument] = []
            if case .symbol(")") = peek {
                pos += 1
                return .call(n, args, l)
            }
            while true {
                if case .name(let label) = peek, pos + 1 < tokens.count, tokens[pos + 1].0 == .symbol("=") {
                    let vl = tokens[pos + 2].1
                    pos += 2
                    guard case .name(let v) = peek else { throw expected("a name after '\(label)='") }
                    pos += 1
                    args.append(.init(label: label, value: .name(v, vl)))
                } else {
                    args.append(.init(label: nil, value: try parseOr()))
                }
                if case .symbol(",") = peek { pos += 1; continue }
                guard case .symbol(")") = peek else { throw expected("',' or ')'") }
                pos += 1
                return .call(n, args, l)
            }
        default:
            throw expected("a value, a function call or '('")
        }
    }
}

/// Duration text shared by rules and configuration: an integer followed by ms, s, m, h or d.
public enum DurationText {
    public static func parseMs(_ s: String) -> Int64? {
        let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]
        for (suffix, factor) in units where s.hasSuffix(suffix) {
            let num = s.dropLast(suffix.count)
            if let v = Int64(num), v >= 0, v <= Int64.max / factor { return v * factor }
        }
        return nil
    }

    /// `14d`, `36h`, `90m`, `45s`, `250ms`: the largest unit that divides exactly.
    public static func format(_ ms: Int64) -> String {
        for (suffix, factor) in [("d", Int64(86_400_000)), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] where ms != 0 && ms % factor == 0 {
            return "\(ms / factor)\(suffix)"
        }
        return "\(ms)ms"
    }
}
