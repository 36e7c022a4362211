from django.db import migrations, models


class Migration(migrations.Migration):
    # Django's own: django-fastmig applies it, re-rendering Store and
    # re-linking the models pointing at it, Crate among them. Had the
    # rendered classes 0010 left outlived the hand-over back to fastmig,
    # Crate.labels would point at a stale Label and fastmig would raise
    # `cannot re-link <extops.LabelsRelation: labels>` (netbox:
    # ipam.0072_prefix_cached_relations after the taggit migrations).
    dependencies = [("stores", "0010_labels")]
    operations = [
        migrations.AddField("store", "crates", models.IntegerField(null=True)),
    ]
