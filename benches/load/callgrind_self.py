#!/usr/bin/env python3
"""Self cost per request, by crate and by function, from a callgrind file.

usage: callgrind_self.py CALLGRIND_OUT REQUESTS [TOP]

callgrind_annotate's exclusive listing folds inlined code into the wrong
functions for Rust binaries; this reads the file itself: a cost line belongs
to the function above it unless it follows a `calls=` line (then it is the
callee's inclusive cost). It also counts calls to malloc and to the clock,
two things the hot paths should do rarely.
"""
import collections
import re
import sys


def main():
    path, n = sys.argv[1], int(sys.argv[2])
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 25
    names, own, calls = {}, collections.Counter(), collections.Counter()
    cur = ob = cfn = None
    after_calls = False

    def name(kind, rest):
        m = re.match(r"\((\d+)\)(?: (.*))?", rest)
        if not m:
            return rest
        if m.group(2) is not None:
            names[(kind, m.group(1))] = m.group(2)
        return names.get((kind, m.group(1)), "?")

    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        if not line:
            continue
        key, _, rest = line.partition("=")
        if key == "fn":
            cur = (ob, name("fn", rest))
        elif key == "ob":
            ob = name("ob", rest)
        elif key == "cfn":
            cfn = name("fn", rest)
        elif key in ("cob",):
            name("ob", rest)
        elif key in ("fl", "fi", "fe", "cfi", "cfl"):
            name("fl", rest)
        elif key == "calls":
            calls[cfn] += int(rest.split()[0])
            after_calls = True
        elif line[0].isdigit() or line[0] in "+-*":
            parts = line.split()
            if after_calls:
                after_calls = False
            elif len(parts) >= 2 and cur is not None:
                own[cur] += int(parts[1])

    total = sum(own.values())
    print(f"instructions/request: {total // n:,}")
    print(f"malloc calls/request: {calls.get('malloc', 0) / n:.1f}")
    clock = sum(c for f, c in calls.items() if f and "Timespec>::now" in f)
    print(f"clock reads/request:  {clock / n:.1f}")

    def crate(ob, fn):
        if "libc" in (ob or ""):
            if re.search(r"malloc|free|_int_|unlink_chunk|consolidate|memalign", fn):
                return "libc: malloc/free"
            return "libc: memcpy/memmove" if "mem" in fn else "libc: " + fn[:30]
        m = re.match(r"[<&]*(?:dyn )?([a-z_][a-z0-9_]*)::", fn)
        return m.group(1) if m else fn[:40]

    by_crate = collections.Counter()
    for (ob, fn), v in own.items():
        by_crate[crate(ob, fn)] += v
    print("\nself cost by crate (instructions/request, share):")
    for k, v in by_crate.most_common(16):
        print(f"{v // n:8,}  {100 * v / total:5.1f} %  {k}")
    print(f"\ntop {top} functions:")
    for (ob, fn), v in own.most_common(top):
        print(f"{v // n:8,}  {fn[:140]}")


if __name__ == "__main__":
    main()
