#!/usr/bin/env python3
"""What the access log and tracing cost: the same release sidecar started three ways (nothing
reported; --access-log json; --otlp-endpoint to a local OTLP sink with every request sampled),
plus direct calls for the floor, measured at a fixed 1,000 requests/s in interleaved rounds
(the order rotates each round) with run.py's load client, pinning and CPU-steal readings;
idle RSS of each one second after start. Results: stdout and bench/out/telemetry.md.

    python3 bench/telemetry.py [--rounds 3] [--seconds 5] [--no-build] [--bin-dir DIR]
                               [--before PATH]

--before adds a sidecar binary built from a commit without the telemetry code (run with no
flags): "off" against it is what having the code costs when nothing is reported.

The access log goes to /dev/null (a pod's stdout is a pipe to the container runtime, usually as
cheap); the OTLP sink is a Python HTTP server in this process answering 200 to every POST.
"""

import argparse
import http.server
import subprocess
import threading
import time
from pathlib import Path

import run as b

SINK_ADDR = ("127.0.0.1", 18318)
MODES = {
    "off": [],
    "access-log": ["--access-log", "json"],
    "tracing": ["--otlp-endpoint", f"http://{SINK_ADDR[0]}:{SINK_ADDR[1]}"],
}


class Sink(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that takes everything (the export's cost is the sidecar's)."""

    posts = 0
    bytes = 0

    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        self.rfile.read(n)
        Sink.posts += 1
        Sink.bytes += n
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_):
        pass


def start_sidecar(sidecar, cfg_dir, index, extra):
    port, admin = 18011 + index, f"127.0.0.1:{18091 + index}"
    cmd = b.pinned(1, [str(sidecar), "run", "--manifest", str(cfg_dir / "bench.yaml"),
                       "--secrets-dir", str(cfg_dir / "secrets"), "--first-port", str(port),
                       "--proxy-addr", f"127.0.0.1:{18081 + index}", "--admin-addr", admin,
                       "--worker-threads", "1", "--log-level", "warn"] + extra)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t = b.Target("attache", f"http://127.0.0.1:{port}/", [], proc)
    t.ready_s = b.wait_ready(f"http://{admin}/readyz", proc)
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--bin-dir", type=Path, default=b.ROOT / "target/release",
                    help="where the release attache-sidecar and attache-bench are")
    ap.add_argument("--before", type=Path, help="a release attache-sidecar without the telemetry code")
    args = ap.parse_args()
    b.OUT.mkdir(parents=True, exist_ok=True)
    if not args.no_build:
        b.build()
    sidecar, bench = args.bin_dir / "attache-sidecar", args.bin_dir / "attache-bench"
    client = ("bench", str(bench))

    server = http.server.ThreadingHTTPServer(SINK_ADDR, Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    pki = b.OUT / "pki"
    b.run([str(bench), "pki", "--out", str(pki)])
    upstream = subprocess.Popen(b.pinned(0, [str(bench), "upstream", "--certs", str(pki), "--addr", b.UPSTREAM_ADDR]),
                                stdout=subprocess.DEVNULL)
    procs = [upstream]
    try:
        time.sleep(0.3)
        cfg_dir = b.write_attache_config(pki)
        targets = {"direct": b.Target("direct", f"https://localhost:{b.UPSTREAM_ADDR.split(':')[1]}/",
                                      ["--cacert", str(pki / "ca.crt"), "--cert", str(pki / "client.crt"),
                                       "--key", str(pki / "client.key")])}
        modes = {m: (sidecar, extra) for m, extra in MODES.items()}
        if args.before:
            modes["before"] = (args.before, [])
        for i, (mode, (binary, extra)) in enumerate(modes.items()):
            t = start_sidecar(binary, cfg_dir, i, extra)
            procs.append(t.proc)
            targets[mode] = t
        time.sleep(1.0)
        rss = {m: b.proc_status(targets[m].proc.pid, "VmRSS") for m in modes}
        names = list(targets)
        results = {n: [] for n in names}
        for rnd in range(args.rounds):
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            for n in order:
                r = b.load_run(client, targets[n], args.seconds, 1000, conns=16)
                b.log(f"round {rnd + 1} {n}: p50 {r['p50']:.0f} µs p99 {r['p99']:.0f} µs "
                      f"failed {r['failed']} steal {r['steal']:.1f}%")
                results[n].append(r)
    finally:
        for p in procs:
            b.stop(p)
        server.shutdown()

    floor50 = [r["p50"] for r in results["direct"]]
    floor99 = [r["p99"] for r in results["direct"]]
    lines = [f"1,000 requests/s, {args.rounds} rounds of {args.seconds} s, medians (min-max); "
             f"OTLP sink got {Sink.posts} posts, {Sink.bytes} bytes", "",
             "| sidecar | p50 (µs) | p99 (µs) | added p50 (µs) | added p99 (µs) | CPU µs/request | idle RSS (MiB) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for m in modes:
        rs = results[m]
        p50, p99 = [r["p50"] for r in rs], [r["p99"] for r in rs]
        cpu = [r["cpu_s"] / r["requests"] * 1e6 for r in rs if r["requests"]]
        lines.append(f"| {m} | {b.med(p50):.0f} ({b.spread(p50)}) | {b.med(p99):.0f} ({b.spread(p99)}) | "
                     f"{b.med(p50) - b.med(floor50):.0f} | {b.med(p99) - b.med(floor99):.0f} | "
                     f"{b.med(cpu):.1f} | {rss[m] / 1024:.1f} |")
    lines.append(f"| (direct) | {b.med(floor50):.0f} ({b.spread(floor50)}) | "
                 f"{b.med(floor99):.0f} ({b.spread(floor99)}) | | | | |")
    failed = sum(r["failed"] for rs in results.values() for r in rs)
    lines.append("")
    lines.append(f"failed requests: {failed}")
    text = "\n".join(lines) + "\n"
    print(text)
    (b.OUT / "telemetry.md").write_text(text)


if __name__ == "__main__":
    main()
