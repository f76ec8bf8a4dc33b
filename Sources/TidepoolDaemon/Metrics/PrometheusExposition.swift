import TidepoolEngine

/// Renders the pipeline's published counters in the Prometheus text exposition format (0.0.4).
///
/// Written here rather than through swift-prometheus: the counters already live in one snapshot
/// that the pipeline publishes once per batch (no lock per event), and a scrape only has to print
/// that snapshot; mirroring every value into a second registry would add work on the hot path
/// for nothing.
public enum PrometheusExposition {
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    public static func render(_ c: PipelineCounters, nowMs: Int64) -> String {
        var w = Writer()
        w.family("tidepool_ready", "gauge", "1 once the assigned partitions are restored and processing runs")
        w.sample("tidepool_ready", [], c.ready ? 1 : 0)
        w.family("tidepool_events_total", "counter", "Valid touchpoint events consumed, by type")
        for t in EventType.allCases { w.sample("tidepool_events_total", [("type", t.name)], Double(c.events(t))) }
        w.family("tidepool_dead_letters_total", "counter", "Records rejected to the dead-letter topic, by reason")
        for r in DeadLetterReason.allCases { w.sample("tidepool_dead_letters_total", [("reason", r.rawValue)], Double(c.deadLetters(r))) }
        w.family("tidepool_consumer_lag", "gauge", "Records behind the partition's high watermark")
        for (p, lag) in c.lag.sorted(by: { $0.key < $1.key }) {
            let (topic, partition) = split(p)
            w.sample("tidepool_consumer_lag", [("topic", topic), ("partition", partition)], Double(lag))
        }
        w.family("tidepool_assigned_partitions", "gauge", "Input partitions assigned to this member")
        w.sample("tidepool_assigned_partitions", [], Double(c.assignedPartitions))
        w.family("tidepool_customers", "gauge", "Customers in memory")
        w.sample("tidepool_customers", [], Double(c.customers))
        w.family("tidepool_segment_members", "gauge", "Customers in each segment")
        for (s, n) in c.segmentSizes.sorted(by: { $0.key < $1.key }) { w.sample("tidepool_segment_members", [("segment", s)], Double(n)) }
        w.family("tidepool_segment_transitions_total", "counter", "Customers entering or leaving each segment")
        for (s, n) in c.segmentTransitions.sorted(by: { $0.key < $1.key }) {
            w.sample("tidepool_segment_transitions_total", [("segment", s)], Double(n))
        }
        w.family("tidepool_campaign_decisions_total", "counter", "Campaign decisions by campaign and outcome (deferred: moved out of quiet hours, decided later)")
        for (camp, counts) in c.campaignOutcomes.sorted(by: { $0.key < $1.key }) {
            for (i, o) in TriggerOutcome.allCases.enumerated() {
                w.sample("tidepool_campaign_decisions_total", [("campaign", camp), ("outcome", o.rawValue)], Double(counts[i]))
            }
        }
        for (camp, n) in c.campaignDeferred.sorted(by: { $0.key < $1.key }) {
            w.sample("tidepool_campaign_decisions_total", [("campaign", camp), ("outcome", "deferred")], Double(n))
        }
        // The engine's counters, per input partition.
        let perPartition = c.partitionCounters.sorted { ($0.key.topic, $0.key.partition) < ($1.key.topic, $1.key.partition) }
            .map { (($0.key.topic, String($0.key.partition)), $0.value) }
        for (name, help, value) in [
            ("tidepool_events_applied_total", "Events applied to customer state", \PartitionStats.applied),
            ("tidepool_duplicate_events_total", "Events whose event_id was already applied within the dedupe horizon (applied once)", \.duplicates),
            ("tidepool_late_events_total", "Events older than the partition's stream time on arrival: applied to totals and open windows, no retroactive transitions", \.late),
            ("tidepool_timers_fired_total", "Customer timers fired by stream time (membership flips, due campaign episodes, evictions)", \.timersFired),
            ("tidepool_customers_evicted_total", "Customers removed after the idle retention", \.evicted),
            ("tidepool_events_dropped_after_erasure_total", "Events of erased customers dated at or before the erasure (a replay), dropped", \.droppedAfterErasure),
        ] as [(String, String, KeyPath<PartitionStats, Int64>)] {
            w.family(name, "counter", help + ", by input partition")
            for ((topic, partition), v) in perPartition { w.sample(name, [("topic", topic), ("partition", partition)], Double(v[keyPath: value])) }
        }
        w.family("tidepool_thread_events_total", "counter", "Events applied by each processing thread (processing.threads; 0 is the pipeline thread, which applies small polls alone)")
        // Index 0: the pipeline thread (polls applied alone); 1 + k: shard k's thread `tp-shard-k`.
        for (i, n) in c.threadEvents.enumerated() {
            w.sample("tidepool_thread_events_total", [("thread", i == 0 ? "main" : "tp-shard-\(i - 1)")], Double(n))
        }
        w.family("tidepool_parallel_polls_total", "counter", "Polls whose events were applied on several processing threads at once")
        w.sample("tidepool_parallel_polls_total", [], Double(c.parallelPolls))
        w.family("tidepool_rebuild_records_total", "counter", "Records replayed to rebuild the state of partitions this member had no state for, below the group's committed offset (applied; their triggers and dead letters were produced by the member that processed them)")
        w.sample("tidepool_rebuild_records_total", [], Double(c.rebuildRecords))
        w.family("tidepool_triggers_produced_total", "counter", "Triggers produced on the trigger topic")
        w.sample("tidepool_triggers_produced_total", [], Double(c.triggersProduced))
        w.family("tidepool_triggers_deduplicated_total", "counter", "Triggers re-created by a replay after a crash and found already on the trigger topic (not produced again)")
        w.sample("tidepool_triggers_deduplicated_total", [], Double(c.triggersDeduplicated))
        w.family("tidepool_records_delivered_total", "counter", "Records acknowledged by the broker, by topic role")
        w.sample("tidepool_records_delivered_total", [("topic", "triggers")], Double(c.triggersDelivered))
        w.sample("tidepool_records_delivered_total", [("topic", "dead_letters")], Double(c.deadLettersDelivered))
        w.sample("tidepool_records_delivered_total", [("topic", "suppressed")], Double(c.suppressedDelivered))
        w.family("tidepool_delivery_failures_total", "counter", "Produced records the broker did not acknowledge (the daemon stops)")
        w.sample("tidepool_delivery_failures_total", [], Double(c.deliveryFailures))
        w.family("tidepool_erasures_total", "counter", "Customers erased")
        w.sample("tidepool_erasures_total", [], Double(c.erasures))
        w.family("tidepool_checkpoints_total", "counter", "Checkpoints written")
        w.sample("tidepool_checkpoints_total", [], Double(c.checkpoints))
        w.family("tidepool_checkpoint_age_seconds", "gauge", "Time since the last completed checkpoint (-1: none yet)")
        w.sample("tidepool_checkpoint_age_seconds", [], c.lastCheckpointAtMs == 0 ? -1 : Double(nowMs - c.lastCheckpointAtMs) / 1000)
        w.family("tidepool_checkpoint_duration_seconds", "gauge", "Duration of the last checkpoint write (writer thread)")
        w.sample("tidepool_checkpoint_duration_seconds", [], c.lastCheckpointMs / 1000)
        w.family("tidepool_checkpoint_fold_seconds", "gauge",
                 "Duration of the last WAL fold: the copy of a committed checkpoint into the database file (writer thread; nothing waits for it)")
        w.sample("tidepool_checkpoint_fold_seconds", [], c.lastFoldMs / 1000)
        w.family("tidepool_checkpoint_stall_seconds", "gauge", "Longest single hold of the processing thread by a periodic checkpoint (its cut or one slice): last and longest")
        w.sample("tidepool_checkpoint_stall_seconds", [("which", "last")], c.lastCheckpointStallMs / 1000)
        w.sample("tidepool_checkpoint_stall_seconds", [("which", "max")], c.maxCheckpointStallMs / 1000)
        w.family("tidepool_config_reloads_total", "counter", "SIGHUP reloads by result")
        w.sample("tidepool_config_reloads_total", [("result", "applied")], Double(c.reloadsApplied))
        w.sample("tidepool_config_reloads_total", [("result", "rejected")], Double(c.reloadsRejected))
        w.family("tidepool_rules_info", "gauge", "Version (hash) of the running segments and campaigns")
        w.sample("tidepool_rules_info", [("version", c.rulesVersion)], 1)
        return w.out
    }

    /// "topic[3]" -> ("topic", "3").
    private static func split(_ p: String) -> (String, String) {
        guard p.hasSuffix("]"), let open = p.lastIndex(of: "[") else { return (p, "") }
        return (String(p[..<open]), String(p[p.index(after: open)..<p.index(before: p.endIndex)]))
    }

    struct Writer {
        var out = ""
        mutating func family(_ name: String, _ type: String, _ help: String) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        }
        mutating func sample(_ name: String, _ labels: [(String, String)], _ value: Double) {
            out += name
            if !labels.isEmpty {
                out += "{" + labels.map { "\($0.0)=\"\(escape($0.1))\"" }.joined(separator: ",") + "}"
            }
            out += " " + (value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)) + "\n"
        }
        func escape(_ s: String) -> String {
            var o = ""
            for ch in s {
                switch ch {
                case "\\": o += "\\\\"
                case "\"": o += "\\\""
                case "\n": o += "\\n"
                default: o.append(ch)
                }
            }
            return o
        }
    }
}
