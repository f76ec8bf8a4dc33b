import Foundation
import TidepoolEngine

/// JSON forms of what the engine knows, for `/customers/{id}`, `/segments` and `tidepool inspect`.
/// Foundation's JSONSerialization is fine here: one document per request, not per event.
public enum InspectionJSON {
    public static func customer(_ v: CustomerView) -> [String: Any] {
        func time(_ ms: Int64?) -> Any { ms.map { Timestamp.formatRFC3339($0) } ?? NSNull() }
        return [
            "customer_id": v.customerID,
            "partition": ["topic": v.partition.topic, "partition": Int(v.partition.partition)],
            "evaluated_at": Timestamp.formatRFC3339(v.atMs),
            "lifetime": ["events": v.lifetimeEvents, "orders": v.lifetimeOrders, "spend": v.lifetimeSpend.description,
                         "first_seen": time(v.firstSeenMs), "last_seen": time(v.lastSeenMs),
                         "distinct_channels": v.distinctChannels, "owned_share": v.lifetimeOwnedShare ?? NSNull()] as [String: Any],
            "rfm": v.rfm.name,
            "lifecycle": v.lifecycle?.name ?? NSNull(),
            "windows": Dictionary(v.windows, uniquingKeysWith: { a, _ in a }),
            "segments": v.memberships.map { m -> [String: Any] in
                ["segment": m.segment, "member": m.member, "rule": m.rule, "rule_version": m.ruleVersion,
                 "values": m.values, "next_flip": time(m.nextFlipMs)]
            },
            "campaigns": [
                "pending": v.pending.map { ["campaign": $0.campaign, "due": Timestamp.formatRFC3339($0.dueMs)] },
                "history": v.campaigns.map { ["campaign": $0.campaign, "episodes": $0.episodes, "last_contact": time($0.lastContactMs)] as [String: Any] },
                "ledger": v.ledger.map { ["channel": $0.channel, "at": Timestamp.formatRFC3339($0.atMs)] },
                "consented_channels": v.consentedChannels,
                "time_zone": v.timeZone,
            ] as [String: Any],
        ]
    }

    public static func segments(_ c: PipelineCounters) -> [String: Any] {
        ["rules_version": c.rulesVersion,
         "segments": c.segmentSizes.sorted { $0.key < $1.key }.map { ["segment": $0.key, "members": $0.value,
                                                                     "transitions": c.segmentTransitions[$0.key] ?? 0] as [String: Any] }]
    }

    public static func encode(_ object: Any) -> [UInt8] {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted])) ?? Data("{}".utf8)
        return Array(data) + [0x0A]
    }
}
