from django.db import models


class Publication(models.Model):
    id = models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")
    name = models.CharField(max_length=200)
    published = models.DateField(null=True)
    pages = models.IntegerField(default=100)
    origin = models.ForeignKey(
        "authors.Author", null=True, on_delete=models.SET_NULL, related_name="originated"
    )


class Book(Publication):
    isbn13 = models.CharField(max_length=13)
    writer = models.ForeignKey("authors.Author", on_delete=models.CASCADE, related_name="books")
    contributors = models.ManyToManyField("authors.Author", through="Credit", related_name="credited_books")


class Magazine(Publication):
    issue = models.IntegerField()


class BookProxy(Book):
    class Meta:
        proxy = True


class PublicationProxy(Publication):
    class Meta:
        proxy = True


class Credit(models.Model):
    role = models.CharField(max_length=50)
    book = models.ForeignKey(Book, on_delete=models.CASCADE)
    writer = models.ForeignKey("authors.Author", on_delete=models.PROTECT, related_name="credits")
