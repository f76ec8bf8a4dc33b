/// How buckets are stored in a customer's words: 8 bytes for a bucket without an amount (a visit,
/// a view, a message...), 16 for one with (purchases). A 16-byte `ActivityBucket` per bucket made
/// the buckets half of a 50-event customer's memory, and most events carry no amount.
///
/// A bucket is a header word, tagged by its top bit:
///
///     1 | type (6 bits) | channel (6 bits) | count (16 bits, two's complement) | hour (32 bits)
///
/// followed by an amount word when its net amount is not zero, tagged by a clear top bit: the
/// amount in 63-bit two's complement. The tags make the words readable in both directions (the
/// flip timing reads the newest buckets from the end). Amounts are bounded by the decoder (below
/// 10^16 units per event), so 2^62 units per bucket is ~460 maximal purchases in one hour.
enum BucketWords {
    static let tag: UInt64 = 1 << 63
    /// The bits that say which bucket a header is (type, channel, hour), without its count.
    static let keyMask: UInt64 = ~(UInt64(0xFFFF) << 32)

    @inline(__always)
    static func header(hour: UInt32, type: UInt8, channel: UInt8, count: Int16) -> UInt64 {
        assert(type < 64 && channel < 64)
        return tag | UInt64(type) << 54 | UInt64(channel) << 48 | UInt64(UInt16(bitPattern: count)) << 32 | UInt64(hour)
    }

    @inline(__always)
    static func key(hour: UInt32, type: UInt8, channel: UInt8) -> UInt64 { header(hour: hour, type: type, channel: channel, count: 0) }

    @inline(__always) static func isHeader(_ w: UInt64) -> Bool { w & tag != 0 }
    @inline(__always) static func hour(_ h: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: h) }
    @inline(__always) static func count(_ h: UInt64) -> Int16 { Int16(bitPattern: UInt16(truncatingIfNeeded: h >> 32)) }
    @inline(__always) static func type(_ h: UInt64) -> UInt8 { UInt8(truncatingIfNeeded: h >> 54) & 63 }
    @inline(__always) static func channel(_ h: UInt64) -> UInt8 { UInt8(truncatingIfNeeded: h >> 48) & 63 }

    @inline(__always)
    static func withCount(_ h: UInt64, _ count: Int16) -> UInt64 {
        (h & keyMask) | UInt64(UInt16(bitPattern: count)) << 32
    }

    @inline(__always)
    static func withHour(_ h: UInt64, _ hour: UInt32) -> UInt64 { (h & ~UInt64(UInt32.max)) | UInt64(hour) }

    @inline(__always) static func amount(_ w: UInt64) -> Int64 { Int64(bitPattern: w << 1) >> 1 }

    @inline(__always) static func holds(_ a: Int64) -> Bool { a >= -(1 << 62) && a < 1 << 62 }

    @inline(__always)
    static func amountWord(_ a: Int64) -> UInt64 {
        precondition(holds(a), "bucket amount \(a) beyond 2^62 units")
        return UInt64(bitPattern: a) & ~tag
    }

    /// The bucket whose header is word `i` of `w`: its header and net amount; `i` moves past it.
    @inline(__always)
    static func read(_ w: UnsafeBufferPointer<UInt64>, _ i: inout Int) -> (header: UInt64, amount: Int64) {
        let h = w[i]
        i += 1
        guard i < w.count && !isHeader(w[i]) else { return (h, 0) }
        i += 1
        return (h, amount(w[i - 1]))
    }

    @inline(__always)
    static func bucket(_ h: UInt64, amount: Int64) -> ActivityBucket {
        ActivityBucket(amount: amount, hour: hour(h), count: count(h), type: type(h), channel: channel(h))
    }
}

/// The buckets of a customer in place, ordered by hour, decoded as they are read; valid only
/// inside `CustomerAggregates.withBuckets`.
struct BucketSequence: Sequence {
    let words: UnsafeBufferPointer<UInt64>

    struct Iterator: IteratorProtocol {
        let words: UnsafeBufferPointer<UInt64>
        var i = 0

        @inline(__always)
        mutating func next() -> ActivityBucket? {
            guard i < words.count else { return nil }
            let (h, amount) = BucketWords.read(words, &i)
            return BucketWords.bucket(h, amount: amount)
        }
    }

    @inline(__always) func makeIterator() -> Iterator { Iterator(words: words) }

    /// How many buckets (one header word each).
    var count: Int {
        var n = 0
        for w in words where BucketWords.isHeader(w) { n += 1 }
        return n
    }

    /// The bucket that ends just before word `end`, and the word it starts at (reading backwards).
    @inline(__always)
    func bucket(endingAt end: Int) -> (ActivityBucket, start: Int) {
        let last = words[end - 1]
        if BucketWords.isHeader(last) { return (BucketWords.bucket(last, amount: 0), end - 1) }
        return (BucketWords.bucket(words[end - 2], amount: BucketWords.amount(last)), end - 2)
    }
}
