#!/usr/bin/env bash
# migsnap on the bundled example project with the embedded server: a plain
# `manage.py migrate` for reference, then a cold and a warm `prepare`, timed.
# Works in temp dirs and removes them (and stops the server) at the end;
# pass --keep to leave them.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$root"
keep=${1:-}

scripts/venv.sh
ensure_postgres
ensure_build_tools
# Not --quiet: a first release build takes about 4 minutes on 2 cores, and
# cargo's progress shows it is not hung.
echo "demo: building migsnap (release: about 4 min the first time on 2 cores, seconds after)…" >&2
cargo build --release
bin="$root/target/release/migsnap"

work=$(mktemp -d "${TMPDIR:-/tmp}/migsnap-demo.XXXXXX")
cp -r tests/example "$work/project"
export MIGSNAP_CACHE_DIR="$work/cache"
export MIGSNAP_SERVER_DIR="$work/server"
export MIGSNAP_PYTHON="$root/.venv/bin/python"
unset MIGSNAP_SERVER_URL
mkdir -p "$MIGSNAP_CACHE_DIR"
if [ "$(id -u)" = 0 ]; then chmod 755 "$work"; fi  # the server runs as an unprivileged user
cleanup() {
  if [ "$keep" != "--keep" ]; then
    "$bin" server stop -q >/dev/null 2>&1 || true
    rm -rf "$work"
  else
    echo "demo: kept $work (server still running: $bin server stop)" >&2
  fi
}
trap cleanup EXIT
cd "$work/project"

ms() { echo $(( $(date +%s%N) / 1000000 )); }
if [ -t 2 ]; then bold=$'\033[1m' reset=$'\033[0m'; else bold='' reset=''; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$reset" >&2; }

step "start the embedded server"
"$bin" server start

step "key: a hash of the migration files (no server, no Python)"
"$bin" key

step "reference: plain 'manage.py migrate' into an empty database"
url=$("$bin" server url)
host=$(echo "$url" | sed -E 's/.*host=([^&]*).*/\1/' | sed 's/%2F/\//g')
psql -X -q -h "$host" -U postgres -d postgres -c 'CREATE DATABASE demo_plain'
t0=$(ms)
PGHOST=$host PGUSER=postgres PGDATABASE=demo_plain "$MIGSNAP_PYTHON" manage.py migrate -v 0
t1=$(ms); plain=$((t1 - t0))
echo "plain migrate: ${plain} ms"

step "cold: migsnap prepare (migrate once, snapshot)"
t0=$(ms); "$bin" prepare --database test_demo; t1=$(ms); cold=$((t1 - t0))

step "warm: migsnap prepare again (clone the template)"
t0=$(ms); "$bin" prepare --database test_demo; t1=$(ms); warm=$((t1 - t0))

step "the RunSQL/RunPython indexes are there (--nomigrations would miss them)"
psql -X -h "$host" -U postgres -d test_demo -Atc "SELECT indexname FROM pg_indexes WHERE indexname IN ('catalog_product_name_trgm','orders_order_open_created_idx','audit_auditevent_payload_gin') ORDER BY 1"

step "summary"
printf 'plain migrate   %6d ms\nmigsnap cold    %6d ms\nmigsnap warm    %6d ms   (%sx faster than plain migrate)\n' \
  "$plain" "$cold" "$warm" "$(( plain / (warm > 0 ? warm : 1) ))"
