"""Instrumentation for the migsnap pytest-plugin suite (driven by
tests/pytest_plugin.rs, which copies this folder into a temp copy of
tests/example).

Counts every migration Django applies in this process, two independent
ways, and writes one record per worker so the Rust side can check which
database each worker used and that nothing was migrated.
"""

import json
import os

import pytest

#: Migrations applied in this process, as "app.name"; any entry is a failure.
APPLIED = []
#: pre_migrate signals received (sent by every `migrate`, even a no-op one).
PRE_MIGRATE = []


def pytest_configure(config):
    from django.db.migrations.executor import MigrationExecutor
    from django.db.models.signals import pre_migrate

    original = MigrationExecutor.apply_migration

    def counting_apply_migration(self, state, migration, *args, **kwargs):
        APPLIED.append("%s.%s" % (migration.app_label, migration.name))
        return original(self, state, migration, *args, **kwargs)

    MigrationExecutor.apply_migration = counting_apply_migration

    def on_pre_migrate(sender, **kwargs):
        PRE_MIGRATE.append(sender.label)

    pre_migrate.connect(on_pre_migrate, weak=False, dispatch_uid="migsnap-suite")


@pytest.fixture(scope="session", autouse=True)
def record_worker(django_db_setup, django_db_blocker, worker_id, migsnap_prepared):
    """After the session's tests, while the database still exists. The
    plugin's `migsnap_prepared` exists (None) with --no-migsnap too."""
    prepared = migsnap_prepared
    yield
    from django.db import connection

    out = os.environ.get("MIGSNAP_SUITE_RECORDS")
    if not out:
        return
    with django_db_blocker.unblock():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT coalesce(shobj_description(oid, 'pg_database'), '') "
                "FROM pg_database WHERE datname = current_database()"
            )
            comment = cursor.fetchone()[0]
    record = {
        "worker": worker_id,
        "source": prepared and prepared["source"],
        "verified": prepared and prepared.get("verified"),
        # Whether the database came from the prepare started with the
        # session (None: no early start at all).
        "early": prepared and prepared.get("early"),
        "database": connection.settings_dict["NAME"],
        "comment": comment,
        "applied": APPLIED,
        "pre_migrate": PRE_MIGRATE,
    }
    with open(os.path.join(out, "%s.json" % worker_id), "w") as f:
        json.dump(record, f)
