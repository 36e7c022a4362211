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
from typing import Any, Callable, ClassVar, Dict, List, Optional

from django.test import TransactionTestCase, tag
from django.test.runner import DiscoverRunner as _DjangoDiscoverRunner

from migsnap import MigsnapError, Preparing, _databases
from migsnap._migrator import MigrationSpec, Migrator, swap_in

__all__ = ["DiscoverRunner", "MigratorTestCase"]

#: How a ``MigratorTestCase`` gets a database from migsnap: (alias, ``--at``
#: arguments or None for fully migrated) -> ``prepare``'s result. Set while
#: ``DiscoverRunner``'s test databases exist (a ``--parallel`` worker forked
#: from the runner inherits it); None under any other runner.
_prepare_for_migrator: Optional[Callable[[str, Optional[List[str]]], Dict[str, Any]]] = None


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

        def prepare_for_migrator(alias: str, at: Optional[List[str]]) -> Dict[str, Any]:
            # The name the alias uses now: a --parallel worker's own clone.
            name = connections[alias].settings_dict["NAME"]
            return Preparing(
                name,
                alias=alias,
                at=at,
                # `--at` keeps no pool; the full snapshot's pool is as above.
                pool_default=None if at else max(workers, 1),
                cwd=cwd,
            ).result(_say)

        global _prepare_for_migrator
        _prepare_for_migrator = prepare_for_migrator
        line = _databases.summary(_databases.entry(r) for r in setup.results.values())
        if line and self.verbosity >= 1:
            if workers:
                line += " (and %d clone(s) each for --parallel)" % workers
            _say(line)
        return setup

    def teardown_databases(self, old_config: Any, **kwargs: Any) -> None:
        global _prepare_for_migrator
        _prepare_for_migrator = None
        if not isinstance(old_config, _databases.Setup):
            return super().teardown_databases(old_config, **kwargs)
        for said in old_config.teardown(verbosity=self.verbosity, keepdb=self.keepdb):
            _say(said)


#: django-test-migrations' tag for migration tests (its
#: ``MIGRATION_TEST_MARKER``): ``manage.py test --exclude-tag migration_test``
#: leaves them out under either package.
MIGRATION_TEST_TAG = "migration_test"


@tag(MIGRATION_TEST_TAG)
class MigratorTestCase(TransactionTestCase):
    """django-test-migrations' ``MigratorTestCase`` (same attributes, same
    order), its databases from migsnap: set ``migrate_from`` and
    ``migrate_to`` (one ``(app, name)`` or a list of them); ``setUp``
    swaps in a clone of the database at ``migrate_from`` (``migsnap
    prepare --at``: built the first time, a clone after) as
    ``self.old_state``, runs ``prepare()`` (create rows with
    ``self.old_state.apps.get_model``), then migrates to ``migrate_to``
    in this process: the test methods see ``self.new_state``. After each
    test a clone of the fully migrated snapshot is swapped in, whatever the
    test left (not a ``migrate``, and no flush).

    Needs ``migsnap.django.DiscoverRunner``, which made the test databases
    (under Django's own runner the class refuses to run: the database there
    is Django's, which migsnap cannot replace)."""

    #: The alias to migrate (django-test-migrations' ``database_name``);
    #: None is ``default``.
    database_name: ClassVar[Optional[str]] = None
    migrate_from: ClassVar[MigrationSpec]
    migrate_to: ClassVar[MigrationSpec]
    old_state: Any
    new_state: Any

    @classmethod
    def setUpClass(cls) -> None:
        if _prepare_for_migrator is None:
            # Said before any test runs, rather than a traceback from
            # migsnap swapping a database it did not make.
            raise MigsnapError(
                "error: %s.%s needs migsnap's test runner, which makes the test databases it "
                "replaces (under this runner they are Django's)\nhint: run `manage.py test "
                "--testrunner migsnap.django.DiscoverRunner`, or set TEST_RUNNER = "
                '"migsnap.django.DiscoverRunner" in the settings; under pytest, use the '
                "migsnap_migrator fixture" % (cls.__module__, cls.__qualname__)
            )
        super().setUpClass()

    def setUp(self) -> None:
        super().setUp()
        alias = self.database_name or "default"
        prepare = _prepare_for_migrator
        assert prepare is not None  # setUpClass said so
        self._migrator = Migrator(lambda at: swap_in(lambda: prepare(alias, at), alias), alias)
        # A cleanup, not tearDown alone: it runs when setUp fails half way
        # too (a failing prepare()), so the next test never starts from the
        # database part of the way.
        self.addCleanup(self._migrator.reset)
        self.old_state = self._migrator.apply_initial_migration(self.migrate_from)
        self.prepare()
        self.new_state = self._migrator.apply_tested_migration(self.migrate_to)

    def prepare(self) -> None:
        """Create the rows the tested migration works on, with the models
        as they were (``self.old_state.apps.get_model(app, model)``)."""

    def _fixture_teardown(self) -> None:
        """Django's flush after each test, except of the database the
        migrator swapped a new clone in for: emptying it would take seconds
        on a wide schema and remove what data migrations wrote."""
        from django.core.management import call_command
        from django.db import connections

        fresh = connections[self.database_name or "default"].settings_dict["NAME"]
        for alias in self._databases_names(include_mirrors=False):
            if connections[alias].settings_dict["NAME"] == fresh:
                continue
            call_command(
                "flush",
                verbosity=0,
                interactive=False,
                database=alias,
                reset_sequences=False,
                allow_cascade=self.available_apps is not None,
                inhibit_post_migrate=self.available_apps is not None,
            )


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

