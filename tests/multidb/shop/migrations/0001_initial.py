from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Product",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=100)),
                ("sku", models.CharField(max_length=40)),
            ],
        ),
        migrations.RunSQL(
            "CREATE INDEX shop_product_lower_name ON shop_product (lower(name))",
            "DROP INDEX shop_product_lower_name",
        ),
    ]
