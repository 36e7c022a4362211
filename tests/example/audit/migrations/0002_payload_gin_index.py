from django.db import migrations


def create_payload_index(apps, schema_editor):
    schema_editor.execute(
        "CREATE INDEX audit_auditevent_payload_gin "
        "ON audit_auditevent USING gin (payload)"
    )


def drop_payload_index(apps, schema_editor):
    schema_editor.execute("DROP INDEX audit_auditevent_payload_gin")


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0001_initial"),
    ]

    operations = [
        # ONLY IN MIGRATIONS: GIN index on the JSON payload, created from Python
        # through schema_editor.execute() rather than RunSQL, so it is invisible
        # to anything that only inspects RunSQL operations or the model state.
        migrations.RunPython(create_payload_index, drop_payload_index),
    ]
