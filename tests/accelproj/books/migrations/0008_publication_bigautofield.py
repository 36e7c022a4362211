from django.db import migrations, models


class Migration(migrations.Migration):
    # The MTI parent's primary key becomes a bigint: the children's
    # parent links, and every foreign key to a child (the through model's,
    # stores.Inventory's), follow.
    dependencies = [("books", "0007_alter_credit_and_origin"), ("stores", "0004_alter_inventory")]
    operations = [
        migrations.AlterField(
            "publication",
            "id",
            models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID"),
        ),
    ]
