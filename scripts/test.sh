#!/usr/bin/env bash
# The whole test suite, from a fresh clone: creates the Python venv, makes
# sure PostgreSQL is installed, starts a private test server (through
# migsnap's own embedded-server code), runs lints, builds the wheel and runs
# `cargo test`, then stops and removes the server. Extra arguments go to
# `cargo test`.
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
# The wheel a team publishes and CI installs: a release build (about 4 min
# from scratch on 2 cores, about 1 min after a change in src/, seconds when
# nothing changed). tests/wheel.rs installs it into a fresh venv with no Rust
# on PATH and runs the plugin end to end.
MIGSNAP_TEST_WHEEL=$(scripts/build_wheel.sh)
export MIGSNAP_TEST_WHEEL
cleanup() {
  MIGSNAP_SERVER_DIR="$MIGSNAP_TEST_SERVER_DIR" target/debug/migsnap server stop -q >/dev/null 2>&1 || true
  rm -rf "$MIGSNAP_TEST_SERVER_DIR"
}
trap cleanup EXIT
cargo test --features failpoints "$@"
