#!/usr/bin/env python3
"""CPU per request by thread name, for ab.sh's THREADS=1.

  threads.py snap PID            one line per thread: name utime stime (ticks)
  threads.py diff BEFORE AFTER N  µs per request by thread name (user+system)

Names are cut to 15 characters by the kernel, so all actix arbiters read
"actix-rt|system": they are told apart by their order of creation (#1 is
the first started). Pools whose threads come and go (tokio's blocking
threads) are summed under their name.
"""
import os, re, sys

def snap(pid):
    seen = {}
    for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
        try:
            stat = open(f"/proc/{pid}/task/{tid}/stat").read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        f = stat[stat.rindex(")") + 2:].split()
        name = re.sub(r"[-_:]?\d+$", "", name).replace(" ", "_")
        if name.startswith("actix-rt"):
            seen[name] = seen.get(name, 0) + 1
            name = f"{name}#{seen[name]}"
        print(tid, name, f[11], f[12])

def load(path):
    out = {}
    for line in open(path):
        tid, name, u, s = line.split()
        out[tid] = (name, int(u), int(s))
    return out

def diff(before, after, n):
    a, b, tick = load(before), load(after), os.sysconf("SC_CLK_TCK")
    per = {}
    for tid, (name, u, s) in b.items():
        u0, s0 = a.get(tid, (name, 0, 0))[1:]
        pu, ps = per.get(name, (0, 0))
        per[name] = (pu + u - u0, ps + s - s0)
    scale = 1e6 / tick / n
    for name, (u, s) in sorted(per.items(), key=lambda kv: -sum(kv[1])):
        if u + s:
            print(f"    {name:<24} {(u + s) * scale:6.2f} µs (usr {u * scale:.2f}, sys {s * scale:.2f})")

if __name__ == "__main__":
    if sys.argv[1] == "snap":
        snap(sys.argv[2])
    else:
        diff(sys.argv[2], sys.argv[3], int(sys.argv[4]))
