import Foundation
import Logging
import Synchronization
import TidepoolEngine
import TidepoolKafka
import TidepoolStore

/// The processing loop: consume a batch, decode each record, apply valid events to the engine,
/// produce triggers and dead letters, and store a record's offset once everything it caused has
/// been acknowledged by the broker (at-least-once, no silent loss).
///
/// Threading: `run()` blocks the calling thread and does the work on it, rebalance callbacks and
/// delivery reports included, except the engine work of large polls: the partitions are split
/// over `processing.threads` engines (`EngineShards`), and a catch-up poll's events are applied
/// on that many threads (`ShardWorkers`) while this thread reads and decodes the next poll;
/// then their outputs are produced and their offsets recorded from this thread (`dispatch`,
/// `settle`). `requestStop()` may be called from any thread.
public final class Pipeline: RebalanceListener {
    /// The running configuration (segments, campaigns and contact policy change on reload).
    public private(set) var config: TidepoolConfig
    public let metrics: PipelineMetrics
    private let logger: Logger
    private let shards: EngineShards
    private let workers: ShardWorkers
    private let decoder: TouchpointDecoder
    private let encoder = TriggerEncoder()
    private let stopFlag = Atomic<Bool>(false)
    private let clock: () -> Int64

    private var consumer: KafkaConsumer!
    private var producer: KafkaProducer!
    /// The output topics by handle (`KafkaProducer.topic`): by name, librdkafka looked each up
    /// again for every record produced. nil: the topic is not configured.
    private var triggerOut: KafkaTopic?
    private var suppressedOut: KafkaTopic?
    private var deadLetterOut: KafkaTopic?
    private var tracker = OffsetTracker()
    private var counters = PipelineCounters()
    private var currentSeq: UInt = 0
    private var deliveryFailure: KafkaError?
    private var outBuffer: [UInt8] = []
    private var writer: CheckpointWriter?
    /// Next input offset per partition that the in-memory state reflects.
    private var nextOffsets: [PartitionID: Int64] = [:]
    /// Engine counters of partitions this member released (see `dropState`).
    private var retiredCounters: [PartitionID: PartitionStats] = [:]
    private var lastCheckpointNs: UInt64 = 0
    /// A periodic checkpoint being captured a slice per loop turn (`startCheckpoint`).
    private var staged: StagedCheckpoint?
    struct StagedCheckpoint {
        /// Partitions whose capture is still in progress.
        var capturing: [PartitionID]
        var snapshots: [(PartitionSnapshot, nextOffset: Int64)] = []
        /// The input offsets the captured state reflects (taken at the cut).
        var nextOffsets: [PartitionID: Int64]
        /// The trigger topic's acknowledged ends at the cut.
        var outputs: [OutputOffset]
        /// The last poll batch before the cut: what it and earlier batches produced must be
        /// acknowledged before the checkpoint is written.
        var cutSeq: UInt
        var segments: [(name: String, rule: String)]
    }
    private var fatalError: String?
    private let systemd: SystemdNotifier
    private var readySent = false
    private var subscribedNs: UInt64 = 0
    private var lastStatusNs: UInt64 = 0
    private var lastLagNs: UInt64 = 0
    /// End of each trigger-topic partition as acknowledged (offset of the last delivery + 1).
    private var triggerEnds: [Int32: Int64] = [:]
    /// Trigger ids found on the trigger topic after the last checkpoint's output offsets: a replay
    /// after a crash does not produce them again.
    /// With where each lies: until the replay has re-created them, checkpoints must not record
    /// output offsets past them (a second crash would otherwise lose track of them).
    private var alreadyProduced: [String: (partition: Int32, offset: Int64)] = [:]
    /// The checkpoint was unusable and moved aside: partitions start from their earliest offset.
    private var rebuildFromBeginning = false
    /// Work handed in from other threads (HTTP queries, reloads), run on the pipeline thread
    /// between batches: the engines are touched only by this thread, and by the shard threads
    /// inside `applyPending` while this thread waits for them.
    private let jobs = Mutex<[Job]>([])
    struct Job: @unchecked Sendable { let run: (Pipeline) -> Void }

    /// Why `run()` returned.
    public enum Outcome: Equatable {
        /// Stopped on request; everything processed was delivered and committed.
        case stopped
        /// A produced record could not be delivered: offsets after the last good batch were not
        /// stored, so a restart reprocesses them (exit non-zero so systemd restarts us).
        case deliveryFailed(String)
        /// The state could not be restored or kept (exit non-zero; nothing was committed past it).
        case failed(String)
    }

    /// Throws `SegmentError` when the configuration's segment rules do not check (the loader
    /// reports those with file positions before this point).
    public init(config: TidepoolConfig, logger: Logger, metrics: PipelineMetrics = PipelineMetrics(),
                clock: @escaping () -> Int64 = WallClock.nowMs, systemd: SystemdNotifier = SystemdNotifier()) throws {
        self.systemd = systemd
        self.config = config
        self.logger = logger
        self.metrics = metrics
        self.clock = clock
        let threads = config.processing.threads > 0 ? config.processing.threads : TidepoolConfig.Processing.availableCores
        self.shards = EngineShards(config: try config.engineConfig(), count: threads, offsets: SystemTimeZones())
        self.workers = ShardWorkers(shards: threads)
        self.filling = Batch(shards: threads)
        self.spare = Batch(shards: threads)
        self.decoder = TouchpointDecoder(limits: config.decoding)
        self.counters.rulesVersion = config.ruleVersion
        self.counters.threadEvents = [Int64](repeating: 0, count: threads + 1)
    }

    public func requestStop() { stopFlag.store(true, ordering: .relaxed) }

    // MARK: - Work from other threads

    /// The view of a customer (nil when no partition held here has it), taken on the pipeline
    /// thread between two batches (within one poll timeout); `completion` runs on that thread.
    public func customerView(_ id: String, _ completion: @escaping (CustomerView?) -> Void) {
        jobs.withLock { $0.append(Job { completion($0.shards.view(id)) }) }
    }

    /// How many engines (and threads) the partitions are split over.
    public var processingThreads: Int { shards.count }

    /// Applies a new configuration's segments, campaigns and contact policy between two batches.
    /// Other sections need a restart: they are reported in `ReloadOutcome.needsRestart` and keep
    /// their running values. The blast radius is computed first and `reload.transitions` decides
    /// which transitions the change itself publishes.
    public func reload(_ new: TidepoolConfig, completion: @escaping (Result<ReloadOutcome, Error>) -> Void) {
        jobs.withLock { $0.append(Job { $0.applyReload(new, completion) }) }
    }

    public struct ReloadOutcome: Sendable {
        public var report: ReconfigureReport
        /// Sections that differ from the running configuration but only take effect on restart.
        public var needsRestart: [String]
    }

    public struct ReloadRejected: Error, CustomStringConvertible {
        public var description: String
    }

    /// A reload whose file did not load (counted on the pipeline thread).
    public func noteReloadRejected() {
        jobs.withLock { $0.append(Job { $0.counters.reloadsRejected += 1 }) }
    }

    private func runJobs() {
        let pending = jobs.withLock { j -> [Job] in
            let out = j
            j.removeAll()
            return out
        }
        for job in pending { job.run(self) }
    }

    private func applyReload(_ new: TidepoolConfig, _ completion: (Result<ReloadOutcome, Error>) -> Void) {
        guard new.aggregates == config.aggregates && new.models == config.models else {
            counters.reloadsRejected += 1
            return completion(.failure(ReloadRejected(description: "aggregates and models cannot change without a restart (the kept state depends on them)")))
        }
        let engineConfig: EngineConfig
        do {
            var merged = config
            merged.segments = new.segments
            merged.campaigns = new.campaigns
            merged.contactPolicy = new.contactPolicy
            merged.reloadPolicy = new.reloadPolicy
            engineConfig = try merged.engineConfig()
            var needsRestart: [String] = []
            if new.kafka != config.kafka { needsRestart.append("kafka") }
            if new.state != config.state { needsRestart.append("state") }
            if new.decoding != config.decoding { needsRestart.append("decoding") }
            if new.processing != config.processing { needsRestart.append("processing") }
            if new.firstPurchase != config.firstPurchase { needsRestart.append("first_purchase") }
            if new.latenessMs != config.latenessMs || new.idleAdvance != config.idleAdvance { needsRestart.append("time") }
            if new.customerRetentionMs != config.customerRetentionMs { needsRestart.append("customers") }
            if new.erasureKey != config.erasureKey { needsRestart.append("privacy") }
            if new.http != config.http { needsRestart.append("http") }
            if new.logLevel != config.logLevel { needsRestart.append("log") }
            // A capture in progress holds memberships under the rules being replaced: write it first.
            finishStagedCheckpoint(deadlineMs: config.shutdown.deadlineMs)
            let now = clock()
            let report = shards.reconfigure(engineConfig, policy: new.reloadPolicy) { output in route(output, nowMs: now) }
            config = merged
            counters.reloadsApplied += 1
            counters.rulesVersion = merged.ruleVersion
            completion(.success(ReloadOutcome(report: report, needsRestart: needsRestart)))
        } catch {
            counters.reloadsRejected += 1
            completion(.failure(error))
        }
    }
    public var stopRequested: Bool { stopFlag.load(ordering: .relaxed) }

    /// Runs until `requestStop()` or a delivery failure. Throws only for start-up errors
    /// (bad librdkafka properties, subscription failure).
    public func run() throws -> Outcome {
        if !config.state.path.isEmpty {
            let store: CheckpointStore
            do {
                store = try CheckpointStore(path: config.state.path, configVersion: config.ruleVersion)
            } catch let e as CheckpointError where config.state.onCorrupt == "rebuild" {
                // Keep the bad file for a post-mortem; rebuild from the input's earliest offsets.
                let aside = config.state.path + ".corrupt-\(WallClock.nowMs())"
                for suffix in ["", "-wal", "-shm"] { _ = rename(config.state.path + suffix, aside + suffix) }
                logger.critical("checkpoint unusable; rebuilding state from the earliest retained input offsets",
                                metadata: ["error": "\(e)", "moved_to": "\(aside)"])
                store = try CheckpointStore(path: config.state.path, configVersion: config.ruleVersion)
                rebuildFromBeginning = true
            }
            writer = CheckpointWriter(store: store)
            if let old = store.storedConfigVersion, old != config.ruleVersion {
                logger.notice("rules changed since the checkpoint was written; memberships carry over by segment name, new and changed segments follow reload.transitions",
                              metadata: ["checkpoint": "\(config.state.path)"])
            }
            lastCheckpointNs = WallClock.monotonicNs()
        }
        producer = try KafkaProducer(properties: config.producerProperties) { [unowned self] report in
            self.onDelivery(report)
        }
        func outputTopic(_ name: String) throws -> KafkaTopic? { name.isEmpty ? nil : try producer.topic(name) }
        triggerOut = try outputTopic(config.kafka.triggerTopic)
        suppressedOut = try outputTopic(config.kafka.suppressedTopic)
        deadLetterOut = try outputTopic(config.kafka.deadLetterTopic)
        if let writer {
            try readTriggersBack(writer.store)
        } else if (try? producer.partitionCount(topic: config.kafka.triggerTopic)) == nil {
            // Known before the first event: the first trigger otherwise waited for the topic's
            // metadata (~300 ms on the mock). With checkpoints the read-back above does this.
            logger.warning("trigger topic metadata not available yet; the first triggers wait for it",
                           metadata: ["topic": "\(config.kafka.triggerTopic)"])
        }
        consumer = try KafkaConsumer(properties: config.consumerProperties, listener: self,
                                     maxBatch: config.processing.batchSize)
        try consumer.subscribe(config.kafka.inputTopics)
        logger.info("consuming", metadata: ["topics": "\(config.kafka.inputTopics.joined(separator: ","))",
                                            "group": "\(config.kafka.groupID)", "librdkafka": "\(librdkafkaVersion)"])
        let timeout = Int32(clamping: config.processing.pollTimeoutMs)
        subscribedNs = WallClock.monotonicNs()
        while !stopRequested && deliveryFailure == nil && fatalError == nil {
            currentSeq = tracker.open()
            // The time of this turn is read when its records are there, after the poll's wait
            // (it is each trigger's emitted_at and the decoder's "now").
            var turnNow: Int64? = nil
            consumer.poll(timeoutMs: timeout) { msg in
                let now = turnNow ?? clock()
                turnNow = now
                handle(msg, nowMs: now)
            }
            endRun()
            // The engines are still from here until `dispatch`: what reads or changes them runs
            // here (idle time, checkpoints, jobs, the published figures). The outputs of the
            // batch just applied are produced after `dispatch` hands the next one to the shard
            // threads, unless something here produces first (a partition's outputs keep their
            // order).
            var done = collect()
            if let d = done, (config.idleAdvance && !idle.isEmpty) || jobs.withLock({ !$0.isEmpty }) {
                release(d)
                done = nil
            }
            if config.idleAdvance { advanceIdlePartitions(wallMs: turnNow ?? clock()) }
            if let writer {
                if let c = writer.poll() { checkpointCompleted(c) }
                if staged != nil {
                    continueStagedCheckpoint()
                } else if !writer.inFlight {
                    let due = WallClock.monotonicNs() - lastCheckpointNs >= UInt64(config.state.checkpointIntervalMs) * 1_000_000
                        // (Not while a partition is rebuilt: its changed customers wait for the
                        // end of the rebuild, and would make every turn's checkpoint due.)
                        || (config.state.checkpointDirtyCustomers > 0 && rebuilding.isEmpty
                            && shards.dirtyCount >= config.state.checkpointDirtyCustomers)
                    if due { startCheckpoint() }
                }
            }
            runJobs()
            readEngineCounters()
            dispatch(after: done)
            tracker.close()
            producer.poll(timeoutMs: 0)
            storeCompleted()
            counters.batches += 1
            publish()
            lifecycleNotifications()
        }
        return shutdown()
    }

    /// Crash safety for triggers: read the trigger topic back from the last checkpoint's output
    /// offsets to its end (the replay will re-create those triggers; they are not produced again),
    /// then record the current ends as the baseline, so that a crash before the first checkpoint
    /// of this run is covered too.
    private func readTriggersBack(_ store: CheckpointStore) throws {
        let topic = config.kafka.triggerTopic
        let outputs = try store.outputs().filter { $0.topic == topic }
        let t0 = WallClock.monotonicNs()
        alreadyProduced = try TriggerReadBack.ids(from: outputs, consumerProperties: config.consumerProperties, producer: producer)
        var baseline: [OutputOffset] = []
        if let n = try? producer.partitionCount(topic: topic) {
            for p in 0..<Int32(n) {
                guard let (_, high) = try? producer.queryWatermarks(topic: topic, partition: p) else { continue }
                let stored = outputs.first { $0.partition == p }?.nextOffset ?? 0
                triggerEnds[p] = max(high, stored)
                baseline.append(OutputOffset(topic: topic, partition: p, nextOffset: pinnedOutput(p) ?? max(high, stored)))
            }
        }
        try store.write([], outputs: baseline)
        logger.info("trigger topic read back", metadata: ["triggers_after_checkpoint": "\(alreadyProduced.count)",
                                                          "partitions": "\(baseline.count)",
                                                          "ms": "\((WallClock.monotonicNs() - t0) / 1_000_000)"])
    }

    /// The offset of the earliest trigger read back that the replay has not re-created yet.
    private func pinnedOutput(_ partition: Int32) -> Int64? {
        guard !alreadyProduced.isEmpty else { return nil }
        return alreadyProduced.values.lazy.filter { $0.partition == partition }.map(\.offset).min()
    }

    // MARK: - Per record

    /// Records of one poll come in runs of the same partition; the offset of a run is recorded
    /// once at its end instead of per record.
    private var runTopic = ""
    private var runPartition: Int32 = -1
    private var runNext: Int64 = -1
    private var partitionIDs: [OffsetTracker.PartitionKey: PartitionID] = [:]
    private var runPartitionID = PartitionID(topic: "", partition: -1)
    /// Partitions at the end of the log with no record since.
    private var idle: Set<PartitionID> = []
    /// Partitions whose state this member did not have when it was assigned them while the group
    /// had processed records of them: their state is rebuilt from the input's earliest retained
    /// offset, and records before the group's committed offset (the value) are applied without
    /// producing anything, since the member that processed them produced their triggers and dead
    /// letters. No offset is stored and no checkpoint taken for them until the rebuild reaches it.
    private var rebuilding: [PartitionID: Int64] = [:]
    /// The committed offset the current run's partition is being rebuilt to (-1: none).
    private var runSilentUntil: Int64 = -1

    @inline(__always)
    private func handle(_ msg: KafkaMessage, nowMs: Int64) {
        if msg.partition != runPartition || msg.topic != runTopic {
            endRun()
            runTopic = msg.topic
            runPartition = msg.partition
            let key = OffsetTracker.PartitionKey(topic: msg.topic, partition: msg.partition)
            if let id = partitionIDs[key] {
                runPartitionID = id
            } else {
                runPartitionID = PartitionID(topic: msg.topic, partition: msg.partition)
                partitionIDs[key] = runPartitionID
            }
            runShard = shards.shard(of: runPartitionID)
            runSilentUntil = rebuilding.isEmpty ? -1 : rebuilding[runPartitionID] ?? -1
        }
        if let err = msg.error {
            if msg.isPartitionEOF {
                if runSilentUntil >= 0 && msg.offset >= runSilentUntil { finishRebuild(at: msg.offset) }
                idle.insert(runPartitionID)
            } else {
                counters.consumerErrors += 1
                logger.warning("consumer error", metadata: ["error": "\(err)"])
            }
            return
        }
        if !idle.isEmpty { idle.remove(runPartitionID) }
        var silent = false
        if runSilentUntil >= 0 {
            if msg.offset < runSilentUntil {
                silent = true
                counters.rebuildRecords += 1
            } else {
                finishRebuild(at: msg.offset)
            }
        }
        let keyCheck: KeyCheck = msg.key.map { .bytes($0) } ?? .none
        do throws(DecodeFailure) {
            if msg.valueIsNull { throw DecodeFailure(.invalidJSON, "record has a null value") }
            let event = try decoder.decode(msg.value, key: keyCheck, nowMs: nowMs)
            counters.eventsByType[Int(event.type.rawValue)] += 1
            filling.runs.append(event, shard: runShard, partition: runPartitionID, silent: silent)
            filling.nowMs = nowMs
        } catch {
            // A record rejected while rebuilding was dead-lettered by the member that processed it.
            if !silent { deadLetter(msg, error) }
        }
        runNext = msg.offset + 1
    }

    /// The current run's partition has caught up with the group's committed offset (a record at
    /// or after it, or the end of the log there).
    private func finishRebuild(at offset: Int64) {
        rebuilding[runPartitionID] = nil
        runSilentUntil = -1
        logger.notice("partition state rebuilt from the input; producing from here on",
                      metadata: ["partition": "\(runPartitionID)", "offset": "\(offset)"])
    }

    /// Partitions that have reached the end of the log follow the wall clock: dormancy and window
    /// exits fire on time even when no event arrives. Called before this poll's events are
    /// applied (`dispatch`): a partition with events in it (records, then the end of the log, in
    /// one poll) moves on the next turn, after them; moved now, they would all be late.
    private func advanceIdlePartitions(wallMs: Int64) {
        let polled = filling.ends.isEmpty ? [] : Set(filling.ends.map(\.partition))
        for p in idle where !polled.contains(p) {
            shards.engine(for: p)?.advance(p, to: wallMs - config.latenessMs) { output in route(output, nowMs: wallMs) }
        }
    }

    /// The shard of the current run's partition.
    private var runShard = 0

    /// One poll's decoded events (per shard), where each of its partition runs ended, and the
    /// outputs of applying them.
    private final class Batch: @unchecked Sendable {
        let runs: PendingRuns
        /// Each shard's outputs while a catch-up poll is applied, produced from the pipeline
        /// thread after it (`settle`).
        let outputs: [OutputBuffer]
        /// Where each run of a partition ended: recorded (`commit`) once the events are applied.
        var ends: [RunEnd] = []
        /// When the poll's records were read: the decoder's "now" and each trigger's emitted_at.
        var nowMs: Int64 = 0

        init(shards: Int) {
            runs = PendingRuns(shards: shards)
            outputs = (0..<shards).map { _ in OutputBuffer() }
        }
    }
    private final class OutputBuffer: @unchecked Sendable { var outputs: [EngineOutput] = [] }
    private struct RunEnd {
        var partition: PartitionID
        var next: Int64
        /// False while the partition is rebuilt below the group's committed offset.
        var store: Bool
    }
    /// The poll being read; the batch the shard threads are applying (nil when none); the other
    /// batch when none is (two batches take turns).
    private var filling: Batch
    private var inFlight: Batch?
    private var spare: Batch?

    /// Below this many events (~7 ms of engine work) a poll is applied on this thread alone.
    /// Handing a poll to the shard threads pays off when catching up (polls of up to
    /// `processing.batch_size` records); under live load a poll holds a few hundred events, and
    /// handing them over makes each wait for another thread to be scheduled: at 48k events/s on
    /// this 2-core machine, with a threshold of 256, the p99 event-to-trigger latency was 52-75
    /// ms with two threads against 34-90 ms with one (three pairs), no gain for the risk.
    private static let parallelMinimum = 2048

    /// After a poll, with the engines still (`collect`): a poll below `parallelMinimum` events
    /// (live load) is applied on this thread now, each output produced as it comes, so that a
    /// trigger leaves as soon as its event is applied.
    ///
    /// A larger poll (catching up) is handed to the shard threads, each applying its shard's
    /// runs. Meanwhile this thread produces the outputs of the batch applied before (`done`),
    /// then reads and decodes the next poll; the next loop turn waits for the shard threads,
    /// records the offsets (`collect`) and produces the outputs, shard by shard (order matters
    /// only within a partition, and a partition belongs to one shard). Reading the next poll and
    /// producing alongside took the peer workload's catch-up rate from 230-244k to 268-292k
    /// events/s with one processing thread and from 256-290k to 293-317k with two, the pipeline
    /// thread now using 1.5-1.9 s of CPU per million events against 2.6-2.9 s for the engines
    /// (Benchmarks/README.md, fifth session). Outputs
    /// produced in bursts after the apply, not one at a time while the engine ran, also cost
    /// librdkafka's producer thread 0.4 s of CPU per million events instead of 1.4 s (~80k
    /// triggers, each had woken it for a batch of one or two records) and the broker 0.3 s
    /// instead of 0.8 s.
    private func dispatch(after done: Batch?) {
        let b = filling
        guard b.runs.total >= Self.parallelMinimum, let next = done ?? spare else {
            if let done { release(done) }
            return applyPending()
        }
        counters.parallelPolls += 1
        for k in 0..<shards.count { counters.threadEvents[k + 1] += Int64(b.runs.count(shard: k)) }
        let engines = shards.engines
        workers.start { k in Self.apply(b.runs, shard: k, to: engines[k]) { b.outputs[k].outputs.append($0) } }
        inFlight = b
        filling = next
        spare = nil
        // `next` is reused for the next poll only once its outputs are out, here.
        if let done { produceOutputs(of: done) }
    }

    /// Waits for the batch the shard threads are applying, if any, and records where its runs
    /// ended; returns it, its outputs still to produce (`produceOutputs`).
    private func collect() -> Batch? {
        guard let b = inFlight else { return nil }
        workers.wait()
        inFlight = nil
        b.runs.removeAll()
        commit(b)
        return b
    }

    /// Produces an applied batch's outputs and keeps it for the next poll.
    private func release(_ b: Batch) {
        produceOutputs(of: b)
        spare = b
    }

    private func produceOutputs(of b: Batch) {
        for out in b.outputs where !out.outputs.isEmpty {
            for o in out.outputs { route(o, nowMs: b.nowMs) }
            out.outputs.removeAll(keepingCapacity: true)
        }
    }

    /// Waits for the batch the shard threads are applying, if any; records where its runs ended
    /// and produces its outputs. Everything outside the loop turn's still part that reads or
    /// changes an engine calls this first.
    private func settle() {
        if let b = collect() { release(b) }
    }

    /// Applies the events polled so far on this thread now (after the batch in flight, if any),
    /// producing each output as it comes. Rebalances call this before partitions leave.
    private func applyPending() {
        settle()
        let b = filling
        if b.runs.total > 0 {
            counters.threadEvents[0] += Int64(b.runs.total)
            let engines = shards.engines
            for k in engines.indices { Self.apply(b.runs, shard: k, to: engines[k]) { route($0, nowMs: b.nowMs) } }
            b.runs.removeAll()
        }
        commit(b)
    }

    /// Applies shard `k`'s runs to its engine; the outputs of silent runs (a rebuild below the
    /// group's committed offset) are dropped, the others go to `emit`.
    private static func apply(_ runs: PendingRuns, shard k: Int, to engine: Engine, emit: (EngineOutput) -> Void) {
        runs.forEachRun(shard: k) { p, silent, events in
            if silent { engine.apply(events, partition: p) { _ in } } else { engine.apply(events, partition: p, emit: emit) }
        }
    }

    /// The current run of a partition ends (another partition's record, or the end of the
    /// poll): where it ended is recorded with the batch, and taken into account (`commit`) once
    /// its events are applied and their outputs produced.
    private func endRun() {
        guard runNext >= 0 else { return }
        // While rebuilding, no offset is stored: the group's committed offset stays where the
        // member that processed those records left it (a crash restarts the rebuild).
        filling.ends.append(RunEnd(partition: runPartitionID, next: runNext, store: runSilentUntil < 0 || runNext > runSilentUntil))
        runNext = -1
    }

    /// The batch's events are applied: its offsets go to the tracker in this loop turn (with the
    /// outputs they caused), to checkpoints and to the consumer-lag figures.
    private func commit(_ b: Batch) {
        for e in b.ends {
            if e.store { tracker.processed(topic: e.partition.topic, partition: e.partition.partition, offset: e.next - 1) }
            counters.positions[e.partition.description] = e.next
            nextOffsets[e.partition] = e.next
        }
        b.ends.removeAll(keepingCapacity: true)
    }

    private func route(_ output: EngineOutput, nowMs: Int64) {
        switch output {
        case .trigger(let t): emit(t, nowMs: nowMs)
        case .transition: break  // counted by the engine (`transitionCounts`), published with the rest
        case .deferred(let campaign, _, _): counters.campaignDeferred[campaign, default: 0] += 1
        case .erased(let id):
            // A tombstone on the customer's key: compaction removes its triggers, and downstream
            // learns to forget the customer.
            produceOrFail { try producer.produce(to: out(triggerOut, config.kafka.triggerTopic), key: Array(id.utf8), value: nil, opaque: currentSeq) }
            counters.erasures += 1
        }
    }

    /// Sent triggers go to the trigger topic; every other decision (held out, capped, suppressed,
    /// cancelled) is counted, and published on the suppressed topic when one is configured.
    private func emit(_ t: Trigger, nowMs: Int64) {
        counters.count(t.outcome, campaign: t.campaign)
        if t.outcome == .sent && !alreadyProduced.isEmpty && alreadyProduced.removeValue(forKey: t.triggerID) != nil {
            counters.triggersDeduplicated += 1
            return
        }
        guard let topic = t.outcome == .sent ? triggerOut : suppressedOut else { return }
        encoder.encode(t, emittedAtMs: nowMs, into: &outBuffer)
        var key = t.customerID  // read in place (an Array of its UTF-8 was an allocation per trigger)
        key.withUTF8 { k in
            outBuffer.withUnsafeBytes { v in produceOrFail(topic: topic, key: UnsafeRawBufferPointer(k), value: v) }
        }
        if t.outcome == .sent { counters.triggersProduced += 1 }
    }

    private func deadLetter(_ msg: KafkaMessage, _ f: DecodeFailure) {
        counters.deadLettersByReason[f.reason.index] += 1
        var headers: [(String, [UInt8])] = [
            ("tidepool.reason", Array(f.reason.rawValue.utf8)),
            ("tidepool.detail", Array(f.description.utf8)),
            ("tidepool.source.topic", Array(msg.topic.utf8)),
            ("tidepool.source.partition", Array(String(msg.partition).utf8)),
            ("tidepool.source.offset", Array(String(msg.offset).utf8)),
            ("tidepool.dead_letter.version", Array("1".utf8)),
        ]
        if let field = f.field { headers.append(("tidepool.field", Array(field.utf8))) }
        if let ts = msg.timestampMs { headers.append(("tidepool.source.timestamp", Array(String(ts).utf8))) }
        produceOrFail {
            try producer.produce(to: out(deadLetterOut, config.kafka.deadLetterTopic), key: msg.key,
                                 value: msg.valueIsNull ? nil : msg.value, headers: headers, opaque: currentSeq)
        }
    }

    private func produceOrFail(topic: KafkaTopic, key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        produceOrFail { try producer.produce(to: topic, key: key, value: value, opaque: currentSeq) }
    }

    /// The kept handle of an output topic; for a topic without a name (none is kept) a handle of
    /// it for this record: librdkafka refuses it and the delivery fails, nothing is dropped silently.
    private func out(_ kept: KafkaTopic?, _ name: String) throws -> KafkaTopic {
        try kept ?? producer.topic(name)
    }

    /// Every record produced is tracked until its delivery report; a refused one fails delivery.
    private func produceOrFail(_ produce: () throws -> Void) {
        do {
            try produce()
            tracker.produced()
        } catch {
            failDelivery(error as? KafkaError ?? KafkaError(code: -1, message: "\(error)"))
        }
    }

    // MARK: - Delivery and offsets

    private func onDelivery(_ r: DeliveryReport) {
        if let err = r.error {
            counters.deliveryFailures += 1
            failDelivery(err)
            return
        }
        if r.topic == config.kafka.triggerTopic {
            counters.triggersDelivered += 1
            if r.offset >= 0 { triggerEnds[r.partition] = max(triggerEnds[r.partition] ?? 0, r.offset + 1) }
        } else if r.topic == config.kafka.deadLetterTopic {
            counters.deadLettersDelivered += 1
        } else {
            counters.suppressedDelivered += 1
        }
        tracker.delivered(seq: r.opaque)
    }

    private func failDelivery(_ err: KafkaError) {
        if deliveryFailure == nil {
            logger.error("a produced record was not delivered; stopping without storing later offsets",
                         metadata: ["error": "\(err)"])
        }
        deliveryFailure = err
    }

    /// Stores the offsets of batches whose output is fully acknowledged.
    private func storeCompleted() {
        guard deliveryFailure == nil else { return }
        let done = tracker.takeCompleted()
        guard !done.isEmpty else { return }
        do {
            try consumer.store(done)
            counters.offsetsStored += Int64(done.count)
        } catch {
            logger.warning("offset store failed", metadata: ["error": "\(error)"])
        }
    }

    /// Waits for every produced record, stores and commits their offsets; with checkpoints, first
    /// writes one (synchronously) and commits what it covers.
    private func drainAndCommit(deadlineMs: Int64) {
        if let writer {
            if let c = writer.wait() { checkpointCompleted(c) }
            synchronousCheckpoint(deadlineMs: deadlineMs)
            return
        }
        flushOutput(deadlineMs: deadlineMs)
        guard deliveryFailure == nil else { return }
        do {
            try consumer.commitStored()
            counters.commits += 1
        } catch {
            logger.warning("commit failed", metadata: ["error": "\(error)"])
        }
    }

    private func flushOutput(deadlineMs: Int64) {
        do {
            try producer.flush(timeoutMs: Int32(clamping: deadlineMs))
        } catch {
            logger.error("flush did not complete; uncommitted records will be reprocessed after restart",
                         metadata: ["error": "\(error)"])
        }
        storeCompleted()
    }

    /// Starts a periodic checkpoint of every partition held, without stopping processing for
    /// longer than `state.checkpoint_slice`: the cut (the state every partition has now, the input
    /// offsets it reflects and the trigger topic's acknowledged ends) is taken in constant time;
    /// the changed customers are encoded a slice per loop turn, or just before an event or timer
    /// changes one (`Engine.beginCheckpoint`). Once all are encoded and every record produced
    /// before the cut is acknowledged, the writer thread writes it; Kafka offsets are committed
    /// after that.
    /// The trigger ends recorded can lie before triggers produced before the cut and acknowledged
    /// later; a restore then reads a little more of the topic back, which only suppresses more.
    private func startCheckpoint() {
        let started = WallClock.monotonicNs()
        lastCheckpointNs = started
        var capturing: [PartitionID] = []
        var offsets: [PartitionID: Int64] = [:]
        for p in shards.partitions where rebuilding[p] == nil {
            guard shards.engine(for: p)?.beginCheckpoint(p) == true else { continue }
            capturing.append(p)
            if let next = nextOffsets[p] { offsets[p] = next }
        }
        staged = StagedCheckpoint(capturing: capturing, nextOffsets: offsets, outputs: outputEnds(), cutSeq: currentSeq,
                                  segments: shards.config.segments.segments.map { ($0.name, $0.rule) })
        continueStagedCheckpoint(heldSince: started)
    }

    /// One slice of the staged checkpoint; submits it to the writer once complete and acknowledged.
    /// `heldSince`: when this loop turn's hold began (the cut, when it was taken in this turn).
    private func continueStagedCheckpoint(heldSince: UInt64? = nil) {
        guard var st = staged, let writer else { return }
        let started = WallClock.monotonicNs()
        let budgetNs = UInt64(config.state.checkpointSliceMs) * 1_000_000
        while let p = st.capturing.first, WallClock.monotonicNs() - started < budgetNs {
            if let s = shards.engine(for: p)?.continueCheckpoint(p, budget: 512) {
                st.capturing.removeFirst()
                if let next = st.nextOffsets[p] { st.snapshots.append((s, nextOffset: next)) }
            } else if shards.engine(for: p)?.isCapturing(p) != true {
                st.capturing.removeFirst()  // released since the cut
            }
        }
        noteStall(since: heldSince ?? started)
        if st.capturing.isEmpty && tracker.allDelivered(through: st.cutSeq) && !writer.inFlight {
            submit(st)
            staged = nil
        } else {
            staged = st
        }
    }

    private func submit(_ st: StagedCheckpoint) {
        let offsets = st.snapshots.map { TopicPartitionOffset(topic: $0.0.partition.topic, partition: $0.0.partition.partition, offset: $0.nextOffset) }
        writer?.submit(st.snapshots, offsets: offsets, outputs: st.outputs, segments: st.segments)
    }

    /// Completes the staged checkpoint now (copies what is left, waits for the acknowledgements)
    /// and writes it; returns when it is durable and committed.
    private func finishStagedCheckpoint(deadlineMs: Int64) {
        guard var st = staged, let writer else { return }
        staged = nil
        complete(&st)
        flushOutput(deadlineMs: deadlineMs)
        guard deliveryFailure == nil else { return }
        if let c = writer.wait() { checkpointCompleted(c) }
        submit(st)
        if let c = writer.wait() { checkpointCompleted(c) }
    }

    /// Encodes what is left of the staged checkpoint's captures, at once.
    private func complete(_ st: inout StagedCheckpoint) {
        for p in st.capturing {
            if let s = shards.engine(for: p)?.continueCheckpoint(p, budget: .max), let next = st.nextOffsets[p] { st.snapshots.append((s, nextOffset: next)) }
        }
        st.capturing = []
    }

    /// The end of each trigger-topic partition as acknowledged, held back before ids a replay has
    /// not re-created yet (`alreadyProduced`).
    private func outputEnds() -> [OutputOffset] {
        triggerEnds.map {
            OutputOffset(topic: config.kafka.triggerTopic, partition: $0.key, nextOffset: min($0.value, pinnedOutput($0.key) ?? .max))
        }
    }

    private func noteStall(since started: UInt64) {
        let stallMs = Double(WallClock.monotonicNs() - started) / 1e6
        counters.lastCheckpointStallMs = stallMs
        counters.maxCheckpointStallMs = max(counters.maxCheckpointStallMs, stallMs)
    }

    /// A checkpoint of every partition held, taken and written now (revoke, shutdown): flush
    /// (every trigger acknowledged), snapshot the changed customers, write, wait, commit. A staged
    /// checkpoint in progress is completed and written in the same transaction, before it.
    private func synchronousCheckpoint(deadlineMs: Int64) {
        guard let writer else { return }
        lastCheckpointNs = WallClock.monotonicNs()
        flushOutput(deadlineMs: deadlineMs)
        guard deliveryFailure == nil else { return }
        var snapshots: [(PartitionSnapshot, nextOffset: Int64)] = []
        if var st = staged {
            staged = nil
            complete(&st)
            snapshots = st.snapshots
        }
        for p in shards.partitions where rebuilding[p] == nil {
            guard let s = shards.engine(for: p)?.takeCheckpoint(p) else { continue }
            if let next = nextOffsets[p] { snapshots.append((s, nextOffset: next)) }
        }
        // Committed: the newest offset of each partition (a partition's later snapshot comes last).
        var latest: [PartitionID: Int64] = [:]
        for (s, next) in snapshots { latest[s.partition] = next }
        let offsets = latest.sorted { ($0.key.topic, $0.key.partition) < ($1.key.topic, $1.key.partition) }
            .map { TopicPartitionOffset(topic: $0.key.topic, partition: $0.key.partition, offset: $0.value) }
        writer.submit(snapshots, offsets: offsets, outputs: outputEnds(),
                      segments: shards.config.segments.segments.map { ($0.name, $0.rule) })
        if let c = writer.wait() { checkpointCompleted(c) }
    }

    private func checkpointCompleted(_ c: CheckpointWriter.Completed) {
        if let error = c.error {
            // The snapshot's customers are no longer marked changed: continuing would let a later
            // checkpoint claim offsets whose state is not on disk. Stop; a restart replays from the
            // last good checkpoint.
            counters.checkpointFailures += 1
            logger.critical("checkpoint write failed; stopping without committing", metadata: ["error": "\(error)"])
            fatalError = "checkpoint write failed: \(error)"
            requestStop()
            return
        }
        counters.checkpoints += 1
        counters.lastCheckpointMs = c.writeMs
        if let writer { counters.lastFoldMs = writer.lastFoldMs }
        counters.lastCheckpointAtMs = clock()
        do {
            try consumer.commit(c.offsets)
            counters.commits += 1
        } catch {
            logger.warning("commit failed", metadata: ["error": "\(error)"])
        }
    }

    /// systemd: READY=1 once the first assignment is restored (or 10 s after subscribing when this
    /// member gets none), STATUS every few seconds, and the watchdog fed from this loop.
    private func lifecycleNotifications() {
        let now = WallClock.monotonicNs()
        if !readySent && (counters.assignedPartitions > 0 || now - subscribedNs > 10_000_000_000) {
            readySent = true
            counters.ready = true
            systemd.notify("READY=1\nSTATUS=processing \(counters.assignedPartitions) partitions")
            logger.info("ready", metadata: ["partitions": "\(counters.assignedPartitions)", "customers": "\(counters.customers)"])
        }
        systemd.watchdog(nowNs: now)
        if readySent && now - lastStatusNs >= 5_000_000_000 {
            lastStatusNs = now
            systemd.notify("STATUS=\(counters.assignedPartitions) partitions, \(counters.customers) customers, \(counters.recordsIn) records, \(counters.deadLetters) dead letters, \(counters.triggersProduced) triggers")
        }
    }

    private func shutdown() -> Outcome {
        systemd.notify("STOPPING=1\nSTATUS=stopping: flushing output, checkpointing, committing")
        let deadline = config.shutdown.deadlineMs
        logger.info("stopping: flushing output and committing offsets")
        // The batch still on the shard threads: its outputs and offsets in a turn of their own.
        currentSeq = tracker.open()
        settle()
        tracker.close()
        drainAndCommit(deadlineMs: deadline)
        consumer.close()          // the final revoke runs partitionsRevoked
        readEngineCounters()
        publish()
        // Destroy the clients now, not whenever the Pipeline object goes away.
        consumer = nil
        triggerOut = nil
        suppressedOut = nil
        deadLetterOut = nil
        producer = nil
        if let f = deliveryFailure { return .deliveryFailed(f.description) }
        if let f = fatalError { return .failed(f) }
        logger.info("stopped", metadata: ["events": "\(counters.eventsIn)", "dead_letters": "\(counters.deadLetters)",
                                          "triggers": "\(counters.triggersProduced)"])
        return .stopped
    }

    /// The engines' figures for `publish`, read while no batch is in flight (`settle`).
    private func readEngineCounters() {
        counters.customers = shards.customerCount
        counters.segmentSizes = shards.segmentSizes
        counters.segmentTransitions = shards.transitionCounts
        for p in shards.partitions {
            var c = retiredCounters[p] ?? PartitionStats()
            if let stats = shards.stats(p) { c.addCounters(stats) }
            counters.partitionCounters[p] = c
        }
    }

    private func publish() {
        counters.assignedPartitions = consumer?.assignment.count ?? 0
        let now = WallClock.monotonicNs()
        if let consumer, now - lastLagNs >= 1_000_000_000 {
            lastLagNs = now
            var lag: [String: Int64] = [:]
            for p in shards.partitions {
                guard let high = consumer.cachedHighWatermark(topic: p.topic, partition: p.partition) else { continue }
                lag[p.description] = max(0, high - (nextOffsets[p] ?? counters.positions[p.description] ?? high))
            }
            counters.lag = lag
        }
        metrics.publish(counters)
    }

    // MARK: - RebalanceListener

    public func partitionsAssigned(_ consumer: KafkaConsumer, _ partitions: [TopicPartitionOffset]) -> [TopicPartitionOffset]? {
        settle()  // engines gain partitions below
        var seeks: [TopicPartitionOffset] = []
        // Per entry of `seeks`: the offset its restored state reflects, nil without local state.
        var restoredNext: [Int64?] = []
        for tp in partitions {
            let p = PartitionID(topic: tp.topic, partition: tp.partition)
            let engine = shards.assign(p)
            var start = tp.offset  // INVALID: resume from the group's committed offset
            var restored: Int64? = nil
            if let writer {
                // The connection is the writer's while a write is in flight.
                if let c = writer.wait() { checkpointCompleted(c) }
                do {
                    if let (next, changed) = try writer.store.restore(p, into: engine, policy: config.reloadPolicy) {
                        restored = next
                        start = next
                        nextOffsets[p] = next
                        if let changed {
                            for s in changed.segments where s.status != .unchanged {
                                logger.notice("segment rules changed since the checkpoint", metadata: [
                                    "partition": "\(p)", "segment": "\(s.name)", "status": "\(s.status.rawValue)",
                                    "entering": "\(s.entering)", "exiting": "\(s.exiting)",
                                    "transitions": "\(s.emitted ? "published" : s.status == .removed ? "none" : "applied silently")"])
                            }
                        }
                    } else if rebuildFromBeginning {
                        start = -2  // RD_KAFKA_OFFSET_BEGINNING: the group's commits are ahead of the lost state
                    }
                } catch {
                    // A checkpoint that cannot be read must not be silently replaced by an empty state.
                    logger.critical("cannot restore partition from the checkpoint", metadata: ["partition": "\(p)", "error": "\(error)"])
                    fatalError = "\(error)"
                    requestStop()
                }
            }
            restoredNext.append(restored)
            seeks.append(TopicPartitionOffset(topic: tp.topic, partition: tp.partition, offset: start))
        }
        let rebuilds = fatalError == nil ? catchUpSilently(consumer, &seeks, restoredNext) : 0
        logger.info("partitions assigned", metadata: ["partitions": "\(partitions.map { "\($0.topic)[\($0.partition)]" }.joined(separator: ","))",
                                                     "restored_customers": "\(shards.customerCount)"])
        return writer == nil && rebuilds == 0 ? nil : seeks
    }

    /// A partition's state here may be behind what the group has processed: none at all (another
    /// member held the partition, whose checkpoint stays on its host; this process keeps no
    /// checkpoints; the file was unusable), or a checkpoint older than the group's commits (the
    /// partition was here before, then elsewhere). Resuming at the group's committed offset would
    /// continue from an empty or stale state, every customer's history since missing; replaying
    /// from the state's own offset would produce again what the group produced. So the state is
    /// brought up to the committed offset from the input (from the earliest retained offset when
    /// there is none), applying records before it without producing anything (`rebuilding`).
    /// Returns how many partitions do that.
    private func catchUpSilently(_ consumer: KafkaConsumer, _ seeks: inout [TopicPartitionOffset], _ restoredNext: [Int64?]) -> Int {
        guard !seeks.isEmpty else { return 0 }
        let committed: [TopicPartitionOffset]
        do {
            committed = try consumer.committed(seeks.map { KafkaConsumer.TopicPartitionKey(topic: $0.topic, partition: $0.partition) })
        } catch {
            if restoredNext.allSatisfy({ $0 != nil }) {
                logger.warning("cannot read the group's committed offsets; resuming every partition from its checkpoint",
                               metadata: ["error": "\(error)"])
                return 0
            }
            // Not knowing whether the group processed them, this member would either lose their
            // history or produce their triggers again: stop, and let a restart ask again.
            logger.critical("cannot read the group's committed offsets for partitions without local state",
                            metadata: ["error": "\(error)"])
            fatalError = "committed offsets unavailable: \(error)"
            requestStop()
            return 0
        }
        var n = 0
        for (i, c) in committed.enumerated() where c.offset > 0 {
            let p = PartitionID(topic: seeks[i].topic, partition: seeks[i].partition)
            if let next = restoredNext[i] {
                guard c.offset > next else { continue }
                logger.notice("the checkpoint here is behind the group's commits: replaying the difference from the input, producing nothing before the committed offset",
                              metadata: ["partition": "\(p)", "checkpoint": "\(next)", "committed": "\(c.offset)"])
            } else {
                seeks[i].offset = -2  // RD_KAFKA_OFFSET_BEGINNING
                logger.notice("no state for this partition here, but the group processed it: rebuilding its state from the input's earliest retained offset, producing nothing before the committed offset",
                              metadata: ["partition": "\(p)", "committed": "\(c.offset)"])
            }
            rebuilding[p] = c.offset
            n += 1
        }
        return n
    }

    public func partitionsRevoked(_ consumer: KafkaConsumer, _ partitions: [TopicPartitionOffset]) {
        endRun()
        applyPending()
        runPartition = -1
        // Everything produced so far must be acknowledged and its offsets committed before the
        // partitions go to another member; then their state leaves memory.
        drainAndCommit(deadlineMs: config.shutdown.deadlineMs)
        dropState(of: partitions)
        logger.info("partitions revoked", metadata: ["partitions": "\(partitions.map { "\($0.topic)[\($0.partition)]" }.joined(separator: ","))"])
    }

    /// Partitions that left this member: their state leaves memory (it is in the checkpoint, or
    /// the new owner rebuilds it).
    private func dropState(of partitions: [TopicPartitionOffset]) {
        for tp in partitions {
            let p = PartitionID(topic: tp.topic, partition: tp.partition)
            idle.remove(p)
            rebuilding[p] = nil
            nextOffsets[p] = nil
            // The engine's counters restart with the partition's state; keep what they had so the
            // published counters never go backwards in this process.
            if let stats = shards.stats(p) { retiredCounters[p, default: PartitionStats()].addCounters(stats) }
            shards.release(p)
            counters.positions[p.description] = nil
        }
    }

    public func partitionsLost(_ consumer: KafkaConsumer, _ partitions: [TopicPartitionOffset]) {
        endRun()
        applyPending()
        runPartition = -1
        tracker.forget(Set(partitions.map { OffsetTracker.PartitionKey(topic: $0.topic, partition: $0.partition) }))
        // Never commit for a lost assignment: a staged checkpoint forgets them too.
        let lost = Set(partitions.map { PartitionID(topic: $0.topic, partition: $0.partition) })
        staged?.capturing.removeAll { lost.contains($0) }
        staged?.snapshots.removeAll { lost.contains($0.0.partition) }
        dropState(of: partitions)
        logger.warning("partitions lost; nothing committed for them", metadata: ["count": "\(partitions.count)"])
    }
}
