from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0001_initial"),
    ]

    operations = [
        # ONLY IN MIGRATIONS: partial index for the "open orders by age" query.
        # Order.Meta does not declare it.
        migrations.RunSQL(
            sql="""
                CREATE INDEX orders_order_open_created_idx
                    ON orders_order (created_at)
                    WHERE status = 'open';
            """,
            reverse_sql="""
                DROP INDEX orders_order_open_created_idx;
            """,
        ),
    ]
