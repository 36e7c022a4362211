from django.db import migrations


class Migration(migrations.Migration):
    # Renaming an explicit through model.
    dependencies = [("stores", "0002_seed"), ("authors", "0005_rename_writer_author")]
    operations = [migrations.RenameModel("Stock", "Inventory")]
