from django.db import models


class Order(models.Model):
    STATUS_CHOICES = [
        ("open", "Open"),
        ("paid", "Paid"),
        ("shipped", "Shipped"),
        ("cancelled", "Cancelled"),
    ]

    product = models.ForeignKey(
        "catalog.Product", on_delete=models.PROTECT, related_name="orders"
    )
    reference = models.CharField(max_length=32)
    quantity = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=16, choices=STATUS_CHOICES, default="open")
    created_at = models.DateTimeField(auto_now_add=True)

    # Not declared here on purpose (they exist only via migrations):
    #   orders_order_open_created_idx  (0002, partial index, RunSQL)
    #   orders_order_lower_status_idx  (0004, expression index, database-only)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["product", "reference"], name="orders_order_product_ref_uniq"
            ),
        ]
        indexes = [
            # Declared in the model state by migration 0003, but that migration
            # never creates it in the database.
            models.Index(fields=["status"], name="orders_order_status_idx"),
        ]

    def __str__(self):
        return self.reference
