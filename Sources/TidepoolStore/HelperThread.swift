import Dispatch
import Foundation
import TidepoolEngine

/// Two stages of a loop on two threads: `produce` fills buffers on a helper thread while the
/// caller's thread `consume`s the previous one. Two buffers alternate, handed over by semaphores,
/// so neither thread ever touches a buffer the other holds.
///
/// The checkpoint uses it both ways: writing, the helper lays out encoded rows in key order while the caller inserts
/// them into SQLite; restoring, the helper reads and decodes rows while the caller puts the
/// customers into the engine. On this 2-core machine each of those was about a third of its
/// single-threaded loop.
///
/// The helper is a thread of its own, not a pool thread: it inherits the calling thread's CPU
/// priority (on Linux the nice value belongs to each thread and new threads copy it), so a write
/// on the checkpoint writer's low-priority thread stays low-priority in both halves, and a restore
/// on the processing thread runs at full priority.
///
/// `run` returns only after the helper has stopped, also when `consume` or `produce` throws (the
/// first error is rethrown on the caller's thread), so both closures may capture memory that is
/// valid only during the call.
enum HelperThread {
    static func run<Buffer: AnyObject>(_ buffers: (Buffer, Buffer),
                                       produce: @escaping (Buffer) throws -> Bool,
                                       consume: (Buffer) throws -> Void) throws {
        let shared = Handover(buffers, UncheckedBox(produce))
        let helper = Thread {
            nameCurrentThread("tidepool-helper")
            var i = 0
            while true {
                let slot = i & 1
                shared.free[slot].wait()
                if shared.cancelled { break }
                let more: Bool
                do {
                    more = try shared.produce.value(slot == 0 ? shared.buffers.0 : shared.buffers.1)
                } catch {
                    shared.error = error
                    more = false
                }
                shared.last[slot] = !more
                shared.ready[slot].signal()
                if !more { break }
                i += 1
            }
            shared.finished.signal()
        }
        helper.start()
        defer {
            // Stop the helper (when `consume` threw) and wait for it to finish.
            shared.cancelled = true
            shared.free[0].signal()
            shared.free[1].signal()
            shared.finished.wait()
        }
        var i = 0
        while true {
            let slot = i & 1
            shared.ready[slot].wait()
            if shared.last[slot] {
                if let e = shared.error { throw e }
                return
            }
            try consume(slot == 0 ? shared.buffers.0 : shared.buffers.1)
            shared.free[slot].signal()
            i += 1
        }
    }

    /// State shared by the two threads; every access is ordered by the semaphores.
    final class Handover<Buffer: AnyObject>: @unchecked Sendable {
        let buffers: (Buffer, Buffer)
        let produce: UncheckedBox<(Buffer) throws -> Bool>
        // Semaphores start at 0 and are signalled up: libdispatch traps when one is destroyed
        // below its initial value.
        let ready = [DispatchSemaphore(value: 0), DispatchSemaphore(value: 0)]
        let free = [DispatchSemaphore(value: 0), DispatchSemaphore(value: 0)]
        let finished = DispatchSemaphore(value: 0)
        /// Per slot: the helper is done and this slot holds nothing (written before `ready`).
        var last = [false, false]
        var error: Error?
        /// Written by the caller before it signals `free`, read by the helper after its wait.
        var cancelled = false
        init(_ buffers: (Buffer, Buffer), _ produce: UncheckedBox<(Buffer) throws -> Bool>) {
            self.buffers = buffers
            self.produce = produce
            free[0].signal()
            free[1].signal()
        }
    }

    struct UncheckedBox<T>: @unchecked Sendable {
        let value: T
        init(_ value: T) { self.value = value }
    }
}

/// Lays rows out on a helper thread, one chunk ahead of the caller that consumes them (the
/// checkpoint writer inserts chunk k into SQLite while chunk k+1 is being laid out in key order).
enum ChunkedRows {
    /// Rows per chunk: large enough that handing over is rare, small enough that both threads
    /// start working early.
    static let chunkRows = 2048

    final class Chunk {
        /// Per row: its key's bytes, then its value's bytes.
        var bytes: [UInt8] = []
        /// Per row: where its key ends and where its value ends.
        var ends: [Int] = []

        func fill(_ range: Range<Int>, key: (Int) -> String, value: (Int, inout [UInt8]) -> Void) {
            bytes.removeAll(keepingCapacity: true)
            ends.removeAll(keepingCapacity: true)
            for k in range {
                bytes.append(contentsOf: key(k).utf8)
                ends.append(bytes.count)
                value(k, &bytes)
                ends.append(bytes.count)
            }
        }

        func withRows<R>(_ body: (Rows) throws -> R) rethrows -> R {
            try bytes.withUnsafeBytes { raw in try ends.withUnsafeBufferPointer { ends in try body(Rows(raw: raw, ends: ends)) } }
        }
    }

    /// The rows of one chunk, valid during the `consume` call that receives them.
    struct Rows {
        let raw: UnsafeRawBufferPointer
        let ends: UnsafeBufferPointer<Int>
        var count: Int { ends.count / 2 }
        func key(_ i: Int) -> UnsafeRawBufferPointer {
            UnsafeRawBufferPointer(rebasing: raw[(i == 0 ? 0 : ends[2 * i - 1])..<ends[2 * i]])
        }
        func value(_ i: Int) -> UnsafeRawBufferPointer {
            UnsafeRawBufferPointer(rebasing: raw[ends[2 * i]..<ends[2 * i + 1]])
        }
    }

    /// `value(k, &bytes)` appends row k's value to `bytes`. `consume` receives the rows
    /// 0..<count in order, a chunk at a time, each row with the UTF-8 of `key(k)` (copied by the
    /// helper, so that the consumer reads nothing but the chunk, in order).
    static func run(count: Int, key: @escaping (Int) -> String, value: @escaping (Int, inout [UInt8]) -> Void,
                    consume: (Rows) throws -> Void) throws {
        guard count > 0 else { return }
        if count <= chunkRows {
            // One chunk: a thread handover would only add latency.
            let chunk = Chunk()
            chunk.fill(0..<count, key: key, value: value)
            try chunk.withRows(consume)
            return
        }
        var next = 0
        try HelperThread.run((Chunk(), Chunk()), produce: { b in
            guard next < count else { return false }
            let end = min(count, next + chunkRows)
            b.fill(next..<end, key: key, value: value)
            next = end
            return true
        }, consume: { b in try b.withRows(consume) })
    }
}
