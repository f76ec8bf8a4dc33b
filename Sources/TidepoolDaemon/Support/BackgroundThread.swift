import Foundation
import TidepoolStore

/// A thread of its own for background work (the checkpoint writes), at a lower CPU priority than
/// processing: closures submitted with `async` run on it one at a time, in order.
///
/// Why a thread and not a dispatch queue: Linux keeps the nice value per thread, and a pool
/// thread lowered once would stay lowered for whatever it ran next (an unprivileged process cannot
/// raise it back). Threads this one creates inherit its priority (`HelperThread`).
///
/// Why lower: a checkpoint write is a burst of CPU (SQLite inserts of the changed customers, then
/// the WAL fold) that nothing waits for, while every event in flight waits for the processing
/// thread. At nice 10 the scheduler gives the write about a tenth of a contended core and all of
/// an idle one, so checkpoints take longer only when processing needs the CPU. (Measured at 50k
/// new customers/s on 2 cores shared with the broker: half-load p99 104-272 ms at nice 0 and
/// 103-166 ms at nice 10, three runs each: no clear gain there, where processing slows during a
/// write in kernel time rather than for want of CPU; Benchmarks/README.md, "Latency".)
final class BackgroundThread: @unchecked Sendable {
    private let state: State

    private final class State: @unchecked Sendable {
        let cond = NSCondition()
        var jobs: [() -> Void] = []
        var running = false
        var stopping = false
    }

    /// `nice`: the thread's nice value (0 is normal, 19 the lowest priority).
    init(name: String, nice: Int32 = 10) {
        let state = State()
        self.state = state
        let thread = Thread {
            // PRIO_PROCESS with 0 names the calling thread on Linux (the nice value is per thread).
            // Failure leaves it at normal priority: slower processing under load, nothing wrong.
            _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, nice)
            nameCurrentThread(name)  // what `top -H` and `ps -L` show (15 bytes at most)
            while true {
                state.cond.lock()
                while state.jobs.isEmpty && !state.stopping { state.cond.wait() }
                if state.jobs.isEmpty {
                    state.cond.unlock()
                    return
                }
                let job = state.jobs.removeFirst()
                state.running = true
                state.cond.unlock()
                job()
                state.cond.lock()
                state.running = false
                state.cond.broadcast()
                state.cond.unlock()
            }
        }
        thread.start()
    }

    /// The thread runs what was submitted, then exits.
    deinit {
        state.cond.lock()
        state.stopping = true
        state.cond.broadcast()
        state.cond.unlock()
    }

    /// Runs `job` on the thread after everything submitted before it.
    func async(_ job: @escaping @Sendable () -> Void) {
        state.cond.lock()
        state.jobs.append(job)
        state.cond.broadcast()
        state.cond.unlock()
    }

    /// Waits until everything submitted so far has run.
    func sync() {
        state.cond.lock()
        while state.running || !state.jobs.isEmpty { state.cond.wait() }
        state.cond.unlock()
    }
}
