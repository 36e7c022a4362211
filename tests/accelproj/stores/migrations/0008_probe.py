from django.db import migrations


def probe(apps, schema_editor):
    """Reads every shape of this app through the historical models: the
    renamed through model and its renamed field, the renamed owner of both
    M2Ms, its proxy and MTI child; writes an outlet and the facts."""
    Store = apps.get_model("stores", "Store")
    StoreProxy = apps.get_model("stores", "StoreProxy")
    Outlet = apps.get_model("stores", "Outlet")
    Inventory = apps.get_model("stores", "Inventory")
    Fact = apps.get_model("authors", "Fact")
    Outlet.objects.create(name="Airport", city="Arlanda", opened=2020)
    for s in Store.objects.order_by("name"):
        stock = sorted("%s:%d" % (i.book.isbn13, i.qty) for i in s.inventories.all())
        books = sorted(b.name for b in s.books.all())
        favourites = sorted(a.full_name for a in s.favourite_authors.all())
        Fact.objects.create(key="store:%s" % s.name, value="%s|%s|%s|%s" % (s.opened, stock, books, favourites))
    total = sum(i.qty for i in Inventory.objects.filter(store__name__in=["North", "South"]))
    Fact.objects.create(key="stock", value="%d %d %d" % (total, StoreProxy.objects.count(), Outlet.objects.count()))


class Migration(migrations.Migration):
    dependencies = [("stores", "0007_outlet"), ("books", "0009_probe")]
    operations = [migrations.RunPython(probe, migrations.RunPython.noop)]
