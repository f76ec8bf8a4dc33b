/// The variable-size part of one customer's aggregates in a single allocation: recent event ids,
/// first/last times, orders and buckets, one section after the other in one array of words
/// (the buckets as `BucketWords`: one or two words each).
///
/// Four arrays cost a typical customer (~4 events) four allocations, four 32-byte array headers
/// and malloc's 16 bytes each, plus each array's own slack; one array of words costs one of each,
/// and an event's state is one object to fetch instead of four. Every element type is a whole
/// number of 8-byte words with 8-byte alignment, so each section is a typed view of its words
/// (`withMemoryRebound`).
///
/// The sections' order follows how they grow: recent ids fill up to the dedupe depth and then
/// shift in place; first/last keys are added only for a new type or channel; orders come with
/// purchases; buckets come last, since most events add one and appending there moves nothing.
struct AggregateSections: Sendable {
    enum Section: Int {
        case recentIDs, firstLast, orders, buckets

        /// Words per element (the bucket section counts words: a bucket takes one or two).
        @inline(__always) var width: Int {
            switch self {
            case .buckets: return 1
            case .recentIDs, .firstLast, .orders: return 2
            }
        }
    }

    private(set) var words: [UInt64] = []
    private(set) var bucketWords: UInt32 = 0
    private(set) var orderCount: UInt32 = 0
    private(set) var firstLastCount: UInt8 = 0
    private(set) var recentIDCount: UInt8 = 0

    init() {}

    @inline(__always) func count(_ s: Section) -> Int {
        switch s {
        case .recentIDs: return Int(recentIDCount)
        case .firstLast: return Int(firstLastCount)
        case .orders: return Int(orderCount)
        case .buckets: return Int(bucketWords)
        }
    }

    /// First word of section `s`.
    @inline(__always) func start(_ s: Section) -> Int {
        let fl = 2 * Int(recentIDCount)
        switch s {
        case .recentIDs: return 0
        case .firstLast: return fl
        case .orders: return fl + 2 * Int(firstLastCount)
        case .buckets: return fl + 2 * Int(firstLastCount) + 2 * Int(orderCount)
        }
    }

    private mutating func setCount(_ s: Section, _ n: Int) {
        switch s {
        case .recentIDs: recentIDCount = UInt8(n)
        case .firstLast: firstLastCount = UInt8(n)
        case .orders: orderCount = UInt32(n)
        case .buckets: bucketWords = UInt32(n)
        }
    }

    // MARK: - Typed views

    // Each view is the section's first word rebound to the element type, with no slice of the
    // array in between (a slice's bounds check and the extra closure cost ~15 instructions per
    // view, and the rules read buckets and first/last times several times per event).

    @inline(__always)
    func read<T, R>(_ s: Section, as: T.Type, _ body: (UnsafeBufferPointer<T>) throws -> R) rethrows -> R {
        let from = start(s), n = count(s)
        return try words.withUnsafeBufferPointer { w in
            guard n > 0, let base = w.baseAddress else { return try body(UnsafeBufferPointer(start: nil, count: 0)) }
            return try (base + from).withMemoryRebound(to: T.self, capacity: n) { try body(UnsafeBufferPointer(start: $0, count: n)) }
        }
    }

    @inline(__always)
    mutating func modify<T, R>(_ s: Section, as: T.Type, _ body: (UnsafeMutableBufferPointer<T>) throws -> R) rethrows -> R {
        let from = start(s), n = count(s)
        return try words.withUnsafeMutableBufferPointer { w in
            guard n > 0, let base = w.baseAddress else { return try body(UnsafeMutableBufferPointer(start: nil, count: 0)) }
            return try (base + from).withMemoryRebound(to: T.self, capacity: n) {
                try body(UnsafeMutableBufferPointer(start: $0, count: n))
            }
        }
    }

    func array<T>(_ s: Section, as: T.Type) -> [T] { read(s, as: T.self) { Array($0) } }

    // MARK: - Changes

    /// Inserts `value` as element `i` of section `s` (`i == count(s)` appends to the section).
    @inline(__always)
    mutating func insert<T>(_ value: T, in s: Section, at i: Int) {
        assert(MemoryLayout<T>.stride == 8 * s.width && i >= 0 && i <= count(s))
        let w = s.width
        let at = start(s) + i * w
        let old = words.count
        grow(to: old + w)
        for _ in 0..<w { words.append(0) }
        words.withUnsafeMutableBufferPointer { p in
            let base = UnsafeMutableRawPointer(p.baseAddress!)
            if at < old { (base + 8 * (at + w)).copyMemory(from: base + 8 * at, byteCount: 8 * (old - at)) }
            (base + 8 * at).storeBytes(of: value, as: T.self)
        }
        setCount(s, count(s) + 1)
    }

    @inline(__always)
    mutating func append<T>(_ value: T, to s: Section) { insert(value, in: s, at: count(s)) }

    /// Drops the first element of section `s` and appends `value` in its place at the end: the
    /// section keeps its size and nothing after it moves (a full window of recent ids).
    @inline(__always)
    mutating func rotate<T>(_ value: T, in s: Section) {
        let n = count(s)
        assert(MemoryLayout<T>.stride == 8 * s.width && n > 0)
        let w = s.width, from = start(s)
        words.withUnsafeMutableBufferPointer { p in
            let base = UnsafeMutableRawPointer(p.baseAddress! + from)
            if n > 1 { base.copyMemory(from: base + 8 * w, byteCount: 8 * w * (n - 1)) }
            (base + 8 * w * (n - 1)).storeBytes(of: value, as: T.self)
        }
    }

    /// Removes `k` elements of section `s` from element `i` on.
    mutating func remove(_ s: Section, at i: Int, count k: Int = 1) {
        guard k > 0 else { return }
        assert(i >= 0 && i + k <= count(s))
        let w = s.width
        let at = start(s) + i * w, gone = k * w
        let old = words.count
        if at + gone < old {
            words.withUnsafeMutableBufferPointer { p in
                let base = UnsafeMutableRawPointer(p.baseAddress!)
                (base + 8 * at).copyMemory(from: base + 8 * (at + gone), byteCount: 8 * (old - at - gone))
            }
        }
        words.removeLast(gone)
        setCount(s, count(s) - k)
    }

    /// Keeps the elements of section `s` for which `included` holds, in their order. Reads first:
    /// when every element stays (the usual case) nothing is written.
    @inline(__always)
    mutating func keep<T>(_ s: Section, as: T.Type, where included: (T) -> Bool) {
        guard let first = read(s, as: T.self, { $0.firstIndex { !included($0) } }) else { return }
        let kept = modify(s, as: T.self) { e -> Int in
            var n = first
            for k in (first + 1)..<e.count where included(e[k]) {
                e[n] = e[k]
                n += 1
            }
            return n
        }
        truncate(s, to: kept)
    }

    /// Keeps the first `n` elements of section `s`.
    mutating func truncate(_ s: Section, to n: Int) {
        if n < count(s) { remove(s, at: n, count: count(s) - n) }
    }

    /// Room for exactly `extra` more words (a decoder about to append a known number of
    /// elements).
    mutating func reserve(extraWords extra: Int) {
        if words.count + extra > words.capacity { words.reserveCapacity(words.count + extra) }
    }

    /// Gives back the room for growth when it is more than a few words (a restored customer
    /// takes only what it holds).
    mutating func shrinkToFit() {
        guard words.capacity > words.count + 4 else { return }
        let old = words
        words = Array(unsafeUninitializedCapacity: old.count) { buf, n in
            _ = buf.initialize(from: old)
            n = old.count
        }
    }

    /// Grows a full array by an eighth instead of Swift's doubling (state per customer is what
    /// bounds how many customers fit in memory). The first allocation has room for a typical
    /// customer (~4 events: 4 recent ids, ~7 first/last keys, ~4 buckets, perhaps an order: ~28
    /// words), so that most customers allocate once.
    ///
    /// A quarter left a 50-event customer 120 bytes of unused room on average; an eighth leaves
    /// 59 (`BENCH_ONLY=heavy tidepool-bench`), for about twice as many moves while it grows: ~16
    /// copies of at most ~1.3 KB over its 50 events.
    @inline(__always)
    private mutating func grow(to needed: Int) {
        let cap = words.capacity
        guard needed > cap else { return }
        words.reserveCapacity(Swift.max(needed, cap == 0 ? 28 : cap + Swift.max(cap / 8, 4)))
    }
}
