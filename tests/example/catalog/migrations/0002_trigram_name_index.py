from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0001_initial"),
    ]

    operations = [
        # pg_trgm provides the gin_trgm_ops operator class used below.
        TrigramExtension(),
        # ONLY IN MIGRATIONS: GIN trigram index for fuzzy product-name search.
        # Product.Meta does not declare it, so a database built from the models
        # alone (e.g. a test DB created without running migrations) lacks it.
        migrations.RunSQL(
            sql="CREATE INDEX catalog_product_name_trgm ON catalog_product USING gin (name gin_trgm_ops);",
            reverse_sql="DROP INDEX catalog_product_name_trgm;",
        ),
    ]
