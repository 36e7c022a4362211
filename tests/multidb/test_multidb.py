"""One suite for both runners (pytest with pytest-django, and `manage.py
test`): every alias the tests use must be a database of its own with its
own schema, or the alias it mirrors. Each test writes a record of what it
saw (MULTIDB_RECORDS) for tests/multidb.rs to check, including any
migration this process ran (there must be none with migsnap)."""

import json
import os
import uuid

from django.db import connections
from django.db.migrations.executor import MigrationExecutor
from django.db.models.signals import pre_migrate
from django.test import TestCase, TransactionTestCase

from shop.models import Product
from warehouse.models import Stock

#: Migrations applied in this process, and pre_migrate signals (sent by
#: every migrate, even a no-op one): both must stay empty with migsnap.
APPLIED = []
PRE_MIGRATE = []
_original = MigrationExecutor.apply_migration


def _counting(self, state, migration, *args, **kwargs):
    APPLIED.append("%s.%s" % (migration.app_label, migration.name))
    return _original(self, state, migration, *args, **kwargs)


MigrationExecutor.apply_migration = _counting
pre_migrate.connect(lambda sender, **kw: PRE_MIGRATE.append(sender.label), weak=False, dispatch_uid="multidb")

ALIASES = ["default", "warehouse", "replica", "legacy"]


def tables(alias):
    return set(connections[alias].introspection.table_names())


def indexes(alias):
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
        return {row[0] for row in cursor.fetchall()}


def record(test):
    out = os.environ.get("MULTIDB_RECORDS")
    if not out:
        return
    seen = {}
    for alias in ALIASES:
        with connections[alias].cursor() as cursor:
            cursor.execute(
                "SELECT current_database(), coalesce(shobj_description(oid, 'pg_database'), '') "
                "FROM pg_database WHERE datname = current_database()"
            )
            seen[alias] = list(cursor.fetchone())
    with open(os.path.join(out, "%s-%s.json" % (test, uuid.uuid4().hex)), "w") as f:
        json.dump({"test": test, "pid": os.getpid(), "databases": seen, "applied": APPLIED, "pre_migrate": PRE_MIGRATE}, f)


class EveryAlias(TestCase):
    databases = set(ALIASES)

    def test_each_alias_has_the_schema_its_router_gives_it(self):
        record("schema")
        assert {"shop_product", "django_migrations", "django_content_type"} <= tables("default")
        assert "warehouse_stock" not in tables("default")
        assert tables("warehouse") == {"warehouse_stock", "django_migrations"}, tables("warehouse")
        # Nothing migrates into the legacy database: Django still records
        # its migrations there.
        assert tables("legacy") == {"django_migrations"}, tables("legacy")
        with connections["legacy"].cursor() as cursor:
            cursor.execute("SELECT count(*) FROM django_migrations WHERE app = 'shop'")
            assert cursor.fetchone()[0] == 1
        # RunSQL indexes land where their migration ran.
        assert "shop_product_lower_name" in indexes("default")
        assert "warehouse_stock_lower_sku" in indexes("warehouse")
        assert "warehouse_stock_lower_sku" not in indexes("default")

    def test_the_routed_data_migration_ran_on_its_alias(self):
        record("data")
        assert list(Stock.objects.values_list("sku", flat=True)) == ["SEED"]
        Stock.objects.create(sku="NEW", quantity=3)
        assert Stock.objects.count() == 2


class Mirror(TransactionTestCase):
    databases = {"default", "replica"}

    def test_the_replica_is_the_default_database(self):
        Product.objects.create(name="Widget", sku="W-1")
        names = {}
        for alias in ("default", "replica"):
            with connections[alias].cursor() as cursor:
                cursor.execute("SELECT current_database(), current_setting('port')")
                names[alias] = cursor.fetchone()
        assert names["default"] == names["replica"], names
        assert Product.objects.using("replica").filter(sku="W-1").exists()


class OnlyWarehouse(TestCase):
    databases = {"warehouse"}

    def test_a_test_of_one_routed_alias(self):
        assert Stock.objects.filter(sku="SEED").exists()
