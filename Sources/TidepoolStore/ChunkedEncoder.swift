import Dispatch

/// Encodes rows on a helper thread, one chunk ahead of the caller that consumes them: the
/// checkpoint writer inserts chunk k into SQLite while chunk k+1 is being encoded. On this
/// 2-core machine encoding was a third of a checkpoint write on the writer thread.
///
/// Two chunk buffers alternate between the threads, handed over by semaphores; the helper never
/// touches a buffer the consumer holds. `run` returns only after the helper has stopped (also when
/// `consume` throws), so `encode` may capture memory that is valid only for the call.
enum ChunkedEncoder {
    /// Rows per chunk: large enough that handing over is rare, small enough that both threads
    /// start working early.
    static let chunkRows = 2048

    /// `encode(k, &scratch)` writes row k's bytes at the start of `scratch` (growing it when
    /// needed) and returns their count; `consume(k, key, bytes)` receives the rows in order
    /// 0..<count, each with the UTF-8 of `key(k)` (copied by the helper, so that the consumer
    /// reads nothing but the chunk, in order).
    static func run(count: Int, key: @escaping (Int) -> String, encode: @escaping (Int, inout [UInt8]) -> Int,
                    consume: (Int, UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Void) throws {
        guard count > 0 else { return }
        if count <= chunkRows {
            // One chunk: a thread handover would only add latency.
            var scratch: [UInt8] = []
            for k in 0..<count {
                let n = encode(k, &scratch)
                var id = key(k)
                try id.withUTF8 { idBytes in
                    try scratch.withUnsafeBytes { try consume(k, UnsafeRawBufferPointer(idBytes), UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                }
            }
            return
        }
        let shared = Handover()
        let chunks = (count + chunkRows - 1) / chunkRows
        let helper = UncheckedBox((key, encode))
        DispatchQueue.global(qos: .userInitiated).async {
            var scratch: [UInt8] = []
            for c in 0..<chunks {
                let b = shared.buffers[c & 1]
                shared.free[c & 1].wait()
                if shared.cancelled { break }
                b.bytes.removeAll(keepingCapacity: true)
                b.ends.removeAll(keepingCapacity: true)
                for k in (c * chunkRows)..<min(count, (c + 1) * chunkRows) {
                    b.bytes.append(contentsOf: helper.value.0(k).utf8)
                    b.ends.append(b.bytes.count)
                    let n = helper.value.1(k, &scratch)
                    b.bytes.append(contentsOf: scratch[0..<n])
                    b.ends.append(b.bytes.count)
                }
                shared.ready[c & 1].signal()
            }
            shared.finished.signal()
        }
        defer {
            // Stop the helper (if `consume` threw) and wait for it: `encode` may capture memory
            // that is valid only during this call.
            shared.cancelled = true
            shared.free[0].signal(); shared.free[1].signal()
            shared.finished.wait()
        }
        for c in 0..<chunks {
            shared.ready[c & 1].wait()
            let b = shared.buffers[c & 1]
            try b.bytes.withUnsafeBytes { raw in
                try b.ends.withUnsafeBufferPointer { ends in
                    var start = 0
                    for i in 0..<(ends.count / 2) {
                        let keyEnd = ends[2 * i], end = ends[2 * i + 1]
                        try consume(c * chunkRows + i, UnsafeRawBufferPointer(rebasing: raw[start..<keyEnd]),
                                    UnsafeRawBufferPointer(rebasing: raw[keyEnd..<end]))
                        start = end
                    }
                }
            }
            shared.free[c & 1].signal()
        }
    }

    final class Buffer {
        /// Per row: its key's bytes, then its encoded bytes.
        var bytes: [UInt8] = []
        /// Per row: where its key ends and where its bytes end.
        var ends: [Int] = []
    }

    /// State shared by the two threads; every access is ordered by the semaphores.
    final class Handover: @unchecked Sendable {
        let buffers = [Buffer(), Buffer()]
        // Semaphores start at 0 and are signalled up: libdispatch traps when one is destroyed
        // below its initial value.
        let ready = [DispatchSemaphore(value: 0), DispatchSemaphore(value: 0)]
        let free = [DispatchSemaphore(value: 0), DispatchSemaphore(value: 0)]
        let finished = DispatchSemaphore(value: 0)
        /// Written by the consumer before it signals `free`, read by the helper after its wait.
        var cancelled = false
        init() {
            free[0].signal()
            free[1].signal()
        }
    }

    struct UncheckedBox<T>: @unchecked Sendable {
        let value: T
        init(_ value: T) { self.value = value }
    }
}
