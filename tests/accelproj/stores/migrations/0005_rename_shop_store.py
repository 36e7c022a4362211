from django.db import migrations


class Migration(migrations.Migration):
    # Renaming the model that declares both M2Ms (its automatic through
    # table is renamed with it), then the through model's field to it.
    dependencies = [("stores", "0004_alter_inventory"), ("authors", "0008_author_bigautofield")]
    operations = [
        migrations.RenameModel("Shop", "Store"),
        migrations.RenameField("inventory", "shop", "store"),
        migrations.RenameField("store", "favourite_writers", "favourite_authors"),
    ]
