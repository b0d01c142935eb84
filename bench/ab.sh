#!/usr/bin/env bash
# Interleaved A/B of two builds (or of one build in two setups), for
# machines whose speed drifts between runs: both setups are started side by
# side, then wrk alternates between them, A, B, A, B, … and each round's
# B/A throughput ratio is printed with the median and mean over rounds.
#
#   bench/ab.sh MODE BIN_A BIN_B [seconds per run, 6] [rounds, 5]
#
# MODE
#   vk-sqlite  1000 rotating virtual keys, spend to SQLite (as bench/run.sh)
#   vk-pg      the same on PostgreSQL (127.0.0.1:5432, user postgres; a
#              database per side, dropped at the end); CPU per request is
#              printed as gateway+PostgreSQL
#   obs        the master key; A with logging off, B with Langfuse and OTLP
#              destinations (the B mock receives them), as bench/observability.sh
# Environment: CONNS (wrk connections, 8; bench/observability.sh uses 64),
#   CONF_A, CONF_B (TOML appended to that side's config), SQL_B (vk-pg: SQL run on B's database after its migrations, e.g. to try
#   an index change before writing its migration), PERF_DIR (a directory:
#   each run is also recorded with `perf record` on its gateway; then
#   `bench/perfdiff.py PERF_DIR` prints what B spends per request, by
#   symbol, against A); THREADS=1 (each run's gateway CPU per request by
#   thread, on stderr); RATE=n (latency instead: each round, each side's
#   p50 at n req/s through the gateway with one virtual key and straight
#   to its mock, with oha; prints what B adds over what A adds).
# Needs wrk (apt-get install wrk), python3, curl; psql for vk-pg. Only
# 127.0.0.1 is contacted.
set -euo pipefail
MODE=$1; A=$2; B=$3; SECS=${4:-6}; ROUNDS=${5:-5}; CONNS=${CONNS:-8}
T=$(mktemp -d /tmp/ab.XXXX)
PIDS=()
DBS=()
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
cleanup() { kill ${PIDS[@]} 2>/dev/null; wait 2>/dev/null; drop_dbs; rm -rf $T; }
trap cleanup EXIT
setup() { # name bin port_base -> echo url keysfile gwpid
  local name=$1 bin=$2 MP=$3 GP=$(( $3 + 1 ))
  bench_config $name $MP $GP 2 ab > $T/$name.toml
  mkdir -p $T/$name; cp $bin $T/$name/tollgate
  (cd $T/$name && exec ./tollgate mock-upstream --host 127.0.0.1 --port $MP --workers 1 >$T/$name-mock.log 2>&1) & PIDS+=($!); echo $! > $T/$name.mockpid
  (cd $T/$name && exec ./tollgate serve --config $T/$name.toml >$T/$name-gw.log 2>&1) & PIDS+=($!); echo $! > $T/$name.pid
  for i in $(seq 100); do curl -fsS -o /dev/null http://127.0.0.1:$GP/health/liveliness 2>/dev/null && break; sleep 0.2; done
  if [[ $MODE == vk-* ]]; then python3 $HERE/mkkeys.py --base http://127.0.0.1:$GP --master sk-master-bench -n 1000 > $T/$name.keys
  else echo sk-master-bench > $T/$name.keys; fi
  echo $GP > $T/$name.port
  if [[ $name == b && -n ${SQL_B:-} && $MODE == vk-pg ]]; then psql -q -h 127.0.0.1 -U postgres -d ab_${name}_$$ -c "$SQL_B"; fi
}
setup a $A $((21000 + RANDOM % 3000))
setup b $B $((25000 + RANDOM % 3000))
BODY='{"model":"bench-gpt","messages":[{"role":"user","content":"hello"}],"max_tokens":16}'
pgcpu() { local s=0; for p in $(pgrep -x postgres); do s=$((s + $(awk '{print $14+$15}' /proc/$p/stat 2>/dev/null || echo 0))); done; echo $s; }
run() { # name secs -> rps cpu_us
  local name=$1 s=$2 gp=$(cat $T/$1.port) pid=$(cat $T/$1.pid)
  local c0=$(awk '{print $14+$15}' /proc/$pid/stat) u0=$(awk '{print $14}' /proc/$pid/stat) mpid=$(cat $T/$1.mockpid)
  local m0=$(awk '{print $14+$15}' /proc/$mpid/stat)
  local p0=$(pgcpu) f="" pp=""
  [[ -n ${THREADS:-} ]] && python3 $HERE/threads.py snap $pid > $T/$name.t0
  if [[ -n ${PERF_DIR:-} ]]; then
    mkdir -p "$PERF_DIR"
    f=$PERF_DIR/$name.$(date +%s%N)
    perf record -q -F 1999 -o $f.data -p $pid -- sleep $s 2>/dev/null & pp=$!
  fi
  local out=$(WRK_KEYS=$T/$name.keys WRK_BODY=$BODY wrk -t1 -c$CONNS -d${s}s -s $HERE/keys.lua http://127.0.0.1:$gp/v1/chat/completions 2>&1)
  [[ -n $pp ]] && wait $pp
  local c1=$(awk '{print $14+$15}' /proc/$pid/stat) u1=$(awk '{print $14}' /proc/$pid/stat)
  local m1=$(awk '{print $14+$15}' /proc/$mpid/stat)
  local p1=$(pgcpu)
  local n=$(echo "$out" | grep -o '"requests":[0-9]*' | cut -d: -f2)
  local bad=$(echo "$out" | grep -o '"non2xx":[0-9]*' | cut -d: -f2)
  [[ -n $f ]] && echo "$f $n" >> $PERF_DIR/counts
  if [[ -n ${THREADS:-} ]]; then
    python3 $HERE/threads.py snap $pid > $T/$name.t1
    { echo "  side $name by thread:"; python3 $HERE/threads.py diff $T/$name.t0 $T/$name.t1 $n; } >&2
  fi
  if [[ ${bad:-0} -gt 0 ]]; then # say why, before cleanup deletes the logs
    { echo "side $name answered $bad non-2xx; its gateway's and mock's last log lines:"
      grep -v 'no price known' $T/$name-gw.log | tail -5; tail -3 $T/$name-mock.log
      kill -0 $mpid 2>/dev/null || echo "(its mock is gone)"; } >&2
  fi
  echo "$(echo "$out" | awk '/Requests\/sec/{print $2}') $(python3 -c "print(round(($c1-$c0)*1e4/$n,1))")(usr$(python3 -c "print(round(($u1-$u0)*1e4/$n,1))"))+pg$(python3 -c "print(round(($p1-$p0)*1e4/$n,1))")+mock$(python3 -c "print(round(($m1-$m0)*1e4/$n,1))") $bad"
}
if [[ -n ${RATE:-} ]]; then
  # Latency at a fixed rate instead of throughput at saturation: per round
  # each side's p50 through the gateway (one virtual key, the first made)
  # and straight to its mock; what the gateway adds is the difference.
  OHA=${OHA:-$(command -v oha || echo ~/.cargo/bin/oha)}
  p50() { # url key body -> p50 in ms (oha, RATE req/s for SECS s, 50 connections)
    local auth=(); [[ -n $2 ]] && auth=(-H "Authorization: Bearer $2")
    "$OHA" --no-tui --output-format json -z "${SECS}s" -c 50 -q "$RATE" --latency-correction \
      -m POST -H 'Content-Type: application/json' "${auth[@]}" -d "$3" "$1" \
      | python3 -c "import json,sys; d=json.load(sys.stdin); print(round(d['latencyPercentiles']['p50']*1000, 3))"
  }
  side() { # name -> "gateway_p50 direct_p50"
    local gp=$(cat $T/$1.port) mp=$(( $(cat $T/$1.port) - 1 )) key=$(head -1 $T/$1.keys)
    echo "$(p50 http://127.0.0.1:$gp/v1/chat/completions "$key" "$BODY") $(p50 http://127.0.0.1:$mp/v1/chat/completions "" "${BODY/bench-gpt/mock-gpt}")"
  }
  side a >/dev/null; side b >/dev/null
  D=()
  for r in $(seq $ROUNDS); do
    read ga da < <(side a); read gb db < <(side b)
    d=$(python3 -c "print(round(($gb-$db)-($ga-$da), 3))"); D+=($d)
    echo "round $r at $RATE req/s, p50 ms: A $ga (mock $da, added $(python3 -c "print(round($ga-$da,3))")) | B $gb (mock $db, added $(python3 -c "print(round($gb-$db,3))")) | B adds $d more"
  done
  python3 -c "import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print('median added p50, B - A:', round(statistics.median(v),3), 'ms; mean', round(statistics.mean(v),3))" ${D[@]}
  exit 0
fi
run a 3 >/dev/null; run b 3 >/dev/null
R=()
for r in $(seq $ROUNDS); do
  read ra ca ba < <(run a $SECS); read rb cb bb < <(run b $SECS)
  ratio=$(python3 -c "print(round(100*$rb/$ra,1))"); R+=($ratio)
  echo "round $r: A $ra req/s ${ca}us (non2xx $ba) | B $rb req/s ${cb}us (non2xx $bb) | B/A $ratio %"
done
python3 -c "import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print('median B/A', statistics.median(v), '% mean', round(statistics.mean(v),1))" ${R[@]}
