"""What a third-party package brings into migrations: an operation that
changes several models' state but reloads only the one it names, relying
on stock Django re-rendering that model's related models with it
(django-fastmig's README lists this as untested; with it, the other
model's change never reaches the database), and relation fields of its
own, one wired as Django's are and one that wires itself. migsnap runs a
migration with any of them with stock Django."""
from django.db import models
from django.db.migrations.operations.base import Operation
from django.db.models.fields.related import RelatedField, lazy_related_operation
from django.db.models.fields.reverse_related import ForeignObjectRel


class LabelledForeignKey(models.ForeignKey):
    """A package's foreign key: Django's, under another class."""


class LabelsRelation(RelatedField):
    """A package's relation without a column of its own (taggit's
    TaggableManager keeps its rows in the package's table) that resolves
    its target itself instead of through Django's
    `contribute_to_related_class`, as TaggableManager does: django-fastmig
    cannot re-link it to a re-rendered target. netbox's accelerated build
    failed on TaggableManager (`cannot re-link`, see the stores migrations
    0010 and 0011)."""

    one_to_many = True
    many_to_many = many_to_one = one_to_one = False

    def __init__(self, to, **kwargs):
        kwargs["rel"] = ForeignObjectRel(self, to, related_name="+")
        super().__init__(**kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        to = self.remote_field.model
        kwargs["to"] = to if isinstance(to, str) else to._meta.label_lower
        return name, path, args, kwargs

    def get_attname_column(self):
        # No column: the schema editor skips it.
        return self.get_attname(), None

    def contribute_to_class(self, cls, name, private_only=False):
        # Field's, not RelatedField's: that one resolves the target through
        # do_related_class, which needs contribute_to_related_class.
        models.Field.contribute_to_class(self, cls, name, private_only=private_only)
        self.opts = cls._meta

        def resolve(model, related, field):
            field.remote_field.model = related

        lazy_related_operation(resolve, cls, self.remote_field.model, field=self)


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
