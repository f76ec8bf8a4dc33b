import Foundation
import Synchronization
import TidepoolEngine

/// UTC offsets from the system's zone database (tzdata), for quiet hours. Fixed offsets such as
/// `+08:00` work too. Zones are looked up once and kept; unknown names give nil (the engine then
/// uses the policy's default zone).
public final class SystemTimeZones: UTCOffsetSource {
    private let cache = Mutex<[String: TimeZone?]>([:])

    public init() {}

    public func offsetSeconds(zone: String, atMs: Int64) -> Int? {
        if let fixed = FixedOffsets.parseOffset(zone) { return fixed }
        let tz: TimeZone? = cache.withLock { c in
            if let hit = c[zone] { return hit }
            let tz = TimeZone(identifier: zone)
            c[zone] = tz
            return tz
        }
        return tz?.secondsFromGMT(for: Date(timeIntervalSince1970: Double(atMs) / 1000))
    }
}
