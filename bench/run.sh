#!/usr/bin/env bash
# tollgate benchmark: one command, one Markdown table.
#
#   bench/run.sh                       # build release, run everything (~5 min)
#   BENCH_NO_BUILD=1 bench/run.sh      # use the existing target/release/tollgate
#
# Starts two `tollgate mock-upstream` instances (plain + streaming) and one
# `tollgate serve` pointed at them, all on free loopback ports, then measures
# in one run, against the same mock with the same requests:
#   1. saturation throughput, mock direct vs through the gateway (oha)
#   2. p50/p99 at fixed rates (oha -q), and the latency the gateway adds
#   3. gateway RSS: idle and peak during the load phases
#   4. streaming time-to-first-chunk, direct vs gateway (bench/ttfc.py)
#   5. virtual keys and 6. a rate-limited key (see the knobs below)
#   7. provider translation: the gateway's CPU time per request for an
#      OpenAI-compatible deployment (pass-through) vs an Anthropic one
#      (translated both ways), plain and streaming, at fixed rates
# and prints a Markdown table, also written to bench/last-run.md.
# See bench/README.md for what every number means.
#
# Knobs (environment):
#   BENCH_NO_BUILD=1            skip `cargo build --release`
#   BENCH_BIN=path              benchmark this binary instead of target/release/tollgate
#                               (A/B runs of two builds; implies BENCH_NO_BUILD)
#   BENCH_DURATION=10           seconds per measured oha run
#   BENCH_CONNECTIONS=64        connections for the saturation runs
#   BENCH_RATES="100 1000 5000" fixed rates, requests/s
#   BENCH_RATE_CONNECTIONS=50   connections for the fixed-rate runs
#   BENCH_WARMUP=2              seconds of untimed warm-up per side
#   BENCH_GATEWAY_WORKERS=2     `tollgate serve --workers`
#   BENCH_MOCK_WORKERS=1        `tollgate mock-upstream --workers` (each mock)
#   BENCH_STREAM_REQUESTS=200   streaming requests per side
#   BENCH_STREAM_CONCURRENCY=8  streaming concurrency
#   BENCH_STREAM_CHUNKS=20      chunks per streamed answer (streaming mock)
#   BENCH_STREAM_INTERVAL_MS=5  delay between chunks (streaming mock)
#   BENCH_BUILD_TIMEOUT=1800    seconds allowed for the release build
#   BENCH_KEEP_TMP=1            keep the run directory (configs, logs, raw JSON)
#   BENCH_OUT=bench/last-run.md where the Markdown report is written
#   OHA=/path/to/oha            load generator (default: oha on PATH, ~/.cargo/bin/oha)
#   BENCH_KEYS=1000             virtual keys for the key scenario (0 skips it);
#                               needs wrk (apt-get install wrk) to rotate keys
#   BENCH_KEYS_CONNECTIONS=8    connections for the key scenario
#   BENCH_REDIS_URL=redis://127.0.0.1:6379
#                               Redis for the rate-limited-key scenario (the
#                               gateway shares its limits there, under a
#                               private prefix); empty: limits on this replica only
#   BENCH_LIMITS=1              rate-limited-key scenario (0 skips it)
#   BENCH_PROVIDERS=1           provider-translation scenario (0 skips it)
#   BENCH_PROVIDER_RATE=2000    req/s of its non-streaming runs
#   BENCH_PROVIDER_STREAM_RATE=200
#                               req/s of its streaming runs (each ~100 ms long)
#   BENCH_PROVIDER_REPEATS=3    OpenAI/Anthropic pairs per kind (median reported)
#
# Only 127.0.0.1 is ever contacted. Exit status is non-zero if a process fails
# to start or any phase fails or times out.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"

DURATION=${BENCH_DURATION:-10}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
RATES=${BENCH_RATES:-"100 1000 5000"}
RATE_CONNECTIONS=${BENCH_RATE_CONNECTIONS:-50}
WARMUP=${BENCH_WARMUP:-2}
GATEWAY_WORKERS=${BENCH_GATEWAY_WORKERS:-2}
MOCK_WORKERS=${BENCH_MOCK_WORKERS:-1}
STREAM_REQUESTS=${BENCH_STREAM_REQUESTS:-200}
STREAM_CONCURRENCY=${BENCH_STREAM_CONCURRENCY:-8}
STREAM_CHUNKS=${BENCH_STREAM_CHUNKS:-20}
STREAM_INTERVAL_MS=${BENCH_STREAM_INTERVAL_MS:-5}
BUILD_TIMEOUT=${BENCH_BUILD_TIMEOUT:-1800}
OUT=${BENCH_OUT:-$BENCH/last-run.md}
KEYS=${BENCH_KEYS:-1000}
KEYS_CONNECTIONS=${BENCH_KEYS_CONNECTIONS:-8}
REDIS_URL=${BENCH_REDIS_URL-redis://127.0.0.1:6379}
LIMITS=${BENCH_LIMITS:-1}
PROVIDERS=${BENCH_PROVIDERS:-1}
PROVIDER_RATE=${BENCH_PROVIDER_RATE:-2000}
PROVIDER_STREAM_RATE=${BENCH_PROVIDER_STREAM_RATE:-200}
PROVIDER_REPEATS=${BENCH_PROVIDER_REPEATS:-3}

MASTER_KEY="sk-bench-master-key"
STARTUP_TIMEOUT=20   # seconds for each process to answer
SLACK=30             # extra seconds allowed per oha run beyond its duration

exec 3>&2   # the terminal's stderr, even inside redirected phases and traps
log() { printf '[bench] %s\n' "$*" >&3; }
die() { log "ERROR: $*"; exit 1; }

for v in DURATION CONNECTIONS RATE_CONNECTIONS WARMUP GATEWAY_WORKERS MOCK_WORKERS \
         STREAM_REQUESTS STREAM_CONCURRENCY STREAM_CHUNKS STREAM_INTERVAL_MS KEYS KEYS_CONNECTIONS \
         PROVIDERS PROVIDER_RATE PROVIDER_STREAM_RATE PROVIDER_REPEATS; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "BENCH_$v must be a whole number (got '${!v}')"
done
for r in $RATES; do [[ $r =~ ^[0-9]+$ ]] || die "BENCH_RATES must be whole numbers (got '$r')"; done
if ((PROVIDERS > 0)); then
  for v in PROVIDER_RATE PROVIDER_STREAM_RATE PROVIDER_REPEATS; do
    ((${!v} > 0)) || die "BENCH_$v must be at least 1 (BENCH_PROVIDERS=0 skips the scenario)"
  done
fi

OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
[[ -x $OHA ]] || die "oha not found (cargo install oha, or set OHA=/path/to/oha)"
command -v python3 >/dev/null || die "python3 not found"
command -v curl >/dev/null || die "curl not found"

# --- 0. Build -----------------------------------------------------------------
if [[ ${BENCH_NO_BUILD:-0} != 1 && -z ${BENCH_BIN:-} ]]; then
  log "cargo build --release (BENCH_NO_BUILD=1 to skip)"
  (cd "$ROOT" && timeout "$BUILD_TIMEOUT" cargo build --release) || die "release build failed"
fi
SRC_BIN=${BENCH_BIN:-$ROOT/target/release/tollgate}
[[ -x $SRC_BIN ]] || die "$SRC_BIN missing (build first)"

# --- Run directory, cleanup ---------------------------------------------------
T=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-bench.XXXXXX")
PIDS=()
# Still our own child? (A pid that ended may since belong to someone else.)
ours() { [[ $(ps -o ppid= -p "$1" 2>/dev/null | tr -d ' ') == "$$" ]]; }
cleanup() {
  local rc=$? p alive
  set +e
  local mine=()
  for p in "${PIDS[@]}"; do ours "$p" && mine+=("$p"); done
  for p in "${mine[@]}"; do kill "$p" 2>/dev/null; done
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    alive=0
    for p in "${mine[@]}"; do ours "$p" && alive=1; done
    [[ $alive == 0 ]] && break
    sleep 0.3
  done
  for p in "${mine[@]}"; do ours "$p" && kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  if [[ ${BENCH_KEEP_TMP:-0} == 1 || $rc != 0 ]]; then
    log "run directory kept: $T"
  else
    rm -rf "$T"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# How busy the machine was before we added load (other builds/tests skew numbers).
read -r LOAD1 LOAD5 LOAD15 _ </proc/loadavg

# A private copy, so a concurrent `cargo build` cannot swap the binary mid-run.
cp "$SRC_BIN" "$T/tollgate"
BIN="$T/tollgate"

# Three distinct free loopback ports, chosen below the kernel's ephemeral
# range: a port from bind(0) could be taken as a client source port by some
# other load test between our check and the server's bind.
read -r MOCK_PORT STREAM_PORT GW_PORT < <(python3 - <<'EOF'
import random, socket
lo_eph = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
candidates = list(range(20000, min(lo_eph, 32768)))
random.shuffle(candidates)
socks = []
for port in candidates:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        continue
    socks.append(s)
    if len(socks) == 3:
        break
while len(socks) < 3:  # unusual port range: fall back to any free port
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
ports = [s.getsockname()[1] for s in socks]
for s in socks:
    s.close()  # before printing: the caller starts binding as soon as it reads
print(*ports, flush=True)
EOF
)
[[ -n ${GW_PORT:-} ]] || die "could not find three free ports"

cat > "$T/config.toml" <<EOF
# Written by bench/run.sh
master_key = "$MASTER_KEY"
# Virtual keys for the key scenario; never on the hot path once cached.
database_url = "sqlite://$T/bench.db"
$( [[ -n $REDIS_URL ]] && printf 'redis_url = "%s"\n' "$REDIS_URL" )

[server]
host = "127.0.0.1"
port = $GW_PORT
workers = $GATEWAY_WORKERS

[storage]
redis_prefix = "bench-$$"

[logging]
level = "warn"
request_log = "off"

[[models.bench-gpt.deployments]]
provider = "openai_compatible"
model = "mock-gpt"
api_base = "http://127.0.0.1:$MOCK_PORT/v1"

[[models.bench-stream.deployments]]
provider = "openai_compatible"
model = "mock-gpt"
api_base = "http://127.0.0.1:$STREAM_PORT/v1"

# Provider translation: the same two mocks, spoken to in Anthropic's Messages API.
[[models.bench-claude.deployments]]
provider = "anthropic"
model = "claude-bench"
api_key = "anything"
api_base = "http://127.0.0.1:$MOCK_PORT"

[[models.bench-claude-stream.deployments]]
provider = "anthropic"
model = "claude-bench"
api_key = "anything"
api_base = "http://127.0.0.1:$STREAM_PORT"
EOF

# --- Start processes ----------------------------------------------------------
wait_http() { # name pid url
  local name=$1 pid=$2 url=$3 deadline=$((SECONDS + STARTUP_TIMEOUT))
  while ((SECONDS < deadline)); do
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$T/$name.log" >&3; die "$name exited during start-up"; }
    curl -fsS -m 1 -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.2
  done
  tail -n 20 "$T/$name.log" >&3
  die "$name did not answer $url within ${STARTUP_TIMEOUT}s"
}

"$BIN" mock-upstream --host 127.0.0.1 --port "$MOCK_PORT" --workers "$MOCK_WORKERS" \
  >"$T/mock.log" 2>&1 3>&- &
MOCK_PID=$!; PIDS+=("$MOCK_PID")
"$BIN" mock-upstream --host 127.0.0.1 --port "$STREAM_PORT" --workers "$MOCK_WORKERS" \
  --chunks "$STREAM_CHUNKS" --chunk-interval-ms "$STREAM_INTERVAL_MS" \
  >"$T/mock-stream.log" 2>&1 3>&- &
STREAM_PID=$!; PIDS+=("$STREAM_PID")
wait_http mock "$MOCK_PID" "http://127.0.0.1:$MOCK_PORT/v1/models"
wait_http mock-stream "$STREAM_PID" "http://127.0.0.1:$STREAM_PORT/v1/models"

# Run from $T: the spend spool (default ./tollgate-spool) belongs to this run.
(cd "$T" && exec "$BIN" serve --config "$T/config.toml" --workers "$GATEWAY_WORKERS") >"$T/gateway.log" 2>&1 3>&- &
GW_PID=$!; PIDS+=("$GW_PID")
wait_http gateway "$GW_PID" "http://127.0.0.1:$GW_PORT/health/liveliness"
log "mock :$MOCK_PORT, streaming mock :$STREAM_PORT, gateway :$GW_PORT (pid $GW_PID), run dir $T"

DIRECT_URL="http://127.0.0.1:$MOCK_PORT/v1/chat/completions"
GW_URL="http://127.0.0.1:$GW_PORT/v1/chat/completions"
# Same request both ways; only the model name differs (the gateway's model
# group vs the upstream model it maps to).
BODY_DIRECT='{"model":"mock-gpt","messages":[{"role":"user","content":"hello"}]}'
BODY_GW='{"model":"bench-gpt","messages":[{"role":"user","content":"hello"}]}'

# One request each way must succeed before any load.
curl -fsS -m 5 -o /dev/null -H 'Content-Type: application/json' -d "$BODY_DIRECT" "$DIRECT_URL" \
  || die "mock does not answer a chat completion"
curl -fsS -m 5 -o /dev/null -H 'Content-Type: application/json' \
  -H "Authorization: Bearer $MASTER_KEY" -d "$BODY_GW" "$GW_URL" \
  || { tail -n 20 "$T/gateway.log" >&3; die "gateway does not answer a chat completion"; }

# --- RSS sampler --------------------------------------------------------------
echo idle >"$T/phase"
(
  while kill -0 "$GW_PID" 2>/dev/null; do
    read -r ph <"$T/phase" || ph="?"
    rss=""
    while read -r k v _; do [[ $k == VmRSS: ]] && rss=$v; done <"/proc/$GW_PID/status" 2>/dev/null || true
    [[ -n $rss ]] && echo "$ph $rss" >>"$T/rss.txt"
    sleep 0.2
  done
) 3>&- &
PIDS+=("$!")
sleep 2   # idle samples

# --- Helpers ------------------------------------------------------------------
# bounded SECONDS cmd...: run with a time limit, in the background + `wait`,
# so that INT/TERM to this script is handled immediately (bash defers traps
# while a foreground child runs); cleanup() kills it via PIDS.
bounded() {
  local secs=$1; shift
  timeout -k 5 "$secs" "$@" 3>&- &
  local p=$! rc=0
  PIDS+=("$p")
  wait "$p" || rc=$?
  unset 'PIDS[-1]'
  return "$rc"
}

FAILED=0
fail() { log "FAILED: $*"; echo "$*" >>"$T/failures.txt"; FAILED=1; }

gateway_alive() {
  kill -0 "$GW_PID" 2>/dev/null && return 0
  fail "gateway process died (see gateway.log)"; tail -n 20 "$T/gateway.log" >&3
  return 1
}

# oha_run NAME direct|gateway SECONDS [extra oha args...] -> $T/NAME.json
oha_run() {
  local name=$1 side=$2 secs=$3; shift 3
  local url body auth=()
  if [[ $side == direct ]]; then
    url=$DIRECT_URL; body=$BODY_DIRECT
  elif [[ $side == limited ]]; then
    url=$GW_URL; body=$BODY_GW; auth=(-H "Authorization: Bearer $LIMITED_KEY")
  else
    url=$GW_URL; body=$BODY_GW; auth=(-H "Authorization: Bearer $MASTER_KEY")
  fi
  local rc=0
  bounded $((secs + SLACK)) "$OHA" --no-tui --output-format json -z "${secs}s" -w \
    -m POST -H 'Content-Type: application/json' "${auth[@]}" -d "$body" "$@" "$url" \
    >"$T/$name.json" 2>"$T/$name.err" || rc=$?
  if ((rc != 0)); then
    fail "oha $name (exit $rc$( ((rc == 124)) && echo ", timed out"), see $name.err)"
    rm -f "$T/$name.json"
  fi
}

# --- Warm-up (untimed) --------------------------------------------------------
echo warmup >"$T/phase"
if ((WARMUP > 0)); then
  log "warm-up ${WARMUP}s each side"
  oha_run warmup_direct direct "$WARMUP" -c "$CONNECTIONS"
  oha_run warmup_gateway gateway "$WARMUP" -c "$CONNECTIONS"
fi

# --- 1. Saturation ------------------------------------------------------------
echo saturation >"$T/phase"
log "saturation: ${DURATION}s, $CONNECTIONS connections, (a) mock direct"
oha_run sat_direct direct "$DURATION" -c "$CONNECTIONS"
log "saturation: ${DURATION}s, $CONNECTIONS connections, (b) through tollgate"
gateway_alive && oha_run sat_gateway gateway "$DURATION" -c "$CONNECTIONS"

# --- 2. Fixed rates -----------------------------------------------------------
for r in $RATES; do
  echo "rate_$r" >"$T/phase"
  log "fixed rate $r req/s: ${DURATION}s, $RATE_CONNECTIONS connections, (a) direct, (b) tollgate"
  oha_run "rate_${r}_direct" direct "$DURATION" -c "$RATE_CONNECTIONS" -q "$r" --latency-correction
  gateway_alive && oha_run "rate_${r}_gateway" gateway "$DURATION" -c "$RATE_CONNECTIONS" -q "$r" --latency-correction
done

# --- 4. Streaming TTFC --------------------------------------------------------
echo stream >"$T/phase"
STREAM_TIMEOUT=$((STREAM_REQUESTS * (STREAM_CHUNKS * STREAM_INTERVAL_MS + 1000) / 1000 / STREAM_CONCURRENCY + 60))
log "streaming: $STREAM_REQUESTS requests, concurrency $STREAM_CONCURRENCY (bound ${STREAM_TIMEOUT}s per side)"
bounded "$STREAM_TIMEOUT" python3 "$BENCH/ttfc.py" --label direct \
  --url "http://127.0.0.1:$STREAM_PORT/v1/chat/completions" --model mock-gpt \
  -n "$STREAM_REQUESTS" -c "$STREAM_CONCURRENCY" >"$T/ttfc_direct.json" 2>"$T/ttfc_direct.err" \
  || fail "ttfc direct (exit $?)"
gateway_alive && { bounded "$STREAM_TIMEOUT" python3 "$BENCH/ttfc.py" --label gateway \
  --url "$GW_URL" --model bench-stream --key "$MASTER_KEY" \
  -n "$STREAM_REQUESTS" -c "$STREAM_CONCURRENCY" >"$T/ttfc_gateway.json" 2>"$T/ttfc_gateway.err" \
  || fail "ttfc gateway (exit $?)"; }

# --- 5. Virtual keys ----------------------------------------------------------
# The same request, at the same concurrency, with the master key and with
# KEYS distinct virtual keys in rotation (all cached after a warm-up): the
# cost of a cached virtual key over the master-key path. wrk, because it
# can change a header per request.
if ((KEYS > 0)); then
  if command -v wrk >/dev/null; then
    echo keys >"$T/phase"
    log "virtual keys: creating $KEYS keys"
    if bounded 300 python3 "$BENCH/mkkeys.py" --base "http://127.0.0.1:$GW_PORT" \
        --master "$MASTER_KEY" -n "$KEYS" >"$T/keys.txt" 2>"$T/mkkeys.err"; then
      echo "$MASTER_KEY" >"$T/master.txt"
      HALF=$(( (DURATION + 1) / 2 ))
      wrk_run() { # name url keyfile body
        WRK_KEYS=$3 WRK_BODY=$4 bounded $((HALF + SLACK)) wrk -t1 -c"$KEYS_CONNECTIONS" \
          -d"${HALF}s" -s "$BENCH/keys.lua" "$2" >"$T/$1.txt" 2>&1 || fail "wrk $1 (exit $?)"
      }
      log "virtual keys: warm-up (every worker caches every key)"
      WRK_KEYS=$T/keys.txt WRK_BODY=$BODY_GW bounded $((WARMUP + 5 + SLACK)) wrk -t1 -c"$KEYS_CONNECTIONS" \
        -d"$((WARMUP + 3))s" -s "$BENCH/keys.lua" "$GW_URL" >/dev/null 2>&1 || true
      log "virtual keys: ${DURATION}s each, $KEYS_CONNECTIONS connections: direct, master key, $KEYS keys"
      # Interleaved halves, so drift in the machine's load hits both paths alike.
      for round in 1 2; do
        wrk_run "keys_direct_$round" "$DIRECT_URL" "" "$BODY_DIRECT"
        gateway_alive && wrk_run "keys_master_$round" "$GW_URL" "$T/master.txt" "$BODY_GW"
        gateway_alive && wrk_run "keys_virtual_$round" "$GW_URL" "$T/keys.txt" "$BODY_GW"
      done
    else
      fail "creating virtual keys (see mkkeys.err)"
    fi
  else
    log "virtual keys: skipped (wrk not installed: apt-get install wrk)"
    echo "virtual-key scenario skipped: wrk not installed" >>"$T/failures.txt"
  fi
fi

# --- 6. A rate-limited key -----------------------------------------------------
# One virtual key with rpm, tpm and parallel limits (high enough never to
# refuse) against the master key, same run, interleaved: the cost of
# checking and counting three limits at two levels (key and the gateway's
# tpm), shared through Redis when BENCH_REDIS_URL is set.
if ((LIMITS > 0)); then
  echo limits >"$T/phase"
  cat >"$T/mklimited.py" <<'PY'
import json, sys, urllib.request
port, master = sys.argv[1], sys.argv[2]
req = urllib.request.Request(
    f"http://127.0.0.1:{port}/key/generate",
    data=json.dumps({"key_alias": "bench-limited", "models": ["bench-gpt"],
                     "rpm_limit": 1000000000, "tpm_limit": 1000000000000,
                     "max_parallel_requests": 100000}).encode(),
    headers={"Authorization": f"Bearer {master}", "Content-Type": "application/json"})
print(json.load(urllib.request.urlopen(req, timeout=10))["key"])
PY
  LIMITED_KEY=$(bounded 30 python3 "$T/mklimited.py" "$GW_PORT" "$MASTER_KEY" 2>"$T/limited.err"
  ) || fail "creating the rate-limited key (see limited.err)"
  [[ -n ${LIMITED_KEY:-} ]] || fail "creating the rate-limited key (see limited.err)"
  if [[ -n ${LIMITED_KEY:-} ]]; then
    HALF=$(( (DURATION + 1) / 2 ))
    log "rate-limited key: warm-up, then ${HALF}s x2 each at saturation and at 1000 req/s: master vs limited"
    oha_run limits_warmup limited "$WARMUP" -c "$CONNECTIONS"
    for round in 1 2; do
      gateway_alive && oha_run "limits_sat_master_$round" gateway "$HALF" -c "$CONNECTIONS"
      gateway_alive && oha_run "limits_sat_limited_$round" limited "$HALF" -c "$CONNECTIONS"
      gateway_alive && oha_run "limits_rate_master_$round" gateway "$HALF" -c "$RATE_CONNECTIONS" -q 1000
      gateway_alive && oha_run "limits_rate_limited_$round" limited "$HALF" -c "$RATE_CONNECTIONS" -q 1000
    done
  fi
fi

# --- 7. Provider translation ---------------------------------------------------
# The gateway process's own CPU time (utime + stime) per 2xx response, at a
# fixed rate the machine sustains easily: OpenAI-compatible pass-through
# (bench-gpt, bench-stream) against translation to Anthropic's Messages API
# and back (bench-claude, bench-claude-stream), same mocks. CPU per request
# depends much less than throughput on other load on the machine (it is
# still noisy: see bench/README.md).
# The OpenAI and Anthropic runs alternate (ABBA over the repeats), so a drift
# hits both alike; the report takes the median of each.
gw_cpu_ticks() { # utime + stime of the gateway, in clock ticks
  local s f
  s=$(<"/proc/$GW_PID/stat") || return 1
  read -r -a f <<<"${s##*) }"   # fields from 3 (state) on: utime is 14, stime 15
  echo $((f[11] + f[12]))
}
mock_stats() { curl -fsS -m 2 "http://127.0.0.1:$1/mock/stats" 2>/dev/null || echo '{}'; }
machine_ticks() { # "busy total" over all CPUs (busy: neither idle nor iowait)
  local _c u n s i w q sq st
  read -r _c u n s i w q sq st _ </proc/stat
  echo "$((u + n + s + q + sq + st)) $((u + n + s + i + w + q + sq + st))"
}
# prov_run NAME MODEL 0|1(stream) RATE SECONDS
#   -> $T/NAME.json (oha), NAME.cpu ("ticks_before ticks_after"),
#      NAME.sys (machine_ticks before, then after: how busy the machine was),
#      NAME.mock ({"before":…,"after":…} /mock/stats of the mock it reaches)
prov_run() {
  local name=$1 model=$2 stream=$3 rate=$4 secs=$5
  local port=$MOCK_PORT extra="" before="" after="" mb ma sb sa rc=0
  if ((stream)); then port=$STREAM_PORT; extra='"stream":true,'; fi
  local body="{\"model\":\"$model\",$extra\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}"
  gateway_alive || return 0
  # Let the previous run's tail (the spend writer flushes every 200 ms) land
  # outside both runs' windows.
  sleep 0.5
  mb=$(mock_stats "$port")
  sb=$(machine_ticks)
  before=$(gw_cpu_ticks) || before=""
  bounded $((secs + SLACK)) "$OHA" --no-tui --output-format json -z "${secs}s" -w \
    -m POST -H 'Content-Type: application/json' -H "Authorization: Bearer $MASTER_KEY" -d "$body" \
    -c "$RATE_CONNECTIONS" -q "$rate" --latency-correction "$GW_URL" \
    >"$T/$name.json" 2>"$T/$name.err" || rc=$?
  after=$(gw_cpu_ticks) || after=""
  sa=$(machine_ticks)
  ma=$(mock_stats "$port")
  if ((rc != 0)); then
    fail "oha $name (exit $rc$( ((rc == 124)) && echo ", timed out"), see $name.err)"
    rm -f "$T/$name.json"
    return 0
  fi
  [[ -n $before && -n $after ]] && echo "$before $after" >"$T/$name.cpu"
  echo "$sb $sa" >"$T/$name.sys"
  printf '{"before":%s,"after":%s}\n' "$mb" "$ma" >"$T/$name.mock"
}

if ((PROVIDERS > 0)); then
  echo providers >"$T/phase"
  # Both Anthropic deployments must answer (the stream to its end) before any load.
  prov_ok=1
  curl -fsS -m 5 -o /dev/null -H 'Content-Type: application/json' \
    -H "Authorization: Bearer $MASTER_KEY" \
    -d '{"model":"bench-claude","messages":[{"role":"user","content":"hello"}]}' "$GW_URL" \
    2>"$T/providers_check.err" || { prov_ok=0; fail "bench-claude (Anthropic) does not answer a chat completion"; }
  if ((prov_ok)); then
    curl -fsS -N -m 10 -o "$T/providers_check.sse" -H 'Content-Type: application/json' \
      -H "Authorization: Bearer $MASTER_KEY" \
      -d '{"model":"bench-claude-stream","stream":true,"messages":[{"role":"user","content":"hello"}]}' \
      "$GW_URL" 2>>"$T/providers_check.err" || true
    grep -q '^data: \[DONE\]' "$T/providers_check.sse" 2>/dev/null \
      || { prov_ok=0; fail "bench-claude-stream (Anthropic) does not stream to [DONE] (see providers_check.*)"; }
  fi
  if ((prov_ok)); then
    if ((WARMUP > 0)); then
      log "provider translation: warm-up ${WARMUP}s per model group"
      prov_run provwarm_gpt bench-gpt 0 "$PROVIDER_RATE" "$WARMUP"
      prov_run provwarm_claude bench-claude 0 "$PROVIDER_RATE" "$WARMUP"
      prov_run provwarm_gpt_stream bench-stream 1 "$PROVIDER_STREAM_RATE" "$WARMUP"
      prov_run provwarm_claude_stream bench-claude-stream 1 "$PROVIDER_STREAM_RATE" "$WARMUP"
    fi
    log "provider translation: ${DURATION}s runs, $RATE_CONNECTIONS connections, $PROVIDER_REPEATS x" \
      "(OpenAI vs Anthropic at $PROVIDER_RATE req/s, then streaming at $PROVIDER_STREAM_RATE req/s)"
    for ((rep = 1; rep <= PROVIDER_REPEATS; rep++)); do
      if ((rep % 2)); then order="gpt claude"; else order="claude gpt"; fi
      for k in $order; do
        prov_run "prov_${k}_$rep" "bench-$k" 0 "$PROVIDER_RATE" "$DURATION"
      done
      for k in $order; do
        model=bench-stream; [[ $k == gpt ]] || model=bench-claude-stream
        prov_run "prov_${k}_stream_$rep" "$model" 1 "$PROVIDER_STREAM_RATE" "$DURATION"
      done
    done
  fi
fi

# --- 3. Memory after load -----------------------------------------------------
echo after >"$T/phase"
sleep 1
if gateway_alive; then
  while read -r k v _; do [[ $k == VmHWM: ]] && echo "$v" >"$T/hwm.txt"; done <"/proc/$GW_PID/status"
fi

# --- 5. Report ----------------------------------------------------------------
GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$ROOT" --no-optional-locks status --porcelain --untracked-files=no 2>/dev/null) ]]; then
  GIT_REV="$GIT_REV (+ uncommitted changes)"
fi
cat >"$T/meta.env" <<EOF
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
NPROC=$(nproc)
CPU=$(awk -F': *' '/^model name/{print $2; exit}' /proc/cpuinfo)
KERNEL=$(uname -r)
GIT_REV=$GIT_REV
LOADAVG=$LOAD1 / $LOAD5 / $LOAD15
BINARY_BUILT=$(date -u -r "$SRC_BIN" '+%Y-%m-%d %H:%M UTC')
OHA_VERSION=$("$OHA" --version 2>/dev/null | head -n1)
GATEWAY_WORKERS=$GATEWAY_WORKERS
MOCK_WORKERS=$MOCK_WORKERS
DURATION=$DURATION
CONNECTIONS=$CONNECTIONS
RATES=$RATES
RATE_CONNECTIONS=$RATE_CONNECTIONS
STREAM_REQUESTS=$STREAM_REQUESTS
STREAM_CONCURRENCY=$STREAM_CONCURRENCY
STREAM_CHUNKS=$STREAM_CHUNKS
STREAM_INTERVAL_MS=$STREAM_INTERVAL_MS
KEYS=$KEYS
KEYS_CONNECTIONS=$KEYS_CONNECTIONS
REDIS_URL=${REDIS_URL:-none}
PROVIDERS=$PROVIDERS
PROVIDER_RATE=$PROVIDER_RATE
PROVIDER_STREAM_RATE=$PROVIDER_STREAM_RATE
PROVIDER_REPEATS=$PROVIDER_REPEATS
CLK_TCK=$(getconf CLK_TCK)
EOF

echo
python3 "$BENCH/report.py" --dir "$T" --out "$OUT" || fail "report"
log "report written to $OUT"
((FAILED == 0)) || die "some phases failed (see above)"
