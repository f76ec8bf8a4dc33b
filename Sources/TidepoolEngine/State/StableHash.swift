/// A hash that is the same in every process and on every machine (Swift's `Hasher` is seeded per
/// process, so it cannot name triggers or pick holdouts). FNV-1a over the bytes, finished with
/// the SplitMix64 mixer; two seeds give 128 bits for identifiers.
public enum StableHash {
    @inline(__always)
    public static func mix(_ x0: UInt64) -> UInt64 {
        var x = x0
        x = (x ^ (x >> 30)) &* 0xBF58_476D_1CE4_E5B9
        x = (x ^ (x >> 27)) &* 0x94D0_49BB_1331_11EB
        return x ^ (x >> 31)
    }

    public static func hash64<S: Sequence>(_ bytes: S, seed: UInt64 = 0) -> UInt64 where S.Element == UInt8 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325 ^ mix(seed)
        for b in bytes {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01B3
        }
        return mix(h)
    }

    /// The same hash over a string's UTF-8, without the generic iterator (the hot path hashes
    /// every event id and every new customer id).
    public static func hash64(_ s: String, seed: UInt64 = 0) -> UInt64 {
        utf8(s) { hash64(UnsafeRawBufferPointer($0), seed: seed) }
    }

    /// A string's UTF-8, read in place when it is stored contiguously (native strings are):
    /// `withUTF8` is mutating, and the copy it needed retained and released the string (~60
    /// instructions, three hashes per event).
    @inline(__always)
    fileprivate static func utf8<R>(_ s: String, _ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
        if let r = s.utf8.withContiguousStorageIfAvailable(body) { return r }
        var s = s
        return s.withUTF8(body)
    }

    @inline(__always)
    public static func hash64(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325 ^ mix(seed)
        for b in bytes {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01B3
        }
        return mix(h)
    }

    /// 32 lowercase hex digits naming `parts` joined by NUL bytes.
    ///
    /// Both hashes are taken in one pass over the parts, with no joined copy, and the digits are
    /// written straight into the String: every campaign decision names its trigger this way, and
    /// the array, the two `String(radix:)` and the padding cost ~6k instructions.
    public static func hex128(_ parts: [String]) -> String {
        var h = Hex128()
        for p in parts { h.add(p) }
        return h.digits()
    }

    /// `hash64` of parts joined by NUL bytes, fed one part at a time: the same value as hashing
    /// the joined bytes, without building them (a campaign's holdout bucket is taken per decision).
    struct Parts64 {
        private static let prime: UInt64 = 0x0000_0100_0000_01B3
        private var h: UInt64
        private var first = true

        init(seed: UInt64 = 0) { h = 0xCBF2_9CE4_8422_2325 ^ StableHash.mix(seed) }

        mutating func add(_ part: String) {
            if !first { h = h &* Self.prime }  // a NUL byte: xor with 0 changes nothing
            first = false
            var x = h
            StableHash.utf8(part) { for b in $0 { x = (x ^ UInt64(b)) &* Self.prime } }
            h = x
        }

        var value: UInt64 { StableHash.mix(h) }
    }

    /// `hex128` fed one part at a time, so that a caller with a fixed number of parts (a
    /// trigger's id) builds no array of them.
    struct Hex128 {
        private static let prime: UInt64 = 0x0000_0100_0000_01B3
        private var a: UInt64 = 0xCBF2_9CE4_8422_2325 ^ StableHash.mix(0x7469_6465)  // "tide"
        private var b: UInt64 = 0xCBF2_9CE4_8422_2325 ^ StableHash.mix(0x706F_6F6C)  // "pool"
        private var first = true

        mutating func add(_ part: String) {
            StableHash.utf8(part) { add(bytes: $0) }
        }

        /// `add(String(n))` without the String: the decimal digits of `n` (a trigger's episode).
        mutating func add(decimal n: Int) {
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { buf in
                var v = n.magnitude, k = 20
                repeat {
                    k -= 1
                    buf[k] = UInt8(truncatingIfNeeded: 0x30 + v % 10)
                    v /= 10
                } while v > 0
                if n < 0 {
                    // "-" and the digits: a negative episode never occurs, but the id stays that of String(n).
                    var all = [UInt8(0x2D)]
                    all.append(contentsOf: buf[k...])
                    all.withUnsafeBufferPointer { add(bytes: $0) }
                    return
                }
                add(bytes: UnsafeBufferPointer(rebasing: buf[k...]))
            }
        }

        @inline(__always)
        private mutating func add(bytes: UnsafeBufferPointer<UInt8>) {
            if !first {
                a = a &* Self.prime  // a NUL byte: xor with 0 changes nothing
                b = b &* Self.prime
            }
            first = false
            var (a, b) = (self.a, self.b)
            for x in bytes {
                a = (a ^ UInt64(x)) &* Self.prime
                b = (b ^ UInt64(x)) &* Self.prime
            }
            (self.a, self.b) = (a, b)
        }

        func digits() -> String {
            let (ha, hb) = (StableHash.mix(a), StableHash.mix(b))
            return String(unsafeUninitializedCapacity: 32) { out in
                let digits: StaticString = "0123456789abcdef"
                digits.withUTF8Buffer { d in
                    for k in 0..<16 {
                        out[k] = d[Int((ha >> UInt64(60 - 4 * k)) & 15)]
                        out[16 + k] = d[Int((hb >> UInt64(60 - 4 * k)) & 15)]
                    }
                }
                return 32
            }
        }
    }

    static func hex(_ v: UInt64) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }
}
