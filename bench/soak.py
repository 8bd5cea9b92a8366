#!/usr/bin/env python3
"""Soak test of the real attache-sidecar (not part of the test suite).

For --minutes, at a fixed rate, GETs and POSTs (the sidecar generates their Idempotency-Key)
go through the sidecar to a local mTLS upstream that misbehaves on a fixed 60 s cycle:

    [10, 15) s  every third request is reset (RST) after the upstream read it
    [25, 30) s  503 without Retry-After
    [40, 45) s  slow bodies: the response is dripped over 1.5 s (under timeouts.idle)

Meanwhile the manifest is rewritten every 45 s and the client certificate rotated every 60 s,
alternately atomically (rename) and not (written in place, key before certificate). The run
ends with SIGTERM under load. Printed: requests sent, failures by kind (inside and outside the
fault windows), lost requests (no HTTP answer before SIGTERM), POSTs that reached the upstream
with two different keys, and RSS / open fds of the sidecar over time.

    python3 bench/soak.py --minutes 10 --rate 40 [--sidecar target/debug/attache-sidecar]

Needs the openssl command line tool.
"""

import argparse
import http.client
import http.server
import json
import os
import signal
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid

CYCLE = 60.0
RESETS, ERRORS, SLOW = (10.0, 15.0), (25.0, 30.0), (40.0, 45.0)
SLACK = 3.0  # seconds after a window during which its effects (breaker, holds) may linger


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_pki(d):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.crt", "-days", "2", "-subj", "/CN=soak ca")
    issue(d, "server", "localhost", san="subjectAltName=DNS:localhost")
    issue(d, "client", "soak-client")


def issue(d, name, cn, san=None):
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{d}/{name}.key", "-out", f"{d}/{name}.csr", "-subj", f"/CN={cn}")
    ext = f"{d}/{name}.ext"
    with open(ext, "w") as f:
        f.write((san or "subjectAltName=DNS:soak-client") + "\n")
    openssl("x509", "-req", "-in", f"{d}/{name}.csr", "-CA", f"{d}/ca.crt", "-CAkey", f"{d}/ca.key",
            "-CAcreateserial", "-out", f"{d}/{name}.crt", "-days", "2", "-extfile", ext)


def phase(t0):
    return (time.monotonic() - t0) % CYCLE


def in_window(p, w, slack=0.0):
    # A request sent just before a window may still be answered inside it.
    return w[0] - (1.0 if slack else 0.0) <= p < w[1] + slack


class Upstream(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def make_handler(state):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_GET(self):
            self.serve()

        def do_POST(self):
            self.serve()

        def serve(self):
            n = int(self.headers.get("content-length") or 0)
            if n:
                self.rfile.read(n)
            rid = self.headers.get("x-req-id", "")
            key = self.headers.get("idempotency-key")
            p = phase(state["t0"])
            with state["lock"]:
                state["seen"] += 1
                k = state["seen"]
                if self.command == "POST":
                    state["keys"].setdefault(rid, set()).add(key)
            if in_window(p, RESETS) and k % 3 == 0:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True
                return
            if in_window(p, ERRORS):
                self.reply(503, b"maintenance")
                return
            body = b"x" * 1024
            if in_window(p, SLOW):
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                for i in range(4):
                    self.wfile.write(body[i * 256:(i + 1) * 256])
                    self.wfile.flush()
                    time.sleep(0.5)
                return
            self.reply(200, body)

        def reply(self, status, body):
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def manifest(port, per_try):
    return f"""apiVersion: attache.dev/v1alpha1
kind: ExternalIntegration
metadata: {{name: soak}}
spec:
  upstream: {{url: "https://localhost:{port}"}}
  tls:
    caBundleRef: {{name: soak-ca, key: ca.crt}}
    clientCertificate: {{secretName: soak-client}}
  timeouts: {{connect: 2s, perTry: {per_try}, request: 20s, idle: 5s}}
  retry:
    maxAttempts: 3
    backoff: {{base: 50ms, max: 500ms}}
    idempotencyKey: {{header: Idempotency-Key, generate: true}}
  circuitBreaker: {{consecutiveFailures: 20, openDuration: 2s, maxOpenDuration: 5s}}
"""


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


def proc_stats(pid):
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss / 1024.0, len(os.listdir(f"/proc/{pid}/fd"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rate", type=float, default=40, help="requests per second in all")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--sidecar", default=None)
    a = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    binary = a.sidecar or next(p for p in (f"{root}/target/release/attache-sidecar",
                                           f"{root}/target/debug/attache-sidecar")
                               if os.path.exists(p))
    work = tempfile.mkdtemp(prefix="attache-soak-")
    pki = f"{work}/pki"
    os.makedirs(pki)
    make_pki(pki)

    state = {"t0": time.monotonic(), "lock": threading.Lock(), "seen": 0, "keys": {}}
    up = Upstream(("127.0.0.1", 0), make_handler(state))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(f"{pki}/server.crt", f"{pki}/server.key")
    ctx.load_verify_locations(f"{pki}/ca.crt")
    ctx.verify_mode = ssl.CERT_REQUIRED
    up.socket = ctx.wrap_socket(up.socket, server_side=True)
    threading.Thread(target=up.serve_forever, daemon=True).start()
    port = up.server_address[1]

    secrets = f"{work}/secrets"
    os.makedirs(f"{secrets}/soak-ca")
    os.makedirs(f"{secrets}/soak-client")
    with open(f"{pki}/ca.crt", "rb") as f:
        write_atomic(f"{secrets}/soak-ca/ca.crt", f.read())
    for ext in ("crt", "key"):
        with open(f"{pki}/client.{ext}", "rb") as f:
            write_atomic(f"{secrets}/soak-client/tls.{ext}", f.read())
    mpath = f"{work}/soak.yaml"
    write_atomic(mpath, manifest(port, "10s").encode())

    listen = 25001 + os.getpid() % 1000
    sidecar = subprocess.Popen(
        [binary, "run", "--manifest", mpath, "--secrets-dir", secrets, "--first-port", str(listen),
         "--proxy-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
         "--log-level", os.environ.get("SOAK_LOG_LEVEL", "warn")],
        stdout=subprocess.DEVNULL, stderr=open(f"{work}/sidecar.log", "wb"))
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", listen), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                sys.exit(f"sidecar did not start; see {work}/sidecar.log")
            time.sleep(0.05)

    t0 = state["t0"]
    results = []  # (phase, method, outcome)
    rlock = threading.Lock()
    stop = threading.Event()
    term_at = [None]
    interval = a.workers / a.rate

    def worker(i):
        conn = None
        prev = None
        nxt = time.monotonic() + i * interval / a.workers
        n = 0
        while not stop.is_set():
            time.sleep(max(0.0, nxt - time.monotonic()))
            nxt += interval
            n += 1
            method = "POST" if n % 2 else "GET"
            rid = uuid.uuid4().hex
            p = phase(t0)
            sent_at = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", listen, timeout=30)
                conn.request(method, "/v1/things", body=b"{}" if method == "POST" else None,
                             headers={"x-req-id": rid, "content-type": "application/json"})
                r = conn.getresponse()
                r.read()
                code = r.getheader("x-attache-error") or str(r.status)
                prev = (method, code, dict(r.getheaders()))
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                conn = None
                after_term = term_at[0] is not None and sent_at >= term_at[0] - 0.05
                code = "refused_after_sigterm" if after_term else f"lost:{type(e).__name__}"
                if os.environ.get("SOAK_DEBUG") and not after_term:
                    print("lost after", prev, file=sys.stderr)
            with rlock:
                results.append((p, method, code))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(a.workers)]
    for t in threads:
        t.start()

    samples = []
    end = t0 + a.minutes * 60
    next_manifest, next_rotation, next_sample = t0 + 45, t0 + 60, t0
    rotations = 0
    while time.monotonic() < end:
        now = time.monotonic()
        if now >= next_sample:
            samples.append((now - t0, *proc_stats(sidecar.pid)))
            next_sample += 10
        if now >= next_manifest:
            per_try = "11s" if int((now - t0) / 45) % 2 else "10s"
            write_atomic(mpath, manifest(port, per_try).encode())
            next_manifest += 45
        if now >= next_rotation:
            rotations += 1
            issue(pki, "client", f"soak-client-{rotations}")
            crt, key = (open(f"{pki}/client.{e}", "rb").read() for e in ("crt", "key"))
            if rotations % 2:
                write_atomic(f"{secrets}/soak-client/tls.key", key)
                write_atomic(f"{secrets}/soak-client/tls.crt", crt)
            else:
                # Not atomic: in place, key first; the sidecar may see a mismatched pair.
                with open(f"{secrets}/soak-client/tls.key", "wb") as f:
                    f.write(key)
                time.sleep(0.3)
                with open(f"{secrets}/soak-client/tls.crt", "wb") as f:
                    f.write(crt)
            next_rotation += 60
        time.sleep(0.1)

    term_at[0] = time.monotonic()
    sidecar.send_signal(signal.SIGTERM)
    time.sleep(2)
    stop.set()
    for t in threads:
        t.join(timeout=35)
    try:
        code = sidecar.wait(timeout=30)
    except subprocess.TimeoutExpired:
        sidecar.kill()
        code = "killed after 30 s"

    with rlock:
        rs = list(results)
    windows = [RESETS, ERRORS, SLOW]
    faulty = lambda p: any(in_window(p, w, SLACK) for w in windows)
    ok = sum(1 for _, _, c in rs if c in ("200",))
    fails = {}
    for p, m, c in rs:
        if c == "200" or c == "refused_after_sigterm":
            continue
        where = "in fault windows" if faulty(p) else "OUTSIDE fault windows"
        fails[(c, where)] = fails.get((c, where), 0) + 1
    lost = sum(n for (c, _), n in fails.items() if c.startswith("lost"))
    dup = sum(1 for keys in state["keys"].values() if len(keys) > 1)
    print(f"| soak | {a.minutes:g} min at {a.rate:g} req/s, {a.workers} keep-alive clients, "
          f"binary {os.path.relpath(binary, root)} |")
    print("|---|---|")
    print(f"| requests sent | {len(rs)} |")
    print(f"| 200 | {ok} |")
    for (c, where), n in sorted(fails.items()):
        print(f"| failed: {c} ({where}) | {n} |")
    print(f"| refused after SIGTERM (new requests) | "
          f"{sum(1 for _, _, c in rs if c == 'refused_after_sigterm')} |")
    print(f"| lost (no HTTP answer before SIGTERM) | {lost} |")
    print(f"| POSTs seen by the upstream with two different Idempotency-Keys | {dup} |")
    print(f"| manifest rewrites / certificate rotations | {int(a.minutes * 60 / 45)} / {rotations} |")
    print(f"| sidecar exit after SIGTERM | {code} |")
    print()
    print("| t (s) | RSS (MiB) | open fds |")
    print("|---|---|---|")
    for t, rss, fds in samples:
        print(f"| {t:.0f} | {rss:.1f} | {fds} |")
    if os.environ.get("SOAK_DEBUG"):
        print("lost at phases:", sorted(round(p, 1) for p, _, c in rs if c.startswith("lost")))
    print(f"\nlogs: {work}/sidecar.log")


if __name__ == "__main__":
    main()
