"""`python3 bench/run.py --global-vs-pod`: what `rateLimit.scope: global` adds to a request.

Two sidecars with the same integration, the same limit (2,000 requests/s, burst 200: at 1k rps
the bucket is never empty, so both only pay for asking), one `scope: pod`, one `scope: global`
on a local redis-server (no persistence); plus `direct` for the floor. Interleaved rounds at a
fixed 1,000 requests/s; medians over rounds of p50 and p99, added latency vs direct, and the
global/pod ratio of the added latency. The sidecars are pinned to CPU 1 (one worker thread),
the upstream, Redis and the load client to CPU 0.
"""
import shutil
import socket
import subprocess
import time

import run as b

LIMIT = "rateLimit: {requests: 2000, per: 1s, burst: 200, scope: %s, onLimit: reject}"
PORTS = {"pod": (18101, "127.0.0.1:18190"), "global": (18102, "127.0.0.1:18191")}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis():
    exe = shutil.which("redis-server")
    if not exe:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(b.pinned(0, [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                         "--appendonly", "no"]), stdout=subprocess.DEVNULL)
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), 0.05).close()
            return proc, f"redis://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.01)
    raise SystemExit("redis-server did not start")


def start_sidecar(sidecar, cfg_dir, scope, redis_url):
    manifest = cfg_dir / f"bench-{scope}.yaml"
    text = (cfg_dir / "bench.yaml").read_text()
    lines = [(("  " + LIMIT % scope) if l.startswith("  rateLimit:") else l) for l in text.splitlines()]
    manifest.write_text("\n".join(lines) + "\n")
    port, admin = PORTS[scope]
    cmd = [str(sidecar), "run", "--manifest", str(manifest), "--secrets-dir", str(cfg_dir / "secrets"),
           "--first-port", str(port), "--proxy-addr", f"127.0.0.1:{port + 100}", "--admin-addr", admin,
           "--worker-threads", "1", "--log-level", "warn"]
    if scope == "global":
        cmd += ["--redis-url", redis_url]
    proc = subprocess.Popen(b.pinned(1, cmd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t = b.Target(scope, f"http://127.0.0.1:{port}/", [], proc)
    t.ready_s = b.wait_ready(f"http://{admin}/readyz", proc)
    return t


def backend_metric(admin):
    import urllib.request
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=2) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("attache_rate_limit_backend{"):
                return float(line.rsplit(" ", 1)[1])
    return None


def global_vs_pod(args, sidecar, bench, client):
    b.OUT.mkdir(parents=True, exist_ok=True)
    pki = b.OUT / "pki"
    b.run([str(bench), "pki", "--out", str(pki)])
    procs = []
    try:
        upstream = subprocess.Popen(b.pinned(0, [str(bench), "upstream", "--certs", str(pki),
                                                 "--addr", b.UPSTREAM_ADDR]), stdout=subprocess.DEVNULL)
        procs.append(upstream)
        redis, url = start_redis()
        procs.append(redis)
        time.sleep(0.3)
        cfg_dir = b.write_attache_config(pki)
        direct = b.Target("direct", f"https://localhost:{b.UPSTREAM_ADDR.split(':')[1]}/",
                          ["--cacert", str(pki / "ca.crt"), "--cert", str(pki / "client.crt"),
                           "--key", str(pki / "client.key")])
        pod = start_sidecar(sidecar, cfg_dir, "pod", url)
        glob = start_sidecar(sidecar, cfg_dir, "global", url)
        procs += [pod.proc, glob.proc]
        time.sleep(1.0)
        if backend_metric(PORTS["global"][1]) != 1.0:
            raise SystemExit("the global sidecar is not on Redis (attache_rate_limit_backend != 1)")
        targets = {"direct": direct, "pod": pod, "global": glob}
        names = list(targets)
        results = {n: [] for n in names}
        for rnd in range(args.rounds):
            for n in names[rnd % 3:] + names[:rnd % 3]:
                r = b.load_run(client, targets[n], args.seconds, 1000, conns=16)
                results[n].append(r)
                b.log(f"round {rnd + 1} 1k rps {n:7} p50 {r['p50']:6.0f}us p99 {r['p99']:6.0f}us "
                      f"rps {r['rps']:6.0f} failed {r['failed']} steal {r['steal']:.1f}%")
        on_redis = backend_metric(PORTS["global"][1])
        report(args, results, on_redis)
    finally:
        for p in procs:
            b.stop(p)


def report(args, results, on_redis):
    med = b.med
    d50, d99 = med([r["p50"] for r in results["direct"]]), med([r["p99"] for r in results["direct"]])
    lines = [f"rateLimit.scope global vs pod at 1,000 requests/s: {args.rounds} interleaved rounds of "
             f"{args.seconds} s; medians over rounds (min-max). Global sidecar on Redis at the end: "
             f"{'yes' if on_redis == 1.0 else 'NO'}.", "",
             "| target | p50 µs | p99 µs | added p50 µs | added p99 µs | failed | steal % |",
             "|---|---|---|---|---|---|---|"]
    added = {}
    for n in ("direct", "pod", "global"):
        rs = results[n]
        p50, p99 = med([r["p50"] for r in rs]), med([r["p99"] for r in rs])
        added[n] = (p50 - d50, p99 - d99)
        lines.append(f"| {n} | {p50:.0f} ({b.spread([r['p50'] for r in rs])}) | {p99:.0f} "
                     f"({b.spread([r['p99'] for r in rs])}) | {'' if n == 'direct' else f'{p50 - d50:.0f}'} | "
                     f"{'' if n == 'direct' else f'{p99 - d99:.0f}'} | {sum(r['failed'] for r in rs)} | "
                     f"{med([r['steal'] for r in rs]):.1f} |")

    def ratio(i):
        g, p = added["global"][i], added["pod"][i]
        return f"{g / p:.2f}" if p > 0 else "-"
    lines += ["", f"added latency, global / pod: p50 {ratio(0)}, p99 {ratio(1)} (target ≤ 1.2)"]
    text = "\n".join(lines)
    print(text)
    (b.OUT / "global_vs_pod.md").write_text(text + "\n")
