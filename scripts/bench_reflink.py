"""Clones on PostgreSQL 18 with reflink (issue #12 goal 6): the raw cost of
`CREATE DATABASE … TEMPLATE … STRATEGY …` per relation, PostgreSQL 18 with
`file_copy_method = clone` on XFS (reflink=1) against PostgreSQL 15's WAL_LOG
and FILE_COPY.

Run by scripts/bench_reflink.sh, which makes the filesystems and starts one
server per --cluster; see there. For each schema width (tables with 2
indexes each, plain SQL, as bench_scale.py makes them) and each durability
(fsync off as migsnap's embedded server runs, then the server defaults), it
runs every case once per round, the order rotated each round so the noise of a
shared machine hits all cases alike, and reports medians with min–max.

A time is the server's answer to the one `CREATE DATABASE` (psql's \\timing,
so no process start), after a CHECKPOINT that is not timed. No clone is
dropped until the width is done: on ext4 a clone right after a DROP DATABASE
of thousands of files is slow (BENCHMARKS.md), which would bias whichever case
came next. The disk space a clone takes is the drop in free blocks of its
filesystem (statvfs after `sync -f`) around the first run of each case.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from bench_scale import CHUNK, TABLES_SQL  # the same schema as the scale curve

# (case label, cluster name, strategy, file_copy_method or None)
CASES = [
    ("PG 18, XFS, FILE_COPY + clone", "pg18-xfs", "FILE_COPY", "clone"),
    ("PG 18, XFS, FILE_COPY + copy", "pg18-xfs", "FILE_COPY", "copy"),
    ("PG 18, XFS, WAL_LOG", "pg18-xfs", "WAL_LOG", None),
    ("PG 15, XFS, WAL_LOG", "pg15-xfs", "WAL_LOG", None),
    ("PG 15, XFS, FILE_COPY", "pg15-xfs", "FILE_COPY", None),
    ("PG 15, ext4, WAL_LOG", "pg15-ext4", "WAL_LOG", None),
    ("PG 15, ext4, FILE_COPY", "pg15-ext4", "FILE_COPY", None),
    ("PG 18, ext4, FILE_COPY + clone", "pg18-ext4", "FILE_COPY", "clone"),
    ("PG 18, ext4, FILE_COPY + copy", "pg18-ext4", "FILE_COPY", "copy"),
]

DURABILITY = {
    "fsync off": "fsync = off, synchronous_commit = off, full_page_writes = off",
    "fsync on": "fsync = on, synchronous_commit = on, full_page_writes = on",
}


def log(msg: str) -> None:
    print("bench_reflink: " + msg, file=sys.stderr, flush=True)


class Cluster:
    def __init__(self, spec: str) -> None:
        # name=port=bindir=datadir
        self.name, port, self.bindir, self.data = spec.split("=", 3)
        self.port = int(port)

    def psql(self, *commands: str, db: str = "postgres") -> str:
        cmd = [os.path.join(self.bindir, "psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1",
               "-p", str(self.port), "-d", db]
        for c in commands:
            cmd += ["-c", c]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit("bench_reflink: error: %s on %s failed:\n%s" % (commands, self.name, out.stderr))
        return out.stdout.strip()

    def durability(self, settings: str) -> None:
        for kv in settings.split(", "):
            k, v = kv.split(" = ")
            self.psql("ALTER SYSTEM SET %s = %s" % (k, v))
        self.psql("SELECT pg_reload_conf()")
        time.sleep(0.5)

    def used_bytes(self) -> int:
        subprocess.run(["sync", "-f", self.data], check=True)
        st = os.statvfs(self.data)
        return (st.f_blocks - st.f_bfree) * st.f_frsize


def width_label(n: int) -> str:
    return "%d tables" % n if n > 0 else "one table of %d MiB" % -n


def fmt(ms: float) -> str:
    return "%.0f ms" % ms if ms < 1000 else "%.2f s" % (ms / 1000)


def mib(b: int) -> str:
    return "%.1f MiB" % (b / 2**20)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cluster", action="append", required=True, help="name=port=bindir=datadir")
    ap.add_argument("--tables", default="500,2000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--durability", default="fsync off,fsync on")
    ap.add_argument("--data-mib", type=int, default=0,
                    help="instead of wide schemas: one table of about this many MiB")
    args = ap.parse_args()
    clusters = {c.name: c for c in map(Cluster, args.cluster)}
    cases = [c for c in CASES if c[1] in clusters]
    # A width is a number of tables, or -MIB for a template of one table with
    # data (few files, so its clones are dropped right away: see below).
    widths = [-args.data_mib] if args.data_mib else [int(n) for n in args.tables.split(",")]
    modes = args.durability.split(",")
    times: dict = {}   # (mode, n, case) -> [ms]
    space: dict = {}   # (mode, n, case) -> bytes
    template_size: dict = {}  # (n, cluster) -> bytes
    relations: dict = {}

    for n in widths:
        tpl = "wide_%d" % abs(n)
        for c in clusters.values():
            log("%s: building %s" % (c.name, width_label(n)))
            c.durability(DURABILITY["fsync off"])
            c.psql('DROP DATABASE IF EXISTS "%s"' % tpl, 'CREATE DATABASE "%s"' % tpl)
            if n < 0:
                # ~1 KiB a row; 1 MiB is about 900 rows with the tuple headers.
                c.psql("CREATE TABLE blob AS SELECT g AS id, repeat(md5(g::text), 32) AS v "
                       "FROM generate_series(1, %d) g" % (-n * 900), db=tpl)
            for lo in range(1, n + 1, CHUNK):
                c.psql(TABLES_SQL % (lo, min(lo + CHUNK - 1, n)), db=tpl)
            c.psql("VACUUM ANALYZE", db=tpl)
            c.psql("CHECKPOINT")
            relations[n] = int(c.psql(
                "SELECT count(*) FROM pg_class WHERE relnamespace NOT IN (SELECT oid FROM "
                "pg_namespace WHERE nspname IN ('pg_catalog', 'information_schema'))", db=tpl))
            template_size[(n, c.name)] = int(c.psql("SELECT pg_database_size('%s')" % tpl))
        made: list = []
        for mode in modes:
            for c in clusters.values():
                c.durability(DURABILITY[mode])
            for run in range(args.runs):
                k = run % len(cases)
                for label, cname, strategy, method in cases[k:] + cases[:k]:
                    c = clusters[cname]
                    db = "clone_%d_%d" % (len(made), run)
                    c.psql("CHECKPOINT")
                    before = c.used_bytes() if run == 0 else 0
                    pre = ["SET file_copy_method = %s" % method] if method else []
                    out = c.psql(*pre, "\\timing on",
                                 'CREATE DATABASE "%s" TEMPLATE "%s" STRATEGY = %s' % (db, tpl, strategy))
                    ms = float(out.rsplit("Time: ", 1)[1].split(" ms")[0].replace(",", ""))
                    made.append((c, db))
                    if run == 0:
                        space[(mode, n, label)] = c.used_bytes() - before
                    times.setdefault((mode, n, label), []).append(ms)
                    log("%s, %s, %s: %s" % (mode, width_label(n), label, fmt(ms)))
                    if n < 0:
                        # Keeping gigabytes of clones would fill the image;
                        # with few files the drop does not slow the next clone.
                        c.psql('DROP DATABASE "%s"' % made.pop()[1], "CHECKPOINT")
        log("%s: dropping %d clones" % (width_label(n), len(made)))
        for c in clusters.values():
            c.durability(DURABILITY["fsync off"])  # else each drop waits on a checkpoint's fsyncs
        for c, db in made:
            c.psql('DROP DATABASE "%s"' % db)
        for c in clusters.values():
            c.psql('DROP DATABASE "%s"' % tpl, "CHECKPOINT")

    for mode in modes:
        print("Raw `CREATE DATABASE … TEMPLATE` (%s; medians of %d runs, in brackets ms per "
              "relation, then the fastest and slowest run; space: free blocks the first clone "
              "took on its filesystem):\n" % (DURABILITY[mode], args.runs))
        print("| case | " + " | ".join("%s (%d relations)" % (width_label(n), relations[n]) for n in widths)
              + " | " + " | ".join("space, %s" % width_label(n) for n in widths) + " |")
        print("|---|" + "---|" * (2 * len(widths)))
        for label, *_ in cases:
            cells = []
            for n in widths:
                t = times[(mode, n, label)]
                m = statistics.median(t)
                cells.append("%s (%.3f, %s–%s)" % (fmt(m), m / relations[n], fmt(min(t)), fmt(max(t))))
            cells += [mib(space[(mode, n, label)]) for n in widths]
            print("| %s | %s |" % (label, " | ".join(cells)))
        print()
    print("Template sizes (pg_database_size): " + ", ".join(
        "%s %s %s" % (c, width_label(n), mib(b)) for (n, c), b in sorted(template_size.items())))


if __name__ == "__main__":
    main()
