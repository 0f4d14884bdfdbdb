#!/usr/bin/env python3
"""A slow, counting origin for the coalescing burst (asyncio, stdlib only).

    slow_origin.py [--port 8081] [--delay 1.0] [--pidfile FILE]

GET /burst/<anything>  sleeps --delay seconds, then answers 200 with 1 KiB and
                       `Cache-Control: public, max-age=3600` (cacheable), and
                       counts the request under its path.
GET /count/<anything>  answers the number of requests /burst/<anything> got
                       (plain text), without sleeping and without counting.
GET /health            "ok".

HTTP/1.1 with keep-alive (proxies pool their backend connections); GET and
HEAD only, no request bodies. Never put it behind anything but loopback.
"""
import argparse
import asyncio
import collections
import os

BODY = b"b" * 1024
counts = collections.Counter()
DELAY = 1.0


def response(status, body, extra=b""):
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"Content-Type: text/plain\r\n" + extra + b"\r\n" + body
    )


async def handle(reader, writer):
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            line = head.split(b"\r\n", 1)[0].split(b" ")
            if len(line) < 2:
                return
            method, target = line[0], line[1].decode("latin-1")
            path = target.split("?", 1)[0]
            close = b"\r\nconnection: close" in head.lower()
            if path.startswith("/burst/"):
                counts[path] += 1
                await asyncio.sleep(DELAY)
                out = response(b"200 OK", BODY, b"Cache-Control: public, max-age=3600\r\n")
            elif path.startswith("/count/"):
                n = counts["/burst/" + path[len("/count/"):]]
                out = response(b"200 OK", f"{n}\n".encode(), b"Cache-Control: no-store\r\n")
            elif path == "/health":
                out = response(b"200 OK", b"ok\n", b"Cache-Control: no-store\r\n")
            else:
                out = response(b"404 Not Found", b"not found\n")
            if method == b"HEAD":
                out = out[: out.index(b"\r\n\r\n") + 4]
            writer.write(out)
            await writer.drain()
            if close:
                return
    finally:
        writer.close()


async def main():
    global DELAY
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8081)
    ap.add_argument("--delay", type=float, default=1.0)
    ap.add_argument("--pidfile")
    args = ap.parse_args()
    DELAY = args.delay
    server = await asyncio.start_server(handle, "127.0.0.1", args.port, backlog=4096)
    if args.pidfile:
        with open(args.pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
