#!/usr/bin/env bash
# The build itself on a project (issue #24), one table row: a plain
# `manage.py migrate` into an empty database; migsnap's stock build (a cold
# `prepare --rebuild`, `build-accelerator` off); its fast build (the same
# with the accelerator on: django-fastmig); and one new migration on top of a
# snapshot, migsnap's incremental build (stock and fast) against a plain
# `migrate` of that migration on a copy of the old database (what
# pytest-django's --reuse-db pays). Every database is compared with the plain
# `migrate` it stands for, so a speed-up that changes the result is reported as
# a difference, not as a speed-up.
#
#   scripts/bench_build.sh [--size 1000|5000] [--project DIR --settings MOD]
#                          [--python PY] [--plus-one APP.MODEL] [--runs N]
#                          [--bin MIGSNAP] [--keep]
#
#   --size N          generate the 1,000- or 5,000-migration project (default 1000)
#   --project DIR     a Django project of your own (manage.py in DIR) instead;
#                     --settings names its settings module, which must read
#                     PGDATABASE/PGHOST/PGPORT/PGUSER/PGPASSWORD for the plain runs
#                     (migsnap points `default` at its own database itself)
#   --python PY       the project's interpreter (default: the repo's .venv)
#   --plus-one A.M    the new migration adds a nullable IntegerField
#                     `bench_plus_one` to model M of app A (default: the first
#                     model of the first app with migrations inside DIR); it is
#                     written into A's migrations package for the incremental
#                     runs only and removed after each (and on exit)
#   --runs N          runs of each side (default 3), interleaved (the order
#                     rotates every run); medians are reported
#   --bin MIGSNAP     the migsnap binary (default: a release build,
#                     ${CARGO_TARGET_DIR:-target}/release/migsnap)
#   --keep            keep the work dir and leave its server running
#
# Times are the wall time of the whole command, as a developer or CI pays it:
# `python manage.py migrate --noinput` (interpreter start and Django's setup
# included) and `migsnap prepare --json` (hashing, the build, the snapshot:
# template and dump). Each migsnap run has a cache dir of its own; all share
# one embedded server, on which the plain runs migrate too.
#
# Equality: `pg_dump --schema-only` byte for byte (less pg_dump's random
# \restrict token), the (app, name) rows of django_migrations, and every
# table's row count. Cold builds are compared with the first plain `migrate`
# from empty, incremental ones with the first plain `migrate` of the new
# migration on a copy (--reuse-db). Row values are not compared: data
# migrations that write now() differ between any two plain runs.
#
# django-fastmig 0.1.1 is fetched with `pip download` into the work dir and
# put on the fast runs' PYTHONPATH (the project's environment may have it
# installed as well; the stock runs never import it: migsnap imports it only
# with the accelerator on). The migrations the fast build applied with stock
# Django (`stock_migrations` in `prepare --json`) are counted in the report.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
bench_messages bench_build

size=1000 project="" settings="" python="" runs=3 keep="" plus_one="" bin=""
while [ $# -gt 0 ]; do
  case $1 in
    --size) size=$2; shift 2 ;;
    --project) project=$(cd "$2" && pwd); shift 2 ;;
    --settings) settings=$2; shift 2 ;;
    --python) python=$2; shift 2 ;;
    --plus-one) plus_one=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
if [ -n "$project" ] && [ -z "$settings" ]; then die "--project needs --settings"; fi

ensure_postgres
bench_workdir migsnap-bench-build
if [ -z "$bin" ]; then
  ensure_build_tools
  log "building migsnap (release)…"
  (cd "$root" && cargo build --release --quiet)
  bin="${CARGO_TARGET_DIR:-$root/target}/release/migsnap"
fi
python=${python:-$root/.venv/bin/python}
export MIGSNAP_SERVER_DIR="$work/server"
res="$work/results"
mkdir -p "$res"
plus_file=""
cleanup_build() {
  if [ -n "$plus_file" ]; then rm -f "$plus_file"; fi
  cleanup
}
bench_cleanup
trap cleanup_build EXIT

if [ -z "$project" ]; then
  project="$work/project"
  settings=benchproj.settings
  log "generating the ${size}-migration project…"
  python3 "$root/scripts/gen_project.py" "$project" --size "$size" >/dev/null 2>&1
fi
log "fetching django-fastmig 0.1.1 from PyPI…"
"$python" -m pip download --quiet --no-deps --dest "$work/wheels" django-fastmig==0.1.1
"$python" -m zipfile -e "$(ls "$work"/wheels/django_fastmig-*.whl)" "$work/fastmig"

log "starting the embedded server…"
eval "$(libpq_env_of "$("$bin" server url)")"
export PGHOST PGPORT PGUSER PGPASSWORD
export DJANGO_SETTINGS_MODULE=$settings

# The new migration: its file's path and text, from Django's own loader
# (the app's leaf, its migrations package's directory).
log "writing the +1 migration's text…"
(cd "$project" && PGDATABASE=$admin_db "$python" - "$project" "$plus_one" >"$work/plus_one.json" <<'PY'
import json, os, sys
project, target = sys.argv[1], sys.argv[2]
sys.path.insert(0, project)
import django
django.setup()
from importlib import import_module
from django.apps import apps
from django.db.migrations.loader import MigrationLoader
loader = MigrationLoader(None, ignore_no_migrations=True)
def package_dir(app):
    module, _ = MigrationLoader.migrations_module(app)
    return os.path.dirname(import_module(module).__file__)
if target:
    app, model = target.split(".")
else:
    state = loader.project_state()
    app = next(c.label for c in apps.get_app_configs()
               if c.label in loader.migrated_apps
               and os.path.abspath(package_dir(c.label)).startswith(project + os.sep))
    model = sorted(m for a, m in state.models if a == app)[0]
leaves = loader.graph.leaf_nodes(app)
assert len(leaves) == 1, leaves
model = loader.project_state().models[(app, model.lower())].name
text = f'''# Written by migsnap's scripts/bench_build.sh for one run; removed after it.
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [({app!r}, {leaves[0][1]!r})]
    operations = [
        migrations.AddField(
            model_name={model.lower()!r},
            name="bench_plus_one",
            field=models.IntegerField(null=True),
        ),
    ]
'''
print(json.dumps(dict(path=os.path.join(package_dir(app), "9999_bench_plus_one.py"),
                      text=text, label=f"{app}.9999_bench_plus_one", model=f"{app}.{model}")))
PY
)
plus_path=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["path"])' <"$work/plus_one.json")
plus_label=$(python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["label"], "(AddField on", d["model"] + ")")' <"$work/plus_one.json")
[ ! -e "$plus_path" ] || die "$plus_path exists already"
add_plus_one() {
  plus_file=$plus_path
  python3 -c 'import json,sys; open(sys.argv[1], "w").write(json.load(sys.stdin)["text"])' "$plus_path" <"$work/plus_one.json"
}
remove_plus_one() {
  rm -f "$plus_path"
  rm -f "$(dirname "$plus_path")"/__pycache__/9999_bench_plus_one.*
  plus_file=""
}
migrations=$(cd "$project" && "$python" - <<'PY'
import django
django.setup()
from django.db.migrations.loader import MigrationLoader
loader = MigrationLoader(None, ignore_no_migrations=True)
print(len(loader.disk_migrations), len(loader.graph.nodes), sum(1 for m in loader.disk_migrations.values() if m.replaces))
PY
)
log "migrations on disk, in the graph (squashes applied), squashing: $migrations"
echo "$migrations" >"$work/migration_counts"

psql_admin() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 -d "$admin_db" "$@"; }
drop_db() { psql_admin -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)"; }

# What must be equal: schema, applied migrations, row counts (`fingerprint`,
# scripts/lib.sh).

# compare CASE DB REFERENCE: fingerprint DB and record what differs from
# REFERENCE's fingerprint (the first time: DB becomes the reference).
compare() {
  local case=$1 db=$2 ref=$3 what
  fingerprint "$db" "$work/fp.$case.$db"
  if [ ! -e "$ref.schema" ]; then
    for what in schema applied rows; do cp "$work/fp.$case.$db.$what" "$ref.$what"; done
    return
  fi
  for what in schema applied rows; do
    if ! cmp -s "$ref.$what" "$work/fp.$case.$db.$what"; then
      echo "$case ($db): $what differs from the plain migrate" >>"$res/differences"
      echo "$case" >>"$res/differ.$case"
      diff "$ref.$what" "$work/fp.$case.$db.$what" | head -20 >>"$res/differences" || true
    fi
  done
}

plain_run() {
  local i=$1 db=bench_plain_$1
  drop_db "$db"; psql_admin -c "CREATE DATABASE $db"
  (cd "$project" && measure plain env PGDATABASE=$db "$python" manage.py migrate --noinput)
  compare plain "$db" "$work/ref.cold"
  # --reuse-db: the +1 migration on a copy of that database.
  drop_db "bench_reuse_$i"; psql_admin -c "CREATE DATABASE bench_reuse_$i TEMPLATE $db"
  add_plus_one
  (cd "$project" && measure reuse env PGDATABASE=bench_reuse_$i "$python" manage.py migrate --noinput)
  remove_plus_one
  compare reuse "bench_reuse_$i" "$work/ref.plus"
  drop_db "$db"; drop_db "bench_reuse_$i"
}

# migsnap_run SIDE I: a cold build (--rebuild) then, with the +1 migration,
# an incremental one, in a cache dir of their own.
migsnap_run() {
  local side=$1 i=$2 accel=0 db=test_bench_$1_$2 env=()
  if [ "$side" = fast ]; then accel=1; env=(PYTHONPATH="$work/fastmig${PYTHONPATH:+:$PYTHONPATH}"); fi
  local cache="$work/cache.$side.$i"
  prep() {
    (cd "$project" && measure "$1" env "${env[@]}" MIGSNAP_BUILD_ACCELERATOR=$accel \
      MIGSNAP_VERIFY_BUILD=0 MIGSNAP_CACHE_DIR="$cache" MIGSNAP_POOL=0 "$bin" prepare -d "$db" --force --python "$python" --settings "$settings" --json "${@:2}")
    cp "$work/last.out" "$work/$1.$i.json"
    python3 - "$work/$1.$i.json" "$1" "$res" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
case, res = sys.argv[2], sys.argv[3]
with open(f"{res}/{case}.source", "a") as f:
    print(d["source"], file=f)
with open(f"{res}/{case}.stock", "a") as f:
    print(len(d.get("stock_migrations") or []), file=f)
with open(f"{res}/{case}.accelerated", "a") as f:
    print(str(d.get("accelerated")).lower(), file=f)
PY
  }
  prep "$side-cold" --rebuild
  compare "$side-cold" "$db" "$work/ref.cold"
  add_plus_one
  prep "$side-incr"
  remove_plus_one
  compare "$side-incr" "$db" "$work/ref.plus"
  drop_db "$db"
  rm -rf "$cache"
}

sides=(plain stock fast)
for i in $(seq 1 "$runs"); do
  for k in 0 1 2; do
    side=${sides[$(( (i - 1 + k) % 3 ))]}
    log "run $i/$runs: $side… (load $(cut -d' ' -f1-3 /proc/loadavg))"
    cut -d' ' -f1 /proc/loadavg >>"$res/load"
    if [ "$side" = plain ]; then plain_run "$i"; else migsnap_run "$side" "$i"; fi
  done
done

equal() { if [ -e "$res/differ.$1" ]; then echo NO; else echo yes; fi; }
cell() { printf '%s s (%s–%s)' "$(stat_of "$1" median | awk '{printf "%.1f", $1/1000}')" \
  "$(stat_of "$1" min | awk '{printf "%.1f", $1/1000}')" "$(stat_of "$1" max | awk '{printf "%.1f", $1/1000}')"; }
ratio() { awk -v a="$(stat_of "$1" median)" -v b="$(stat_of "$2" median)" 'BEGIN {printf "%.2f×", a / b}'; }
read -r on_disk in_graph squashes <"$work/migration_counts"
echo "migrations: $on_disk files ($squashes squashing), $in_graph in the graph; +1: $plus_label"
echo "runs: $runs of each, interleaved; 1-min load at each run's start: $(sort -g "$res/load" | tr '\n' ' ')"
echo
echo "| case | wall, median (min–max) of $runs | vs plain | source | equal to plain |"
echo "|---|---|---|---|---|"
echo "| plain \`migrate\` from empty | $(cell plain) | 1 | | (reference) |"
echo "| stock build (cold) | $(cell stock-cold) | $(ratio stock-cold plain) | $(sort -u "$res/stock-cold.source" | tr '\n' ' ') | $(equal stock-cold) |"
echo "| fast build (cold) | $(cell fast-cold) | $(ratio fast-cold plain) | $(sort -u "$res/fast-cold.source" | tr '\n' ' ')accelerated: $(sort -u "$res/fast-cold.accelerated" | tr '\n' ' ')stock migrations: $(sort -u "$res/fast-cold.stock" | tr '\n' ' ') | $(equal fast-cold) |"
echo "| plain \`migrate\` of +1 on a copy (--reuse-db) | $(cell reuse) | 1 | | (reference) |"
echo "| stock incremental +1 | $(cell stock-incr) | $(ratio stock-incr reuse) | $(sort -u "$res/stock-incr.source" | tr '\n' ' ') | $(equal stock-incr) |"
echo "| fast incremental +1 | $(cell fast-incr) | $(ratio fast-incr reuse) | $(sort -u "$res/fast-incr.source" | tr '\n' ' ')stock migrations: $(sort -u "$res/fast-incr.stock" | tr '\n' ' ') | $(equal fast-incr) |"
if [ -s "$res/differences" ]; then
  log "differences:"
  cat "$res/differences" >&2
  exit 1
fi
