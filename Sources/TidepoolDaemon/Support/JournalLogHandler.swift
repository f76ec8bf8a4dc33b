import Foundation
import Logging

/// swift-log handler for systemd: one line per record on stderr. Under systemd (JOURNAL_STREAM is
/// set) each line starts with the syslog priority `<N>`, which journald turns into the entry's
/// PRIORITY, and carries no timestamp (journald adds it). Elsewhere lines carry an RFC 3339 time.
/// Metadata is written as `key=value` pairs after the message.
public struct JournalLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    private let label: String
    private let journald: Bool

    public init(label: String, level: Logger.Level = .info) {
        self.label = label
        self.logLevel = level
        self.journald = ProcessInfo.processInfo.environment["JOURNAL_STREAM"] != nil
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var all = metadata
        if let m = event.metadata { for (k, v) in m { all[k] = v } }
        var line = ""
        if journald {
            line = "<\(Self.priority(event.level))>"
        } else {
            line = "\(TidepoolLogTime.now()) \(event.level) "
        }
        line += event.message.description
        for (k, v) in all.sorted(by: { $0.key < $1.key }) { line += " \(k)=\(v)" }
        line += "\n"
        FileHandle.standardError.write(line.data(using: .utf8)!)
    }

    static func priority(_ l: Logger.Level) -> Int {
        switch l {
        case .trace, .debug: return 7
        case .info: return 6
        case .notice: return 5
        case .warning: return 4
        case .error: return 3
        case .critical: return 2
        }
    }
}

enum TidepoolLogTime {
    static func now() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = time_t(ts.tv_sec)
        var tmv = tm()
        gmtime_r(&t, &tmv)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tmv.tm_year + 1900, tmv.tm_mon + 1, tmv.tm_mday,
                      tmv.tm_hour, tmv.tm_min, tmv.tm_sec, Int(ts.tv_nsec / 1_000_000))
    }
}
