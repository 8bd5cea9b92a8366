#!/usr/bin/env python3
"""Where the sidecar's time goes: perf samples (with call graphs) of the release sidecar while
run.py's load client drives it at a fixed rate through run.py's `attache` target (mTLS to the
bench upstream, API key, retries, breaker, rate and concurrency limits), then the functions
that take the most of its CPU, self time and with what they call. Results: stdout and
bench/out/profile.md (perf.data stays in bench/out for `perf report -i`).

    python3 bench/profile.py [--rate 5000] [--seconds 10] [--no-build] [--top 30]

Needs `perf` (linux-perf) and perf_event_paranoid <= 2 (user-space samples of our own
processes). Samples are cpu-clock at 4 kHz: on a VM without hardware counters that is what
perf can do. The release binary keeps its symbols (no strip) and its unwind tables, so call
graphs come from DWARF unwinding; functions inlined by LTO are charged to their caller.
"""

import argparse
import subprocess
import sys
import time

import run as b


def perf_report(data, top, children):
    cmd = ["perf", "report", "-i", str(data), "--stdio", "--no-header", "--sort", "symbol",
           "--percent-limit", "0.5", "-g", "none"]
    cmd += ["--children"] if children else ["--no-children"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if not parts[0].endswith("%"):
            continue
        if children:
            pct, self_pct = parts[0], parts[1]
            sym = " ".join(parts[3:]) if len(parts) > 3 else ""
            rows.append((pct, self_pct, sym))
        else:
            sym = " ".join(parts[2:]) if len(parts) > 2 else ""
            rows.append((parts[0], sym))
        if len(rows) >= top:
            break
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--top", type=int, default=30)
    b.add_binary_args(ap)
    args = ap.parse_args()
    b.OUT.mkdir(parents=True, exist_ok=True)
    sidecar, bench = b.release_binaries(args)
    pki = b.OUT / "pki"
    b.run([str(bench), "pki", "--out", str(pki)])
    cfg = b.write_attache_config(pki)
    data = b.OUT / "perf.data"
    procs = []
    try:
        up = subprocess.Popen(b.pinned(0, [str(bench), "upstream", "--certs", str(pki),
                                           "--addr", b.UPSTREAM_ADDR]), stdout=subprocess.DEVNULL)
        procs.append(up)
        target = b.start_attache(sidecar, cfg)
        procs.append(target.proc)
        load = subprocess.Popen(b.pinned(0, [
            str(bench), "load", "--url", target.url, "--connections", "16", "--seconds",
            str(args.seconds + 2), "--warmup", "1", "--rate", str(args.rate),
            "-H", "authorization: Bearer app-has-no-key"]), stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)
        before = b.cpu_seconds(target.proc.pid)
        perf = subprocess.run(["perf", "record", "-F", "4000", "-e", "cpu-clock", "--call-graph",
                               "dwarf,16384", "-o", str(data), "-p", str(target.proc.pid), "--",
                               "sleep", str(args.seconds)], capture_output=True, text=True)
        cpu = b.cpu_seconds(target.proc.pid) - before
        out = load.communicate()[0]
        if perf.returncode:
            sys.exit(f"perf record failed: {perf.stderr.strip()}")
        import json
        r = json.loads(out)
    finally:
        for p in procs:
            b.stop(p)
    per_request_us = cpu / (r["rps"] * args.seconds) * 1e6 if r["rps"] else 0
    lines = [f"Profile of the sidecar at {args.rate} requests/s for {args.seconds} s "
             f"(load p50 {r['p50_us']:.0f} µs, p99 {r['p99_us']:.0f} µs, {r['failed']} failed; "
             f"sidecar CPU {per_request_us:.0f} µs per request, perf overhead included)", "",
             "Self time (where the CPU is spent):", "", "| self | function |", "| --- | --- |"]
    lines += [f"| {pct} | `{sym}` |" for pct, sym in perf_report(data, args.top, False)]
    lines += ["", "With callees (what each function costs in all):", "",
              "| total | self | function |", "| --- | --- | --- |"]
    lines += [f"| {pct} | {s} | `{sym}` |" for pct, s, sym in perf_report(data, args.top, True)]
    text = "\n".join(lines)
    print(text)
    (b.OUT / "profile.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
