from django.db import migrations


class Migration(migrations.Migration):
    # After the foreign keys, the explicit through model and the automatic
    # M2M that point at Writer exist: the rename moves all of them. Django
    # does not rebase a proxy on a renamed model (its state keeps the old
    # base), so the proxy goes first and comes back as a proxy of the
    # renamed model, as one would write it by hand.
    dependencies = [
        ("authors", "0004_writerproxy"),
        ("books", "0003_seed"),
        ("stores", "0002_seed"),
    ]
    operations = [
        migrations.DeleteModel("WriterProxy"),
        migrations.RenameModel("Writer", "Author"),
        migrations.CreateModel(
            name="WriterProxy",
            fields=[],
            options={"proxy": True, "indexes": [], "constraints": []},
            bases=("authors.author",),
        ),
    ]
