#!/usr/bin/env bash
# What logging destinations cost: saturation throughput of one gateway with
# logging off against the same gateway config with Langfuse + OTLP
# destinations on, interleaved round by round so a drift in the machine's
# load hits both alike. The destinations point at the mock upstream, which
# also takes OTLP/HTTP exports and counts them without decoding (a receiver
# that costs next to nothing, so what is measured is the gateway's cost, not
# the receiver's).
#
#   bench/observability.sh                       # uses target/release/tollgate
#   BENCH_BIN=path bench/observability.sh
#
# Knobs: BENCH_ROUNDS (3), BENCH_DURATION (8 s), BENCH_CONNECTIONS (64),
# BENCH_GATEWAY_WORKERS (2), OHA.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BENCH_BIN:-$ROOT/target/release/tollgate}
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-8}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
WORKERS=${BENCH_GATEWAY_WORKERS:-2}
[[ -x $BIN ]] || { echo "no binary at $BIN (cargo build --release)" >&2; exit 1; }
[[ -x $OHA ]] || { echo "oha not found (cargo install oha)" >&2; exit 1; }

TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MOCK=$(free_port)
OFF=$(free_port)
ON=$(free_port)
cp "$BIN" "$TMP/tollgate"

"$TMP/tollgate" mock-upstream --port "$MOCK" --workers 1 >"$TMP/mock.log" 2>&1 &
PIDS+=($!)

config() { # port, extra
  cat <<EOF
master_key = "sk-bench-master-key"
[server]
host = "127.0.0.1"
port = $1
workers = $WORKERS
[logging]
level = "warn"
request_log = "off"
$2
[[models.bench-gpt.deployments]]
provider = "openai_compatible"
model = "mock-gpt"
api_base = "http://127.0.0.1:$MOCK/v1"
api_key = "sk-upstream"
EOF
}
config "$OFF" "" >"$TMP/off.toml"
config "$ON" "
[[logging.destinations]]
kind = \"langfuse\"
host = \"http://127.0.0.1:$MOCK\"
public_key = \"pk-lf-bench\"
secret_key = \"sk-lf-bench\"
[[logging.destinations]]
kind = \"otel\"
endpoint = \"http://127.0.0.1:$MOCK/v1/traces\"" >"$TMP/on.toml"

(cd "$TMP" && exec ./tollgate serve --config off.toml >off.log 2>&1) &
PIDS+=($!)
(cd "$TMP" && exec ./tollgate serve --config on.toml >on.log 2>&1) &
PIDS+=($!)

BODY='{"model":"bench-gpt","messages":[{"role":"user","content":"hello"}]}'
call() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/v1/chat/completions" \
  -H 'Authorization: Bearer sk-bench-master-key' -H 'Content-Type: application/json' -d "$BODY"; }
for port in "$OFF" "$ON"; do
  for _ in $(seq 100); do [[ $(call "$port" || true) == 200 ]] && break; sleep 0.1; done
  [[ $(call "$port") == 200 ]] || { echo "gateway on $port did not start" >&2; cat "$TMP"/*.log >&2; exit 1; }
done

load() { # port, seconds → "req/s p50_ms"
  "$OHA" --no-tui --output-format json -z "$2s" -w -c "$CONNECTIONS" -m POST \
    -H 'Authorization: Bearer sk-bench-master-key' -H 'Content-Type: application/json' \
    -d "$BODY" "http://127.0.0.1:$1/v1/chat/completions" |
    python3 -c 'import sys,json; d=json.load(sys.stdin); s=d["statusCodeDistribution"]; ok=int(s.get("200",0)); print(round(ok/d["summary"]["total"]), round(d["latencyPercentiles"]["p50"]*1000,3))'
}
load "$OFF" 2 >/dev/null
load "$ON" 2 >/dev/null

echo "| Round | logging off req/s | p50 ms | Langfuse + OTLP req/s | p50 ms | on/off |"
echo "|---:|---:|---:|---:|---:|---:|"
sum_off=0
sum_on=0
for r in $(seq "$ROUNDS"); do
  read -r off_rps off_p50 < <(load "$OFF" "$DURATION")
  read -r on_rps on_p50 < <(load "$ON" "$DURATION")
  sum_off=$((sum_off + off_rps))
  sum_on=$((sum_on + on_rps))
  printf '| %s | %s | %s | %s | %s | %s %% |\n' "$r" "$off_rps" "$off_p50" "$on_rps" "$on_p50" \
    "$(python3 -c "print(round(100*$on_rps/$off_rps,1))")"
done
printf '| **mean** | **%s** | | **%s** | | **%s %%** |\n' "$((sum_off / ROUNDS))" "$((sum_on / ROUNDS))" \
  "$(python3 -c "print(round(100*$sum_on/$sum_off,1))")"

sleep 2 # the last partial batches
metrics=$(curl -s "http://127.0.0.1:$ON/metrics")
stats=$(curl -s "http://127.0.0.1:$MOCK/mock/stats")
echo
echo "Destinations (gateway with logging on):"
echo "$metrics" | grep -E '^tollgate_log_destination_(sent|dropped|failures)' | sed 's/^/    /'
echo "Receiver: $(python3 -c "import json,sys; s=json.loads(sys.argv[1]); print(s['otlp_exports'], 'exports,', round(s['otlp_bytes']/1e6,1), 'MB')" "$stats")"
