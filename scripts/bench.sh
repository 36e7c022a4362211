#!/usr/bin/env bash
# The benchmark suite: migsnap against the commands it replaces, on a
# synthetic project from scripts/gen_project.py, with medians of several runs
# and the ratios docs/performance.md quotes, all measured in the same run.
#
#   scripts/bench.sh [--migrations 1000|5000] [--runs N] [--quick] [options]
#
#   --migrations N   project size: 1000 (20 apps x 50) or 5000 (50 x 100); default 1000
#   --runs N         runs per fast case (default 5); medians are reported
#   --cold-runs N    runs of the slow cases: migrate cold, incremental (default min(3, runs))
#   --bulk-mb N      SQL size of the large-dump case in MiB (default 1024; 0 skips it)
#   --key-files N    migration files for the `key` scaling case (default 10000; 0 skips it)
#   --rtt-ms X       round trip added by the latency case (default 2; 0 skips it)
#   --server-dir DIR put the embedded server there (default: in the temp dir), e.g.
#                    on a tmpfs (/dev/shm/…) to see what the disk costs; removed at the end
#   --quick          a small project and few runs, to check the script itself
#   --out FILE       also write the report to FILE
#   --keep           keep the temp dir (and the server) for a look afterwards
#
# Uses the embedded server in a temp dir, or MIGSNAP_SERVER_URL if set (the
# role needs CREATEDB). Everything happens under a fresh temp dir that is
# removed at the end. The report (Markdown) goes to stdout, progress to stderr.
# Benchmarks are not tests: nothing here fails on a slow number, only on a
# wrong one (a prepare that did not take the path the case is about).
#
# The rest of the suite, one script each (same conventions, see BENCHMARKS.md):
#   scripts/bench_scale.sh    the scale curve: 500-5,000 tables and projects of
#                             1,000/5,000 migrations, warm / pool / cache against
#                             raw clones, createdb + psql -1, pg_restore -j 2
#   scripts/bench_peers.sh    the pytest plugin against pytest-django --reuse-db,
#                             django-migrations-ci and django-pg-baseline
#   scripts/bench_early.sh    what the first test waits for its database, with the
#                             plugin's early start and without
#   scripts/bench_insight.sh  plan / sql / lint / schema / diff on 1,000 migrations
#   scripts/bench_remote.sh   a fresh machine, from the shared snapshot store
#   scripts/bench_reflink.sh  clones on PostgreSQL 18 with reflink (XFS image)
set -euo pipefail
# The whole script is one compound command, so bash parses all of it before
# running any: editing the file while a long bench runs cannot derail it.
{
source "$(dirname "$0")/lib.sh"
cd "$root"

migrations=1000 runs=5 cold_runs='' bulk_mb=1024 key_files=10000 rtt_ms=2 quick='' out='' keep='' server_dir='' server_dir_made='' wide_tables=1000
# --quick sets small defaults first, so explicit options still win.
for arg in "$@"; do
  if [ "$arg" = --quick ]; then
    quick=1 migrations=100 runs=2 cold_runs=1 bulk_mb=16 key_files=2000 wide_tables=200
  fi
done
while [ $# -gt 0 ]; do
  case "$1" in
    --migrations) migrations=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --cold-runs) cold_runs=$2; shift 2 ;;
    --bulk-mb) bulk_mb=$2; shift 2 ;;
    --key-files) key_files=$2; shift 2 ;;
    --rtt-ms) rtt_ms=$2; shift 2 ;;
    --server-dir) server_dir=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --out) out=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
cold_runs=${cold_runs:-$(( runs < 3 ? runs : 3 ))}
case "$migrations" in
  1000) gen_args=(--size 1000) ;;
  5000) gen_args=(--size 5000) ;;
  *) gen_args=(--apps 5 --migrations-per-app $(( migrations / 5 ))) ;;
esac

bench_messages bench

# ---------------------------------------------------------------- setup

scripts/venv.sh
ensure_postgres
if [ ! -x /usr/bin/time ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing GNU time (for peak memory)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
  else
    die "/usr/bin/time (GNU time) is needed for peak memory: apt-get install time"
  fi
fi
for tool in zstdcat psql python3; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
bench_build
bench_workdir migsnap-bench
res="$work/results"
mkdir -p "$res" "$work/cache"
export MIGSNAP_CACHE_DIR="$work/cache" MIGSNAP_PYTHON="$python" NO_COLOR=1
unset DJANGO_SETTINGS_MODULE VIRTUAL_ENV
proxy_pid=''
cleanup() {
  if [ -n "$proxy_pid" ]; then kill "$proxy_pid" 2>/dev/null || true; fi
  if [ -n "$keep" ]; then
    log "kept $work"
    return
  fi
  if [ -z "${MIGSNAP_SERVER_URL:-}" ]; then
    "$bin" server stop -q >/dev/null 2>&1 || true
    if [ -n "$server_dir_made" ]; then rm -rf "$server_dir"; fi
  elif [ -n "${admin_db:-}" ]; then
    # Someone else's server: drop exactly the databases this run made.
    local db
    for db in $made bench_migrated bench_raw bench_psql bench_clone bench_empty bench_wide test_bench \
      test_bench_inc test_bulk test_bench_gw{0..7}; do
      drop_db "$db" >/dev/null 2>&1 || true
    done
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# A unique key salt, so that on a shared server this run's snapshots are its own.
salt="bench-$(date +%s)-$$"
made=''  # templates this run created
write_config() {  # write_config DIR [clone-strategy]
  {
    printf 'key-salt = "%s"\n' "$salt"
    if [ -n "${2:-}" ]; then printf 'clone-strategy = "%s"\n' "$2"; fi
  } >"$1/migsnap.toml"
}

if [ -z "${MIGSNAP_SERVER_URL:-}" ]; then
  if [ -n "$server_dir" ]; then
    [ -e "$server_dir" ] && die "--server-dir $server_dir exists; give a new path (it is removed at the end)"
    mkdir -p "$(dirname "$server_dir")"
    server_dir_made=1
    export MIGSNAP_SERVER_DIR="$server_dir"
  else
    export MIGSNAP_SERVER_DIR="$work/server"
  fi
  log "starting the embedded server in $MIGSNAP_SERVER_DIR"
  "$bin" server start -q >/dev/null
  server_url=$("$bin" server url)
else
  server_url=$MIGSNAP_SERVER_URL
fi
# libpq environment (psql, and the generated project's settings.py) from the URL.
eval "$(libpq_env_of "$server_url")"
export PGHOST PGPORT PGUSER PGPASSWORD
export PGDATABASE=$admin_db

# psql for the bench's own bookkeeping, without NOTICEs ("does not exist, skipping").
sql() { PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 -d "$admin_db" -c "$1" >/dev/null; }
sql_value() { psql -X -At -v ON_ERROR_STOP=1 -d "$admin_db" -c "$1"; }
drop_db() {  # templates must be unflagged before they can be dropped
  if [ "$(sql_value "SELECT datistemplate FROM pg_database WHERE datname = '$1'")" = t ]; then
    sql "ALTER DATABASE \"$1\" IS_TEMPLATE false"
  fi
  sql "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)"
}
server_version=$(sql_value "SHOW server_version")
# migsnap's `default` clone strategy is FILE_COPY on the embedded server and
# the server's (WAL_LOG) elsewhere; the xdist case is repeated with the other.
if [ -z "${MIGSNAP_SERVER_URL:-}" ]; then
  strategy=file-copy alt_strategy=wal-log
else
  strategy='server default (wal-log)' alt_strategy=file-copy
fi

# ---------------------------------------------------------------- measuring

record() { echo "$2" >>"$res/$1.ms"; }  # record CASE MS
record_rss() { echo "$2" >>"$res/$1.rss"; }

# The `source` a `prepare --json` reported (from $work/last.out by default).
source_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["source"])' "${1:-$work/last.out}"; }
expect_source() {
  local got; got=$(source_of "${2:-$work/last.out}")
  [ "$got" = "$1" ] || die "expected prepare to use '$1' but it used '$got'"
}

rss_max() { [ -s "$res/$1.rss" ] && sort -n "$res/$1.rss" | tail -n 1 || echo ""; }
fmt_ms() {
  [ -n "$1" ] || { echo "–"; return; }
  awk -v t="$1" 'BEGIN {
    if (t < 10) printf "%.1f ms", t
    else if (t < 1000) printf "%.0f ms", t
    else if (t < 100000) printf "%.2f s", t / 1000
    else printf "%.0f s", t / 1000 }'
}
fmt_kib() { [ -n "$1" ] && awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }' || echo "–"; }
fmt_bytes() { awk -v b="$1" 'BEGIN { if (b < 1048576) printf "%.0f KiB", b / 1024; else if (b < 1073741824) printf "%.1f MiB", b / 1048576; else printf "%.2f GiB", b / 1073741824 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print ""; else printf "%.2f", a / b }'; }

template_of() { echo "migsnap_${1:0:16}"; }

# ---------------------------------------------------------------- projects

proj="$work/project"
log "generating the ${migrations}-migration project"
python3 scripts/gen_project.py "$proj" "${gen_args[@]}" 2>/dev/null
write_config "$proj"
n_migrations=$(find "$proj" -path '*/migrations/0*.py' | wc -l)
key=$("$bin" -C "$proj" key)
template=$(template_of "$key")

# ---------------------------------------------------------------- key

log "case: migsnap key (${n_migrations} files)"
"$bin" -C "$proj" key >/dev/null  # warm the page cache
for _ in $(seq "$runs"); do measure key "$bin" -C "$proj" key; done

if [ "$key_files" -gt 0 ]; then
  bigkey="$work/keyproject"
  per_app=100
  log "generating a ${key_files}-migration project for the key case"
  python3 scripts/gen_project.py "$bigkey" --apps $(( key_files / per_app )) --migrations-per-app $per_app 2>/dev/null
  key_n=$(find "$bigkey" -path '*/migrations/0*.py' | wc -l)
  "$bin" -C "$bigkey" key >/dev/null
  for _ in $(seq "$runs"); do measure key_big "$bin" -C "$bigkey" key; done
fi

# ---------------------------------------------------------------- migrate

migrate_into() {  # migrate_into DB: plain `manage.py migrate`, as a user without migsnap runs it
  cd "$proj" && PGDATABASE=$1 "$python" manage.py migrate -v 0
}
export -f migrate_into
export proj python
log "case: manage.py migrate into an empty database (${cold_runs} runs)"
for i in $(seq "$cold_runs"); do
  drop_db bench_migrated
  sql 'CREATE DATABASE bench_migrated'
  measure migrate_cold migrate_into bench_migrated
  log "  run $i: $(tail -n 1 "$res/migrate_cold.ms") ms"
done
log "case: manage.py migrate with nothing to do"
for _ in $(seq "$runs"); do measure migrate_noop migrate_into bench_migrated; done

# ---------------------------------------------------------------- snapshot

log "case: migsnap prepare, cold (builds the snapshot once)"
drop_db test_bench
measure migsnap_cold "$bin" -C "$proj" prepare --database test_bench --json
expect_source cold
made="$made $template"
dump="$work/cache/$key.sql.zst"
[ -f "$dump" ] || die "no dump at $dump"
dump_bytes=$(stat -c %s "$dump")
sql_bytes=$(zstdcat "$dump" | wc -c)
n_statements=$(zstdcat "$dump" | grep -c ';$' || true)
n_copies=$(zstdcat "$dump" | grep -c '^COPY ' || true)
template_bytes=$(sql_value "SELECT pg_database_size('$template')")
n_relations=$(psql -X -At -d bench_migrated -c "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace")

log "case: raw CREATE DATABASE … TEMPLATE vs migsnap warm (interleaved)"
for _ in $(seq "$runs"); do
  drop_db bench_raw
  measure createdb_raw psql -X -q -v ON_ERROR_STOP=1 -d "$admin_db" -c "CREATE DATABASE bench_raw TEMPLATE \"$template\""
  drop_db test_bench
  measure migsnap_warm "$bin" -C "$proj" prepare --database test_bench --json
  expect_source template
done
drop_db bench_raw

log "case: 8 × migsnap prepare in parallel (xdist-style)"
xdist() {  # xdist CASE: 8 prepares at once, wall time for all of them
  local case=$1 i t0 t1 pids=()
  for i in $(seq 0 7); do drop_db "test_bench_gw$i"; done
  t0=$(date +%s%N)
  for i in $(seq 0 7); do
    /usr/bin/time -f %M -o "$work/rss.gw$i" "$bin" -C "$proj" prepare --database "test_bench_gw$i" --json \
      >"$work/gw$i.out" 2>"$work/gw$i.err" &
    pids+=($!)
  done
  for i in $(seq 0 7); do
    wait "${pids[$i]}" || { cat "$work/gw$i.err" >&2; die "parallel prepare gw$i failed"; }
  done
  t1=$(date +%s%N)
  record "$case" "$(awk -v d=$(( (t1 - t0) / 1000 )) 'BEGIN { printf "%.1f", d / 1000 }')"
  for i in $(seq 0 7); do
    expect_source template "$work/gw$i.out"
    record_rss "$case" "$(tail -n 1 "$work/rss.gw$i")"
  done
}
for _ in $(seq "$runs"); do xdist xdist8; done

# ---------------------------------------------------------------- restore

restore_psql() {  # restore_psql DB [psql args]: what a user without migsnap would do with the dump
  local db=$1; shift
  set -o pipefail
  zstdcat "$dump" | psql -X -q -v ON_ERROR_STOP=1 "$@" -d "$db" >/dev/null
}
export -f restore_psql
export dump
log "case: restore the dump: psql, psql -1, migsnap cache (interleaved)"
for _ in $(seq "$runs"); do
  drop_db bench_psql; sql 'CREATE DATABASE bench_psql'
  measure psql_restore restore_psql bench_psql
  drop_db bench_psql; sql 'CREATE DATABASE bench_psql'
  measure psql1_restore restore_psql bench_psql -1
  # Like for like with migsnap, whose figure includes creating its database.
  drop_db bench_psql
  measure psql1_createdb bash -c 'psql -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE bench_psql" && restore_psql bench_psql -1'
  drop_db "$template"; drop_db test_bench
  measure migsnap_cache "$bin" -C "$proj" prepare --database test_bench --json
  expect_source cache
done
drop_db bench_psql

# ---------------------------------------------------------------- latency

rtt_note=''
if [ "$rtt_ms" != 0 ]; then
  log "case: restore through a TCP link with ${rtt_ms} ms added round trip"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  if [ "${PGHOST:0:1}" = / ]; then upstream="$PGHOST/.s.PGSQL.$PGPORT"; else upstream="$PGHOST:$PGPORT"; fi
  python3 scripts/delay_proxy.py "$port" "$upstream" --delay-ms "$(awk -v r="$rtt_ms" 'BEGIN { print r / 2 }')" \
    --ready-file "$work/proxy.ready" 2>"$work/proxy.err" &
  proxy_pid=$!
  for _ in $(seq 50); do [ -f "$work/proxy.ready" ] && break; sleep 0.1; done
  [ -f "$work/proxy.ready" ] || die "the delay proxy did not start: $(cat "$work/proxy.err")"
  slow_url=$(python3 -c 'import sys, urllib.parse as u; q = lambda s: u.quote(s, safe="")
user, pw, port, db = sys.argv[1:]
auth = q(user) + (":" + q(pw) if pw else "")
print(f"postgres://{auth}@127.0.0.1:{port}/{q(db)}")' "$PGUSER" "$PGPASSWORD" "$port" "$admin_db")
  # The round trip actually seen: 201 statements, each one round trip, less 1.
  t0=$(date +%s%N)
  PGHOST=127.0.0.1 PGPORT=$port psql -X -q -d "$admin_db" -c 'SELECT 1' >/dev/null
  t1=$(date +%s%N)
  for _ in $(seq 201); do echo 'SELECT 1;'; done >"$work/ping.sql"
  PGHOST=127.0.0.1 PGPORT=$port psql -X -q -d "$admin_db" -f "$work/ping.sql" >/dev/null
  t2=$(date +%s%N)
  rtt_seen=$(awk -v a=$(( t1 - t0 )) -v b=$(( t2 - t1 )) 'BEGIN { printf "%.2f", (b - a) / 200 / 1e6 }')
  lat_runs=$(( runs < 3 ? runs : 3 ))
  for _ in $(seq "$lat_runs"); do
    drop_db bench_psql; sql 'CREATE DATABASE bench_psql'
    measure psql_restore_rtt env PGHOST=127.0.0.1 PGPORT="$port" bash -c 'restore_psql bench_psql'
    drop_db "$template"; drop_db test_bench
    measure migsnap_cache_rtt env MIGSNAP_SERVER_URL="$slow_url" "$bin" -C "$proj" prepare --database test_bench --json
    expect_source cache
  done
  drop_db bench_psql
  kill "$proxy_pid" 2>/dev/null || true
  wait "$proxy_pid" 2>/dev/null || true
  proxy_pid=''
  rtt_note="measured round trip through the proxy: ${rtt_seen} ms"
fi

# ---------------------------------------------------------------- incremental

log "case: migsnap incremental (+1 migration), ${cold_runs} runs"
inc="$work/project_inc"
cp -a "$proj" "$inc"
python3 scripts/gen_project.py "$inc" --add-migration app001 >/dev/null
key_inc=$("$bin" -C "$inc" key)
made="$made $(template_of "$key_inc")"
# The base template must be on the server (the normal case after a warm run).
drop_db test_bench
"$bin" -C "$proj" prepare --database test_bench --json >"$work/base.out"
for _ in $(seq "$cold_runs"); do
  drop_db "$(template_of "$key_inc")"; drop_db test_bench_inc
  rm -f "$work/cache/$key_inc".*
  measure migsnap_incremental "$bin" -C "$inc" prepare --database test_bench_inc --json
  expect_source incremental
done
drop_db test_bench_inc; drop_db "$(template_of "$key_inc")"

# ---------------------------------------------------------------- clone strategy

# clone_cost LABEL TEMPLATE: raw CREATE DATABASE with each strategy, interleaved.
clone_sizes=()
clone_cost() {  # clone_cost LABEL TEMPLATE [RUNS]
  local label=$1 tpl=$2 s
  for _ in $(seq "${3:-$runs}"); do
    for s in WAL_LOG FILE_COPY; do
      drop_db bench_clone
      measure "clone_${label}_$s" psql -X -q -v ON_ERROR_STOP=1 -d "$admin_db" \
        -c "CREATE DATABASE bench_clone TEMPLATE \"$tpl\" STRATEGY = $s"
    done
  done
  clone_sizes+=("$label|$(sql_value "SELECT pg_database_size('bench_clone')")|$(psql -X -At -d bench_clone -c "SELECT count(*) FROM pg_class")")
  drop_db bench_clone
}
if [ "${server_version%%.*}" -ge 15 ] 2>/dev/null; then
  log "case: clone cost by strategy and size"
  drop_db bench_empty; sql 'CREATE DATABASE bench_empty'
  clone_cost empty bench_empty
  clone_cost schema "$template"
  # A wide schema without data: what a clone costs per relation.
  drop_db bench_wide; sql 'CREATE DATABASE bench_wide'
  for chunk in $(seq 0 200 $(( wide_tables - 1 ))); do  # 200 per transaction: lock table
    psql -X -q -v ON_ERROR_STOP=1 -d bench_wide -c "DO \$\$ BEGIN FOR i IN $(( chunk + 1 ))..$(( chunk + 200 < wide_tables ? chunk + 200 : wide_tables )) LOOP
      EXECUTE format('CREATE TABLE t%s (id bigint PRIMARY KEY, name text NOT NULL, created timestamptz)', i);
      EXECUTE format('CREATE INDEX ON t%s (created)', i);
    END LOOP; END \$\$"
  done
  clone_cost wide bench_wide $(( runs < 3 ? runs : 3 ))
  drop_db bench_wide
  log "case: 8 × prepare in parallel with clone-strategy = $alt_strategy"
  write_config "$proj" "$alt_strategy"
  for _ in $(seq "$runs"); do xdist xdist8_alt; done
  write_config "$proj"
  drop_db bench_empty
fi
for i in $(seq 0 7); do drop_db "test_bench_gw$i"; done
drop_db bench_migrated

# ---------------------------------------------------------------- large dump

if [ "$bulk_mb" -gt 0 ]; then
  log "case: large dump (~${bulk_mb} MiB of SQL): cold build, then cache restore"
  bulk="$work/bulk"
  python3 scripts/gen_project.py "$bulk" --apps 1 --migrations-per-app 3 2>/dev/null
  write_config "$bulk"
  last=$(basename "$(ls "$bulk"/app001/migrations/0*.py | sort | tail -n 1)" .py)
  # ~170 bytes of COPY text per row: id, md5, 4 × md5.
  rows=$(( bulk_mb * 1024 * 1024 / 170 ))
  cat >"$bulk/app001/migrations/0900_bulk_data.py" <<EOF
# A data migration that fills one table with ${rows} rows, for the bench's large-dump case.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("app001", "$last")]
    operations = [
        migrations.RunSQL(
            "CREATE TABLE bench_bulk (id bigint PRIMARY KEY, k text NOT NULL, payload text NOT NULL);"
            " INSERT INTO bench_bulk SELECT g, md5(g::text), repeat(md5(g::text), 4)"
            " FROM generate_series(1, ${rows}) AS g",
            "DROP TABLE bench_bulk",
        ),
    ]
EOF
  key_bulk=$("$bin" -C "$bulk" key)
  tpl_bulk=$(template_of "$key_bulk")
  made="$made $tpl_bulk"
  drop_db test_bulk
  measure bulk_cold "$bin" -C "$bulk" prepare --database test_bulk --json
  expect_source cold
  bulk_dump="$work/cache/$key_bulk.sql.zst"
  bulk_zst=$(stat -c %s "$bulk_dump")
  bulk_sql=$(zstdcat "$bulk_dump" | wc -c)
  drop_db test_bulk
  bulk_runs=$(( runs < 2 ? runs : 2 ))
  for _ in $(seq "$bulk_runs"); do
    drop_db "$tpl_bulk"; drop_db test_bulk
    measure bulk_cache "$bin" -C "$bulk" prepare --database test_bulk --json
    expect_source cache
  done
  drop_db test_bulk
  drop_db bench_psql; sql 'CREATE DATABASE bench_psql'
  measure bulk_psql env dump="$bulk_dump" bash -c 'restore_psql bench_psql'
  drop_db bench_psql
  clone_cost bulk "$tpl_bulk" "$bulk_runs"
fi

# ---------------------------------------------------------------- report

nproc_=$(nproc)
mem=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
cpu=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
load=$(cut -d' ' -f1-3 /proc/loadavg)
row() {  # row CASE LABEL [note]
  local c=$1
  [ -s "$res/$c.ms" ] || return 0
  printf '| %s | %s | %s | %s | %s | %s |\n' "$2" "$(fmt_ms "$(stat_of "$c" median)")" \
    "$(fmt_ms "$(stat_of "$c" min)")" "$(fmt_ms "$(stat_of "$c" max)")" "$(stat_of "$c" n)" "${3:-}"
}
rss_note() { local k; k=$(rss_max "$1"); [ -n "$k" ] && fmt_kib "$k" || echo ""; }
m() { stat_of "$1" median; }
verdict() {  # verdict VALUE OP LIMIT
  if [ -z "$1" ]; then echo "not measured"
  elif awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN { ok = op == "<=" ? v <= l : op == ">=" ? v >= l : op == "<" ? v < l : v > l; exit !ok }'
  then echo "met"; else echo "**missed**"; fi
}

report() {
  echo "## migsnap benchmark"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); command: \`scripts/bench.sh $bench_args\`"
  echo "- machine: ${nproc_} CPUs (${cpu}), ${mem} RAM; load average at the end: ${load}"
  echo "- PostgreSQL ${server_version} ($( [ -z "${MIGSNAP_SERVER_URL:-}" ] && echo "migsnap's embedded server: fsync off, Unix socket" || echo "server from MIGSNAP_SERVER_URL")); Django $("$python" -c 'import django; print(django.get_version())'); $("$bin" --version)"
  echo "- project: ${n_migrations} migrations (\`gen_project.py ${gen_args[*]}\`), ${n_relations} relations in public; template $(fmt_bytes "$template_bytes") on disk; dump $(fmt_bytes "$dump_bytes") zstd, $(fmt_bytes "$sql_bytes") SQL, ${n_statements} statements, ${n_copies} COPY blocks"
  if [ -z "${MIGSNAP_SERVER_URL:-}" ]; then
    echo "- embedded server dir: ${MIGSNAP_SERVER_DIR} ($(stat -f -c %T "$MIGSNAP_SERVER_DIR" 2>/dev/null || echo '?')); migsnap clone strategy: ${strategy}"
  else
    echo "- migsnap clone strategy: ${strategy}"
  fi
  echo "- runs: ${runs} per case (migrate cold and incremental: ${cold_runs}; latency: ${lat_runs:-0}; large dump: ${bulk_runs:-0}); times are wall clock per command, including process start; the psql restores exclude creating their empty database, migsnap's cache case includes creating one, promoting it to the template and cloning the target; peak RSS is GNU time's max RSS (for cold/incremental that is Django's Python, a child process)"
  echo
  echo "| case | median | min | max | runs | peak RSS |"
  echo "|---|---|---|---|---|---|"
  row migrate_cold "\`manage.py migrate\`, empty database (cold)"
  row migrate_noop "\`manage.py migrate\`, nothing to do"
  row createdb_raw "raw \`CREATE DATABASE … TEMPLATE\` via psql (floor)"
  row psql_restore "\`zstdcat dump \\| psql\` into an empty database"
  row psql1_restore "\`zstdcat dump \\| psql -1\`"
  row psql1_createdb "\`CREATE DATABASE\` + \`zstdcat dump \\| psql -1\`"
  row key "\`migsnap key\` (${n_migrations} files)" "$(rss_note key)"
  [ -n "${key_n:-}" ] && row key_big "\`migsnap key\` (${key_n} files)" "$(rss_note key_big)"
  row migsnap_cold "migsnap prepare: cold (migrate + dump + template)" "$(rss_note migsnap_cold)"
  row migsnap_warm "migsnap prepare: warm (template)" "$(rss_note migsnap_warm)"
  row migsnap_cache "migsnap prepare: cache (restore dump, make template, clone)" "$(rss_note migsnap_cache)"
  row migsnap_incremental "migsnap prepare: incremental (+1 migration)" "$(rss_note migsnap_incremental)"
  row xdist8 "migsnap prepare × 8 in parallel (wall, all 8)" "$(rss_note xdist8)"
  row xdist8_alt "… the same with \`clone-strategy = \"$alt_strategy\"\`" "$(rss_note xdist8_alt)"
  if [ -s "$res/psql_restore_rtt.ms" ]; then
    row psql_restore_rtt "\`zstdcat dump \\| psql\`, +${rtt_ms} ms RTT"
    row migsnap_cache_rtt "migsnap prepare: cache, +${rtt_ms} ms RTT" "$(rss_note migsnap_cache_rtt)"
  fi
  if [ -s "$res/bulk_cache.ms" ]; then
    row bulk_cold "large dump: migsnap prepare cold" "$(rss_note bulk_cold)"
    row bulk_cache "large dump: migsnap prepare cache" "$(rss_note bulk_cache)"
    row bulk_psql "large dump: \`zstdcat dump \\| psql\`"
  fi
  echo
  if [ -n "$rtt_note" ]; then echo "Latency: a userspace proxy (scripts/delay_proxy.py) delays each direction by $(awk -v r="$rtt_ms" 'BEGIN { print r / 2 }') ms; ${rtt_note}."; echo; fi
  if [ -n "${bulk_sql:-}" ]; then
    echo "Large dump: one table of ${rows} rows; $(fmt_bytes "$bulk_sql") of SQL, $(fmt_bytes "$bulk_zst") compressed. migsnap's peak RSS restoring it vs the ${n_migrations}-migration dump: $(rss_note bulk_cache) vs $(rss_note migsnap_cache)."
    echo
  fi

  if [ ${#clone_sizes[@]} -gt 0 ]; then
    echo "Clone cost by strategy (raw \`CREATE DATABASE … TEMPLATE … STRATEGY\` via psql, medians of ${runs} runs; wide and large dump: $(( runs < 3 ? runs : 3 )) and ${bulk_runs:-0}):"
    echo
    echo "| template | size | relations (pg_class) | WAL_LOG | FILE_COPY |"
    echo "|---|---|---|---|---|"
    local e label bytes rels
    local name
    for e in "${clone_sizes[@]}"; do
      IFS='|' read -r label bytes rels <<<"$e"
      case $label in
        empty) name="empty database" ;;
        schema) name="the ${n_migrations}-migration template" ;;
        wide) name="${wide_tables} tables with 2 indexes each, no rows" ;;
        bulk) name="the large-dump template (1 big table)" ;;
        *) name=$label ;;
      esac
      printf '| %s | %s | %s | %s | %s |\n' "$name" "$(fmt_bytes "$bytes")" "$rels" \
        "$(fmt_ms "$(m "clone_${label}_WAL_LOG")")" "$(fmt_ms "$(m "clone_${label}_FILE_COPY")")"
    done
    echo
  fi

  echo "Targets:"
  echo
  echo "| target | measured | |"
  echo "|---|---|---|"
  local r
  r=$(ratio "$(m migsnap_warm)" "$(m createdb_raw)")
  echo "| warm ≤ 1.5 × raw createdb -T | ${r}× | $(verdict "$r" "<=" 1.5) |"
  r=$(ratio "$(m migrate_cold)" "$(m migsnap_warm)")
  echo "| warm ≥ 50 × faster than migrate cold | ${r}× | $(verdict "$r" ">=" 50) |"
  local best; best=$(awk -v a="$(m psql_restore)" -v b="$(m psql1_restore)" 'BEGIN { print (a < b ? a : b) }')
  r=$(ratio "$best" "$(m migsnap_cache)")
  echo "| cache faster than the faster of psql / psql -1 | ${r}× faster | $(verdict "$r" ">" 1) |"
  r=$(ratio "$(m psql1_createdb)" "$(m migsnap_cache)")
  echo "| (like for like: cache vs CREATE DATABASE + psql -1) | ${r}× faster | $(verdict "$r" ">" 1) |"
  if [ -s "$res/migsnap_cache_rtt.ms" ]; then
    r=$(ratio "$(m psql_restore_rtt)" "$(m migsnap_cache_rtt)")
    echo "| over ${rtt_ms} ms RTT, cache ≥ 5 × faster than psql | ${r}× | $(verdict "$r" ">=" 5) |"
  fi
  r=$(ratio "$(m migrate_cold)" "$(m migsnap_incremental)")
  echo "| incremental ≥ 4 × faster than migrate cold | ${r}× | $(verdict "$r" ">=" 4) |"
  if [ -n "${key_n:-}" ]; then
    echo "| key over ${key_n} files < 100 ms | $(fmt_ms "$(m key_big)") | $(verdict "$(m key_big)" "<" 100) |"
  fi
  echo "| 8 parallel clones < 1 s | $(fmt_ms "$(m xdist8)") | $(verdict "$(m xdist8)" "<" 1000) |"
  local peak=0 c k
  for c in key key_big migsnap_warm migsnap_cache migsnap_cache_rtt xdist8 bulk_cache; do
    k=$(rss_max "$c"); [ -n "$k" ] && [ "$k" -gt "$peak" ] && peak=$k
  done
  echo "| peak memory < 64 MiB (key, warm, cache, xdist, large restore) | $(fmt_kib "$peak") | $(verdict "$peak" "<" 65536) |"
}
bench_args="--migrations $migrations --runs $runs --cold-runs $cold_runs --bulk-mb $bulk_mb --key-files $key_files --rtt-ms $rtt_ms${server_dir:+ --server-dir $server_dir}"
if [ -n "$out" ]; then report | tee "$out"; else report; fi
exit
}
