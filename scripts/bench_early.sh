#!/usr/bin/env bash
# Issue #12 goal 2: how long the first test waits for its database when the
# pytest plugin starts `prepare` as the session starts (`migsnap_early`, the
# default) and when it starts it in `django_db_setup` (`migsnap_early =
# false`), on the 1,000-migration project with a test tree that takes seconds
# to collect. Not a test: it fails only on a wrong result (a session that did
# not take the path its case is about), never on a slow one.
#
#   scripts/bench_early.sh [--runs N] [--collect-seconds S] [--workers N] [--keep]
#
#   --runs N             sessions per case, medians reported (default 3)
#   --collect-seconds S  how long collecting the test tree takes (default 3):
#                        40 test modules, each sleeping S/40 s at import, a
#                        stand-in for the heavy imports of a real test suite
#   --workers N          run each session under pytest-xdist with N workers
#                        (`-n N`; default: no xdist). One worker runs the
#                        database test; the others collect and run the rest
#                        (issue #24: each worker used to prepare a database
#                        early although one test needs it)
#   --keep               keep the temp dir (and the server) for a look afterwards
#
# Each pytest session runs one database test first, then 40 modules' worth of
# tests that need none. A conftest in the tree times the `django_db_setup`
# fixture, which is all the first test waits for its database; the plugin's
# summary line says where the database came from. The cases, interleaved:
#   again    nothing dropped between sessions: migsnap hands out what the
#            last session left (a pool member; the plugin sizes the pool)
#   cache    the template, the pool and the target dropped before each
#            session: the dump is restored (the path after a cache hit in CI)
# each with `migsnap_early` true (the default), true with `migsnap_verify =
# false` (the plugin's check of the database against Django's migration
# loader, which imports every migration in the pytest process) and false.
# Uses the embedded server in a
# temp dir and a release build. Report (Markdown) on stdout, progress on stderr.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$root"

runs=3 collect=3 keep='' workers=0
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --collect-seconds) collect=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench_early: error: unknown argument $1" >&2; echo "hint: see --help" >&2; exit 2 ;;
  esac
done
bench_messages bench_early

scripts/venv.sh
ensure_postgres
bench_build
bench_workdir migsnap-bench-early
export MIGSNAP_CACHE_DIR="$work/cache" MIGSNAP_SERVER_DIR="$work/server" MIGSNAP_PYTHON="$python" \
  MIGSNAP_BIN="$bin" PYTHONPATH="$root/python" PGDATABASE=bench NO_COLOR=1 CI=true
unset DJANGO_SETTINGS_MODULE VIRTUAL_ENV MIGSNAP_SERVER_URL MIGSNAP_POOL
bench_cleanup

proj="$work/project"
log "generating the 1,000-migration project and a test tree that takes ${collect} s to collect"
python3 scripts/gen_project.py "$proj" --size 1000 >/dev/null 2>&1
cat >"$proj/pytest.ini" <<'EOF'
[pytest]
DJANGO_SETTINGS_MODULE = benchproj.settings
migsnap = true
testpaths = benchtests
EOF
mkdir -p "$proj/benchtests"
cat >"$proj/conftest.py" <<'EOF'
import os
import time

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    # What the first test waits for its database: django_db_setup, timed here,
    # outside the plugin.
    if fixturedef.argname != "django_db_setup":
        yield
        return
    began = time.monotonic()
    yield
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open("%s.%s" % (os.environ["BENCH_SETUP_MS"], worker), "w") as f:
        f.write("%.1f\n" % ((time.monotonic() - began) * 1000))
EOF
cat >"$proj/benchtests/test_000_first.py" <<'EOF'
from django.contrib.auth.models import User


def test_first_needs_the_database(db):
    assert User.objects.count() == 0
EOF
modules=40
per_module=$(python3 -c "print($collect / $modules)")
for i in $(seq 1 $modules); do
  cat >"$proj/benchtests/test_$(printf %03d "$i")_slow.py" <<EOF
import time

time.sleep($per_module)  # a heavy import


def test_a():
    pass


def test_b():
    pass
EOF
done

log "building the snapshot (migrate of the whole project, once)"
(cd "$proj" && "$bin" prepare --database bench_first) >/dev/null
eval "$(libpq_env_of "$("$bin" server url)")"
export PGHOST PGPORT PGUSER PGPASSWORD
key=$(cd "$proj" && "$bin" key --json | "$python" -c 'import json,sys; print(json.load(sys.stdin)["key"])')
template="migsnap_${key:0:16}"
psql -X -q -d postgres -c 'DROP DATABASE bench_first'

# Wait for migsnap's background work (a pool refill, a set-aside drop) to end.
settle() {
  local deadline=$((SECONDS + 600))
  while pgrep -f "$bin .*maintain" >/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
}
drop_for_cache() {
  settle
  psql -X -q -d postgres -c "ALTER DATABASE \"$template\" IS_TEMPLATE false" \
    -c "DROP DATABASE \"$template\" WITH (FORCE)" -c 'DROP DATABASE IF EXISTS test_bench WITH (FORCE)'
  for w in $(seq 0 $((workers - 1))); do
    psql -X -q -d postgres -c "DROP DATABASE IF EXISTS test_bench_gw$w WITH (FORCE)"
  done
  (cd "$proj" && MIGSNAP_POOL=0 "$bin" gc -q) >/dev/null # the pool's members go with pool = 0
}

res="$work/res"
mkdir -p "$res"
# session CASE MODE EXPECT: one pytest session, MODE `early` (the default),
# `late` (migsnap_early = false) or `early-noverify` (also migsnap_verify =
# false: the plugin's check of django_migrations against Django's loader,
# which imports every migration in the pytest process); its django_db_setup
# time and wall time appended to CASE-MODE.{setup,wall}.
session() {
  local case=$1 mode=$2 expect=$3 t0 t1 out="$work/last.out" opts=() setup
  [ "$workers" -gt 0 ] && opts=(-n "$workers")
  case "$mode" in
    early) opts+=(-o migsnap_early=true) ;;
    late) opts+=(-o migsnap_early=false) ;;
    early-noverify) opts+=(-o migsnap_early=true -o migsnap_verify=false) ;;
  esac
  settle
  [ "$case" = cache ] && drop_for_cache
  rm -f "$work"/setup_ms.*
  t0=$(date +%s%N)
  if ! (cd "$proj" && BENCH_SETUP_MS="$work/setup_ms" "$python" -m pytest -p migsnap.pytest_plugin \
        "${opts[@]}" -q -p no:cacheprovider) >"$out" 2>&1; then
    cat "$out" >&2
    die "$case ($mode): pytest failed"
  fi
  t1=$(date +%s%N)
  grep -q "migsnap: test_bench\(_gw[0-9]*\)\? from $expect in" "$out" \
    || { cat "$out" >&2; die "$case ($mode): expected the database from $expect"; }
  if [ "$mode" != late ]; then
    grep -q "tests waited" "$out" || { cat "$out" >&2; die "$case ($mode): the early prepare was not used"; }
  fi
  # One test needs the database: one worker timed its setup.
  setup=$(cat "$work"/setup_ms.* | sort -n | tail -n 1)
  [ -n "$setup" ] || die "$case ($mode): no django_db_setup was timed"
  echo "$setup" >>"$res/$case-$mode.ms"
  echo $(( (t1 - t0) / 1000000 )) >>"$res/$case-$mode.wall.ms"
  log "$case, $mode: setup $setup ms, session $(( (t1 - t0) / 1000000 )) ms ($(grep -o 'migsnap: .*' "$out" | tr '\n' ' '))"
}

modes=(early early-noverify late)
log "a first session (sizes the pool)"
session again early '\(template\|pool\)'
rm -f "$res"/*
for run in $(seq 1 "$runs"); do
  log "run $run of $runs"
  for mode in "${modes[@]}"; do
    session again "$mode" pool
    session cache "$mode" cache
  done
done

# The collection alone, for comparison (migsnap not loaded).
t0=$(date +%s%N)
(cd "$proj" && "$python" -m pytest -q -p no:cacheprovider --collect-only) >/dev/null 2>&1 || true
t1=$(date +%s%N)

cell() {
  printf "%.0f (%.0f–%.0f); session %.0f" "$(stat_of "$1" median)" "$(stat_of "$1" min)" \
    "$(stat_of "$1" max)" "$(stat_of "$1.wall" median)"
}
echo "Database setup seen by the first test: pytest-django's \`django_db_setup\`, timed by a conftest (ms, medians of $runs sessions, range in brackets; then the whole session's median). 1,000-migration project, migsnap's embedded server (PostgreSQL $(psql -X -At -d postgres -c 'SHOW server_version' | cut -d' ' -f1)) in $work, $(nproc) CPUs. Collecting the test tree takes $(( (t1 - t0) / 1000000 )) ms (\`--collect-only\`, Django's setup included).$([ "$workers" -gt 0 ] && echo " Each session under pytest-xdist, \`-n $workers\`: the setup is the one worker's that ran the database test.")"
echo
echo "| case | early (the default) | early, \`migsnap_verify = false\` | \`migsnap_early = false\` |"
echo "|---|---|---|---|"
echo "| again: a pool member | $(cell again-early) | $(cell again-early-noverify) | $(cell again-late) |"
echo "| cache: the dump restored | $(cell cache-early) | $(cell cache-early-noverify) | $(cell cache-late) |"
