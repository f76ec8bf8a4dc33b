import Foundation
import Synchronization

/// Runs a `Pipeline` on a dedicated thread (librdkafka calls block) and hands back its result.
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
            Thread.current.name = "tp-pipeline"  // `top -H`, `ps -L` (15 bytes at most)
            let r = Result { try pipeline.run() }
            result.withLock { $0 = r }
            done.signal()
        }
        t.stackSize = 8 << 20
        t.start()
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
