import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    # AlterField on the explicit through model.
    dependencies = [("stores", "0003_rename_stock_inventory")]
    operations = [
        migrations.AlterField("inventory", "qty", models.BigIntegerField()),
        migrations.AlterField(
            "inventory",
            "shop",
            models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT, related_name="inventories", to="stores.shop"
            ),
        ),
    ]
