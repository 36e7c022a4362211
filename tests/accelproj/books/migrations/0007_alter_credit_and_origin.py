import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("books", "0006_renames"), ("authors", "0008_author_bigautofield")]
    operations = [
        # AlterField on the explicit through model: a column and a foreign
        # key (now to the renamed model, protected, with a related name).
        migrations.AlterField("credit", "role", models.CharField(max_length=50)),
        migrations.AlterField(
            "credit",
            "writer",
            models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT, related_name="credits", to="authors.author"
            ),
        ),
        # A foreign key of the MTI parent moved to another model: its
        # column's type follows the new target's primary key.
        migrations.AlterField(
            "publication",
            "origin",
            models.ForeignKey(
                null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="originated", to="authors.author"
            ),
        ),
    ]
