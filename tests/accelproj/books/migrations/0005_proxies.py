from django.db import migrations


class Migration(migrations.Migration):
    # A proxy of the MTI child and one of the parent.
    dependencies = [("books", "0004_publication_fields")]
    operations = [
        migrations.CreateModel(
            name="BookProxy",
            fields=[],
            options={"proxy": True, "indexes": [], "constraints": []},
            bases=("books.book",),
        ),
        migrations.CreateModel(
            name="PublicationProxy",
            fields=[],
            options={"proxy": True, "indexes": [], "constraints": []},
            bases=("books.publication",),
        ),
    ]
