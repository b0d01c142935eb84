#!/usr/bin/env python3
"""Turn the raw output of bench/run.sh into one Markdown report.

Reads from the run directory (stdlib only):

  meta.env                    KEY=VALUE lines: machine, knobs, ports
  sat_direct.json             oha --output-format json, saturation, mock direct
  sat_gateway.json            same, through tollgate
  rate_<R>_direct.json        oha at a fixed rate R req/s, mock direct
  rate_<R>_gateway.json       same, through tollgate
  ttfc_direct.json            bench/ttfc.py, streaming mock direct
  ttfc_gateway.json           same, through tollgate
  rss.txt                     "<phase> <VmRSS kB>" samples of the gateway
  hwm.txt                     gateway VmHWM (kB) read at the end of the load
  prov_<case>_<n>.json        oha, provider-translation run n; case is gpt,
                              claude, gpt_stream or claude_stream
  prov_<case>_<n>.cpu         "before after": the gateway's utime+stime in clock
                              ticks (CLK_TCK in meta.env) around that run
  prov_<case>_<n>.sys         "busy total" CPU ticks of the whole machine
                              (/proc/stat) before, then after that run
  prov_<case>_<n>.mock        {"before":…, "after":…}: /mock/stats of the mock
  failures.txt                one line per phase that failed (may be absent)

A missing or unreadable file shows as "n/a" in the table; it never hides
the rest of the report.

    bench/report.py --dir /tmp/tollgate-bench.XXXX --out bench/last-run.md
"""

import argparse
import glob
import json
import os
import re
import statistics
import sys


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def load_meta(path):
    meta = {}
    try:
        with open(path) as f:
            for line in f:
                line = line.rstrip("\n")
                if "=" in line:
                    k, v = line.split("=", 1)
                    meta[k] = v
    except OSError:
        pass
    return meta


def oha_summary(d):
    """Requests/s, ok, errors, achieved ok-rate and latency percentiles (ms)."""
    if not d:
        return None
    codes = {int(k): v for k, v in (d.get("statusCodeDistribution") or {}).items()}
    transport_errors = sum((d.get("errorDistribution") or {}).values())
    ok = sum(v for k, v in codes.items() if 200 <= k < 300)
    non2xx = sum(v for k, v in codes.items() if not 200 <= k < 300)
    wall = d["summary"].get("total") or 0.0
    lp = d.get("latencyPercentiles") or {}

    def ms(key):
        v = lp.get(key)
        return None if v is None else v * 1000.0

    return {
        "rps": d["summary"].get("requestsPerSec"),
        "ok_rps": ok / wall if wall else None,
        "ok": ok,
        "errors": non2xx + transport_errors,
        "error_kinds": dict(list((d.get("errorDistribution") or {}).items())[:3]),
        "non2xx": {str(k): v for k, v in codes.items() if not 200 <= k < 300},
        "p50": ms("p50"),
        "p99": ms("p99"),
        "wall": wall,
    }


def fmt(v, digits=3, suffix=""):
    if v is None:
        return "n/a"
    return f"{v:,.{digits}f}{suffix}"


def fmt_int(v):
    return "n/a" if v is None else f"{v:,}"


def diff(b, a):
    if b is None or a is None:
        return None
    return b - a


def err_cell(s):
    if s is None:
        return "n/a"
    if not s["errors"]:
        return "0"
    detail = ", ".join(f"{k}: {v}" for k, v in list(s["non2xx"].items()) + list(s["error_kinds"].items()))
    return f"**{s['errors']:,}** ({detail})" if detail else f"**{s['errors']:,}**"


def wrk_summary(path):
    """The `JSON {...}` line bench/keys.lua prints, in ms and req/s."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("JSON "):
                    d = json.loads(line[5:])
                    secs = d["duration_us"] / 1e6 or 1.0
                    return {
                        "rps": d["requests"] / secs,
                        "p50": d["p50_us"] / 1000.0,
                        "p99": d["p99_us"] / 1000.0,
                        "errors": d["errors"] + d["non2xx"],
                    }
    except (OSError, ValueError, KeyError):
        pass
    return None


def wrk_pair(a, b):
    """Two interleaved halves of one measurement, combined: rates add up
    over time, percentiles are averaged."""
    x, y = wrk_summary(a), wrk_summary(b)
    if not (x and y):
        return x or y
    return {
        "rps": (x["rps"] + y["rps"]) / 2,
        "p50": (x["p50"] + y["p50"]) / 2,
        "p99": (x["p99"] + y["p99"]) / 2,
        "errors": x["errors"] + y["errors"],
    }


def rss_stats(path):
    samples = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[1].isdigit():
                    samples.append((parts[0], int(parts[1])))
    except OSError:
        return None
    if not samples:
        return None
    idle = [kb for ph, kb in samples if ph == "idle"]
    after = [kb for ph, kb in samples if ph == "after"]
    load = [kb for ph, kb in samples if ph not in ("idle", "after")]
    mb = lambda kb: kb / 1024.0  # noqa: E731
    return {
        "idle": mb(statistics.median(idle)) if idle else None,
        "peak": mb(max(load)) if load else None,
        "after": mb(after[-1]) if after else None,
        "n": len(samples),
    }


def provider_case(d, key, counter, clk):
    """The runs prov_<key>_<n>.json / .cpu / .mock of the provider-translation
    phase, summarised: median CPU µs per 2xx response, median p50 and achieved
    rate; errors, 2xx and mock calls summed over the runs."""
    pat = re.compile(r"prov_" + re.escape(key) + r"_(\d+)\.json$")
    runs = []
    for path in glob.glob(os.path.join(d, f"prov_{key}_*.json")):
        mt = pat.search(os.path.basename(path))
        if not mt:
            continue  # prov_gpt_stream_1.json also matches prov_gpt_*
        s = oha_summary(load_json(path))
        if not s:
            continue
        base = path[: -len(".json")]
        cpu = None
        try:
            with open(base + ".cpu") as f:
                before, after = (int(x) for x in f.read().split())
            if s["ok"]:
                cpu = (after - before) / clk * 1e6 / s["ok"]
        except (OSError, ValueError):
            pass
        busy = None
        try:
            with open(base + ".sys") as f:
                b0, t0, b1, t1 = (int(x) for x in f.read().split())
            if t1 > t0:
                busy = 100.0 * (b1 - b0) / (t1 - t0)
        except (OSError, ValueError):
            pass
        mock = load_json(base + ".mock") or {}
        mb, ma = mock.get("before") or {}, mock.get("after") or {}
        delta = lambda k: (ma[k] - mb[k]) if k in ma and k in mb else None  # noqa: E731
        runs.append({"n": int(mt.group(1)), "s": s, "cpu": cpu, "busy": busy,
                     "calls": delta(counter), "streams": delta("streams_completed")})
    if not runs:
        return None
    runs.sort(key=lambda r: r["n"])
    med = lambda xs: statistics.median(xs) if xs else None  # noqa: E731
    total = lambda xs: None if any(x is None for x in xs) else sum(xs)  # noqa: E731
    cpus = [r["cpu"] for r in runs if r["cpu"] is not None]
    return {
        "cpu_us": med(cpus),
        "cpu_runs": cpus,
        "cpu_by_run": {r["n"]: r["cpu"] for r in runs if r["cpu"] is not None},
        "busy": med([r["busy"] for r in runs if r["busy"] is not None]),
        "p50": med([r["s"]["p50"] for r in runs if r["s"]["p50"] is not None]),
        "ok_rps": med([r["s"]["ok_rps"] for r in runs if r["s"]["ok_rps"] is not None]),
        "ok": sum(r["s"]["ok"] for r in runs),
        "errors": sum(r["s"]["errors"] for r in runs),
        "calls": total([r["calls"] for r in runs]),
        "streams": total([r["streams"] for r in runs]),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--out", default=None, help="also write the report here")
    a = ap.parse_args()
    D = lambda name: os.path.join(a.dir, name)  # noqa: E731

    m = load_meta(D("meta.env"))
    rates = [r for r in m.get("RATES", "").split() if r]
    out = []
    w = out.append

    w(f"### tollgate bench — {m.get('DATE', '?')}")
    w("")
    w("| Setting | Value |")
    w("|---|---|")
    w(f"| Machine | {m.get('NPROC', '?')} CPUs × {m.get('CPU', '?')}, kernel {m.get('KERNEL', '?')} |")
    w(f"| Load average before the run (1/5/15 min) | {m.get('LOADAVG', '?')} |")
    w(f"| Git rev | `{m.get('GIT_REV', '?')}`, binary built {m.get('BINARY_BUILT', '?')} |")
    w(f"| Gateway workers | {m.get('GATEWAY_WORKERS', '?')} |")
    w(f"| Mock workers | {m.get('MOCK_WORKERS', '?')} (per mock instance) |")
    w(f"| Load generator | {m.get('OHA_VERSION', 'oha')}, same machine (client, mock and gateway share the CPUs) |")
    w(f"| Saturation | {m.get('DURATION', '?')} s per side, {m.get('CONNECTIONS', '?')} connections |")
    w(f"| Fixed rates | {', '.join(rates) or '?'} req/s, {m.get('DURATION', '?')} s per side, "
      f"{m.get('RATE_CONNECTIONS', '?')} connections, latency corrected for coordinated omission |")
    w(f"| Streaming | {m.get('STREAM_REQUESTS', '?')} requests, concurrency {m.get('STREAM_CONCURRENCY', '?')}, "
      f"mock sends {m.get('STREAM_CHUNKS', '?')} chunks {m.get('STREAM_INTERVAL_MS', '?')} ms apart |")
    w("")

    # 1. Saturation -----------------------------------------------------------
    sa = oha_summary(load_json(D("sat_direct.json")))
    sb = oha_summary(load_json(D("sat_gateway.json")))
    ratio = (sb["ok_rps"] / sa["ok_rps"] * 100.0) if sa and sb and sa["ok_rps"] else None
    w("**Saturation throughput** (non-streaming `POST /v1/chat/completions`)")
    w("")
    w("| Path | Requests/s (2xx) | p50 ms | p99 ms | Errors |")
    w("|---|---:|---:|---:|---|")
    for name, s in (("(a) mock direct", sa), ("(b) through tollgate", sb)):
        w(f"| {name} | {fmt(s and s['ok_rps'], 0)} | {fmt(s and s['p50'])} | {fmt(s and s['p99'])} | {err_cell(s)} |")
    w(f"| **(b)/(a)** | **{fmt(ratio, 1, ' %')}** | | | |")
    w("")

    # 2. Fixed rates ----------------------------------------------------------
    w("**Latency at fixed rates** (ms; achieved = 2xx responses per second actually served)")
    w("")
    w("| Target req/s | Direct achieved | Direct p50 | Direct p99 | Direct errors "
      "| Gateway achieved | Gateway p50 | Gateway p99 | Gateway errors "
      "| **Added p50** | **Added p99** |")
    w("|---:|---:|---:|---:|---|---:|---:|---:|---|---:|---:|")
    for r in rates:
        ra = oha_summary(load_json(D(f"rate_{r}_direct.json")))
        rb = oha_summary(load_json(D(f"rate_{r}_gateway.json")))

        def ach(s):
            if s is None:
                return "n/a"
            cell = fmt(s["ok_rps"], 0)
            return cell + " ⚠ missed" if s["ok_rps"] < 0.95 * float(r) else cell

        w(f"| {int(r):,} | {ach(ra)} | {fmt(ra and ra['p50'])} | {fmt(ra and ra['p99'])} | {err_cell(ra)} "
          f"| {ach(rb)} | {fmt(rb and rb['p50'])} | {fmt(rb and rb['p99'])} | {err_cell(rb)} "
          f"| **{fmt(diff(rb and rb['p50'], ra and ra['p50']))}** "
          f"| **{fmt(diff(rb and rb['p99'], ra and ra['p99']))}** |")
    w("")

    # 3. Streaming ------------------------------------------------------------
    ta = load_json(D("ttfc_direct.json"))
    tb = load_json(D("ttfc_gateway.json"))
    g = lambda t, part, p: t and t.get(part, {}).get(p)  # noqa: E731
    w("**Streaming** (`\"stream\": true`; TTFC = time to the first `data:` line; ms)")
    w("")
    w("| Path | TTFC p50 | TTFC p99 | To `[DONE]` p50 | To `[DONE]` p99 | OK | Errors |")
    w("|---|---:|---:|---:|---:|---:|---|")
    for name, t in (("(a) mock direct", ta), ("(b) through tollgate", tb)):
        errs = "n/a" if not t else (f"**{t['errors']}**" if t["errors"] else "0")
        w(f"| {name} | {fmt(g(t, 'ttfc_ms', 'p50'))} | {fmt(g(t, 'ttfc_ms', 'p99'))} "
          f"| {fmt(g(t, 'total_ms', 'p50'))} | {fmt(g(t, 'total_ms', 'p99'))} "
          f"| {fmt_int(t and t.get('ok'))} | {errs} |")
    w(f"| **Added (b)−(a)** | **{fmt(diff(g(tb, 'ttfc_ms', 'p50'), g(ta, 'ttfc_ms', 'p50')))}** "
      f"| **{fmt(diff(g(tb, 'ttfc_ms', 'p99'), g(ta, 'ttfc_ms', 'p99')))}** "
      f"| {fmt(diff(g(tb, 'total_ms', 'p50'), g(ta, 'total_ms', 'p50')))} "
      f"| {fmt(diff(g(tb, 'total_ms', 'p99'), g(ta, 'total_ms', 'p99')))} | | |")
    w("")

    # 5. Virtual keys ---------------------------------------------------------
    kd, km, kv = (wrk_pair(D(f"keys_{n}_1.txt"), D(f"keys_{n}_2.txt"))
                  for n in ("direct", "master", "virtual"))
    if kd or km or kv:
        nkeys = m.get("KEYS", "?")
        w(f"**Virtual keys** (wrk, {m.get('KEYS_CONNECTIONS', '?')} connections, "
          f"{m.get('DURATION', '?')} s each in two interleaved halves; {nkeys} distinct keys in rotation, all cached; ms)")
        w("")
        w("| Path | Requests/s | p50 | p99 | Added p50 | Added p99 | Errors |")
        w("|---|---:|---:|---:|---:|---:|---|")
        for name, k in (("(a) mock direct", kd), ("(b) tollgate, master key", km),
                        (f"(c) tollgate, {nkeys} virtual keys", kv)):
            add50 = diff(k and k["p50"], kd and kd["p50"]) if k is not kd else None
            add99 = diff(k and k["p99"], kd and kd["p99"]) if k is not kd else None
            errs = "n/a" if not k else (f"**{k['errors']}**" if k["errors"] else "0")
            w(f"| {name} | {fmt_int(k and round(k['rps']))} | {fmt(k and k['p50'])} | {fmt(k and k['p99'])} "
              f"| {fmt(add50)} | {fmt(add99)} | {errs} |")
        m50 = diff(km and km["p50"], kd and kd["p50"])
        v50 = diff(kv and kv["p50"], kd and kd["p50"])
        if m50 and v50 and m50 > 0:
            w(f"| **(c) added / (b) added, p50** | | | | **{100.0 * v50 / m50:.0f} %** | | |")
        w("")

    # 6. Rate-limited key -----------------------------------------------------
    def pair(prefix):
        runs = [oha_summary(load_json(D(f"{prefix}_{r}.json"))) for r in (1, 2)]
        runs = [x for x in runs if x]
        if not runs:
            return None
        n = len(runs)
        out = {k: sum(x[k] for x in runs if x.get(k) is not None) / n
               for k in ("ok_rps", "p50", "p99")}
        out["errors"] = sum(x["errors"] for x in runs)
        return out
    lsm, lsl = pair("limits_sat_master"), pair("limits_sat_limited")
    lrm, lrl = pair("limits_rate_master"), pair("limits_rate_limited")
    if lsm or lsl or lrm or lrl:
        w(f"**Rate-limited key** (rpm + tpm + parallel on the key, Redis: {m.get('REDIS_URL', '?')}; "
          f"master vs limited interleaved, two halves each; ms)")
        w("")
        w("| Path | Saturation 2xx/s | p50 @1000 req/s | p99 @1000 req/s | Errors |")
        w("|---|---:|---:|---:|---:|")
        for name, s_, r_ in (("master key", lsm, lrm), ("rate-limited key", lsl, lrl)):
            errs = (s_["errors"] if s_ else 0) + (r_["errors"] if r_ else 0)
            w(f"| {name} | {fmt_int(s_ and round(s_['ok_rps']))} | {fmt(r_ and r_['p50'])} "
              f"| {fmt(r_ and r_['p99'])} | {errs} |")
        if lsm and lsl and lsm["ok_rps"]:
            ratio = 100.0 * lsl["ok_rps"] / lsm["ok_rps"]
            extra = diff(lrl and lrl["p50"], lrm and lrm["p50"])
            w(f"| **limited / master** | **{ratio:.0f} %** | **{fmt(extra)}** added | | |")
        w("")

    # 7. Provider translation -------------------------------------------------
    clk = float(m.get("CLK_TCK") or 100)
    chunks = float(m.get("STREAM_CHUNKS") or 0)
    cases = (
        ("gpt", "OpenAI-compatible pass-through", "bench-gpt", "chat", False),
        ("claude", "Anthropic translation", "bench-claude", "anthropic", False),
        ("gpt_stream", "OpenAI-compatible pass-through, streamed", "bench-stream", "chat", True),
        ("claude_stream", "Anthropic translation, streamed", "bench-claude-stream", "anthropic", True),
    )
    prov = {key: provider_case(a.dir, key, counter, clk) for key, _, _, counter, _ in cases}
    if any(prov.values()):
        num = lambda k: float(m[k]) if m.get(k, "").isdigit() else None  # noqa: E731
        rate, srate = num("PROVIDER_RATE"), num("PROVIDER_STREAM_RATE")
        w(f"**Provider translation** (CPU time of the `tollgate serve` process, utime + stime, per 2xx "
          f"response; {fmt(rate, 0)} req/s plain and {fmt(srate, 0)} req/s streamed, "
          f"{m.get('DURATION', '?')} s per run, {m.get('RATE_CONNECTIONS', '?')} connections, "
          f"OpenAI and Anthropic runs alternated; median of {m.get('PROVIDER_REPEATS', '?')} runs each)")
        w("")
        w("| Path | Model group | **CPU µs/request** | Each run | p50 ms (streams: to the end) "
          "| Achieved req/s | Mock calls | Errors | Machine busy |")
        w("|---|---|---:|---|---:|---:|---:|---|---:|")
        for key, label, group, counter, streamed in cases:
            c = prov[key]
            target = srate if streamed else rate
            if c is None:
                w(f"| {label} | `{group}` | n/a | | n/a | n/a | n/a | n/a | n/a |")
                continue
            ach = fmt(c["ok_rps"], 0)
            if target and c["ok_rps"] is not None and c["ok_rps"] < 0.95 * target:
                ach += " ⚠ missed"
            calls = fmt_int(c["calls"])
            if c["calls"] is not None and c["calls"] != c["ok"]:
                calls += f" ⚠ ≠ {c['ok']:,} 2xx"
            if streamed and c["streams"] is not None and c["streams"] != c["ok"]:
                calls += f" ({c['streams']:,} streams completed)"
            errs = f"**{c['errors']:,}**" if c["errors"] else "0"
            each = ", ".join(fmt(x, 1) for x in c["cpu_runs"]) or "n/a"
            w(f"| {label} | `{group}` | **{fmt(c['cpu_us'], 1)}** | {each} | {fmt(c['p50'])} "
              f"| {ach} | {calls} | {errs} | {fmt(c['busy'], 0, ' %')} |")
        g, a_ = prov["gpt"], prov["claude"]
        gs, as_ = prov["gpt_stream"], prov["claude_stream"]
        ratio = None
        if g and a_ and g["cpu_us"] and a_["cpu_us"] is not None:
            ratio = (a_["cpu_us"] / g["cpu_us"] - 1.0) * 100.0
        per_chunk = None
        if gs and as_ and gs["cpu_us"] is not None and as_["cpu_us"] is not None and chunks:
            per_chunk = (as_["cpu_us"] - gs["cpu_us"]) / chunks
        def paired(x, y, f):
            # f(x_run, y_run) for each repeat that has both, then the median
            if not (x and y):
                return None
            vals = [f(x["cpu_by_run"][n], y["cpu_by_run"][n])
                    for n in sorted(x["cpu_by_run"]) if n in y["cpu_by_run"] and x["cpu_by_run"][n]]
            return statistics.median(vals) if vals else None
        ratio_p = paired(g, a_, lambda o, t: (t / o - 1.0) * 100.0)
        chunk_p = paired(gs, as_, lambda o, t: (t - o) / chunks) if chunks else None
        verdict = lambda v, lim: "n/a" if v is None else ("met" if v <= lim else "**not met**")  # noqa: E731
        w("")
        pct = lambda v: "n/a" if v is None else f"{v:+.1f} %"  # noqa: E731
        w("| Requirement | Measured (from the medians) | Target | Verdict "
          "| Paired (median over repeats of each pair's value) | Added p50 ms (Anthropic − OpenAI) |")
        w("|---|---:|---:|---|---:|---:|")
        w(f"| Translation cost per request, plain: Anthropic / OpenAI − 1 "
          f"| **{pct(ratio)}** | ≤ 10 % | {verdict(ratio, 10.0)} | {pct(ratio_p)} "
          f"| {fmt(diff(a_ and a_['p50'], g and g['p50']))} |")
        w(f"| Extra CPU per streamed chunk: (Anthropic − OpenAI stream) / {chunks:.0f} chunks "
          f"| **{fmt(per_chunk, 2, ' µs')}** | ≤ 5 µs | {verdict(per_chunk, 5.0)} | {fmt(chunk_p, 2, ' µs')} "
          f"| {fmt(diff(as_ and as_['p50'], gs and gs['p50']))} |")
        w("")

    # 4. Memory ---------------------------------------------------------------
    rs = rss_stats(D("rss.txt"))
    hwm = None
    try:
        with open(D("hwm.txt")) as f:
            hwm = int(f.read().strip()) / 1024.0
    except (OSError, ValueError):
        pass
    w("**Gateway memory** (VmRSS of the `tollgate serve` process, MB)")
    w("")
    w("| Idle (before load) | Peak during load (sampled every 0.2 s) | Peak (kernel VmHWM) | After load |")
    w("|---:|---:|---:|---:|")
    w(f"| {fmt(rs and rs['idle'], 1)} | {fmt(rs and rs['peak'], 1)} | {fmt(hwm, 1)} | {fmt(rs and rs['after'], 1)} |")
    w("")

    failures = []
    try:
        with open(D("failures.txt")) as f:
            failures = [ln.strip() for ln in f if ln.strip()]
    except OSError:
        pass
    if failures:
        w("**Failed phases:** " + "; ".join(failures))
        w("")

    text = "\n".join(out)
    sys.stdout.write(text + "\n")
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
