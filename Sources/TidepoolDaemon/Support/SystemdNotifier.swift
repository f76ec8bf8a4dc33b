import Foundation

/// The sd_notify protocol, written here in a few lines rather than linking libsystemd: one
/// datagram per message to the socket named by NOTIFY_SOCKET (a path, or `@name` for the abstract
/// namespace). Without NOTIFY_SOCKET (not under systemd) every call does nothing.
public final class SystemdNotifier: @unchecked Sendable {
    private let fd: Int32
    private var address = sockaddr_un()
    private let addressLength: socklen_t
    /// Half of WATCHDOG_USEC, the interval at which `watchdog()` should be called (nil: no watchdog).
    public let watchdogIntervalNs: UInt64?
    private var lastPingNs: UInt64 = 0
    private let lock = NSLock()

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        if let usec = environment["WATCHDOG_USEC"].flatMap(UInt64.init), usec > 0,
           environment["WATCHDOG_PID"].map({ $0 == String(getpid()) }) ?? true {
            watchdogIntervalNs = usec * 1000 / 2
        } else {
            watchdogIntervalNs = nil
        }
        guard let path = environment["NOTIFY_SOCKET"], !path.isEmpty, path.utf8.count < 108 else {
            fd = -1
            addressLength = 0
            return
        }
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }  // abstract namespace
        withUnsafeMutableBytes(of: &address.sun_path) { dst in
            for (i, b) in bytes.enumerated() { dst[i] = b }
        }
        addressLength = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
    }

    deinit { if fd >= 0 { close(fd) } }

    public var enabled: Bool { fd >= 0 }

    /// Sends `state` (e.g. "READY=1", "STATUS=...", "STOPPING=1").
    public func notify(_ state: String) {
        guard fd >= 0 else { return }
        lock.lock()
        defer { lock.unlock() }
        var addr = address
        _ = state.withCString { p in
            withUnsafePointer(to: &addr) { ap in
                ap.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                    sendto(fd, p, strlen(p), Int32(MSG_NOSIGNAL), sa, addressLength)
                }
            }
        }
    }

    /// Feeds the watchdog when half its interval has passed. Call it from the main processing
    /// loop: if that loop stalls, systemd notices and restarts the service.
    public func watchdog(nowNs: UInt64 = WallClock.monotonicNs()) {
        guard let interval = watchdogIntervalNs, nowNs - lastPingNs >= interval else { return }
        lastPingNs = nowNs
        notify("WATCHDOG=1")
    }
}
