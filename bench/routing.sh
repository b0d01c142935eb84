#!/usr/bin/env bash
# Routing strategies against one slow deployment: which share of traffic
# the slow one still gets, and what that does to client latency.
#
#   bench/routing.sh                  # build release, ~2 min of load
#   BENCH_NO_BUILD=1 bench/routing.sh
#
# Three `tollgate mock-upstream` deployments of one model group: two answer
# in FAST_MS, one in SLOW_MS. For each strategy a fresh gateway is started
# and driven at a fixed rate (oha -q) for DURATION seconds after a warm-up;
# the table gives p50/p90/p99 latency as the client saw it and the share of
# requests the slow deployment served (from the mocks' own counters).
#
# Knobs: BENCH_RATE=100 (req/s), BENCH_DURATION=15, BENCH_WARMUP=3,
#   BENCH_FAST_MS=50, BENCH_SLOW_MS=500, BENCH_STRATEGIES="simple-shuffle
#   least-busy latency-based-routing power-of-two-choices",
#   BENCH_OUT=bench/last-routing.md, OHA=path. Only 127.0.0.1 is contacted.

set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RATE=${BENCH_RATE:-100}
DURATION=${BENCH_DURATION:-15}
WARMUP=${BENCH_WARMUP:-3}
FAST_MS=${BENCH_FAST_MS:-50}
SLOW_MS=${BENCH_SLOW_MS:-500}
STRATEGIES=${BENCH_STRATEGIES:-"simple-shuffle least-busy latency-based-routing power-of-two-choices"}
OUT=${BENCH_OUT:-$ROOT/bench/last-routing.md}
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
MASTER="sk-bench-master-key"

log() { printf '[routing] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ -x $OHA ]] || die "oha not found (cargo install oha --locked, or set OHA=)"

if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
  (cd "$ROOT" && cargo build --release) || die "release build failed"
fi
BIN=$ROOT/target/release/tollgate
T=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-routing.XXXXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$T"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() {
  for _ in $(seq 100); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "$1 never answered"
}
chat_count() { curl -sf "http://127.0.0.1:$1/mock/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["chat"])'; }

declare -A PORT
for m in fast1 fast2 slow; do
  PORT[$m]=$(free_port)
  ms=$FAST_MS; [[ $m == slow ]] && ms=$SLOW_MS
  "$BIN" mock-upstream --port "${PORT[$m]}" --latency-ms "$ms" >"$T/$m.log" 2>&1 &
  PIDS+=($!)
  wait_up "http://127.0.0.1:${PORT[$m]}/mock/stats"
done

BODY='{"model":"m","messages":[{"role":"user","content":"hello"}],"max_tokens":5}'
ROWS=()
for strategy in $STRATEGIES; do
  GW=$(free_port)
  {
    echo "master_key = \"$MASTER\""
    echo "[server]"; echo "host = \"127.0.0.1\""; echo "port = $GW"; echo "workers = 2"
    echo "[logging]"; echo "request_log = \"off\""; echo "level = \"warn\""
    echo "[router]"; echo "routing_strategy = \"$strategy\""
    for m in fast1 fast2 slow; do
      echo "[[models.m.deployments]]"; echo "id = \"$m\""; echo "provider = \"openai_compatible\""
      echo "model = \"mock-gpt\""; echo "api_base = \"http://127.0.0.1:${PORT[$m]}/v1\""
      echo "input_cost_per_token = 0.000001"; echo "output_cost_per_token = 0.000002"
    done
  } >"$T/$strategy.toml"
  "$BIN" serve --config "$T/$strategy.toml" >"$T/gw-$strategy.log" 2>&1 &
  gw_pid=$!
  wait_up "http://127.0.0.1:$GW/health/liveliness"
  args=(--no-tui --output-format json -m POST -H "authorization: Bearer $MASTER"
        -H "content-type: application/json" -d "$BODY" -q "$RATE" -c $((RATE * (SLOW_MS + 500) / 1000 + 10)))
  "$OHA" "${args[@]}" -z "${WARMUP}s" "http://127.0.0.1:$GW/v1/chat/completions" >/dev/null 2>&1 || true
  before=$(chat_count "${PORT[slow]}"); total_before=0
  for m in fast1 fast2 slow; do total_before=$((total_before + $(chat_count "${PORT[$m]}"))); done
  log "$strategy: ${DURATION}s at $RATE req/s"
  "$OHA" "${args[@]}" -z "${DURATION}s" "http://127.0.0.1:$GW/v1/chat/completions" >"$T/$strategy.json"
  after=$(chat_count "${PORT[slow]}"); total_after=0
  for m in fast1 fast2 slow; do total_after=$((total_after + $(chat_count "${PORT[$m]}"))); done
  kill "$gw_pid"; wait "$gw_pid" 2>/dev/null || true
  ROWS+=("$(python3 - "$T/$strategy.json" "$strategy" $((after - before)) $((total_after - total_before)) <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
lp = d.get("latencyPercentiles") or {}
ms = lambda k: (lp.get(k) or 0) * 1000
slow, total = int(sys.argv[3]), max(int(sys.argv[4]), 1)
ok = (d.get("statusCodeDistribution") or {}).get("200", 0)
print(f"| {sys.argv[2]} | {ms('p50'):.0f} | {ms('p90'):.0f} | {ms('p99'):.0f} | {100*slow/total:.1f} % | {ok} |")
EOF
)")
done

{
  echo "Routing with one slow deployment (two at ${FAST_MS} ms, one at ${SLOW_MS} ms), ${RATE} req/s for ${DURATION}s, $(date -u +%F)"
  echo
  echo "| strategy | p50 ms | p90 ms | p99 ms | served by the slow one | 200s |"
  echo "|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
} | tee "$OUT"
