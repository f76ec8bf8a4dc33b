// tidepool-latency: a paced producer and a trigger reader in one native process, for the latency
// figure of Benchmarks/peer/compare.py ("latency event -> trigger read").
//
//   tidepool-latency --bootstrap HOST:PORT --topic T --rate N --seconds S [--triggers tidepool.triggers]
//
// It produces `rate` first purchases per second for `seconds` (a new customer each, so each one
// fires the built-in first-purchase trigger, whose fired_at is the event's timestamp = its produce
// time), reads the trigger topic, and prints one line of `key=value` figures:
//   event -> trigger read (p50/p99, the figure), event -> emitted_at (inside the daemon: fetch,
//   decode, apply, encode) and emitted_at -> read (the trigger's produce and fetch), plus the rate
//   actually offered, the triggers read per second (at an offered rate above the daemon's maximum,
//   that maximum for this workload with its producer and reader on the machine) and this
//   process's own CPU time.
//
//   tidepool-latency --bootstrap HOST:PORT --topic T --consume-only N [--decode]
//
// The second form is the ceiling of the daemon's input path: it consumes the topic from its
// start in a consumer group of its own, through the same `KafkaConsumer` and librdkafka settings
// as the daemon (batch polls of 10,000, the same prefetch), touching every record (and with
// `--decode`, decoding it with the daemon's `TouchpointDecoder`), until N records were read; it
// prints the rate from the first record to the N-th and its own CPU time. Nothing is applied or
// produced, so whatever the daemon does beyond this costs on top of it.
//
// Why not the Python client the peer uses: at the rate the figure needs (half of Tidepool's
// maximum, ~115k events/s) a confluent-kafka producer loop managed ~73k events/s on this 2-core
// machine and its reader another large share of a core, taking the cores from the daemon and the
// broker it was measuring. This client is librdkafka through TidepoolKafka, ~10x cheaper per event.
import Foundation
import TidepoolEngine
import TidepoolKafka

struct Options {
    var bootstrap = ""
    var topic = ""
    var triggers = "tidepool.triggers"
    var rate = 5000
    var seconds = 10
    var drainSeconds = 5
    /// Also print, per second of the run, the triggers read and their p50 / max latency.
    var series = false
    /// The producer's linger.ms: librdkafka's default, 5. With 1, at 50k events/s over 64
    /// partitions each produce request carried ~1 record per partition, and the 2.0.2 mock
    /// broker hands a consumer about one such batch per partition per fetch: the daemon could
    /// not read more than ~38k events/s however idle the machine was (48% idle, perf).
    var lingerMs = 5
    /// Consume this many records and report the rate (nothing produced; see the header).
    var consumeOnly = 0
    var decode = false

    init(_ args: [String]) {
        var i = 1
        func value() -> String {
            guard i + 1 < args.count else { fail("missing value after \(args[i])") }
            i += 1
            return args[i]
        }
        while i < args.count {
            switch args[i] {
            case "--bootstrap": bootstrap = value()
            case "--topic": topic = value()
            case "--triggers": triggers = value()
            case "--rate": rate = Int(value()) ?? 0
            case "--seconds": seconds = Int(value()) ?? 0
            case "--drain-seconds": drainSeconds = Int(value()) ?? 0
            case "--series": series = true
            case "--linger-ms": lingerMs = Int(value()) ?? 5
            case "--consume-only": consumeOnly = Int(value()) ?? 0
            case "--decode": decode = true
            default: fail("unknown argument \(args[i])")
            }
            i += 1
        }
        if bootstrap.isEmpty || topic.isEmpty || (consumeOnly <= 0 && (rate <= 0 || seconds <= 0)) {
            fail("usage: tidepool-latency --bootstrap HOST:PORT --topic T --rate N --seconds S [--triggers T] [--drain-seconds S]")
        }
    }
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("tidepool-latency: \(message)\n".utf8))
    exit(2)
}

func wallMs() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}

func wallUs() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1000
}

final class NoRebalanceWork: RebalanceListener {
    func partitionsAssigned(_ consumer: KafkaConsumer, _ partitions: [TopicPartitionOffset]) -> [TopicPartitionOffset]? { nil }
    func partitionsRevoked(_ consumer: KafkaConsumer, _ partitions: [TopicPartitionOffset]) {}
    func partitionsLost(_ consumer: KafkaConsumer, _ partitions: [TopicPartitionOffset]) {}
}

/// Where `needle` starts in `b`, or nil.
func find(_ needle: [UInt8], in b: UnsafeRawBufferPointer) -> Int? {
    guard let base = b.baseAddress?.assumingMemoryBound(to: UInt8.self), b.count >= needle.count else { return nil }
    var i = 0
    while i + needle.count <= b.count {
        if base[i] == needle[0] && memcmp(base + i, needle, needle.count) == 0 { return i }
        i += 1
    }
    return nil
}

/// The RFC 3339 time that follows `field` (`"fired_at":"`) in a trigger record, in ms.
func time(after field: [UInt8], in b: UnsafeRawBufferPointer) -> Int64? {
    guard let at = find(field, in: b), let base = b.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return nil }
    let start = at + field.count
    var end = start
    while end < b.count && base[end] != UInt8(ascii: "\"") { end += 1 }
    return Timestamp.parseRFC3339(base + start, end - start)
}

func percentile(_ sorted: [Int64], _ p: Double) -> Int64 {
    sorted.isEmpty ? -1 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
}

func cpuSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}

let o = Options(CommandLine.arguments)
let prefix = "live-\(o.rate)-\(wallMs())-"
let listener = NoRebalanceWork()

if o.consumeOnly > 0 {
    let consumer: KafkaConsumer
    do {
        consumer = try KafkaConsumer(properties: [
            "bootstrap.servers": o.bootstrap, "group.id": "consume-only-\(wallMs())", "enable.auto.commit": "false",
        ], listener: listener)
        try consumer.subscribe([o.topic])
    } catch { fail("consumer: \(error)") }
    let decoder = TouchpointDecoder(limits: DecoderLimits())
    var n = 0, invalid = 0, checksum = 0
    var firstUs: Int64 = 0, lastUs: Int64 = 0
    let deadline = wallMs() + 600_000
    while n < o.consumeOnly && wallMs() < deadline {
        consumer.poll(timeoutMs: 100) { m in
            guard m.error == nil else { return }
            if n == 0 { firstUs = wallUs() }
            n += 1
            if o.decode {
                do {
                    let e = try decoder.decode(m.value, key: m.key.map { .bytes($0) } ?? .none, nowMs: wallMs())
                    checksum &+= Int(truncatingIfNeeded: e.timestampMs)
                } catch { invalid += 1 }
            } else {
                checksum &+= Int(m.value.first ?? 0) &+ m.value.count
            }
        }
        lastUs = wallUs()
    }
    consumer.close()
    let rate = n > 1 ? Double(n - 1) / (Double(lastUs - firstUs) / 1e6) : 0
    print("consumed=\(n) per_s=\(Int(rate)) decoded=\(o.decode) invalid=\(invalid) checksum=\(checksum)"
          + " client_cpu_s=\(String(format: "%.2f", cpuSeconds()))")
    exit(n >= o.consumeOnly ? 0 : 1)
}
let reader: KafkaConsumer
do {
    reader = try KafkaConsumer(properties: [
        "bootstrap.servers": o.bootstrap, "group.id": "latency-\(prefix)", "auto.offset.reset": "latest",
        "fetch.wait.max.ms": "5", "enable.auto.commit": "false", "enable.partition.eof": "false",
    ], listener: listener)
    try reader.subscribe([o.triggers])
} catch { fail("reader: \(error)") }
// Produce only once the reader owns the trigger partitions and has fetched from them (so "latest"
// is resolved before the first trigger can exist).
let assignDeadline = wallMs() + 30_000
while reader.assignment.isEmpty && wallMs() < assignDeadline { reader.poll(timeoutMs: 100) { _ in } }
if reader.assignment.isEmpty { fail("no assignment of \(o.triggers) within 30 s") }
for _ in 0..<5 { reader.poll(timeoutMs: 100) { _ in } }

final class Sent: @unchecked Sendable {
    let lock = NSLock()
    var count = 0
    var done = false
    var elapsedUs: Int64 = 0
}
let sent = Sent()
let producerThread = Thread {
    let producer: KafkaProducer
    do {
        producer = try KafkaProducer(properties: [
            "bootstrap.servers": o.bootstrap, "linger.ms": String(o.lingerMs), "acks": "1", "enable.idempotence": "false",
            "compression.codec": "none",
        ], onDelivery: { r in if let e = r.error { FileHandle.standardError.write(Data("delivery: \(e)\n".utf8)) } })
        // Connected, with the topic's leaders known, before the clock starts: records produced
        // while the client still bootstraps waited ~1 s in its queue, which was the client's
        // start-up, not Tidepool's latency.
        _ = try producer.partitionCount(topic: o.topic, timeoutMs: 10_000)
    } catch { fail("producer: \(error)") }
    // By handle, as the daemon produces its triggers.
    let topic: KafkaTopic
    do { topic = try producer.topic(o.topic) } catch { fail("topic: \(error)") }
    let t0 = wallUs()
    let total = o.rate * o.seconds
    var n = 0
    var buf = [UInt8]()
    buf.reserveCapacity(256)
    while n < total {
        let due = min(total, Int((wallUs() - t0) * Int64(o.rate) / 1_000_000))
        if n >= due {
            usleep(200)
            continue
        }
        while n < due {
            let customer = prefix + String(n)
            buf.removeAll(keepingCapacity: true)
            buf.append(contentsOf: #"{"event_id":"l"#.utf8); buf.append(contentsOf: String(n).utf8)
            buf.append(contentsOf: #"","customer_id":""#.utf8); buf.append(contentsOf: customer.utf8)
            buf.append(contentsOf: #"","type":"purchase","channel":"app","timestamp":"#.utf8)
            buf.append(contentsOf: String(wallMs()).utf8)
            buf.append(contentsOf: #","amount":10,"currency":"CNY"}"#.utf8)
            do { try producer.produce(to: topic, key: Array(customer.utf8), value: buf) } catch { fail("produce: \(error)") }
            n += 1
        }
        producer.poll(timeoutMs: 0)
    }
    let elapsed = wallUs() - t0
    do { try producer.flush(timeoutMs: 30_000) } catch { fail("flush: \(error)") }
    sent.lock.lock()
    sent.count = n
    sent.elapsedUs = elapsed
    sent.done = true
    sent.lock.unlock()
}
producerThread.start()

let firedField = Array(#""fired_at":""#.utf8)
let emittedField = Array(#""emitted_at":""#.utf8)
let mine = Array(("\"customer_id\":\"" + prefix).utf8)
let firstPurchase = Array(#""kind":"first_purchase""#.utf8)
var total: [Int64] = [], inDaemon: [Int64] = [], afterEmit: [Int64] = []
var bySecond: [Int: [Int64]] = [:]
let startMs = wallMs()
total.reserveCapacity(o.rate * o.seconds)
// After the last record is produced, read until every trigger is in or none came for
// `drainSeconds` (a daemon far behind keeps delivering: at an offered rate above its maximum the
// triggers read per second are that maximum, `read_per_s`).
var firstRead = Int64.max, lastRead = Int64.min
var producerDoneAt = Int64.max
/// When the producer finished (first seen), for the drain timeout.
func doneAt() -> Int64 {
    if producerDoneAt == .max { producerDoneAt = wallMs() }
    return producerDoneAt
}
while true {
    reader.poll(timeoutMs: 5) { m in
        guard m.error == nil else { return }
        let v = m.value
        let now = wallMs()
        guard find(mine, in: v) != nil, find(firstPurchase, in: v) != nil,
              let fired = time(after: firedField, in: v), let emitted = time(after: emittedField, in: v) else { return }
        total.append(now - fired)
        firstRead = min(firstRead, now)
        lastRead = now
        inDaemon.append(emitted - fired)
        afterEmit.append(now - emitted)
        if o.series { bySecond[Int((fired - startMs) / 1000), default: []].append(now - fired) }
    }
    sent.lock.lock()
    let (done, n) = (sent.done, sent.count)
    sent.lock.unlock()
    if done && (total.count >= n || wallMs() - max(lastRead, doneAt()) > Int64(o.drainSeconds) * 1000) { break }
}
reader.close()
let cpu = cpuSeconds()
total.sort(); inDaemon.sort(); afterEmit.sort()
for (second, l) in bySecond.sorted(by: { $0.key < $1.key }) {
    let sorted = l.sorted()
    print("second \(second): \(l.count) triggers, p50 \(percentile(sorted, 0.5)) ms, max \(sorted.last ?? -1) ms")
}
sent.lock.lock()
let offered = Double(sent.count) / (Double(sent.elapsedUs) / 1e6)
print("p50_ms=\(percentile(total, 0.5)) p99_ms=\(percentile(total, 0.99)) max_ms=\(total.last ?? -1)"
      + " daemon_p50_ms=\(percentile(inDaemon, 0.5)) daemon_p99_ms=\(percentile(inDaemon, 0.99))"
      + " read_p50_ms=\(percentile(afterEmit, 0.5)) read_p99_ms=\(percentile(afterEmit, 0.99))"
      + " triggers=\(total.count) sent=\(sent.count) offered_per_s=\(Int(offered))"
      + " read_per_s=\(lastRead > firstRead ? Int(Double(total.count - 1) * 1000 / Double(lastRead - firstRead)) : 0)"
      + " client_cpu_s=\(String(format: "%.2f", cpu))")
sent.lock.unlock()
exit(total.count == sent.count ? 0 : 1)
