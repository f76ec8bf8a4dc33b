import Foundation

/// Names the calling thread for `top -H`, `ps -L` and perf (Linux keeps 15 bytes).
///
/// Why not `Thread.current.name = ...` alone: Foundation applies the name to the OS thread only
/// once the parent has recorded the new thread's handle, and a thread that sets its own name
/// before that keeps the parent's name (seen: a `tp-shard-1` listed as `tidepool` in about one
/// start in four).
func nameCurrentThread(_ name: String) {
    Thread.current.name = name
    _ = pthread_setname_np(pthread_self(), String(name.utf8.prefix(15))!)
}
