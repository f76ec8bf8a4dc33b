import Foundation

/// Names the calling thread for `top -H`, `ps -L` and perf (Linux keeps 15 bytes). Here because
/// this is the lowest module that starts threads (`HelperThread`); the daemon's use it too.
///
/// Why not `Thread.current.name = ...` alone: Foundation applies the name to the OS thread only
/// once the parent has recorded the new thread's handle, and a thread that names itself before
/// that keeps the parent's name (seen: a `tp-shard-1` listed as `tidepool` in about one start in
/// four). `pthread_setname_np` is not visible to Swift on glibc (declared only under
/// `_GNU_SOURCE`), so the name goes to the kernel through `/proc/thread-self/comm`.
public func nameCurrentThread(_ name: String) {
    Thread.current.name = name
    let fd = open("/proc/thread-self/comm", O_WRONLY)
    guard fd >= 0 else { return }
    let bytes = Array(name.utf8.prefix(15))
    _ = bytes.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count) }
    close(fd)
}
