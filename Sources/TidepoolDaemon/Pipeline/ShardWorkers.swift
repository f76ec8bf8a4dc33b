import Dispatch
import Foundation
import TidepoolStore

/// One thread per shard (`EngineShards`), named `tp-shard-K`: `start` hands every thread its
/// call and returns at once, `wait` returns when every call has returned. The pipeline starts a
/// catch-up poll's events on them and reads the next poll meanwhile (`Pipeline.dispatch`). The
/// threads live as long as this object and sleep between runs.
///
/// Why not `DispatchQueue.concurrentPerform`: its pool threads change from one call to the next,
/// so a shard's customers would not stay in the cache of one core, it cannot return before the
/// calls do, and the pool may run the calls one after another on a busy machine without saying
/// so. Here shard k always runs on its thread.
final class ShardWorkers: @unchecked Sendable {
    private final class Worker: @unchecked Sendable {
        let start = DispatchSemaphore(value: 0)
        let done = DispatchSemaphore(value: 0)
        /// Set by `start` before the semaphore is signalled, cleared by `wait` after `done`: the
        /// semaphores order every access.
        var job: ((Int) -> Void)?
        var stopping = false
    }

    private let workers: [Worker]
    /// A run was started and not waited for (touched by the starting thread only).
    private(set) var running = false

    /// `shards` threads, one per shard.
    init(shards: Int, name: String = "tp-shard") {
        precondition(shards >= 1)
        workers = (0..<shards).map { _ in Worker() }
        for (shard, w) in workers.enumerated() {
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

    var shards: Int { workers.count }

    /// Calls `body(k)` on shard k's thread for every shard and returns without waiting. `body`
    /// must only touch what belongs to shard k (its engine, its buffers), and the caller must not
    /// touch those until `wait()` has returned. One run at a time.
    func start(_ body: @escaping (Int) -> Void) {
        precondition(!running, "ShardWorkers.start while a run is in progress")
        running = true
        for w in workers {
            w.job = body
            w.start.signal()
        }
    }

    /// Returns when every call of the run started last has returned (at once when none is).
    func wait() {
        guard running else { return }
        for w in workers {
            w.done.wait()
            w.job = nil
        }
        running = false
    }

    /// `start` and `wait`: every shard at once, the caller waiting.
    func run(_ body: (Int) -> Void) {
        withoutActuallyEscaping(body) { body in
            start(body)
            wait()
        }
    }
}
