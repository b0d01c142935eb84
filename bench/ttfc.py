#!/usr/bin/env python3
"""Time to first chunk (TTFC) for streaming chat completions.

Sends N streaming `POST /v1/chat/completions` requests ("stream": true) at a
fixed concurrency, one keep-alive connection per worker thread, and measures
for each request:

  * ttfc  - from just before the request is written to the first SSE line
            starting with `data:` (the first chunk the client can use);
  * total - from the same start to the `data: [DONE]` line.

Prints one JSON object with p50/p90/p99/mean/max (milliseconds) of both, the
number of successful and failed requests and the wall time.

stdlib only, so it runs anywhere python3 does:

    bench/ttfc.py --url http://127.0.0.1:4100/v1/chat/completions \
        --model bench-stream --key sk-bench-master-key -n 200 -c 8
"""

import argparse
import http.client
import json
import math
import sys
import threading
import time
import urllib.parse


def percentile(sorted_values, p):
    """Nearest-rank percentile of an already sorted list (p in 0..100)."""
    if not sorted_values:
        return None
    k = math.ceil(p / 100.0 * len(sorted_values)) - 1
    return sorted_values[max(0, min(len(sorted_values) - 1, k))]


def stats(values_s):
    v = sorted(x * 1000.0 for x in values_s)
    if not v:
        return {"p50": None, "p90": None, "p99": None, "mean": None, "max": None}
    return {
        "p50": round(percentile(v, 50), 3),
        "p90": round(percentile(v, 90), 3),
        "p99": round(percentile(v, 99), 3),
        "mean": round(sum(v) / len(v), 3),
        "max": round(v[-1], 3),
    }


class Worker:
    def __init__(self, url, headers, body, timeout):
        u = urllib.parse.urlsplit(url)
        if u.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit("ttfc.py only talks to loopback addresses")
        self.host, self.port = u.hostname, u.port or 80
        self.path = u.path + (("?" + u.query) if u.query else "")
        self.headers, self.body, self.timeout = headers, body, timeout
        self.conn = None

    def _connect(self):
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def one(self):
        """Returns (ttfc_s, total_s) or raises."""
        if self.conn is None:
            self._connect()
        t0 = time.perf_counter()
        try:
            self.conn.request("POST", self.path, body=self.body, headers=self.headers)
            resp = self.conn.getresponse()
        except (http.client.HTTPException, OSError):
            # A kept-alive connection the server closed: retry once, fresh.
            self.conn.close()
            self._connect()
            t0 = time.perf_counter()
            self.conn.request("POST", self.path, body=self.body, headers=self.headers)
            resp = self.conn.getresponse()
        if resp.status != 200:
            resp.read()
            raise RuntimeError("HTTP %d" % resp.status)
        ttfc = None
        done = None
        while True:
            line = resp.readline()
            if not line:
                break
            if line.startswith(b"data:"):
                now = time.perf_counter()
                if ttfc is None:
                    ttfc = now - t0
                if line[5:].strip() == b"[DONE]":
                    done = now - t0
                    break
        # Drain whatever follows [DONE] (the chunked terminator) so the
        # connection can be reused.
        resp.read()
        if resp.will_close:
            self.conn.close()
            self.conn = None
        if ttfc is None or done is None:
            raise RuntimeError("stream ended without data / [DONE]")
        return ttfc, done


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="full URL of /v1/chat/completions")
    ap.add_argument("--model", required=True)
    ap.add_argument("--key", default=None, help="Bearer token (omit for the mock)")
    ap.add_argument("-n", "--requests", type=int, default=200)
    ap.add_argument("-c", "--concurrency", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=1, help="untimed requests per worker first")
    ap.add_argument("--timeout", type=float, default=30.0, help="socket timeout, seconds")
    ap.add_argument("--label", default="")
    a = ap.parse_args()

    body = json.dumps(
        {"model": a.model, "stream": True, "messages": [{"role": "user", "content": "hello"}]}
    ).encode()
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if a.key:
        headers["Authorization"] = "Bearer " + a.key

    lock = threading.Lock()
    remaining = [a.requests]
    ttfcs, totals, errors = [], [], []

    def run():
        w = Worker(a.url, headers, body, a.timeout)
        for _ in range(a.warmup):
            try:
                w.one()
            except Exception:
                w.conn = None
        while True:
            with lock:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            try:
                t, d = w.one()
                with lock:
                    ttfcs.append(t)
                    totals.append(d)
            except Exception as e:  # noqa: BLE001 - every failure is counted
                if w.conn is not None:
                    w.conn.close()
                w.conn = None
                with lock:
                    errors.append(repr(e))

    start = time.perf_counter()
    threads = [threading.Thread(target=run, daemon=True) for _ in range(max(1, a.concurrency))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start

    out = {
        "label": a.label,
        "requests": a.requests,
        "concurrency": a.concurrency,
        "ok": len(ttfcs),
        "errors": len(errors),
        "first_errors": errors[:3],
        "wall_s": round(wall, 3),
        "ttfc_ms": stats(ttfcs),
        "total_ms": stats(totals),
    }
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0 if not errors and ttfcs else 1


if __name__ == "__main__":
    sys.exit(main())
