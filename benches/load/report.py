#!/usr/bin/env python3
"""Turn one load.sh run into the markdown section of docs/performance.md.

usage: report.py --wrk wrk.csv [--burst burst.csv] [--idle idle.csv] [--mem mem.csv]
                 [--meta meta.txt]   -> markdown on stdout

wrk.csv is bench-all.sh's raw CSV; every cell is the median over its runs.
Ratios are Shellac's median req/s over the other system's median req/s (and
the same for CPU per request, where lower is better). The targets are those
of issue 6; each line says met / NOT met with the figures it was judged on.
"""
import argparse
import csv
import statistics
from collections import defaultdict

SCEN = ["hit-1k", "hit-16k", "hit-128k", "hit-1m", "pass", "many-keys", "conn-churn"]
MIB = 1024 * 1024


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def read_csv(path):
    with open(path) as f:
        lines = [l for l in f if l.strip() and not l.startswith("#")]
    return list(csv.DictReader(lines))


def fmt(v, nd=0):
    return "-" if v is None else f"{v:,.{nd}f}"


def ratio(a, b, nd=2):
    return "-" if (a is None or not b) else f"{a / b:.{nd}f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wrk", required=True)
    ap.add_argument("--burst")
    ap.add_argument("--idle")
    ap.add_argument("--mem")
    ap.add_argument("--meta")
    args = ap.parse_args()

    groups = defaultdict(list)
    pins, scens = [], []
    for r in read_csv(args.wrk):
        if r.get("rps") in (None, "FAILED"):
            continue
        groups[(r["pin"], r["scenario"], r["system"])].append(r)
        for lst, v in ((pins, r["pin"]), (scens, r["scenario"])):
            if v not in lst:
                lst.append(v)
    scens.sort(key=lambda s: SCEN.index(s) if s in SCEN else 99)

    def med(pin, sc, system, col):
        vals = [num(r[col]) for r in groups.get((pin, sc, system), []) if num(r[col]) is not None]
        return statistics.median(vals) if vals else None

    def n_runs(pin, sc, system):
        return len(groups.get((pin, sc, system), []))

    out = []
    if args.meta:
        with open(args.meta) as f:
            out.append(f.read().rstrip())
    targets = []
    for pin in pins:
        n = max(n_runs(pin, sc, "shellac") for sc in scens)
        out.append(f"\n#### PIN={pin}: req/s, median of {n} interleaved runs (p99 ms in brackets)\n")
        out.append("| scenario | shellac | varnish | nginx | direct | shellac/varnish | shellac/nginx | shellac/direct |")
        out.append("|---|---|---|---|---|---|---|---|")
        for sc in scens:
            cells, r = [], {}
            for s in ("shellac", "varnish", "nginx", "direct"):
                rps = med(pin, sc, s, "rps")
                r[s] = rps
                cells.append("-" if rps is None else f"{fmt(rps)} ({fmt(med(pin, sc, s, 'p99_ms'), 1)})")
            nginx_ref, mark = r["nginx"], ""
            if sc == "pass" and med(pin, sc, "nginx-nolock", "rps"):
                # The target is nginx without the cache lock: with it, nginx serialises /slow.
                nginx_ref = med(pin, sc, "nginx-nolock", "rps")
                cells[2] += f" / nolock {fmt(nginx_ref)} ({fmt(med(pin, sc, 'nginx-nolock', 'p99_ms'), 1)})"
                mark = " (nolock)"
            if sc == "pass" and med(pin, sc, "bare-hyper", "rps"):
                # The bare hyper proxy (benches/bare_proxy.rs): the floor of a tokio + hyper proxy.
                cells[3] += f" / bare hyper {fmt(med(pin, sc, 'bare-hyper', 'rps'))} ({fmt(med(pin, sc, 'bare-hyper', 'p99_ms'), 1)})"
            out.append(f"| {sc} | " + " | ".join(cells) + f" | {ratio(r['shellac'], r['varnish'])} | "
                       f"{ratio(r['shellac'], nginx_ref)}{mark} | {ratio(r['shellac'], r['direct'])} |")

        out.append(f"\n#### PIN={pin}: server CPU µs per request (median; lower is better), origin CPU µs/request, `cpu_busy_pct` client/server\n")
        out.append("| scenario | shellac | varnish | nginx | direct | shellac/varnish | shellac origin µs/req | shellac busy % (cpu0/cpu1) |")
        out.append("|---|---|---|---|---|---|---|---|")
        for sc in scens:
            c = {s: med(pin, sc, s, "srv_cpu_us_req") for s in ("shellac", "varnish", "nginx", "direct")}
            if sc == "pass" and med(pin, sc, "nginx-nolock", "srv_cpu_us_req") is not None:
                c_n = f"{fmt(c['nginx'], 1)} / nolock {fmt(med(pin, sc, 'nginx-nolock', 'srv_cpu_us_req'), 1)}"
            else:
                c_n = fmt(c["nginx"], 1)
            c_d = fmt(c["direct"], 1)
            if sc == "pass" and med(pin, sc, "bare-hyper", "srv_cpu_us_req") is not None:
                c_d += f" / bare hyper {fmt(med(pin, sc, 'bare-hyper', 'srv_cpu_us_req'), 1)}"
            busy = sorted(r["cpu_busy_pct"] for r in groups.get((pin, sc, "shellac"), []))
            out.append(f"| {sc} | {fmt(c['shellac'], 1)} | {fmt(c['varnish'], 1)} | {c_n} | {c_d} | "
                       f"{ratio(c['shellac'], c['varnish'])} | {fmt(med(pin, sc, 'shellac', 'origin_cpu_us_req'), 1)} | "
                       f"{', '.join(busy) or '-'} |")

        errs = [(k, sum(int(num(x["errors"]) or 0) for x in v)) for k, v in groups.items() if k[0] == pin]
        errs = [f"{k[2]}/{k[1]}={e}" for k, e in errs if e]
        if errs:
            out.append("\nwrk errors (sum over runs): " + ", ".join(sorted(errs)))

        # Targets of issue 6, judged on this pin mode's medians.
        def rps(sc, s):
            return med(pin, sc, s, "rps")

        def check(name, ok, text):
            targets.append((pin, name, "met" if ok else "**NOT met**", text))

        s, d, v = rps("hit-1k", "shellac"), rps("hit-1k", "direct"), rps("hit-1k", "varnish")
        if s and d:
            check("hit 1 KiB ≥ 0.8 × origin", s / d >= 0.8, f"{s / d:.2f} × origin ({s / v:.2f} × Varnish)" if v else f"{s / d:.2f}")
        p_s, p_v = med(pin, "hit-1k", "shellac", "p99_ms"), med(pin, "hit-1k", "varnish", "p99_ms")
        if p_s is not None and p_v is not None:
            check("hit 1 KiB p99 ≤ Varnish's", p_s <= p_v, f"{p_s:.1f} ms vs {p_v:.1f} ms")
        c_s, c_v = med(pin, "hit-1k", "shellac", "srv_cpu_us_req"), med(pin, "hit-1k", "varnish", "srv_cpu_us_req")
        if c_s and c_v:
            check("hit 1 KiB CPU/req ≤ 0.6 × Varnish's", c_s <= 0.6 * c_v, f"{c_s:.1f} vs {c_v:.1f} µs ({c_s / c_v:.2f} ×)")
        for sc in ("hit-128k", "hit-1m"):
            s, v, n = rps(sc, "shellac"), rps(sc, "varnish"), rps(sc, "nginx")
            if s and v and n:
                cs, cv = med(pin, sc, "shellac", "srv_cpu_us_req"), med(pin, sc, "varnish", "srv_cpu_us_req")
                extra = f"; CPU/req {cs:.0f} vs Varnish {cv:.0f} µs" if cs and cv else ""
                check(f"{sc} ≥ 1.0 × Varnish and nginx", s >= v and s >= n,
                      f"{s / v:.2f} × Varnish, {s / n:.2f} × nginx{extra}")
        s, v, n = rps("pass", "shellac"), rps("pass", "varnish"), rps("pass", "nginx-nolock")
        if s and v and n:
            b = rps("pass", "bare-hyper")
            floor = f"; the bare hyper proxy: {b / n:.2f} × nginx-nolock, Shellac {s / b:.2f} × it" if b else ""
            check("pass ≥ 1.0 × nginx (no lock) and ≥ 4 × Varnish", s >= n and s >= 4 * v,
                  f"{s / n:.2f} × nginx-nolock, {s / v:.2f} × Varnish{floor}")
        s, d = rps("many-keys", "shellac"), rps("many-keys", "direct")
        if s and d:
            check("10,000 keys ≥ 0.65 × origin", s / d >= 0.65, f"{s / d:.2f} × origin")
        s, n = rps("conn-churn", "shellac"), rps("conn-churn", "nginx")
        if s and n:
            check("connection churn ≥ 1.0 × nginx", s >= n, f"{s / n:.2f} × nginx")

    if args.burst:
        rows = read_csv(args.burst)
        out.append("\n#### Coalescing burst: 1,000 concurrent first requests for one slow (1 s) cacheable object\n")
        out.append("| system | runs | answered 200 (each run) | other status | errors | origin requests (each run) | seconds (median) |")
        out.append("|---|---|---|---|---|---|---|")
        by = defaultdict(list)
        for r in rows:
            by[r["system"]].append(r)
        for s, rs in by.items():
            out.append(f"| {s} | {len(rs)} | {', '.join(r['answered_200'] for r in rs)} | "
                       f"{sum(int(r['other_status']) for r in rs)} | {sum(int(r['errors']) for r in rs)} | "
                       f"{', '.join(r['origin_requests'] for r in rs)} | "
                       f"{statistics.median(float(r['seconds']) for r in rs):.2f} |")
        rs = by.get("shellac", [])
        if rs:
            ok = all(r["origin_requests"] == "1" and r["answered_200"] == r["clients"] for r in rs)
            targets.append(("-", "burst: exactly 1 origin request, all 1,000 answered", "met" if ok else "**NOT met**",
                            "origin requests " + ", ".join(r["origin_requests"] for r in rs) +
                            "; answered " + ", ".join(r["answered_200"] for r in rs)))

    if args.mem:
        rows = read_csv(args.mem)
        out.append("\n#### Memory after 10,000 keys (fresh Shellac, each key fetched once)\n")
        out.append("| RSS at start | RSS after | stored bodies | weigher's bytes (`shellac_cache_bytes`) | objects | limit 1.5 × bodies + 30 MiB |")
        out.append("|---|---|---|---|---|---|")
        for r in rows:
            rss1, body = int(r["rss_after_kb"]) * 1024, int(r["body_bytes"])
            limit = 1.5 * body + 30 * MIB
            out.append(f"| {int(r['rss_start_kb']) / 1024:.1f} MiB | {rss1 / MIB:.1f} MiB | {body / MIB:.1f} MiB | "
                       f"{int(r['cache_bytes']) / MIB:.1f} MiB | {r['objects']} | {limit / MIB:.1f} MiB |")
            targets.append(("-", "10,000 keys: RSS ≤ 1.5 × stored bytes + 30 MiB", "met" if rss1 <= limit else "**NOT met**",
                            f"{rss1 / MIB:.1f} MiB ≤ {limit / MIB:.1f} MiB" if rss1 <= limit else f"{rss1 / MIB:.1f} MiB > {limit / MIB:.1f} MiB"))

    if args.idle:
        rows = read_csv(args.idle)
        out.append("\n#### Idle keep-alive connections (each served one request, then held idle)\n")
        out.append("| system | wanted | open | RSS before | RSS with all open | per connection |")
        out.append("|---|---|---|---|---|---|")
        for r in rows:
            out.append(f"| {r['system']} | {r['conns_wanted']} | {r['conns_open']} | {int(r['rss_before_kb']) / 1024:.1f} MiB | "
                       f"{int(r['rss_open_kb']) / 1024:.1f} MiB | {float(r['kb_per_conn']):.1f} KiB |")
            if r["system"] == "shellac":
                rss = int(r["rss_open_kb"]) / 1024
                ok = rss < 200 and r["conns_open"] == r["conns_wanted"]
                targets.append(("-", "10,000 idle keep-alive connections < 200 MiB RSS", "met" if ok else "**NOT met**",
                                f"{r['conns_open']} open, {rss:.1f} MiB"))

    if targets:
        out.append("\n#### Targets (issue 6)\n")
        out.append("| pin | target | result | measured |")
        out.append("|---|---|---|---|")
        for pin, name, res, text in targets:
            out.append(f"| {pin} | {name} | {res} | {text} |")
    print("\n".join(out))


if __name__ == "__main__":
    main()
