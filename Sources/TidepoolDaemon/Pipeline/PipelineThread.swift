import Foundation
import Synchronization
import TidepoolStore

/// Runs a `Pipeline` on a dedicated thread (librdkafka calls block), or on the calling thread
/// (`runOnCurrentThread`), and hands back its result.
public final class PipelineThread: Sendable {
    public let pipeline: Pipeline
    private let result = Mutex<Result<Pipeline.Outcome, Error>?>(nil)
    private let done = DispatchSemaphore(value: 0)

    public init(_ pipeline: Pipeline) {
        self.pipeline = pipeline
    }

    public func start() {
        let t = Thread { [self] in
            // Named from inside: on Linux a name set before start does not reach the thread.
            nameCurrentThread("tp-pipeline")  // `top -H`, `ps -L` (15 bytes at most)
            runOnCurrentThread()
        }
        t.stackSize = 8 << 20
        t.start()
    }

    /// Runs the pipeline on the calling thread until it returns; `wait()` then has its result.
    ///
    /// `tidepool run` calls this from the process's main thread, because glibc's allocator grows
    /// the main thread's heap (the main arena) with `brk` in huge-page steps, and any other
    /// thread's heap a few pages at a time with `mprotect`, each call taking the process's
    /// memory-map lock. At 44k new customers/s the processing thread made 31,154 `mprotect` calls
    /// in 10 s (945 ms, up to 8.9 ms each, slowest while a checkpoint write ran) where on the
    /// main thread it made 87 `brk` calls (11 ms) (`perf trace -s`); the live maximum rose from
    /// 84k-86k to 90k-111k events/s in three alternating pairs (Benchmarks/README.md, "Latency").
    public func runOnCurrentThread() {
        let r = Result { try pipeline.run() }
        result.withLock { $0 = r }
        done.signal()
    }

    /// The result if the pipeline has returned already (start-up errors show up here quickly).
    public var finished: Result<Pipeline.Outcome, Error>? { result.withLock { $0 } }

    /// Asks the pipeline to stop and waits for it.
    @discardableResult
    public func stop() throws -> Pipeline.Outcome {
        pipeline.requestStop()
        return try wait()
    }

    /// Waits for the pipeline to return.
    public func wait() throws -> Pipeline.Outcome {
        done.wait()
        done.signal()
        return try result.withLock { $0! }.get()
    }
}

extension Pipeline: @unchecked Sendable {}
