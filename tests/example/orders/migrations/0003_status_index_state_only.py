from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0002_open_orders_partial_index"),
    ]

    operations = [
        # ONLY IN MODEL STATE: the team planned to build this index by hand
        # (CREATE INDEX CONCURRENTLY in production), so this migration only
        # records it in Django's state. database_operations is empty, hence a
        # migrated database does NOT have orders_order_status_idx, while a
        # database created from the models does.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddIndex(
                    model_name="order",
                    index=models.Index(
                        fields=["status"], name="orders_order_status_idx"
                    ),
                ),
            ],
            database_operations=[],
        ),
    ]
