#!/usr/bin/env python3
"""Coalescing burst: N concurrent first requests for one slow, uncached object.

    burst.py NAME URL [--clients 1000] [--origin http://127.0.0.1:8081] [--timeout 30]

Opens N connections to the proxy at URL, waits until all are connected,
then sends `GET /burst/<unique>` on every one at once (a barrier, so the
requests really are concurrent) and reads each response to its end. The
object is served by slow_origin.py (1 s per request, cacheable), behind the
proxy's /burst/ route. Afterwards it asks the origin how many requests
reached it for that path.

Prints one CSV line:
    system,clients,answered_200,other_status,errors,origin_requests,seconds
A proxy that coalesces well shows origin_requests=1 and answered_200=clients.
"""
import argparse
import asyncio
import collections
import sys
import time
import urllib.request
import uuid
from urllib.parse import urlsplit


async def one(host, port, path, barrier_event, connected, timeout):
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except Exception as e:  # noqa: BLE001 - reported as an error
        connected.append(False)
        return ("error", type(e).__name__)
    connected.append(True)
    try:
        await barrier_event.wait()
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        if length:
            await asyncio.wait_for(reader.readexactly(length), timeout)
        return ("status", status)
    except Exception as e:  # noqa: BLE001 - reported as an error
        return ("error", type(e).__name__)
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("url")
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--origin", default="http://127.0.0.1:8081")
    ap.add_argument("--timeout", type=float, default=30)
    args = ap.parse_args()
    u = urlsplit(args.url)
    tag = f"{args.name}-{uuid.uuid4().hex[:12]}"
    path = f"/burst/{tag}"
    go = asyncio.Event()
    connected = []
    tasks = [
        asyncio.create_task(one(u.hostname, u.port, path, go, connected, args.timeout))
        for _ in range(args.clients)
    ]
    deadline = time.monotonic() + args.timeout
    while len(connected) < args.clients and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    start = time.monotonic()
    go.set()
    results = await asyncio.gather(*tasks)
    elapsed = time.monotonic() - start
    statuses = collections.Counter(v for k, v in results if k == "status")
    errors = collections.Counter(v for k, v in results if k == "error")
    with urllib.request.urlopen(f"{args.origin}/count/{tag}", timeout=5) as r:
        origin_requests = int(r.read().strip())
    ok = statuses.pop(200, 0)
    other = sum(statuses.values())
    print(f"{args.name},{args.clients},{ok},{other},{sum(errors.values())},{origin_requests},{elapsed:.2f}")
    if statuses or errors:
        print(f"#   {args.name} burst: statuses={dict(statuses)} errors={dict(errors)}", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
