#!/usr/bin/env python3
"""Soak and fault run for Shellac (not run by CI).

Starts three origins on loopback, Shellac in front of them (one pool,
round robin), and drives mixed load for --duration seconds (default 600):
cacheable hits, cache misses (unique query strings) and passes (POST).
A fault injector kills origin 0 every 20 s and restarts it 5 s later;
origin 1 is slow (every answer delayed). Every 10 s it prints requests
served, errors by kind, 503s, 5xx on cached content, Shellac's RSS and
open file descriptors. Everything is on 127.0.0.1; every loop is bounded
by the deadline.

    cargo build --release
    python3 tests/soak/soak.py --binary target/release/shellac --duration 600

Workers also send PURGE for 2 % of requests, and Shellac is reloaded with
SIGHUP every 30 s.
"""

import argparse
import collections
import http.client
import http.server
import os
import random
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


# === origin (run as a child process: soak.py origin PORT DELAY) ===

def run_origin(port, delay):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _answer(self):
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            if delay:
                time.sleep(delay)
            if self.path.startswith("/static/"):
                body = (self.path * 64).encode()[:4096]
                cc = "max-age=30"
            else:
                body = b"dynamic " + str(time.time()).encode()
                cc = "no-store"
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.send_header("cache-control", cc)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_HEAD = _answer

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    Server(("127.0.0.1", port), Handler).serve_forever()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_origin(port, delay=0.0):
    return subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "origin", str(port), str(delay)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_listening(port, deadline):
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


# === load ===

class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.total = collections.Counter()
        self.window = collections.Counter()

    def add(self, kind):
        with self.lock:
            self.total[kind] += 1
            self.window[kind] += 1

    def take_window(self):
        with self.lock:
            window, self.window = self.window, collections.Counter()
            return window


def worker(addr, stats, deadline, seed):
    rng = random.Random(seed)
    conn = None
    while time.time() < deadline:
        if conn is None:
            conn = http.client.HTTPConnection(addr[0], addr[1], timeout=10)
        roll = rng.random()
        if roll < 0.68:
            kind, method, path, body = "hit", "GET", "/static/%d" % rng.randrange(50), None
        elif roll < 0.70:
            kind, method, path, body = "purge", "PURGE", "/static/%d" % rng.randrange(50), None
        elif roll < 0.9:
            kind, method, path, body = "miss", "GET", "/miss?%d" % rng.randrange(10**9), None
        else:
            kind, method, path, body = "pass", "POST", "/api", b"x" * rng.randrange(1, 2048)
        try:
            conn.request(method, path, body=body, headers={"host": "soak.example"})
            resp = conn.getresponse()
            resp.read()
            stats.add("requests")
            if kind == "purge":
                stats.add("purges")
            if resp.status >= 500:
                stats.add("http_%d" % resp.status)
                if kind == "hit":
                    stats.add("5xx_on_cached")
            if resp.getheader("connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as error:
            stats.add("error_" + type(error).__name__)
            conn.close()
            conn = None
    if conn is not None:
        conn.close()


def proc_figures(pid):
    rss = fds = -1
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
        fds = len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        pass
    return rss, fds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default="target/release/shellac")
    parser.add_argument("--duration", type=float, default=600)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--slow", type=float, default=0.2, help="origin 1's delay (s)")
    args = parser.parse_args()

    ports = [free_port() for _ in range(3)]
    origins = [start_origin(ports[0]), start_origin(ports[1], args.slow), start_origin(ports[2])]
    shellac_port = free_port()
    workdir = tempfile.mkdtemp(prefix="shellac-soak-")
    config = os.path.join(workdir, "shellac.toml")
    with open(config, "w") as f:
        f.write('[server]\nlisten = "127.0.0.1:%d"\nmax_connections = 512\n' % shellac_port)
        f.write('[cache]\npurge_allow = ["127.0.0.1/32"]\n')
        f.write('[defaults]\nconnect_timeout = "500ms"\nfirst_byte_timeout = "5s"\n')
        for i, port in enumerate(ports):
            f.write('[[backend]]\nname = "o%d"\naddress = "127.0.0.1:%d"\n' % (i, port))
    log_path = os.path.join(workdir, "shellac.log")
    log = open(log_path, "w")
    shellac = subprocess.Popen(
        [args.binary, "--config", config],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, RUST_LOG="warn"),
    )
    start = time.time()
    if not all(wait_listening(p, start + 10) for p in ports + [shellac_port]):
        print("origins or shellac did not start; log:", log_path)
        return 1

    deadline = start + args.duration
    stats = Stats()
    threads = [
        threading.Thread(target=worker, args=(("127.0.0.1", shellac_port), stats, deadline, i))
        for i in range(args.workers)
    ]
    for t in threads:
        t.start()

    print("t(s)  req/10s  503  5xx_cached  errors                      rss_kib  fds")
    next_report = start + 10
    next_kill = start + 20
    next_reload = start + 15
    reloads = 0
    restart_at = None
    while time.time() < deadline:
        now = time.time()
        if now >= next_kill:
            origins[0].kill()
            origins[0].wait()
            restart_at = now + 5
            next_kill += 20
        if restart_at is not None and now >= restart_at:
            origins[0] = start_origin(ports[0])
            restart_at = None
        if now >= next_reload:
            # A reload every 30 s (the file is unchanged: the same backends
            # carry over with their pools; the point is that nothing breaks).
            shellac.send_signal(signal.SIGHUP)
            reloads += 1
            next_reload += 30
        if now >= next_report:
            window = stats.take_window()
            errors = {k: v for k, v in window.items() if k.startswith("error_")}
            rss, fds = proc_figures(shellac.pid)
            print("%4d  %7d  %4d  %10d  %-26s  %7d  %4d" % (
                now - start, window["requests"], window["http_503"],
                window["5xx_on_cached"], dict(errors) or "-", rss, fds), flush=True)
            next_report += 10
        time.sleep(0.1)

    for t in threads:
        t.join(timeout=15)
    shellac.send_signal(signal.SIGTERM)
    try:
        shellac.wait(timeout=40)
    except subprocess.TimeoutExpired:
        shellac.kill()
    for o in origins:
        o.kill()
    log.close()
    with open(log_path) as f:
        panics = sum(1 for line in f if "panicked" in line)
    total = stats.total
    print("total: requests=%d purges=%d reloads=%d 503=%d 5xx_on_cached=%d errors=%s panics=%d exit=%s" % (
        total["requests"], total["purges"], reloads, total["http_503"], total["5xx_on_cached"],
        {k: v for k, v in total.items() if k.startswith("error_")} or "-",
        panics, shellac.returncode))
    print("log:", log_path)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "origin":
        run_origin(int(sys.argv[2]), float(sys.argv[3]))
    else:
        sys.exit(main())
