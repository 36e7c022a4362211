from django.db import models


class Category(models.Model):
    name = models.CharField(max_length=100)
    slug = models.SlugField(unique=True)

    def __str__(self):
        return self.name


class Product(models.Model):
    category = models.ForeignKey(
        Category, on_delete=models.PROTECT, related_name="products"
    )
    sku = models.CharField(max_length=32, unique=True)
    # Searched with trigram similarity; the GIN trigram index
    # "catalog_product_name_trgm" exists only via migration 0002 (RunSQL)
    # and is deliberately NOT declared here.
    name = models.CharField(max_length=200)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    brand = models.CharField(max_length=100, db_index=True)
    is_active = models.BooleanField(default=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["category", "price"], name="catalog_product_cat_price_idx"
            ),
        ]

    def __str__(self):
        return f"{self.sku} {self.name}"
