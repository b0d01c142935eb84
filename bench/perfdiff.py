#!/usr/bin/env python3
"""What build B spends per request against build A, by symbol, from the
`perf record` files `PERF_DIR=dir bench/ab.sh …` leaves: each run's samples
divided by the requests wrk counted in it (warm-up runs skipped). Samples
are taken at 1999 Hz, so one sample stands for ~500 µs of CPU.

    bench/perfdiff.py DIR [N]    # the N symbols that grew most (40)
"""

import collections
import re
import subprocess
import sys

SAMPLE_US = 1e6 / 1999


def main():
    d, top = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 40
    runs = [line.split() for line in open(f"{d}/counts")]
    by_sym = {"a": collections.Counter(), "b": collections.Counter()}
    by_dso = {"a": collections.Counter(), "b": collections.Counter()}
    reqs = {"a": 0, "b": 0}
    for path, n in runs[2:]:  # the first A and B runs are the warm-up
        side = path.rsplit("/", 1)[-1][0]
        reqs[side] += int(n)
        out = subprocess.run(
            ["perf", "script", "-i", path + ".data", "-F", "ip,sym,dso"],
            capture_output=True, text=True,
        ).stdout
        for line in out.splitlines():
            m = re.match(r"\s*\S+\s+(.*)\s+\((.*)\)$", line)
            if m:
                by_sym[side][m.group(1).split("+0x")[0]] += 1
                by_dso[side][m.group(2).rsplit("/", 1)[-1]] += 1

    def per_req(side, count):
        return count * SAMPLE_US / max(reqs[side], 1)

    for side in "ab":
        total = per_req(side, sum(by_sym[side].values()))
        dsos = {k: round(per_req(side, v), 2) for k, v in by_dso[side].most_common(4)}
        print(f"{side.upper()}: {reqs[side]} requests, {total:.1f} µs per request {dsos}")
    rows = sorted(
        ((per_req("b", by_sym["b"][k]) - per_req("a", by_sym["a"][k]), k)
         for k in set(by_sym["a"]) | set(by_sym["b"])),
    )
    print("µs per request, B − A (A, B): B more")
    for delta, k in rows[::-1][:top]:
        print(f"{delta:+.3f} ({per_req('a', by_sym['a'][k]):.3f}, {per_req('b', by_sym['b'][k]):.3f}) {k[:110]}")
    print("B less")
    for delta, k in rows[:15]:
        print(f"{delta:+.3f} ({per_req('a', by_sym['a'][k]):.3f}, {per_req('b', by_sym['b'][k]):.3f}) {k[:110]}")


if __name__ == "__main__":
    main()
