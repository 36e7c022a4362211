from django.db import migrations


class Migration(migrations.Migration):
    # A proxy of the model 0005 renames.
    dependencies = [("authors", "0003_seed")]
    operations = [
        migrations.CreateModel(
            name="WriterProxy",
            fields=[],
            options={"proxy": True, "indexes": [], "constraints": []},
            bases=("authors.writer",),
        ),
    ]
