#!/usr/bin/env bash
# Two migsnap binaries side by side on the warm and cache paths: what a change
# costs, measured in one run, interleaved (raw clone, before, after), on the
# synthetic project from scripts/gen_project.py.
#
#   scripts/bench_compare.sh --before BIN --after BIN [--runs N] [--migrations N] [--server-dir DIR]
#
#   --before BIN, --after BIN   the two migsnap binaries (release builds)
#
# Cases: warm (the target does not exist), replace (it does: the usual second
# run), cache (templates dropped: the dump is restored).
#   --runs N                    warm runs (default 25); cache runs are N/3
#   --migrations N              project size (default 1000)
#   --server-dir DIR            the embedded server's dir (default: under /dev/shm, so
#                               that the clone's disk noise does not drown a millisecond)
#
# Each binary gets its own cache dir (and so its own template); one server serves
# both. Medians go to stdout, progress to stderr. Everything is removed at the end.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$root"

before='' after='' runs=25 migrations=1000 server_dir=''
while [ $# -gt 0 ]; do
  case "$1" in
    --before) before=$2; shift 2 ;;
    --after) after=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --migrations) migrations=$2; shift 2 ;;
    --server-dir) server_dir=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench_compare: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
compare_setup migsnap-compare
export MIGSNAP_SERVER_DIR=$server_dir MIGSNAP_PYTHON="$root/.venv/bin/python"
cleanup() {
  "$after" server stop -q >/dev/null 2>&1 || true
  rm -rf "$work" ${shm:+"$shm"}
}
trap cleanup EXIT
log() { echo "bench_compare: $*" >&2; }

log "generating a $migrations-migration project"
python3 scripts/gen_project.py "$work/proj" --apps 20 --migrations-per-app $(( migrations / 20 )) >/dev/null 2>&1
mkdir -m 700 "$work/cache-before" "$work/cache-after"
run() {  # run before|after ARGS…: migsnap with that side's binary and cache dir
  local side=$1; shift
  local bin=$before; [ "$side" = after ] && bin=$after
  MIGSNAP_CACHE_DIR="$work/cache-$side" "$bin" -C "$work/proj" "$@"
}
log "cold builds (one per binary)"
for side in before after; do run "$side" prepare --database "test_$side" --json >/dev/null; done
host=$(run after server url 2>/dev/null | sed -n 's/.*host=\([^&]*\).*/\1/p' | python3 -c 'import sys,urllib.parse;print(urllib.parse.unquote(sys.stdin.read().strip()))')
P="psql -X -q -h $host -U postgres -d postgres"
template=$($P -At -c "SELECT datname FROM pg_database WHERE datistemplate AND datname ~ '^migsnap_[0-9a-f]{16}$' LIMIT 1")
# bash's own clock: `date` is a process whose start would be timed too.
ms() { local t0 t1; t0=${EPOCHREALTIME//[!0-9]/}; "$@" >"$work/last.json" 2>/dev/null; t1=${EPOCHREALTIME//[!0-9]/}; echo $(( t1 - t0 )); }
source_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["source"])' "$work/last.json"; }

log "warm: $runs runs of raw clone, before, after"
for _ in $(seq "$runs"); do
  $P -c "DROP DATABASE IF EXISTS bench_raw"
  echo "warm raw $(ms $P -c "CREATE DATABASE bench_raw TEMPLATE \"$template\"") template"
  for side in before after; do
    $P -c "DROP DATABASE IF EXISTS test_$side"
    echo "warm $side $(ms run "$side" prepare --database "test_$side" --json) $(source_of)"
  done
done >>"$work/times" 2>/dev/null
$P -c "DROP DATABASE IF EXISTS bench_raw" 2>/dev/null
log "replace: $runs runs of before, after into an existing target (what a second pytest run does)"
for _ in $(seq "$runs"); do
  for side in before after; do
    echo "replace $side $(ms run "$side" prepare --database "test_$side" --json) $(source_of)"
  done
  sleep 0.5  # let a background maintenance finish, as between two test runs
done >>"$work/times" 2>/dev/null
log "cache: $(( runs / 3 )) runs of before, after (templates dropped first)"
drop_templates() {
  for t in $($P -At -c "SELECT datname FROM pg_database WHERE datname ~ '^migsnap_[0-9a-f]{16}$'"); do
    $P -c "ALTER DATABASE \"$t\" IS_TEMPLATE false" -c "DROP DATABASE \"$t\""
  done
}
for _ in $(seq $(( runs / 3 ))); do
  for side in before after; do
    drop_templates
    $P -c "DROP DATABASE IF EXISTS test_$side"
    echo "cache $side $(ms run "$side" prepare --database "test_$side" --json) $(source_of)"
  done
done >>"$work/times" 2>/dev/null
python3 - "$work/times" <<'EOF'
import collections, statistics, sys
d = collections.defaultdict(list)
for line in open(sys.argv[1]):
    case, side, us, source = line.split()
    want = "cache" if case == "cache" else "template"
    if source != want:
        sys.exit(f"bench_compare: {case} {side} took the {source} path, not {want}")
    d[(case, side)].append(int(us) / 1000)
print("| case | side | median | min | max | runs |")
print("|---|---|---|---|---|---|")
for (case, side), v in sorted(d.items()):
    print(f"| {case} | {side} | {statistics.median(v):.1f} ms | {min(v):.1f} | {max(v):.1f} | {len(v)} |")
EOF
