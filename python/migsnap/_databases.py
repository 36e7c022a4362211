"""Every database a test run needs, from migsnap snapshots: what the pytest
plugin and ``migsnap.django.DiscoverRunner`` share. Imports no pytest.

Django's own test setup (``django.test.utils.setup_databases``) creates one
test database per distinct database among the aliases the tests use (the
aliases whose ``test_db_signature`` is the same share one), runs ``migrate
--database ALIAS`` on it, and points ``TEST["MIRROR"]`` aliases at their
mirror's database. Here each distinct PostgreSQL database is one ``migsnap
prepare --alias ALIAS`` instead (its own snapshot: the routers decide what
lands where), all started at once; an alias on another backend (SQLite, say)
is left to Django's ``create_test_db``, as without migsnap.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from os import PathLike
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple, Union

import migsnap
from migsnap import MigsnapError, Preparing

DEFAULT = "default"


class Background:
    """One ``prepare`` running while the caller does something else (pytest
    collects, another alias is prepared). Its lines are queued by a reading
    thread and written by the caller's thread when it waits (``take``), so
    nothing draws from another thread, and a long build's output never
    fills a pipe nobody reads."""

    def __init__(self, name: str, start: Callable[[], Preparing]) -> None:
        self.name = name
        self.used = False
        self._lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self._outcome: Union[Dict[str, Any], MigsnapError, None] = None
        self._preparing = start()
        self._thread = threading.Thread(target=self._read, name="migsnap-prepare", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            self._outcome = self._preparing.result(self._lines.put)
        except MigsnapError as e:
            self._outcome = e
        finally:
            self._lines.put(None)

    def take(self, echo: Callable[[str], None]) -> Dict[str, Any]:
        """Wait for the result, echoing migsnap's lines as they come; the
        result has ``waited_ms``, how long the caller waited for it."""
        self.used = True
        began = time.monotonic()
        while True:
            line = self._lines.get()
            if line is None:
                break
            echo(line)
        self._thread.join()
        outcome = self._outcome
        if isinstance(outcome, MigsnapError):
            raise outcome
        assert outcome is not None
        return dict(outcome, waited_ms=int((time.monotonic() - began) * 1000))

    def abandon(self) -> Optional[Dict[str, Any]]:
        """Stop it if it still runs; what it made if it finished (the
        caller drops that), else None."""
        self._preparing.cancel()
        self._thread.join()
        return self._outcome if isinstance(self._outcome, dict) else None


@dataclass
class Database:
    """One test database: prepared for ``alias`` (``default`` first when it
    is among them, as Django does: data migrations use it), and the other
    aliases that are the same database."""

    alias: str
    name: str
    shares: List[str] = field(default_factory=list)


@dataclass
class Layout:
    """What a run's aliases need: migsnap's databases, the mirrors
    (alias -> the alias it mirrors), and aliases on another backend."""

    databases: List[Database]
    mirrors: Dict[str, str]
    others: List[str]


def layout(aliases: Iterable[str]) -> Layout:
    """Django's grouping (``get_unique_databases_and_mirrors``), for the
    aliases the tests use. A mirror's target is set up when the mirror is
    used: otherwise the mirror would point at the real database's name.
    ``TEST["DEPENDENCIES"]`` orders Django's creation one by one; migsnap
    prepares every database at once (each is built by a process of its own
    from its own snapshot), so they only need to be free of cycles among
    the databases set up, which Django's own check says. A dependency on an
    alias this run does not set up is no cycle (pytest-django handed Django
    every alias but ``default`` and got "Circular dependency" for it)."""
    from django.core.exceptions import ImproperlyConfigured
    from django.db import connections
    from django.test.utils import dependency_ordered

    wanted: Set[str] = set(aliases)
    mirrors: Dict[str, str] = {}
    for alias in connections:
        target = connections[alias].settings_dict["TEST"].get("MIRROR")
        if target:
            mirrors[alias] = target
    # Said before anything is prepared: found after, it left every
    # database made for nothing (and a traceback through this module).
    for alias, target in mirrors.items():
        if target not in connections:
            raise MigsnapError(
                "error: DATABASES[%r]['TEST']['MIRROR'] names the alias `%s`, which DATABASES "
                "does not have (it has %s)\nhint: name one of its aliases, or remove the MIRROR"
                % (alias, target, ", ".join("`%s`" % a for a in connections))
            )
    wanted |= {mirrors[a] for a in wanted if a in mirrors}
    groups: Dict[Any, List[str]] = {}
    others: List[str] = []
    for alias in connections:
        if alias in mirrors or alias not in wanted:
            continue
        connection = connections[alias]
        if connection.vendor != "postgresql":
            others.append(alias)
            continue
        members = groups.setdefault(connection.creation.test_db_signature(), [])
        if alias == DEFAULT:
            members.insert(0, alias)
        else:
            members.append(alias)
    set_up = {a for members in groups.values() for a in members} | set(others)
    dependencies = {
        alias: [d for d in connections[alias].settings_dict["TEST"].get("DEPENDENCIES", []) if d in set_up]
        for alias in set_up
    }
    try:
        dependency_ordered(
            [(sig, (None, members)) for sig, members in groups.items()]
            + [((alias,), (None, [alias])) for alias in others],
            dependencies,
        )
    except ImproperlyConfigured as e:
        raise MigsnapError(
            "error: %s (between the aliases %s)\nhint: remove one alias from another's "
            "TEST['DEPENDENCIES']" % (e, ", ".join(sorted(a for a, d in dependencies.items() if d)))
        ) from None
    databases = [
        Database(alias=members[0], name=connections[members[0]].creation._get_test_db_name(), shares=members[1:])
        for members in groups.values()
    ]
    # Django creates each on the server its alias names, but migsnap makes
    # every one on its own server: two different databases of the settings
    # with one test name would be prepared into the same database at once,
    # the second replacing the first, and both aliases would run on the
    # survivor's schema.
    seen: Dict[str, str] = {}
    for db in databases:
        if db.name in seen:
            raise MigsnapError(
                "error: the aliases `%s` and `%s` are different databases in the settings (their "
                "HOST, PORT or ENGINE differ) with the same test database name `%s`: migsnap "
                "makes every test database on one server, so one would replace the other\n"
                "hint: give one a TEST['NAME'] of its own; or, if both are the same database, "
                "spell their HOST and PORT alike, or make one a TEST['MIRROR'] of the other"
                % (seen[db.name], db.alias, db.name)
            )
        seen[db.name] = db.alias
    return Layout(databases=databases, mirrors={a: t for a, t in mirrors.items() if a in wanted}, others=others)


#: What ``point_at`` sets from a prepare result.
_CONNECTION_KEYS = ("NAME", "HOST", "PORT", "USER", "PASSWORD")


def point_at(alias: str, result: Dict[str, Any]) -> None:
    """Point ``alias`` at the database ``prepare`` made (it may be on
    another server than the settings name: migsnap's own)."""
    _point(
        alias,
        {
            "NAME": result["dbname"],
            "HOST": result["host"],
            "PORT": str(result["port"]),
            "USER": result["user"],
            "PASSWORD": result["password"] or "",
        },
    )


def mirror(alias: str, primary: str) -> None:
    """Make ``alias`` a test mirror of ``primary``, as Django's
    ``set_as_test_mirror`` does, but with the whole connection: the primary
    may live on migsnap's server, not the one the settings name."""
    from django.db import connections

    source = connections[primary].settings_dict
    _point(alias, {k: source[k] for k in _CONNECTION_KEYS})


def _point(alias: str, changes: Dict[str, str]) -> None:
    from django.conf import settings
    from django.db import connections

    connection = connections[alias]
    connection.close()
    # Usually one dict, but settings.DATABASES may have been copied.
    for target in {id(d): d for d in (connection.settings_dict, settings.DATABASES[alias])}.values():
        target.update(changes)
        target.setdefault("TEST", {})["NAME"] = changes["NAME"]
        # A service or passfile would override the host and user set above.
        for key in ("service", "passfile"):
            target.get("OPTIONS", {}).pop(key, None)


def drop_clone(alias: str, name: str, cwd: Optional[PathLike] = None) -> Optional[str]:
    """Drop ``name`` (on ``alias``'s server) if, and only if, it is a
    database migsnap made; a warning to show otherwise. ``migsnap drop``
    decides, from the mark it put on the database: nothing here reads it."""
    from django.db import connections

    # Our own session would keep the database from being dropped.
    connections[alias].close()
    try:
        migsnap.drop(name, cwd=cwd)
    except MigsnapError as e:
        return "migsnap: not dropping `%s`: %s" % (name, _report(str(e)))
    return None


def _report(message: str) -> str:
    """migsnap's error report (after the line saying which command failed),
    on one line: `refusing to drop …; hint: …`."""
    lines = [line for line in message.splitlines()[1:] if line.strip()] or [message]
    return "; ".join(line.removeprefix("error: ") for line in lines)


def loads_as_built(result: Dict[str, Any]) -> bool:
    """Whether this process's Django loads what the database's snapshot was
    built from: the same Django version, settings module, INSTALLED_APPS and
    MIGRATION_MODULES as migsnap's build recorded (`built_with`; migsnap has
    checked since that every migration file and package listing that build
    read is unchanged). Then Django's loader would find the same migrations,
    and checking it (`migrations_mismatch`), which imports every one of
    them in this process, is skipped: about a second on a 1,000-migration
    project, most of what the first test waited for its database."""
    built = result.get("built_with")
    if not built:
        return False
    try:
        import django
        from django.apps import apps
        from django.conf import settings

        here = {
            "django": django.get_version(),
            "settings_module": settings.SETTINGS_MODULE,
            "installed_apps": [c.name for c in apps.get_app_configs()],
            "migration_modules": dict(getattr(settings, "MIGRATION_MODULES", {}).items()),
        }
    except Exception:  # an unusual MIGRATION_MODULES, say: check the long way
        return False
    return here == built


def migrations_mismatch(alias: str) -> Optional[str]:
    """How ``alias``'s prepared database's django_migrations differs from
    what Django's loader finds now (None if it does not): a migration Django
    would still apply, or a row for one it no longer knows. This is what
    `migrate` itself would notice, checked from the test process, which has
    the settings and apps loaded already."""
    from django.db import connections
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connections[alias])
    loader = executor.loader
    plan = executor.migration_plan(loader.graph.leaf_nodes())
    if plan:
        names = ["%s.%s" % (m.app_label, m.name) for m, _backwards in plan]
        more = " and %d more" % (len(names) - 3) if len(names) > 3 else ""
        return "migrations %s%s are not applied in it" % (", ".join(names[:3]), more)
    known = set(loader.disk_migrations)
    for migration in loader.disk_migrations.values():
        known.update(migration.replaces)
    unknown = sorted(set(loader.applied_migrations) - known)
    if unknown:
        return "it has migration %s.%s, which Django no longer knows" % unknown[0]
    return None


def finish(alias: str, *, serialize: bool) -> None:
    """What Django's ``create_test_db`` does after its migrate: the
    serialized contents (for ``serialized_rollback``) and the cache
    tables."""
    from django.core.management import call_command
    from django.db import connections

    connection = connections[alias]
    if serialize:
        connection._test_serialized_contents = connection.creation.serialize_db_to_string()
    call_command("createcachetable", database=alias)
    connection.ensure_connection()


def summary(results: Iterable[Dict[str, Any]]) -> Optional[str]:
    """`migsnap: test_app from template in 61 ms (tests waited 0 ms)`, one
    entry per database prepared, or None if nothing was."""
    ordered = sorted(results, key=lambda r: r.get("dbname") or "")
    if not ordered:
        return None
    return "migsnap: " + ", ".join(
        "%s from %s in %s%s%s"
        % (
            r["dbname"],
            r["source"],
            duration(r["elapsed_ms"]),
            _waited(r.get("waited_ms")),
            _fresh(r),
        )
        for r in ordered
    )


def _fresh(r: Dict[str, Any]) -> str:
    """`, then 12 fresh (9 from the pool), 14 ms each` (migsnap_fresh_db)."""
    n = r.get("fresh", 0)
    if not n:
        return ""
    return ", then %d fresh (%d from the pool), %s each" % (
        n,
        r.get("fresh_pool", 0),
        duration(r.get("fresh_ms", 0) // n),
    )


def _waited(ms: Optional[int]) -> str:
    """Prepared while the tests were collected: how long they still waited."""
    return "" if ms is None else " (tests waited %s)" % duration(ms)


def duration(ms: Optional[int]) -> str:
    if ms is None:
        return "?"
    if ms < 1000:
        return "%d ms" % ms
    if ms < 60_000:
        return "%.2f s" % (ms / 1000)
    return "%dm%02ds" % (ms // 60_000, ms // 1000 % 60)


def entry(result: Dict[str, Any]) -> Dict[str, Any]:
    """What the summary line needs of a prepare result."""
    return {k: result.get(k) for k in ("dbname", "alias", "source", "elapsed_ms", "waited_ms")}



#: Starts the prepare of one database: (database, name, rebuild) -> a
#: Background (the pytest plugin hands back the one it started early).
Start = Callable[[Database, str, bool], Background]


class Setup:
    """The test databases of one run, made and pointed at; ``teardown``
    undoes it. ``results`` holds each prepared database's ``prepare``
    result by alias."""

    def __init__(self, layout: Layout, cwd: Optional[PathLike] = None) -> None:
        self.layout = layout
        #: Where migsnap runs (finds the project, its config and server).
        self.cwd = cwd
        self.results: Dict[str, Dict[str, Any]] = {}
        #: (alias, name) of every clone made for this run: dropped at the end.
        self.made: List[Tuple[str, str]] = []
        #: Aliases on another backend, with the NAME to restore.
        self.others: Dict[str, str] = {}
        #: How many clones (suffix 1..N) of those Django made for
        #: ``--parallel``.
        self.other_clones = 0

    def prepare(
        self,
        start: Start,
        echo: Callable[[str], None],
        *,
        rebuild: bool,
        verify: bool,
        warn: Callable[[str], None],
        clones: int = 0,
    ) -> None:
        """Every database at once: each prepare is started before any is
        waited for; then each alias is pointed at its database, checked, and
        finished as Django's create_test_db would. ``clones`` more per
        database (``name_1`` …) for Django's parallel workers. Raises
        MigsnapError with migsnap's report, after stopping the rest."""
        running: List[Tuple[Database, str, Background]] = [
            (db, db.name, start(db, db.name, rebuild)) for db in self.layout.databases
        ]
        try:
            for db, name, job in running:
                result = job.take(echo)
                self.made.append((db.alias, name))
                self.results[db.alias] = result
                point_at(db.alias, result)
                if verify:
                    self._verify(db, start, echo, warn)
            workers = [
                (db, "%s_%d" % (self.results[db.alias]["dbname"], i), None)
                for db in self.layout.databases
                for i in range(1, clones + 1)
            ]
            # Started only now: each is a clone of the snapshot its
            # database came from (made or checked above).
            started = [(db, name, start(db, name, False)) for db, name, _ in workers]
            running = started
            for db, name, job in started:
                job.take(echo)
                self.made.append((db.alias, name))
        except BaseException:
            for _db, _name, job in running:
                if not job.used:
                    made = job.abandon()
                    if made is not None:
                        self.made.append((_db.alias, made["dbname"]))
            raise
        for db in self.layout.databases:
            for alias in db.shares:
                mirror(alias, db.alias)
        for alias, primary in self.layout.mirrors.items():
            mirror(alias, primary)

    def _verify(self, db: Database, start: Start, echo: Callable[[str], None], warn: Callable[[str], None]) -> None:
        """Never run tests on a schema Django would still migrate: when this
        process's Django may load other migrations than the snapshot's build
        did, compare, and rebuild once on a mismatch."""
        from django.db import connections

        result = self.results[db.alias]
        if loads_as_built(result):
            result["verified"] = "record"
            return
        result["verified"] = "loader"
        mismatch = migrations_mismatch(db.alias)
        if not mismatch:
            return
        # Something the snapshot cannot see changed what Django loads (an
        # environment variable in the settings, say).
        warn("migsnap: %s; rebuilding the snapshot" % mismatch)
        connections[db.alias].close()  # the target is replaced: nothing may hold it open
        result = dict(start(db, db.name, True).take(echo), verified="loader")
        self.results[db.alias] = result
        point_at(db.alias, result)
        mismatch = migrations_mismatch(db.alias)
        if mismatch:
            raise MigsnapError(
                "error: the prepared database `%s` does not match Django's migrations "
                "even after a rebuild: %s\nhint: find what changes INSTALLED_APPS or "
                "MIGRATION_MODULES between migsnap's run and the tests' (an environment "
                "variable, say), or turn the check off (migsnap_verify = false)" % (db.name, mismatch)
            )

    def finish(
        self, serialized: Set[str], *, verbosity: int, interactive: bool, keepdb: bool, clones: int = 0
    ) -> None:
        """After every alias points where it should: what Django's
        create_test_db does after migrate, and the aliases on another
        backend set up by Django itself, with ``clones`` copies of each
        for ``--parallel`` workers as Django's setup_databases makes them
        (a worker connects to ``NAME_1``…: without its copy, a SQLite
        file, it got an empty database)."""
        from django.db import connections

        for db in self.layout.databases:
            finish(db.alias, serialize=db.alias in serialized)
        for alias in self.layout.others:
            connection = connections[alias]
            self.others[alias] = connection.settings_dict["NAME"]
            connection.creation.create_test_db(
                verbosity=verbosity,
                autoclobber=not interactive,
                keepdb=keepdb,
                serialize=alias in serialized,
            )
            for index in range(clones):
                connection.creation.clone_test_db(suffix=str(index + 1), verbosity=verbosity, keepdb=keepdb)
        self.other_clones = clones

    def teardown(self, *, verbosity: int, keepdb: bool) -> List[str]:
        """Drop what was made for this run (migsnap's clones only), unless
        kept; the warnings to show."""
        from django.db import connections

        warnings: List[str] = []
        if keepdb:
            return warnings
        for alias, name in self.made:
            said = drop_clone(alias, name, self.cwd)
            if said:
                warnings.append(said)
        for alias, old_name in self.others.items():
            creation = connections[alias].creation
            for index in range(self.other_clones):
                creation.destroy_test_db(suffix=str(index + 1), verbosity=verbosity, keepdb=keepdb)
            creation.destroy_test_db(old_name, verbosity, keepdb)
        return warnings
