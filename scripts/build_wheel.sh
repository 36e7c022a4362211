#!/usr/bin/env bash
# Build migsnap's wheel: the release binary, stripped, and the Python package
# (the pytest plugin) in one self-contained file, so that CI installs migsnap
# in seconds instead of compiling Rust in every job. A team builds it once per
# version and publishes it (README, "Install").
#
# maturin comes from PyPI, pinned, into a tools venv under target/. The
# wheel's platform tag is what the binary honestly needs: maturin reads the
# glibc symbol versions it links against (as auditwheel does) and tags it
# manylinux_2_<N> for the newest one, so the tag depends on the glibc of the
# machine that builds it (Debian 12: see the README for the tag it gets).
#
# Prints the wheel's path on stdout; cargo's progress goes to stderr.
# Extra arguments go to `maturin build`; MIGSNAP_WHEEL_DIR sets where the
# wheel goes (default target/wheels).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$root"

maturin_version=1.16.0
tools="$root/target/wheel-tools"
if [ "$("$tools/bin/maturin" --version 2>/dev/null)" != "maturin $maturin_version" ]; then
  echo "wheel: installing maturin $maturin_version into $tools" >&2
  "${MIGSNAP_BOOTSTRAP_PYTHON:-python3}" -m venv "$tools"
  "$tools/bin/python" -m pip install --quiet --disable-pip-version-check "maturin==$maturin_version"
fi

out="${MIGSNAP_WHEEL_DIR:-$root/target/wheels}"
mkdir -p "$out"
rm -f "$out"/migsnap-*.whl
echo "wheel: building migsnap (release; from scratch this takes several minutes)…" >&2
# --locked: the versions in Cargo.lock, as tested. Strip and release come
# from pyproject.toml ([tool.maturin] strip) and --release.
"$tools/bin/maturin" build --release --locked --out "$out" "$@" >&2
wheel=$(ls "$out"/migsnap-*.whl)
echo "wheel: $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB)" >&2
echo "$wheel"
