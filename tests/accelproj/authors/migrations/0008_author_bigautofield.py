from django.db import migrations, models


class Migration(migrations.Migration):
    # AutoField -> BigAutoField on a model that foreign keys, an explicit
    # through model and an automatic M2M table point at.
    dependencies = [("authors", "0007_country_code_3")]
    operations = [
        migrations.AlterField(
            model_name="author",
            name="id",
            field=models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID"),
        ),
    ]
