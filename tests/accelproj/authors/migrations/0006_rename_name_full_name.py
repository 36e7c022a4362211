from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("authors", "0005_rename_writer_author")]
    operations = [migrations.RenameField("author", "name", "full_name")]
