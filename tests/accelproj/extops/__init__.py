"""What a third-party package brings into migrations: an operation that
changes several models' state but reloads only the one it names, relying
on stock Django re-rendering that model's related models with it
(django-fastmig's README lists this as untested; with it, the other
model's change never reaches the database), and a relation field of its
own. migsnap runs a migration with either with stock Django."""
from django.db import models
from django.db.migrations.operations.base import Operation


class LabelledForeignKey(models.ForeignKey):
    """A package's foreign key: Django's, under another class."""


class AlterFieldsReloadingOne(Operation):
    reversible = False

    def __init__(self, changes, reload):
        # changes: [(model_name, field_name, field)]; reload: a model name.
        self.changes = changes
        self.reload = reload

    def deconstruct(self):
        return (self.__class__.__qualname__, [], {"changes": self.changes, "reload": self.reload})

    def state_forwards(self, app_label, state):
        for model, name, field in self.changes:
            state.models[app_label, model].fields[name] = field.clone()
        state.reload_model(app_label, self.reload, delay=False)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        for model, name, _ in self.changes:
            before = from_state.apps.get_model(app_label, model)
            after = to_state.apps.get_model(app_label, model)
            schema_editor.alter_field(before, before._meta.get_field(name), after._meta.get_field(name))

    def describe(self):
        return "Alter %s, reloading %s" % (", ".join("%s.%s" % c[:2] for c in self.changes), self.reload)
