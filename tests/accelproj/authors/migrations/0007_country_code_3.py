from django.db import migrations, models


class Migration(migrations.Migration):
    # The CharField primary key grows: every foreign key column to it
    # follows (authors_author.country_id, books_publication.origin_id).
    dependencies = [("authors", "0006_rename_name_full_name"), ("books", "0004_publication_fields")]
    operations = [
        migrations.AlterField(
            model_name="country",
            name="code",
            field=models.CharField(max_length=3, primary_key=True, serialize=False),
        ),
    ]
