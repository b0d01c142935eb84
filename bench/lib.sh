# Sourced by ab.sh and instructions.sh: the gateway setups they compare.
# Uses MODE and T; vk-pg databases are appended to DBS (drop_dbs drops them).

# bench_config NAME MOCK_PORT GATEWAY_PORT WORKERS TAG: side NAME's gateway
# config on stdout. vk-sqlite and vk-pg spend to a database of the side's
# own (vk-pg: TAG_NAME_PID on 127.0.0.1:5432); in obs, side b logs to
# Langfuse and OTLP, both received by its mock, in batches of $OBS_BATCH
# records (100, the gateway's default, if unset).
bench_config() {
  local name=$1 MP=$2 GP=$3 workers=$4 tag=$5 url="" dest=""
  case $MODE in
    vk-sqlite) url="sqlite://$T/$name.db";;
    vk-pg) local db=${tag}_${name}_$$
      psql -q -h 127.0.0.1 -U postgres -c "create database $db" >/dev/null
      DBS+=($db); url="postgres://postgres@127.0.0.1:5432/$db";;
    obs) [[ $name == b ]] && dest="
[[logging.destinations]]
kind = \"langfuse\"
host = \"http://127.0.0.1:$MP\"
public_key = \"pk-lf-bench\"
secret_key = \"sk-lf-bench\"
batch_size = ${OBS_BATCH:-100}
[[logging.destinations]]
kind = \"otel\"
endpoint = \"http://127.0.0.1:$MP/v1/traces\"
batch_size = ${OBS_BATCH:-100}";;
    *) echo "unknown mode $MODE" >&2; return 2;;
  esac
  echo 'master_key = "sk-master-bench"'
  [[ -n $url ]] && echo "database_url = \"$url\""
  printf '[server]\nhost = "127.0.0.1"\nport = %s\nworkers = %s\n[storage]\nredis_prefix = "%s-%s-%s"\n[logging]\nlevel = "warn"\nrequest_log = "off"\n%s\n' $GP $workers $tag $name $$ "$dest"
  # Priced (gpt-4o-mini's list prices), so that every request has a cost
  # and spend = spend + x reaches the key, as with real traffic: unpriced,
  # the spend writer skips the increments and only the log rows are paid.
  printf '[[models.bench-gpt.deployments]]\nprovider = "openai_compatible"\nmodel = "mock-gpt"\napi_base = "http://127.0.0.1:%s/v1"\napi_key = "sk-up"\ninput_cost_per_token = 0.00000015\noutput_cost_per_token = 0.0000006\n' $MP
  # CONF_A / CONF_B: TOML appended to that side's config (to compare two
  # settings of one build, e.g. CONF_B=$'[spend]\nmax_batch = 20000').
  local extra=CONF_${name^^}
  [[ -n ${!extra:-} ]] && printf '%s\n' "${!extra}"
  return 0
}

# Drops the databases bench_config made (FORCE: a gateway still shutting
# down may hold connections).
drop_dbs() {
  local d
  for d in ${DBS[@]:-}; do
    psql -q -h 127.0.0.1 -U postgres -c "drop database if exists $d with (force)" >/dev/null 2>&1
  done
}
