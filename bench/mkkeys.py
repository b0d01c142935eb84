#!/usr/bin/env python3
"""Create N virtual keys through the gateway's /key/generate and print them,
one per line. Stdlib only; refuses anything but a loopback address."""

import argparse
import json
import sys
import urllib.parse
import urllib.request


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="http://127.0.0.1:PORT")
    ap.add_argument("--master", required=True)
    ap.add_argument("-n", type=int, default=1000)
    args = ap.parse_args()
    host = urllib.parse.urlparse(args.base).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("mkkeys.py only talks to loopback")
    for i in range(args.n):
        req = urllib.request.Request(
            args.base + "/key/generate",
            data=json.dumps({"key_alias": f"bench-{i}", "models": ["bench-gpt"]}).encode(),
            headers={"Authorization": f"Bearer {args.master}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            print(json.load(r)["key"])


if __name__ == "__main__":
    main()
