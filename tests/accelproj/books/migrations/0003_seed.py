from django.db import migrations


def seed(apps, schema_editor):
    """Books (through the MTI child: a parent row each), a magazine and
    credits through the explicit through model; the ISBNs are made from
    the historical writer's fields."""
    Writer = apps.get_model("authors", "Writer")
    Book = apps.get_model("books", "Book")
    Magazine = apps.get_model("books", "Magazine")
    Credit = apps.get_model("books", "Credit")
    writers = list(Writer.objects.order_by("name"))
    for i, w in enumerate(writers):
        book = Book.objects.create(title="The works of %s" % w.name, isbn="%d%04d" % (i, w.born), writer=w)
        Credit.objects.create(book=book, writer=w, role="author")
        other = writers[(i + 1) % len(writers)]
        Credit.objects.create(book=book, writer=other, role="foreword")
    Magazine.objects.create(title="Books Monthly", issue=len(writers))


class Migration(migrations.Migration):
    dependencies = [("books", "0002_credit_contributors"), ("authors", "0003_seed")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
