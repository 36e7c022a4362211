"""What the migsnap pytest plugin adds once enabled: its ``django_db_setup``
(shaped like pytest-django's, see pytest_django/fixtures.py); a failed
``prepare`` reported in full once, not once per test; the summary line; and,
under pytest-xdist, a controller hook so ``--create-db`` rebuilds the
snapshot once rather than once per worker.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, Generator, List, Optional

import pytest

from migsnap import MigsnapError, Preparing, _databases, _early, _voice
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
    """Session database setup: every PostgreSQL database the tests use
    (``databases = [...]``, ``django_db(databases=...)``) comes from migsnap,
    all prepared at once, each from its alias's snapshot; no migrate runs.
    Aliases that are the same database, and ``TEST["MIRROR"]`` aliases,
    point at theirs, as Django's own setup does."""
    from django.db import DEFAULT_DB_ALIAS

    aliases, serialized_aliases = _databases_for_setup(request.session.items)
    config = request.config
    rebuild = django_db_createdb and not _worker_input(config).get(WORKER_REBUILT)
    verbosity = config.getoption("verbose", 0)
    voice = _voice.voice(config)
    with django_db_blocker.unblock():
        try:
            layout = _databases.layout(aliases)
        except MigsnapError as e:
            raise PrepareFailed(str(e)) from None
        if DEFAULT_DB_ALIAS in layout.others:
            from django.db import connections

            raise pytest.UsageError(
                "migsnap needs a PostgreSQL `default` database (found %s)"
                % connections[DEFAULT_DB_ALIAS].vendor
            )
        setup = _databases.Setup(layout, config.rootpath)
        try:
            setup.prepare(
                lambda db, name, again: _start(config, db.alias, name, again),
                voice.migsnap_said,
                rebuild=rebuild,
                verify=bool(config.getini("migsnap_verify")),
                warn=voice.warn,
            )
        except MigsnapError as e:
            raise PrepareFailed(str(e)) from None
        finally:
            voice.finished()
        for result in setup.results.values():
            _voice.record(config, result)
        if DEFAULT_DB_ALIAS in setup.results:
            config.stash[result_key] = setup.results[DEFAULT_DB_ALIAS]
        setup.finish(
            serialized_aliases,
            verbosity=verbosity,
            interactive=False,
            keepdb=django_db_keepdb and not django_db_createdb,
        )

    yield

    with django_db_blocker.unblock():
        try:
            for said in setup.teardown(verbosity=verbosity, keepdb=django_db_keepdb):
                warnings.warn(said, stacklevel=1)
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
    if any(
        FRESH_DB in names or MIGRATOR in names
        for names in (getattr(item, "fixturenames", ()) for item in items)
    ):
        aliases = set(aliases) | {"default"}
    return aliases, serialized


#: The fixture that gives a test a fresh database (pytest_plugin.py).
FRESH_DB = "migsnap_fresh_db"

#: The fixture with django-test-migrations' `migrator` API (pytest_plugin.py).
MIGRATOR = "migsnap_migrator"

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
        result = _swap_in(request, prepared["dbname"], FRESH_DB)
        call_command("createcachetable", database="default")
        _voice.count_fresh(config, result)


def _swap_in(
    request: pytest.FixtureRequest, dbname: str, fixture: str, at: Optional[List[str]] = None
) -> Dict[str, Any]:
    """A new clone under the session database's name `dbname` (of the
    snapshot migrated to `at` with `prepare --at`; else of the full one),
    Django pointed at it. When a full clone cannot be swapped in, the
    database still holds what the test left, and the later database tests
    are failed rather than run on it."""
    from migsnap._migrator import swap_in

    config = request.config

    def prepare() -> Dict[str, Any]:
        if at is None:
            return _prepare(config, "default", dbname, rebuild=False)
        return _prepare_at(config, dbname, at)

    try:
        return swap_in(prepare)
    except PrepareFailed as e:
        if at is None:
            config.stash[used_key] = (
                "error: the database `%s` still holds what %s left: %s could not swap a "
                "new clone in after it (%s)\nhint: see that test's teardown error (a "
                "connection the test left open keeps the database from being replaced); "
                "the later database tests are not run on it"
                % (dbname, request.node.nodeid, fixture, e.headline.removeprefix("error: "))
            )
        raise


def _prepare_at(config: pytest.Config, dbname: str, at: List[str]) -> Dict[str, Any]:
    """`migsnap prepare --at` for the session database's name, its words
    on the terminal as it runs (no pool: `--at` has none)."""
    voice = _voice.voice(config)
    try:
        return Preparing(dbname, force=_force(config), cwd=config.rootpath, at=at).result(voice.migsnap_said)
    except MigsnapError as e:
        raise PrepareFailed(str(e)) from None
    finally:
        voice.finished()


def migrator(request: pytest.FixtureRequest) -> Generator[Any, None, None]:
    """`migsnap_migrator` with migsnap on: as `migsnap_fresh_db`, the test
    runs outside any transaction; `apply_initial_migration` swaps in a
    clone of the database at its targets, and afterwards (`reset`) a clone
    of the fully migrated snapshot is swapped back in, whatever the test
    left."""
    from migsnap._migrator import Migrator

    request.getfixturevalue("django_db_setup")
    blocker = request.getfixturevalue("django_db_blocker")
    prepared = request.config.stash.get(result_key, None)
    if prepared is None:
        raise pytest.UsageError(
            "%s: migsnap prepared no default database for this session" % MIGRATOR
        )
    dbname = prepared["dbname"]
    with blocker.unblock():
        it = Migrator(lambda at: _swap_in(request, dbname, MIGRATOR, at))
        yield it
        it.reset()


def _worker_input(config: pytest.Config) -> Dict[str, Any]:
    return getattr(config, "workerinput", {})


def _start(config: pytest.Config, alias: str, name: str, rebuild: bool) -> _databases.Background:
    """`migsnap prepare` for `alias`'s database `name`, running: the one
    started with the session when it was for this very database."""
    if alias == "default":
        early = _early.claim(config, name, rebuild)
        if early is not None:
            return early
    return _databases.Background(name, lambda: _begin(config, name, alias=alias, rebuild=rebuild))


def _prepare(config: pytest.Config, alias: str, name: str, *, rebuild: bool) -> Dict[str, Any]:
    """`migsnap prepare` for one database, its words on the terminal as it
    runs. Raises PrepareFailed with migsnap's error report."""
    voice = _voice.voice(config)
    try:
        return _start(config, alias, name, rebuild).take(voice.migsnap_said)
    except MigsnapError as e:
        raise PrepareFailed(str(e)) from None
    finally:
        voice.finished()


def _begin(
    config: pytest.Config, name: str, *, alias: str = "default", rebuild: bool, unless_ready: bool = False
) -> Preparing:
    return Preparing(
        name,
        alias=alias,
        rebuild=rebuild,
        force=_force(config),
        pool_default=_worker_count(config),
        cwd=config.rootpath,
        unless_ready=unless_ready,
    )


def _worker_count(config: pytest.Config) -> int:
    """How many databases this run uses at once: the pool size migsnap
    keeps for the next run when the project configures none."""
    return int(_worker_input(config).get("workercount", 1))


def _force(config: pytest.Config) -> bool:
    return bool(config.getoption("migsnap_force") or config.getini("migsnap_force"))


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
    _early.start(
        config,
        rebuild=rebuild,
        begin=lambda name: _begin(config, name, rebuild=rebuild, unless_ready=not rebuild),
        later=lambda name: _begin(config, name, rebuild=rebuild),
    )


def _rebuild_in_controller(config: pytest.Config) -> None:
    """Every PostgreSQL database of the settings, rebuilt at once: the
    controller does not know which aliases the workers' tests use."""
    from django.db import connections
    from pytest_django.plugin import blocking_manager_key

    voice = _voice.voice(config)
    try:
        setup = _databases.Setup(_databases.layout(connections), config.rootpath)
    except MigsnapError as e:
        raise pytest.UsageError(str(e)) from None
    with config.stash[blocking_manager_key].unblock():
        try:
            setup.prepare(
                lambda db, name, again: _start(config, db.alias, name, again),
                voice.migsnap_said,
                rebuild=True,
                verify=False,
                warn=voice.warn,
            )
        except MigsnapError as e:
            raise pytest.UsageError(str(e)) from None
        finally:
            voice.finished()
            for said in setup.teardown(verbosity=0, keepdb=False):
                voice.warn(said)
    for result in setup.results.values():
        _voice.record(config, result)
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

    _databases.point_at("default", made)
    with config.stash[blocking_manager_key].unblock():
        said = _databases.drop_clone("default", made["dbname"], config.rootpath)
    if said:
        _voice.voice(config).warn(said)


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
