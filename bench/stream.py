#!/usr/bin/env python3
"""Streams and cache hits through the sidecar vs direct: one command, two markdown tables.

    python3 bench/stream.py [--rounds 3] [--events 400] [--every-ms 5] [--bulk-mib 256]

Two integrations on one sidecar point at the bench upstream: `plain` (no `llm` section) and
`llm` (`llm.provider: openai`, so every chunk is scanned for usage). For each round, in
rotating order, each target (direct with mTLS, plain, llm):
  - reads a live stream of N server-sent events sent every M ms, each stamped by the upstream
    with the wall-clock time it was produced: how late each event reaches the reader;
  - reads a bulk stream of B MiB of event lines as fast as it goes, and the sidecar's CPU time
    (utime + stime from /proc) across it: CPU per streamed MiB.
Then the cache (`cached`, `cache.maxBytes: 16Mi`): added latency of a cache hit vs a proxied
request at 1k rps (attache-bench load on `/cacheable`, which answers `max-age=3600`), and the
sidecar's RSS once 20,000 distinct 1 KiB answers went through the cache (full).
Placement as in run.py: the sidecar alone on CPU 1 with one worker thread; upstream and
reader on CPU 0 (direct: the reader on CPU 1). Medians over rounds, spread in brackets.
"""
import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as common  # noqa: E402  (helpers shared with run.py)

UPSTREAM_ADDR = "127.0.0.1:18444"
FIRST_PORT = 18101  # cached, llm, plain (sorted by name)
ADMIN = "127.0.0.1:18190"
TARGETS = ["direct", "plain", "llm"]


def write_config(pki):
    d = common.OUT / "stream"
    for sub in ("bench-ca", "bench-client", "bench-key"):
        (d / "secrets" / sub).mkdir(parents=True, exist_ok=True)
    (d / "secrets/bench-key/api-key").write_text(common.API_KEY)
    (d / "secrets/bench-ca/ca.crt").write_bytes((pki / "ca.crt").read_bytes())
    (d / "secrets/bench-client/tls.crt").write_bytes((pki / "client.crt").read_bytes())
    (d / "secrets/bench-client/tls.key").write_bytes((pki / "client.key").read_bytes())
    port = UPSTREAM_ADDR.split(":")[1]
    docs = []
    for name, extra in (("plain", ""), ("llm", "  llm: {provider: openai}\n"),
                        ("cached", "  cache: {maxBytes: 16Mi}\n")):
        docs.append(f"""apiVersion: attache.dev/v1alpha1
kind: ExternalIntegration
metadata: {{name: {name}}}
spec:
  upstream: {{url: "https://localhost:{port}"}}
  auth:
    apiKey: {{header: Authorization, prefix: "Bearer ", secretKeyRef: {{name: bench-key, key: api-key}}}}
  tls:
    caBundleRef: {{name: bench-ca, key: ca.crt}}
    clientCertificate: {{secretName: bench-client}}
  timeouts: {{connect: 2s, perTry: 10s, request: 10s, idle: 10s}}
{extra}""")
    (d / "stream.yaml").write_text("---\n".join(docs))
    return d


def read_stream(bench, url, tls, cpu, extra):
    cmd = common.pinned(cpu, [str(bench), "stream", "--url", url] + tls + extra)
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def med(xs):
    return statistics.median(xs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--events", type=int, default=400)
    ap.add_argument("--every-ms", type=int, default=5)
    ap.add_argument("--bulk-mib", type=int, default=256)
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    common.OUT.mkdir(parents=True, exist_ok=True)
    sidecar, bench = (common.ROOT / "target/release/attache-sidecar",
                      common.ROOT / "target/release/attache-bench") if args.no_build else common.build()
    pki = common.OUT / "pki"
    common.run([str(bench), "pki", "--out", str(pki)])
    cfg = write_config(pki)
    procs = []
    try:
        up = subprocess.Popen(common.pinned(0, [str(bench), "upstream", "--certs", str(pki),
                                                "--addr", UPSTREAM_ADDR]), stdout=subprocess.DEVNULL)
        procs.append(up)
        side = subprocess.Popen(common.pinned(1, [
            str(sidecar), "run", "--manifest", str(cfg / "stream.yaml"), "--secrets-dir",
            str(cfg / "secrets"), "--first-port", str(FIRST_PORT), "--proxy-addr", "127.0.0.1:18180",
            "--admin-addr", ADMIN, "--worker-threads", "1", "--log-level", "warn"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(side)
        common.wait_ready(f"http://{ADMIN}/readyz", side)
        time.sleep(1.0)
        proc_rss_idle = common.proc_status(side.pid, "VmRSS")
        port = UPSTREAM_ADDR.split(":")[1]
        urls = {
            "direct": (f"https://localhost:{port}/", ["--cacert", str(pki / "ca.crt"), "--cert",
                       str(pki / "client.crt"), "--key", str(pki / "client.key")], 1),
            "cached": (f"http://127.0.0.1:{FIRST_PORT}/", [], 0),
            "llm": (f"http://127.0.0.1:{FIRST_PORT + 1}/", [], 0),
            "plain": (f"http://127.0.0.1:{FIRST_PORT + 2}/", [], 0),
        }
        events = {t: [] for t in TARGETS}
        bulk = {t: [] for t in TARGETS}
        for rnd in range(args.rounds):
            order = TARGETS[rnd % 3:] + TARGETS[:rnd % 3]
            for t in order:
                url, tls, cpu = urls[t]
                e = read_stream(bench, url, tls, cpu,
                                ["--events", str(args.events), "--every-ms", str(args.every_ms)])
                events[t].append(e)
                before = common.cpu_seconds(side.pid)
                b = read_stream(bench, url, tls, cpu, ["--bulk-mib", str(args.bulk_mib)])
                b["cpu_ms_per_mib"] = (common.cpu_seconds(side.pid) - before) * 1000 / args.bulk_mib \
                    if t != "direct" else None
                bulk[t].append(b)
                common.log(f"round {rnd + 1} {t:6} event p50 {e['p50_us']:7.0f}us p99 {e['p99_us']:7.0f}us "
                           f"bulk {b['mib_per_s']:7.0f} MiB/s")
        hits = cache_rounds(bench, urls, args.rounds)
        full_rss = fill_cache(side.pid, 20000)
        report(args, events, bulk)
        report_cache(hits, full_rss, proc_rss_idle)
    finally:
        for p in procs:
            common.stop(p)


def cache_rounds(bench, urls, rounds):
    """p50/p99 at 1k rps of /cacheable: through the cache (hits) and proxied (plain)."""
    out = {"cached": [], "plain": []}
    for rnd in range(rounds):
        for t in (["cached", "plain"] if rnd % 2 == 0 else ["plain", "cached"]):
            url = urls[t][0] + "cacheable"
            cmd = common.pinned(0, [str(bench), "load", "--url", url, "--rate", "1000", "--seconds", "3",
                                    "--connections", "8", "--warmup", "1"])
            r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            out[t].append(r)
            common.log(f"round {rnd + 1} cache {t:6} p50 {r['p50_us']:6.0f}us p99 {r['p99_us']:6.0f}us")
    return out


def fill_cache(pid, n):
    """RSS (KiB) after n distinct cacheable answers went through the 16 MiB cache."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", FIRST_PORT)
    for i in range(n):
        conn.request("GET", f"/cacheable/{i}")
        conn.getresponse().read()
    conn.close()
    return common.proc_status(pid, "VmRSS")


def report_cache(hits, full_rss, idle_rss):
    lines = ["", "Cache (`cache.maxBytes: 16Mi`), 1k rps of a 1 KiB answer", "",
             "| path | p50 (µs) | p99 (µs) |", "| --- | --- | --- |"]
    for t, label in (("cached", "cache hit"), ("plain", "proxied (no cache)")):
        p50 = [r["p50_us"] for r in hits[t]]
        p99 = [r["p99_us"] for r in hits[t]]
        lines.append(f"| {label} | {med(p50):.0f} [{min(p50):.0f}-{max(p50):.0f}] | "
                     f"{med(p99):.0f} [{min(p99):.0f}-{max(p99):.0f}] |")
    lines.append("")
    lines.append(f"Sidecar RSS: {idle_rss / 1024:.1f} MiB idle, {full_rss / 1024:.1f} MiB after 20,000 "
                 "distinct 1 KiB answers went through the 16 MiB cache.")
    text = "\n".join(lines)
    print(text)
    with open(common.OUT / "stream.md", "a") as f:
        f.write(text + "\n")


def report(args, events, bulk):
    direct50 = med([e["p50_us"] for e in events["direct"]])
    direct99 = med([e["p99_us"] for e in events["direct"]])
    lines = [
        f"Streams ({args.rounds} rounds; {args.events} events {args.every_ms} ms apart; "
        f"bulk {args.bulk_mib} MiB of 16 KiB event chunks)",
        "",
        "| target | event p50 (µs) | event p99 (µs) | added p50 | added p99 | bulk MiB/s | sidecar CPU ms per MiB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in TARGETS:
        p50 = [e["p50_us"] for e in events[t]]
        p99 = [e["p99_us"] for e in events[t]]
        mibs = [b["mib_per_s"] for b in bulk[t]]
        cpu = [b["cpu_ms_per_mib"] for b in bulk[t] if b["cpu_ms_per_mib"] is not None]
        added = "-" if t == "direct" else f"{med(p50) - direct50:.0f}"
        added99 = "-" if t == "direct" else f"{med(p99) - direct99:.0f}"
        cpu_txt = f"{med(cpu):.2f} [{min(cpu):.2f}-{max(cpu):.2f}]" if cpu else "-"
        lines.append(f"| {t} | {med(p50):.0f} [{min(p50):.0f}-{max(p50):.0f}] | "
                     f"{med(p99):.0f} [{min(p99):.0f}-{max(p99):.0f}] | {added} | {added99} | "
                     f"{med(mibs):.0f} | {cpu_txt} |")
    text = "\n".join(lines)
    print(text)
    (common.OUT / "stream.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
