#!/usr/bin/env python3
"""The origin of the hit-ratio replay: a small CMS-shaped site on loopback.

    origin.py [--port 18180] [--gzip]

The site (every body is deterministic, generated once at start):

  /page/1 .. /page/200        text/html, 5-20 KB, Cache-Control: max-age=300,
                              Vary: Accept-Encoding, ETag, Last-Modified.
                              A request carrying a `sessionid` cookie (a
                              logged-in user) gets `Cache-Control: private,
                              no-cache` instead: the page is personal.
                              Every 20th page (/page/20, /page/40, ...) holds
                              a form and sets a `csrftoken` cookie on every
                              answer, as Django and most CMSs do: those ten
                              pages can be cached by nobody.
  /static/css/N.css           100 files each of css, js, png and woff2
  /static/js/N.js             (N = 1..100), Cache-Control: max-age=3600,
  /static/img/N.png           ETag, Last-Modified; css and js also carry
  /static/font/N.woff2        Vary: Accept-Encoding (as nginx's gzip_vary).

Anything else is a 404 (counted too). No answer sets cookies except the
form pages; the statics never do.

Compression: by default the origin does NOT compress (like most app servers
behind a proxy), whatever the request's Accept-Encoding. With --gzip it
answers `Content-Encoding: gzip` to a request whose Accept-Encoding accepts
gzip, for html/css/js bodies (png and woff2 are already compressed).

Counting: every request except the two below is counted.
  GET /__count    {"requests": n, "pages": n, "static": n, "other": n}
  POST /__reset   zeroes the counters (answers the counts before the reset)

Python standard library only; listens on 127.0.0.1 only.
"""

import argparse
import email.utils
import gzip
import json
import random
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAGES = 200
STATIC_PER_KIND = 100
FORM_EVERY = 20
# One fixed modification date, so Last-Modified and ETag never change.
LAST_MODIFIED = email.utils.formatdate(1_700_000_000, usegmt=True)

STATIC_KINDS = {
    # kind: (folder, extension, content type, min size, max size, Vary?)
    "css": ("css", "css", "text/css; charset=utf-8", 2_000, 40_000, True),
    "js": ("js", "js", "application/javascript; charset=utf-8", 5_000, 120_000, True),
    "png": ("img", "png", "image/png", 1_000, 80_000, False),
    "woff2": ("font", "woff2", "font/woff2", 15_000, 60_000, False),
}

WORDS = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod "
    "tempor incididunt ut labore et dolore magna aliqua enim ad minim veniam "
    "quis nostrud exercitation ullamco laboris nisi aliquip ex ea commodo"
).split()


def text_body(rng, size, head, line):
    """Text of exactly `size` bytes: `head`, then lines of random words."""
    parts = [head]
    length = len(head)
    while length < size:
        chunk = line(" ".join(rng.choice(WORDS) for _ in range(12)))
        parts.append(chunk)
        length += len(chunk)
    return "".join(parts).encode()[:size]


def build_site():
    """Every object of the site, keyed by path: (content type, body, vary, form)."""
    rng = random.Random(18)
    site = {}
    for n in range(1, PAGES + 1):
        size = rng.randint(5_000, 20_000)
        head = (
            f"<!doctype html><html><head><title>Page {n}</title>"
            f'<link rel="stylesheet" href="/static/css/{n % 100 + 1}.css">'
            f'<script src="/static/js/{n % 100 + 1}.js"></script></head><body>\n'
        )
        body = text_body(rng, size, head, lambda words: f"<p>{words}</p>\n")
        site[f"/page/{n}"] = ("text/html; charset=utf-8", body, True, n % FORM_EVERY == 0)
    for folder, ext, ctype, low, high, vary in STATIC_KINDS.values():
        for n in range(1, STATIC_PER_KIND + 1):
            size = rng.randint(low, high)
            if ctype.startswith("text/") or "javascript" in ctype:
                body = text_body(rng, size, f"/* {folder}/{n} */\n", lambda w: f"/* {w} */\n")
            else:
                body = rng.randbytes(size)
            site[f"/static/{folder}/{n}.{ext}"] = (ctype, body, vary, False)
    return site


def accepts_gzip(header):
    """Whether an Accept-Encoding value accepts gzip (q=0 refuses)."""
    for item in header.split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() in ("gzip", "x-gzip", "*"):
            q = params.strip()
            return not (q.startswith("q=") and float(q[2:] or "0") == 0)
    return False


def cookie_names(header):
    return {part.split("=", 1)[0].strip() for part in header.split(";") if part.strip()}


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.values = {"requests": 0, "pages": 0, "static": 0, "other": 0}

    def bump(self, kind):
        with self.lock:
            self.values["requests"] += 1
            self.values[kind] += 1

    def snapshot(self, reset=False):
        with self.lock:
            copy = dict(self.values)
            if reset:
                for key in self.values:
                    self.values[key] = 0
            return copy


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are two writes: without TCP_NODELAY, Nagle and the
    # client's delayed ACK would hold every answer 40 ms.
    disable_nagle_algorithm = True
    server_version = "ReplayOrigin/1.0"
    site = {}
    gzipped = {}
    counts = Counts()
    compress = False

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def send_json(self, value):
        body = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path == "/__reset":
            self.send_json(self.counts.snapshot(reset=True))
            return
        self.counts.bump("other")
        self.send_error(405)

    def do_HEAD(self):
        self.answer(head=True)

    def do_GET(self):
        if self.path == "/__count":
            self.send_json(self.counts.snapshot())
            return
        self.answer(head=False)

    def answer(self, head):
        path = self.path.split("?", 1)[0]
        entry = self.site.get(path)
        kind = "pages" if path.startswith("/page/") else "static" if path.startswith("/static/") else "other"
        self.counts.bump(kind if entry else "other")
        if entry is None:
            body = b"not found\n"
            self.send_response(404)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "max-age=60")
            self.end_headers()
            if not head:
                self.wfile.write(body)
            return
        ctype, body, vary, form = entry
        cookies = cookie_names(self.headers.get("Cookie", ""))
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Last-Modified", LAST_MODIFIED)
        etag = f"{zlib.crc32(body):08x}"
        if kind == "pages":
            self.send_header("X-Powered-By", "ReplayCMS")
            if "sessionid" in cookies:
                self.send_header("Cache-Control", "private, no-cache")
            else:
                self.send_header("Cache-Control", "max-age=300")
            if form:
                token = "%032x" % random.getrandbits(128)
                self.send_header("Set-Cookie", f"csrftoken={token}; Path=/; SameSite=Lax")
        else:
            self.send_header("Cache-Control", "max-age=3600")
        if vary:
            self.send_header("Vary", "Accept-Encoding")
        if self.compress and path in self.gzipped and accepts_gzip(self.headers.get("Accept-Encoding", "")):
            body = self.gzipped[path]
            self.send_header("Content-Encoding", "gzip")
            etag += "-gzip"
        self.send_header("ETag", f'"{etag}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=18180)
    parser.add_argument("--gzip", action="store_true", help="compress html/css/js for clients that accept gzip")
    args = parser.parse_args()
    Handler.site = build_site()
    Handler.compress = args.gzip
    if args.gzip:
        Handler.gzipped = {
            path: gzip.compress(body, compresslevel=6, mtime=0)
            for path, (ctype, body, _vary, _form) in Handler.site.items()
            if ctype.startswith("text/") or "javascript" in ctype
        }
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"origin: 127.0.0.1:{args.port}, {len(Handler.site)} objects, gzip={'on' if args.gzip else 'off'}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
