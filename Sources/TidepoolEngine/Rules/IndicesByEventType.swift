/// For each event type, the indices of the items (window terms, timing windows) that apply to
/// it, flattened into one array. The per-bucket loops of rule evaluation read a bucket's list
/// through buffer pointers: an array of arrays cost a retain and a release of the inner array per
/// bucket.
struct IndicesByEventType: Sendable, Equatable {
    /// The list of type T is `items[start[T] ..< start[T + 1]]`.
    private var start: [Int32] = []
    private var items: [Int32] = []

    init() {}

    /// `applies(item, type)`: whether item `0 ..< count` applies to events of `type`.
    init(items count: Int, _ applies: (Int, UInt8) -> Bool) {
        for type in 0..<UInt8(64) {
            start.append(Int32(items.count))
            items += (0..<count).filter { applies($0, type) }.map { Int32($0) }
        }
        start.append(Int32(items.count))
    }

    struct Lists {
        fileprivate let start: UnsafeBufferPointer<Int32>
        fileprivate let items: UnsafeBufferPointer<Int32>
        @inline(__always)
        subscript(type: UInt8) -> Slice<UnsafeBufferPointer<Int32>> {
            items[Int(start[Int(type)])..<Int(start[Int(type) + 1])]
        }
    }

    /// Runs `body` with the lists readable without reference counting.
    @inline(__always)
    func withLists<R>(_ body: (Lists) -> R) -> R {
        start.withUnsafeBufferPointer { s in items.withUnsafeBufferPointer { i in body(Lists(start: s, items: i)) } }
    }
}
