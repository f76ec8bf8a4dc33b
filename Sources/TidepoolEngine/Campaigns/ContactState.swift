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
/// consent per channel and the customer's time zone.
///
/// Most customers never have any, so it is one optional reference (8 bytes in the customer
/// record instead of 56), allocated on first write and copied on write like an array: a
/// checkpoint snapshot holding a copy never sees later changes.
public struct ContactState: Sendable, Equatable {
    final class Storage: @unchecked Sendable {
        var pending: [PendingTrigger] = []
        var marks: [CampaignMark] = []
        var ledger: [ContactEntry] = []
        var consentGranted: UInt64 = 0
        var consentWithdrawn: UInt64 = 0
        var timeZone = ""
        init() {}
        func copy() -> Storage {
            let c = Storage()
            c.pending = pending; c.marks = marks; c.ledger = ledger
            c.consentGranted = consentGranted; c.consentWithdrawn = consentWithdrawn; c.timeZone = timeZone
            return c
        }
    }

    private var storage: Storage?

    public init() {}

    private mutating func unique() -> Storage {
        // Check before binding: `if let s = storage, isKnownUniquelyReferenced(&storage)` held a
        // second reference while checking, so it never saw the storage as unique and copied it on
        // every write (~2.6k instructions per campaign decision).
        if isKnownUniquelyReferenced(&storage), let s = storage { return s }
        let s = storage?.copy() ?? Storage()
        storage = s
        return s
    }

    public var pending: [PendingTrigger] {
        get { storage?.pending ?? [] }
        _modify { let s = unique(); yield &s.pending }
        set { unique().pending = newValue }
    }
    public var marks: [CampaignMark] {
        get { storage?.marks ?? [] }
        _modify { let s = unique(); yield &s.marks }
        set { unique().marks = newValue }
    }
    /// Contacts sent within the longest cap window, oldest first.
    public var ledger: [ContactEntry] {
        get { storage?.ledger ?? [] }
        _modify { let s = unique(); yield &s.ledger }
        set { unique().ledger = newValue }
    }
    /// Bit per channel index: explicit consent granted / withdrawn (the latest event wins).
    public var consentGranted: UInt64 {
        get { storage?.consentGranted ?? 0 }
        set { unique().consentGranted = newValue }
    }
    public var consentWithdrawn: UInt64 {
        get { storage?.consentWithdrawn ?? 0 }
        set { unique().consentWithdrawn = newValue }
    }
    /// IANA zone or fixed offset from the customer's events; "" for the policy's default.
    public var timeZone: String {
        get { storage?.timeZone ?? "" }
        set { unique().timeZone = newValue }
    }

    /// True when nothing is pending (the hot path asks this for every evaluation).
    var hasPending: Bool { storage.map { !$0.pending.isEmpty } ?? false }

    public static func == (a: ContactState, b: ContactState) -> Bool {
        a.pending == b.pending && a.marks == b.marks && a.ledger == b.ledger && a.consentGranted == b.consentGranted
            && a.consentWithdrawn == b.consentWithdrawn && a.timeZone == b.timeZone
    }

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
