from django.db import migrations


def seed(apps, schema_editor):
    """Shops stocking every book through the explicit through model, in
    quantities made from the historical book and writer fields."""
    Shop = apps.get_model("stores", "Shop")
    Stock = apps.get_model("stores", "Stock")
    Book = apps.get_model("books", "Book")
    Writer = apps.get_model("authors", "Writer")
    for name in ["North", "South"]:
        shop = Shop.objects.create(name=name)
        for book in Book.objects.order_by("isbn"):
            Stock.objects.create(shop=shop, book=book, qty=len(book.title) + book.writer.born % 7 + len(name))
        shop.favourite_writers.set(Writer.objects.filter(name__contains="o" if name == "North" else "a"))


class Migration(migrations.Migration):
    dependencies = [("stores", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
