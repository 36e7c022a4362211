"""``migsnap prepare`` started when the session starts, so the clone (or a
cache restore, or a build) runs while pytest imports and collects the tests;
``django_db_setup`` then only waits for what is usually already there.

The database name is guessed the way pytest-django will make it (``TEST
["NAME"]`` or ``test_<NAME>``, then the tox and xdist suffixes its
``django_db_modify_db_settings_*`` fixtures add). When the fixture's real name
differs (a conftest that renames the database, say), the early clone is not
used: the fixture prepares the real name as before, and the early one is
dropped at the end. It is dropped as well when no test needs the database
(collection finds none: the early ``prepare`` is interrupted, as Ctrl-C would,
so a cold build does not run for nothing).

migsnap's lines are queued by the reading thread and written by the main
thread only while it waits, so nothing draws over pytest's collection line
from another thread.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Optional

import pytest

from migsnap import Preparing, _databases

_early_key = pytest.StashKey["Early"]()


class Early(_databases.Background):
    """One ``prepare`` running in the background for ``name``, the default
    alias's database."""

    def __init__(self, name: str, *, rebuild: bool, start: Callable[[], Preparing]) -> None:
        self.rebuild = rebuild
        super().__init__(name, start)


def expected_name(config: pytest.Config) -> str:
    """The name pytest-django's session fixtures will give the default test
    database in this process (see pytest_django/fixtures.py,
    ``_set_suffix_to_test_databases``)."""
    from django.db import connections

    name = connections["default"].creation._get_test_db_name()
    workerid = getattr(config, "workerinput", {}).get("workerid")
    for suffix in (os.getenv("TOX_PARALLEL_ENV"), workerid):
        if suffix:
            name = "%s_%s" % (name, suffix)
    return name


def start(config: pytest.Config, *, rebuild: bool, begin: Callable[[str], Preparing]) -> None:
    """Start preparing this process's database, if it can be named now."""
    try:
        from django.db import connections

        if connections["default"].vendor != "postgresql":
            return  # the fixture says why migsnap cannot help
        name = expected_name(config)
    except Exception:  # noqa: BLE001 - settings the fixture will report on
        return
    config.stash[_early_key] = Early(name, rebuild=rebuild, start=lambda: begin(name))


def claim(config: pytest.Config, name: str, rebuild: bool) -> Optional[Early]:
    """The early ``prepare``, if it made what the fixture needs."""
    early = config.stash.get(_early_key, None)
    if early is None or early.used or early.name != name or early.rebuild != rebuild:
        return None
    return early


def leftover(config: pytest.Config) -> Optional[Dict[str, Any]]:
    """At the end: stop an early ``prepare`` nobody used; what it made."""
    early = config.stash.get(_early_key, None)
    if early is None or early.used:
        return None
    return early.abandon()


def not_needed(config: pytest.Config) -> None:
    """Collection found no test that needs the default database: stop now
    rather than finish a build nobody waits for."""
    early = config.stash.get(_early_key, None)
    if early is not None and not early.used:
        early.abandon()
