/// Campaign episodes: started by segment transitions and events, decided when due.
///
/// A decision runs these checks in order, and the first that fails is the outcome:
/// 1. debounce: the start condition (still in the entered segment, still out of the exited one)
///    and the campaign's `condition` hold now, else `cancelled` (condition_lapsed);
/// 2. re-eligibility: no contact of this campaign within its cooldown, else `suppressed` (cooldown);
/// 3. quiet hours in the customer's zone: if now is inside them the episode is deferred to their
///    end and decided again then (all checks rerun);
/// 4. channel: the first channel in the campaign's list with consent and under its caps, with the
///    global caps respected; else `capped` (some consented channel was capped) or `suppressed`
///    (no_consent);
/// 5. holdout: members of the control group are `held_out` (they count for cooldown, not for caps);
/// 6. `sent`: the contact goes into the customer's ledger.
/// Episodes due at the same instant are decided in priority order (higher first), so the higher
/// priority campaign gets the contact budget. Every decision gets the next episode number and so a
/// new stable trigger id.
extension Engine {
    /// Starts the campaigns that listen to a segment change.
    func startSegmentCampaigns(_ ps: inout PartitionState, slot: Int, segment i: Int, entered: Bool, at t: Int64, cause: String?) {
        let list = entered ? config.campaigns.onEnter[i] : config.campaigns.onExit[i]
        for c in list { addPending(&ps, slot: slot, campaign: c, at: t, cause: cause) }
    }

    /// Starts the campaigns that listen to an applied event.
    func startEventCampaigns(_ ps: inout PartitionState, slot: Int, event e: TouchpointEvent, channel: UInt8, at t: Int64) {
        let list = config.campaigns.onEvent[Int(e.type.rawValue)]
        guard !list.isEmpty else { return }
        for c in list where config.campaigns.campaigns[c].eventChannel.map({ $0 == channel }) ?? true {
            addPending(&ps, slot: slot, campaign: c, at: t, cause: e.eventID)
        }
    }

    /// One pending episode per campaign and customer: a start while one is pending is absorbed.
    private func addPending(_ ps: inout PartitionState, slot: Int, campaign c: Int, at t: Int64, cause: String?) {
        let camp = config.campaigns.campaigns[c]
        if ps.customers[slot].contact.pending.contains(where: { $0.campaign == camp.nameHash }) { return }
        ps.customers[slot].contact.pending.append(
            PendingTrigger(campaign: camp.nameHash, dueMs: t + camp.delayMs, startedAtMs: t, causeEventID: cause))
    }

    /// Decides every pending episode due by `t`. `bits` are the customer's memberships at `t`.
    func decideDue(_ ps: inout PartitionState, slot: Int, at t: Int64, memberships bits: UInt64, emit: (EngineOutput) -> Void) {
        guard ps.customers[slot].contact.pending.contains(where: { $0.dueMs <= t }) else { return }
        var due: [(Int, PendingTrigger)] = []
        ps.customers[slot].contact.pending.removeAll { p in
            guard p.dueMs <= t else { return false }
            // A campaign removed from the configuration: its pending episodes go with it.
            if let c = config.campaigns.index(of: p.campaign) { due.append((c, p)) }
            return true
        }
        let camps = config.campaigns.campaigns
        due.sort { camps[$0.0].priority != camps[$1.0].priority ? camps[$0.0].priority > camps[$1.0].priority : $0.0 < $1.0 }
        for (c, p) in due { decide(&ps, slot: slot, campaign: c, pending: p, at: t, memberships: bits, emit: emit) }
    }

    private func decide(_ ps: inout PartitionState, slot: Int, campaign c: Int, pending p: PendingTrigger, at t: Int64,
                        memberships bits: UInt64, emit: (EngineOutput) -> Void) {
        let camp = config.campaigns.campaigns[c]
        let id = ps.ids[slot]
        let segs = config.segments
        let ctx = RuleContext(aggregates: ps.customers[slot].aggregates, now: t, channels: channels, memberships: bits,
                              models: segs.models, returnedAtMs: ps.customers[slot].returnedAtMs)

        // 1. Debounce.
        var lapsed: String? = nil
        if let s = camp.startSegment, (bits & (1 << UInt64(s)) != 0) != camp.entered {
            lapsed = camp.entered ? "no longer in \(segs.segments[s].name)" : "back in \(segs.segments[s].name)"
        } else if let cond = camp.condition, RuleEvaluator.value(cond, ctx) != .bool(true) {
            lapsed = "condition no longer holds: \(RuleExplainer.render(cond, nil, segs.segments.map(\.name)))"
        }
        let mark = ps.customers[slot].contact.markIndex(camp.nameHash)
        let lastContact = mark.map { ps.customers[slot].contact.marks[$0].lastContactMs } ?? .min

        func record(_ outcome: TriggerOutcome, _ reason: String?, channel: UInt8, note: String? = nil) {
            let episode: Int
            if let m = mark {
                ps.customers[slot].contact.marks[m].episodes += 1
                episode = Int(ps.customers[slot].contact.marks[m].episodes)
                if outcome == .sent || outcome == .heldOut { ps.customers[slot].contact.marks[m].lastContactMs = t }
            } else {
                let contacted = outcome == .sent || outcome == .heldOut
                ps.customers[slot].contact.marks.append(CampaignMark(campaign: camp.nameHash, episodes: 1, lastContactMs: contacted ? t : .min))
                episode = 1
            }
            let detail = explain(camp, p, ctx, note: note)
            emit(.trigger(Trigger(
                triggerID: Trigger.id(customerID: id, campaign: camp.name, episode: episode), campaign: camp.name,
                customerID: id, channel: channels.names[Int(channel)], reasonKind: camp.reasonKind, reasonDetail: detail,
                causeEventID: p.causeEventID, episode: episode, firedAtMs: t, expiresAtMs: t + camp.ttlMs,
                snapshot: camp.snapshot.map { ($0.0, SnapshotValue(RuleEvaluator.value($0.1, ctx))) },
                outcome: outcome, outcomeReason: reason)))
        }

        if let lapsed { return record(.cancelled, "condition_lapsed", channel: camp.channels[0], note: lapsed) }
        // 2. Re-eligibility.
        if lastContact != .min && t < lastContact + camp.cooldownMs {
            return record(.suppressed, "cooldown", channel: camp.channels[0],
                          note: "last contact \(DurationText.format(t - lastContact)) ago, cooldown \(DurationText.format(camp.cooldownMs))")
        }
        // 3. Quiet hours, in the customer's zone.
        if camp.quietHours && config.campaigns.policy.hasQuietHours {
            let policy = config.campaigns.policy
            let zone = ps.customers[slot].contact.timeZone
            let offset = (zone.isEmpty ? nil : offsets.offsetSeconds(zone: zone, atMs: t))
                ?? offsets.offsetSeconds(zone: policy.defaultTimeZone, atMs: t) ?? 0
            if let end = QuietHours.end(of: t, offsetSeconds: offset, startMinute: policy.quietStartMinute,
                                        endMinute: policy.quietEndMinute) {
                var q = p
                q.dueMs = end
                q.deferrals &+= 1
                ps.customers[slot].contact.pending.append(q)
                emit(.deferred(campaign: camp.name, customerID: id, untilMs: end))
                return
            }
        }
        // 4. Channel: consent, then caps. Read in a closure so that the copy of the contact state
        // is released before the decision writes to it (holding it made every write copy the
        // storage).
        let caps = config.campaigns.caps, optInMask = config.campaigns.optInMask
        let (chosen, cappedNote): (UInt8?, String?) = { (contact: ContactState) in
            var chosen: UInt8? = nil
            var cappedNote: String? = nil
            for cap in caps where cap.channel == nil && contact.contacts(channel: nil, windowMs: cap.windowMs, at: t) >= cap.max {
                cappedNote = "global cap \(cap.max) per \(DurationText.format(cap.windowMs))"
                break
            }
            if cappedNote == nil {
                for ch in camp.channels {
                    guard contact.consented(ch, optInMask: optInMask) else { continue }
                    if let cap = caps.first(where: { $0.channel == ch && contact.contacts(channel: ch, windowMs: $0.windowMs, at: t) >= $0.max }) {
                        cappedNote = cappedNote ?? "\(channels.names[Int(ch)]) cap \(cap.max) per \(DurationText.format(cap.windowMs))"
                        continue
                    }
                    chosen = ch
                    break
                }
            }
            return (chosen, cappedNote)
        }(ps.customers[slot].contact)
        guard let ch = chosen else {
            if let cappedNote { return record(.capped, "capped", channel: camp.channels[0], note: cappedNote) }
            return record(.suppressed, "no_consent", channel: camp.channels[0], note: "no consent on any of its channels")
        }
        // 5. Holdout.
        if camp.holdoutBasisPoints > 0 && CampaignSet.holdoutBucket(customerID: id, campaign: camp.name) < camp.holdoutBasisPoints {
            return record(.heldOut, "holdout", channel: ch)
        }
        // 6. Sent.
        let horizon = t - config.campaigns.longestCapWindowMs
        ps.customers[slot].contact.ledger.removeAll { $0.atMs <= horizon }
        ps.customers[slot].contact.ledger.append(ContactEntry(channel: ch, atMs: t))
        record(.sent, nil, channel: ch)
    }

    /// The trigger's `reason.detail`: "entered winback at <time>: in_segment(repeat_buyer) =
    /// true, ..." or "add_to_cart at <time>". Written as UTF-8 into one buffer and made a String
    /// once: with string interpolation and a joined array of "name = value" strings it was ~4k
    /// instructions, a third of a campaign decision (callgrind, `BENCH_ONLY=campaigns`).
    /// A `note` (why it was not sent) follows in parentheses.
    private func explain(_ camp: CampaignSet.Compiled, _ p: PendingTrigger, _ ctx: RuleContext, note: String?) -> String {
        var text: [UInt8] = []
        text.reserveCapacity(160)
        text.append(contentsOf: camp.explanationLead)
        Timestamp.appendRFC3339(p.startedAtMs, to: &text)
        if let s = camp.startSegment {
            for (n, (name, e)) in config.segments.explanationParts[s].enumerated() {
                text.append(contentsOf: n == 0 ? [0x3A, 0x20] : [0x2C, 0x20])  // ": " then ", "
                text.append(contentsOf: name.utf8)
                text.append(contentsOf: [0x20, 0x3D, 0x20])  // " = "
                RuleEvaluator.value(e, ctx).appendDescription(to: &text)
            }
        }
        if p.deferrals > 0 { text.append(contentsOf: "; deferred out of quiet hours".utf8) }
        if let note {
            text.append(contentsOf: [0x20, 0x28])  // " ("
            text.append(contentsOf: note.utf8)
            text.append(0x29)  // ")"
        }
        return String(decoding: text, as: UTF8.self)
    }
}

extension RuleValue {
    /// `description`'s UTF-8, appended. A time is written in place: its 24 characters are too
    /// long for a small (inline) String, so `description` would allocate one.
    func appendDescription(to out: inout [UInt8]) {
        if case .time(let ms) = self { return Timestamp.appendRFC3339(ms, to: &out) }
        out.append(contentsOf: description.utf8)
    }
}

extension CampaignSet {
    func index(of nameHash: UInt64) -> Int? { campaigns.firstIndex { $0.nameHash == nameHash } }

    /// The customer's holdout bucket for a campaign, 0..<10_000 (basis points), from a stable hash:
    /// the same customer is in or out of a campaign's control group in every run and on every host.
    /// (The hash of "holdout", the campaign and the id joined by NUL bytes, taken part by part:
    /// the joined String and its byte array were two allocations in every decision that got here.)
    public static func holdoutBucket(customerID: String, campaign: String) -> Int {
        var h = StableHash.Parts64()
        h.add("holdout")
        h.add(campaign)
        h.add(customerID)
        return Int(h.value % 10_000)
    }
}

extension SnapshotValue {
    init(_ v: RuleValue) {
        switch v {
        case .number(let d): self = RuleValue.whole(d).map { .int($0) } ?? .text(String(d))
        case .money(let u): self = .money(Money(units: u))
        case .time(let ms): self = .time(ms)
        default: self = .text(v.description)
        }
    }
}

extension CampaignSet: Equatable {
    public static func == (a: CampaignSet, b: CampaignSet) -> Bool { a.definitions == b.definitions && a.policy == b.policy }
}
