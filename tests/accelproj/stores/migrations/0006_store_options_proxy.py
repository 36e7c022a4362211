from django.db import migrations


class Migration(migrations.Migration):
    # A custom permission (an auth_permission row) and a proxy of the
    # renamed model.
    dependencies = [("stores", "0005_rename_shop_store")]
    operations = [
        migrations.AlterModelOptions("store", {"permissions": [("audit_store", "Can audit a store")]}),
        migrations.CreateModel(
            name="StoreProxy",
            fields=[],
            options={"proxy": True, "indexes": [], "constraints": []},
            bases=("stores.store",),
        ),
    ]
