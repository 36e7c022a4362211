"""The scale curve of issue #12: what a migrated database costs as the schema
grows, migsnap's paths against the raw operations they are made of.

Run by scripts/bench_scale.sh (which builds migsnap and picks the server);
see there for the options. For each schema source -- a width (tables with 2
indexes each, made by one migration of plain SQL on top of the example
project) or a project (gen_project.py --size N: N migrations, a realistic
mix of operations) -- it measures, medians of --runs:

  raw WAL_LOG / FILE_COPY   CREATE DATABASE … TEMPLATE (psql), the floor
  warm                      prepare, target absent: one clone of the template
  warm, target exists       the old target renamed aside, dropped afterwards
  pool                      prepare handing out a ready member by rename
  cache                     prepare with no template: restore the dump, clone
  cache, with a pool        the same with pool = 1: the restore goes straight
                            to the target, the template follows in the background
  createdb + psql -1        the dump restored the plain way
  pg_restore -j 2           a custom-format dump of the same schema
  flush                     TRUNCATE of every table (what Django's flush runs
                            after each transactional test); migsnap_fresh_db's
                            swap instead costs "pool" when a member is ready,
                            "warm, target exists" when not

Every prepare is checked to have taken the path its case is about. Timings
are wall clock of the whole command (process start included).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: N tables with 2 indexes each, CHUNK to a statement (a transaction's locks
#: must fit the lock table): `TABLES_SQL % (first, last)`. Also used by
#: bench_reflink.py, which makes the same schema without Django.
CHUNK = 200
TABLES_SQL = """
DO $$
BEGIN
  FOR i IN %d..%d LOOP
    EXECUTE format('CREATE TABLE wide_%%s (id bigserial PRIMARY KEY, a int NOT NULL, b text, c timestamptz DEFAULT now())', i);
    EXECUTE format('CREATE INDEX wide_%%s_a ON wide_%%s (a)', i, i);
    EXECUTE format('CREATE INDEX wide_%%s_b ON wide_%%s (b)', i, i);
  END LOOP;
END $$;
"""

WIDE = '''from django.db import migrations

N = {n}
CHUNK = %d

SQL = """%s"""


''' % (CHUNK, TABLES_SQL) + '''class Migration(migrations.Migration):
    atomic = False
    dependencies = [("catalog", "0004_product_is_active")]
    operations = [
        migrations.RunSQL(SQL % (lo, min(lo + CHUNK - 1, N)), migrations.RunSQL.noop)
        for lo in range(1, N + 1, CHUNK)
    ]
'''


def log(msg: str) -> None:
    print("bench: " + msg, file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.bin = args.bin
        self.runs = args.runs
        self.cases = [c for c in args.cases.split(",") if c]
        self.work = Path(tempfile.mkdtemp(prefix="migsnap-scale-"))
        os.chmod(self.work, 0o755)
        self.env = dict(os.environ)
        self.env.update(
            MIGSNAP_CACHE_DIR=str(self.work / "cache"),
            MIGSNAP_PYTHON=args.python,
            MIGSNAP_POOL="0",
            NO_COLOR="1",
        )
        self.env.pop("DJANGO_SETTINGS_MODULE", None)

    def sh(self, *cmd: str, cwd: Path | None = None, env: dict | None = None) -> str:
        out = subprocess.run(
            cmd, cwd=cwd, env=env or self.env, capture_output=True, text=True
        )
        if out.returncode != 0:
            sys.exit("bench: error: %s failed:\n%s" % (" ".join(cmd), out.stderr))
        return out.stdout

    def timed(self, *cmd: str, cwd: Path | None = None, env: dict | None = None) -> tuple[float, str]:
        t0 = time.monotonic()
        out = self.sh(*cmd, cwd=cwd, env=env)
        return (time.monotonic() - t0) * 1000, out

    def sql(self, text: str, db: str = "postgres") -> str:
        return self.sh("psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", text).strip()

    def drop(self, db: str) -> None:
        self.sql(
            "SELECT 1 FROM pg_database WHERE datname = '%s' AND datistemplate" % db
        ) and self.sql('ALTER DATABASE "%s" IS_TEMPLATE false' % db)
        self.sql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % db)

    def settle(self) -> None:
        """Wait for migsnap's background work (maintain) to end, and for the
        server to write out what is dirty, so cases do not pay for each other."""
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            # maintain runs as prepare's current_exe(): the binary's real path
            # (target/ may be a symlink, as in a git worktree sharing one).
            ps = subprocess.run(["pgrep", "-f", "%s .*maintain" % os.path.realpath(self.bin)], capture_output=True)
            if ps.returncode != 0:
                break
            time.sleep(0.2)
        self.sql("CHECKPOINT")

    def prepare(self, proj: Path, db: str, expect: str, env: dict | None = None, key: bool = False):
        ms, out = self.timed(self.bin, "prepare", "--json", "--database", db, cwd=proj, env=env)
        got = json.loads(out)
        if got["source"] != expect:
            sys.exit("bench: error: expected prepare to use %s, it used %s" % (expect, got["source"]))
        # The key the snapshot was saved under: the build's own, not a
        # second `migsnap key` (a 5,000-migration run found no dump by that).
        return (ms, got["key"]) if key else ms

    def wide(self, n: int) -> tuple[Path, str]:
        """Schema source: the example project plus one migration of plain SQL
        making N tables with 2 indexes each."""
        proj = self.work / ("proj%d" % n)
        shutil.copytree(ROOT / "tests/example", proj)
        (proj / "catalog/migrations/0005_wide.py").write_text(WIDE.format(n=n))
        return proj, "%d tables" % n

    def project(self, n: int) -> tuple[Path, str]:
        """Schema source: the synthetic project of gen_project.py with N
        migrations (deterministic; its settings take the database from PG*)."""
        proj = self.work / ("gen%d" % n)
        log("%d migrations: generating the project" % n)
        self.sh(sys.executable, str(ROOT / "scripts/gen_project.py"), str(proj), "--size", str(n))
        return proj, "%d migrations" % n

    def measure(self, proj: Path, name: str) -> dict:
        """Every case on one schema source (a project directory)."""
        (proj / "migsnap.toml").write_text('key-salt = "scale-%s-%d"\n' % (name.replace(" ", "-"), time.time()))
        env = dict(self.env, PGDATABASE="bench_scale")
        self.env = env
        db = "test_scale"
        log("%s: building the snapshot" % name)
        cold, key = self.prepare(proj, db, "cold", key=True)
        tpl = "migsnap_" + key[:16]
        relations = int(self.sql("SELECT count(*) FROM pg_class WHERE relnamespace NOT IN "
                                 "(SELECT oid FROM pg_namespace WHERE nspname IN ('pg_catalog', 'information_schema'))", db))
        tag = name.replace(" ", "-")
        dump_sql = self.work / ("dump-%s.sql" % tag)
        dump_zst = self.work / "cache" / (key + ".sql.zst")
        if not dump_zst.exists():
            sys.exit("bench: error: no dump %s; the cache holds: %s"
                     % (dump_zst, sorted(p.name for p in dump_zst.parent.iterdir())))
        dump_sql.write_bytes(self.sh_bytes("zstdcat", str(dump_zst)))
        custom = self.work / ("dump-%s.custom" % tag)
        self.sh("pg_dump", "-Fc", "-f", str(custom), "-d", db)  # the template takes no connections
        r: dict = {"name": name, "relations": relations, "cold": [cold]}

        def case(case_name: str, fn) -> None:
            if self.cases and not any(c in case_name for c in self.cases):
                return
            for i in range(self.runs):
                self.settle()
                r.setdefault(case_name, []).append(fn())
                log("  %s, run %d: %.0f ms" % (case_name, i + 1, r[case_name][-1]))

        for strategy in ("WAL_LOG", "FILE_COPY"):
            def raw(strategy: str = strategy) -> float:
                self.drop("bench_raw")
                ms, _ = self.timed("psql", "-X", "-q", "-d", "postgres", "-c",
                                   'CREATE DATABASE bench_raw TEMPLATE "%s" STRATEGY %s' % (tpl, strategy))
                return ms
            case("raw " + strategy, raw)
        self.drop("bench_raw")

        def warm_absent() -> float:
            self.drop(db)
            self.settle()
            return self.prepare(proj, db, "template")
        case("warm", warm_absent)
        case("warm, target exists", lambda: self.prepare(proj, db, "template"))

        pool_env = dict(env, MIGSNAP_POOL="1")
        def pool() -> float:
            self.sh(self.bin, "prepare", "--database", db, cwd=proj, env=pool_env)  # refills
            self.settle()
            return self.prepare(proj, db, "pool", env=pool_env)
        case("pool", pool)
        self.sh(self.bin, "gc", cwd=proj)  # pool = 0 here: its members go

        tables = self.sql("SELECT string_agg(format('%I.%I', schemaname, tablename), ', ') "
                          "FROM pg_tables WHERE schemaname = 'public'", db)
        def flush() -> float:
            ms, _ = self.timed("psql", "-X", "-q", "-d", db, "-c", "TRUNCATE %s" % tables)
            return ms
        case("flush (TRUNCATE every table)", flush)

        def cache() -> float:
            self.drop(tpl)
            self.drop(db)
            self.settle()
            return self.prepare(proj, db, "cache")
        case("cache", cache)

        def cache_pool() -> float:
            self.drop(tpl)
            self.drop(db)
            self.sh(self.bin, "gc", cwd=proj)  # pool = 0 here: the members go
            self.settle()
            return self.prepare(proj, db, "cache", env=pool_env)
        case("cache, with a pool (restore handed out)", cache_pool)
        self.settle()
        self.sh(self.bin, "gc", cwd=proj)

        def psql_1() -> float:
            self.drop("bench_psql")
            self.settle()
            t0 = time.monotonic()
            self.sh("createdb", "bench_psql")
            self.sh("psql", "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-d", "bench_psql", "-f", str(dump_sql))
            return (time.monotonic() - t0) * 1000
        case("createdb + psql -1", psql_1)

        def pg_restore() -> float:
            self.drop("bench_psql")
            self.settle()
            t0 = time.monotonic()
            self.sh("createdb", "bench_psql")
            self.sh("pg_restore", "-j", "2", "-d", "bench_psql", str(custom))
            return (time.monotonic() - t0) * 1000
        case("createdb + pg_restore -j 2", pg_restore)
        self.drop("bench_psql")
        self.drop(db)
        self.drop(tpl)
        shutil.rmtree(proj, ignore_errors=True)
        dump_sql.unlink()
        custom.unlink()
        return r

    def sh_bytes(self, *cmd: str) -> bytes:
        return subprocess.run(cmd, check=True, capture_output=True).stdout


def fmt(ms: float) -> str:
    if ms < 1000:
        return "%.0f ms" % ms
    return "%.2f s" % (ms / 1000)


def report(results: list[dict], label: str, runs: int) -> str:
    cases = [k for k in dict.fromkeys(k for r in results for k in r) if k not in ("name", "relations")]
    head = "| case | " + " | ".join(
        "%s (%d relations)" % (r["name"], r["relations"]) for r in results
    ) + " |"
    lines = [
        "Scale curve, %s (medians of %d runs; cold: one run; in brackets ms per relation, then the fastest and slowest run):" % (label, runs),
        "",
        head,
        "|---|" + "---|" * len(results),
    ]
    for c in cases:
        cells = []
        for r in results:
            if c not in r:
                cells.append("–")
                continue
            m = statistics.median(r[c])
            spread = "" if len(r[c]) < 2 else ", %s–%s" % (fmt(min(r[c])), fmt(max(r[c])))
            cells.append("%s (%.3f%s)" % (fmt(m), m / r["relations"], spread))
        lines.append("| %s | %s |" % (c, " | ".join(cells)))
    return "\n".join(lines) + "\n"


def sizes(arg: str) -> list[str]:
    return [] if arg.strip() in ("", "none") else [n for n in arg.split(",") if n]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--python", required=True)
    ap.add_argument("--tables", default="500,2000", help="schema widths; '' or none for no width")
    ap.add_argument("--projects", default="", help="gen_project.py sizes, e.g. 1000,5000 (default: none)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cases", default="", help="only the cases whose name contains one of these (comma-separated)")
    ap.add_argument("--label", default="embedded server")
    args = ap.parse_args()
    bench = Bench(args)
    try:
        sources = [(bench.project, int(n)) for n in sizes(args.projects)]
        sources += [(bench.wide, int(n)) for n in sizes(args.tables)]
        if not sources:
            sys.exit("bench: error: nothing to measure\nhint: give --tables or --projects")
        results = []
        for source, n in sources:
            results.append(bench.measure(*source(n)))
            # A long run can be cut short: what is done so far is on stderr.
            log("so far:\n" + report(results, args.label, args.runs))
        print(report(results, args.label, args.runs))
    finally:
        shutil.rmtree(bench.work, ignore_errors=True)


if __name__ == "__main__":
    main()
