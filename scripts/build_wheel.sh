#!/usr/bin/env bash
# Build migsnap's wheel: the release binary, stripped, and the Python package
# (the pytest plugin) in one self-contained file, so that CI installs migsnap
# in seconds instead of compiling Rust in every job. A team builds it once per
# version and publishes it (README, "Install"; docs/install.md).
#
# maturin comes from PyPI, pinned, into a tools venv under target/. The
# wheel's platform tag is what the binary honestly needs: maturin reads the
# glibc symbol versions it links against (as auditwheel does) and tags it
# manylinux_2_<N> for the newest one, so the tag depends on the glibc of the
# machine that builds it (Debian 12: see docs/install.md for the tag it gets).
#
# Prints the wheel's path on stdout; cargo's progress goes to stderr.
# Extra arguments go to `maturin build`; MIGSNAP_WHEEL_DIR sets where the
# wheel goes (default target/wheels). MIGSNAP_WHEEL_PROFILE=dev builds it from
# the debug profile instead of release: the same files in the same layout,
# sharing the compiled dependencies of `cargo build` (scripts/test.sh uses it
# so that the suite does not compile every crate a third time in release mode;
# what it tests is the packaging, not the optimiser).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$root"
ensure_build_tools

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
profile=${MIGSNAP_WHEEL_PROFILE:-release}
case "$profile" in
  release) echo "wheel: building migsnap (release; from scratch this takes several minutes)…" >&2 ;;
  dev) echo "wheel: building migsnap (debug profile, for the test suite)…" >&2 ;;
  *)
    echo "error: MIGSNAP_WHEEL_PROFILE must be release or dev, not '$profile'" >&2
    echo "hint: unset it for the wheel you publish (release)" >&2
    exit 2 ;;
esac
# --locked: the versions in Cargo.lock, as tested. Strip comes from
# pyproject.toml ([tool.maturin] strip).
"$tools/bin/maturin" build --profile "$profile" --locked --out "$out" "$@" >&2
wheel=$(ls "$out"/migsnap-*.whl)
echo "wheel: $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB)" >&2
echo "$wheel"
