import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    # An MTI child of the renamed model, then a field on that parent.
    dependencies = [("stores", "0006_store_options_proxy")]
    operations = [
        migrations.CreateModel(
            name="Outlet",
            fields=[
                (
                    "store_ptr",
                    models.OneToOneField(
                        auto_created=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        parent_link=True,
                        primary_key=True,
                        serialize=False,
                        to="stores.store",
                    ),
                ),
                ("city", models.CharField(max_length=50)),
            ],
            bases=("stores.store",),
        ),
        migrations.AddField("store", "opened", models.IntegerField(null=True)),
    ]
