#!/usr/bin/env bash
# A real project's own test suite with and without migsnap (issue #22): the
# djangoproject.com site (github django/djangoproject.com), two databases
# (`default`, and `trac`, whose unmanaged models no migration touches), run
# as its CI runs it, under both runners, six ways:
#
#   django  plain   manage.py test --timing --verbosity 2 APP_LIST (Django's runner)
#   django  cold    the same with --testrunner migsnap.django.DiscoverRunner,
#                   nothing cached (a fresh cache dir and embedded server)
#   django  warm    again, everything cached by the cold run
#   pytest  plain   pytest --no-migsnap APP_DIRS (pytest-django's setup)
#   pytest  cold    pytest --migsnap, nothing cached (a cache dir and server
#                   of its own: the Django runs' snapshots do not warm it)
#   pytest  warm    again
#
#   scripts/bench_realproj.sh PROJECT_DIR [--local-dep NAME=PATH]... [--runs N]
#                             [--parallel N] [--work DIR] [--venv DIR] [--python PY]
#                             [--release] [--keep]
#
#   PROJECT_DIR         a checkout of djangoproject.com (settings
#                       djangoproject.settings.dev, secrets from
#                       $DJANGOPROJECT_DATA_DIR/conf/secrets.json, tests listed
#                       in its Makefile's APP_LIST)
#   --local-dep N=PATH  install requirement N from PATH instead of its `git+`
#                       URL (only package registries are reachable here:
#                       djangoproject.com pins django-push to a GitHub commit)
#   --runs N            plain and warm runs of each runner (default 3), the
#                       cold ones once; medians are reported
#   --parallel N        every run in N processes: `manage.py test --parallel N`
#                       and `pytest -n N` (pytest-xdist); default: one process,
#                       as the project's CI runs
#   --work DIR          where the venv, servers, caches and logs go (default: a
#                       new temp dir)
#   --venv DIR          the project's venv (default WORK/venv); made and filled
#                       when it does not exist, used as it is when it does
#   --python PY         the interpreter for the venv (default python3)
#   --release           use target/release/migsnap (default: target/debug)
#   --keep              keep the work dir and leave its servers running
#
# The project's databases: one embedded PostgreSQL (migsnap's, started with
# `migsnap server start`) for the plain runs, with the two roles its CI
# creates (superusers `djangoproject` and `code.djangoproject`, password
# `secret`) and a secrets.json pointing both aliases at it. The migsnap runs
# each get a server of their own, started before the timed run, so "cold"
# means an empty cache and no template, not a PostgreSQL start.
#
# Before the runs it does what the project's `make ci` does before `make
# test`: compilemessages, compile the SCSS, collectstatic (this writes .mo
# and .css files into the checkout, all ignored by its .gitignore).
#
# Recorded per run: tests run, passed, failed, errors, skipped, the database
# setup time (Django's `--timing` "Total database setup"; under pytest, the
# `django_db_setup` fixture, timed by scripts/bench_realproj_timer.py), the
# teardown time (Django's runner only: `--timing` again), the
# wall time of the whole command and migsnap's summary line; for the
# repeated cases the median (and the range) of the times. The report
# (Markdown) goes to stdout and to WORK/report.md, the logs to WORK/logs.
# Exit 1 when any run's counts or set of failing tests differ from its
# runner's first plain run, or a run produced no result line: a slow number
# never fails it.
set -euo pipefail
{
source "$(dirname "$0")/lib.sh"
bench_messages bench_realproj

project='' work='' py=python3 profile=debug keep='' runs=3 parallel=1 venv='' local_deps=()
while [ $# -gt 0 ]; do
  case "$1" in
    --local-dep) local_deps+=("$2"); shift 2 ;;
    --work) work=$2; shift 2 ;;
    --venv) venv=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --parallel) parallel=$2; shift 2 ;;
    --python) py=$2; shift 2 ;;
    --release) profile=release; shift ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown argument $1 (see --help)" ;;
    *) [ -z "$project" ] || die "one PROJECT_DIR only"; project=$1; shift ;;
  esac
done
[ -n "$project" ] || die "PROJECT_DIR missing (see --help)"
[ "$runs" -ge 1 ] 2>/dev/null || die "--runs wants a number >= 1"
[ "$parallel" -ge 1 ] 2>/dev/null || die "--parallel wants a number >= 1"
project=$(cd "$project" && pwd)
[ -f "$project/manage.py" ] && [ -f "$project/requirements/tests.txt" ] \
  || die "$project is not a djangoproject.com checkout (no manage.py or requirements/tests.txt)"

bin="$root/target/$profile/migsnap"
[ -x "$bin" ] || die "$bin not found: run \`cargo build$([ "$profile" = release ] && echo " --release")\` first"
if [ -z "$work" ]; then bench_workdir bench-realproj; else mkdir -p "$work"; work=$(cd "$work" && pwd); fi
# The embedded servers run as `postgres` when we are root: they must reach
# their directories under $work.
if [ "$(id -u)" = 0 ]; then chmod 755 "$work"; fi
mkdir -p "$work/logs" "$work/data/conf"

ensure_postgres

# ---------------------------------------------------------------- venv

venv=${venv:-$work/venv}
if [ ! -x "$venv/bin/python" ]; then
  log "making the project's venv with $py (requirements/tests.txt, pytest-django, pytest-xdist)…"
  "$py" -m venv "$venv"
  # requirements/tests.txt and the files it includes, flattened, with each
  # `NAME @ git+URL` replaced by the local path --local-dep gives for NAME.
  "$venv/bin/python" - "$project/requirements/tests.txt" "$work/requirements.txt" "${local_deps[@]}" <<'PY'
import pathlib, re, sys
src, out, deps = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), dict(d.split("=", 1) for d in sys.argv[3:])
lines = []
def read(path):
    for line in path.read_text().splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-r "):
            read(path.parent / line[3:].strip())
            continue
        m = re.match(r"([A-Za-z0-9_.-]+)\s*@\s*git\+", line)
        if m:
            if m.group(1) not in deps:
                sys.exit(f"bench_realproj: error: {line!r} needs the network\nhint: pass --local-dep {m.group(1)}=PATH (a checkout of that commit)")
            line = deps[m.group(1)]
        lines.append(line)
read(src)
out.write_text("\n".join(lines) + "\n")
PY
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$work/requirements.txt" \
    pytest pytest-django pytest-xdist >"$work/logs/pip.log" 2>&1 \
    || { tail -20 "$work/logs/pip.log" >&2; die "pip install failed (log: $work/logs/pip.log)"; }
fi

# ---------------------------------------------------------------- servers

# migsnap_env KIND: the environment of the migsnap CLI, plugin and runner for
# a server and cache dir of KIND's own.
migsnap_env() {
  echo "MIGSNAP_SERVER_DIR=$work/srv-$1 MIGSNAP_CACHE_DIR=$work/cache-$1"
}

start_server() {
  env $(migsnap_env "$1") "$bin" server start -q >/dev/null
}

cleanup() {
  if [ -n "$keep" ]; then log "kept $work (servers still running)"; return; fi
  for kind in plain django pytest; do
    if [ -d "$work/srv-$kind" ]; then env $(migsnap_env "$kind") "$bin" server stop -q >/dev/null 2>&1 || true; fi
  done
  rm -rf "$work"
}
trap cleanup EXIT

log "starting the embedded servers…"
for kind in plain django pytest; do start_server "$kind"; done
eval "$(libpq_env_of "$(env $(migsnap_env plain) "$bin" server url)")"
export PGHOST PGPORT PGUSER PGPASSWORD
# The roles the project's CI makes (.github/workflows/tests.yml), and a
# secrets.json like its CI's, for the plain runs.
for role in djangoproject code.djangoproject; do
  psql -q -d "$admin_db" -v ON_ERROR_STOP=1 -v role="$role" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN SUPERUSER CREATEDB PASSWORD %L', :'role', 'secret')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
SQL
done
cat >"$work/data/conf/secrets.json" <<EOF
{"db_host": "$PGHOST", "db_port": "$PGPORT", "db_password": "secret",
 "trac_db_host": "$PGHOST", "trac_db_port": "$PGPORT", "trac_db_password": "secret",
 "secret_key": "a"}
EOF
unset PGHOST PGPORT PGUSER PGPASSWORD

# Every run's environment. The settings module is the one manage.py sets by
# default, named for pytest-django: the same migsnap key either way.
export DJANGOPROJECT_DATA_DIR="$work/data" DJANGO_SETTINGS_MODULE=djangoproject.settings.dev
export PATH="$venv/bin:$PATH" VIRTUAL_ENV="$venv"
export PYTHONPATH="$root/python:$root/scripts" MIGSNAP_BIN="$bin"
unset MIGSNAP_SERVER_URL MIGSNAP_PYTHON MIGSNAP_SERVER_DIR MIGSNAP_CACHE_DIR

cd "$project"
log "preparing the project as its CI does (compilemessages, SCSS, collectstatic)…"
{
  python -m manage compilemessages
  python -m pysassc djangoproject/scss/output.scss djangoproject/static/css/output.css --style=compressed
  python -m manage collectstatic --noinput
} >"$work/logs/prepare-project.log" 2>&1 \
  || { tail -20 "$work/logs/prepare-project.log" >&2; die "project preparation failed"; }

apps=$(sed -n 's/^APP_LIST ?= *//p' Makefile)
[ -n "$apps" ] || die "no APP_LIST in $project/Makefile"

# ---------------------------------------------------------------- runs

# run NAME KIND CMD...: run CMD with KIND's migsnap server and cache dir (the
# plain runs use neither: their databases are on the server secrets.json
# names), its output to logs/NAME.log, its exit code to logs/NAME.rc and its
# wall time to logs/NAME.wall. A failing test suite is a result, not an error.
run() {
  local name=$1 kind=$2; shift 2
  local t0 t1 rc=0
  log "$name: $*"
  t0=$(date +%s%N)
  env $(migsnap_env "$kind") "$@" >"$work/logs/$name.log" 2>&1 || rc=$?
  t1=$(date +%s%N)
  echo "$rc" >"$work/logs/$name.rc"
  awk -v ns=$((t1 - t0)) 'BEGIN { printf "%.1f\n", ns / 1e9 }' >"$work/logs/$name.wall"
}

django_test=(python manage.py test --noinput --timing --verbosity 2)
migsnap_runner=(--testrunner migsnap.django.DiscoverRunner)
pytest_cmd=(python -m pytest -p migsnap.pytest_plugin -p bench_realproj_timer -p no:cacheprovider
  -o "python_files=tests.py test*.py" -rfE)
if [ "$parallel" -gt 1 ]; then
  django_test+=(--parallel "$parallel")
  pytest_cmd+=(-n "$parallel")
fi

# The cold runs once each; the plain and warm runs $runs times, interleaved,
# so that load from other work hits both sides alike.
# shellcheck disable=SC2086 # $apps is a word list
{
  run django-plain-1 plain "${django_test[@]}" $apps
  run django-cold django "${django_test[@]}" "${migsnap_runner[@]}" $apps
  run django-warm-1 django "${django_test[@]}" "${migsnap_runner[@]}" $apps
  run pytest-plain-1 plain "${pytest_cmd[@]}" --no-migsnap $apps
  run pytest-cold pytest "${pytest_cmd[@]}" --migsnap $apps
  run pytest-warm-1 pytest "${pytest_cmd[@]}" --migsnap $apps
  for i in $(seq 2 "$runs"); do
    run django-plain-$i plain "${django_test[@]}" $apps
    run django-warm-$i django "${django_test[@]}" "${migsnap_runner[@]}" $apps
    run pytest-plain-$i plain "${pytest_cmd[@]}" --no-migsnap $apps
    run pytest-warm-$i pytest "${pytest_cmd[@]}" --migsnap $apps
  done
}

# ---------------------------------------------------------------- report

python - "$work" "$bin" "$project" "$runs" "$parallel" <<'PY' | tee "$work/report.md"
import pathlib, re, subprocess, sys

work, binary, project = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
logs = work / "logs"

def parse_django(text):
    r = {}
    m = re.search(r"^Ran (\d+) tests? in", text, re.M)
    if m:
        r["tests"] = int(m.group(1))
    m = re.search(r"^(OK|FAILED)(?: \((.*)\))?$", text, re.M)
    if m:
        counts = dict((k.strip(), int(v)) for k, v in (p.split("=") for p in (m.group(2) or "").split(", ") if p))
        r["failed"] = counts.get("failures", 0) + counts.get("unexpected successes", 0)
        r["errors"] = counts.get("errors", 0)
        r["skipped"] = counts.get("skipped", 0) + counts.get("expected failures", 0)
        if "tests" in r:
            r["passed"] = r["tests"] - r["failed"] - r["errors"] - r["skipped"]
    m = re.search(r"^Total database setup took ([\d.]+)s", text, re.M)
    if m:
        r["setup"] = float(m.group(1))
    m = re.search(r"^Total database teardown took ([\d.]+)s", text, re.M)
    if m:
        r["teardown"] = float(m.group(1))
    r["bad"] = sorted(set(f"{k} {t} ({c})" for k, t, c in re.findall(r"^(FAIL|ERROR): (\S+) \((\S+)\)", text, re.M)))
    return r

def parse_pytest(text):
    r = {}
    m = re.search(r"^=+ (.*?) in [\d.]+s(?: \([^)]*\))? =+$", text, re.M)
    if m:
        counts = {}
        for n, what in re.findall(r"(\d+) (\w+)", m.group(1)):
            counts[what.rstrip("s") if what in ("errors",) else what] = int(n)
        r["passed"] = counts.get("passed", 0)
        r["failed"] = counts.get("failed", 0) + counts.get("xpassed", 0)
        r["errors"] = counts.get("error", 0)
        r["skipped"] = counts.get("skipped", 0) + counts.get("xfailed", 0)
        r["tests"] = r["passed"] + r["failed"] + r["skipped"] + r["errors"]
    took = [float(t) for t in re.findall(r"^bench: django_db_setup took ([\d.]+) s", text, re.M)]
    if took:
        r["setup"] = sum(took)
    r["bad"] = sorted(set(re.findall(r"^((?:FAILED|ERROR) \S+)", text, re.M)))
    return r

repeats, parallel = int(sys.argv[4]), int(sys.argv[5])
cases = [(runner, mode) for runner in ("django", "pytest") for mode in ("plain", "cold", "warm")]
names = lambda runner, mode: [f"{runner}-cold"] if mode == "cold" else [f"{runner}-{mode}-{i}" for i in range(1, repeats + 1)]
results, missing, differ = {}, [], []
for runner, mode in cases:
    for name in names(runner, mode):
        text = (logs / f"{name}.log").read_text(errors="replace")
        r = (parse_django if runner == "django" else parse_pytest)(text)
        r["wall"] = float((logs / f"{name}.wall").read_text())
        r["migsnap"] = "; ".join(re.findall(r"^(?:\[gw\d+\] )?migsnap: (test_.*)$", text, re.M))
        results[name] = r
        if "tests" not in r:
            missing.append(name)

def sh(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True, cwd=project).stdout.strip()

def median(xs):
    xs = sorted(xs)
    return (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2

def times(rs, key):
    xs = [r[key] for r in rs if key in r]
    if not xs:
        return "?"
    if len(xs) == 1:
        return "%.2f" % xs[0]
    return "%.2f (%.2f–%.2f)" % (median(xs), min(xs), max(xs))

commit = sh("git", "log", "-1", "--format=%h %ad %s", "--date=short")
django = sh(sys.executable, "-c", "import django; print(django.get_version())")
pyver = sh(sys.executable, "-c", "import sys; print(sys.version.split()[0])")
migsnap = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
print(f"- project: djangoproject.com at `{commit}`; Django {django}, Python {pyver}; {migsnap} ({pathlib.Path(binary).parent.name} build)")
print(f"- machine: {sh('nproc')} CPUs; load average at the end: {' '.join(open('/proc/loadavg').read().split()[:3])}")
print(f"- runs: plain and warm {repeats} each (median, and the range, of the times), cold once; "
      + (f"`manage.py test --parallel {parallel}`, `pytest -n {parallel}`" if parallel > 1 else "one test process"))
print()
print("| runner | migsnap | tests | passed | failed | errors | skipped | db setup (s) | db teardown (s) | wall (s) | migsnap's summary (first run) |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for runner, mode in cases:
    rs = [results[n] for n in names(runner, mode)]
    r = rs[0]
    cell = lambda k: str(r.get(k, "?"))
    print(f"| {'manage.py test' if runner == 'django' else 'pytest'} | {'off' if mode == 'plain' else mode} "
          f"| {cell('tests')} | {cell('passed')} | {cell('failed')} | {cell('errors')} | {cell('skipped')} "
          f"| {times(rs, 'setup')} | {times(rs, 'teardown') if runner == 'django' else '–'} | {times(rs, 'wall')} | {r['migsnap'] or '–'} |")
print()
counted = ("tests", "passed", "failed", "errors", "skipped")
for runner in ("django", "pytest"):
    plain = results[f"{runner}-plain-1"]
    for runner_, mode in cases:
        for name in names(runner_, mode) if runner_ == runner else []:
            r = results[name]
            if name in missing or (all(r.get(k) == plain.get(k) for k in counted) and r["bad"] == plain["bad"]):
                continue
            differ.append(name)
            print(f"- **{name} differs from {runner}-plain-1**: {dict((k, r.get(k)) for k in counted)}; "
                  f"failing only here: {sorted(set(r['bad']) - set(plain['bad']))}; "
                  f"only in plain: {sorted(set(plain['bad']) - set(r['bad']))}")
    if plain["bad"]:
        print(f"- {runner} plain, failing or erroring: " + ", ".join(f"`{b}`" for b in plain["bad"]))
if missing:
    print(f"- no result line in: {', '.join(missing)} (see {logs})")
if not differ and not missing:
    print("- every run has the same results as its runner's first plain run (counts and the failing tests)")
sys.exit(1 if differ or missing else 0)
PY
}
