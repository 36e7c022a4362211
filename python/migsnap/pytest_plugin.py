"""pytest plugin: pytest-django test databases from migsnap snapshots.

Enable it with ``pytest --migsnap`` or ``migsnap = true`` under
``[tool.pytest.ini_options]``. It then replaces pytest-django's
``django_db_setup``: instead of creating the test database and running
``migrate``, it asks ``migsnap prepare`` for a clone of the snapshot under the
name pytest-django would have used (``test_<NAME>``, ``…_gw<N>`` under xdist,
or ``TEST["NAME"]``) and points Django at it.

Registered through the ``pytest11`` entry point, so it loads whenever the
package is installed, but does nothing unless enabled.
"""

from __future__ import annotations

from typing import Any, Dict, Generator, Optional

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("migsnap")
    group.addoption(
        "--migsnap",
        action="store_true",
        dest="migsnap",
        default=None,
        help="create the test database from a migsnap snapshot instead of running migrate",
    )
    group.addoption(
        "--no-migsnap",
        action="store_false",
        dest="migsnap",
        help="run pytest-django's own database setup even if the ini file enables migsnap",
    )
    parser.addini(
        "migsnap",
        type="bool",
        default=False,
        help="create the test database from a migsnap snapshot instead of running migrate",
    )
    group.addoption(
        "--migsnap-force",
        action="store_true",
        dest="migsnap_force",
        default=False,
        help="let migsnap replace an existing test database whose name does not start "
        "with test_ (TEST['NAME'] in the settings): passes --force to migsnap prepare",
    )
    parser.addini(
        "migsnap_force",
        type="bool",
        default=False,
        help="let migsnap replace an existing test database whose name does not start "
        "with test_ (as --migsnap-force)",
    )
    parser.addini(
        "migsnap_early",
        type="bool",
        default=True,
        help="start preparing the test database when the session starts, so it is "
        "made while pytest collects (default: true)",
    )
    parser.addini(
        "migsnap_verify",
        type="bool",
        default=True,
        help="compare the migrations Django knows with the prepared database's "
        "django_migrations, and rebuild the snapshot on a mismatch (default: true)",
    )


def enabled(config: pytest.Config) -> bool:
    flag = config.getoption("migsnap")
    return bool(config.getini("migsnap")) if flag is None else flag


def pytest_configure(config: pytest.Config) -> None:
    if not enabled(config):
        return
    if not config.pluginmanager.hasplugin("django"):
        raise pytest.UsageError(
            "--migsnap needs pytest-django\nhint: pip install pytest-django, or pass --no-migsnap"
        )
    # Refused here, once, rather than as an error in every test's setup.
    if config.getoption("nomigrations", False):
        raise pytest.UsageError(
            "--nomigrations and --migsnap exclude each other: migsnap's snapshots are "
            "the migrated schema\nhint: drop --nomigrations (check addopts too), or pass --no-migsnap"
        )
    # Registered now, after pytest-django's plugin, so that its
    # `django_db_setup` takes precedence over pytest-django's (a conftest's
    # own `django_db_setup` still overrides both).
    from migsnap import _fixtures

    config.pluginmanager.register(_fixtures, "migsnap.fixtures")


@pytest.fixture(scope="session")
def migsnap_prepared(request: pytest.FixtureRequest) -> Optional[Dict[str, Any]]:
    """`migsnap prepare --json`'s result for this session's (or worker's)
    database: `dbname`, `source` (template, cache, incremental, cold),
    `elapsed_ms`, `applied`, `key`… None when migsnap is off
    (`--no-migsnap`) or no test needed the default database."""
    if not enabled(request.config):
        return None
    request.getfixturevalue("django_db_setup")
    from migsnap._fixtures import result_key

    return request.config.stash.get(result_key, None)


@pytest.fixture
def migsnap_fresh_db(request: pytest.FixtureRequest) -> Generator[Optional[Dict[str, Any]], None, None]:
    """Use the database as `transactional_db` does (no wrapping
    transaction: the test may commit, use several connections, test
    on_commit), and leave it fresh for the next test by swapping in a new
    clone of the snapshot rather than flushing every table. Use it instead
    of `db`/`transactional_db`, not with them. Yields `prepare`'s result
    for the session's database (None with --no-migsnap, where it falls back
    to `transactional_db`)."""
    if not enabled(request.config):
        request.getfixturevalue("transactional_db")
        yield None
        return
    from migsnap import _fixtures

    yield from _fixtures.fresh_db(request)


@pytest.fixture
def migsnap_migrator(request: pytest.FixtureRequest) -> Generator[Any, None, None]:
    """django-test-migrations' ``migrator``, with the same API
    (``apply_initial_migration(targets)`` returning the old ProjectState,
    ``apply_tested_migration(targets)`` returning the new one, ``reset()``),
    whose initial database is a clone of ``migsnap prepare --at`` targets'
    snapshot rather than a migration from empty: the database as
    ``manage.py migrate APP NAME`` to each target leaves it. The test runs
    outside any transaction; afterwards the database is fully migrated
    again (a fresh clone). With --no-migsnap it is django-test-migrations'
    own ``migrator``, if installed."""
    if not enabled(request.config):
        yield request.getfixturevalue("migrator")
        return
    from migsnap import _fixtures

    yield from _fixtures.migrator(request)
