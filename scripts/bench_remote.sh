#!/usr/bin/env bash
# The shared snapshot store, measured (issue #14): a fresh machine (empty
# cache dir, no template on the server) with the snapshot in the store,
# against a cold `migrate`, on the synthetic project of scripts/gen_project.py;
# the store on loopback, then behind scripts/delay_proxy.py (2 ms round trip
# added, as the main bench adds to PostgreSQL). Also push and pull alone.
#
#   scripts/bench_remote.sh [--migrations 1000|5000] [--runs N] [--rtt-ms X] [--bulk-mb N] [--out FILE]
#
# --bulk-mb N: also push and pull a snapshot whose dump is N MiB of
# incompressible bytes (default 256; 0 skips it), for throughput and to show
# that memory stays flat whatever the dump's size.
#
# The store is s3s-fs (scripts/s3_server.sh), the server the embedded one,
# both in a temp dir removed at the end. The report (Markdown) goes to
# stdout, progress to stderr. Nothing fails on a slow number, only on a
# prepare that did not take the path the case is about.
set -euo pipefail
{
source "$(dirname "$0")/lib.sh"
cd "$root"

migrations=1000 runs=5 rtt_ms=2 bulk_mb=256 out=''
while [ $# -gt 0 ]; do
  case "$1" in
    --bulk-mb) bulk_mb=$2; shift 2 ;;
    --migrations) migrations=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --rtt-ms) rtt_ms=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
bench_messages bench

scripts/venv.sh
ensure_postgres
[ -x /usr/bin/time ] || die "/usr/bin/time (GNU time) is needed for peak memory: apt-get install time"
bench_build
bench_workdir migsnap-bench-remote
res="$work/results"
mkdir -p "$res"
export MIGSNAP_PYTHON="$root/.venv/bin/python" MIGSNAP_SERVER_DIR="$work/server" NO_COLOR=1
unset DJANGO_SETTINGS_MODULE VIRTUAL_ENV MIGSNAP_SERVER_URL
proxy_pid=''
cleanup() {
  if [ -n "$proxy_pid" ]; then kill "$proxy_pid" 2>/dev/null || true; fi
  "$bin" server stop -q >/dev/null 2>&1 || true
  scripts/s3_server.sh stop "$work/s3" || true
  rm -rf "$work"
}
trap cleanup EXIT

log "starting the embedded server and the S3 server"
"$bin" server start -q >/dev/null
server_url=$("$bin" server url)
eval "$(scripts/s3_server.sh start "$work/s3")"
export AWS_ACCESS_KEY_ID=$MIGSNAP_TEST_S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$MIGSNAP_TEST_S3_SECRET_KEY AWS_REGION=us-east-1
loopback=$MIGSNAP_TEST_S3_ENDPOINT
export MIGSNAP_REMOTE="s3://$MIGSNAP_TEST_S3_BUCKET/bench"

proj="$work/project"
log "generating the ${migrations}-migration project"
python3 scripts/gen_project.py "$proj" --size "$migrations" 2>/dev/null
printf 'key-salt = "bench-remote-%s-%s"\n' "$(date +%s)" "$$" >"$proj/migsnap.toml"
key=$("$bin" -C "$proj" key)
template="migsnap_${key:0:16}"

sql() { PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 -d "$server_url" -c "$1" >/dev/null; }
fresh_server() {  # no template, no target: another machine's server
  sql "UPDATE pg_database SET datistemplate = false WHERE datname = '$template'"
  sql "DROP DATABASE IF EXISTS \"$template\" WITH (FORCE)"
  sql "DROP DATABASE IF EXISTS test_bench WITH (FORCE)"
}

field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$work/last.out" "$1"; }
expect() {  # expect SOURCE ORIGIN
  local s o; s=$(field source); o=$(field origin)
  [ "$s/$o" = "$1/$2" ] || die "expected prepare to use $1/$2 but it used $s/$o"
}
prepare() { "$bin" -C "$proj" prepare --database test_bench --json; }
export -f prepare
export bin proj

log "case: cold migrate (fresh machine, no store)"
cache="$work/cache-cold"; mkdir -p "$cache"
MIGSNAP_REMOTE=off MIGSNAP_CACHE_DIR=$cache measure cold prepare
expect cold None
dump_bytes=$(stat -c %s "$cache/$key.sql.zst")

log "case: push"
AWS_ENDPOINT_URL=$loopback MIGSNAP_CACHE_DIR=$cache measure push "$bin" -C "$proj" push --json
[ "$(field result)" = uploaded ] || die "push did not upload"

fresh_from_store() {  # CASE ENDPOINT
  local i c
  for i in $(seq "$runs"); do
    fresh_server
    c="$work/cache-$1-$i"; mkdir -p "$c"
    AWS_ENDPOINT_URL=$2 MIGSNAP_CACHE_DIR=$c measure "$1" prepare
    expect cache remote
    c="$work/pull-$1-$i"; mkdir -p "$c"
    AWS_ENDPOINT_URL=$2 MIGSNAP_CACHE_DIR=$c measure "pull_$1" "$bin" -C "$proj" pull --json
  done
}
log "case: the dump already in the cache dir, no store (${runs} runs): the restore alone"
for i in $(seq "$runs"); do
  fresh_server
  MIGSNAP_REMOTE=off MIGSNAP_CACHE_DIR=$cache measure cached prepare
  expect cache local
done
log "case: fresh machine, store on loopback (${runs} runs)"
fresh_from_store loopback "$loopback"

if [ "$bulk_mb" != 0 ]; then
  log "case: push and pull of a ${bulk_mb} MiB dump"
  # The real manifest, pointing at N MiB of random bytes: push and pull
  # check size and sha256, not SQL (the restore does that).
  big="$work/cache-big"; mkdir -p "$big"
  head -c "$(( bulk_mb << 20 ))" /dev/urandom >"$big/$key.sql.zst"
  python3 - "$cache/$key.json" "$big/$key.json" "$big/$key.sql.zst" <<'PY'
import hashlib, json, os, sys
m = json.load(open(sys.argv[1]))
h = hashlib.sha256()
with open(sys.argv[3], "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
m["dump"]["sha256"], m["dump"]["size"] = h.hexdigest(), os.path.getsize(sys.argv[3])
json.dump(m, open(sys.argv[2], "w"), indent=2)
PY
  AWS_ENDPOINT_URL=$loopback MIGSNAP_REMOTE="$MIGSNAP_REMOTE-big" MIGSNAP_CACHE_DIR=$big measure push_big "$bin" -C "$proj" push --json
  for i in $(seq "$runs"); do
    c="$work/pull-big-$i"; mkdir -p "$c"
    AWS_ENDPOINT_URL=$loopback MIGSNAP_REMOTE="$MIGSNAP_REMOTE-big" MIGSNAP_CACHE_DIR=$c measure pull_big "$bin" -C "$proj" pull --json
    rm -rf "$c"
  done
fi

rtt_note=''
if [ "$rtt_ms" != 0 ]; then
  log "case: fresh machine, store behind ${rtt_ms} ms of round trip"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  python3 scripts/delay_proxy.py "$port" "${loopback#http://}" --delay-ms "$(awk -v r="$rtt_ms" 'BEGIN { print r / 2 }')" \
    --ready-file "$work/proxy.ready" 2>"$work/proxy.err" &
  proxy_pid=$!
  for _ in $(seq 50); do [ -f "$work/proxy.ready" ] && break; sleep 0.1; done
  [ -f "$work/proxy.ready" ] || die "the delay proxy did not start: $(cat "$work/proxy.err")"
  fresh_from_store slow "http://127.0.0.1:$port"
  rtt_note=1
fi

# ---------------------------------------------------------------- report
stats() {  # stats CASE -> "median min max n peak"
  sort -n "$res/$1.ms" | awk -v rss="$(sort -n "$res/$1.rss" | tail -1)" '
    { v[NR] = $1 } END {
      m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      printf "%s %s %s %d %s\n", m, v[1], v[NR], NR, rss }'
}
fmt_ms() { awk -v ms="$1" 'BEGIN { if (ms >= 1000) printf "%.2f s", ms / 1000; else printf "%.0f ms", ms }'; }
row() {  # row LABEL CASE
  local m lo hi n peak
  read -r m lo hi n peak < <(stats "$2")
  printf '| %s | %s | %s | %s | %s | %.1f MiB |\n' "$1" "$(fmt_ms "$m")" "$(fmt_ms "$lo")" "$(fmt_ms "$hi")" "$n" "$(awk -v k="$peak" 'BEGIN { print k / 1024 }')"
}
ratio() { awk -v a="$(stats "$1" | cut -d' ' -f1)" -v b="$(stats "$2" | cut -d' ' -f1)" 'BEGIN { printf "%.0f×", a / b }'; }
report() {
  echo "### Shared snapshot store: ${migrations} migrations, $(nproc) cores"
  echo
  echo "- $(date -u +%Y-%m-%d), migsnap $("$bin" --version | cut -d' ' -f2), PostgreSQL $(psql -X -At -d "$server_url" -c 'SHOW server_version'), store: s3s-fs on loopback"
  echo "- dump $(awk -v b="$dump_bytes" 'BEGIN { printf "%.0f KiB", b / 1024 }') (zstd); a fresh machine is an empty cache dir and a server without the key's template"
  echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared)"
  echo
  echo "| case | median | min | max | runs | peak RSS |"
  echo "|---|---|---|---|---|---|"
  row '`migrate` from empty (`prepare`, cold, no store)' cold
  row '`migsnap push` (upload the snapshot)' push
  row 'the dump already in the cache dir (`prepare`, cache, no store)' cached
  row 'fresh machine, `prepare` from the store (loopback)' loopback
  row '… `migsnap pull` alone (loopback)' pull_loopback
  if [ "$bulk_mb" != 0 ]; then
    row "\`migsnap push\` of a ${bulk_mb} MiB dump (loopback)" push_big
    row "\`migsnap pull\` of a ${bulk_mb} MiB dump (loopback)" pull_big
  fi
  if [ -n "$rtt_note" ]; then
    row "fresh machine, \`prepare\` from the store (+${rtt_ms} ms RTT)" slow
    row "… \`migsnap pull\` alone (+${rtt_ms} ms RTT)" pull_slow
  fi
  echo
  echo "From the store, a fresh machine is $(ratio cold loopback) faster than a cold migrate on loopback$( [ -n "$rtt_note" ] && echo ", $(ratio cold slow) with ${rtt_ms} ms of round trip to the store")."
}
if [ -n "$out" ]; then report | tee "$out"; else report; fi
}
