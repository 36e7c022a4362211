"""What the migsnap pytest plugin adds once enabled: its ``django_db_setup``
(shaped like pytest-django's, see pytest_django/fixtures.py) and, under
pytest-xdist, a controller hook so ``--create-db`` rebuilds the snapshot once
rather than once per worker.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, Dict, Generator, Optional

import pytest

from migsnap import MigsnapError, prepare

#: Comment migsnap puts on the databases it clones (src/pg/admin.rs,
#: CLONE_COMMENT): teardown drops only a database that carries it.
CLONE_COMMENT = "migsnap clone of "
#: Set by the xdist controller when it already rebuilt the snapshot.
WORKER_REBUILT = "migsnap_rebuilt"

_rebuilt_key = pytest.StashKey[bool]()
_result_key = pytest.StashKey[Dict[str, Any]]()


@pytest.fixture(scope="session")
def migsnap_prepared(django_db_setup: None, request: pytest.FixtureRequest) -> Optional[Dict[str, Any]]:
    """`migsnap prepare --json`'s result for this session's (or worker's)
    database: `dbname`, `source` (template, cache, incremental, cold),
    `applied`, `key`… None when no test needed the default database."""
    return request.config.stash.get(_result_key, None)


@pytest.fixture(scope="session")
def django_db_setup(
    request: pytest.FixtureRequest,
    django_test_environment: None,
    django_db_blocker: Any,
    django_db_use_migrations: bool,
    django_db_keepdb: bool,
    django_db_createdb: bool,
    django_db_modify_db_settings: None,
) -> Generator[None, None, None]:
    """Session database setup: `default` comes from migsnap (no migrate runs);
    any other alias a test needs is set up by Django as usual."""
    from django.db import DEFAULT_DB_ALIAS
    from django.test.utils import setup_databases, teardown_databases

    if not django_db_use_migrations:
        raise pytest.UsageError(
            "--nomigrations and --migsnap exclude each other: migsnap's snapshots "
            "are the migrated schema; drop one of the two options"
        )
    aliases, serialized_aliases = _databases_for_setup(request.session.items)
    config = request.config
    rebuild = django_db_createdb and not _worker_input(config).get(WORKER_REBUILT)
    verbosity = config.option.verbose
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
    return _get_databases_for_setup(items)


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
    try:
        result = prepare(name, rebuild=rebuild, cwd=config.rootpath)
    except MigsnapError as e:
        pytest.fail(str(e), pytrace=False)
    _point_default_at(result)
    if config.getini("migsnap_verify"):
        mismatch = _migrations_mismatch()
        if mismatch:
            # Something the snapshot cannot see changed what Django loads
            # (an environment variable in the settings, say): never run the
            # tests on that schema.
            _warn(config, "migsnap: %s; rebuilding the snapshot" % mismatch)
            connection.close()  # the target is replaced: nothing may hold it open
            try:
                result = prepare(name, rebuild=True, cwd=config.rootpath)
            except MigsnapError as e:
                pytest.fail(str(e), pytrace=False)
            _point_default_at(result)
            mismatch = _migrations_mismatch()
            if mismatch:
                pytest.fail(
                    "migsnap: the prepared database `%s` does not match Django's migrations "
                    "even after a rebuild: %s" % (name, mismatch),
                    pytrace=False,
                )
    config.stash[_result_key] = result
    if serialize:
        connection._test_serialized_contents = connection.creation.serialize_db_to_string()
    call_command("createcachetable", database="default")
    connection.ensure_connection()
    return result["dbname"]


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


def _warn(config: pytest.Config, message: str) -> None:
    """A line on the terminal, past pytest's output capture (which would
    otherwise swallow it during fixture setup); stderr without a terminal
    reporter."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capman = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capman is None:
        sys.stderr.write(message + "\n")
        return
    with capman.global_and_fixture_disabled():
        reporter.write_line(message, yellow=True)


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
    """Under xdist with --create-db, rebuild once here, in the controller,
    before any worker starts: N workers each passing --rebuild would rebuild
    N times in a row (each waits for the build lock, then rebuilds again)."""
    config = session.config
    if not (config.getoption("create_db") and config.pluginmanager.hasplugin("dsession")):
        return
    from django.db import connections
    from pytest_django.plugin import blocking_manager_key

    name = connections["default"].creation._get_test_db_name()
    try:
        result = prepare(name, rebuild=True, cwd=config.rootpath)
    except MigsnapError as e:
        raise pytest.UsageError(str(e)) from e
    _point_default_at(result)
    with config.stash[blocking_manager_key].unblock():
        _drop_clone(name)
    config.stash[_rebuilt_key] = True


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    node.workerinput[WORKER_REBUILT] = node.config.stash.get(_rebuilt_key, False)
