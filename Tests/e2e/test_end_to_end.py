"""End-to-end: the built `tidepool` binary as its own process, against librdkafka's mock cluster
hosted by `tidepool mock-broker` in another process, driven by an independent client (Python
confluent-kafka, which bundles its own newer librdkafka).

Run: TIDEPOOL_BIN=.build/debug/tidepool python3 -m pytest -q Tests/e2e
"""
import collections
import decimal
import json
import os
import pathlib
import signal
import subprocess
import time
import uuid

import jsonschema
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("TIDEPOOL_BIN", str(ROOT / ".build" / "debug" / "tidepool"))
PARTITIONS = 4
INPUT, TRIGGERS, DLQ = "touchpoints", "tidepool.triggers", "tidepool.dead-letters"
GROUP = "tidepool-e2e"


@pytest.fixture
def broker():
    proc = subprocess.Popen([BIN, "mock-broker", "--partitions", str(PARTITIONS)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline().strip()
    assert line.startswith("bootstrap.servers="), line
    yield line.split("=", 1)[1]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0


class Daemon:
    def __init__(self, config_path, log_path):
        self.config_path, self.log_path = config_path, log_path
        self.proc = None

    def start(self):
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen([BIN, "run", "--config", str(self.config_path)],
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=40)
        self.log.close()
        return code


def write_config(path, bootstrap, state_path):
    path.write_text(f"""
state:
  path: "{state_path}"
  checkpoint_interval: 1s
kafka:
  bootstrap_servers: "{bootstrap}"
  group_id: {GROUP}
  input_topics: [{INPUT}]
  trigger_topic: {TRIGGERS}
  dead_letter_topic: {DLQ}
  consumer:
    session.timeout.ms: "6000"
decoding:
  max_event_bytes: 4096
first_purchase:
  campaign: welcome
  channel: wecom
""")


def now_ms():
    return int(time.time() * 1000)


def event(eid, customer, etype, **extra):
    e = {"event_id": eid, "customer_id": customer, "type": etype, "channel": "mini_program", "timestamp": now_ms()}
    e.update(extra)
    return json.dumps(e).encode()


def malformed_records(tag):
    """(key, value, expected reason) for every rejection reason the decoder knows."""
    c = f"bad-{tag}"
    ok = lambda **kw: event(f"{tag}-x", c, "page_view", **kw)
    return [
        (c, b'{"event_id": "x", "customer_id": ', "invalid_json"),
        (c, b'not json at all', "invalid_json"),
        (c, b'{"event_id":"\xe9","customer_id":"' + c.encode() + b'","type":"login","channel":"app","timestamp":1}', "invalid_utf8"),
        (c, json.dumps({"event_id": "x", "customer_id": c, "type": "login", "channel": "app"}).encode(), "missing_field"),
        (c, json.dumps({"event_id": 7, "customer_id": c, "type": "login", "channel": "app", "timestamp": 1}).encode(), "wrong_type"),
        (c, event(f"{tag}-v", c, "teleport"), "invalid_value"),
        (c, ok(color="blue"), "unknown_field"),
        (c, b'{"event_id":"a","event_id":"b","customer_id":"' + c.encode() + b'","type":"login","channel":"app","timestamp":1}', "duplicate_field"),
        (c, json.dumps({"event_id": "x", "customer_id": c, "type": "login", "channel": "app", "timestamp": "last tuesday"}).encode(), "invalid_timestamp"),
        (c, json.dumps({"event_id": "x", "customer_id": c, "type": "login", "channel": "app", "timestamp": now_ms() + 86_400_000}).encode(), "timestamp_in_future"),
        (c, ok(properties={"blob": "z" * 5000}), "oversize"),
        ("someone-else", ok(), "key_mismatch"),
        (None, ok(), "key_mismatch"),
    ]


def produce(bootstrap, records):
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    errors = []
    for key, value in records:
        p.produce(INPUT, key=key.encode() if key is not None else None, value=value,
                  on_delivery=lambda err, msg: errors.append(err) if err else None)
    assert p.flush(30) == 0
    assert errors == []


def read_topic(bootstrap, topic, count, timeout=60):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    out, deadline = [], time.time() + timeout
    while len(out) < count and time.time() < deadline:
        for m in c.consume(1000, 0.5):
            if m.error() is None:
                out.append(m)
    c.close()
    return out


def topic_total(bootstrap, topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"wm-{uuid.uuid4()}"})
    total = 0
    for p in range(PARTITIONS):
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        total += hi - lo
    c.close()
    return total


def wait_committed_to_end(bootstrap, timeout=60):
    """The daemon's group has committed every input partition to its high watermark."""
    return wait_committed_to_end_for(bootstrap, GROUP, 0, timeout)


def test_daemon_end_to_end(broker, tmp_path):
    schema = json.loads((ROOT / "schemas" / "trigger-event.v1.schema.json").read_text())
    config = tmp_path / "tidepool.yaml"
    write_config(config, broker, tmp_path / "state.sqlite")
    daemon = Daemon(config, tmp_path / "daemon.log")

    # Phase 1: 100 customers browse, 40 of them buy (some twice), plus every kind of bad record.
    valid = []
    for n in range(100):
        valid.append((f"c-{n}", event(f"pv-{n}", f"c-{n}", "page_view")))
    for n in range(40):
        valid.append((f"c-{n}", event(f"buy-{n}", f"c-{n}", "purchase", amount=99.5, currency="CNY",
                                      properties={"order_id": f"o-{n}"})))
    for n in range(10):
        valid.append((f"c-{n}", event(f"buy2-{n}", f"c-{n}", "purchase", amount=10, currency="CNY")))
    bad = malformed_records("p1")
    produce(broker, valid + [(k, v) for k, v, _ in bad])
    daemon.start()

    triggers = read_topic(broker, TRIGGERS, 40)
    assert len(triggers) == 40
    docs = [json.loads(m.value(), parse_float=decimal.Decimal) for m in triggers]
    for m, d in zip(triggers, docs):
        jsonschema.validate(d, schema)
        assert m.key().decode() == d["customer_id"]
        assert d["campaign"] == "welcome" and d["channel"] == "wecom" and d["reason"]["kind"] == "first_purchase"
    assert {d["customer_id"] for d in docs} == {f"c-{n}" for n in range(40)}
    assert len({d["trigger_id"] for d in docs}) == 40

    dead = read_topic(broker, DLQ, len(bad))
    assert len(dead) == len(bad)
    reasons = collections.Counter(dict(m.headers())["tidepool.reason"].decode() for m in dead)
    assert reasons == collections.Counter(r for _, _, r in bad)
    originals = {v for _, v, _ in bad}
    for m in dead:
        h = dict(m.headers())
        assert m.value() in originals
        assert h["tidepool.source.topic"] == b"touchpoints"
        assert int(h["tidepool.source.partition"]) in range(PARTITIONS)
        assert int(h["tidepool.source.offset"]) >= 0
        assert h["tidepool.detail"]

    ends = wait_committed_to_end(broker)
    assert sum(ends) == len(valid) + len(bad)
    assert daemon.stop() == 0

    # Phase 2: more input while it is down; after a restart only the new records are processed.
    # The first ten buyers buy again: the checkpointed state remembers them, so no second welcome.
    valid2 = [(f"n-{n}", event(f"nbuy-{n}", f"n-{n}", "purchase", amount=5, currency="CNY")) for n in range(20)]
    valid2 += [(f"c-{n}", event(f"rebuy-{n}", f"c-{n}", "purchase", amount=7, currency="CNY")) for n in range(10)]
    bad2 = malformed_records("p2")[:2]
    produce(broker, valid2 + [(k, v) for k, v, _ in bad2])
    daemon.start()
    ends = wait_committed_to_end(broker)
    assert sum(ends) == len(valid) + len(bad) + len(valid2) + len(bad2)
    # Committed offsets reach the end only after every output is acknowledged, so the topics
    # are complete now: a reprocessed phase-1 record would show up as an extra record here.
    assert topic_total(broker, TRIGGERS) == 60
    assert topic_total(broker, DLQ) == len(bad) + len(bad2)

    # Erasure through the CLI: a tombstone on the customer's key follows on the trigger topic.
    subprocess.run([BIN, "erase", "--config", str(config), "--customer", "c-3"], check=True, capture_output=True)
    ends = wait_committed_to_end(broker)
    assert sum(ends) == len(valid) + len(bad) + len(valid2) + len(bad2) + 1
    assert daemon.stop() == 0
    assert topic_total(broker, TRIGGERS) == 61
    out = read_topic(broker, TRIGGERS, 61)
    tombstones = [m.key() for m in out if m.value() is None]
    assert tombstones == [b"c-3"]
    assert {json.loads(m.value())["customer_id"] for m in out if m.value() is not None} == \
        {f"c-{n}" for n in range(40)} | {f"n-{n}" for n in range(20)}

    log = (tmp_path / "daemon.log").read_text()
    assert "c-1" not in log, "no customer identifiers in info-level logs"
    assert (tmp_path / "state.sqlite").exists()


def test_systemd_notify_ready_watchdog_stopping(broker, tmp_path):
    """Started as systemd would (NOTIFY_SOCKET, WATCHDOG_USEC): READY=1 after the partitions are
    assigned and restored, WATCHDOG=1 at half the watchdog interval, STOPPING=1 on SIGTERM."""
    import socket
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(0.5)
    config = tmp_path / "tidepool.yaml"
    write_config(config, broker, tmp_path / "state.sqlite")
    env = dict(os.environ, NOTIFY_SOCKET=sock_path, WATCHDOG_USEC="400000")
    env.pop("WATCHDOG_PID", None)
    log = open(tmp_path / "daemon.log", "w")
    proc = subprocess.Popen([BIN, "run", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT, env=env)
    messages = []  # (monotonic time, message)

    def collect_until(pred, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = sock.recv(4096).decode()
            except socket.timeout:
                continue
            messages.append((time.monotonic(), data))
            if pred(data):
                return True
        return False

    try:
        assert collect_until(lambda m: "READY=1" in m, 40), messages
        ready_at = time.monotonic()
        collect_until(lambda m: False, 2.0)
        pings = [t for t, m in messages if "WATCHDOG=1" in m and t >= ready_at]
        # Half of 400 ms: about 10 pings in 2 s; at least 6 even on a loaded machine.
        assert len(pings) >= 6, messages
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert max(gaps) < 0.4, gaps
        proc.send_signal(signal.SIGTERM)
        assert collect_until(lambda m: "STOPPING=1" in m, 20), messages
        assert proc.wait(timeout=40) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
        log.close()


def test_winback_fires_for_customers_who_go_dormant(broker, tmp_path):
    """Customers who stop sending events enter a dormant segment by the passing of time alone
    (the daemon advances idle partitions with the wall clock), and a winback campaign contacts
    them; a customer who withdrew consent is recorded on the suppressed topic instead; customers
    who keep coming back are never contacted."""
    schema = json.loads((ROOT / "schemas" / "trigger-event.v1.schema.json").read_text())
    suppressed_topic = "tidepool.suppressed"
    config = tmp_path / "tidepool.yaml"
    write_config(config, broker, tmp_path / "state.sqlite")
    with open(config, "a") as f:
        f.write(f"""
time:
  allowed_lateness: 1s
  idle_advance: true
segments:
  dormant: "since(last()) > 6s"
campaigns:
  winback:
    on: {{segment_entered: dormant}}
    channels: [wecom, sms]
    cooldown: 30d
    snapshot: ["since(last())", "count(page_view, 1d)"]
contact_policy:
  quiet_hours: none
""")
    text = config.read_text().replace(f"dead_letter_topic: {DLQ}", f"dead_letter_topic: {DLQ}\n  suppressed_topic: {suppressed_topic}")
    config.write_text(text)
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemon.start()

    quiet = [f"w-{n}" for n in range(10)]
    records = [(c, event(f"pv-{c}", c, "page_view")) for c in quiet]
    # w-9 withdraws consent on wecom; sms needs an explicit opt-in, so nothing is left.
    records.append(("w-9", event("consent-w-9", "w-9", "consent", channel="wecom", properties={"status": "withdrawn"})))
    started = now_ms()
    produce(broker, records)
    # Three customers keep visiting every second for 12 seconds: never 6 s without an event.
    active = [f"a-{n}" for n in range(3)]
    for i in range(12):
        produce(broker, [(c, event(f"pv-{c}-{i}", c, "page_view")) for c in active])
        time.sleep(1)
    last_active = now_ms()

    sent = read_topic(broker, TRIGGERS, 9, timeout=60)
    # The active customers go dormant too once they stop, but never while they were visiting.
    for m in sent:
        d = json.loads(m.value())
        if d["customer_id"].startswith("a-"):
            assert datetime_ms(d["fired_at"]) >= last_active - 1000 + 6000, d
    docs = [json.loads(m.value(), parse_float=decimal.Decimal) for m in sent if not m.key().startswith(b"a-")]
    for d in docs:
        jsonschema.validate(d, schema)
        assert d["campaign"] == "winback" and d["outcome"] == "sent" and d["channel"] == "wecom"
        assert d["reason"]["kind"] == "segment_entered" and d["reason"]["event_id"] is None
        assert d["snapshot"]["count(page_view, 1d)"] == 1
    assert sorted(d["customer_id"] for d in docs) == quiet[:9]
    for d in docs:
        fired = int(datetime_ms(d["fired_at"]))
        assert fired - started >= 6000, (d, started)

    held = read_topic(broker, suppressed_topic, 1, timeout=30)
    assert len(held) == 1
    s = json.loads(held[0].value())
    jsonschema.validate(s, schema)
    assert (s["customer_id"], s["outcome"], s["outcome_reason"]) == ("w-9", "suppressed", "no_consent")

    assert daemon.stop() == 0
    # Each customer contacted at most once (cooldown 30d), whatever the timing of the stop.
    everything = read_topic(broker, TRIGGERS, topic_total(broker, TRIGGERS))
    ids = [json.loads(m.value())["customer_id"] for m in everything]
    assert len(ids) == len(set(ids)) and set(quiet[:9]) <= set(ids) and set(ids) <= set(quiet[:9]) | set(active)
    assert topic_total(broker, suppressed_topic) == 1


def datetime_ms(text):
    import datetime
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp() * 1000


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http_get(port, path, timeout=10):
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode()


def wait_for(pred, timeout=30, what=""):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def metric_values(text):
    """Parses the exposition with the Prometheus project's own parser: {(name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_http_metrics_inspection_and_reload(broker, tmp_path):
    """/metrics parses with the Prometheus parser and counts what was consumed; /readyz turns 200
    after restore; /customers/{id} explains a customer; SIGHUP with a broken file keeps the running
    rules, SIGHUP with a good file adds a segment and reports its members."""
    port = free_port()
    config = tmp_path / "tidepool.yaml"
    write_config(config, broker, tmp_path / "state.sqlite")
    base = config.read_text() + f"""
http:
  listen: "127.0.0.1:{port}"
segments:
  browsers: "count(page_view, 1d) >= 1"
"""
    config.write_text(base)
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemon.start()
    try:
        wait_for(lambda: http_get(port, "/readyz")[0] == 200 if _port_open(port) else False, 40, "/readyz 200")
        assert http_get(port, "/healthz")[0] == 200
        records = [(f"h-{n}", event(f"hpv-{n}", f"h-{n}", "page_view")) for n in range(20)]
        records += [(f"h-{n}", event(f"hbuy-{n}", f"h-{n}", "purchase", amount=12.5, currency="CNY")) for n in range(5)]
        produce(broker, records)
        wait_committed_to_end(broker)

        def scraped():
            status, ctype, text = http_get(port, "/metrics")
            assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
            return metric_values(text)
        m = wait_for(lambda: (lambda v: v if v[("tidepool_events_total", (("type", "purchase"),))] == 5 else None)(scraped()),
                     20, "purchase count in /metrics")
        assert m[("tidepool_events_total", (("type", "page_view"),))] == 20
        assert m[("tidepool_ready", ())] == 1
        assert m[("tidepool_segment_members", (("segment", "browsers"),))] == 20
        assert m[("tidepool_segment_transitions_total", (("segment", "browsers"),))] == 20
        assert m[("tidepool_customers", ())] == 20
        # The lag gauge is refreshed once a second from the watermarks of fetch responses, so it
        # may trail the event counters by up to a second: wait for a refresh that covers every partition.
        def lags():
            return [v for (name, labels), v in scraped().items() if name == "tidepool_consumer_lag"]
        wait_for(lambda: (lambda v: len(v) == PARTITIONS and all(x == 0 for x in v))(lags()), 10,
                 "consumer lag 0 on every partition")

        status, _, body = http_get(port, "/customers/h-3")
        assert status == 200
        doc = json.loads(body)
        assert doc["customer_id"] == "h-3" and doc["lifetime"]["orders"] == 1
        seg = {s["segment"]: s for s in doc["segments"]}
        assert seg["browsers"]["member"] is True and seg["browsers"]["values"] == ["count(page_view, 1d) = 1"]
        assert http_get(port, "/customers/nobody")[0] == 404
        segments = json.loads(http_get(port, "/segments")[2])
        assert {s["segment"]: s["members"] for s in segments["segments"]} == {"browsers": 20}

        # A broken file: rejected, the running rules stay.
        config.write_text(base + '  buyers: "count(purchase, 1d) >="\n')
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: scraped()[("tidepool_config_reloads_total", (("result", "rejected"),))] == 1, 20, "rejected reload")
        assert {s["segment"] for s in json.loads(http_get(port, "/segments")[2])["segments"]} == {"browsers"}
        assert http_get(port, "/healthz")[0] == 200

        # A good file: the new segment is live and already has its members.
        config.write_text(base + '  buyers: "count(purchase, 1d) >= 1"\n')
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: scraped()[("tidepool_config_reloads_total", (("result", "applied"),))] == 1, 20, "applied reload")
        sizes = {s["segment"]: s["members"] for s in json.loads(http_get(port, "/segments")[2])["segments"]}
        assert sizes == {"browsers": 20, "buyers": 5}
        # The reload's own transitions (5 entries, within reload.cap) are counted with the rest.
        m = wait_for(lambda: (lambda v: v if v.get(("tidepool_segment_transitions_total", (("segment", "buyers"),))) == 5 else None)(scraped()),
                     10, "the reload's 5 transitions counted")
        assert m[("tidepool_segment_transitions_total", (("segment", "browsers"),))] == 20

        # A duplicate (an event_id already applied) and a late event (an hour behind stream time):
        # both are counted per input partition; the duplicate changes nothing, the late one applies.
        produce(broker, [("h-0", event("hpv-0", "h-0", "page_view")),
                         ("h-1", event("hlate-1", "h-1", "page_view", timestamp=now_ms() - 3_600_000))])
        wait_committed_to_end(broker)

        def engine_total(name):
            return sum(v for (n, _), v in scraped().items() if n == name)
        wait_for(lambda: engine_total("tidepool_events_applied_total") == 26, 20, "26 events applied")
        assert engine_total("tidepool_duplicate_events_total") == 1
        assert engine_total("tidepool_late_events_total") == 1
        assert len([k for k in scraped() if k[0] == "tidepool_late_events_total"]) == PARTITIONS

        # The CLI asks the running daemon.
        out = subprocess.run([BIN, "segments", "--config", str(config)], check=True, capture_output=True, text=True).stdout
        assert [l.split()[:2] for l in out.splitlines()[2:]] == [["browsers", "20"], ["buyers", "5"]], out
        out = subprocess.run([BIN, "inspect", "--config", str(config), "h-4"], check=True, capture_output=True, text=True).stdout
        assert json.loads(out)["lifetime"]["orders"] == 1
    finally:
        assert daemon.stop() == 0
    # Offline, from the checkpoint file the daemon left.
    out = subprocess.run([BIN, "inspect", "--offline", "--config", str(config), "h-4"], check=True, capture_output=True, text=True).stdout
    doc = json.loads(out)
    assert doc["customer_id"] == "h-4" and doc["lifetime"]["events"] == 2
    assert {s["segment"]: s["member"] for s in doc["segments"]} == {"browsers": True, "buyers": True}
    missing = subprocess.run([BIN, "inspect", "--offline", "--config", str(config), "nobody"], capture_output=True, text=True)
    assert missing.returncode == 1 and "nobody is not in" in missing.stderr
    # A backtest of the running rules over the input topic: read with a throwaway group, nothing produced.
    before = topic_total(broker, TRIGGERS)
    out = subprocess.run([BIN, "replay", "--config", str(config), "--from", INPUT], check=True, capture_output=True, text=True).stdout
    assert out.startswith("replayed 27 events (0 rejected), 20 customers"), out
    assert "browsers +20/-0" in out and "buyers +5/-0" in out, out
    assert "welcome: sent 5" in out, out
    assert topic_total(broker, TRIGGERS) == before
    log = (tmp_path / "daemon.log").read_text()
    bad_line = len(base.splitlines()) + 1
    assert "reload rejected" in log and f"{config}:{bad_line}:34: segment 'buyers'" in log, "the rejection names file:line"
    assert "error Waiting" not in log, "the HTTP endpoint stops gracefully"
    assert "reload: segment added" in log and "entering=5" in log


def _port_open(port):
    import socket
    s = socket.socket()
    s.settimeout(0.5)
    try:
        s.connect(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


CRASH_RULES = """
time:
  allowed_lateness: 0s
  idle_advance: false
segments:
  repeat_buyer: "count(purchase, 30d) >= 2"
campaigns:
  repeat_thanks:
    on: {segment_entered: repeat_buyer}
    channels: [wecom, app]
    cooldown: 1d
  cart_rescue:
    on: {event: add_to_cart}
    delay: 1h
    condition: "count(purchase, 1d) == 0"
    channels: [app]
    cooldown: 0s
contact_policy:
  quiet_hours: none
http:
  listen: ""
"""


def crash_config(path, bootstrap, state, group, trigger_topic, threads=1):
    path.write_text(f"""
state:
  path: "{state}"
  checkpoint_interval: 300ms
processing:
  threads: {threads}
kafka:
  bootstrap_servers: "{bootstrap}"
  group_id: {group}
  input_topics: [{INPUT}]
  trigger_topic: {trigger_topic}
  dead_letter_topic: {DLQ}
  consumer:
    session.timeout.ms: "6000"
""" + CRASH_RULES)


def crash_chunk(i, size=1500, customers=150):
    """Events in event time order, one simulated minute apart, from 20 days ago."""
    import random
    rng = random.Random(i)
    base = now_ms() - 20 * 86_400_000
    out = []
    for k in range(size):
        n = i * size + k
        c = f"k-{rng.randrange(customers)}"
        kind = rng.choice(["page_view", "page_view", "add_to_cart", "purchase"])
        extra = {"amount": 20, "currency": "CNY"} if kind == "purchase" else {}
        out.append((c, json.dumps({"event_id": f"k{n}", "customer_id": c, "type": kind, "channel": "app",
                                   "timestamp": base + n * 60_000, **extra}).encode()))
    return out


def customer_states(path):
    import sqlite3
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    rows = dict(db.execute("SELECT customer_id, state FROM customers").fetchall())
    db.close()
    return rows


def test_sigkill_twenty_times_loses_nothing_and_duplicates_nothing(broker, tmp_path):
    """The daemon is killed with SIGKILL at 20 random points while input keeps arriving. After the
    last restart its final per-customer state equals an uninterrupted run's, every trigger id of
    that run is on the topic, and none appears twice (replays re-create triggers with the same ids;
    those already on the topic are skipped after reading it back from the checkpoint's offsets).
    Each restart applies events on 1, 2 or 3 threads (`processing.threads`), the reference on one:
    a partition's state moves between engines at every restart and must not change."""
    import random
    rng = random.Random(7)
    config = tmp_path / "crash.yaml"
    log = open(tmp_path / "crash.log", "a")
    produced = 0
    for i in range(20):
        chunk = crash_chunk(i)
        produce(broker, chunk)
        produced += len(chunk)
        crash_config(config, broker, tmp_path / "crash.sqlite", "crash-group", "crash.triggers", threads=1 + i % 3)
        proc = subprocess.Popen([BIN, "run", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
        # Wait until it has joined the group and started processing, then kill it at a random point.
        deadline = time.time() + 30
        while time.time() < deadline and "partitions assigned" not in (tmp_path / "crash.log").read_text().split("RUN-END")[-1]:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.write("RUN-END\n")
        log.flush()
    # The last run goes to the end and stops gracefully.
    crash_config(config, broker, tmp_path / "crash.sqlite", "crash-group", "crash.triggers", threads=2)
    daemon = Daemon(config, tmp_path / "crash.log")
    daemon.start()
    wait_committed_to_end_for(broker, "crash-group", produced)
    assert daemon.stop() == 0

    # The reference: the same input, one uninterrupted run.
    ref_config = tmp_path / "ref.yaml"
    crash_config(ref_config, broker, tmp_path / "ref.sqlite", "ref-group", "ref.triggers")
    ref = Daemon(ref_config, tmp_path / "ref.log")
    ref.start()
    wait_committed_to_end_for(broker, "ref-group", produced)
    assert ref.stop() == 0

    ref_states = customer_states(tmp_path / "ref.sqlite")
    crash_states = customer_states(tmp_path / "crash.sqlite")
    assert len(ref_states) == 150
    assert crash_states == ref_states, "final per-customer state equals the uninterrupted run's"

    ref_ids = [json.loads(m.value())["trigger_id"] for m in read_topic(broker, "ref.triggers", topic_total(broker, "ref.triggers"))]
    crash_ids = [json.loads(m.value())["trigger_id"] for m in read_topic(broker, "crash.triggers", topic_total(broker, "crash.triggers"))]
    assert len(ref_ids) > 500 and len(set(ref_ids)) == len(ref_ids)
    assert set(crash_ids) == set(ref_ids), "every trigger of the uninterrupted run, and no other"
    dupes = [i for i, n in collections.Counter(crash_ids).items() if n > 1]
    assert dupes == [], f"{len(dupes)} trigger ids appear twice"
    text = (tmp_path / "crash.log").read_text()
    assert text.count("RUN-END") == 20


def wait_committed_to_end_for(bootstrap, group, expected_total, timeout=120):
    """`group` has committed every input partition to its high watermark, and the input holds at
    least `expected_total` records. Returns the high watermarks."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            committed = c.committed([TopicPartition(INPUT, p) for p in range(PARTITIONS)], timeout=10)
            highs = [c.get_watermark_offsets(TopicPartition(INPUT, p), timeout=10)[1] for p in range(PARTITIONS)]
            if [tp.offset for tp in committed] == highs and sum(highs) >= expected_total:
                return highs
            time.sleep(0.2)
        raise AssertionError(f"{group}: committed {[tp.offset for tp in committed]} != end {highs}")
    finally:
        c.close()
