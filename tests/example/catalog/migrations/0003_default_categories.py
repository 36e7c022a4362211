from django.db import migrations

DEFAULT_CATEGORIES = [
    ("Books", "books"),
    ("Electronics", "electronics"),
    ("Garden", "garden"),
]


def add_default_categories(apps, schema_editor):
    Category = apps.get_model("catalog", "Category")
    db_alias = schema_editor.connection.alias
    for name, slug in DEFAULT_CATEGORIES:
        Category.objects.using(db_alias).get_or_create(slug=slug, defaults={"name": name})


def remove_default_categories(apps, schema_editor):
    Category = apps.get_model("catalog", "Category")
    db_alias = schema_editor.connection.alias
    Category.objects.using(db_alias).filter(
        slug__in=[slug for _, slug in DEFAULT_CATEGORIES]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0002_trigram_name_index"),
    ]

    operations = [
        # DATA MIGRATION: seeds the three default categories (rows only; no
        # schema change). Reversible: the reverse function deletes them again.
        migrations.RunPython(add_default_categories, remove_default_categories),
    ]
