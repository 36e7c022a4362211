import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    # An M2M with an explicit through model, between the MTI child and the
    # model authors.0005 renames.
    dependencies = [("books", "0001_initial")]
    operations = [
        migrations.CreateModel(
            name="Credit",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("role", models.CharField(max_length=20)),
                ("book", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, to="books.book")),
                ("writer", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, to="authors.writer")),
            ],
        ),
        migrations.AddField(
            model_name="book",
            name="contributors",
            field=models.ManyToManyField(related_name="credited_books", through="books.Credit", to="authors.writer"),
        ),
    ]
