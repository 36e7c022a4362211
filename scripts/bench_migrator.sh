#!/usr/bin/env bash
# Issue #25 part 2: one data-migration test on the 1,000-migration project,
# with django-test-migrations' `migrator` fixture (which drops every table
# and migrates from empty to the test's starting point, per test) and with
# migsnap's `migsnap_migrator` (a clone of a `prepare --at` snapshot). Not a
# test: it fails only on a wrong result (a test that did not pass, a
# migsnap start that did not come from where its case says), never on a
# slow one.
#
#   scripts/bench_migrator.sh [--runs N] [--keep]
#
#   --runs N   sessions per case, interleaved, medians reported (default 3)
#   --keep     keep the temp dir (and the server) for a look afterwards
#
# The project gets one more migration, app020.0051: a RunPython that fills
# every Contract's empty `sku` from its label in capitals. The test starts at
# app020.0050 (the migration before it), creates three contracts there with
# the old state's model, migrates to 0051 and asserts their SKUs. The cases:
#   dtm           django-test-migrations' `migrator` (pytest-django
#                 `--reuse-db`, the test database kept from an untimed first
#                 session): per test it drops every table, migrates from
#                 empty to app020.0050, then to 0051, then `migrate` (reset)
#   migsnap-cold  `migsnap_migrator`, the `--at` snapshot for app020.0050
#                 dropped first (its template and cache files): the test's
#                 start builds it (a migrate from empty, a dump, a template);
#                 the fully migrated snapshot exists, as it would for a
#                 project's other tests
#   migsnap-warm  `migsnap_migrator`, the `--at` snapshot there: a clone
# Reported per case: how many migrations the test's starting database has
# (its django_migrations rows: django-test-migrations applies every migration
# the full plan puts before the target, `migrate app020 0050` only that
# migration's dependencies), the test (its setup, call and teardown, without
# the session's database setup, `django_db_setup`) and the whole pytest
# session (wall clock, including Python's start and Django's setup).
#
# The Python packages, pinned, go into a venv of this bench's own
# (target/bench-migrator-venv, with django-test-migrations), the project's
# .venv left as tests/requirements.txt makes it. Uses the embedded server in
# a temp dir and a release build. Report (Markdown) on stdout, progress on
# stderr.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$root"

runs=3 keep=''
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench_migrator: error: unknown argument $1" >&2; echo "hint: see --help" >&2; exit 2 ;;
  esac
done
bench_messages bench_migrator
[ "$runs" -ge 1 ] 2>/dev/null || die "--runs wants a number >= 1"

ensure_postgres
bench_build

pins=(Django==5.2.8 'psycopg[binary]==3.2.12' pytest==8.4.2 pytest-django==4.11.1
  django-test-migrations==1.7.0)
pinned_venv bench-migrator-venv "${pins[@]}"

bench_workdir migsnap-bench-migrator
res="$work/res"
mkdir -p "$res"
export MIGSNAP_CACHE_DIR="$work/cache" MIGSNAP_SERVER_DIR="$work/server" MIGSNAP_PYTHON="$py" \
  MIGSNAP_BIN="$bin" NO_COLOR=1 CI=true
unset DJANGO_SETTINGS_MODULE VIRTUAL_ENV MIGSNAP_SERVER_URL MIGSNAP_POOL PYTHONPATH
bench_cleanup

log "starting the embedded server in $MIGSNAP_SERVER_DIR"
"$bin" server start -q >/dev/null
eval "$(libpq_env_of "$("$bin" server url)")"
export PGHOST PGPORT PGUSER PGPASSWORD

proj="$work/project"
log "generating the 1,000-migration project and its data migration"
python3 scripts/gen_project.py "$proj" --size 1000 >/dev/null 2>&1
before=$(cd "$proj/app020/migrations" && ls 0050_*.py) || die "the generated app020 has no 0050"
before=${before%.py}
cat >"$proj/app020/migrations/0051_contract_sku_from_label.py" <<EOF
from django.db import migrations
from django.db.models.functions import Upper


def sku_from_label(apps, schema_editor):
    Contract = apps.get_model("app020", "Contract")
    Contract.objects.using(schema_editor.connection.alias).filter(sku="").update(sku=Upper("label"))


class Migration(migrations.Migration):
    dependencies = [("app020", "$before")]
    operations = [migrations.RunPython(sku_from_label, migrations.RunPython.noop)]
EOF
printf '[pytest]\nDJANGO_SETTINGS_MODULE = benchproj.settings\n' >"$proj/pytest-dtm.ini"
printf '[pytest]\nDJANGO_SETTINGS_MODULE = benchproj.settings\nmigsnap = true\n' >"$proj/pytest-migsnap.ini"
# The test, for either fixture (FIXTURE); it writes which database
# migsnap's start came from (BENCH_PREPARED), for the checks.
cat >"$proj/test_data_migration.py.in" <<EOF
import json
import os

START = ("app020", "$before")
TESTED = ("app020", "0051_contract_sku_from_label")


def test_contract_sku_from_label(FIXTURE):
    old = FIXTURE.apply_initial_migration(START)
    Contract = old.apps.get_model("app020", "Contract")
    for i in range(3):
        Contract.objects.create(label="contract %d" % i, phone="555-%d" % i)
    from django.db import connection

    with connection.cursor() as c:
        c.execute("SELECT count(*) FROM django_migrations")
        rows = c.fetchone()[0]
    if os.environ.get("BENCH_ROWS"):
        with open(os.environ["BENCH_ROWS"], "w") as f:
            f.write("%d\n" % rows)
    if os.environ.get("BENCH_PREPARED") and hasattr(FIXTURE, "prepared"):
        with open(os.environ["BENCH_PREPARED"], "w") as f:
            json.dump(FIXTURE.prepared, f)
    new = FIXTURE.apply_tested_migration(TESTED)
    Contract = new.apps.get_model("app020", "Contract")
    assert sorted(Contract.objects.values_list("sku", flat=True)) == [
        "CONTRACT 0", "CONTRACT 1", "CONTRACT 2"
    ]
EOF
sed 's/FIXTURE/migrator/g' "$proj/test_data_migration.py.in" >"$proj/test_dtm.py"
sed 's/FIXTURE/migsnap_migrator/g' "$proj/test_data_migration.py.in" >"$proj/test_migsnap.py"
# What makes pytest-django's kept test database, untimed.
printf 'def test_db(db):\n    pass\n' >"$proj/test_first.py"
# The test's own time: its phases' durations less the session fixture's.
cat >"$proj/conftest.py" <<'EOF'
import json
import os
import time

import pytest

_times = {"phases": 0.0, "db_setup": 0.0}


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    if fixturedef.argname != "django_db_setup":
        yield
        return
    began = time.monotonic()
    yield
    _times["db_setup"] += time.monotonic() - began


def pytest_runtest_logreport(report):
    _times["phases"] += report.duration


def pytest_sessionfinish(session):
    if os.environ.get("BENCH_TEST_MS"):
        with open(os.environ["BENCH_TEST_MS"], "w") as f:
            f.write("%.1f\n" % ((_times["phases"] - _times["db_setup"]) * 1000))
EOF

# session CASE: one pytest session; its test time and wall time appended to
# CASE.test and CASE.ms.
session() {
  local case=$1 t0 t1 args db
  case "$case" in
    # Test databases of their own (test_dtm, test_snap): migsnap's session
    # drops its own at the end, which must not be pytest-django's kept one.
    dtm) args=(-c pytest-dtm.ini --reuse-db test_dtm.py) db=dtm ;;
    migsnap-*) args=(-c pytest-migsnap.ini -p migsnap.pytest_plugin test_migsnap.py) db=snap ;;
  esac
  rm -f "$work/prepared.json"
  t0=$(date +%s%N)
  if ! (cd "$proj" && PGDATABASE=$db PYTHONPATH="$root/python" BENCH_TEST_MS="$work/test_ms" \
        BENCH_ROWS="$work/rows" BENCH_PREPARED="$work/prepared.json" "$py" -m pytest -q -p no:cacheprovider "${args[@]}") \
        >"$work/last.out" 2>&1; then
    cat "$work/last.out" >&2
    die "$case: the test failed"
  fi
  t1=$(date +%s%N)
  echo $(( (t1 - t0) / 1000000 )) >>"$res/$case.ms"
  cat "$work/test_ms" >>"$res/$case.test"
  cat "$work/rows" >"$res/$case.rows"
  case "$case" in
    migsnap-cold) check_source cold
      # The key of the `--at` snapshot, to drop it before the next cold run.
      "$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["key"])' "$work/prepared.json" >"$work/at_key" ;;
    migsnap-warm) check_source template ;;
  esac
  log "$case: test $(tail -n 1 "$res/$case.test") ms, session $(tail -n 1 "$res/$case.ms") ms"
}
check_source() {
  local got
  got=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["source"])' "$work/prepared.json")
  [ "$got" = "$1" ] || die "the --at start came from $got, not $1"
}
# The `--at` snapshot gone: its template and its cache files.
drop_at_snapshot() {
  local key
  [ -f "$work/at_key" ] || return 0
  key=$(cat "$work/at_key")
  psql -X -q -d "$admin_db" -c "ALTER DATABASE \"migsnap_${key:0:16}\" IS_TEMPLATE false" \
    -c "DROP DATABASE IF EXISTS \"migsnap_${key:0:16}\" WITH (FORCE)" >/dev/null
  rm -rf "$MIGSNAP_CACHE_DIR/$key"*
}

log "untimed: the fully migrated snapshot (migsnap) and the kept test database (pytest-django)"
(cd "$proj" && "$bin" prepare --database bench_first) >/dev/null 2>"$work/first.err" || { cat "$work/first.err" >&2; die "the first prepare failed"; }
psql -X -q -d "$admin_db" -c 'DROP DATABASE bench_first' >/dev/null
(cd "$proj" && PGDATABASE=dtm "$py" -m pytest -q -p no:cacheprovider -c pytest-dtm.ini --reuse-db test_first.py) \
  >"$work/last.out" 2>&1 || { cat "$work/last.out" >&2; die "making pytest-django's test database failed"; }

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for i in $(seq 1 "$runs"); do
  log "round $i of $runs"
  session dtm
  drop_at_snapshot
  session migsnap-cold
  session migsnap-warm
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

stat_file() { # stat_file FILE median|min|max
  sort -g "$1" | awk -v what="$2" '{a[NR]=$1} END {
    if (what == "min") print a[1]; else if (what == "max") print a[NR]
    else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2] + a[NR/2+1]) / 2 }'
}
secs() { awk '{ if ($1 >= 1000) printf "%.2f s", $1 / 1000; else printf "%.0f ms", $1 }' <<<"$1"; }
cell() { echo "$(secs "$(stat_file "$1" median)") ($(secs "$(stat_file "$1" min)")–$(secs "$(stat_file "$1" max)"))"; }

echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); command: \`scripts/bench_migrator.sh --runs $runs\`"
echo "- load average (1, 5, 15 min) at the start: $load_start; at the end: $load_end; $(nproc) cores"
echo "- tested: app020.0051 (RunPython), starting at app020.$before; the project's apps have $(ls "$proj"/app*/migrations/0*.py | wc -l) migrations"
echo
echo "| case | migrations in the test's starting database | the test, median (min–max) | the pytest session, median (min–max) | runs |"
echo "|---|---|---|---|---|"
declare -A label=(
  [dtm]="django-test-migrations \`migrator\` (\`--reuse-db\`)"
  [migsnap-cold]="\`migsnap_migrator\`, cold (builds the \`--at\` snapshot)"
  [migsnap-warm]="\`migsnap_migrator\`, warm (a clone)"
)
for case in dtm migsnap-cold migsnap-warm; do
  echo "| ${label[$case]} | $(cat "$res/$case.rows") | $(cell "$res/$case.test") | $(cell "$res/$case.ms") | $(wc -l <"$res/$case.ms") |"
done
