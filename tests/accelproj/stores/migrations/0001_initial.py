import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = [("books", "0003_seed")]
    operations = [
        migrations.CreateModel(
            name="Shop",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=50)),
            ],
        ),
        # The explicit through model of Shop.books (renamed in 0003).
        migrations.CreateModel(
            name="Stock",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("qty", models.IntegerField()),
                ("shop", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, to="stores.shop")),
                ("book", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, to="books.book")),
            ],
        ),
        migrations.AddField(
            model_name="shop",
            name="books",
            field=models.ManyToManyField(related_name="shops", through="stores.Stock", to="books.book"),
        ),
        # An automatic M2M to the model authors.0005 renames.
        migrations.AddField(
            model_name="shop",
            name="favourite_writers",
            field=models.ManyToManyField(related_name="favoured_by", to="authors.writer"),
        ),
    ]
