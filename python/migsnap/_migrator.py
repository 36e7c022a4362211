"""``migsnap_migrator``: django-test-migrations' ``migrator`` API (issue #25)
whose initial database comes from ``migsnap prepare --at`` rather than from
migrating (and unmigrating) the test database.

django-test-migrations' ``Migrator`` (django_test_migrations/migrator.py)
drops every table, then migrates from empty up to the targets on each
``apply_initial_migration``, and runs ``migrate`` back to the end in
``reset``: minutes per test on a long history. Here the database at the
targets is a clone of a snapshot of its own (built once, by a plain
``migrate APP NAME`` to each target), swapped in under the session
database's name; ``reset`` swaps a clone of the fully migrated snapshot back
in. Only ``apply_tested_migration`` migrates, in this process, as there.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

#: One migration, as django-test-migrations takes it: ``(app, name)``;
#: ``(app, None)`` is none of the app's (``migrate app zero``).
MigrationTarget = Tuple[str, Optional[str]]
MigrationSpec = Union[MigrationTarget, Sequence[MigrationTarget]]


def normalize(targets: MigrationSpec) -> List[MigrationTarget]:
    """One ``(app, name)`` or a list of them, as django-test-migrations'
    ``normalize``: a list."""
    if isinstance(targets, tuple) and targets and isinstance(targets[0], str):
        return [targets]  # type: ignore[list-item]
    return list(targets)  # type: ignore[arg-type]


def at_arguments(targets: List[MigrationTarget]) -> List[str]:
    """The targets as ``prepare --at`` takes them: ``app.name``, or
    ``app.zero`` for ``(app, None)``."""
    return ["%s.%s" % (app, "zero" if name is None else name) for app, name in targets]


class Migrator:
    """django-test-migrations' ``Migrator``: ``apply_initial_migration``
    returns the ``ProjectState`` at the targets (use ``.apps.get_model``
    for the models as they were), ``apply_tested_migration`` migrates to
    the tested migrations and returns the new state, ``reset`` leaves the
    database fully migrated.

    ``swap(at)`` puts a new database under the session database's name
    (``at``: the ``--at`` arguments; None: fully migrated) and points the
    connection at it."""

    def __init__(self, swap: Callable[[Optional[List[str]]], Dict[str, Any]], database: str = "default") -> None:
        self._swap = swap
        self._database = database
        #: What the last swap made (`prepare --json`'s result).
        self.prepared: Optional[Dict[str, Any]] = None

    def apply_initial_migration(self, targets: MigrationSpec) -> Any:
        """The database as ``migrate APP NAME`` to each target, in order,
        leaves an empty one (a clone; the first time, a build), and the
        project state there."""
        self.prepared = self._swap(at_arguments(normalize(targets)))
        return self._executor()._create_project_state(with_applied_migrations=True)

    def apply_tested_migration(self, targets: MigrationSpec) -> Any:
        """Migrate to the targets (forwards or backwards) and return the
        project state there, as ``MigrationExecutor.migrate`` does."""
        return self._executor().migrate(normalize(targets))

    def reset(self) -> None:
        """The database fully migrated again: a fresh clone of the snapshot,
        not a ``migrate``; with its cache tables, as after the session's
        setup (``createcachetable``: snapshots hold none)."""
        from django.core.management import call_command

        self.prepared = self._swap(None)
        call_command("createcachetable", database=self._database)

    def _executor(self) -> Any:
        from django.db import connections
        from django.db.migrations.executor import MigrationExecutor

        return MigrationExecutor(connections[self._database])


def swap_in(
    prepare: Callable[[], Dict[str, Any]], alias: str = "default"
) -> Dict[str, Any]:
    """A new database under ``alias``'s name: ``prepare`` runs migsnap
    (``prepare --database NAME``, with ``--at`` or not) and returns its
    result; ``alias`` is pointed at it. Raises what ``prepare`` raises."""
    from django.apps import apps
    from django.db import connections

    from migsnap import _databases

    # Nothing may hold the old database open while it is renamed aside.
    connections.close_all()
    result = prepare()
    _databases.point_at(alias, result)
    # Content types cached from the database before: a database part of
    # the way has other ids (and fewer types).
    if apps.is_installed("django.contrib.contenttypes"):
        from django.contrib.contenttypes.models import ContentType

        ContentType.objects.clear_cache()
    return result
