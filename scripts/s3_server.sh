#!/usr/bin/env bash
# The S3-compatible server the snapshot-store tests run against: s3s-fs, a
# real S3 implementation (SigV4 authentication, multipart uploads,
# conditional puts) over a directory, from crates.io. Installed with
# `cargo install` when missing, started on loopback only.
#
#   scripts/s3_server.sh start DIR   # prints `export MIGSNAP_TEST_S3_…=…` lines to eval
#   scripts/s3_server.sh stop DIR
#
# DIR holds the data (one bucket, `migsnap-test`), the pid, the log.
set -euo pipefail

version=0.14.1                  # the newest that builds with the machine's rustc 1.95
bucket=migsnap-test
access_key=migsnap-test-access
secret_key=migsnap-test-secret

cmd=${1:?usage: s3_server.sh start|stop DIR}
dir=${2:?usage: s3_server.sh start|stop DIR}

stop() {
  if [ -f "$dir/pid" ]; then
    kill "$(cat "$dir/pid")" 2>/dev/null || true
    rm -f "$dir/pid"
  fi
}

bin_path() {
  local b="${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs"
  if [ -x "$b" ] && [ "$("$b" --version 2>/dev/null)" = "s3s-fs $version" ]; then
    echo "$b"
    return 0
  fi
  return 1
}

case "$cmd" in
  stop) stop ;;
  start)
    if ! bin=$(bin_path); then
      echo "setup: installing s3s-fs $version (cargo install, a few minutes once)" >&2
      # --debug: a test server needs no optimiser, and its crates compile
      # faster without one (this runs on every fresh CI machine).
      cargo install --quiet --locked --debug "s3s-fs@$version" --features binary >&2
      bin=$(bin_path)
    fi
    stop
    mkdir -p "$dir/data/$bucket"
    # A free loopback port, then the server on it; wait until it answers.
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$bin" --host 127.0.0.1 --port "$port" --access-key "$access_key" --secret-key "$secret_key" \
      "$dir/data" >"$dir/log" 2>&1 &
    echo $! >"$dir/pid"
    for _ in $(seq 1 100); do
      if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
        break
      fi
      if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
        echo "error: s3s-fs exited at start:" >&2
        cat "$dir/log" >&2
        exit 5
      fi
      sleep 0.1
    done
    echo "export MIGSNAP_TEST_S3_ENDPOINT=http://127.0.0.1:$port"
    echo "export MIGSNAP_TEST_S3_BUCKET=$bucket"
    echo "export MIGSNAP_TEST_S3_ACCESS_KEY=$access_key"
    echo "export MIGSNAP_TEST_S3_SECRET_KEY=$secret_key"
    # The bucket's directory: tests plant names there that no S3 client
    # would send (a control character), as a hostile store would hold them.
    echo "export MIGSNAP_TEST_S3_DATA=$(cd "$dir/data/$bucket" && pwd)"
    ;;
  *)
    echo "usage: s3_server.sh start|stop DIR" >&2
    exit 2
    ;;
esac
