#!/usr/bin/env bash
# docker/run-stack.sh - build the image, bring the several-replica stack of
# docker/compose.yml up, check it end to end through the load balancer, and
# tear it down again (KEEP=1 leaves it running).
#
#   docker/run-stack.sh            # build, up, check, down
#   KEEP=1 docker/run-stack.sh     # ... and leave it running
#   docker/run-stack.sh down       # tear a kept stack down
#   ORDERED=1 docker/run-stack.sh  # start in compose order (migrate first)
#                                  # instead of the replicas all at once first
#
# Checks: every service healthy; the three replicas, started at once on the
# empty database, all came up without a restart; the migrate service exited
# 0 and the schema is there once; chat completions (plain and streaming) through nginx with
# the master key are 200 and reached all three replicas; a virtual key made
# with /key/generate on one replica works on every replica; a key's
# rpm_limit holds across the three replicas (not three times over); blocking it
# through the balancer makes every replica refuse it (PostgreSQL + Redis).
set -euo pipefail
cd "$(dirname "$0")"

PROJECT=${PROJECT:-tollgate}
export TOLLGATE_MASTER_KEY=${TOLLGATE_MASTER_KEY:-sk-tollgate-compose-master-key}
LB=http://127.0.0.1:4000
REPLICA_PORTS=(4001 4002 4003)
PORTS=(4000 4001 4002 4003 4010 55432 56379)

if command -v docker-compose >/dev/null; then
    DC=(docker-compose -p "$PROJECT" -f compose.yml)
else
    DC=(docker compose -p "$PROJECT" -f compose.yml)
fi

log() { printf '\n== [%3ss] %s\n' "$SECONDS" "$*"; }
fail() { printf '\nFAIL: %s\n' "$*" >&2; exit 1; }

if [ "${1:-}" = down ]; then
    "${DC[@]}" down -v --remove-orphans
    exit 0
fi

# Without a registry (or to skip pulling): use locally built stand-ins
# (../shared/docker-offline/make-base-images.sh) when the official image
# is not present.
use_local() {  # VAR default-image local-image
    local var=$1 official=$2 local_img=$3
    if [ -z "${!var:-}" ] && ! docker image inspect "$official" >/dev/null 2>&1 &&
        docker image inspect "$local_img" >/dev/null 2>&1; then
        export "$var=$local_img"
        echo "using $local_img for $official"
    fi
}
use_local POSTGRES_IMAGE postgres:16 local/postgres:bookworm
use_local REDIS_IMAGE redis:7 local/redis:bookworm
use_local NGINX_IMAGE nginx:1.27 local/nginx:bookworm

# A TLS-intercepting proxy's CA (installed the Debian way on this host) for
# cargo inside the build.
if [ -z "${EXTRA_CA_CERTS:-}" ] && compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    EXTRA_CA_CERTS=$(cat /usr/local/share/ca-certificates/*.crt)
    export EXTRA_CA_CERTS
fi

for p in "${PORTS[@]}"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        fail "port $p on 127.0.0.1 is taken (a stack still up? docker/run-stack.sh down)"
    fi
done

cleanup() {
    local rc=$?
    rm -f "${BODY:-}"
    if [ $rc -ne 0 ]; then
        echo "--- docker-compose ps / logs (tail) ---" >&2
        "${DC[@]}" ps >&2 || true
        "${DC[@]}" logs --no-color --tail=40 >&2 || true
    fi
    if [ "${KEEP:-0}" = 1 ]; then
        log "KEEP=1: stack left running (docker/run-stack.sh down removes it)"
    else
        log "tearing down"
        "${DC[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
    fi
    log "total ${SECONDS}s, $([ $rc -eq 0 ] && echo PASS || echo FAIL)"
}
trap cleanup EXIT

log "building tollgate:local (docker/Dockerfile; first build compiles everything)"
t=$SECONDS
"${DC[@]}" build migrate
echo "build: $((SECONDS - t))s"

t=$SECONDS
if [ "${ORDERED:-0}" = 1 ]; then
    log "starting the stack (compose order: migrate first, then the replicas)"
    "${DC[@]}" up -d --no-build
else
    # The hard case first: the three replicas start at the same moment on
    # an empty database, before the migrate service, so they race to
    # migrate it (the advisory lock makes them take turns). Then the rest;
    # the migrate service finds nothing left to do.
    log "starting PostgreSQL, Redis and the mock"
    "${DC[@]}" up -d --no-build postgres redis mock
    for _ in $(seq 1 60); do
        "${DC[@]}" exec -T postgres pg_isready -q -h 127.0.0.1 -p 55432 && break
        sleep 1
    done
    log "starting the three replicas at once on the empty database"
    "${DC[@]}" up -d --no-build --no-deps gateway-1 gateway-2 gateway-3
    log "starting the rest (migrate, load balancer)"
    "${DC[@]}" up -d --no-build
fi
"${DC[@]}" ps

# Healthy: the balancer answers and every replica reports healthy.
wait_ready() {  # url
    local i
    for i in $(seq 1 120); do
        if curl -sf --max-time 2 "$1/health/readiness" | grep -q '"status":"healthy"'; then
            return 0
        fi
        sleep 1
    done
    curl -s --max-time 2 "$1/health/readiness" || true
    return 1
}
for p in "${REPLICA_PORTS[@]}"; do
    wait_ready "http://127.0.0.1:$p" || fail "replica on $p not healthy"
done
wait_ready "$LB" || fail "load balancer not answering"
echo "stack up and healthy: $((SECONDS - t))s"
curl -s "$LB/health/readiness"
echo

log "migrations"
# restart: unless-stopped would hide a replica that died migrating.
for svc in gateway-1 gateway-2 gateway-3; do
    id=$("${DC[@]}" ps -q "$svc")
    restarts=$(docker inspect -f '{{.RestartCount}}' "$id")
    applied=$(docker logs "$id" 2>&1 | sed "s/\x1b\[[0-9;]*m//g" | grep -o "applied=[0-9]*" | head -n1 || true)
    applied=${applied#applied=}
    echo "$svc: restarts $restarts, migrations applied at its start-up: ${applied:-0}"
    [ "$restarts" = 0 ] || fail "$svc restarted $restarts time(s): $(docker logs --tail 5 "$id" 2>&1)"
done
mig_id=$("${DC[@]}" ps -q migrate)
mig_rc=$(docker inspect -f '{{.State.ExitCode}}' "$mig_id")
[ "$mig_rc" = 0 ] || fail "migrate service exited $mig_rc"
docker logs "$mig_id" 2>&1 | tail -n 2
n_mig=$("${DC[@]}" exec -T postgres psql -U tollgate -d tollgate -Atc \
    'SELECT count(*) FROM __diesel_schema_migrations')
n_dirs=$(find ../migrations/postgres -mindepth 1 -maxdepth 1 -type d | wc -l)
echo "__diesel_schema_migrations: $n_mig rows, migrations/postgres: $n_dirs"
[ "$(echo "$n_mig" | tr -d '[:space:]')" = "$n_dirs" ] || fail "schema migrations: $n_mig rows, expected $n_dirs"

M="Authorization: Bearer $TOLLGATE_MASTER_KEY"
J="Content-Type: application/json"
CHAT='{"model":"mock-gpt","messages":[{"role":"user","content":"Hello from run-stack.sh"}]}'

BODY=$(mktemp)
# POST $2 to $LB$1 with key $3; prints "status replica", the body in $BODY.
post() {
    local hdrs status
    hdrs=$(mktemp)
    status=$(curl -s --max-time 10 -D "$hdrs" -o "$BODY" -w '%{http_code}' "$LB$1" \
        -H "Authorization: Bearer $3" -H "$J" -d "$2") || true
    printf '%s %s\n' "$status" \
        "$(tr -d '\r' <"$hdrs" | awk -F': ' 'tolower($1)=="x-tollgate-replica" {print $2}')"
    rm -f "$hdrs"
}

log "chat completions through the balancer (master key)"
declare -A seen=()
for i in $(seq 1 9); do
    read -r status replica < <(post /v1/chat/completions "$CHAT" "$TOLLGATE_MASTER_KEY")
    echo "request $i: $status via ${replica:-?}"
    [ "$status" = 200 ] || fail "chat completion $i: HTTP $status: $(cat "$BODY")"
    seen[${replica:-none}]=1
done
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("answer:", d["choices"][0]["message"]["content"][:60])' \
    "$BODY"
[ "${#seen[@]}" -eq 3 ] || fail "requests reached ${#seen[@]} replica(s), not 3: ${!seen[*]}"
echo "reached all 3 replicas: ${!seen[*]}"

log "streaming through the balancer"
stream=$(curl -sN --max-time 20 "$LB/v1/chat/completions" -H "$M" -H "$J" \
    -d '{"model":"mock-gpt","stream":true,"messages":[{"role":"user","content":"Hello"}]}')
echo "$stream" | grep -c '^data: {' | xargs echo "chunks:"
echo "$stream" | grep -q '^data: \[DONE\]' || fail "stream did not end with [DONE]"

log "virtual key: generate through the balancer, use it on every replica"
gen=$(curl -s --max-time 10 "$LB/key/generate" -H "$M" -H "$J" \
    -d '{"key_alias":"run-stack","models":["mock-gpt"],"max_budget":5,"rpm_limit":100}')
KEY=$(printf '%s' "$gen" | python3 -c 'import sys,json; print(json.load(sys.stdin)["key"])') ||
    fail "/key/generate: $gen"
echo "key: ${KEY:0:12}..."
unset seen
declare -A seen=()
for i in $(seq 1 6); do
    read -r status replica < <(post /v1/chat/completions "$CHAT" "$KEY")
    echo "request $i with the virtual key: $status via ${replica:-?}"
    [ "$status" = 200 ] || fail "virtual key request $i: HTTP $status: $(cat "$BODY")"
    seen[${replica:-none}]=1
done
[ "${#seen[@]}" -eq 3 ] || fail "virtual key requests reached ${#seen[@]} replica(s), not 3"
read -r status _ < <(post /v1/chat/completions \
    '{"model":"mock-embedding","messages":[{"role":"user","content":"x"}]}' "$KEY")
echo "a model outside the key's list: $status"
[ "$status" = 403 ] || fail "expected 403 for a model outside the key's list, got $status"

log "block the key through the balancer: every replica refuses it"
curl -sf --max-time 10 "$LB/key/block" -H "$M" -H "$J" -d "{\"key\":\"$KEY\"}" >/dev/null ||
    fail "/key/block failed"
for p in "${REPLICA_PORTS[@]}"; do
    refused=""
    for _ in $(seq 1 50); do
        s=$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$p/v1/chat/completions" \
            -H "Authorization: Bearer $KEY" -H "$J" -d "$CHAT")
        if [ "$s" = 401 ]; then refused=1; break; fi
        sleep 0.1
    done
    [ -n "$refused" ] || fail "replica on $p still accepts the blocked key (last status $s)"
    echo "replica :$p refuses the blocked key (401)"
done

log "one rate limit for the fleet: rpm_limit 6 through three replicas"
gen=$(curl -s --max-time 10 "$LB/key/generate" -H "$M" -H "$J" \
    -d '{"key_alias":"run-stack-rpm","models":["mock-gpt"],"rpm_limit":6}')
RKEY=$(printf '%s' "$gen" | python3 -c 'import sys,json; print(json.load(sys.stdin)["key"])') ||
    fail "/key/generate: $gen"
ok=0; limited=0
for i in $(seq 1 15); do
    read -r status replica < <(post /v1/chat/completions "$CHAT" "$RKEY")
    echo "request $i with rpm_limit 6: $status via ${replica:-?}"
    case $status in
        200) ok=$((ok + 1)) ;;
        429) limited=$((limited + 1)) ;;
        *) fail "rpm key request $i: HTTP $status: $(cat "$BODY")" ;;
    esac
done
# A minute turning mid-loop lets at most one more in (sliding window).
{ [ "$ok" -ge 6 ] && [ "$ok" -le 7 ]; } ||
    fail "rpm_limit 6 admitted $ok of 15 across the replicas (3 × 6 = 18 if each counted alone)"
echo "admitted $ok, refused $limited: the limit is the fleet's, not each replica's"

log "per-replica request counters (/metrics)"
for p in "${REPLICA_PORTS[@]}"; do
    n=$(curl -s --max-time 5 "http://127.0.0.1:$p/metrics" |
        awk '/^tollgate_requests_total\{/ {s += $NF} END {print s + 0}')
    echo "replica :$p tollgate_requests_total = $n"
    [ "${n%.*}" -gt 0 ] || fail "replica on $p served no requests"
done

log "all checks passed"
