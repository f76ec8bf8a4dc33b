"""Event -> trigger latency of `tidepool run` at one paced rate, with daemon settings varied.

    python Benchmarks/peer/latency.py [--rate 5000,40000] [--seconds 10] [--fetch-wait MS] [--no-checkpoints]

(with the virtualenv of run.sh: `.build/venv-bench/bin/python Benchmarks/peer/latency.py ...`;
TIDEPOOL_BIN selects the binary, default .build/release/tidepool). It starts `tidepool mock-broker`,
then for each rate runs compare.run_latency: first purchases paced at that rate for `seconds`, the
trigger read by a consumer of the trigger topic, p50 and p99 of (read time - event time). The
experiments behind Benchmarks/README.md, "Latency".
"""
import argparse
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import compare  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", default="5000", help="comma-separated events/s, one run each")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--fetch-wait", type=int, default=5,
                    help="the daemon consumer's fetch.wait.max.ms (default 5, as compare.py; Tidepool's own default is 50)")
    ap.add_argument("--no-checkpoints", action="store_true", help="run the daemon without state.path")
    a = ap.parse_args()
    base = compare.tidepool_config

    def config(path, bootstrap, state, port):
        base(path, bootstrap, state, port)
        text = path.read_text()
        if a.no_checkpoints:
            text = text.replace(f'  path: "{state}"\n', '  path: ""\n')
        path.write_text(text)

    compare.tidepool_config = config
    broker, bootstrap = compare.start_broker(8)
    try:
        with tempfile.TemporaryDirectory() as d:
            for i, rate in enumerate(int(r) for r in a.rate.split(",")):
                p50, p99, f = compare.run_latency(bootstrap, rate, a.seconds, pathlib.Path(d), f"{compare.LIVE}.{i}",
                                                   fetch_wait_ms=a.fetch_wait)
                print(f"{rate} events/s ({f['offered_per_s']}/s offered), fetch.wait.max.ms {a.fetch_wait}, "
                      f"checkpoints {'off' if a.no_checkpoints else 'on'}: p50 {p50} ms, p99 {p99} ms "
                      f"(in the daemon p50 {f['daemon_p50_ms']}, p99 {f['daemon_p99_ms']}; "
                      f"{f['triggers']} triggers of {f['sent']} events; client CPU {f['client_cpu_s']} s)", flush=True)
    finally:
        compare.stop(broker, timeout=20)


if __name__ == "__main__":
    main()
