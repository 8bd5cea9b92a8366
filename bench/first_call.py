#!/usr/bin/env python3
"""The first call on a new upstream connection: what a request pays when the sidecar has to
connect again (its pool closes a connection after 55 s idle; third parties drop them too).

    python3 bench/first_call.py [--rounds 3] [--samples 60] [--rate 20] [--fresh-starts 50]
                                [--no-build] [--bin-dir DIR]

One release sidecar (CPU 1, one worker thread) with three integrations, each in front of its
own `attache-bench upstream` (mTLS, CPU 0, one line per TLS handshake in
bench/out/first_call-<variant>.log):

  full     the upstream keeps no sessions and sends no tickets: every new connection is a full
           TLS 1.3 handshake (certificates both ways);
  resumed  the upstream keeps sessions (rustls' defaults): a new connection resumes the session
           the sidecar's shared client config kept from an earlier one;
  h2       as resumed, and the upstream offers HTTP/2 (the sidecar offers h2 first via ALPN).

How a new connection is forced: the requests ask for `/close...`, which the upstream answers as
usual and then closes the connection (HTTP/1.1: `Connection: close`; HTTP/2: GOAWAY), so the
sidecar's next request finds no pooled connection and its connector opens one: TCP connect,
TLS handshake with the integration's one client config (the path a request takes after the
pool closed an idle connection). The sidecar has no setting for its pool's idle timeout, and
restarting the upstream between calls would also throw away its session cache, so neither
would measure resumption honestly. Calls are paced at --rate per second (50 ms apart by
default, ample for the close to reach the sidecar first) by `attache-bench load` over one
keep-alive connection to the sidecar; each measured call's latency is from the client's send to
the end of the answer. "warm" is the same integration with a path that does not close: the
connection is reused, which is what every other call costs.

"fresh sidecar" is the first call of a sidecar just started (no connection, no session, first
use of everything), once per start, --fresh-starts times.

Each variant's calls are checked against the upstream's log: a new connection per call, and
whether its handshake was full or resumed. Results: stdout and bench/out/first_call.md.
"""

import argparse
import json
import os
import subprocess
import time

import run as b

FIRST_PORT = 18201
ADMIN = "127.0.0.1:18290"
FRESH_PORT = 18221
FRESH_ADMIN = "127.0.0.1:18291"
# name -> (upstream port, upstream flags); integrations get ports in name order.
UPSTREAMS = {
    "fc-full": (18444, ["--no-resumption"]),
    "fc-h2": (18445, ["--h2"]),
    "fc-resumed": (18446, []),
}
VARIANTS = {  # variant -> (integration, path)
    "warm": ("fc-resumed", "/"),
    "full": ("fc-full", "/close"),
    "resumed": ("fc-resumed", "/close"),
    "h2": ("fc-h2", "/close"),
}
LABELS = {
    "warm": "warm: connection reused (every later call)",
    "full": "new connection, full TLS 1.3 handshake (upstream without resumption)",
    "resumed": "new connection, resumed TLS 1.3 session",
    "h2": "new connection, resumed session, HTTP/2",
    "fresh": "first call of a fresh sidecar (full handshake + first use)",
}


def manifests(cfg_dir, names):
    """One manifest per integration: the run.py integration, pointed at its own upstream."""
    template = (cfg_dir / "bench.yaml").read_text()
    port = b.UPSTREAM_ADDR.split(":")[1]
    out = cfg_dir / "first_call"
    out.mkdir(exist_ok=True)
    for old in out.glob("*.yaml"):
        old.unlink()
    for name in names:
        text = template.replace("metadata: {name: bench}", f"metadata: {{name: {name}}}").replace(
            f"https://localhost:{port}", f"https://localhost:{UPSTREAMS[name][0]}")
        if f"name: {name}" not in text or f":{UPSTREAMS[name][0]}" not in text:
            raise SystemExit("could not derive the first-call manifests from bench.yaml")
        (out / f"{name}.yaml").write_text(text)
    return out


def start_sidecar(sidecar, manifest_dir, secrets, port, admin):
    cmd = b.pinned(1, [str(sidecar), "run", "--manifest", str(manifest_dir), "--secrets-dir", str(secrets),
                       "--first-port", str(port), "--proxy-addr", f"127.0.0.1:{port + 50}",
                       "--admin-addr", admin, "--worker-threads", "1", "--log-level", "warn"])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    b.wait_ready(f"http://{admin}/readyz", proc)
    return proc


def handshakes(log):
    """(full, resumed, h2) handshake lines the upstream printed so far."""
    lines = [l.split() for l in log.read_text().splitlines() if l.startswith("handshake ")]
    return (sum(1 for l in lines if l[1] == "full"), sum(1 for l in lines if l[1] == "resumed"),
            sum(1 for l in lines if l[-1] == "h2"))


def calls(bench, url, samples, rate):
    """`samples` calls paced at `rate`/s over one connection; the load client's JSON report."""
    seconds = samples / rate
    cmd = [str(bench), "load", "--url", url, "--connections", "1", "--rate", str(rate),
           "--seconds", f"{seconds:.3f}", "--warmup", "0.25"]
    out = subprocess.run(b.pinned(0, cmd), check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def pct(xs, q):
    """Nearest-rank percentile of raw samples."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(q * len(xs) + 0.5)) - 1))] if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--samples", type=int, default=60, help="calls per variant and round (≥ 50 for a p99)")
    ap.add_argument("--rate", type=int, default=20, help="calls per second (one at a time)")
    ap.add_argument("--fresh-starts", type=int, default=50, help="fresh sidecars, one first call each")
    b.add_binary_args(ap)
    args = ap.parse_args()
    b.OUT.mkdir(parents=True, exist_ok=True)
    sidecar, bench = b.release_binaries(args)

    pki = b.OUT / "pki"
    b.run([str(bench), "pki", "--out", str(pki)])
    cfg_dir = b.write_attache_config(pki)
    manifest_dir = manifests(cfg_dir, sorted(UPSTREAMS))
    procs, logs = [], {}
    try:
        for name, (port, flags) in UPSTREAMS.items():
            logs[name] = b.OUT / f"first_call-{name.removeprefix('fc-')}.log"
            f = open(logs[name], "w")
            procs.append(subprocess.Popen(b.pinned(0, [str(bench), "upstream", "--certs", str(pki), "--addr",
                                                       f"127.0.0.1:{port}", "--log-handshakes"] + flags), stdout=f))
        time.sleep(0.3)
        sc = start_sidecar(sidecar, manifest_dir, cfg_dir / "secrets", FIRST_PORT, ADMIN)
        procs.append(sc)
        ports = {name: FIRST_PORT + i for i, name in enumerate(sorted(UPSTREAMS))}
        results = {v: [] for v in VARIANTS}
        names = list(VARIANTS)
        for rnd in range(args.rounds):
            k = rnd % len(names)
            for v in names[k:] + names[:k]:
                name, path = VARIANTS[v]
                before = handshakes(logs[name])
                r = calls(bench, f"http://127.0.0.1:{ports[name]}{path}", args.samples, args.rate)
                time.sleep(0.1)  # the last close reaches the upstream's log
                after = handshakes(logs[name])
                r["new_full"], r["new_resumed"], r["new_h2"] = (a - c for a, c in zip(after, before))
                results[v].append(r)
                b.log(f"round {rnd + 1} {v:8} p50 {r['p50_us']:6.0f}us p99 {r['p99_us']:6.0f}us "
                      f"calls {r['requests']} (+warm-up) failed {r['failed']} handshakes full "
                      f"{r['new_full']} resumed {r['new_resumed']} h2 {r['new_h2']}")
        b.stop(sc)
        # The upstreams' logs as the rounds left them (the fresh sidecars add to one of them).
        tails = {log.name: [l for l in log.read_text().splitlines() if l.startswith("handshake ")][-2:]
                 for log in logs.values()}

        # Fresh sidecars: one first call each, through the resumed-capable upstream.
        fresh, fresh_before = [], handshakes(logs["fc-resumed"])
        one = manifest_dir / "fresh"
        one.mkdir(exist_ok=True)
        (one / "fc-resumed.yaml").write_text((manifest_dir / "fc-resumed.yaml").read_text())
        for _ in range(args.fresh_starts):
            p = start_sidecar(sidecar, one, cfg_dir / "secrets", FRESH_PORT, FRESH_ADMIN)
            try:
                out = subprocess.run(b.pinned(0, [str(bench), "load", "--url", f"http://127.0.0.1:{FRESH_PORT}/",
                                                  "--connections", "1", "--requests", "1"]),
                                     check=True, capture_output=True, text=True).stdout
                r = json.loads(out)
                if r["ok"] == 1:
                    fresh.append(r["p50_us"])
            finally:
                b.stop(p)
        fresh_after = handshakes(logs["fc-resumed"])
    finally:
        for p in procs:
            b.stop(p)
    report(args, results, fresh, [a - c for a, c in zip(fresh_after, fresh_before)], tails)


def report(args, results, fresh, fresh_hs, tails):
    load1 = os.getloadavg()[0]
    lines = [f"First call on a new upstream connection: {args.rounds} interleaved rounds of {args.samples} calls "
             f"per variant, {args.rate} calls/s, one at a time; p50/p99 are medians over rounds (min-max); "
             f"sidecar on CPU 1 (1 worker thread), upstreams and client on CPU 0; load average {load1:.2f}.", "",
             "| call | p50 µs | p99 µs | calls | new connections (upstream log) | full / resumed handshakes | h2 |",
             "|---|---|---|---|---|---|---|"]
    for v in VARIANTS:
        rs = results[v]
        p50, p99 = [r["p50_us"] for r in rs], [r["p99_us"] for r in rs]
        n = sum(r["requests"] for r in rs)
        full, resumed, h2 = (sum(r[k] for r in rs) for k in ("new_full", "new_resumed", "new_h2"))
        failed = sum(r["failed"] for r in rs)
        lines.append(f"| {LABELS[v]} | {b.med(p50):.0f} ({b.spread(p50)}) | {b.med(p99):.0f} ({b.spread(p99)}) | "
                     f"{n}{f' ({failed} failed)' if failed else ''} | {full + resumed} | {full} / {resumed} | {h2} |")
    if fresh:
        lines.append(f"| {LABELS['fresh']} | {pct(fresh, 0.5):.0f} | {pct(fresh, 0.99):.0f} | {len(fresh)} | "
                     f"{fresh_hs[0] + fresh_hs[1]} | {fresh_hs[0]} / {fresh_hs[1]} | {fresh_hs[2]} |")
    lines.append("")
    lines.append("New connections include the load client's warm-up calls (0.25 s at the same rate). "
                 "The upstreams' own logs, last lines of each after the rounds:")
    lines.append("")
    lines.append("```")
    for name, tail in tails.items():
        for l in tail:
            lines.append(f"{name}: {l}")
    lines.append("```")
    text = "\n".join(lines) + "\n"
    print(text)
    (b.OUT / "first_call.md").write_text(text)


if __name__ == "__main__":
    main()
