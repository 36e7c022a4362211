#!/usr/bin/env bash
# The pool hand-out (issue #24: "the warm path's floor"): two migsnap binaries
# handing out a ready pool member, interleaved (before, after, before, …), on
# the synthetic project from scripts/gen_project.py, plus `migsnap key` alone.
#
#   scripts/bench_pool.sh --before BIN --after BIN [--runs N] [--migrations 1000|5000] [--server-dir DIR]
#
#   --before BIN, --after BIN   the two migsnap binaries (release builds)
#   --runs N                    hand-outs per binary (default 31)
#   --migrations N              project size: gen_project.py --size N (default 1000)
#   --server-dir DIR            the embedded server's dir (default: under /dev/shm)
#   --project DIR --cache-dir DIR   an existing project (of gen_project.py) and its cache
#                               dir instead of new ones: no cold build when its snapshot
#                               is there (both are kept)
#
# Both binaries share one cache dir and one template: they compute the same key
# (the stat cache changes how, never what), so one cold build serves both. Before
# each timed run the pool is refilled in the foreground (`maintain`, pool = 1)
# and the target dropped, so every timed run is a hand-out by rename into a new
# name, process start included, as the pytest plugin sees it. The first run of
# each binary is a warm-up and not counted (it writes the stat cache).
# Medians go to stdout, progress to stderr. Everything is removed at the end.
set -euo pipefail
# One compound command, parsed whole before it runs: editing the file during
# a long run (a 5,000-migration cold build takes 20 minutes) cannot derail it.
{
source "$(dirname "$0")/lib.sh"
cd "$root"

before='' after='' runs=31 migrations=1000 server_dir='' project='' cache_dir=''
while [ $# -gt 0 ]; do
  case "$1" in
    --before) before=$2; shift 2 ;;
    --after) after=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --migrations) migrations=$2; shift 2 ;;
    --server-dir) server_dir=$2; shift 2 ;;
    --project) project=$2; shift 2 ;;
    --cache-dir) cache_dir=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench_pool: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
compare_setup migsnap-benchpool
export MIGSNAP_SERVER_DIR=$server_dir MIGSNAP_PYTHON="$root/.venv/bin/python" MIGSNAP_POOL=1
export MIGSNAP_CACHE_DIR=${cache_dir:-$work/cache}
mkdir -p -m 700 "$MIGSNAP_CACHE_DIR"
cleanup() {
  "$after" server stop -q >/dev/null 2>&1 || true
  rm -rf "$work" ${shm:+"$shm"}
}
trap cleanup EXIT
log() { echo "bench_pool: $*" >&2; }

proj=${project:-$work/proj}
if [ -z "$project" ]; then
  log "generating a $migrations-migration project"
  python3 scripts/gen_project.py "$proj" --size "$migrations" >/dev/null 2>&1
fi
files=$(find "$proj" -path '*/migrations/*.py' | wc -l)
log "cold build ($files migration files)"
"$after" -C "$proj" prepare --database test_bench --json >/dev/null
host=$("$after" server url 2>/dev/null | sed -n 's/.*host=\([^&]*\).*/\1/p' | python3 -c 'import sys,urllib.parse;print(urllib.parse.unquote(sys.stdin.read().strip()))')
P="psql -X -q -h $host -U postgres -d postgres"
manifest=$(ls -S "$MIGSNAP_CACHE_DIR"/*.json | head -n 1)
# Wall time and CPU time (user + system, of the process and its threads), in
# µs. `ms` runs in a command substitution, a subshell of its own, so `times`
# there reports the one command it waited for (the maintenance that command
# leaves running is not waited for, and not counted). On a machine others
# load, the wall time waits for a core and the CPU time does not.
ms() {
  local t0 t1
  # The clock is bash's own: `date +%s%N` is a process of its own, whose
  # start (about a millisecond) landed inside each timed run until
  # 2026-12-08. Only the digits: the separator follows the locale.
  t0=${EPOCHREALTIME//[!0-9]/}; "$@" >"$work/last.json" 2>"$work/last.err"; t1=${EPOCHREALTIME//[!0-9]/}
  times >"$work/rusage"  # a builtin: this shell's children, as it counted them
  echo "$(( t1 - t0 )) $(tail -n 1 "$work/rusage" | tr 'ms' '  ' | awk '{ printf "%d", ($1 * 60 + $2 + $3 * 60 + $4) * 1000000 }')"
}
source_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("source"))' "$work/last.json"; }

log "pool hand-out: $runs runs each of before, after (plus one warm-up each)"
for i in $(seq 0 "$runs"); do
  for side in before after; do
    bin=$before; [ "$side" = after ] && bin=$after
    # The refill by the binary about to be timed: it leaves the stat cache
    # and the walk's record in that binary's format, as its own last run
    # would (one binary's refill before the other's hand-out would send
    # the other to a full walk whenever the formats differ).
    "$bin" -C "$proj" maintain --json >/dev/null
    $P -c "DROP DATABASE IF EXISTS test_bench"
    t=$(ms "$bin" -C "$proj" prepare --database test_bench --json)
    [ "$i" = 0 ] && continue
    echo "pool $side $t $(source_of)"
  done
done >>"$work/times"
log "key: $runs runs each of before, after"
for i in $(seq 0 "$runs"); do
  for side in before after; do
    bin=$before; [ "$side" = after ] && bin=$after
    "$bin" -C "$proj" key >/dev/null  # its own record, as for the pool
    t=$(ms "$bin" -C "$proj" key)
    [ "$i" = 0 ] && continue
    echo "key $side $t key"
  done
done >>"$work/times"
"$after" -C "$proj" maintain --json >/dev/null
echo "project: $files migration files; manifest $(( $(stat -c %s "$manifest") / 1024 )) KiB; cache dir: $(ls "$MIGSNAP_CACHE_DIR" | tr '\n' ' ')"
python3 - "$work/times" <<'EOF'
import collections, statistics, sys
d = collections.defaultdict(list)
c = collections.defaultdict(list)
for line in open(sys.argv[1]):
    case, side, us, cpu_us, source = line.split()
    if source != case:
        sys.exit(f"bench_pool: {case} {side} took the {source} path, not {case}")
    d[(case, side)].append(int(us) / 1000)
    c[(case, side)].append(int(cpu_us) / 1000)
print("| case | side | wall p50 | min | max | CPU p50 | runs |")
print("|---|---|---|---|---|---|---|")
for (case, side), v in sorted(d.items(), key=lambda kv: (kv[0][0] != "pool", kv[0][0], kv[0][1] != "before")):
    cpu = statistics.median(c[(case, side)])
    print(f"| {case} | {side} | {statistics.median(v):.1f} ms | {min(v):.1f} | {max(v):.1f} | {cpu:.1f} ms | {len(v)} |")
EOF
exit
}
