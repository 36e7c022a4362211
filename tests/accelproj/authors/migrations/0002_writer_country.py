import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("authors", "0001_initial")]
    operations = [
        migrations.AddField(
            model_name="writer",
            name="country",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="writers",
                to="authors.country",
            ),
        ),
    ]
