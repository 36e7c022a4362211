import django.db.models.deletion
from django.db import migrations

import extops


class Migration(migrations.Migration):
    # A relation field that is not Django's own (tests/accelproj/extops):
    # migsnap applies this migration with stock Django.
    dependencies = [("stores", "0008_probe")]
    operations = [
        migrations.AddField(
            model_name="outlet",
            name="manager",
            field=extops.LabelledForeignKey(
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="managed_outlets",
                to="authors.author",
            ),
        ),
    ]
