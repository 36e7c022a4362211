from django.db import models


class Customer(models.Model):
    """A table of a database this project does not manage."""

    name = models.CharField(max_length=100)

    class Meta:
        managed = False
        db_table = "customers"
