#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: the same
# number for the same build and requests, whatever else the machine is
# doing, so it tells a 1 % change apart where `bench/ab.sh`'s throughput
# rounds swing ±10 %. It counts user-space work only (no kernel, no I/O
# wait, no PostgreSQL server), so it complements ab.sh rather than
# replacing it.
#
#   bench/instructions.sh MODE BIN_A BIN_B [requests, 2000]
#
# MODE
#   vk-sqlite  100 rotating virtual keys, spend to SQLite
#   vk-pg      the same on PostgreSQL (127.0.0.1:5432, user postgres; a
#              database per side, dropped at the end)
#   obs        the master key; A with logging off, B with Langfuse and
#              OTLP destinations (the mock receives them)
# Each side: the gateway runs under callgrind (one HTTP worker), 300
# requests warm it up, the counters are zeroed, N requests go one at a
# time over one keep-alive connection, then the counters are dumped.
# Prints, per side, instructions per request in all and on tokio's
# blocking threads (where the SQLite spend writer runs), and B − A.
# KEEP=dir keeps the callgrind files (a.cg.*, b.cg.*) for callgrind_annotate.
# Needs valgrind, python3, curl; psql for vk-pg. Only 127.0.0.1 is contacted.
set -euo pipefail
MODE=$1; A=$2; B=$3; N=${4:-2000}
HERE=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d /tmp/instr.XXXX)
PIDS=()
DBS=()
source "$HERE/lib.sh"
cleanup() { [[ -n ${KEEP:-} ]] && mkdir -p $KEEP && cp $T/*.cg.* $KEEP/ 2>/dev/null; kill ${PIDS[@]} 2>/dev/null; wait 2>/dev/null; drop_dbs; rm -rf $T; }
trap cleanup EXIT
# One request at a time over one keep-alive connection, keys in turn.
cat > $T/send.py <<'EOF'
import http.client, json, sys
port, keys, n = int(sys.argv[1]), open(sys.argv[2]).read().split(), int(sys.argv[3])
body = json.dumps({"model": "bench-gpt", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16})
c = http.client.HTTPConnection("127.0.0.1", port)
for i in range(n):
    c.request("POST", "/v1/chat/completions", body,
              {"Authorization": "Bearer " + keys[i % len(keys)], "Content-Type": "application/json"})
    r = c.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"request {i}: HTTP {r.status}")
EOF
measure() { # name bin port_base -> "total blocking"
  local name=$1 bin=$2 MP=$3 GP=$(( $3 + 1 ))
  bench_config $name $MP $GP 1 instr > $T/$name.toml
  mkdir -p $T/$name; cp $bin $T/$name/tollgate
  (cd $T/$name && exec ./tollgate mock-upstream --host 127.0.0.1 --port $MP --workers 1 >$T/$name-mock.log 2>&1) & PIDS+=($!)
  (cd $T/$name && exec valgrind --tool=callgrind --callgrind-out-file=$T/$name.cg --dump-instr=no ./tollgate serve --config $T/$name.toml >$T/$name-gw.log 2>&1) & local gw=$!; PIDS+=($gw)
  for i in $(seq 240); do curl -fsS -o /dev/null http://127.0.0.1:$GP/health/liveliness 2>/dev/null && break; sleep 0.5; done
  if [[ $MODE == vk-* ]]; then python3 $HERE/mkkeys.py --base http://127.0.0.1:$GP --master sk-master-bench -n 100 > $T/$name.keys
  else echo sk-master-bench > $T/$name.keys; fi
  python3 $T/send.py $GP $T/$name.keys 300
  callgrind_control -z $gw >/dev/null 2>&1
  python3 $T/send.py $GP $T/$name.keys $N
  # Batches (spend, log exports) go out on timers: let the last ones run.
  sleep 2
  callgrind_control -d $gw >/dev/null 2>&1
  kill $gw 2>/dev/null; wait $gw 2>/dev/null || true
  # measure runs in a subshell: its database is dropped here, not by cleanup.
  drop_dbs
  local out=$(ls $T/$name.cg.* | head -1)
  callgrind_annotate --threshold=100 --inclusive=yes $out 2>/dev/null | python3 -c "
import re, sys
total = blocking = 0
for line in sys.stdin:
    m = re.match(r'\s*([\d,]+)\s', line)
    if not m: continue
    v = int(m.group(1).replace(',', ''))
    if 'PROGRAM TOTALS' in line: total = v
    if 'blocking/pool.rs' in line and blocking == 0: blocking = v
print(round(total / $N), round(blocking / $N))"
}
read ta ba < <(measure a $A $((21000 + RANDOM % 3000)))
read tb bb < <(measure b $B $((25000 + RANDOM % 3000)))
echo "A: $ta instructions per request ($ba on blocking threads)"
echo "B: $tb instructions per request ($bb on blocking threads)"
python3 -c "print(f'B - A: {$tb - $ta:+d} ({100 * ($tb - $ta) / $ta:+.1f} %)')"
