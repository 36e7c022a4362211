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

Only what takes time is started early (issue #24): the early ``prepare``
runs with ``--unless-ready``, so when a ready pool member waits it does
nothing and says so (``"prepared": false``), and the fixture prepares then,
a rename of a few milliseconds. Under ``pytest -n 4`` four workers would
otherwise each take a member and start a refill while they collect, on
cores collection needs, for a session where one test may use a database.

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
    alias's database; ``later`` starts the plain one the fixture runs when
    the early one found a pool member ready and made nothing. Its result
    says which it was: ``early`` is true for a database made early."""

    def __init__(
        self,
        name: str,
        *,
        rebuild: bool,
        start: Callable[[], Preparing],
        later: Callable[[], Preparing],
    ) -> None:
        self.rebuild = rebuild
        self._later = later
        super().__init__(name, start)

    def take(self, echo: Callable[[str], None]) -> Dict[str, Any]:
        result = super().take(echo)
        if result.get("prepared", True):
            return dict(result, early=True)
        # A member was ready as the session started: handed out now.
        now = _databases.Background(self.name, self._later).take(echo)
        return dict(now, early=False, waited_ms=now["waited_ms"] + result["waited_ms"])

    def abandon(self) -> Optional[Dict[str, Any]]:
        made = super().abandon()
        return made if made is not None and made.get("prepared", True) else None


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


def start(
    config: pytest.Config,
    *,
    rebuild: bool,
    begin: Callable[[str], Preparing],
    later: Callable[[str], Preparing],
) -> None:
    """Start preparing this process's database, if it can be named now and
    a ready pool member does not make that needless (``begin`` passes
    ``--unless-ready``; ``later`` prepares at fixture time)."""
    try:
        from django.db import connections

        if connections["default"].vendor != "postgresql":
            return  # the fixture says why migsnap cannot help
        name = expected_name(config)
    except Exception:  # noqa: BLE001 - settings the fixture will report on
        return
    config.stash[_early_key] = Early(
        name, rebuild=rebuild, start=lambda: begin(name), later=lambda: later(name)
    )


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
