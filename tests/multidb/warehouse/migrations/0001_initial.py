from django.db import migrations, models


def seed(apps, schema_editor):
    # A data migration, as routed apps have them: its rows land where the
    # router sends the app, and only there.
    Stock = apps.get_model("warehouse", "Stock")
    Stock.objects.using(schema_editor.connection.alias).create(sku="SEED", quantity=1)


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Stock",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("sku", models.CharField(max_length=40)),
                ("quantity", models.IntegerField(default=0)),
            ],
        ),
        migrations.RunSQL(
            "CREATE INDEX warehouse_stock_lower_sku ON warehouse_stock (lower(sku))",
            "DROP INDEX warehouse_stock_lower_sku",
            hints={"model_name": "stock"},
        ),
        migrations.RunPython(seed, migrations.RunPython.noop),
    ]
