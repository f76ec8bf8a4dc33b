/// A 4-ary min-heap of (due, customer slot): the current hour of a `TimerWheel`. Stale entries
/// are skipped when popped, so rescheduling is one push. Four children per node halve the depth
/// of a binary heap, and the four children of a node sit in one or two cache lines.
struct TimerHeap: Sendable {
    struct Entry: Sendable {
        var due: Int64
        var key: UInt64
        var slot: Int32
        @inline(__always) func before(_ o: Entry) -> Bool { due < o.due || (due == o.due && key < o.key) }
    }
    private(set) var items: [Entry] = []
    var count: Int { items.count }

    init() {}

    /// A heap holding `entries` (any order): sorted ascending, an array is already a heap.
    init(_ entries: [Entry]) {
        items = entries
        items.sort { $0.before($1) }
    }
    var peek: Entry? { items.first }

    mutating func push(_ e: Entry) {
        items.append(e)
        items.withUnsafeMutableBufferPointer { h in
            var i = h.count - 1
            while i > 0 {
                let parent = (i - 1) >> 2
                if !e.before(h[parent]) { break }
                h[i] = h[parent]
                i = parent
            }
            h[i] = e
        }
    }

    @discardableResult
    mutating func pop() -> Entry? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items.withUnsafeMutableBufferPointer { h in
                let n = h.count
                var i = 0
                while true {
                    let first = 4 * i + 1
                    if first >= n { break }
                    var m = first
                    let end = min(first + 4, n)
                    var c = first + 1
                    while c < end {
                        if h[c].before(h[m]) { m = c }
                        c += 1
                    }
                    if !h[m].before(last) { break }
                    h[i] = h[m]
                    i = m
                }
                h[i] = last
            }
        }
        return top
    }
}

/// The pending timers of a partition: hour buckets of entries, drained in order into a small
/// heap when stream time reaches them.
///
/// A single heap of millions of entries (one or more per customer) missed the cache on every
/// level of every pop: `advance` spent ~60% of its own time in the sift-down (perf, 1M
/// customers). Here a push appends to its hour's bucket, and only the current hour's entries
/// are ever in a heap. Order is the heap's: by due time, then by key, whatever the order of pushes.
///
/// The buckets of the next `ringHours` hours are a ring indexed by hour (a push is an append,
/// no hashing); later hours, and every hour before the first drain, go to a dictionary with a
/// min-heap of its hours. A dictionary for all hours cost ~400 instructions per push (SipHash of
/// the hour, callgrind), about a tenth of an event.
struct TimerWheel: Sendable {
    typealias Entry = TimerHeap.Entry
    static let bucketMs: Int64 = 3_600_000
    /// 16,384 hours (~683 days): longer than the default customer retention (400 days), so the
    /// eviction timer of every customer lands in the ring too.
    static let ringHours: Int64 = 1 << 14

    /// Entries whose hour is at or before `drainedHour`.
    private var near = TimerHeap()
    /// Entries of hours in (drainedHour, drainedHour + ringHours], at `hour & (ringHours - 1)`.
    private var ring: [[Entry]] = Array(repeating: [], count: Int(TimerWheel.ringHours))
    private var ringCount = 0
    /// Entries of later hours (and of every hour while nothing has been drained), by hour.
    private var far: [Int64: [Entry]] = [:]
    /// The hours present in `far`, as a min-heap.
    private var hours: [Int64] = []
    private var drainedHour = Int64.min
    private(set) var count = 0

    @inline(__always)
    static func hour(_ due: Int64) -> Int64 {
        due >= 0 ? due / bucketMs : (due + 1) / bucketMs - 1
    }

    @inline(__always)
    private static func ringIndex(_ h: Int64) -> Int { Int(h & (ringHours - 1)) }

    /// Whether hour `h` (> drainedHour) has its bucket in the ring.
    @inline(__always)
    private func inRing(_ h: Int64) -> Bool {
        guard drainedHour != .min else { return false }
        let (d, overflow) = h.subtractingReportingOverflow(drainedHour)
        return !overflow && d <= Self.ringHours
    }

    mutating func push(_ e: Entry) {
        count += 1
        let h = Self.hour(e.due)
        if h <= drainedHour { near.push(e); return }
        if inRing(h) {
            let i = Self.ringIndex(h)
            // An hour's bucket fills with many timers: start it with room for some (growing
            // 1, 2, 4, ... cost a reallocation every few pushes).
            if ring[i].capacity == 0 { ring[i].reserveCapacity(16) }
            ring[i].append(e)
            ringCount += 1
            return
        }
        if let i = far.index(forKey: h) {
            far.values[i].append(e)
        } else {
            far[h] = [e]
            pushHour(h)
        }
    }

    /// The slot of the next entry already in the current hour's heap (a prefetch hint), or -1.
    var nextSlot: Int32 { near.peek?.slot ?? -1 }

    /// Removes and returns the earliest entry if it is due at or before `t`.
    mutating func popDue(through t: Int64) -> Entry? {
        while true {
            if let top = near.peek {
                // Every ring and far entry is in a later hour than every near one.
                guard top.due <= t else { return nil }
                count -= 1
                return near.pop()
            }
            let target = Self.hour(t)
            guard target > drainedHour else { return nil }
            // The next hour holding entries, if it is at or before `target`. Ring entries lie
            // within ringHours of drainedHour, so the scan never passes more than that.
            var next = Int64.max
            if ringCount > 0 {
                let end = min(target, drainedHour + Self.ringHours)
                var h = drainedHour + 1
                while h <= end {
                    if !ring[Self.ringIndex(h)].isEmpty { next = h; break }
                    h += 1
                }
            }
            if let h = hours.first, h <= target, h < next { next = h }
            guard next != .max else {
                // Nothing due by `target`: later pushes up to it go straight to the heap, and the
                // ring's entries (all after `target`) stay inside its new range.
                drainedHour = target
                return nil
            }
            var entries: [Entry] = []
            if inRing(next) {
                swap(&entries, &ring[Self.ringIndex(next)])
                ringCount -= entries.count
            }
            if hours.first == next {
                popHour()
                entries += far.removeValue(forKey: next) ?? []
            }
            drainedHour = next
            near = TimerHeap(entries)
        }
    }

    private mutating func pushHour(_ h: Int64) {
        hours.append(h)
        var i = hours.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if hours[parent] <= h { break }
            hours[i] = hours[parent]
            i = parent
        }
        hours[i] = h
    }

    private mutating func popHour() {
        let last = hours.removeLast()
        guard !hours.isEmpty else { return }
        var i = 0
        let n = hours.count
        while true {
            let l = 2 * i + 1
            if l >= n { break }
            let c = l + 1 < n && hours[l + 1] < hours[l] ? l + 1 : l
            if hours[c] >= last { break }
            hours[i] = hours[c]
            i = c
        }
        hours[i] = last
    }
}
