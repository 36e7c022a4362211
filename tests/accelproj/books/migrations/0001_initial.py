import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = [("authors", "0002_writer_country")]
    operations = [
        # Multi-table inheritance: Publication is the parent of Book and
        # Magazine.
        migrations.CreateModel(
            name="Publication",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("title", models.CharField(max_length=200)),
            ],
        ),
        migrations.CreateModel(
            name="Book",
            fields=[
                (
                    "publication_ptr",
                    models.OneToOneField(
                        auto_created=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        parent_link=True,
                        primary_key=True,
                        serialize=False,
                        to="books.publication",
                    ),
                ),
                ("isbn", models.CharField(max_length=13)),
                (
                    "writer",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="books", to="authors.writer"
                    ),
                ),
            ],
            bases=("books.publication",),
        ),
        migrations.CreateModel(
            name="Magazine",
            fields=[
                (
                    "publication_ptr",
                    models.OneToOneField(
                        auto_created=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        parent_link=True,
                        primary_key=True,
                        serialize=False,
                        to="books.publication",
                    ),
                ),
                ("issue", models.IntegerField()),
            ],
            bases=("books.publication",),
        ),
    ]
