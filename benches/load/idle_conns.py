#!/usr/bin/env python3
"""Idle keep-alive connections: what N open, idle client connections cost a proxy.

    idle_conns.py NAME URL PID [--conns 10000] [--hold 3] [--path /obj/1k]

Opens N connections to the proxy at URL (a few hundred at a time), sends one
keep-alive `GET path` on each and reads the response, so every connection
is a real, served keep-alive connection; then holds them all idle for
--hold seconds and reads the resident memory (VmRSS, summed over PID and its
children, from /proc) before the first connection and while all are open.
The proxy's idle timeout must be longer than the time this takes (the load
harness's shellac.toml sets `timeout_idle` and `header_timeout` to 300 s).

Needs `ulimit -n` above N (the harness raises it).
Prints one CSV line:
    system,conns_wanted,conns_open,rss_before_kb,rss_open_kb,delta_kb,kb_per_conn
"""
import argparse
import asyncio
import os
import sys
from urllib.parse import urlsplit


def tree(pid):
    out = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            for c in f.read().split():
                out += tree(int(c))
    except OSError:
        pass
    return out


def rss_kb(pid):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


async def open_one(host, port, path, conns):
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 20)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await asyncio.wait_for(reader.readexactly(length), 20)
        if b" 200 " not in head.split(b"\r\n", 1)[0] + b" ":
            writer.close()
            return
        conns.append((reader, writer))
    except Exception:  # noqa: BLE001 - counted as not open
        return


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("url")
    ap.add_argument("pid", type=int)
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--hold", type=float, default=3)
    ap.add_argument("--path", default="/obj/1k")
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args()
    u = urlsplit(args.url)
    before = rss_kb(args.pid)
    conns = []
    for start in range(0, args.conns, args.batch):
        n = min(args.batch, args.conns - start)
        await asyncio.gather(*(open_one(u.hostname, u.port, args.path, conns) for _ in range(n)))
    await asyncio.sleep(args.hold)
    # Still open? A closed connection reads EOF at once.
    alive = 0
    for reader, _ in conns:
        if not reader.at_eof():
            alive += 1
    during = rss_kb(args.pid)
    for _, writer in conns:
        writer.close()
    delta = during - before
    per = delta / alive if alive else 0
    print(f"{args.name},{args.conns},{alive},{before},{during},{delta},{per:.1f}")
    if alive < args.conns:
        print(f"#   {args.name}: only {alive} of {args.conns} connections stayed open", file=sys.stderr)
    os._exit(0)  # do not wait for 10,000 closes to be acknowledged


if __name__ == "__main__":
    asyncio.run(main())
