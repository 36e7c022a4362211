from django.db import migrations, models

import extops


class Migration(migrations.Migration):
    # A third-party operation (tests/accelproj/extops): migsnap applies
    # this migration with stock Django even when the build is accelerated.
    dependencies = [("authors", "0009_probe")]
    operations = [
        extops.AlterFieldsReloadingOne(
            changes=[
                ("country", "name", models.CharField(max_length=80)),
                ("author", "full_name", models.CharField(max_length=120)),
            ],
            reload="author",
        ),
    ]
