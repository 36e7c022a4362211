from django.db import migrations

WRITERS = [("Selma Lagerlöf", 1858, "se"), ("Marcel Proust", 1871, "fr"), ("Tove Jansson", 1914, "fi")]


def seed(apps, schema_editor):
    Country = apps.get_model("authors", "Country")
    Writer = apps.get_model("authors", "Writer")
    for code, name in [("se", "Sweden"), ("fr", "France"), ("fi", "Finland")]:
        Country.objects.create(code=code, name=name)
    for name, born, code in WRITERS:
        Writer.objects.create(name=name, born=born, country_id=code)


class Migration(migrations.Migration):
    dependencies = [("authors", "0002_writer_country")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
