from django.db import models


class Country(models.Model):
    code = models.CharField(max_length=3, primary_key=True)
    name = models.CharField(max_length=80)


class Author(models.Model):
    id = models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")
    full_name = models.CharField(max_length=120)
    born = models.IntegerField(null=True)
    country = models.ForeignKey(Country, null=True, on_delete=models.SET_NULL, related_name="writers")


class WriterProxy(Author):
    class Meta:
        proxy = True


class Fact(models.Model):
    key = models.CharField(max_length=200)
    value = models.TextField()
