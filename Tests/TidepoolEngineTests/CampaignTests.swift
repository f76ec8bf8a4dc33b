@testable import TidepoolEngine
import XCTest

/// Campaigns and the contact policy: debounce, cooldown, quiet hours, consent, caps, holdout,
/// priority and stable ids.
final class CampaignTests: XCTestCase {
    let day = AggregateConfig.dayMs
    let hour = AggregateConfig.hourMs
    /// 2026-09-22T02:00:00Z = 10:00 in Shanghai (outside the default quiet hours).
    let t0: Int64 = 1_790_042_400_000
    let p0 = PartitionID(topic: "touchpoints", partition: 0)

    func engine(segments: [(String, String)] = [], campaigns: [CampaignDefinition], policy: ContactPolicy = ContactPolicy(),
                lateness: Int64 = 0) throws -> Engine {
        let agg = AggregateConfig()
        let channels = ChannelTable(agg)
        let set = try SegmentSet(segments.map { SegmentDefinition(name: $0.0, rule: $0.1) }, aggregates: agg, channels: channels)
        let camps = try CampaignSet(campaigns, policy: policy, segments: set, aggregates: agg, channels: channels)
        return Engine(config: EngineConfig(aggregates: agg, segments: set, latenessMs: lateness,
                                           firstPurchase: FirstPurchaseRule(enabled: false), campaigns: camps))
    }

    func event(_ id: String, _ c: String, _ type: EventType, _ ts: Int64, channel: String = "app", props: String? = nil) -> TouchpointEvent {
        TouchpointEvent(eventID: id, customerID: c, type: type, channel: channel, timestampMs: ts,
                        amount: type == .purchase ? Money(major: 100) : nil, currency: type == .purchase ? "CNY" : nil,
                        properties: props.map { RawJSONObject(validated: Array($0.utf8)) })
    }

    func triggers(_ out: [EngineOutput]) -> [Trigger] {
        out.compactMap { if case .trigger(let t) = $0 { return t } else { return nil } }
    }

    func campaign(_ name: String, _ start: CampaignDefinition.Start, channels: [String] = ["wecom"],
                  _ configure: (inout CampaignDefinition) -> Void = { _ in }) -> CampaignDefinition {
        var d = CampaignDefinition(name: name, start: start, channels: channels)
        configure(&d)
        return d
    }

    var noQuiet: ContactPolicy {
        var p = ContactPolicy()
        p.quietStartMinute = 0
        p.quietEndMinute = 0
        return p
    }

    // MARK: - Debounce and delay

    func testAbandonedCartFiresAfterTheDelayUnlessTheCustomerBought() throws {
        let e = try engine(campaigns: [campaign("cart_rescue", .event(.addToCart, channel: nil)) {
            $0.delayMs = 2 * hour
            $0.condition = "count(purchase, 1d) == 0"
        }], policy: noQuiet)
        var out: [EngineOutput] = []
        e.apply(event("a1", "buyer", .addToCart, t0), partition: p0) { out.append($0) }
        e.apply(event("b1", "browser", .addToCart, t0), partition: p0) { out.append($0) }
        e.apply(event("a2", "buyer", .purchase, t0 + hour), partition: p0) { out.append($0) }
        XCTAssertTrue(triggers(out).isEmpty, "nothing is decided before the delay")
        e.advance(p0, to: t0 + 2 * hour) { out.append($0) }
        let t = triggers(out)
        XCTAssertEqual(t.count, 2)
        let buyer = try XCTUnwrap(t.first { $0.customerID == "buyer" })
        XCTAssertEqual(buyer.outcome, .cancelled)
        XCTAssertEqual(buyer.outcomeReason, "condition_lapsed")
        // The explanation, then why it was not sent in parentheses.
        XCTAssertEqual(buyer.reasonDetail, "add_to_cart at \(Timestamp.formatRFC3339(t0)) (condition no longer holds: count(purchase, 1d) == 0)")
        let browser = try XCTUnwrap(t.first { $0.customerID == "browser" })
        XCTAssertEqual(browser.outcome, .sent)
        XCTAssertEqual(browser.firedAtMs, t0 + 2 * hour)
        XCTAssertEqual(browser.expiresAtMs, t0 + 2 * hour + 72 * hour)
        XCTAssertEqual(browser.causeEventID, "b1")
        XCTAssertEqual(browser.channel, "wecom")
        XCTAssertEqual(browser.triggerID, Trigger.id(customerID: "browser", campaign: "cart_rescue", episode: 1))
    }

    func testSegmentCampaignIsCancelledWhenTheCustomerLeftBeforeItWasDue() throws {
        let e = try engine(segments: [("lapsed", "since(last(page_view)) > 14d")],
                           campaigns: [campaign("nudge", .segmentEntered("lapsed")) { $0.delayMs = 2 * day }], policy: noQuiet)
        var out: [EngineOutput] = []
        e.apply(event("a", "c1", .pageView, t0), partition: p0) { out.append($0) }
        e.apply(event("b", "c2", .pageView, t0), partition: p0) { out.append($0) }
        e.advance(p0, to: t0 + 15 * day) { out.append($0) }
        e.apply(event("c", "c1", .pageView, t0 + 15 * day), partition: p0) { out.append($0) }  // c1 is back
        e.advance(p0, to: t0 + 17 * day) { out.append($0) }
        let t = triggers(out)
        XCTAssertEqual(t.first { $0.customerID == "c1" }?.outcome, .cancelled)
        XCTAssertEqual(t.first { $0.customerID == "c2" }?.outcome, .sent)
        XCTAssertEqual(t.first { $0.customerID == "c2" }?.firedAtMs, t0 + 14 * day + 1 + 2 * day)
    }

    /// The explanation writes values as UTF-8 straight into its buffer: the same text as
    /// `description`, for every kind of value.
    func testExplanationValuesAreWrittenAsTheirDescription() {
        var values: [RuleValue] = [.bool(true), .bool(false), .missing, .text("gold"), .time(t0), .time(t0 + 1),
                                   .duration(14 * day + 1), .money(12_345_600), .money(-5), .number(0.5), .number(1e15),
                                   .number(-1e15 + 1), .number(-0.0), .number(.infinity), .number(.nan)]
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<500 { values.append(.number(Double(Int64.random(in: -2_000_000_000_000...2_000_000_000_000, using: &rng)))) }
        for v in values {
            var bytes: [UInt8] = Array("x = ".utf8)
            v.appendDescription(to: &bytes)
            XCTAssertEqual(String(decoding: bytes, as: UTF8.self), "x = \(v.description)")
        }
    }

    // MARK: - Winback on dormancy, without any further event

    func testWinbackFiresForACustomerWhoSendsNothingMore() throws {
        let e = try engine(segments: [("dormant_buyer", "orders() >= 1 and since(last()) > 30d")],
                           campaigns: [campaign("winback", .segmentEntered("dormant_buyer")) { $0.snapshot = ["orders()", "since(last())"] }],
                           policy: noQuiet)
        var out: [EngineOutput] = []
        e.apply(event("p", "c1", .purchase, t0), partition: p0) { out.append($0) }
        e.advance(p0, to: t0 + 30 * day) { out.append($0) }
        XCTAssertTrue(triggers(out).isEmpty)
        e.advance(p0, to: t0 + 31 * day) { out.append($0) }
        let t = try XCTUnwrap(triggers(out).first)
        XCTAssertEqual(t.outcome, .sent)
        XCTAssertNil(t.causeEventID, "time alone made the customer dormant")
        XCTAssertEqual(t.firedAtMs, t0 + 30 * day + 1)
        XCTAssertEqual(t.reasonKind, "segment_entered")
        XCTAssertEqual(t.reasonDetail, "entered dormant_buyer at \(Timestamp.formatRFC3339(t0 + 30 * day + 1)): "
                       + "orders() = 1, since(last()) = \(RuleValue.duration(30 * day + 1))")
        XCTAssertEqual(t.snapshot.map(\.0), ["orders()", "since(last())"])
        XCTAssertEqual(t.snapshot.first?.1, .int(1))
    }

    func testLifecycleCampaignUsesTheImpliedSegment() throws {
        var d = CampaignDefinition(name: "dormant_hello", start: .lifecycle("dormant"), channels: ["wecom"])
        d.cooldownMs = 365 * day
        let agg = AggregateConfig()
        let channels = ChannelTable(agg)
        let segs = [SegmentDefinition(name: d.startSegment!, rule: "lifecycle() == dormant")]
        let set = try SegmentSet(segs, aggregates: agg, channels: channels)
        let camps = try CampaignSet([d], policy: noQuiet, segments: set, aggregates: agg, channels: channels)
        let e = Engine(config: EngineConfig(aggregates: agg, segments: set, firstPurchase: FirstPurchaseRule(enabled: false), campaigns: camps))
        var out: [EngineOutput] = []
        e.apply(event("p", "c1", .purchase, t0), partition: p0) { out.append($0) }
        e.advance(p0, to: t0 + 200 * day) { out.append($0) }
        let t = triggers(out)
        XCTAssertEqual(t.map(\.outcome), [.sent])
        XCTAssertEqual(t.first?.reasonKind, "lifecycle")
    }

    // MARK: - Cooldown and stable ids

    func testCooldownSuppressesAndEpisodesGiveNewIds() throws {
        let e = try engine(campaigns: [campaign("visit_thanks", .event(.pageView, channel: nil)) { $0.cooldownMs = 7 * day }],
                           policy: noQuiet)
        var out: [EngineOutput] = []
        for (i, d) in [0, 1, 8].enumerated() {
            e.apply(event("v\(i)", "c1", .pageView, t0 + Int64(d) * day), partition: p0) { out.append($0) }
        }
        let t = triggers(out)
        XCTAssertEqual(t.map(\.outcome), [.sent, .suppressed, .sent])
        XCTAssertEqual(t[1].outcomeReason, "cooldown")
        XCTAssertEqual(t.map(\.episode), [1, 2, 3])
        XCTAssertEqual(Set(t.map(\.triggerID)).count, 3)

        // A replay of the same input gives the same ids.
        let replay = try engine(campaigns: [campaign("visit_thanks", .event(.pageView, channel: nil)) { $0.cooldownMs = 7 * day }],
                                policy: noQuiet)
        var again: [EngineOutput] = []
        for (i, d) in [0, 1, 8].enumerated() {
            replay.apply(event("v\(i)", "c1", .pageView, t0 + Int64(d) * day), partition: p0) { again.append($0) }
        }
        XCTAssertEqual(triggers(again), t)
    }

    // MARK: - Quiet hours

    func testQuietHoursDeferToTheEndOfTheWindowInTheCustomersZone() throws {
        let e = try engine(campaigns: [campaign("hello", .event(.pageView, channel: nil)) { $0.cooldownMs = 0 }])
        // 2026-09-22T14:00:00Z = 22:00 in Shanghai (quiet until 09:00 = 01:00Z next day);
        // a customer in London (+01:00 in September) is at 15:00 and is contacted at once.
        let late = t0 + 12 * hour
        var out: [EngineOutput] = []
        e.apply(event("z", "london", .profileUpdate, late - hour, props: #"{"time_zone":"+01:00"}"#), partition: p0) { out.append($0) }
        e.apply(event("a", "shanghai", .pageView, late), partition: p0) { out.append($0) }
        e.apply(event("b", "london", .pageView, late), partition: p0) { out.append($0) }
        XCTAssertEqual(triggers(out).map(\.customerID), ["london"])
        let deferred = out.compactMap { if case .deferred(let c, let id, let until) = $0 { return (c, id, until) } else { return nil } }
        XCTAssertEqual(deferred.count, 1)
        XCTAssertEqual(deferred.first?.1, "shanghai")
        let nineAM = t0 + 23 * hour  // 2026-09-23T01:00:00Z
        XCTAssertEqual(deferred.first?.2, nineAM)
        e.advance(p0, to: nineAM - 1) { out.append($0) }
        XCTAssertEqual(triggers(out).count, 1, "still quiet")
        e.advance(p0, to: nineAM) { out.append($0) }
        let sent = triggers(out).last!
        XCTAssertEqual(sent.customerID, "shanghai")
        XCTAssertEqual(sent.outcome, .sent)
        XCTAssertEqual(sent.firedAtMs, nineAM)
        XCTAssertTrue(sent.reasonDetail.contains("deferred out of quiet hours"))
    }

    func testQuietHoursWindowArithmetic() {
        // 21:00-09:00 at +08:00.
        let off = 8 * 3600
        let utcMidnight: Int64 = 1_790_035_200_000  // 2026-09-22T00:00:00Z = 08:00 local
        XCTAssertEqual(QuietHours.end(of: utcMidnight, offsetSeconds: off, startMinute: 1260, endMinute: 540), utcMidnight + hour)
        XCTAssertNil(QuietHours.end(of: utcMidnight + hour, offsetSeconds: off, startMinute: 1260, endMinute: 540))
        XCTAssertNil(QuietHours.end(of: utcMidnight + 13 * hour - 1, offsetSeconds: off, startMinute: 1260, endMinute: 540))
        XCTAssertEqual(QuietHours.end(of: utcMidnight + 13 * hour, offsetSeconds: off, startMinute: 1260, endMinute: 540),
                       utcMidnight + 25 * hour)
        // A window inside one day (12:00-14:00) and none.
        XCTAssertEqual(QuietHours.end(of: utcMidnight + 4 * hour, offsetSeconds: off, startMinute: 720, endMinute: 840), utcMidnight + 6 * hour)
        XCTAssertNil(QuietHours.end(of: utcMidnight, offsetSeconds: off, startMinute: 0, endMinute: 0))
        XCTAssertEqual(FixedOffsets.parseOffset("-05:30"), -(5 * 3600 + 1800))
        XCTAssertEqual(FixedOffsets.parseOffset("UTC+8"), 8 * 3600)
        XCTAssertNil(FixedOffsets.parseOffset("Mars/Olympus"))
    }

    // MARK: - Consent

    func testConsentWithdrawalIsRespectedFromTheNextEventOn() throws {
        let e = try engine(campaigns: [campaign("promo", .event(.pageView, channel: nil), channels: ["sms", "wecom"]) { $0.cooldownMs = 0 }],
                           policy: { var p = noQuiet; p.caps = []; return p }())
        var out: [EngineOutput] = []
        // sms needs opt-in: without it the campaign falls back to wecom.
        e.apply(event("v1", "c1", .pageView, t0), partition: p0) { out.append($0) }
        e.apply(event("g", "c1", .consent, t0 + 1, channel: "sms", props: #"{"status":"granted"}"#), partition: p0) { out.append($0) }
        e.apply(event("v2", "c1", .pageView, t0 + 2), partition: p0) { out.append($0) }
        e.apply(event("w1", "c1", .consent, t0 + 3, props: #"{"status":"withdrawn","channel":"sms"}"#), partition: p0) { out.append($0) }
        e.apply(event("v3", "c1", .pageView, t0 + 4), partition: p0) { out.append($0) }
        e.apply(event("w2", "c1", .consent, t0 + 5, channel: "wecom", props: #"{"status":"withdrawn"}"#), partition: p0) { out.append($0) }
        e.apply(event("v4", "c1", .pageView, t0 + 6), partition: p0) { out.append($0) }
        let t = triggers(out)
        XCTAssertEqual(t.map(\.channel), ["wecom", "sms", "wecom", "sms"])
        XCTAssertEqual(t.map(\.outcome), [.sent, .sent, .sent, .suppressed])
        XCTAssertEqual(t.last?.outcomeReason, "no_consent")
    }

    // MARK: - Caps

    func testCapsAreNeverExceededOverLongRandomStreams() throws {
        var policy = noQuiet
        policy.caps = [ContactPolicy.Cap(channel: "sms", max: 2, windowMs: 7 * day),
                       ContactPolicy.Cap(channel: "wecom", max: 1, windowMs: day),
                       ContactPolicy.Cap(channel: nil, max: 3, windowMs: 7 * day)]
        policy.optInChannels = []
        let camps = [
            campaign("browse", .event(.pageView, channel: nil), channels: ["wecom", "sms"]) { $0.cooldownMs = 0 },
            campaign("cart", .event(.addToCart, channel: nil), channels: ["sms"]) { $0.cooldownMs = hour; $0.priority = 5 },
            campaign("buyer", .segmentEntered("repeat"), channels: ["wecom"]) { $0.cooldownMs = 0 },
        ]
        let e = try engine(segments: [("repeat", "count(purchase, 30d) >= 2")], campaigns: camps, policy: policy)
        var rng = SplitMix(seed: 42)
        var out: [EngineOutput] = []
        var t = t0
        let types: [EventType] = [.pageView, .pageView, .addToCart, .purchase]
        for i in 0..<20_000 {
            t += Int64(rng.next() % 600_000)
            let c = "c\(rng.next() % 50)"
            e.apply(event("e\(i)", c, types[Int(rng.next() % 4)], t), partition: p0) { out.append($0) }
        }
        let all = triggers(out)
        let sent = all.filter { $0.outcome == .sent }
        XCTAssertGreaterThan(sent.count, 500)
        XCTAssertGreaterThan(all.filter { $0.outcome == .capped }.count, 500, "the stream must push against the caps")
        for (customer, list) in Dictionary(grouping: sent, by: \.customerID) {
            for cap in policy.caps {
                let times = list.filter { cap.channel == nil || $0.channel == cap.channel }.map(\.firedAtMs).sorted()
                // Any max+1 consecutive contacts must span at least the window.
                if times.count > cap.max {
                    for j in cap.max..<times.count {
                        XCTAssertGreaterThanOrEqual(times[j] - times[j - cap.max], cap.windowMs,
                                                    "\(customer): \(cap.channel ?? "all") over \(cap.max) per \(cap.windowMs)")
                    }
                }
            }
        }
    }

    func testPriorityDecidesWhoGetsTheLastContact() throws {
        var policy = noQuiet
        policy.caps = [ContactPolicy.Cap(channel: nil, max: 1, windowMs: day)]
        let camps = [
            campaign("low", .event(.addToCart, channel: nil)) { $0.priority = 1 },
            campaign("high", .event(.addToCart, channel: nil)) { $0.priority = 9 },
        ]
        let e = try engine(campaigns: camps, policy: policy)
        var out: [EngineOutput] = []
        e.apply(event("a", "c1", .addToCart, t0), partition: p0) { out.append($0) }
        let t = triggers(out)
        XCTAssertEqual(t.map(\.campaign), ["high", "low"])
        XCTAssertEqual(t.map(\.outcome), [.sent, .capped])
    }

    // MARK: - Holdout

    func testHoldoutShareIsWithinOnePercentAndStable() throws {
        let camps = [campaign("welcome", .event(.signup, channel: nil)) { $0.holdoutBasisPoints = 1000 }]
        func run() throws -> Set<String> {
            let e = try engine(campaigns: camps, policy: noQuiet)
            var held = Set<String>()
            var sent = 0
            for i in 0..<100_000 {
                e.apply(event("s\(i)", "cust-\(i)", .signup, t0), partition: p0) { o in
                    if case .trigger(let t) = o { if t.outcome == .heldOut { held.insert(t.customerID) } else if t.outcome == .sent { sent += 1 } }
                }
            }
            XCTAssertEqual(held.count + sent, 100_000)
            return held
        }
        let first = try run()
        let share = Double(first.count) / 100_000
        XCTAssertEqual(share, 0.10, accuracy: 0.01)
        XCTAssertEqual(try run(), first, "the same customers are held out in every run")
    }

    /// The bucket is the hash of "holdout", the campaign and the customer id joined by NUL bytes
    /// (as it was computed before it was taken part by part): the same customers stay held out
    /// across an upgrade. Ids of every length, multi-byte characters, an empty campaign.
    func testHoldoutBucketIsTheHashOfTheJoinedParts() {
        var ids = ["", "c", "cust-1", "客户-七", String(repeating: "x", count: 40)]
        var rng = SplitMix(seed: 7)
        for _ in 0..<200 { ids.append("c\(rng.next() % 1_000_000_007)") }
        for campaign in ["", "winback", "dormant_buyer_sms", "双十一召回"] {
            for id in ids {
                let joined = Int(StableHash.hash64(Array("holdout\u{0}\(campaign)\u{0}\(id)".utf8)) % 10_000)
                XCTAssertEqual(CampaignSet.holdoutBucket(customerID: id, campaign: campaign), joined, "\(campaign) / \(id)")
            }
        }
    }

    // MARK: - Checkpoints keep campaign state

    /// Contact state is a value: a copy (a checkpoint snapshot holds one) never sees later writes,
    /// and writes to an unshared state land in place.
    func testContactStateCopiesOnlyWhenShared() {
        var live = ContactState()
        live.ledger.append(ContactEntry(channel: 1, atMs: 10))
        let snapshot = live
        live.ledger.append(ContactEntry(channel: 2, atMs: 20))
        live.consentGranted = 0b110
        live.marks.append(CampaignMark(campaign: 7, episodes: 1, lastContactMs: 20))
        XCTAssertEqual(snapshot.ledger, [ContactEntry(channel: 1, atMs: 10)])
        XCTAssertEqual(snapshot.consentGranted, 0)
        XCTAssertTrue(snapshot.marks.isEmpty)
        XCTAssertEqual(live.ledger.count, 2)
        var other = snapshot
        other.ledger.removeAll()
        XCTAssertEqual(snapshot.ledger.count, 1, "a write through another copy does not reach the snapshot")
        XCTAssertTrue(other.ledger.isEmpty)
    }

    func testPendingEpisodesSurviveACheckpointRestore() throws {
        let camps = [campaign("cart_rescue", .event(.addToCart, channel: nil)) { $0.delayMs = 2 * hour }]
        let e = try engine(campaigns: camps, policy: noQuiet)
        e.apply(event("c", "c1", .addToCart, t0), partition: p0) { _ in }
        e.apply(event("g", "c1", .consent, t0 + 1, channel: "sms", props: #"{"status":"granted","time_zone":"Asia/Tokyo"}"#), partition: p0) { _ in }
        let snap = try XCTUnwrap(e.takeCheckpoint(p0))
        let blob = try XCTUnwrap(snap.upserts.first?.1)
        let decoded = try CustomerRecordCodec.decode(blob)
        XCTAssertEqual(decoded.contact, e.record("c1")?.contact)
        XCTAssertEqual(decoded.contact.timeZone, "Asia/Tokyo")
        XCTAssertEqual(decoded.contact.pending.count, 1)

        let restored = try engine(campaigns: camps, policy: noQuiet)
        try restored.restore(p0, maxEventTimeMs: snap.maxEventTimeMs, streamTimeMs: snap.streamTimeMs, stats: snap.stats,
                             customers: snap.upserts)
        var out: [EngineOutput] = []
        restored.advance(p0, to: t0 + 2 * hour) { out.append($0) }
        XCTAssertEqual(triggers(out).map(\.outcome), [.sent])
        XCTAssertEqual(triggers(out).first?.causeEventID, "c")
    }
}

/// A small deterministic generator for randomized tests.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
