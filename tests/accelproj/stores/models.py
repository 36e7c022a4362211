from django.db import models

import extops


class Store(models.Model):
    name = models.CharField(max_length=50)
    books = models.ManyToManyField("books.Book", through="Inventory", related_name="shops")
    favourite_authors = models.ManyToManyField("authors.Author", related_name="favoured_by")
    opened = models.IntegerField(null=True)
    crates = models.IntegerField(null=True)

    class Meta:
        permissions = [("audit_store", "Can audit a store")]


class StoreProxy(Store):
    class Meta:
        proxy = True


class Outlet(Store):
    city = models.CharField(max_length=50)
    manager = extops.LabelledForeignKey(
        "authors.Author", null=True, on_delete=models.SET_NULL, related_name="managed_outlets"
    )


class Inventory(models.Model):
    qty = models.BigIntegerField()
    store = models.ForeignKey(Store, on_delete=models.PROTECT, related_name="inventories")
    book = models.ForeignKey("books.Book", on_delete=models.CASCADE)


class Label(models.Model):
    name = models.CharField(max_length=30)


class Shelf(models.Model):
    label = models.ForeignKey(Label, on_delete=models.CASCADE)


class Tray(models.Model):
    shelf = models.ForeignKey(Shelf, on_delete=models.CASCADE)

    class Meta:
        ordering = ["shelf"]


class Crate(models.Model):
    store = models.ForeignKey(Store, on_delete=models.CASCADE)
    labels = extops.LabelsRelation("stores.label")
