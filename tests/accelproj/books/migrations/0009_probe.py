from django.db import migrations


def probe(apps, schema_editor):
    """What the historical models say after every change: MTI rows read
    through the child (the parent's renamed field, the field added to the
    parent), the proxies, the explicit through model, and each model's
    fields as the state renders them."""
    Book = apps.get_model("books", "Book")
    BookProxy = apps.get_model("books", "BookProxy")
    PublicationProxy = apps.get_model("books", "PublicationProxy")
    Magazine = apps.get_model("books", "Magazine")
    Fact = apps.get_model("authors", "Fact")
    for b in Book.objects.order_by("isbn13"):
        credits = sorted("%s:%s" % (c.writer.full_name, c.role) for c in b.credit_set.all())
        contributors = sorted(a.full_name for a in b.contributors.all())
        Fact.objects.create(
            key="book:%s" % b.isbn13,
            value="%s|%s|%s|%s|%s" % (b.name, b.pages, b.writer.full_name, credits, contributors),
        )
    for m in Magazine.objects.all():
        Fact.objects.create(key="magazine:%s" % m.name, value="%s|%s" % (m.issue, m.pages))
    Fact.objects.create(
        key="proxies", value="%d %d" % (BookProxy.objects.count(), PublicationProxy.objects.count())
    )
    connection = schema_editor.connection
    for model in sorted(apps.get_models(include_auto_created=True), key=lambda m: m._meta.label):
        fields = []
        for f in model._meta.get_fields(include_hidden=True):
            related = f.related_model._meta.label if f.related_model else ""
            column = getattr(f, "column", None) or ""
            db_type = f.db_type(connection) if f.concrete else ""
            fields.append("%s:%s:%s:%s" % (f.name, column, db_type, related))
        Fact.objects.create(key="fields:%s" % model._meta.label, value=" ".join(sorted(fields)))


class Migration(migrations.Migration):
    dependencies = [("books", "0008_publication_bigautofield"), ("authors", "0010_widen_names")]
    operations = [migrations.RunPython(probe, migrations.RunPython.noop)]
