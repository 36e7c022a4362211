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
import queue
import threading
import time
from typing import Any, Callable, Dict, Optional, Union

import pytest

from migsnap import MigsnapError, Preparing

_early_key = pytest.StashKey["Early"]()


class Early:
    """One ``prepare`` running in the background for ``name``."""

    def __init__(self, name: str, *, rebuild: bool, start: Callable[[], Preparing]) -> None:
        self.name = name
        self.rebuild = rebuild
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
        result has ``waited_ms``, how long the tests waited for it."""
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
