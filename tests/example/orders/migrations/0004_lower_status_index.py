from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0003_status_index_state_only"),
    ]

    operations = [
        # ONLY IN MIGRATIONS: expression index on lower(status), created in the
        # database only. state_operations is empty, so the model state (and
        # Order.Meta) knows nothing about it.
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    sql="CREATE INDEX orders_order_lower_status_idx ON orders_order (lower(status));",
                    reverse_sql="DROP INDEX orders_order_lower_status_idx;",
                ),
            ],
            state_operations=[],
        ),
    ]
