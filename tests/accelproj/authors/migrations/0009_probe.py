from django.db import migrations


def probe(apps, schema_editor):
    """Rows whose values depend on the historical models: the renamed
    model and field, its proxy, relations through the renamed through
    model and the automatic M2M."""
    Author = apps.get_model("authors", "Author")
    WriterProxy = apps.get_model("authors", "WriterProxy")
    Fact = apps.get_model("authors", "Fact")
    for a in Author.objects.order_by("full_name"):
        books = sorted(b.isbn13 for b in a.books.all())
        roles = sorted(c.role for c in a.credits.all())
        stores = sorted(s.name for s in a.favoured_by.all())
        Fact.objects.create(
            key="author:%s" % a.full_name,
            value="%s|%s|%s|%s|%s" % (a.country.name, a.born, books, roles, stores),
        )
    Fact.objects.create(key="writerproxy", value=str(WriterProxy.objects.count()))


class Migration(migrations.Migration):
    dependencies = [
        ("authors", "0008_author_bigautofield"),
        ("books", "0007_alter_credit_and_origin"),
        ("stores", "0005_rename_shop_store"),
    ]
    operations = [migrations.RunPython(probe, migrations.RunPython.noop)]
