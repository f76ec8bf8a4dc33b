/// A campaign episode waiting for its delay (or the end of quiet hours) to pass.
public struct PendingTrigger: Sendable, Equatable {
    /// Stable hash of the campaign's name (survives configuration changes that reorder campaigns).
    public var campaign: UInt64
    public var dueMs: Int64
    /// When the campaign started (the transition or event), stream time.
    public var startedAtMs: Int64
    /// The event that started it; nil when time alone did (a segment entered by a timer).
    public var causeEventID: String?
    /// Times it was deferred out of quiet hours.
    public var deferrals: UInt8 = 0
}

/// What the customer last got from one campaign.
public struct CampaignMark: Sendable, Equatable {
    public var campaign: UInt64
    /// Decisions made so far (the last episode number).
    public var episodes: UInt32
    /// Last contact (sent or held out), stream time; .min: never.
    public var lastContactMs: Int64
}

/// One message sent, for the contact-pressure ledger.
public struct ContactEntry: Sendable, Equatable {
    public var channel: UInt8
    public var atMs: Int64
}

/// Per-customer campaign state: pending episodes, what each campaign did, the contact ledger,
/// consent per channel and the customer's time zone. Empty (and cheap) for customers no campaign
/// has touched.
public struct ContactState: Sendable, Equatable {
    public var pending: [PendingTrigger] = []
    public var marks: [CampaignMark] = []
    /// Contacts sent within the longest cap window, oldest first.
    public var ledger: [ContactEntry] = []
    /// Bit per channel index: explicit consent granted / withdrawn (the latest event wins).
    public var consentGranted: UInt64 = 0
    public var consentWithdrawn: UInt64 = 0
    /// IANA zone or fixed offset from the customer's events; "" for the policy's default.
    public var timeZone: String = ""

    public init() {}

    var isEmpty: Bool {
        pending.isEmpty && marks.isEmpty && ledger.isEmpty && consentGranted == 0 && consentWithdrawn == 0 && timeZone.isEmpty
    }

    var earliestDue: Int64 { pending.lazy.map(\.dueMs).min() ?? .max }

    func consented(_ channel: UInt8, optInMask: UInt64) -> Bool {
        let bit: UInt64 = 1 << UInt64(channel)
        if consentGranted & bit != 0 { return true }
        if consentWithdrawn & bit != 0 { return false }
        return optInMask & bit == 0
    }

    mutating func setConsent(_ channel: UInt8, granted: Bool) {
        let bit: UInt64 = 1 << UInt64(channel)
        if granted {
            consentGranted |= bit
            consentWithdrawn &= ~bit
        } else {
            consentWithdrawn |= bit
            consentGranted &= ~bit
        }
    }

    func markIndex(_ campaign: UInt64) -> Int? { marks.firstIndex { $0.campaign == campaign } }

    /// Contacts within (t - window, t], on one channel or all.
    func contacts(channel: UInt8?, windowMs: Int64, at t: Int64) -> Int {
        var n = 0
        for e in ledger where e.atMs > t - windowMs && e.atMs <= t && (channel == nil || e.channel == channel) { n += 1 }
        return n
    }
}
