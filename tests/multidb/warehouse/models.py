from django.db import models


class Stock(models.Model):
    sku = models.CharField(max_length=40)
    quantity = models.IntegerField(default=0)
