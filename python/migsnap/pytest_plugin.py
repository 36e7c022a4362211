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
        raise pytest.UsageError("--migsnap needs pytest-django (pip install pytest-django)")
    # Registered now, after pytest-django's plugin, so that its
    # `django_db_setup` takes precedence over pytest-django's (a conftest's
    # own `django_db_setup` still overrides both).
    from migsnap import _fixtures

    config.pluginmanager.register(_fixtures, "migsnap.fixtures")
