import CMemory
#if canImport(Glibc)
import Glibc
#endif

/// The per-slot state of a partition (customer records, ids, next flips): an array whose growth
/// never copies its elements.
///
/// A Swift `Array` grows by allocating twice the room and moving every element. With a partition
/// of 131,072 customers that moved 21 MB of records, 10 MB of next flips and 2 MB of ids and
/// faulted in twice as much fresh memory, on the processing thread, in one go; 8 partitions of a
/// topic reach that size within a fraction of a second of each other, and the latency run at
/// 115k new customers/s showed it as 300-500 ms of extra latency around the millionth customer
/// (`Benchmarks/README.md`, "Latency"). Here the elements live in an anonymous memory mapping
/// that grows with `mremap`: the kernel moves page-table entries and copies no byte, and the new
/// pages are faulted in one at a time as slots are used, as they were anyway.
///
/// Value semantics like `Array` (copy on write: a copy shares the mapping until one side
/// changes). Not a general container: it appends at the end and never shrinks except by
/// `removeAll`.
public struct SlotArray<Element>: RandomAccessCollection, MutableCollection, ExpressibleByArrayLiteral {
    final class Storage {
        var base: UnsafeMutablePointer<Element>
        var count = 0
        var capacity = 0
        /// Size of the mapping; 0 while nothing is mapped.
        var bytes = 0

        init() {
            base = UnsafeMutablePointer(bitPattern: MemoryLayout<Element>.alignment)!
        }

        deinit {
            base.deinitialize(count: count)
            if bytes > 0 { munmap(base, bytes) }
        }

        private static var page: Int { Int(sysconf(Int32(_SC_PAGESIZE))) }

        /// Room for at least `n` elements (rounded up to whole pages).
        func reserve(_ n: Int) {
            guard n > capacity else { return }
            let size = Swift.max(1, MemoryLayout<Element>.stride)
            let page = Self.page
            let want = (n * size + page - 1) / page * page
            let p: UnsafeMutableRawPointer?
            if bytes == 0 {
                let m = mmap(nil, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                p = m == MAP_FAILED ? nil : m
            } else {
                p = tp_mremap_grow(base, bytes, want)
            }
            guard let p else { fatalError("SlotArray: cannot map \(want) bytes (out of memory)") }
            // Large mappings on transparent huge pages, as the systemd unit puts the heap
            // (glibc.malloc.hugetlb=1): fewer TLB misses on a million random slots.
            if want >= 2 << 20 { _ = madvise(p, want, MADV_HUGEPAGE) }
            base = p.bindMemory(to: Element.self, capacity: want / size)
            bytes = want
            capacity = want / size
        }

        func copy() -> Storage {
            let s = Storage()
            s.reserve(count)
            s.base.initialize(from: base, count: count)
            s.count = count
            return s
        }
    }

    var storage: Storage

    public init() { storage = Storage() }

    public init(arrayLiteral elements: Element...) {
        self.init()
        append(contentsOf: elements)
    }

    public init<S: Sequence>(_ elements: S) where S.Element == Element {
        self.init()
        append(contentsOf: elements)
    }

    @inline(__always)
    private mutating func makeUnique() {
        if !isKnownUniquelyReferenced(&storage) { storage = storage.copy() }
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { storage.count }
    public var count: Int { storage.count }
    public var capacity: Int { storage.capacity }

    public subscript(i: Int) -> Element {
        get {
            precondition(i >= 0 && i < storage.count, "SlotArray index out of range")
            return storage.base[i]
        }
        _modify {
            precondition(i >= 0 && i < storage.count, "SlotArray index out of range")
            if !isKnownUniquelyReferenced(&storage) { storage = storage.copy() }
            yield &storage.base[i]
        }
    }

    /// Element `i` in place, the storage made unique once: for a caller that reads and changes
    /// one element many times while the array neither grows nor is copied. Each access through
    /// the subscript's `_modify` checked uniqueness (a runtime call; ~19 of them per segment
    /// evaluation, ~3% of the engine's instructions).
    @inline(__always)
    mutating func uniquePointer(to i: Int) -> UnsafeMutablePointer<Element> {
        precondition(i >= 0 && i < storage.count, "SlotArray index out of range")
        makeUnique()
        return storage.base + i
    }

    public mutating func reserveCapacity(_ n: Int) {
        makeUnique()
        storage.reserve(n)
    }

    public mutating func append(_ e: Element) {
        makeUnique()
        let s = storage
        if s.count == s.capacity { s.reserve(Swift.max(s.count * 2, 16)) }
        (s.base + s.count).initialize(to: e)
        s.count += 1
    }

    public mutating func append<S: Sequence>(contentsOf elements: S) where S.Element == Element {
        makeUnique()
        let s = storage
        // At least double when it must grow: reserving the exact sum remapped on every append.
        let need = s.count + elements.underestimatedCount
        if need > s.capacity { s.reserve(Swift.max(need, s.count * 2)) }
        for e in elements {
            if s.count == s.capacity { s.reserve(Swift.max(s.count * 2, 16)) }
            (s.base + s.count).initialize(to: e)
            s.count += 1
        }
    }

    /// Removes every element; the mapping is kept (its pages stay counted until reused).
    public mutating func removeAll() {
        if !isKnownUniquelyReferenced(&storage) {
            storage = Storage()
            return
        }
        storage.base.deinitialize(count: storage.count)
        storage.count = 0
    }

    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Element>) throws -> R) rethrows -> R {
        try body(UnsafeBufferPointer(start: storage.base, count: storage.count))
    }

    public mutating func withUnsafeMutableBufferPointer<R>(_ body: (inout UnsafeMutableBufferPointer<Element>) throws -> R) rethrows -> R {
        makeUnique()
        var b = UnsafeMutableBufferPointer(start: storage.base, count: storage.count)
        return try body(&b)
    }
}

extension SlotArray: @unchecked Sendable where Element: Sendable {}

extension SlotArray: Equatable where Element: Equatable {
    public static func == (a: SlotArray, b: SlotArray) -> Bool { a.elementsEqual(b) }
}
