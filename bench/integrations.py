#!/usr/bin/env python3
"""One sidecar with many integrations: memory and reload time at 1, 10 and 50 integrations.

    python3 bench/integrations.py [--counts 1,10,50] [--reloads 5] [--no-build] [--bin-dir DIR]

For each count N: one manifest file with N integrations (run.py's integration, named
bench-001...; all in front of the same mTLS `attache-bench upstream`, each with its own
listener port), one release sidecar started on it (CPU 1, one worker thread, as in run.py),
and:
  - exec to ready: from spawning the sidecar to the first 200 from /readyz (1 ms polls), the
    median of --starts + 1 starts;
  - idle RSS: VmRSS one second after ready, before any request;
  - RSS after one call through each integration (each then holds one TLS connection);
  - reload: --reloads times, the manifest file is replaced (written beside it, then renamed
    over it, so the sidecar never reads half a file) with every integration's rate limit
    changed. "write to serving" is from the rename until the sidecar logs `config reloaded`
    (it logs that after the new snapshot is live and attache_config_reloads_total{result=
    "success"} counted it; the log file is polled every millisecond, which costs the sidecar
    nothing); the sidecar polls its files every 500 ms, so this includes 0-500 ms of waiting for
    the next poll. "load + build" is the sidecar's own `elapsed_ms` in that log line: reading and
    rendering the manifests and building every integration (TLS config, client, policies). The
    success counter is checked to have gone up by exactly one per write, and the failure counter
    not at all.
Results: stdout and bench/out/integrations.md.
"""

import argparse
import os
import random
import re
import subprocess
import time
import urllib.request

import run as b

FIRST_PORT = 18301
ADMIN = "127.0.0.1:18390"


def manifest_text(template, count, requests):
    docs = []
    for i in range(count):
        text = template.replace("metadata: {name: bench}", f"metadata: {{name: bench-{i + 1:03}}}")
        text = re.sub(r"rateLimit: \{requests: \d+,", f"rateLimit: {{requests: {requests},", text)
        docs.append(text)
    if f"requests: {requests}," not in docs[0]:
        raise SystemExit("could not derive the manifests from bench.yaml")
    return "---\n".join(docs)


def write_atomically(path, text):
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def reload_counts(admin):
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as r:
        text = r.read().decode()
    counts = {"success": 0.0, "failure": 0.0}
    for line in text.splitlines():
        m = re.match(r'attache_config_reloads_total\{result="(\w+)"\} (\S+)', line)
        if m:
            counts[m.group(1)] = float(m.group(2))
    return counts


def reload_lines(log):
    return [l for l in log.read_text(errors="replace").splitlines() if "config reloaded" in l]


def start(sidecar, manifest, cfg_dir, err):
    return subprocess.Popen(b.pinned(1, [str(sidecar), "run", "--manifest", str(manifest), "--secrets-dir",
                                         str(cfg_dir / "secrets"), "--first-port", str(FIRST_PORT),
                                         "--proxy-addr", "127.0.0.1:18380", "--admin-addr", ADMIN,
                                         "--worker-threads", "1", "--log-level", "info"]),
                            stdout=subprocess.DEVNULL, stderr=err)


def measure(sidecar, cfg_dir, count, reloads, starts):
    d = b.OUT / "integrations" / str(count)
    d.mkdir(parents=True, exist_ok=True)
    manifest = d / "integrations.yaml"
    template = (cfg_dir / "bench.yaml").read_text()
    write_atomically(manifest, manifest_text(template, count, 1000000))
    log = b.OUT / f"integrations-{count}.log"
    ready = []
    for _ in range(starts):
        proc = start(sidecar, manifest, cfg_dir, subprocess.DEVNULL)
        try:
            ready.append(b.wait_ready(f"http://{ADMIN}/readyz", proc))
        finally:
            b.stop(proc)
    with open(log, "w") as err:
        proc = start(sidecar, manifest, cfg_dir, err)
    try:
        ready.append(b.wait_ready(f"http://{ADMIN}/readyz", proc))
        time.sleep(1.0)
        idle = b.proc_status(proc.pid, "VmRSS")
        for i in range(count):
            with urllib.request.urlopen(f"http://127.0.0.1:{FIRST_PORT + i}/", timeout=10) as r:
                if r.status != 200:
                    raise SystemExit(f"integration {i + 1}: status {r.status}")
                r.read()
        after_calls = b.proc_status(proc.pid, "VmRSS")
        before = reload_counts(ADMIN)
        walls, rng = [], random.Random(count)
        for k in range(reloads):
            seen = len(reload_lines(log))
            # Past the sidecar's next poll (so that writes never pile up in one), at a random
            # point of its 500 ms cycle, as a real change would be.
            time.sleep(0.6 + rng.random() * 0.5)
            write_atomically(manifest, manifest_text(template, count, 1000000 + k + 1))
            t0 = time.monotonic()
            while len(reload_lines(log)) == seen:
                if time.monotonic() - t0 > 20:
                    raise SystemExit(f"{count} integrations: no reload within 20 s (see {log})")
                time.sleep(0.001)
            walls.append((time.monotonic() - t0) * 1000)
        after = reload_counts(ADMIN)
        if after["success"] - before["success"] != reloads or after["failure"] != before["failure"]:
            raise SystemExit(f"{count} integrations: reload counters {before} -> {after}, expected "
                             f"{reloads} successes (see {log})")
        builds = [float(m.group(1)) for l in reload_lines(log)
                  for m in [re.search(r"elapsed_ms=(\d+)", l)] if m]
    finally:
        b.stop(proc)
    return dict(ready_ms=b.med(ready) * 1000, idle=idle / 1024, after_calls=after_calls / 1024,
                wall=walls, build=builds)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", default="1,10,50", help="integration counts (the injector allows up to 79)")
    ap.add_argument("--reloads", type=int, default=5)
    ap.add_argument("--starts", type=int, default=4, help="extra starts for the exec-to-ready median")
    b.add_binary_args(ap)
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    b.OUT.mkdir(parents=True, exist_ok=True)
    sidecar, bench = b.release_binaries(args)
    pki = b.OUT / "pki"
    b.run([str(bench), "pki", "--out", str(pki)])
    cfg_dir = b.write_attache_config(pki)
    upstream = subprocess.Popen(b.pinned(0, [str(bench), "upstream", "--certs", str(pki), "--addr", b.UPSTREAM_ADDR]),
                                stdout=subprocess.DEVNULL)
    rows = {}
    try:
        time.sleep(0.3)
        for n in counts:
            rows[n] = measure(sidecar, cfg_dir, n, args.reloads, args.starts)
            r = rows[n]
            b.log(f"{n} integrations: ready {r['ready_ms']:.0f} ms, idle RSS {r['idle']:.1f} MiB, after calls "
                  f"{r['after_calls']:.1f} MiB, reload write-to-serving {b.med(r['wall']):.0f} ms, "
                  f"load+build {b.med(r['build']):.0f} ms")
    finally:
        b.stop(upstream)
    load1 = os.getloadavg()[0]
    lines = [f"One release sidecar (CPU 1, 1 worker thread) per row; exec to ready: median of {args.starts + 1} "
             f"starts; {args.reloads} reloads each, medians (min-max); load average {load1:.2f}.", "",
             "| integrations | exec to ready (ms) | idle RSS (MiB) | RSS after one call each (MiB) | "
             "reload: write to serving (ms) | reload: load + build (ms, sidecar's log) |",
             "|---|---|---|---|---|---|"]
    for n, r in rows.items():
        lines.append(f"| {n} | {r['ready_ms']:.0f} | {r['idle']:.1f} | {r['after_calls']:.1f} | "
                     f"{b.med(r['wall']):.0f} ({b.spread(r['wall'])}) | "
                     f"{b.med(r['build']):.0f} ({b.spread(r['build'])}) |")
    lines += ["", "Write to serving includes up to 500 ms of waiting for the sidecar's next look at its files "
              "(it polls every 500 ms); load + build is the reload's own work."]
    text = "\n".join(lines) + "\n"
    print(text)
    (b.OUT / "integrations.md").write_text(text)


if __name__ == "__main__":
    main()
