"""``manage.py test`` with test databases from migsnap snapshots.

Set ``TEST_RUNNER = "migsnap.django.DiscoverRunner"`` in the settings the
tests run with. Django's runner then gets every database its tests use from
``migsnap prepare`` (one per distinct database, each from its alias's
snapshot, all at once): no ``migrate`` runs in the test process. With
``--parallel N`` each worker gets a clone of its own from migsnap (``NAME_1``
… ``NAME_N``, the names Django's workers connect to) rather than Django's
clone-by-dump; ``--keepdb`` keeps the databases after the run, as it keeps
Django's own. The databases may live on migsnap's server, not the one the
settings name: the runner points Django at them.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Optional

from django.test.runner import DiscoverRunner as _DjangoDiscoverRunner

from migsnap import MigsnapError, Preparing, _databases

__all__ = ["DiscoverRunner"]


class DiscoverRunner(_DjangoDiscoverRunner):
    """Django's ``DiscoverRunner``, its test databases made by migsnap."""

    def setup_databases(self, **kwargs: Any) -> _databases.Setup:
        from django.db import connections

        aliases = kwargs.get("aliases")
        if aliases is None:
            aliases = set(connections)
        serialized = kwargs.get("serialized_aliases")
        if serialized is None:
            serialized = set(aliases)
        workers = self.parallel if self.parallel > 1 else 0
        cwd = _project_dir()

        def start(db: _databases.Database, name: str, rebuild: bool) -> _databases.Background:
            return _databases.Background(
                name,
                lambda: Preparing(
                    name,
                    alias=db.alias,
                    rebuild=rebuild,
                    # The pool migsnap keeps ready for the next run: one
                    # database per worker.
                    pool_default=max(workers, 1),
                    cwd=cwd,
                ),
            )

        setup = _databases.Setup(_databases.Layout([], {}, []))
        try:
            setup = _databases.Setup(_databases.layout(aliases), cwd)
            setup.prepare(start, _say, rebuild=False, verify=True, warn=_say, clones=workers)
        except MigsnapError as e:
            for said in setup.teardown(verbosity=0, keepdb=False):
                _say(said)
            # migsnap's report (`error:` and `hint:`), not a traceback
            # through this runner.
            raise SystemExit(str(e)) from None
        setup.finish(
            set(serialized),
            verbosity=self.verbosity,
            interactive=self.interactive,
            keepdb=self.keepdb,
            clones=workers,
        )
        if self.debug_sql:
            for alias in connections:
                connections[alias].force_debug_cursor = True
        line = _databases.summary(_databases.entry(r) for r in setup.results.values())
        if line and self.verbosity >= 1:
            if workers:
                line += " (and %d clone(s) each for --parallel)" % workers
            _say(line)
        return setup

    def teardown_databases(self, old_config: Any, **kwargs: Any) -> None:
        if not isinstance(old_config, _databases.Setup):
            return super().teardown_databases(old_config, **kwargs)
        for said in old_config.teardown(verbosity=self.verbosity, keepdb=self.keepdb):
            _say(said)


def _project_dir() -> Optional[str]:
    """Where migsnap finds the project: manage.py's directory when that is
    what runs (``python src/manage.py test`` from elsewhere), else the
    current one."""
    script = sys.argv[0] if sys.argv else ""
    if os.path.basename(script) == "manage.py":
        return os.path.dirname(os.path.abspath(script))
    return None


def _say(line: str) -> None:
    if getattr(line, "live_only", False):  # a log needs no line twice a second
        return
    sys.stderr.write(line + "\n")
    sys.stderr.flush()

