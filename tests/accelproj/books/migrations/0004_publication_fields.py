import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    # Fields added to the MTI parent once its children exist; one is a
    # foreign key to the CharField primary key authors.0007 alters.
    dependencies = [("books", "0003_seed")]
    operations = [
        migrations.AddField("publication", "published", models.DateField(null=True)),
        migrations.AddField("publication", "pages", models.IntegerField(default=100)),
        migrations.AddField(
            "publication",
            "origin",
            models.ForeignKey(
                null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="+", to="authors.country"
            ),
        ),
    ]
