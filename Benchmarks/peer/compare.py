"""Tidepool against a peer (Quix Streams) on the same broker and the same events, in one run.

    python Benchmarks/peer/compare.py [--events N] [--customers N] [--partitions N] [--no-latency]

(or `bash Benchmarks/peer/run.sh ...`, which creates the virtualenv .build/venv-bench first).
TIDEPOOL_BIN selects the binary (default .build/release/tidepool).

Starts `tidepool mock-broker` (librdkafka's mock cluster in its own process), produces N
touchpoint events, then
  1. runs `tidepool run` (10 segments, 3 campaigns, a checkpoint every second) and measures its rate from the
     first event consumed to the last (polling /metrics);
  2. runs a Quix Streams application over the same topic with its own consumer group: per-customer
     state in RocksDB with daily purchase counts and sums, the rules count(purchase, 90d) >= 2 and
     sum(purchase, 365d) >= 2000, and a record on an output topic whenever a membership flips;
and prints both rates and their ratio. Everything is stopped by pid at the end.

Both are checked against the answer computed from the generated events: every event falls within
60 days, so repeat_buyer and big_spender only ever gain members, and at the end each must hold
exactly the customers with >= 2 purchases / purchases summing to >= 2000 (a MISMATCH is printed
otherwise).

The peer does strictly less work than Tidepool (2 rules instead of 10 segments and 3 campaigns,
no checkpoints of its own beyond its RocksDB state, no dead-letter validation).
"""
import argparse
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import warnings

warnings.filterwarnings("ignore")
from confluent_kafka import Consumer, Producer, TopicPartition

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("TIDEPOOL_BIN", str(ROOT / ".build" / "release" / "tidepool"))
# The paced producer and trigger reader of the latency runs (default: next to the tidepool binary).
LATENCY_BIN = os.environ.get("TIDEPOOL_LATENCY_BIN", str(pathlib.Path(BIN).parent / "tidepool-latency"))
TOPIC = "touchpoints"
PEER_OUT = "bench.quix.transitions"
LIVE = "touchpoints.live"  # one per latency run: LIVE + ".0", ".1", ".2", each with its trigger topic + ".triggers"
# Partitions of the latency runs' topics. The 2.0.2 mock finds a fetch's position by walking the
# partition's list of produced batches from the oldest ("FIXME: Maintain an index",
# rd_kafka_mock_msgset_find); a paced producer appends ~200 small batches per partition per
# second, so over 64 partitions the broker's cost per fetch grew through the run until it, not
# the daemon, set the latency (at 50k/s: 72% of the mock's thread in that walk, p50 rising
# from 64 ms to 700 ms within 10 s). A real broker seeks with an offset index.
LIVE_PARTITIONS = 8
DAY = 86_400_000


def line(name, value, unit, note=""):
    print(f"{name:<44}{value:>14,.0f} {unit}" + (f"   ({note})" if note else ""), flush=True)


def stop(proc, timeout=60):
    """SIGTERM the process we started, by its pid; SIGKILL if it does not exit in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def cpu_by_thread(pid):
    """{thread name: CPU seconds (user + system)} of a live process, from /proc/<pid>/task/*/stat;
    threads of one name (librdkafka's per-broker threads) are summed."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in pathlib.Path(f"/proc/{pid}/task").glob("*"):
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread exited meanwhile
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def cpu_delta(before, after):
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0.005}


def start_broker(partitions):
    # Topics are created up front: the 2.0.2 mock does not implement CreateTopics' controller
    # path either ("waiting for controller"), so Quix could not create its output topic.
    proc = subprocess.Popen([BIN, "mock-broker", "--partitions", str(partitions), "--topic", TOPIC, "--topic", PEER_OUT, *[a for i in range(3) for t in (f"{LIVE}.{i}", f"{LIVE}.{i}.triggers") for a in ("--topic", f"{t}:{LIVE_PARTITIONS}")],
                             "--topic", "tidepool.triggers", "--topic", "tidepool.dead-letters"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first = proc.stdout.readline().strip()
    assert first.startswith("bootstrap.servers="), first
    return proc, first.split("=", 1)[1]


def produce(bootstrap, events, customers, seed=1):
    """Returns (events/s, expected members of repeat_buyer and big_spender at the end)."""
    rng = random.Random(seed)
    orders = {}  # customer -> [purchases, spend]
    # linger.ms 500: batches of ~1,000 records per partition, as a producer at full rate makes
    # them. The 2.0.2 mock hands a consumer one batch per partition per fetch and walks a
    # partition's batch list from the oldest on every fetch; with linger.ms 20 (batches of ~20)
    # those two alone held the daemon's input path to 0.7-1.2M events/s and the broker used
    # ~2 s of CPU per million events, against 1.5-2.0M and 0.5-0.9 s now (Benchmarks/README.md,
    # 2026-12-03 fifth session). Every consumer of the run reads the same topic.
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 500, "batch.num.messages": 10000,
                  "queue.buffering.max.messages": 2_000_000, "enable.idempotence": False, "acks": 1})
    base = int(time.time() * 1000) - 60 * DAY
    types = ["page_view"] * 5 + ["product_view"] * 2 + ["add_to_cart", "purchase", "message_open"]
    channels = ["website", "app", "mini_program", "wecom", "tmall", "jd"]
    t0 = time.time()
    for n in range(events):
        c = f"c{rng.randrange(customers)}"
        kind = types[rng.randrange(len(types))]
        e = {"event_id": f"e{n}", "customer_id": c, "type": kind, "channel": channels[rng.randrange(6)],
             "timestamp": base + n * (60 * DAY // events)}
        if kind == "purchase":
            e["amount"] = 50 + rng.randrange(900)
            e["currency"] = "CNY"
            o = orders.setdefault(c, [0, 0])
            o[0] += 1
            o[1] += e["amount"]
        while True:
            try:
                p.produce(TOPIC, key=c.encode(), value=json.dumps(e, separators=(",", ":")).encode())
                break
            except BufferError:
                p.poll(0.05)
        if n % 10000 == 0:
            p.poll(0)
    if p.flush(120) != 0:
        raise RuntimeError("produce: records left undelivered")
    rate = events / (time.time() - t0)
    expected = {"repeat_buyer": sum(1 for n, _ in orders.values() if n >= 2),
                "big_spender": sum(1 for _, s in orders.values() if s >= 2000)}
    return rate, expected


SEGMENTS = {
    "repeat_buyer": "count(purchase, 90d) >= 2",
    "lapsed_visitor": "since(last(page_view)) > 14d",
    "winback": "in_segment(repeat_buyer) and in_segment(lapsed_visitor)",
    "big_spender": "sum(purchase, 365d) >= 2000",
    "browsing_not_buying": "count(page_view, 7d) >= 3 and orders() == 0",
    "cart_abandoner": "count(add_to_cart, 1d) >= 1 and count(purchase, 1d) == 0",
    "engaged_reader": "count(message_open, 30d) >= 2",
    "platform_heavy": "owned_share(90d) < 0.3",
    "multichannel": "distinct_channels() >= 3",
    "dormant_buyer": "orders() >= 1 and since(last()) > 30d",
}


def tidepool_config(path, bootstrap, state, port, threads="auto", group="bench-tidepool"):
    segs = "\n".join(f'  {k}: "{v}"' for k, v in SEGMENTS.items())
    path.write_text(f"""
kafka:
  bootstrap_servers: "{bootstrap}"
  group_id: {group}
  input_topics: [{TOPIC}]
  consumer:
    session.timeout.ms: "6000"
state:
  path: "{state}"
  # More often than the daemon's 5 s default: a run of a few seconds pays for a checkpoint
  # every second (each run's count is printed).
  checkpoint_interval: 1s
processing:
  threads: {threads}
time:
  idle_advance: false
http:
  listen: "127.0.0.1:{port}"
log:
  level: warning
segments:
{segs}
campaigns:
  winback:
    on: {{segment_entered: winback}}
    channels: [wecom, sms]
    holdout: 10%
    priority: 10
  cart_rescue:
    on: {{event: add_to_cart}}
    delay: 2h
    condition: "count(purchase, 1d) == 0"
    channels: [wecom, app]
    cooldown: 7d
  dormant_buyer_sms:
    on: {{segment_entered: dormant_buyer}}
    channels: [sms]
    cooldown: 90d
contact_policy:
  quiet_hours: none
""")


def scrape(port):
    """(events applied to customer state, {segment: members}) from /metrics, or (None, {}) before
    it serves. Applied, not consumed: a catch-up poll's events are counted when decoded and
    applied on the shard threads while the next poll is read."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None, {}
    events, members = 0.0, {}
    for l in text.splitlines():
        if l.startswith("tidepool_events_applied_total{"):
            events += float(l.rsplit(" ", 1)[1])
        elif l.startswith('tidepool_segment_members{segment="'):
            members[l.split('"')[1]] = int(float(l.rsplit(" ", 1)[1]))
        elif l.startswith('tidepool_checkpoint_stall_seconds{which="max"}'):
            members["__stall_max_s"] = float(l.rsplit(" ", 1)[1])
        elif l.startswith("tidepool_checkpoints_total"):
            members["__checkpoints"] = int(float(l.rsplit(" ", 1)[1]))
        elif l.startswith("tidepool_campaign_decisions_total{"):
            members["__decisions"] = members.get("__decisions", 0) + int(float(l.rsplit(" ", 1)[1]))
        elif l.startswith("tidepool_triggers_produced_total"):
            members["__triggers"] = int(float(l.rsplit(" ", 1)[1]))
        elif l.startswith('tidepool_thread_events_total{thread="'):
            members.setdefault("__threads", {})[l.split('"')[1]] = int(float(l.rsplit(" ", 1)[1]))
    return events, members


def run_tidepool(bootstrap, events, tmp, threads, tag="", broker=None):
    """Consumes the preloaded topic from its start in a consumer group of its own (and a fresh
    state file; `tag` tells repeated runs apart), with `processing.threads` = threads; returns
    (events/s, {segment: members, __...: figures}). `__cpu` is the CPU each of the daemon's
    threads (and the broker process, `broker`) used from the first event applied to the last."""
    import socket
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    name = f"{threads}{tag}"
    cfg = tmp / f"tidepool-{name}.yaml"
    tidepool_config(cfg, bootstrap, tmp / f"state-{name}.sqlite", port, threads=threads, group=f"bench-tidepool-{name}")
    log = open(tmp / "tidepool.log", "w")
    proc = subprocess.Popen([BIN, "run", "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    first_at = None
    deadline = time.time() + float(os.environ.get("PEER_TIMEOUT", "1800"))
    try:
        while time.time() < deadline:
            n, members = scrape(port)
            now = time.time()
            if n and first_at is None:
                first_at, first_n = now, n
                cpu0 = cpu_by_thread(proc.pid)
                broker0 = cpu_by_thread(broker.pid) if broker else {}
            if n is not None and n >= events:
                cpu = cpu_delta(cpu0, cpu_by_thread(proc.pid))
                if broker:
                    cpu["mock broker (process)"] = sum(cpu_delta(broker0, cpu_by_thread(broker.pid)).values())
                members["__cpu"] = (cpu, n - first_n)
                return (n - first_n) / (now - first_at), members
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"tidepool did not consume everything (exit {proc.poll()}):\n" + (tmp / "tidepool.log").read_text()[-2000:])
    finally:
        stop(proc)
        log.close()


def run_consume_only(bootstrap, events, decode):
    """The daemon's input path alone (tidepool-latency --consume-only): the same consumer and
    settings, every record touched (and decoded), nothing applied or produced. Returns
    (events/s, client CPU seconds), or None without the client."""
    if not os.access(LATENCY_BIN, os.X_OK):
        return None
    args = [LATENCY_BIN, "--bootstrap", bootstrap, "--topic", TOPIC, "--consume-only", str(events)] + (["--decode"] if decode else [])
    out = subprocess.run(args, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"tidepool-latency --consume-only failed: {out.stderr[-1000:]}")
    f = dict(kv.split("=", 1) for kv in out.stdout.split())
    return float(f["per_s"]), float(f["client_cpu_s"])


def run_latency(bootstrap, rate, seconds, tmp, live, fetch_wait_ms=5):
    """Paced load: `rate` first purchases per second (each fires the built-in first-purchase
    trigger, fired_at = the event's timestamp = its produce time) for `seconds`. Latency = when the
    trigger record reaches a consumer of the trigger topic - fired_at (wall clock, one machine).
    The producer and the reader are `tidepool-latency` (Benchmarks/tidepool-latency), a native
    librdkafka client in its own process: this script's Python producer reached only ~73k
    events/s here and, with its reader, took a core from the daemon it measured. The daemon runs
    with its defaults but for fetch.wait.max.ms (below; Benchmarks/README.md, "Latency").
    Returns (p50, p99, {figure: value})."""
    import socket
    if not os.access(LATENCY_BIN, os.X_OK):
        raise RuntimeError(f"no latency client at {LATENCY_BIN} (swift build -c release --product tidepool-latency)")
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    cfg = tmp / "latency.yaml"
    tidepool_config(cfg, bootstrap, tmp / f"latency-{rate}.sqlite", port)
    # fetch.wait.max.ms `fetch_wait_ms`, 5 (the daemon's default is 50): the 2.0.2 mock answers a fetch that finds
    # nothing only after that wait, even when records arrive meanwhile ("This isn't strictly
    # correct", rd_kafka_mock_handle_Fetch); a real broker answers as soon as they are there.
    # With 50 the mock added ~25 ms to the median; this is the daemon's only setting that differs.
    cfg.write_text(cfg.read_text().replace("group_id: bench-tidepool", f"group_id: bench-latency-{rate}")
                   .replace(f"input_topics: [{TOPIC}]", f"input_topics: [{live}]\n  trigger_topic: {live}.triggers")
                   .replace('session.timeout.ms: "6000"', f'session.timeout.ms: "6000"\n    fetch.wait.max.ms: "{fetch_wait_ms}"'))
    proc = subprocess.Popen([BIN, "run", "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:  # ready: the daemon has its assignment and has restored
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError(f"tidepool did not become ready (exit {proc.poll()})")
            time.sleep(0.2)
        out = subprocess.run([LATENCY_BIN, "--bootstrap", bootstrap, "--topic", live, "--triggers", f"{live}.triggers", "--rate", str(rate),
                              "--seconds", str(seconds)], capture_output=True, text=True, timeout=seconds + 120)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    figures = dict(kv.split("=", 1) for kv in out.stdout.split())
    if "p99_ms" not in figures or int(figures.get("triggers", 0)) == 0:
        raise RuntimeError(f"tidepool-latency failed (exit {out.returncode}): {out.stdout} {out.stderr[-2000:]}")
    return int(figures["p50_ms"]), int(figures["p99_ms"]), figures


def print_cpu(members):
    """Where the CPU went, per million events applied: what bounds the end-to-end rate."""
    cpu, applied = members.pop("__cpu")
    print(f"    {members.pop('__decisions', 0):,} campaign decisions (deferrals included), "
          f"{members.pop('__triggers', 0):,} triggers produced", flush=True)
    per_m = 1e6 / max(applied, 1)
    total = sum(cpu.values())
    print(f"    CPU per million events: {total * per_m:.2f} s in all; "
          + ", ".join(f"{k} {v * per_m:.2f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])), flush=True)
    # The budget: at 1M events/s, each core gives 1 s of CPU per million events. What the engine
    # threads do not use is the input path, trigger production, checkpoints and the broker.
    outside = sum(v for k, v in cpu.items() if not k.startswith("tp-shard-")) * per_m
    cores = os.cpu_count() or 1
    print(f"    outside the processing threads: {outside:.2f} s per million (1M events/s on this machine's "
          f"{cores} cores allows {cores:.2f} s per million in all)", flush=True)


def metadata_only_inspection():
    """quixstreams inspects topics with DescribeConfigs, which librdkafka 2.0.2's mock does not
    implement; substitute partitions and replication from metadata, default retention/cleanup."""
    with warnings.catch_warnings():  # authlib (imported by quixstreams) forces its deprecation warnings on
        warnings.showwarning = lambda *args, **kwargs: None
        from quixstreams.models.topics import admin
        from quixstreams.models.topics.topic import TopicConfig

    def inspect_topics(self, topic_names, timeout=30):
        topics = self.list_topics(timeout=timeout)
        return {t: (TopicConfig(num_partitions=len(topics[t].partitions),
                                replication_factor=len(topics[t].partitions[0].replicas) or 1,
                                extra_config={"retention.ms": "604800000", "cleanup.policy": "delete"})
                    if t in topics else None)
                for t in topic_names}
    admin.TopicAdmin.inspect_topics = inspect_topics


def topic_records(bootstrap, topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"wm-{time.time()}"})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(hi - lo for lo, hi in (c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in parts))
    finally:
        c.close()


def run_peer(bootstrap, events, tmp):
    """Returns (events/s, {rule: members at the end}, flips emitted, records on the output topic)."""
    metadata_only_inspection()
    from quixstreams import Application
    app = Application(broker_address=bootstrap, consumer_group="bench-quix", auto_offset_reset="earliest",
                      use_changelog_topics=False, state_dir=str(tmp / "quix-state"), loglevel="WARNING",
                      auto_create_topics=True)
    src = app.topic(TOPIC, value_deserializer="json")
    out = app.topic(PEER_OUT, value_serializer="json")
    seen = {"n": 0, "first": None, "last": None, "flips": 0}
    members = {"repeat_buyer": 0, "big_spender": 0}

    def update(e, state):
        now = time.time()
        if seen["first"] is None:
            seen["first"] = now
        seen["n"] += 1
        if seen["n"] >= events:
            seen["last"] = now
            threading.Thread(target=app.stop, daemon=True).start()
        day = e["timestamp"] // DAY
        days = state.get("days", {})
        if e["type"] == "purchase":
            c, s = days.get(str(day), (0, 0))
            days[str(day)] = (c + 1, s + e.get("amount", 0))
        days = {d: v for d, v in days.items() if int(d) > day - 365}
        state.set("days", days)
        count90 = sum(v[0] for d, v in days.items() if int(d) > day - 90)
        sum365 = sum(v[1] for v in days.values())
        flags = {"repeat_buyer": count90 >= 2, "big_spender": sum365 >= 2000}
        before = state.get("flags", {"repeat_buyer": False, "big_spender": False})
        if flags != before:
            state.set("flags", flags)
            seen["flips"] += 1
            for k in flags:
                members[k] += flags[k] - before[k]
            return {"customer_id": e["customer_id"], "flags": flags, "at": e["timestamp"]}
        return None

    sdf = app.dataframe(src)
    sdf = sdf.apply(update, stateful=True).filter(lambda v: v is not None)
    sdf.to_topic(out)
    app.run()
    if seen["last"] is None:
        raise RuntimeError(f"quix streams stopped after {seen['n']} of {events} events")
    return (seen["n"] - 1) / (seen["last"] - seen["first"]), members, seen["flips"], topic_records(bootstrap, PEER_OUT)


def check(rule, expected, tidepool, peer):
    ok = expected == tidepool == peer
    print(f"{'  members of ' + rule:<44}{expected:>14,} expected   tidepool {tidepool:,}   peer {peer:,}"
          + ("" if ok else "   MISMATCH"), flush=True)
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=int(os.environ.get("PEER_EVENTS", "1000000")))
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--partitions", type=int, default=64, help="input partitions (the mock keeps ~5 MiB each)")
    ap.add_argument("--no-latency", action="store_true", help="skip the two paced latency runs")
    a = ap.parse_args()
    if not os.access(BIN, os.X_OK):
        sys.exit(f"no tidepool binary at {BIN} (set TIDEPOOL_BIN, or swift build -c release --product tidepool)")
    print(f"tidepool binary: {BIN}", flush=True)
    broker, bootstrap = start_broker(a.partitions)
    ok = True
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = pathlib.Path(d)
            rate, expected = produce(bootstrap, a.events, a.customers)
            line("produce (confluent-kafka, Python)", rate, "events/s", f"{a.events} events, {a.partitions} partitions")
            # One processing thread (one core's worth of engine work), then one per core (the
            # daemon's default, processing.threads: auto): the same events, each run in a
            # consumer group of its own.
            tp1, tp1_members = run_tidepool(bootstrap, a.events, tmp, 1, broker=broker)
            line("tidepool end to end, 1 processing thread", tp1, "events/s",
                 f"{a.events} events, {a.customers} customers, 10 segments, 3 campaigns, a checkpoint every second")
            print_cpu(tp1_members)
            line("  longest checkpoint stall in that run", tp1_members.pop("__stall_max_s", float("nan")) * 1000, "ms",
                 f"{tp1_members.pop('__checkpoints', 0)} checkpoints (tidepool_checkpoint_stall_seconds, max)")
            tp, tp_members = run_tidepool(bootstrap, a.events, tmp, "auto", broker=broker)
            per_thread = tp_members.pop("__threads", {})
            shard_threads = sum(1 for t in per_thread if t != "main")
            line(f"tidepool end to end, whole machine", tp, "events/s",
                 f"processing.threads auto = {shard_threads}; events applied per thread "
                 + ", ".join(f"{t} {n}" for t, n in per_thread.items()))
            print_cpu(tp_members)
            line("  longest checkpoint stall in that run", tp_members.pop("__stall_max_s", float("nan")) * 1000, "ms",
                 f"{tp_members.pop('__checkpoints', 0)} checkpoints (tidepool_checkpoint_stall_seconds, max)")
            # What the input path alone reaches on this machine and broker: the ceiling of the
            # end-to-end figures above.
            for decode in (False, True):
                r = run_consume_only(bootstrap, a.events, decode)
                if r is None:
                    print(f"  (no {LATENCY_BIN}: input-path ceiling not measured)", flush=True)
                    break
                line(f"  input path alone: consume{' + decode' if decode else ''}", r[0], "events/s",
                     f"same consumer and settings, nothing applied or produced; client CPU {r[1]:.2f} s")
            for k in [k for k in tp1_members if k.startswith("__")]: tp1_members.pop(k)
            if tp1_members != tp_members:
                print(f"MISMATCH: segment members with 1 thread {tp1_members} and with {shard_threads} {tp_members}", flush=True)
                ok = False
            if not a.no_latency:
                # The latency workload's own maximum first: every event is a new customer whose
                # first purchase fires a trigger, produced live while the daemon runs (the drain
                # above reads a preloaded topic where 1 event in ~60 fires one). Offered above what
                # the daemon can take, the triggers read per second are that maximum. Then half of
                # it, and a light load.
                _, _, sat = run_latency(bootstrap, 400_000, 4, tmp, f"{LIVE}.2")
                peak = int(sat["read_per_s"])
                line("tidepool maximum, live first purchases", peak, "events/s",
                     f"{sat['offered_per_s']}/s offered for 4 s ({sat['sent']} events, each a new customer and a trigger): triggers read per second")
                for i, (rate, what) in enumerate(((max(1000, peak // 2), "half that maximum"), (5000, "light load"))):
                    p50, p99, f = run_latency(bootstrap, rate, 10, tmp, f"{LIVE}.{i}")
                    line(f"latency event -> trigger read, p50", p50, "ms",
                         f"{rate} events/s asked ({what}), {f['offered_per_s']}/s offered for 10 s: "
                         f"{f['triggers']} triggers, {f['sent']} events sent")
                    line(f"latency event -> trigger read, p99", p99, "ms", "wall clock: event produced -> trigger consumed downstream")
                    print(f"    of which event -> emitted_at (inside the daemon) p50 {f['daemon_p50_ms']} ms, p99 {f['daemon_p99_ms']} ms;"
                          f" emitted_at -> read p50 {f['read_p50_ms']} ms, p99 {f['read_p99_ms']} ms;"
                          f" the client (tidepool-latency) used {f['client_cpu_s']} s of CPU", flush=True)
            print("quix streams: topic inspection is metadata-only: TopicAdmin.inspect_topics replaced (the 2.0.2 mock "
                  "lacks DescribeConfigs; partitions from metadata, retention/cleanup defaults); changelog topics off "
                  "(use_changelog_topics=False, state in local RocksDB only); its topics pre-created in the mock", flush=True)
            peer, peer_members, flips, out_records = run_peer(bootstrap, a.events, tmp)
            line("quix streams peer", peer, "events/s",
                 f"{a.events} events, 2 segment rules, metadata-only topic inspection, {flips:,} flips -> {out_records:,} output records")
            print(f"{'tidepool / peer, whole machine':<44}{tp / peer:>14.2f} x", flush=True)
            print(f"{'tidepool / peer, 1 processing thread':<44}{tp1 / peer:>14.2f} x", flush=True)
            for rule in ("repeat_buyer", "big_spender"):
                ok &= check(rule, expected[rule], tp_members.get(rule, -1), peer_members[rule])
            if out_records != flips:
                print(f"MISMATCH: the peer emitted {flips} flips but its output topic holds {out_records} records", flush=True)
                ok = False
    finally:
        stop(broker, timeout=20)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
