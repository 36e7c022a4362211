# Shared by the scripts: repo root, and making sure PostgreSQL's programs
# exist (a fresh Debian machine may lack them; install from Debian's
# packages when we are root and apt-get is there).
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

pg_bindir() {
  local d
  for d in "${MIGSNAP_PG_BINDIR:-}" "$(pg_config --bindir 2>/dev/null || true)" $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV); do
    if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_dump" ]; then echo "$d"; return 0; fi
  done
  return 1
}

ensure_postgres() {
  if ! pg_bindir >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "setup: installing PostgreSQL from Debian's packages" >&2
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
      echo "error: PostgreSQL server programs (initdb, pg_ctl, pg_dump) not found" >&2
      echo "hint: install PostgreSQL (e.g. apt-get install postgresql) or set MIGSNAP_PG_BINDIR" >&2
      exit 2
    fi
  fi
  # psql and pg_dump are used by the tests directly, too.
  PATH="$(pg_bindir):$PATH"
  export PATH
}
