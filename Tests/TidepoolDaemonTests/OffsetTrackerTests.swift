@testable import TidepoolDaemon
import XCTest

final class OffsetTrackerTests: XCTestCase {
    func testOffsetsAreReleasedOnlyWhenTheirOutputIsAcknowledgedAndInOrder() {
        var t = OffsetTracker()
        let b1 = t.open()
        t.processed(topic: "in", partition: 0, offset: 9)
        t.produced()
        t.produced()
        t.close()
        let b2 = t.open()
        t.processed(topic: "in", partition: 0, offset: 19)
        t.processed(topic: "in", partition: 1, offset: 4)
        t.produced()
        t.close()

        XCTAssertTrue(t.takeCompleted().isEmpty, "nothing acknowledged yet")
        t.delivered(seq: b2)
        XCTAssertTrue(t.takeCompleted().isEmpty, "batch 2 is done but batch 1 is not: no offset may move")
        t.delivered(seq: b1)
        XCTAssertTrue(t.takeCompleted().isEmpty, "batch 1 still waits for one record")
        t.delivered(seq: b1)
        let done = Set(t.takeCompleted().map { "\($0.topic)[\($0.partition)]@\($0.offset)" })
        XCTAssertEqual(done, ["in[0]@20", "in[1]@5"])
        XCTAssertEqual(t.pending, 0)
    }

    func testBatchWithoutOutputCompletesAtOnceAndLostPartitionsAreForgotten() {
        var t = OffsetTracker()
        _ = t.open()
        t.processed(topic: "in", partition: 0, offset: 0)
        t.processed(topic: "in", partition: 3, offset: 7)
        t.close()
        t.forget([OffsetTracker.PartitionKey(topic: "in", partition: 3)])
        XCTAssertEqual(t.takeCompleted().map(\.offset), [1])
    }
}
