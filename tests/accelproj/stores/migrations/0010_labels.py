import django.db.models.deletion
from django.db import migrations, models

import extops


class Migration(migrations.Migration):
    # A relation field that wires itself (extops.LabelsRelation, as taggit's
    # TaggableManager): migsnap applies this migration with stock Django.
    # Its last operation is a delayed reload (Meta options) of Tray, which
    # stock Django re-renders with its neighbours and theirs: Shelf and
    # Label, but not Crate, whose `labels` keeps pointing at the Label class
    # rendered before. Stock Django never re-links a field, so that is
    # harmless to it; see 0011.
    dependencies = [("stores", "0009_outlet_manager")]
    operations = [
        migrations.CreateModel(
            name="Label",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=30)),
            ],
        ),
        migrations.CreateModel(
            name="Shelf",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("label", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, to="stores.label")),
            ],
        ),
        migrations.CreateModel(
            name="Tray",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("shelf", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, to="stores.shelf")),
            ],
        ),
        migrations.CreateModel(
            name="Crate",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("store", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, to="stores.store")),
                ("labels", extops.LabelsRelation(to="stores.label")),
            ],
        ),
        migrations.AlterModelOptions(name="tray", options={"ordering": ["shelf"]}),
    ]
