"""Tests that only pass on a database migsnap prepared for this worker."""

import pytest
from django.db import connection

import conftest

pytestmark = pytest.mark.django_db


def test_runsql_and_runpython_indexes_exist():
    # Created by RunSQL / RunPython only: `--nomigrations` would miss them.
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
        indexes = {row[0] for row in cursor.fetchall()}
    for name in (
        "catalog_product_name_trgm",
        "orders_order_open_created_idx",
        "orders_order_lower_status_idx",
        "audit_auditevent_payload_gin",
    ):
        assert name in indexes


def test_data_migration_rows_are_there():
    from catalog.models import Category

    assert set(Category.objects.values_list("slug", flat=True)) >= {"books", "electronics", "garden"}


def test_orm_works_on_the_clone():
    from catalog.models import Category, Product

    books = Category.objects.get(slug="books")
    Product.objects.create(category=books, sku="B-1", name="Dune", price="9.99", brand="Ace")
    assert Product.objects.filter(name__trigram_similar="Dune").count() == 1


def test_no_migration_ran_in_this_process():
    assert conftest.APPLIED == []
    assert conftest.PRE_MIGRATE == []


def test_database_is_this_workers_migsnap_clone(worker_id):
    name = connection.settings_dict["NAME"]
    if worker_id != "master":
        assert name.endswith("_" + worker_id)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
            "WHERE datname = current_database()"
        )
        assert cursor.fetchone()[0].startswith("migsnap clone of ")
