import Dispatch
import Foundation
import TidepoolStore

/// Fork and join over the shards (`EngineShards`): `run` calls its body once per shard, shard 0
/// on the calling thread and each other shard on a thread of its own, and returns when every call
/// has returned. The threads live as long as this object and sleep between runs.
///
/// Why not `DispatchQueue.concurrentPerform`: its pool threads change from one call to the next,
/// so a shard's customers would not stay in the cache of one core, and the pool may run the calls
/// one after another on a busy machine without saying so. Here shard k always runs on its thread.
final class ShardWorkers: @unchecked Sendable {
    private final class Worker: @unchecked Sendable {
        let start = DispatchSemaphore(value: 0)
        let done = DispatchSemaphore(value: 0)
        /// Set by `run` before `start` is signalled, cleared after `done`: the semaphores order
        /// every access.
        var job: ((Int) -> Void)?
        var stopping = false
    }

    private let workers: [Worker]

    /// `shards`: how many calls each `run` makes (`shards - 1` threads).
    init(shards: Int, name: String = "tp-shard") {
        precondition(shards >= 1)
        workers = (1..<shards).map { _ in Worker() }
        for (i, w) in workers.enumerated() {
            let shard = i + 1
            let thread = Thread {
                nameCurrentThread("\(name)-\(shard)")  // what `top -H` shows
                while true {
                    w.start.wait()
                    if w.stopping { return }
                    w.job!(shard)
                    w.done.signal()
                }
            }
            thread.start()
        }
    }

    deinit {
        for w in workers {
            w.stopping = true
            w.start.signal()
        }
    }

    var shards: Int { workers.count + 1 }

    /// Calls `body(k)` for every shard k at once and returns when all have returned. `body` must
    /// only touch what belongs to shard k (its engine, its buffers).
    func run(_ body: (Int) -> Void) {
        withoutActuallyEscaping(body) { body in
            for w in workers {
                w.job = body
                w.start.signal()
            }
            body(0)
            for w in workers {
                w.done.wait()
                w.job = nil
            }
        }
    }
}
