#!/usr/bin/env python3
"""Replay browser-shaped traffic at a caching proxy and measure its hit ratio.

    replay.py --url http://127.0.0.1:18181 --origin http://127.0.0.1:18180
              [--requests 20000] [--seed 18] [--concurrency 1] [--label NAME]
              [--json FILE]

The requests are generated up front from the seed, so every run with the
same seed sends exactly the same requests in the same order (with
--concurrency 1, the default, the figures are exactly reproducible; with
more threads, the order in which misses meet may change a few counts).

The traffic (the site is origin.py's: 200 pages, 400 static files):
  - 3,000 visitors, each with one browser for the whole run:
      Chrome  55 %  Accept-Encoding: gzip, deflate, br, zstd
      Safari  20 %  Accept-Encoding: gzip, deflate, br
      Firefox 10 %  Accept-Encoding: gzip, deflate, br, zstd
      old     5 %   Accept-Encoding: gzip, deflate
      bot     10 %  no Accept-Encoding, no cookies (curl, monitors, crawlers)
    and, for the browsers, analytics cookies of their own: `_ga` and `_gid`
    (every browser visitor), `_fbp` (60 %), a consent cookie (50 %), and a
    `sessionid` for 10 % of them (logged in). Cookie order is shuffled.
  - each request: a visitor at random; a page (40 %) or a static file
    (60 %); within each, Zipf popularity (s = 1) over a seeded shuffle.
  - 30 % of page requests carry 1 to 3 of utm_source, utm_medium,
    utm_campaign, gclid, fbclid, in random order, with random values.

Logged-in users are expected to pass (their pages are personal, and the
origin says `private`), but their static files need not: a rule that strips
cookies from static files caches those for everyone.

Reports: requests, origin requests (the origin's /__count before and after),
hit ratio = 1 - origin requests / requests, the share of answers whose
X-Cache (or Cache-Status) says HIT, and how many bodies were wrong: every
answer is checked against the origin's bytes (origin.build_site()), after
gunzip when it came gzip, and its Content-Encoding against what the client
accepts (a br body is only checked for that: the standard library has no
brotli). Exits 1 on a failed request or a wrong body. Python standard
library only.
"""

import argparse
import gzip
import http.client
import json
import queue
import random
import sys
import threading
import time
import urllib.parse
import urllib.request
import zlib

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
import origin as site_origin  # noqa: E402 - after the line above

PAGES = 200
STATIC = [
    f"/static/{folder}/{n}.{ext}"
    for folder, ext in (("css", "css"), ("js", "js"), ("img", "png"), ("font", "woff2"))
    for n in range(1, 101)
]
HOST = "www.example.com"

BROWSERS = [
    # name, share, Accept-Encoding (None: not sent), User-Agent
    ("chrome", 55, "gzip, deflate, br, zstd",
     "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"),
    ("safari", 20, "gzip, deflate, br",
     "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15"),
    ("firefox", 10, "gzip, deflate, br, zstd",
     "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"),
    ("old", 5, "gzip, deflate",
     "Mozilla/5.0 (Windows NT 6.1; Trident/7.0; rv:11.0) like Gecko"),
    ("bot", 10, None, "curl/8.5.0"),
]
VISITORS = 3_000
PAGE_SHARE = 0.40
UTM_SHARE = 0.30
MARKETING = ["utm_source", "utm_medium", "utm_campaign", "gclid", "fbclid"]
UTM_VALUES = {
    "utm_source": ["google", "facebook", "newsletter", "twitter", "linkedin"],
    "utm_medium": ["cpc", "email", "social", "display"],
    "utm_campaign": ["spring_sale", "launch", "black-friday", "weekly_48", "retarget"],
}
ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def zipf_cumulative(n, s=1.0):
    """Cumulative Zipf weights for ranks 1..n (for random.choices)."""
    total, cumulative = 0.0, []
    for rank in range(1, n + 1):
        total += 1.0 / (rank**s)
        cumulative.append(total)
    return cumulative


def make_visitor(rng):
    name, _share, encoding, agent = rng.choices(BROWSERS, weights=[b[1] for b in BROWSERS])[0]
    headers = {
        "Host": HOST,
        "User-Agent": agent,
        "Accept-Language": rng.choice(["en-US,en;q=0.9", "fr-FR,fr;q=0.9,en;q=0.8", "de-DE,de;q=0.9"]),
    }
    if encoding is not None:
        headers["Accept-Encoding"] = encoding
    if name != "bot":
        stamp = rng.randint(1_700_000_000, 1_733_000_000)
        cookies = [
            f"_ga=GA1.2.{rng.randint(10**8, 10**10)}.{stamp}",
            f"_gid=GA1.2.{rng.randint(10**8, 10**10)}.{stamp + rng.randint(0, 10**6)}",
        ]
        if rng.random() < 0.60:
            cookies.append(f"_fbp=fb.1.{stamp}{rng.randint(100, 999)}.{rng.randint(10**8, 10**10)}")
        if rng.random() < 0.50:
            cookies.append("cookieconsent_status=allow")
        if rng.random() < 0.10:
            cookies.append("sessionid=" + "".join(rng.choice(ALNUM[:36]) for _ in range(32)))
        rng.shuffle(cookies)
        headers["Cookie"] = "; ".join(cookies)
    return headers


def marketing_query(rng):
    names = rng.sample(MARKETING, rng.randint(1, 3))
    pairs = []
    for name in names:
        if name in UTM_VALUES:
            pairs.append((name, rng.choice(UTM_VALUES[name])))
        else:
            pairs.append((name, "".join(rng.choice(ALNUM) for _ in range(24))))
    return urllib.parse.urlencode(pairs)


def generate(count, seed):
    """The request list: [(kind, target, headers)], the same for one seed."""
    rng = random.Random(seed)
    visitors = [make_visitor(rng) for _ in range(VISITORS)]
    pages = [f"/page/{n}" for n in range(1, PAGES + 1)]
    statics = list(STATIC)
    rng.shuffle(pages)
    rng.shuffle(statics)
    page_weights = zipf_cumulative(len(pages))
    static_weights = zipf_cumulative(len(statics))
    requests = []
    for _ in range(count):
        headers = rng.choice(visitors)
        if rng.random() < PAGE_SHARE:
            target = rng.choices(pages, cum_weights=page_weights)[0]
            if rng.random() < UTM_SHARE:
                target += "?" + marketing_query(rng)
            requests.append(("page", target, headers))
        else:
            requests.append(("static", rng.choices(statics, cum_weights=static_weights)[0], headers))
    return requests


def origin_count(origin):
    with urllib.request.urlopen(origin.rstrip("/") + "/__count", timeout=10) as answer:
        return json.load(answer)


def cache_verdict(response):
    """HIT, MISS, PASS, ... from X-Cache, else from Cache-Status, else '?'."""
    x_cache = response.getheader("X-Cache")
    if x_cache:
        return x_cache.split(",")[0].strip().upper()
    status = response.getheader("Cache-Status")
    if status:
        return "HIT" if "; hit" in status.lower() else "MISS"
    return "?"


def accepted(encoding, header):
    """Whether the client's Accept-Encoding allows this content coding."""
    if encoding in (None, "", "identity"):
        return True
    names = {item.split(";")[0].strip().lower() for item in (header or "").split(",")}
    return encoding in names


def check_body(site, target, headers, response, body):
    """'ok', 'wrong' (not the origin's bytes, or a coding the client refused)
    or 'br' (a brotli body the standard library cannot decode: only its
    coding is checked)."""
    expected = site.get(target.split("?", 1)[0])
    encoding = (response.getheader("Content-Encoding") or "").strip().lower() or None
    if expected is None or not accepted(encoding, headers.get("Accept-Encoding")):
        return "wrong"
    if encoding == "br":
        return "br"
    if encoding == "gzip":
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError, zlib.error):
            return "wrong"
    elif encoding is not None:
        return "wrong"
    return "ok" if body == expected[1] else "wrong"


def worker(base, site, jobs, results, lock):
    parsed = urllib.parse.urlsplit(base)
    conn = None
    local = {"errors": 0, "status": {}, "verdict": {}, "body": {}}
    while True:
        job = jobs.get()
        if job is None:
            break
        _kind, target, headers = job
        for attempt in range(2):
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
                conn.request("GET", target, headers=headers)
                response = conn.getresponse()
                body = response.read()
                check = check_body(site, target, headers, response, body)
                local["body"][check] = local["body"].get(check, 0) + 1
                local["status"][response.status] = local["status"].get(response.status, 0) + 1
                verdict = cache_verdict(response)
                local["verdict"][verdict] = local["verdict"].get(verdict, 0) + 1
                if response.will_close:
                    conn.close()
                    conn = None
                break
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
                if attempt == 1:
                    local["errors"] += 1
    if conn is not None:
        conn.close()
    with lock:
        results["errors"] += local["errors"]
        for field in ("status", "verdict", "body"):
            for key, value in local[field].items():
                results[field][key] = results[field].get(key, 0) + value


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="the proxy, e.g. http://127.0.0.1:18181")
    parser.add_argument("--origin", required=True, help="the origin, for its /__count")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--label", default="proxy")
    parser.add_argument("--json", help="append the result as one JSON line to this file")
    args = parser.parse_args()
    if not 1 <= args.requests <= 1_000_000 or not 1 <= args.concurrency <= 64:
        parser.error("--requests must be 1..1000000 and --concurrency 1..64")

    requests = generate(args.requests, args.seed)
    before = origin_count(args.origin)
    started = time.monotonic()
    jobs = queue.Queue()
    results = {"errors": 0, "status": {}, "verdict": {}, "body": {}}
    lock = threading.Lock()
    site = site_origin.build_site()
    threads = [
        threading.Thread(target=worker, args=(args.url, site, jobs, results, lock)) for _ in range(args.concurrency)
    ]
    for thread in threads:
        thread.start()
    for job in requests:
        jobs.put(job)
    for _ in threads:
        jobs.put(None)
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    after = origin_count(args.origin)

    origin = after["requests"] - before["requests"]
    sent = len(requests)
    hits = sum(v for k, v in results["verdict"].items() if k.startswith("HIT"))
    result = {
        "label": args.label,
        "requests": sent,
        "page_requests": sum(1 for r in requests if r[0] == "page"),
        "origin_requests": origin,
        "origin_pages": after["pages"] - before["pages"],
        "origin_static": after["static"] - before["static"],
        "hit_ratio": 1 - origin / sent,
        "hit_share": hits / sent,
        "verdict": results["verdict"],
        "status": {str(k): v for k, v in sorted(results["status"].items())},
        "bodies": results["body"],
        "wrong_bodies": results["body"].get("wrong", 0),
        "errors": results["errors"],
        "seconds": round(elapsed, 1),
        "seed": args.seed,
        "concurrency": args.concurrency,
    }
    print(
        f"{args.label}: {sent} requests, {origin} origin requests "
        f"(pages {result['origin_pages']}, static {result['origin_static']}), "
        f"hit ratio {result['hit_ratio']:.1%}, X-Cache HIT {result['hit_share']:.1%}, "
        f"verdicts {results['verdict']}, statuses {result['status']}, bodies {results['body']}, "
        f"errors {results['errors']}, "
        f"{elapsed:.1f} s",
        file=sys.stderr,
    )
    if args.json:
        with open(args.json, "a", encoding="utf-8") as out:
            out.write(json.dumps(result) + "\n")
    return 1 if results["errors"] or result["wrong_bodies"] else 0


if __name__ == "__main__":
    sys.exit(main())
