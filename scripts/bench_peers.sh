#!/usr/bin/env bash
# Issue #12's peers on the generated 1,000-migration project: the wall time of
# a whole `pytest` session that runs ONE database test, warm (everything
# cached by earlier runs), with pytest-django's own `--reuse-db`, with
# django-migrations-ci, with django-pg-baseline and with migsnap's pytest
# plugin, against the same session running a test that needs no database.
#
#   scripts/bench_peers.sh [--runs N] [--keep]
#
#   --runs N   timed runs per case (default 5), interleaved across the cases
#              so that load from other work hits all of them alike; medians
#   --keep     keep the temp dir (and the server) for a look afterwards
#
# The cases (each its own test database on one embedded PostgreSQL server):
#   nodb          `pytest test_nodb.py`: `def test_nodb(): pass`, the session's
#                 own cost (Python, Django, collection), no database
#   reuse         `pytest --reuse-db`: the test database kept from the run before
#   migrateci     `pytest --migrateci --reuse-db` (django-migrations-ci's README),
#                 the test database kept
#   migrateci-ci  the same with the test database dropped before each run, as on
#                 a fresh CI server: migrateci loads its cached dump
#   pg-baseline   `pytest` with django-pg-baseline in INSTALLED_APPS: each run
#                 creates the test database and loads baseline.sql with psql
#   migsnap       `pytest` with migsnap's plugin (`migsnap = true`): a clone of
#                 the template (or a ready pool database)
#   migsnap-noverify  the same with `migsnap_verify = false`: no comparison of
#                 the migrations Django knows with the clone's django_migrations
# and the CLI floor: `migsnap prepare` warm (target absent) and a raw
# `CREATE DATABASE … TEMPLATE <migsnap's template>` with psql.
#
# Each case's first run is timed apart ("first run"): for reuse, migrateci and
# migsnap it is cold (nothing cached: a whole migrate; migsnap's with the CLI,
# as its plugin deadlocks on a cold build of this project, see below). The peers are installed
# (pinned, from PyPI) into target/bench-peers-venv. Every timed run is checked
# (the test database has every migration row; nothing was migrated when it
# should not be; migsnap's summary says `from template`/`from pool`…). The
# report (Markdown) goes to stdout, progress to stderr. Nothing fails on a slow
# number, only on a wrong result.
set -euo pipefail
# One compound command: bash parses all of it before running any.
{
source "$(dirname "$0")/lib.sh"
cd "$root"

runs=5 keep=''
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench_peers: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
bench_messages bench_peers
[ "$runs" -ge 1 ] 2>/dev/null || die "--runs wants a number >= 1"

# ---------------------------------------------------------------- setup

scripts/venv.sh
ensure_postgres
[ -x /usr/bin/time ] || die "/usr/bin/time (GNU time) is needed: apt-get install time"
bench_build

# The peers, pinned, in a venv of this bench's own (the project's .venv stays
# as tests/requirements.txt makes it). Rebuilt when the pins change.
peers=(Django==5.2.8 'psycopg[binary]==3.2.12' pytest==8.4.2 pytest-django==4.11.1
  pytest-xdist==3.8.0 django-migrations-ci==0.14 django-pg-baseline==0.3.1)
pinned_venv bench-peers-venv "${peers[@]}"

bench_workdir migsnap-bench-peers
res="$work/results"
mkdir -p "$res" "$work/cache" "$work/migrateci"
export MIGSNAP_CACHE_DIR="$work/cache" MIGSNAP_SERVER_DIR="$work/server" MIGSNAP_PYTHON="$py" \
  MIGSNAP_BIN="$bin" NO_COLOR=1
unset DJANGO_SETTINGS_MODULE VIRTUAL_ENV MIGSNAP_SERVER_URL PYTHONPATH
bench_cleanup

log "starting the embedded server in $MIGSNAP_SERVER_DIR"
"$bin" server start -q >/dev/null
eval "$(libpq_env_of "$("$bin" server url)")"
export PGHOST PGPORT PGUSER PGPASSWORD
sql() { PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 -d "$admin_db" -c "$1" >/dev/null; }
sql_value() { psql -X -At -v ON_ERROR_STOP=1 -d "${2:-$admin_db}" -c "$1"; }
drop_db() { sql "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)"; }

proj="$work/project"
log "generating the 1,000-migration project"
python3 scripts/gen_project.py "$proj" --size 1000 >/dev/null 2>&1
n_files=$(find "$proj" -path '*/migrations/0*.py' | wc -l)

# Settings of the peers' cases: the project's own plus what each README asks.
cat >"$proj/benchproj/settings_migrateci.py" <<EOF
from .settings import *  # noqa: F401,F403

INSTALLED_APPS = INSTALLED_APPS + ["django_migrations_ci"]  # noqa: F405
MIGRATECI_LOCATION = "$work/migrateci"
MIGRATECI_PYTEST = True
EOF
cat >"$proj/benchproj/settings_baseline.py" <<EOF
from .settings import *  # noqa: F401,F403

INSTALLED_APPS = INSTALLED_APPS + ["django_pg_baseline"]  # noqa: F405
PG_BASELINE = {"BASELINE_DIR": "$proj/baseline-sql"}
EOF
# One ini file per case, so that each enables only its own tool.
for s in plain:settings migrateci:settings_migrateci baseline:settings_baseline; do
  printf '[pytest]\nDJANGO_SETTINGS_MODULE = benchproj.%s\n' "${s#*:}" >"$proj/pytest-${s%%:*}.ini"
done
printf '[pytest]\nDJANGO_SETTINGS_MODULE = benchproj.settings\nmigsnap = true\n' >"$proj/pytest-migsnap.ini"
printf '[pytest]\nDJANGO_SETTINGS_MODULE = benchproj.settings\nmigsnap = true\nmigsnap_verify = false\n' \
  >"$proj/pytest-migsnap-noverify.ini"

# The one database test. It also writes what it saw (BENCH_FACTS), for the
# checks: the database, its oid (a new one when it was recreated), the
# django_migrations rows and when they were applied, the tables.
cat >"$proj/test_one.py" <<'EOF'
import json
import os

from django.contrib.auth.models import User
from django.db import connection


def test_one(db):
    assert User.objects.count() == 0
    with connection.cursor() as c:
        c.execute(
            "SELECT current_database(), (SELECT oid FROM pg_database WHERE datname = current_database()),"
            " count(*), extract(epoch FROM min(applied)), extract(epoch FROM max(applied)),"
            " (SELECT count(*) FROM pg_tables WHERE schemaname = 'public') FROM django_migrations"
        )
        name, oid, rows, lo, hi, tables = c.fetchone()
    if os.environ.get("BENCH_FACTS"):
        with open(os.environ["BENCH_FACTS"], "w") as f:
            json.dump({"db": name, "oid": int(oid), "rows": rows, "min": float(lo),
                       "max": float(hi), "tables": tables}, f)
EOF
printf 'def test_nodb():\n    pass\n' >"$proj/test_nodb.py"

# ---------------------------------------------------------------- cases

no_peers=(-p no:migrateci -p no:django_pg_baseline)
# migsnap's CLI; it finds the template the plugin uses (the key takes
# manage.py's default settings module when none is named).
mig=("$bin")
# case_cmd CASE: the command line of a case (run in the project).
case_cmd() {
  local pt=("$py" -m pytest -q)
  case "$1" in
    nodb) cmd=(env PGDATABASE=nodb "${pt[@]}" -c pytest-plain.ini "${no_peers[@]}" test_nodb.py) ;;
    reuse) cmd=(env PGDATABASE=reuse "${pt[@]}" -c pytest-plain.ini "${no_peers[@]}" --reuse-db test_one.py) ;;
    migrateci) cmd=(env PGDATABASE=mci "${pt[@]}" -c pytest-migrateci.ini -p no:django_pg_baseline
      --migrateci --reuse-db test_one.py) ;;
    migrateci-ci) cmd=(env PGDATABASE=mcici "${pt[@]}" -c pytest-migrateci.ini -p no:django_pg_baseline
      --migrateci --reuse-db test_one.py) ;;
    pg-baseline) cmd=(env PGDATABASE=base "${pt[@]}" -c pytest-baseline.ini -p no:migrateci test_one.py) ;;
    migsnap) cmd=(env PGDATABASE=snap PYTHONPATH="$root/python" "${pt[@]}" -c pytest-migsnap.ini
      "${no_peers[@]}" -p migsnap.pytest_plugin test_one.py) ;;
    migsnap-noverify) cmd=(env PGDATABASE=snapnv PYTHONPATH="$root/python" "${pt[@]}" -c pytest-migsnap-noverify.ini
      "${no_peers[@]}" -p migsnap.pytest_plugin test_one.py) ;;
    cli-prepare) cmd=("${mig[@]}" prepare --database bench_cli --json) ;;
    raw-template) cmd=(psql -X -q -v ON_ERROR_STOP=1 -d "$admin_db" -c "CREATE DATABASE bench_raw TEMPLATE \"$template\"") ;;
    *) die "no case $1" ;;
  esac
}
test_db_of() {
  case "$1" in
    reuse) echo test_reuse ;; migrateci) echo test_mci ;; migrateci-ci) echo test_mcici ;;
    pg-baseline) echo test_base ;; migsnap) echo test_snap ;; migsnap-noverify) echo test_snapnv ;; cli-prepare) echo bench_cli ;;
    raw-template) echo bench_raw ;; *) echo '' ;;
  esac
}
# before CASE: the untimed step before a run.
before() {
  case "$1" in
    migrateci-ci|cli-prepare|raw-template) drop_db "$(test_db_of "$1")" ;;
  esac
}
fact() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$work/facts.json" "$1"; }
declare -A last_oid
# check CASE START: that the run just made did what the case claims.
check() {
  local c=$1 start=$2 db oid rows tables lo hi
  db=$(test_db_of "$c")
  case "$c" in
    nodb) grep -q '1 passed' "$work/last.out" || die "nodb: the test did not pass"; return ;;
    cli-prepare)
      local src
      src=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["source"])' "$work/last.out")
      case "$src" in template|pool) ;; *) die "cli-prepare: prepare used '$src', not the template or the pool" ;; esac
      echo "$src" >>"$res/$c.source"
      rows=$(sql_value "SELECT count(*) FROM django_migrations" bench_cli)
      [ "$rows" = "$want_rows" ] || die "cli-prepare: bench_cli has $rows migration rows, not $want_rows"
      return ;;
    raw-template)
      rows=$(sql_value "SELECT count(*) FROM django_migrations" bench_raw)
      [ "$rows" = "$want_rows" ] || die "raw-template: bench_raw has $rows migration rows, not $want_rows"
      return ;;
  esac
  grep -q '1 passed' "$work/last.out" || { cat "$work/last.out" >&2; die "$c: the test did not pass"; }
  [ -s "$work/facts.json" ] || die "$c: the test wrote no facts"
  [ "$(fact db)" = "$db" ] || die "$c: the test ran in $(fact db), not $db"
  rows=$(fact rows) tables=$(fact tables) oid=$(fact oid) lo=$(fact min) hi=$(fact max)
  [ "$rows" = "$want_rows" ] || die "$c: $db has $rows migration rows, not $want_rows"
  [ "$tables" = "$want_tables" ] || die "$c: $db has $tables tables, not $want_tables"
  case "$c" in
    reuse|migrateci)  # kept: the same database, nothing migrated this session
      [ "$oid" = "${last_oid[$c]}" ] || die "$c: $db was recreated (oid ${last_oid[$c]} -> $oid)"
      awk -v h="$hi" -v s="$start" 'BEGIN { exit !(h < s) }' || die "$c: migrations were applied during the session" ;;
    migrateci-ci)  # recreated, from migrateci's dump, not by migrate
      [ "$oid" != "${last_oid[$c]:-}" ] || die "$c: $db was not recreated"
      awk -v h="$hi" -v s="$start" 'BEGIN { exit !(h < s) }' || die "$c: migrations were applied during the session"
      compgen -G "$work/migrateci/migrateci-postgresql-default-*" >/dev/null || die "$c: no migrateci dump" ;;
    pg-baseline)  # recreated, from baseline.sql (whose rows carry the frozen date)
      [ "$oid" != "${last_oid[$c]:-}" ] || die "$c: $db was not recreated"
      awk -v l="$lo" -v h="$hi" 'BEGIN { exit !(l == 946684800 && h == 946684800) }' \
        || die "$c: django_migrations not from baseline.sql (applied $lo..$hi, frozen is 946684800)" ;;
    migsnap|migsnap-noverify)
      [ "$oid" != "${last_oid[$c]:-}" ] || die "$c: $db was not a new clone"
      awk -v h="$hi" -v s="$start" 'BEGIN { exit !(h < s) }' || die "$c: migrations were applied during the session"
      local line
      line=$(grep '^migsnap: ' "$work/last.out" || true)
      [[ $line =~ $db\ from\ (template|pool) ]] || die "$c: summary line is '$line', not from template/pool"
      echo "${BASH_REMATCH[1]}" >>"$res/$c.source" ;;
  esac
  last_oid[$c]=$oid
}
# run CASE LABEL: one timed run of CASE into LABEL.ms, checked.
run() {
  local c=$1 label=$2 start
  before "$c"
  case_cmd "$c"
  rm -f "$work/facts.json"
  start=$(date +%s.%N)
  measure "$label" "${cmd[@]}"
  if [ "$label" = "$c" ]; then check "$c" "$start"; fi
  log "$label: $(tail -n 1 "$res/$label.ms") ms"
}

cd "$proj"
# First runs, in an order that builds what the later ones need. migsnap's is
# its cold build (empty cache); the template it leaves gives the expected rows.
export BENCH_FACTS="$work/facts.json"
# migsnap's cold build goes through the CLI, so its first-run figure is the
# build alone. (Through the plugin it used to hang: a cold `prepare --json`
# prints ~150 KiB, more than a pipe holds, and the plugin read stderr to its
# end before stdout; fixed in 814180e.)
log "first run: migsnap (cold, with the CLI: builds the template, a whole migrate)"
measure migsnap.first "${mig[@]}" prepare --database test_snap --json
log "migsnap.first: $(tail -n 1 "$res/migsnap.first.ms") ms"
run migsnap migsnap.warmup
template="migsnap_$("${mig[@]}" key | cut -c1-16)"
# What the test saw in migsnap's clone; checked against Django's own migrate
# (reuse's first run) below.
want_rows=$(fact rows) want_tables=$(fact tables)
[ "$want_rows" -ge "$n_files" ] || die "migsnap's clone has $want_rows migration rows, fewer than $n_files files"
last_oid[migsnap]=$(fact oid)
log "template $template: $want_rows migrations, $want_tables tables"
log "first run: reuse (cold: pytest-django creates and migrates test_reuse)"
run reuse reuse.first
last_oid[reuse]=$(fact oid)
[ "$(fact rows)/$(fact tables)" = "$want_rows/$want_tables" ] \
  || die "migrate made $(fact rows) migration rows and $(fact tables) tables, migsnap's clone $want_rows and $want_tables"
log "first run: migrateci (cold: migrate, then pg_dump into its cache)"
run migrateci migrateci.first
last_oid[migrateci]=$(fact oid)
compgen -G "$work/migrateci/migrateci-postgresql-default-*" >/dev/null || die "migrateci left no dump in $work/migrateci"
log "first run: migrateci-ci (its dump loaded into a new test_mcici)"
run migrateci-ci migrateci-ci.first
last_oid[migrateci-ci]=$(fact oid)

# django-pg-baseline's `baseline_rebuild` runs migrate in a Docker
# testcontainer (testcontainers, postgres:16 image); without Docker the bench
# runs the same pipeline's steps against this server: a migrated database (a
# clone of migsnap's template: what `migrate` makes from empty), the package's
# own _freeze_timestamps, pg_dump with its default arguments, its _scrub_dump
# and write_meta.
log "building django-pg-baseline's baseline.sql (its rebuild pipeline, without Docker)"
t0=$(date +%s%N)
drop_db baseline_src
sql "CREATE DATABASE baseline_src TEMPLATE \"$template\""
# The package's defaults (BaselineConfig with only BASELINE_DIR, as the README sets it).
bl_py() {
  PGDATABASE=baseline_src DJANGO_SETTINGS_MODULE=benchproj.settings "$py" -c "import sys, django
django.setup()
from pathlib import Path
from django_pg_baseline.conf import BaselineConfig
cfg = BaselineConfig(baseline_dir=Path(sys.argv[1]))
$1" "$proj/baseline-sql"
}
bl_py 'from django_pg_baseline.rebuild import _freeze_timestamps
_freeze_timestamps("default", cfg)'
mkdir -p "$proj/baseline-sql"
read -r -a dump_args < <(bl_py 'print(" ".join(cfg.pg_dump_extra_args))')
pg_dump -d baseline_src --format=plain --encoding=UTF8 "${dump_args[@]}" >"$proj/baseline-sql/baseline.sql"
bl_py 'from django_pg_baseline.rebuild import _scrub_dump
from django_pg_baseline.writer import write_meta
_scrub_dump(cfg.sql_path)
write_meta(cfg.meta_path)' >/dev/null
drop_db baseline_src
t1=$(date +%s%N)
baseline_ms=$(( (t1 - t0) / 1000000 ))
baseline_size=$(du -k "$proj/baseline-sql/baseline.sql" | cut -f1)
log "baseline.sql: ${baseline_size} KiB in ${baseline_ms} ms"
log "first run: pg-baseline"
run pg-baseline pg-baseline.first
last_oid[pg-baseline]=$(fact oid)
for c in migsnap-noverify nodb cli-prepare raw-template; do
  log "first run: $c"
  run "$c" "$c.first"
done

cases=(nodb reuse migrateci migrateci-ci pg-baseline migsnap migsnap-noverify cli-prepare raw-template)
for ((r = 1; r <= runs; r++)); do
  log "round $r of $runs"
  for c in "${cases[@]}"; do run "$c" "$c"; done
done
cd "$root"

# ---------------------------------------------------------------- report

fmt_ms() {
  [ -n "$1" ] || { echo "–"; return; }
  awk -v t="$1" 'BEGIN {
    if (t < 0) printf "%.0f ms", t
    else if (t < 10) printf "%.1f ms", t
    else if (t < 1000) printf "%.0f ms", t
    else if (t < 100000) printf "%.2f s", t / 1000
    else printf "%.0f s", t / 1000 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b <= 0) print "–"; else printf "%.2fx", a / b }'; }
sub_() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a - b }'; }
sources() {
  if [ -s "$res/$1.source" ]; then
    sort "$res/$1.source" | uniq -c | awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $2, $1}'
  fi
}

base=$(stat_of nodb median)
snap=$(stat_of migsnap median)
snap_setup=$(sub_ "$snap" "$base")
cli=$(stat_of cli-prepare median)
declare -A what=(
  [nodb]="\`pytest\`, a test without database (the baseline)"
  [reuse]="pytest-django \`--reuse-db\` (test DB kept)"
  [migrateci]="django-migrations-ci \`--migrateci --reuse-db\` (test DB kept)"
  [migrateci-ci]="django-migrations-ci \`--migrateci --reuse-db\`, test DB dropped first (its dump loaded)"
  [pg-baseline]="django-pg-baseline (test DB created, \`baseline.sql\` loaded by psql)"
  [migsnap]="migsnap's pytest plugin ($(sources migsnap))"
  [migsnap-noverify]="migsnap's plugin, \`migsnap_verify = false\` ($(sources migsnap-noverify))"
  [cli-prepare]="CLI: \`migsnap prepare\`, target absent ($(sources cli-prepare))"
  [raw-template]="CLI: \`psql -c 'CREATE DATABASE … TEMPLATE …'\`"
)
server_version=$(sql_value "SHOW server_version" | cut -d' ' -f1)
cat <<EOF
- date: $(date -u '+%Y-%m-%d %H:%M UTC'); project: \`gen_project.py --size 1000\` (${n_files} migration files, ${want_rows} django_migrations rows, ${want_tables} tables); release build; embedded PostgreSQL ${server_version}; $(nproc) cores shared with other work; script: \`scripts/bench_peers.sh --runs ${runs}\`; peers: ${peers[*]}.
- warm: ${runs} timed runs per case, interleaved; median, min, max of the whole \`pytest\` session's wall time (or the command's); setup = median − the no-database session's median; "× migsnap" = this setup ÷ migsnap's setup (CLI rows: median ÷ \`migsnap prepare\`'s median). First run: each case's first session, one run (cold for reuse, migrateci and migsnap (\`migsnap prepare\` with the CLI, see below): a whole migrate).
- django-pg-baseline's \`baseline.sql\`: $(awk -v k="$baseline_size" 'BEGIN { printf "%.1f MiB", k / 1024 }'), built in $(fmt_ms "$baseline_ms") by its rebuild pipeline's steps without Docker.

| case | median | min | max | runs | setup (median − baseline) | × migsnap | first run |
|---|---:|---:|---:|---:|---:|---:|---:|
EOF
for c in "${cases[@]}"; do
  med=$(stat_of "$c" median)
  case "$c" in
    nodb) setup="–" x="–" ;;
    cli-prepare|raw-template) setup="–" x=$(ratio "$med" "$cli") ;;
    *) s=$(sub_ "$med" "$base"); setup=$(fmt_ms "$s"); x=$(ratio "$s" "$snap_setup") ;;
  esac
  echo "| ${what[$c]} | $(fmt_ms "$med") | $(fmt_ms "$(stat_of "$c" min)") | $(fmt_ms "$(stat_of "$c" max)") | $(stat_of "$c" n) | $setup | $x | $(fmt_ms "$(stat_of "$c.first" median)") |"
done
}
