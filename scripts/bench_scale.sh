#!/usr/bin/env bash
# The scale curve (issue #12): migsnap's warm, pool and cache paths against
# raw clones, createdb + psql -1 and pg_restore -j 2, and a flush, as the
# schema widens and as the project's migrations grow. Not a test: it fails
# only on a wrong result (a prepare that did not take the path its case is
# about), never on a slow one.
#
#   scripts/bench_scale.sh [--tables 500,2000,5000] [--projects 1000,5000] [--runs N] [--server-dir DIR]
#   scripts/bench_scale.sh --projects 1000,5000 --tables 5000 --runs 3 > scale.md
#
#   --tables LIST    schema widths, tables with 2 indexes each (default 500,2000;
#                    '' or none: no width, e.g. with --projects)
#   --projects LIST  synthetic projects of gen_project.py --size N, N migrations
#                    (1000 and/or 5000; default none). Measured first, same cases.
#   --runs N         runs per case, medians reported (default 3)
#   --cases LIST     only the cases whose name contains one of these words,
#                    e.g. "cache,psql" (default: all)
#   --server-dir DIR put the embedded server there (default: a temp dir under
#                    /var/tmp, on the disk); e.g. /dev/shm/… for tmpfs. Removed at the end.
#
# With MIGSNAP_SERVER_URL set, that server is used instead (a CI service with
# default durability, say; the role needs CREATEDB and CHECKPOINT rights).
# The report (Markdown) goes to stdout, progress to stderr.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$root"

tables=500,2000 projects='' runs=3 server_dir='' cases=''
while [ $# -gt 0 ]; do
  case "$1" in
    --tables) tables=$2; shift 2 ;;
    --projects) projects=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --cases) cases=$2; shift 2 ;;
    --server-dir) server_dir=$2; shift 2 ;;
    *) echo "bench_scale: error: unknown option $1" >&2
       echo "hint: scripts/bench_scale.sh [--tables 500,2000] [--projects 1000,5000] [--runs N] [--cases cache,psql] [--server-dir DIR]" >&2; exit 2 ;;
  esac
done

scripts/venv.sh
ensure_postgres
ensure_build_tools
echo "bench_scale: building migsnap (release)…" >&2
cargo build --release --quiet
bin="$root/target/release/migsnap"

label="server at MIGSNAP_SERVER_URL"
if [ -z "${MIGSNAP_SERVER_URL:-}" ]; then
  if [ -z "$server_dir" ]; then
    server_dir=$(mktemp -d /var/tmp/migsnap-scale-server.XXXXXX)
    rmdir "$server_dir"
  fi
  [ -e "$server_dir" ] && { echo "bench_scale: error: $server_dir exists" >&2; echo "hint: give a new path; it is removed at the end" >&2; exit 2; }
  mkdir -p "$(dirname "$server_dir")"
  export MIGSNAP_SERVER_DIR=$server_dir
  trap '"$bin" server stop -q >/dev/null 2>&1 || true; rm -rf "$server_dir"' EXIT
  "$bin" server start -q >/dev/null
  export MIGSNAP_SERVER_URL
  MIGSNAP_SERVER_URL=$("$bin" server url)
  label="embedded server in $(df --output=fstype "$(dirname "$server_dir")" | tail -n 1) ($server_dir)"
fi
# psql, createdb, pg_dump and pg_restore reach the same server.
eval "$(libpq_env_of "$MIGSNAP_SERVER_URL")"
export PGHOST PGPORT PGUSER PGPASSWORD
unset PGSERVICE PGSERVICEFILE PGOPTIONS
label="$label, PostgreSQL $(psql -X -At -d postgres -c 'SHOW server_version'), fsync $(psql -X -At -d postgres -c 'SHOW fsync')"
"$root/.venv/bin/python" scripts/bench_scale.py --bin "$bin" --python "$root/.venv/bin/python" \
  --tables "$tables" --projects "$projects" --runs "$runs" --cases "$cases" --label "$label"
