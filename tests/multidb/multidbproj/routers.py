class Router:
    """warehouse's models live in the warehouse database, legacy's in the
    legacy one (unmanaged: nothing is migrated there); everything else in
    default (replica is default under another name)."""

    routed = {"warehouse": "warehouse", "legacy": "legacy"}

    def db_for_read(self, model, **hints):
        return self.routed.get(model._meta.app_label)

    db_for_write = db_for_read

    def allow_relation(self, a, b, **hints):
        return None

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        if app_label == "warehouse":
            return db == "warehouse"
        return db == "default"
