#!/usr/bin/env bash
# Issue #13's commands on the generated 1,000-migration project, with a
# release build: one wall time each, and the check that each did its job.
#
#   scripts/bench_insight.sh [--sqlmigrate N] [--keep]
#
#   --sqlmigrate N  also time N `manage.py sqlmigrate` calls, one per migration
#                   of the last 50 (default 50; 0 skips them)
#   --keep          keep the temp dir (and the server) for a look afterwards
#
# The cases: `plan`, `plan --json` and `sql --json` over the last 50 migrations
# (named `app.name`), `lint --format github` over them, `schema --json`, and
# `plan --against` / `diff --against` a database migrated to an older point
# (app020 rolled back 5 migrations) and altered by hand (an index dropped, a
# column's type changed). Uses the embedded server in a temp dir. The report
# (Markdown) goes to stdout, progress to stderr. Nothing fails on a slow
# number, only on a wrong result.
set -euo pipefail
{
source "$(dirname "$0")/lib.sh"
cd "$root"

sqlmigrate=50 keep=''
while [ $# -gt 0 ]; do
  case "$1" in
    --sqlmigrate) sqlmigrate=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench_insight: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
bench_messages bench_insight

scripts/venv.sh
ensure_postgres
bench_build
bench_workdir migsnap-bench-insight
export MIGSNAP_CACHE_DIR="$work/cache" MIGSNAP_SERVER_DIR="$work/server" MIGSNAP_PYTHON="$python" NO_COLOR=1
unset DJANGO_SETTINGS_MODULE VIRTUAL_ENV MIGSNAP_SERVER_URL
bench_cleanup

proj="$work/project"
log "generating the 1,000-migration project"
python3 scripts/gen_project.py "$proj" --size 1000 >/dev/null 2>&1
n_migrations=$(find "$proj" -path '*/migrations/0*.py' | wc -l)
ms() { echo $(( ($2 - $1) / 1000000 )); }
declare -A took rcs
# timed CASE EXPECTED_EXITS CMD...: run CMD in the project, stdout to CASE.out;
# EXPECTED_EXITS is a pattern (`0`, `[01]`).
timed() {
  local case=$1 want=$2 t0 t1 rc=0; shift 2
  t0=$(date +%s%N)
  (cd "$proj" && "$@") >"$work/$case.out" 2>"$work/$case.err" || rc=$?
  t1=$(date +%s%N)
  # shellcheck disable=SC2053 # a pattern on purpose
  if [[ $rc != $want ]]; then
    cat "$work/$case.err" >&2
    die "$case exited $rc, expected $want"
  fi
  took[$case]=$(ms "$t0" "$t1") rcs[$case]=$rc
  log "$case: ${took[$case]} ms"
}

log "prepare (builds the template: migrate of ${n_migrations} migrations)"
timed prepare 0 "$bin" prepare --database insbench_old
eval "$(libpq_env_of "$("$bin" server url)")"
export PGHOST PGPORT PGUSER PGPASSWORD

labels=$(cd "$proj" && PGDATABASE=insbench_old "$python" manage.py showmigrations --plan \
  | sed -n 's/^\[X\]  *//p' | tail -n 50)
[ "$(echo "$labels" | wc -l)" = 50 ] || die "expected 50 applied migrations, got: $labels"
read -r -a last50 <<<"$(echo "$labels" | tr '\n' ' ')"
# A database at an older point, altered by hand: app020 rolled back by 5
# migrations, then an index dropped and a column's type changed.
target=$(echo "$labels" | grep '^app020\.' | tail -n 6 | head -n 1 | cut -d. -f2)
(cd "$proj" && PGDATABASE=insbench_old "$python" manage.py migrate app020 "$target" -v 0)
index=$(psql -X -At -d insbench_old -c "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' \
  AND tablename LIKE 'app001_%' AND indexname NOT LIKE '%pkey' ORDER BY indexname LIMIT 1")
column=$(psql -X -At -d insbench_old -c "SELECT table_name || '.' || column_name FROM information_schema.columns \
  WHERE table_schema = 'public' AND table_name LIKE 'app002_%' AND data_type = 'character varying' \
  ORDER BY table_name, column_name LIMIT 1")
psql -X -q -d insbench_old -c "DROP INDEX \"$index\"; \
  ALTER TABLE \"${column%%.*}\" ALTER COLUMN \"${column#*.}\" TYPE text"
url=$("$bin" server url | sed -E 's|^([^?]*/)[^/?]*|\1insbench_old|')

timed plan 0 "$bin" plan "${last50[@]}"
timed plan_json 0 "$bin" plan --json "${last50[@]}"
timed sql_json 0 "$bin" sql --json "${last50[@]}"
timed lint_github '[01]' "$bin" lint --format github "${last50[@]}"
timed schema_json 0 "$bin" schema --json
timed plan_against 0 "$bin" plan --json --against "$url"
timed diff_against 1 "$bin" diff --against "$url" --json

# What they printed is what was asked for.
jq_py() { "$python" -c "import json,sys; d=json.load(open(sys.argv[1])); print($1)" "$2"; }
n_plan=$(jq_py 'len(d["migrations"])' "$work/plan_json.out")
[ "$n_plan" = 50 ] || die "plan --json listed $n_plan migrations, not 50"
n_sql=$(jq_py 'len(d["migrations"])' "$work/sql_json.out")
[ "$n_sql" = 50 ] || die "sql --json listed $n_sql migrations, not 50"
n_tables=$(jq_py 'len(d["tables"])' "$work/schema_json.out")
n_against=$(jq_py 'len(d["migrations"])' "$work/plan_against.out")
[ "$n_against" = 5 ] || die "plan --against listed $n_against migrations, not 5"
n_diff=$(jq_py 'len(d["differences"])' "$work/diff_against.out")
n_diff_attr=$(jq_py 'sum(1 for x in d["differences"] if x["migration"])' "$work/diff_against.out")
diff_kinds=$(jq_py '", ".join(f"{k} {v}" for k, v in sorted(__import__("collections").Counter(x["kind"] for x in d["differences"]).items()))' "$work/diff_against.out")
grep -q "index\` $index\|$index" "$work/diff_against.out" || die "diff did not report the dropped index $index"
n_lint=$(grep -c '^::' "$work/lint_github.out" || true)
n_lint_errors=$(grep -c '^::error' "$work/lint_github.out" || true)
lint_rc=${rcs[lint_github]}

if [ "$sqlmigrate" -gt 0 ]; then
  log "case: ${sqlmigrate} x manage.py sqlmigrate"
  t0=$(date +%s%N)
  for label in $(echo "$labels" | head -n "$sqlmigrate"); do
    (cd "$proj" && PGDATABASE=insbench_old "$python" manage.py sqlmigrate "${label%%.*}" "${label#*.}" >/dev/null)
  done
  t1=$(date +%s%N)
  took[sqlmigrate]=$(ms "$t0" "$t1")
  log "sqlmigrate: ${took[sqlmigrate]} ms"
fi

cores=$(nproc)
cat <<EOF
- date: $(date -u '+%Y-%m-%d %H:%M UTC'); project: \`gen_project.py --size 1000\` (${n_migrations} migrations, ${n_tables} tables); release build; embedded PostgreSQL $("$bin" server url >/dev/null; psql -X -At -d postgres -c 'SHOW server_version' | cut -d' ' -f1); ${cores} cores shared with other work; script: \`scripts/bench_insight.sh\`, one run each, the template built first (prepare: ${took[prepare]} ms).
- the last 50 migrations of \`showmigrations --plan\`, named \`app.name\`:

| command | wall time | result |
|---|---:|---|
| \`migsnap plan <50>\` (text) | ${took[plan]} ms | exit 0 |
| \`migsnap plan --json <50>\` | ${took[plan_json]} ms | 50 migrations, operations and SQL |
| \`migsnap sql --json <50>\` | ${took[sql_json]} ms | 50 migrations |
| \`migsnap lint --format github <50>\` | ${took[lint_github]} ms | ${n_lint} annotations (${n_lint_errors} errors), exit ${lint_rc} |
| \`migsnap schema --json\` | ${took[schema_json]} ms | ${n_tables} tables (warm key) |
| \`migsnap plan --json --against URL\` | ${took[plan_against]} ms | the 5 migrations rolled back |
| \`migsnap diff --against URL --json\` | ${took[diff_against]} ms | exit 1: ${n_diff} differences (${diff_kinds}), ${n_diff_attr} attributed to a migration |
EOF
if [ "$sqlmigrate" -gt 0 ]; then
  echo "| ${sqlmigrate} × \`manage.py sqlmigrate APP NAME\` | ${took[sqlmigrate]} ms | one Python start each |"
fi
}
