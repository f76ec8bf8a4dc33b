// tidepool-bench: hot-path figures in a release build. Run through `bash Benchmarks/run`
// (or `make bench`). Every figure is printed with its unit and its input size.
import Foundation
import TidepoolEngine
import TidepoolStore
import CMemory

func nowNs() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Best of `rounds` timings of `body`, in seconds.
func best(_ rounds: Int = 5, _ body: () -> Void) -> Double {
    var b = Double.infinity
    for _ in 0..<rounds {
        let t0 = nowNs()
        body()
        b = min(b, Double(nowNs() - t0) / 1e9)
    }
    return b
}

/// CPU time of this thread, or of the whole process (the checkpoint write is I/O as well as CPU,
/// and its records are encoded on a helper thread).
func cpuNs(_ clock: clockid_t = CLOCK_THREAD_CPUTIME_ID) -> UInt64 {
    var ts = timespec()
    clock_gettime(clock, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// System (kernel) CPU time of this thread: page faults of fresh memory show up here.
func threadSystemNs() -> UInt64 {
    var u = rusage()
    getrusage(1, &u)  // RUSAGE_THREAD (a Linux extension Swift does not import)
    return UInt64(u.ru_stime.tv_sec) * 1_000_000_000 + UInt64(u.ru_stime.tv_usec) * 1000
}

func line(_ name: String, _ value: Double, _ unit: String, _ note: String = "") {
    print(name.padding(toLength: 44, withPad: " ", startingAt: 0) + String(format: "%14.0f ", value) + unit + (note.isEmpty ? "" : "   (\(note))"))
}

let args = CommandLine.arguments
let n = args.count > 1 ? Int(args[1]) ?? 2_000_000 : 2_000_000
/// `BENCH_ONLY=engine`: only the 1M-customer replay (section 4), for profiling it alone;
/// `BENCH_ONLY=checkpoint`: the replay, then straight to the checkpoint figures (section 5);
/// `BENCH_ONLY=campaigns`: only the replay with the three example campaigns (section 4b);
/// `BENCH_ONLY=threads`: the replay, then one engine on one thread against two on two (4c);
/// `BENCH_ONLY=steady`: the replay, A and B, then B's customers in steady state (section 4);
/// `BENCH_ONLY=heavy`: only the memory of a 50-event customer (section 4a);
/// `BENCH_ONLY=scale`: only memory per customer at `args[2]` customers (default 10M; 4d), in a
/// process of its own (`Benchmarks/run` runs it after the rest).
let only = ProcessInfo.processInfo.environment["BENCH_ONLY"] ?? ""
let engineOnly = only == "engine" || only == "checkpoint" || only == "campaigns" || only == "threads" || only == "steady" || only == "scale" || only == "heavy"

// The reference event: a purchase of ~150 bytes, as producers send it.
let distinct = 10_000
let ts: Int64 = 1_795_337_587_123
let events: [[UInt8]] = (0..<distinct).map { i in
    Array(#"{"event_id":"e-\#(100000 + i)","customer_id":"c-\#(10000 + i)","type":"purchase","channel":"mini_program","timestamp":\#(ts + Int64(i)),"amount":129.90,"currency":"CNY"}"#.utf8)
}
let keys: [[UInt8]] = (0..<distinct).map { Array("c-\(10000 + $0)".utf8) }
let avgBytes = Double(events.reduce(0) { $0 + $1.count }) / Double(distinct)
let decoder = TouchpointDecoder()
let nowMs = ts + 1_000_000

print("tidepool-bench (release build), reference event \(Int(avgBytes.rounded())) bytes, \(distinct) distinct events cycled")
print("heap pages: " + ((ProcessInfo.processInfo.environment["GLIBC_TUNABLES"] ?? "").contains("glibc.malloc.hugetlb=1")
    ? "transparent huge pages (GLIBC_TUNABLES=glibc.malloc.hugetlb=1)" : "4 KiB (GLIBC_TUNABLES without glibc.malloc.hugetlb=1)"))
print("")

var sink = 0
if !engineOnly {
// 1. Hand-written decoder, key check included.
let tDecode = best {
    for k in 0..<n {
        let j = k % distinct
        events[j].withUnsafeBytes { p in
            keys[j].withUnsafeBytes { kb in
                if let e = try? decoder.decode(p, key: .bytes(kb), nowMs: nowMs) { sink &+= e.customerID.utf8.count }
            }
        }
    }
}
let decodeRate = Double(n) / tDecode
line("decode (TouchpointDecoder, 1 core)", decodeRate, "events/s", "\(n) events, best of 5")
line("decode throughput", decodeRate * avgBytes / 1e6, "MB/s")
line("decode latency", 1e9 / decodeRate, "ns/event")

// 2. Foundation JSONDecoder on the same events, as the baseline the decoder replaces.
struct FoundationEvent: Decodable {
    var event_id: String
    var customer_id: String
    var type: String
    var channel: String
    var timestamp: Int64
    var amount: Decimal?
    var currency: String?
}
let jd = JSONDecoder()
let nFoundation = min(n, 200_000)
let datas = events.map { Data($0) }
let tFoundation = best(3) {
    for k in 0..<nFoundation {
        if let e = try? jd.decode(FoundationEvent.self, from: datas[k % distinct]) { sink &+= e.customer_id.utf8.count }
    }
}
let foundationRate = Double(nFoundation) / tFoundation
line("decode (Foundation JSONDecoder, 1 core)", foundationRate, "events/s", "\(nFoundation) events, best of 3")
print(String(format: "%@%14.1f x", "decoder speed-up over Foundation".padding(toLength: 44, withPad: " ", startingAt: 0), decodeRate / foundationRate))

// 3. Decode + engine apply (state update, first-purchase rule, trigger encoding).
let encoder = TriggerEncoder()
var out: [UInt8] = []
let partitions = (0..<8).map { PartitionID(topic: "touchpoints", partition: Int32($0)) }
var triggers = 0
let tEngine = best(3) {
    let engine = Engine()
    for k in 0..<n {
        let j = k % distinct
        events[j].withUnsafeBytes { p in
            keys[j].withUnsafeBytes { kb in
                guard let e = try? decoder.decode(p, key: .bytes(kb), nowMs: nowMs) else { return }
                engine.apply(e, partition: partitions[j & 7]) { o in
                    if case .trigger(let t) = o {
                        encoder.encode(t, emittedAtMs: nowMs, into: &out)
                        triggers += 1
                    }
                }
            }
        }
    }
}
line("decode + engine + trigger encode (1 core)", Double(n) / tEngine, "events/s", "\(n) events, \(distinct) customers")

// 3b. Trigger encoding alone, as the daemon's main thread does it for every decision it
//     publishes: a campaign trigger with a three-value snapshot (the winback campaign's shape).
let sample = Trigger(triggerID: Trigger.id(customerID: "c-10042", campaign: "winback", episode: 3), campaign: "winback",
                     customerID: "c-10042", channel: "wecom", reasonKind: "segment_entered",
                     reasonDetail: "entered winback at 2026-11-30T08:15:00.000Z: in_segment(repeat_buyer) = true, in_segment(lapsed_visitor) = true",
                     causeEventID: nil, episode: 3, firedAtMs: ts, expiresAtMs: ts + 72 * 3_600_000,
                     snapshot: [("orders()", .int(4)), ("spend()", .money(Money(units: 51_960))), ("since(last(page_view))", .int(1_296_000_000))])
let nEncode = min(n, 1_000_000)
var encodedBytes = 0
let tEncode = best {
    for k in 0..<nEncode {
        encoder.encode(sample, emittedAtMs: ts + Int64(k), into: &out)
        encodedBytes = out.count
    }
}
line("trigger encode (TriggerEncoder, 1 core)", Double(nEncode) / tEncode, "triggers/s", "\(nEncode) triggers of \(encodedBytes) bytes, best of 5")
}

// 4. State engine at scale: 1M customers, the ten example segments, decode + aggregates +
//    segment evaluation + timer scheduling; then memory per customer and timer throughput.
/// Resident memory of the process (from /proc/self/statm), in bytes.
func allocatedBytes() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
          let pages = text.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else { return 0 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}
let customersN = args.count > 2 ? Int(args[2]) ?? 1_000_000 : 1_000_000
let eventsPerCustomer = 4
let engineEvents = customersN * eventsPerCustomer
if only != "scale" {
    print("")
    print("state engine: \(customersN) customers, \(engineEvents) events, \(ExampleSegments.standard.count) segments")
}
let aggConfig = AggregateConfig()
let segmentSet = try! SegmentSet(ExampleSegments.definitions, aggregates: aggConfig, channels: ChannelTable(aggConfig))
let typesMix: [EventType] = [.pageView, .pageView, .pageView, .productView, .addToCart, .purchase, .messageOpen, .wecomChat]
let channelMix = ["website", "app", "mini_program", "wecom", "tmall", "jd"]
// 4a. Memory of a "typical" heavy customer (measured first, while resident memory only grows): 50 events spread over the longest window (365d),
//    purchases with order ids, several channels, all ten segments evaluated.
if !engineOnly || only == "heavy" {
    let heavyPartitions = (0..<8).map { PartitionID(topic: "touchpoints", partition: Int32($0)) }
    // HEAVY_CUSTOMERS=N sets how many (Benchmarks/run measures 200k with BENCH_ONLY=heavy in a
    // process of its own: here, after the decoder's sections, the heap they freed is reused).
    let heavyCustomers = Int(ProcessInfo.processInfo.environment["HEAVY_CUSTOMERS"] ?? "") ?? 20_000
    let perCustomer = 50
    let heavyBefore = allocatedBytes()
    let heavy = Engine(config: EngineConfig(aggregates: aggConfig, segments: segmentSet, firstPurchase: FirstPurchaseRule(enabled: false), transitionOutput: .counted))
    var hr = SplitMixBench(state: 11)
    for k in 0..<(heavyCustomers * perCustomer) {
        let c = k % heavyCustomers
        let t = typesMix[Int(hr.next() % UInt64(typesMix.count))]
        let ts = baseTime + Int64(k / heavyCustomers) * (365 * 86_400_000 / Int64(perCustomer))
        let e = TouchpointEvent(eventID: "h\(k)", customerID: "c\(c)", type: t, channel: channelMix[Int(hr.next() % 6)], timestampMs: ts,
                                amount: t == .purchase ? Money(major: 100) : nil, currency: t == .purchase ? "CNY" : nil,
                                properties: t == .purchase ? RawJSONObject(validated: Array(#"{"order_id":"o\#(k)"}"#.utf8)) : nil)
        heavy.apply(e, partition: heavyPartitions[c & 7]) { _ in }
    }
    let heavyAfter = allocatedBytes()
    line("memory per customer, 50 events in 365d", Double(heavyAfter - heavyBefore) / Double(heavy.customerCount), "bytes",
         "\(heavy.customerCount) customers x \(perCustomer) events")
    // Where it goes: the record itself and each array's payload (capacity x stride; each array
    // also has a 32-byte header and malloc's 16 bytes).
    var parts = [Double](repeating: 0, count: 5)
    for ps in heavy.partitions.values {
        for r in ps.customers where r.live {
            let a = r.aggregates
            parts[0] += Double(a.bucketBytes)
            parts[1] += Double(a.firstLast.count * MemoryLayout<FirstLast>.stride)
            parts[2] += Double(a.recentIDs.count * MemoryLayout<(UInt64, Int64)>.stride)
            parts[3] += Double(a.orderBytes)
            parts[4] += Double(a.sectionBytes)
        }
    }
    let nh = Double(heavy.customerCount)
    let used = parts[0...3].reduce(0, +)
    print("  of which: record \(MemoryLayout<CustomerRecord>.stride) B, buckets \(Int(parts[0] / nh)) B, first/last \(Int(parts[1] / nh)) B, "
          + "recent ids \(Int(parts[2] / nh)) B, orders \(Int(parts[3] / nh)) B, room for growth \(Int((parts[4] - used) / nh)) B, "
          + "next flips \(MemoryLayout<UInt32>.size * segmentSet.segments.count) B, + 48 B array overhead (the resident figure above also counts malloc's slack)")
    print("  malloc: \(Int(Double(tp_heap_bytes_in_use()) / nh)) B in use and \(Int(Double(tp_heap_bytes_free()) / nh)) B free in the heap per customer (whole process)")
    if only == "heavy" { exit(0) }
}
var rng = SplitMixBench(state: 7)
let baseTime: Int64 = 1_790_000_000_000

// 4d. Memory per customer at scale (10M customers by default): ~4 events per customer over 60
//     days, the ten example segments, applied in runs of up to 64 events of one partition as
//     the daemon applies them. The events are built as they are applied (4M decoded records are
//     kept in memory for section 4; 40M would not fit beside the state), so no decode here.
if only == "scale" {
    let customers = args.count > 2 ? Int(args[2]) ?? 10_000_000 : 10_000_000
    let total = customers * eventsPerCustomer
    print("")
    print("state engine at scale: \(customers) customers, \(total) events, \(ExampleSegments.standard.count) segments")
    let parts = (0..<8).map { PartitionID(topic: "touchpoints", partition: Int32($0)) }
    let engine = Engine(config: EngineConfig(aggregates: aggConfig, segments: segmentSet, firstPurchase: FirstPurchaseRule(enabled: false),
                                             transitionOutput: .counted))
    var buffers = [[TouchpointEvent]](repeating: [], count: parts.count)
    var r = SplitMixBench(state: 17)
    var applyNs: UInt64 = 0
    let before = allocatedBytes()
    func flush(_ k: Int) {
        let t0 = nowNs()
        engine.apply(buffers[k][...], partition: parts[k]) { _ in }
        applyNs += nowNs() - t0
        buffers[k].removeAll(keepingCapacity: true)
    }
    for k in 0..<total {
        let c = Int(r.next() % UInt64(customers))
        let t = typesMix[Int(r.next() % UInt64(typesMix.count))]
        let id = "c\(c)"
        let e = TouchpointEvent(eventID: "e\(k)", customerID: id, type: t, channel: channelMix[Int(r.next() % UInt64(channelMix.count))],
                                timestampMs: baseTime + Int64(k) * (60 * 86_400_000 / Int64(total)),
                                amount: t == .purchase ? Money(major: Int64(50 + r.next() % 900)) : nil, currency: t == .purchase ? "CNY" : nil)
        let p = Int(StableHash.hash64(id) & 7)
        buffers[p].append(e)
        if buffers[p].count == 64 { flush(p) }
    }
    for k in buffers.indices where !buffers[k].isEmpty { flush(k) }
    let after = allocatedBytes()
    line("memory per customer at scale", Double(after - before) / Double(engine.customerCount), "bytes",
         "\(engine.customerCount) customers, ~\(eventsPerCustomer) events each; resident, all structures")
    line("... resident state in all", Double(after - before) / Double(1 << 20), "MiB",
         "\(String(format: "%.2f", Double(after - before) / Double(1 << 30))) GiB")
    line("... aggregates + 10 segments, no decode (1 core)", Double(total) / (Double(applyNs) / 1e9), "events/s",
         "\(total) events; event construction not timed")
    exit(0)
}
// Events over 60 days, in time order (a replay), each customer seen ~4 times. The partition of
// each event is computed here, not in the timed loops: a Kafka consumer is handed it by the
// broker (the producer's partitioner chose it), and hashing the key through the generic
// `hash64` cost ~2.9k instructions per event, about a fifth of the replay (callgrind).
let engineInputs: [([UInt8], [UInt8], Int)] = (0..<engineEvents).map { k in
    let c = Int(rng.next() % UInt64(customersN))
    let t = typesMix[Int(rng.next() % UInt64(typesMix.count))]
    let ch = channelMix[Int(rng.next() % UInt64(channelMix.count))]
    let ts = baseTime + Int64(k) * (60 * 86_400_000 / Int64(engineEvents))
    var json = #"{"event_id":"e\#(k)","customer_id":"c\#(c)","type":"\#(t.name)","channel":"\#(ch)","timestamp":\#(ts)"#
    if t == .purchase { json += #","amount":\#(50 + rng.next() % 900).50,"currency":"CNY""# }
    json += "}"
    let key = Array("c\(c)".utf8)
    return (Array(json.utf8), key, Int(StableHash.hash64(key) & 7))
}
// A consumer hands records over in runs of one partition (librdkafka's batch consume returns a
// fetch's records together): the inputs, still in time order within each partition, are grouped
// into runs of up to 64 records of one partition, as they fill.
let runLength = 64
var engineRuns: [[Int]] = []
do {
    var pending = [[Int]](repeating: [], count: 8)
    for (k, input) in engineInputs.enumerated() {
        pending[input.2].append(k)
        if pending[input.2].count == runLength { engineRuns.append(pending[input.2]); pending[input.2] = [] }
    }
    engineRuns += pending.filter { !$0.isEmpty }
}
let enginePartitions = (0..<8).map { PartitionID(topic: "touchpoints", partition: Int32($0)) }
let engineNow = baseTime + 61 * 86_400_000
var replayBatch: [TouchpointEvent] = []
replayBatch.reserveCapacity(runLength)
/// Decodes the inputs of `run` (one partition's) into `batch`.
func decodeRun(_ run: [Int], into batch: inout [TouchpointEvent]) {
    batch.removeAll(keepingCapacity: true)
    for k in run {
        let input = engineInputs[k]
        input.0.withUnsafeBytes { p in
            input.1.withUnsafeBytes { kb in
                if let e = try? decoder.decode(p, key: .bytes(kb), nowMs: engineNow) { batch.append(e) }
            }
        }
    }
}
/// Decodes `runs` and applies them to `engine`, each run at once (`batched`) or one event at a
/// time; returns the nanoseconds it took.
func replay(_ runs: ArraySlice<[Int]>, _ engine: Engine, batched: Bool, _ on: (EngineOutput) -> Void) -> UInt64 {
    let t0 = nowNs()
    for run in runs {
        decodeRun(run, into: &replayBatch)
        // Partition by customer, as Kafka's key partitioning does.
        let p = enginePartitions[engineInputs[run[0]].2]
        if batched {
            engine.apply(replayBatch, partition: p, emit: on)
        } else {
            for e in replayBatch { engine.apply(e, partition: p, emit: on) }
        }
    }
    return nowNs() - t0
}
/// An engine as the daemon configures it: transitions counted, not emitted.
func freshEngine(campaigns: CampaignSet = .empty, output: TransitionOutput = .counted) -> Engine {
    Engine(config: EngineConfig(aggregates: aggConfig, segments: segmentSet, firstPurchase: FirstPurchaseRule(enabled: false),
                                campaigns: campaigns, transitionOutput: output))
}
/// Transitions an engine counted, over all segments.
func transitionCount(_ e: Engine) -> Int64 { e.transitionCounts.values.reduce(0, +) }
let before = allocatedBytes()
let bigEngine = freshEngine()
let engineSeconds = only == "campaigns" ? 1 : Double(replay(engineRuns[...], bigEngine, batched: false) { _ in }) / 1e9
let transitionsOut = transitionCount(bigEngine)
if only != "campaigns" {
    let replayTimers = enginePartitions.reduce(Int64(0)) { $0 + (bigEngine.stats($1)?.timersFired ?? 0) }
    let after = allocatedBytes()
    line("decode + aggregates + 10 segments (1 core)", Double(engineEvents) / engineSeconds, "events/s",
         "\(engineEvents) events, \(bigEngine.customerCount) customers, \(transitionsOut) transitions, \(replayTimers) timers")
    line("memory per customer (resident, all structures)", Double(after - before) / Double(bigEngine.customerCount), "bytes",
         "\(bigEngine.customerCount) customers, ~\(eventsPerCustomer) events each")
}
/// Replays the runs through two engines whose runs alternate in blocks of 64 runs, so that both
/// see the same machine (this VM's memory speed moved by 2x within minutes: back-to-back runs
/// could not compare them). `batched`: each run is applied at once, else one event at a time.
/// Returns each side's seconds.
func alternating(_ a: Engine, batchedA: Bool, _ onA: (EngineOutput) -> Void,
                 _ b: Engine, batchedB: Bool, _ onB: (EngineOutput) -> Void) -> (Double, Double) {
    var nsA: UInt64 = 0, nsB: UInt64 = 0
    var next = 0
    while next < engineRuns.count {
        let block = engineRuns[next..<min(next + 64, engineRuns.count)]
        next += 64
        nsA += replay(block, a, batched: batchedA, onA)
        nsB += replay(block, b, batched: batchedB, onB)
    }
    return (Double(nsA) / 1e9, Double(nsB) / 1e9)
}

// The same replay one event at a time (A) against the batched apply of each run (B: customers
// looked up and their state prefetched first), in two fresh engines; their transitions must be
// equal.
if only == "engine" || only == "" || only == "steady" {
    let single = freshEngine(), batched = freshEngine()
    let (singleSeconds, batchedSeconds) = alternating(single, batchedA: false, { _ in }, batched, batchedB: true, { _ in })
    let singleTransitions = transitionCount(single), batchedTransitions = transitionCount(batched)
    line("... one event at a time, alternating (A)", Double(engineEvents) / singleSeconds, "events/s", "\(singleTransitions) transitions")
    line("... runs of \(runLength), batched apply (B)", Double(engineEvents) / batchedSeconds, "events/s",
         "\(batchedTransitions) transitions" + (batchedTransitions == singleTransitions ? "" : " MISMATCH"))
    print(String(format: "%@%14.2f x", "batched apply speed-up (B / A, same run)".padding(toLength: 44, withPad: " ", startingAt: 0), singleSeconds / batchedSeconds))
    // Steady state: the same customers, already in memory (as in a daemon that has run for a
    // while), get the same events again 60 days later, batched as in B. Nothing is allocated for
    // a new customer, no fresh memory is faulted in, and no event is a customer's first; the
    // customers carry the earlier 60 days in their windows. Timers due meanwhile fire as stream
    // time passes them. Not with BENCH_ONLY=engine, whose replay is the callgrind input.
    if only != "engine" {
    let shift: Int64 = 60 * 86_400_000
    let transitionsBefore = transitionCount(batched)
    let timersBefore = enginePartitions.reduce(Int64(0)) { $0 + (batched.stats($1)?.timersFired ?? 0) }
    let kernelBefore = threadSystemNs()
    let t0s = nowNs()
    for run in engineRuns {
        decodeRun(run, into: &replayBatch)
        for i in replayBatch.indices { replayBatch[i].timestampMs += shift }
        batched.apply(replayBatch, partition: enginePartitions[engineInputs[run[0]].2]) { _ in }
    }
    let steadySeconds = Double(nowNs() - t0s) / 1e9
    let steadyKernel = Double(threadSystemNs() - kernelBefore) / 1e9
    let steadyTimers = enginePartitions.reduce(Int64(0)) { $0 + (batched.stats($1)?.timersFired ?? 0) } - timersBefore
    line("... steady state: resident customers (B)", Double(engineEvents) / steadySeconds, "events/s",
         "the same \(engineEvents) events 60 days later, \(batched.customerCount) customers, \(transitionCount(batched) - transitionsBefore) transitions, "
         + "\(steadyTimers) timers, kernel \(Int((steadyKernel / steadySeconds * 100).rounded()))% of the time")
    }
}
if only == "engine" || only == "steady" { exit(0) }

// 4c. The same replay with the partitions split over two engines on two threads, as the daemon
// does with `processing.threads: 2`: partitions 0-3 in one engine, 4-7 in the other; each block
// of 64 runs (~4k events, a poll's worth) is decoded and applied by both threads at once and
// joined. Blocks alternate with one engine on one thread (batched, as B above), so both see the
// same machine. The engine alone: no broker or librdkafka threads compete for the cores here, as
// they do in the end-to-end figure.
if only == "" || only == "threads" {
    let one = freshEngine()
    let two = [freshEngine(), freshEngine()]
    var nsOne: UInt64 = 0, nsTwo: UInt64 = 0
    var next = 0
    while next < engineRuns.count {
        let block = engineRuns[next..<min(next + 64, engineRuns.count)]
        next += 64
        nsOne += replay(block, one, batched: true) { _ in }
        let t0 = nowNs()
        // Two iterations on the pool's threads: enough for a figure (the daemon keeps a thread per
        // engine, `ShardWorkers`).
        DispatchQueue.concurrentPerform(iterations: 2) { k in
            var batch: [TouchpointEvent] = []
            for run in block where (engineInputs[run[0]].2 < 4) == (k == 0) {
                decodeRun(run, into: &batch)
                two[k].apply(batch, partition: enginePartitions[engineInputs[run[0]].2]) { _ in }
            }
        }
        nsTwo += nowNs() - t0
    }
    let oneSeconds = Double(nsOne) / 1e9, twoSeconds = Double(nsTwo) / 1e9
    let splitTransitions = transitionCount(two[0]) + transitionCount(two[1])
    line("decode + engine, 1 engine on 1 thread", Double(engineEvents) / oneSeconds, "events/s",
         "\(engineEvents) events, \(one.customerCount) customers, alternating in blocks of 64 runs")
    line("decode + engine, 2 engines on 2 threads", Double(engineEvents) / twoSeconds, "events/s",
         "\(two[0].customerCount) + \(two[1].customerCount) customers, \(splitTransitions) transitions"
         + (splitTransitions == transitionCount(one) ? "" : " MISMATCH"))
    print(String(format: "%@%14.2f x", "two threads / one (same run)".padding(toLength: 44, withPad: " ", startingAt: 0), oneSeconds / twoSeconds))
}
if only == "threads" { exit(0) }
if only != "checkpoint" {
if only != "campaigns" {
var fired: Int64 = 0
let pendingTimers = enginePartitions.reduce(0) { $0 + (bigEngine.partitions[$1]?.customerCount ?? 0) }
let t0t = nowNs()
// Stream time moves 60 days past the replay, an hour at a time: dormancy and window exits fire.
var tAdvance = baseTime + 60 * 86_400_000
while tAdvance < baseTime + 120 * 86_400_000 {
    tAdvance += 3_600_000
    for p in enginePartitions { bigEngine.advance(p, to: tAdvance) { _ in } }
}
let timerSeconds = Double(nowNs() - t0t) / 1e9
for p in enginePartitions { fired += bigEngine.stats(p)?.timersFired ?? 0 }
line("timers fired (evaluate + reschedule)", Double(fired) / timerSeconds, "timers/s", "\(fired) timers over 60 days of stream time, \(pendingTimers) customers")
}

// 4b. The same replay with the three example campaigns (delay + debounce, holdout, caps, quiet
//     hours, consent): the cost of the contact policy on top of the segments.
do {
    let camps = try! CampaignSet(ExampleCampaigns.definitions, policy: ContactPolicy(), segments: segmentSet,
                                 aggregates: aggConfig, channels: ChannelTable(aggConfig))
    let withCampaigns = freshEngine(campaigns: camps)
    var decisions = 0, sent = 0
    let secondsWith = Double(replay(engineRuns[...], withCampaigns, batched: false) { o in
        if case .trigger(let t) = o { decisions += 1; if t.outcome == .sent { sent += 1 } }
    }) / 1e9
    let rateWith = Double(engineEvents) / secondsWith
    line("... + 3 campaigns (1 core)", rateWith, "events/s", "\(decisions) decisions, \(sent) sent")
    if only == "campaigns" { exit(0) }
    // The cost ratio from two fresh engines, without and with the campaigns, alternating in one
    // run (runs of 64, as the daemon applies them).
    let (without, with) = alternating(freshEngine(), batchedA: true, { _ in }, freshEngine(campaigns: camps), batchedB: true, { _ in })
    print(String(format: "%@%14.2f x", "campaigns cost (time with / without, same run)".padding(toLength: 44, withPad: " ", startingAt: 0),
                 with / without))
}

}

// 5. Checkpoint write rate and restore time for the 1M-customer engine above (every customer is
//    dirty after the replay: a full checkpoint), to a SQLite file in /tmp.
do {
    let path = "/tmp/tidepool-bench-\(getpid()).sqlite"
    defer { for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) } }
    let store = try! CheckpointStore(path: path, configVersion: "bench")
    // The daemon's capture: a cut in constant time, then slices of at most 5 ms
    // (`state.checkpoint_slice`) between which processing goes on; an event for a customer not
    // yet copied copies it first. Here 1,000 events (existing customers, after the replay) are
    // applied between slices.
    var liveRng = SplitMixBench(state: 99)
    let liveEvents: [(TouchpointEvent, Int)] = (0..<400_000).map { k in
        let c = Int(liveRng.next() % UInt64(customersN))
        let id = "c\(c)"
        return (TouchpointEvent(eventID: "live\(k)", customerID: id, type: .pageView, channel: "app",
                                timestampMs: baseTime + 60 * 86_400_000 + Int64(k) * 1000), Int(StableHash.hash64(Array(id.utf8)) & 7))
    }
    var liveNext = 0
    let t0c = nowNs()
    for p in enginePartitions { bigEngine.beginCheckpoint(p) }
    let tCut = Double(nowNs() - t0c) / 1e9
    var snaps: [(PartitionSnapshot, nextOffset: Int64)] = []
    var longestSlice = 0.0, captureSeconds = tCut, slices = 0
    var sliceTimes: [Double] = []
    var capturing = enginePartitions
    while !capturing.isEmpty {
        let t0s = nowNs()
        while let p = capturing.first, nowNs() - t0s < 5_000_000 {
            if let s = bigEngine.continueCheckpoint(p, budget: 512) {
                snaps.append((s, nextOffset: 1))
                capturing.removeFirst()
            }
        }
        let slice = Double(nowNs() - t0s) / 1e9
        sliceTimes.append(slice)
        longestSlice = max(longestSlice, slice)
        captureSeconds += slice
        slices += 1
        for _ in 0..<1000 where liveNext < liveEvents.count {
            let (e, part) = liveEvents[liveNext]
            liveNext += 1
            bigEngine.apply(e, partition: enginePartitions[part]) { _ in }
        }
    }
    let tSnapshot = captureSeconds
    sliceTimes.sort()
    let p99Slice = sliceTimes.isEmpty ? 0 : sliceTimes[min(sliceTimes.count - 1, sliceTimes.count * 99 / 100)]
    let encodedBytes = snaps.reduce(0) { $0 + $1.0.changedStates.totalBytes }
    let t0w = nowNs()
    let cpu0 = cpuNs(), proc0 = cpuNs(CLOCK_PROCESS_CPUTIME_ID)
    try! store.write(snaps)
    let tWrite = Double(nowNs() - t0w) / 1e9
    let cpuWrite = Double(cpuNs() - cpu0) / 1e9
    let procWrite = Double(cpuNs(CLOCK_PROCESS_CPUTIME_ID) - proc0) / 1e9
    let t0f = nowNs()
    store.foldWAL()
    let tFold = Double(nowNs() - t0f) / 1e9
    let written = snaps.reduce(0) { $0 + $1.0.changedIDs.count }
    line("checkpoint stall: the cut", tCut * 1000, "ms", "\(enginePartitions.count) partitions, \(written) dirty customers")
    line("checkpoint stall: longest slice", longestSlice * 1000, "ms",
         "\(slices) slices of at most 5 ms (p99 \(String(format: "%.1f", p99Slice * 1000)) ms), \(liveNext) events applied between them")
    line("checkpoint capture, all slices", tSnapshot * 1000, "ms",
         "encodes \(written) customers; on the processing thread, spread over the slices")
    line("checkpoint write (writer + copy thread)", Double(written) / tWrite, "customers/s",
         "\(written) customers, \(String(format: "%.2f", tWrite)) s; CPU: writer thread \(String(format: "%.2f", cpuWrite)) s, both \(String(format: "%.2f", procWrite)) s; \(encodedBytes / max(written, 1)) bytes of state per customer")
    line("WAL fold after the commit (writer thread)", tFold * 1000, "ms", "copies the checkpoint into the database file; nothing waits for it")
    let restored = Engine(config: EngineConfig(aggregates: aggConfig, segments: segmentSet, firstPurchase: FirstPurchaseRule(enabled: false), transitionOutput: .counted))
    // As a daemon starts: open the file (integrity check included), then restore every partition.
    let t0o = nowNs()
    let reopened = try! CheckpointStore(path: path, configVersion: "bench")
    let tOpen = Double(nowNs() - t0o) / 1e9
    let t0r = nowNs()
    let cpuR0 = cpuNs(), procR0 = cpuNs(CLOCK_PROCESS_CPUTIME_ID)
    for p in enginePartitions { _ = try! reopened.restore(p, into: restored) }
    let tRestore = Double(nowNs() - t0r) / 1e9
    let cpuRestore = Double(cpuNs() - cpuR0) / 1e9, procRestore = Double(cpuNs(CLOCK_PROCESS_CPUTIME_ID) - procR0) / 1e9
    line("open the checkpoint (integrity check)", tOpen * 1000, "ms", "PRAGMA quick_check of the file just written")
    line("restore: read + decode + re-arm timers", tRestore * 1000, "ms",
         "\(restored.customerCount) customers; CPU: engine thread \(String(format: "%.2f", cpuRestore)) s, both \(String(format: "%.2f", procRestore)) s")
    line("time to ready (open + restore)", (tOpen + tRestore) * 1000, "ms", "\(restored.customerCount) customers")
}

if sink == 42 { print("") }

struct SplitMixBench {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return StableHash.mix(state)
    }
}
