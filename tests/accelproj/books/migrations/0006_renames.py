from django.db import migrations


class Migration(migrations.Migration):
    # A field of the MTI parent and one of the child renamed.
    dependencies = [("books", "0005_proxies"), ("authors", "0006_rename_name_full_name")]
    operations = [
        migrations.RenameField("publication", "title", "name"),
        migrations.RenameField("book", "isbn", "isbn13"),
    ]
