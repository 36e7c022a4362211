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

# What compiling migsnap needs beyond Rust and a C compiler: libclang, which
# the pg_query crate's bindgen loads to read libpg_query's header (PostgreSQL's
# parser, for the restore's allow-list). Installed from Debian's packages when
# we are root; otherwise say how.
ensure_build_tools() {
  # libclang.so* or libclang-<version>.so*, never libclang-cpp (the C++
  # interface, which other packages pull in and bindgen cannot load). Any
  # one pattern matching is enough (one `ls` of all three fails when one
  # does not).
  [ -n "${LIBCLANG_PATH:-}" ] && return 0
  local pattern
  for pattern in '/usr/lib/llvm-*/lib/libclang.so*' '/usr/lib/*/libclang.so*' '/usr/lib/*/libclang-[0-9]*.so*'; do
    compgen -G "$pattern" >/dev/null && return 0
  done
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing libclang (for the pg_query crate) from Debian's packages" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev >/dev/null
  else
    echo "error: libclang not found: building migsnap needs it (the pg_query crate's bindgen)" >&2
    echo "hint: install it (e.g. apt-get install libclang-dev), or set LIBCLANG_PATH to the directory holding libclang.so" >&2
    exit 2
  fi
}

# For the benches: measure CASE CMD...: run CMD once, append its wall time (ms) to CASE.ms and
# the peak RSS (KiB) GNU time reports to CASE.rss. CMD may be a function of
# this script (exported, run by a child bash so GNU time can wrap it).
measure() {
  local case=$1; shift
  local t0 t1
  if declare -F "$1" >/dev/null; then set -- bash -c '"$@"' _ "$@"; fi
  t0=$(date +%s%N)
  if ! /usr/bin/time -f %M -o "$work/rss" "$@" >"$work/last.out" 2>"$work/last.err"; then
    cat "$work/last.err" >&2
    die "case '$case' failed: $*"
  fi
  t1=$(date +%s%N)
  echo $(( (t1 - t0) / 1000 )) | awk '{printf "%.1f\n", $1 / 1000}' >>"$res/$case.ms"
  tail -n 1 "$work/rss" >>"$res/$case.rss"
}

# libpq_env_of URL: shell assignments of PGHOST, PGPORT, PGUSER, PGPASSWORD
# and admin_db (the URL's database) for a server URL, to eval.
libpq_env_of() {
  python3 - "$1" <<'PY'
import shlex, sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
q = u.parse_qs(p.query)
env = {
    "PGHOST": q.get("host", [u.unquote(p.hostname or "") or "localhost"])[0],
    "PGPORT": q.get("port", [str(p.port or 5432)])[0],
    "PGUSER": u.unquote(p.username or "") or "postgres",
    "PGPASSWORD": u.unquote(p.password or ""),
    "admin_db": u.unquote(p.path.lstrip("/")) or "postgres",
}
for k, v in env.items():
    print(f"{k}={shlex.quote(v)}")
PY
}

# For the benches: `log` and `die` under the script's name.
bench_messages() {
  bench_name=$1
  log() { printf '%s: %s\n' "$bench_name" "$*" >&2; }
  die() { printf '%s: error: %s\n' "$bench_name" "$*" >&2; exit 1; }
}

# For the benches: a release build ($bin) and the venv's Python ($python).
bench_build() {
  ensure_build_tools
  log "building migsnap (release)…"
  cargo build --release --quiet
  bin="$root/target/release/migsnap"
  python="$root/.venv/bin/python"
}

# For the benches: a new work dir ($work) named after $1, which the embedded
# server (run as `postgres` when we are root) can enter.
bench_workdir() {
  work=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
  if [ "$(id -u)" = 0 ]; then chmod 755 "$work"; fi
}

# For the benches: on exit, stop the embedded server ($MIGSNAP_SERVER_DIR)
# and remove $work, unless --keep set $keep.
bench_cleanup() {
  cleanup() {
    if [ -n "${keep:-}" ]; then log "kept $work"; return; fi
    "$bin" server stop -q >/dev/null 2>&1 || true
    rm -rf "$work"
  }
  trap cleanup EXIT
}

# For the benches: stat_of CASE median|min|max|n over the times in $res/CASE.ms
# (one per line); empty when there are none.
stat_of() {
  local f="$res/$1.ms"
  [ -s "$f" ] || { echo ""; return; }
  sort -g "$f" | awk -v what="$2" '{a[NR]=$1} END {
    if (what == "n") print NR
    else if (what == "min") print a[1]
    else if (what == "max") print a[NR]
    else if (NR % 2) print a[(NR+1)/2]
    else print (a[NR/2] + a[NR/2+1]) / 2 }'
}

# For the before/after benches (bench_compare, bench_pool): check that
# $before and $after name binaries, make the venv, a work dir ($work) and,
# unless $server_dir is set, a server dir on tmpfs ($shm/server); both named
# after $1.
compare_setup() {
  local b
  for b in "$before" "$after"; do
    [ -x "$b" ] || { echo "error: --before and --after must name migsnap binaries" >&2; exit 2; }
  done
  scripts/venv.sh
  ensure_postgres
  work=$(mktemp -d "${TMPDIR:-/tmp}/$1-XXXXXX")
  chmod 755 "$work"
  shm=''
  if [ -z "$server_dir" ]; then
    shm=$(mktemp -d "/dev/shm/$1-XXXXXX") && chmod 755 "$shm"
    server_dir="$shm/server"
  fi
}

# pinned_venv NAME PKG...: a venv of a bench's own, target/NAME, holding
# exactly the pinned packages (the project's .venv stays as
# tests/requirements.txt makes it); made again when the pins change. Sets py.
pinned_venv() {
  local name=$1
  shift
  local dir="$root/target/$name" stamp="$root/target/$name/.pins"
  if [ ! -x "$dir/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$*" ]; then
    log "installing $* into $dir"
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
    echo "$*" >"$stamp"
  fi
  py="$dir/bin/python"
}

# fingerprint DB OUT: what two builds of the same migrations must share, for the
# benches that compare them (bench_accel.sh, bench_build.sh): OUT.schema
# (`pg_dump --schema-only`, less its random \restrict token), OUT.applied (the
# django_migrations (app, name) rows), OUT.rows (every table's row count).
fingerprint() {
  local db=$1 out=$2
  pg_dump --schema-only -d "$db" 2>/dev/null | grep -v '^\\\(un\)\{0,1\}restrict ' >"$out.schema"
  psql -X -At -d "$db" -c "SELECT app, name FROM django_migrations ORDER BY app, name" >"$out.applied"
  psql -X -At -d "$db" -c "SELECT format('SELECT %L, count(*) FROM %I.%I;', n.nspname || '.' || c.relname, n.nspname, c.relname)
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      ORDER BY 1" | psql -X -At -v ON_ERROR_STOP=1 -d "$db" >"$out.rows"
}
