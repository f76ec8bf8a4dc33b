@testable import TidepoolDaemon
@testable import TidepoolStore
import Foundation
import Synchronization
import XCTest

final class BackgroundThreadTests: XCTestCase {
    private static func niceOfThisThread() -> Int32 {
        errno = 0
        return getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
    }

    /// Jobs run one at a time in submission order on one thread at nice 10, and `sync` returns
    /// only after all of them have run.
    func testJobsRunInOrderAtLowerPriority() {
        let thread = BackgroundThread(name: "tp-test", nice: 10)
        let seen = Mutex<[Int]>([])
        let nices = Mutex<Set<Int32>>([])
        let threads = Mutex<Set<UInt>>([])
        for k in 0..<200 {
            thread.async {
                if k % 50 == 0 { usleep(2_000) }  // later jobs queue up meanwhile
                seen.withLock { $0.append(k) }
                nices.withLock { _ = $0.insert(Self.niceOfThisThread()) }
                threads.withLock { _ = $0.insert(UInt(pthread_self())) }
            }
        }
        thread.sync()
        XCTAssertEqual(seen.withLock { $0 }, Array(0..<200))
        XCTAssertEqual(nices.withLock { $0 }, [10])
        XCTAssertEqual(threads.withLock { $0 }.count, 1)
        XCTAssertEqual(Self.niceOfThisThread(), 0, "the caller keeps its priority")
    }

    /// The checkpoint write's second thread (`HelperThread`) inherits the priority of the thread
    /// that starts it: low under the writer, normal under the processing thread (restores).
    func testHelperThreadInheritsTheCallersPriority() throws {
        @Sendable func helperNice() throws -> Int32 {
            final class Box { var n = 0 }
            var helperSaw: Int32 = -100
            var consumed = 0
            try HelperThread.run((Box(), Box()), produce: { b in
                helperSaw = Self.niceOfThisThread()
                b.n += 1
                return b.n < 3
            }, consume: { _ in consumed += 1 })
            XCTAssertGreaterThan(consumed, 0)
            return helperSaw
        }
        XCTAssertEqual(try helperNice(), 0)
        let thread = BackgroundThread(name: "tp-test", nice: 7)
        let underWriter = Mutex<Int32>(-100)
        thread.async {
            let n = (try? helperNice()) ?? -200
            underWriter.withLock { $0 = n }
        }
        thread.sync()
        XCTAssertEqual(underWriter.withLock { $0 }, 7)
    }
}
