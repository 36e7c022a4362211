#!/usr/bin/env bash
# The whole test suite, from a fresh clone: creates the Python venv, makes
# sure PostgreSQL is installed, starts a private test server (through
# migsnap's own embedded-server code), runs lints and `cargo test`, then
# stops and removes the server. The snapshot-store tests get an S3-compatible
# server of their own on loopback (scripts/s3_server.sh: s3s-fs, installed
# with `cargo install` the first time). Extra arguments go to `cargo test`.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$root"

scripts/venv.sh
ensure_postgres
export MIGSNAP_TEST_PYTHON="$root/.venv/bin/python"
export MIGSNAP_TEST_SERVER_DIR="${MIGSNAP_TEST_SERVER_DIR:-${TMPDIR:-/tmp}/migsnap-test-server-$$}"

if [ -z "${MIGSNAP_SKIP_LINT:-}" ]; then
  cargo fmt --all -- --check
  cargo clippy --all-targets --quiet -- -D warnings
  cargo clippy --all-targets --quiet --features failpoints -- -D warnings
fi

# The suite kills and pauses migsnap at its test points: build them in.
cargo build --quiet --features failpoints
s3_dir="${TMPDIR:-/tmp}/migsnap-test-s3-$$"
cleanup() {
  MIGSNAP_SERVER_DIR="$MIGSNAP_TEST_SERVER_DIR" target/debug/migsnap server stop -q >/dev/null 2>&1 || true
  rm -rf "$MIGSNAP_TEST_SERVER_DIR"
  scripts/s3_server.sh stop "$s3_dir" || true
  rm -rf "$s3_dir"
}
trap cleanup EXIT
eval "$(scripts/s3_server.sh start "$s3_dir")"
cargo test --features failpoints "$@"
