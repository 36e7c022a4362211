"""What the migsnap pytest plugin adds once enabled: its ``django_db_setup``
(shaped like pytest-django's, see pytest_django/fixtures.py); a failed
``prepare`` reported in full once, not once per test; the summary line; and,
under pytest-xdist, a controller hook so ``--create-db`` rebuilds the
snapshot once rather than once per worker.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, Generator, Optional

import pytest

from migsnap import MigsnapError, Preparing, _early, _voice

#: Comment migsnap puts on the databases it clones (src/pg/admin.rs,
#: CLONE_COMMENT): teardown drops only a database that carries it.
CLONE_COMMENT = "migsnap clone of "
#: Set by the xdist controller when it already rebuilt the snapshot.
WORKER_REBUILT = "migsnap_rebuilt"

_rebuilt_key = pytest.StashKey[bool]()
result_key = pytest.StashKey[Dict[str, Any]]()
_first_failure_key = pytest.StashKey[str]()


class PrepareFailed(pytest.fail.Exception):  # type: ignore[name-defined,misc]
    """The session's database could not be prepared. The session fixture
    raises it once; pytest re-raises the same object for every later test
    that needs the database, and `pytest_runtest_makereport` shortens those
    reports to one line pointing at the first."""

    def __init__(self, message: str) -> None:
        super().__init__(message, pytrace=False)
        lines = message.splitlines()
        self.headline = next((x for x in lines if x.startswith("error:")), lines[0] if lines else "")


@pytest.fixture(scope="session")
def django_db_setup(
    request: pytest.FixtureRequest,
    django_test_environment: None,
    django_db_blocker: Any,
    django_db_keepdb: bool,
    django_db_createdb: bool,
    django_db_modify_db_settings: None,
) -> Generator[None, None, None]:
    """Session database setup: `default` comes from migsnap (no migrate runs);
    any other alias a test needs is set up by Django as usual."""
    from django.db import DEFAULT_DB_ALIAS
    from django.test.utils import setup_databases, teardown_databases

    aliases, serialized_aliases = _databases_for_setup(request.session.items)
    config = request.config
    rebuild = django_db_createdb and not _worker_input(config).get(WORKER_REBUILT)
    verbosity = config.getoption("verbose", 0)
    prepared: Optional[str] = None
    others = set(aliases) - {DEFAULT_DB_ALIAS}
    db_cfg: list = []
    with django_db_blocker.unblock():
        if DEFAULT_DB_ALIAS in aliases:
            prepared = _prepare_default(
                config, rebuild=rebuild, serialize=DEFAULT_DB_ALIAS in serialized_aliases
            )
        if others:
            db_cfg = setup_databases(
                verbosity=verbosity,
                interactive=False,
                aliases=others,
                serialized_aliases=set(serialized_aliases) & others,
                keepdb=django_db_keepdb and not django_db_createdb,
            )

    yield

    if django_db_keepdb:
        return
    with django_db_blocker.unblock():
        try:
            if db_cfg:
                teardown_databases(db_cfg, verbosity=verbosity)
            if prepared:
                _drop_clone(prepared)
        except Exception as exc:  # noqa: BLE001 - a teardown problem is a warning, as in pytest-django
            request.node.warn(
                pytest.PytestWarning("Error when trying to teardown test databases: %r" % (exc,))
            )


def _databases_for_setup(items: Any) -> Any:
    """The aliases the collected tests use (pytest-django's own helper, so a
    session without database tests prepares nothing)."""
    try:
        from pytest_django.fixtures import _get_databases_for_setup
    except ImportError:  # an older or newer pytest-django: assume default only
        return {"default"}, set()
    aliases, serialized = _get_databases_for_setup(items)
    # pytest-django knows its own fixtures only.
    if any(FRESH_DB in getattr(item, "fixturenames", ()) for item in items):
        aliases = set(aliases) | {"default"}
    return aliases, serialized


#: The fixture that gives a test a fresh database (pytest_plugin.py).
FRESH_DB = "migsnap_fresh_db"

#: Why the session's database is no longer fit for tests: a
#: `migsnap_fresh_db` teardown could not swap a new clone in, so the database
#: still holds what that test left (committed rows, open objects).
used_key = pytest.StashKey[str]()


def pytest_runtest_setup(item: pytest.Item) -> None:
    """After a failed swap, every later test that needs the default database
    fails at once with the reason, rather than running on (and maybe passing
    against) what an earlier test left there."""
    reason = item.config.stash.get(used_key, None)
    if reason is None:
        return
    aliases, _serialized = _databases_for_setup([item])
    if "default" in aliases:
        raise PrepareFailed(reason)


def fresh_db(request: pytest.FixtureRequest) -> Generator[Dict[str, Any], None, None]:
    """`migsnap_fresh_db` with migsnap on: the test runs outside any
    transaction, as with `transactional_db`; afterwards, instead of
    TRUNCATE-ing every table (seconds on a wide schema, and it empties the
    tables data migrations filled), `prepare` swaps a new clone in under
    the same name: a pool member by rename when one is ready."""
    from django.core.management import call_command
    from django.db import connections

    request.getfixturevalue("django_db_setup")
    blocker = request.getfixturevalue("django_db_blocker")
    config = request.config
    prepared = config.stash.get(result_key, None)
    if prepared is None:
        raise pytest.UsageError(
            "%s: migsnap prepared no default database for this session" % FRESH_DB
        )
    with blocker.unblock():
        yield prepared
        # Nothing may hold the old database open while it is renamed aside.
        connections.close_all()
        try:
            result = _prepare(config, prepared["dbname"], rebuild=False)
        except PrepareFailed as e:
            config.stash[used_key] = (
                "error: the database `%s` still holds what %s left: %s could not swap a "
                "new clone in after it (%s)\nhint: see that test's teardown error (a "
                "connection the test left open keeps the database from being replaced); "
                "the later database tests are not run on it"
                % (prepared["dbname"], request.node.nodeid, FRESH_DB, e.headline.removeprefix("error: "))
            )
            raise
        _point_default_at(result)
        call_command("createcachetable", database="default")
        _voice.count_fresh(config, result)


def _worker_input(config: pytest.Config) -> Dict[str, Any]:
    return getattr(config, "workerinput", {})


def _prepare_default(config: pytest.Config, *, rebuild: bool, serialize: bool) -> str:
    """Clone the snapshot under the test database name and point `default`
    at it, doing what Django's create_test_db does after its migrate."""
    from django.core.management import call_command
    from django.db import connections

    connection = connections["default"]
    if connection.vendor != "postgresql":
        raise pytest.UsageError(
            "migsnap needs a PostgreSQL `default` database (found %s)" % connection.vendor
        )
    # pytest-django has applied the xdist/tox suffix by now; this is the
    # name its own setup would create (TEST["NAME"] if set, else test_<NAME>).
    name = connection.creation._get_test_db_name()
    result = _prepare(config, name, rebuild=rebuild)
    _point_default_at(result)
    if config.getini("migsnap_verify"):
        if _loads_as_built(result):
            result["verified"] = "record"
            mismatch = None
        else:
            result["verified"] = "loader"
            mismatch = _migrations_mismatch()
        if mismatch:
            # Something the snapshot cannot see changed what Django loads
            # (an environment variable in the settings, say): never run the
            # tests on that schema.
            _voice.voice(config).warn("migsnap: %s; rebuilding the snapshot" % mismatch)
            connection.close()  # the target is replaced: nothing may hold it open
            result = _prepare(config, name, rebuild=True)
            _point_default_at(result)
            mismatch = _migrations_mismatch()
            if mismatch:
                raise PrepareFailed(
                    "error: the prepared database `%s` does not match Django's migrations "
                    "even after a rebuild: %s\nhint: find what changes INSTALLED_APPS or "
                    "MIGRATION_MODULES between migsnap's run and pytest's (an environment "
                    "variable, say), or set migsnap_verify = false" % (name, mismatch)
                )
    config.stash[result_key] = result
    _voice.record(config, result)
    if serialize:
        connection._test_serialized_contents = connection.creation.serialize_db_to_string()
    call_command("createcachetable", database="default")
    connection.ensure_connection()
    return result["dbname"]


def _loads_as_built(result: Dict[str, Any]) -> bool:
    """Whether this process's Django loads what the database's snapshot was
    built from: the same Django version, settings module, INSTALLED_APPS and
    MIGRATION_MODULES as migsnap's build recorded (`built_with`; migsnap has
    checked since that every migration file and package listing that build
    read is unchanged). Then Django's loader would find the same migrations,
    and checking it (`_migrations_mismatch`), which imports every one of
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


def _migrations_mismatch() -> Optional[str]:
    """How the prepared database's django_migrations differs from what
    Django's loader finds now (None if it does not): a migration Django would
    still apply, or a row for one it no longer knows. This is what `migrate`
    itself would notice, checked from the pytest process, which has the
    settings and apps loaded already."""
    from django.db import connections
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connections["default"])
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


def _prepare(config: pytest.Config, name: str, *, rebuild: bool) -> Dict[str, Any]:
    """`migsnap prepare` for `name` (or the one started with the session,
    if it was for `name`), its words on the terminal as it runs. Raises
    PrepareFailed with migsnap's error report."""
    voice = _voice.voice(config)
    try:
        early = _early.claim(config, name, rebuild)
        if early is not None:
            return early.take(voice.migsnap_said)
        return _begin(config, name, rebuild=rebuild).result(voice.migsnap_said)
    except MigsnapError as e:
        raise PrepareFailed(str(e)) from None
    finally:
        voice.finished()


def _begin(config: pytest.Config, name: str, *, rebuild: bool) -> Preparing:
    return Preparing(
        name,
        rebuild=rebuild,
        force=_force(config),
        pool_default=_worker_count(config),
        cwd=config.rootpath,
    )


def _worker_count(config: pytest.Config) -> int:
    """How many databases this run uses at once: the pool size migsnap
    keeps for the next run when the project configures none."""
    return int(_worker_input(config).get("workercount", 1))


def _force(config: pytest.Config) -> bool:
    return bool(config.getoption("migsnap_force") or config.getini("migsnap_force"))


def _point_default_at(result: Dict[str, Any]) -> None:
    from django.conf import settings
    from django.db import connections

    connection = connections["default"]
    connection.close()
    changes = {
        "NAME": result["dbname"],
        "HOST": result["host"],
        "PORT": str(result["port"]),
        "USER": result["user"],
        "PASSWORD": result["password"] or "",
    }
    # Usually one dict, but settings.DATABASES may have been copied.
    for target in {id(d): d for d in (connection.settings_dict, settings.DATABASES["default"])}.values():
        target.update(changes)
        target.setdefault("TEST", {})["NAME"] = result["dbname"]
        # A service or passfile would override the host and user set above.
        for key in ("service", "passfile"):
            target.get("OPTIONS", {}).pop(key, None)


def _drop_clone(name: str) -> None:
    """Drop `name` if, and only if, it is a database migsnap cloned."""
    from django.db import connections

    connection = connections["default"]
    connection.close()
    with connection.creation._nodb_cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(shobj_description(oid, 'pg_database'), '') "
            "FROM pg_database WHERE datname = %s",
            [name],
        )
        row = cursor.fetchone()
        if row is None:
            return
        if not row[0].startswith(CLONE_COMMENT):
            warnings.warn(
                "migsnap: not dropping `%s`: it is not marked as a migsnap clone" % name,
                stacklevel=1,
            )
            return
        cursor.execute("DROP DATABASE %s" % connection.ops.quote_name(name))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Start preparing this process's database now, so it is made while
    pytest collects (see `_early`). The xdist controller runs no tests: it
    only rebuilds, with --create-db, once before any worker starts (N
    workers each passing --rebuild would rebuild N times in a row)."""
    config = session.config
    if config.pluginmanager.hasplugin("dsession"):
        if config.getoption("create_db"):
            _rebuild_in_controller(config)
        return
    if config.getoption("collectonly") or not config.getini("migsnap_early"):
        return
    rebuild = config.getoption("create_db") and not _worker_input(config).get(WORKER_REBUILT)
    _early.start(config, rebuild=rebuild, begin=lambda name: _begin(config, name, rebuild=rebuild))


def _rebuild_in_controller(config: pytest.Config) -> None:
    from django.db import connections
    from pytest_django.plugin import blocking_manager_key

    name = connections["default"].creation._get_test_db_name()
    try:
        result = _prepare(config, name, rebuild=True)
    except PrepareFailed as e:
        raise pytest.UsageError(str(e)) from None
    _voice.record(config, result)
    _point_default_at(result)
    with config.stash[blocking_manager_key].unblock():
        _drop_clone(name)
    config.stash[_rebuilt_key] = True


def pytest_collection_finish(session: pytest.Session) -> None:
    from django.db import DEFAULT_DB_ALIAS

    aliases, _ = _databases_for_setup(session.items)
    if DEFAULT_DB_ALIAS not in aliases:
        _early.not_needed(session.config)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop a database prepared early that no test used: a fresh clone
    made for nothing (--reuse-db keeps what tests used, not this)."""
    config = session.config
    made = _early.leftover(config)
    if made is None:
        return
    from pytest_django.plugin import blocking_manager_key

    _point_default_at(made)
    with config.stash[blocking_manager_key].unblock():
        _drop_clone(made["dbname"])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Generator[None, Any, None]:
    """A failed prepare in full for the first test that needed the
    database; one line pointing at it for every later one (the session
    fixture's error is cached and raised again for each of them)."""
    outcome = yield
    failed = call.excinfo.value if call.when == "setup" and call.excinfo else None
    if not isinstance(failed, PrepareFailed):
        return
    report = outcome.get_result()
    first = item.config.stash.get(_first_failure_key, None)
    if first is None:
        item.config.stash[_first_failure_key] = item.nodeid
        # The short test summary prints this message, in full when pytest
        # sees a CI environment: keep it to the headline so the report and
        # its Django output appear once.
        crash = getattr(report.longrepr, "reprcrash", None)
        if crash is not None and failed.headline:
            crash.message = failed.headline
        return
    report.longrepr = (
        "migsnap could not prepare the test database (shown in full for %s): %s"
        % (first, failed.headline)
    )


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    line = _voice.summary(config)
    if line and config.getoption("verbose", 0) >= -1:  # -qq hides it
        terminalreporter.write_line(line)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    node.workerinput[WORKER_REBUILT] = node.config.stash.get(_rebuilt_key, False)
    node.workerinput[_voice.DRAWER_LOCK] = _voice.drawer_lock(node.config)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    _voice.record_worker(node.config, node)


def pytest_unconfigure(config: pytest.Config) -> None:
    _voice.cleanup(config)
