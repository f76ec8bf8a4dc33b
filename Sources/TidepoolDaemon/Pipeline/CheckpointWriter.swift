import Foundation
import Synchronization
import TidepoolEngine
import TidepoolKafka
import TidepoolStore

/// Writes checkpoints on a thread of their own at a lower CPU priority (`BackgroundThread`), so
/// processing stalls only for taking the snapshot (encoding the changed customers), not for the
/// SQLite transaction, and does not lose its core to the write when the machine is busy. One write is in
/// flight at a time; the pipeline commits its Kafka offsets when the write has completed.
/// The SQLite connection is used by one thread at a time: restores `wait()` first.
final class CheckpointWriter: @unchecked Sendable {
    struct Completed {
        var offsets: [TopicPartitionOffset]
        var error: Error?
        var writeMs: Double
    }

    let store: CheckpointStore
    private let thread = BackgroundThread(name: "tp-checkpoint")
    private let finished = Mutex<Completed?>(nil)
    private let lastFold = Mutex<Double>(0)
    private let done = DispatchSemaphore(value: 0)
    private(set) var inFlight = false

    init(store: CheckpointStore) { self.store = store }

    /// Starts writing `snapshots`; `offsets` are what the pipeline may commit once it succeeded.
    func submit(_ snapshots: [(PartitionSnapshot, nextOffset: Int64)], offsets: [TopicPartitionOffset], outputs: [OutputOffset],
                segments: [(name: String, rule: String)]) {
        precondition(!inFlight, "one checkpoint write at a time")
        inFlight = true
        thread.async { [self] in
            let t0 = WallClock.monotonicNs()
            var err: Error? = nil
            do { try store.write(snapshots, outputs: outputs, segments: segments) } catch { err = error }
            let c = Completed(offsets: offsets, error: err, writeMs: Double(WallClock.monotonicNs() - t0) / 1e6)
            finished.withLock { $0 = c }
            done.signal()
            // The checkpoint is durable in the WAL; copying it into the database file comes after,
            // still on this thread, so that neither processing nor the offset commit waits for it.
            let f0 = WallClock.monotonicNs()
            store.foldWAL()
            let foldMs = Double(WallClock.monotonicNs() - f0) / 1e6
            lastFold.withLock { $0 = foldMs }
        }
    }

    /// Duration of the last completed WAL fold, ms (0: none yet).
    var lastFoldMs: Double { lastFold.withLock { $0 } }

    /// The completed write, if it has completed (never blocks).
    func poll() -> Completed? {
        guard inFlight, let c = finished.withLock({ v -> Completed? in let c = v; v = nil; return c }) else { return nil }
        done.wait()  // consume the signal that came with it
        inFlight = false
        return c
    }

    /// Waits for the write in flight, if any, and for the WAL fold after it: the connection is
    /// idle when this returns.
    func wait() -> Completed? {
        defer { thread.sync() }
        guard inFlight else { return nil }
        done.wait()
        inFlight = false
        return finished.withLock { v -> Completed? in let c = v; v = nil; return c }
    }
}
