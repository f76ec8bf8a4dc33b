import XCTest
@testable import TidepoolEngine

final class SlotArrayTests: XCTestCase {
    /// Appends across many remaps keep every element where it was (the mapping moves, the bytes
    /// do not change), for a trivial type and for one holding references.
    func testGrowthKeepsElements() {
        var ints = SlotArray<Int64>()
        var strings = SlotArray<String>()
        var reference: [String] = []
        for i in 0..<300_000 {
            ints.append(Int64(i) * 7)
            let s = "customer-\(i)-" + String(repeating: "x", count: i % 40)
            strings.append(s)
            reference.append(s)
        }
        XCTAssertEqual(ints.count, 300_000)
        XCTAssertGreaterThanOrEqual(ints.capacity, 300_000)
        XCTAssertTrue(ints.indices.allSatisfy { ints[$0] == Int64($0) * 7 })
        XCTAssertTrue(strings.elementsEqual(reference))
        ints.append(contentsOf: repeatElement(-1, count: 100_000))
        XCTAssertEqual(ints.count, 400_000)
        XCTAssertEqual(ints[299_999], 299_999 * 7)
        XCTAssertEqual(ints[399_999], -1)
        // Appending a sequence past the capacity at least doubles it (an exact fit would remap
        // again on the next append).
        var g = SlotArray<Int64>()
        g.append(contentsOf: repeatElement(0, count: 1_000))
        let c = g.capacity
        g.append(contentsOf: repeatElement(1, count: c - g.count + 1))
        XCTAssertGreaterThanOrEqual(g.capacity, 2 * c)
        XCTAssertEqual(g.count, c + 1)
    }

    /// Value semantics: a copy shares storage until one side changes, then each sees its own.
    func testCopyOnWrite() {
        var a: SlotArray<String> = ["a", "b", "c"]
        let b = a
        a[1] = "changed"
        a.append("d")
        XCTAssertEqual(Array(b), ["a", "b", "c"])
        XCTAssertEqual(Array(a), ["a", "changed", "c", "d"])
        var c = a
        c.withUnsafeMutableBufferPointer { $0[0] = "z" }
        XCTAssertEqual(a[0], "a")
        XCTAssertEqual(c[0], "z")
        var d = c
        d.removeAll()
        XCTAssertEqual(d.count, 0)
        XCTAssertEqual(c.count, 4)
        d.append("again")
        XCTAssertEqual(Array(d), ["again"])
    }

    /// Elements are released when the array goes (and when removed), not leaked or freed twice.
    func testElementsAreReleased() {
        final class Token { static var live = 0; init() { Token.live += 1 }; deinit { Token.live -= 1 } }
        do {
            var a = SlotArray<Token>()
            for _ in 0..<10_000 { a.append(Token()) }
            XCTAssertEqual(Token.live, 10_000)
            let copy = a
            a[0] = Token()
            XCTAssertEqual(Token.live, 10_001)
            a.removeAll()
            XCTAssertEqual(Token.live, 10_000)
            XCTAssertEqual(copy.count, 10_000)
        }
        XCTAssertEqual(Token.live, 0)
    }
}
