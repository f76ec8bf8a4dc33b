/// Ten segments of the kind private-domain teams run daily; the demo and the benchmarks use them
/// so that their figures are for a realistic rule load.
public enum ExampleSegments {
    public static let standard: [(name: String, rule: String)] = [
        ("repeat_buyer", "count(purchase, 90d) >= 2"),
        ("lapsed_visitor", "since(last(page_view)) > 14d"),
        ("winback", "in_segment(repeat_buyer) and in_segment(lapsed_visitor)"),
        ("big_spender", "sum(purchase, 365d) >= 2000"),
        ("browsing_not_buying", "count(page_view, 7d) >= 3 and orders() == 0"),
        ("cart_abandoner", "count(add_to_cart, 1d) >= 1 and count(purchase, 1d) == 0"),
        ("engaged_reader", "count(message_open, 30d) >= 2"),
        ("platform_heavy", "owned_share(90d) < 0.3"),
        ("multichannel", "distinct_channels() >= 3"),
        ("dormant_buyer", "orders() >= 1 and since(last()) > 30d"),
    ]

    public static var definitions: [SegmentDefinition] {
        standard.map { SegmentDefinition(name: $0.name, rule: $0.rule) }
    }
}

/// Campaigns over the example segments, for the demo and the benchmarks.
public enum ExampleCampaigns {
    public static var definitions: [CampaignDefinition] {
        var winback = CampaignDefinition(name: "winback", start: .segmentEntered("winback"), channels: ["wecom", "sms"])
        winback.holdoutBasisPoints = 1000
        winback.priority = 10
        winback.snapshot = ["orders()", "spend()", "since(last(page_view))"]
        var cart = CampaignDefinition(name: "cart_rescue", start: .event(.addToCart, channel: nil), channels: ["wecom", "app"])
        cart.delayMs = 2 * 3_600_000
        cart.condition = "count(purchase, 1d) == 0"
        cart.cooldownMs = 7 * 86_400_000
        var dormant = CampaignDefinition(name: "dormant_buyer_sms", start: .segmentEntered("dormant_buyer"), channels: ["sms"])
        dormant.cooldownMs = 90 * 86_400_000
        return [winback, cart, dormant]
    }
}
