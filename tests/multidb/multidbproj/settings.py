"""A project with several databases, as large Django codebases have them:
`warehouse` is a separate database its router sends one app to, `replica`
is `default` under another name (TEST["MIRROR"]), and `legacy` is an
unmanaged database nothing migrates into.

Connection parameters come from the libpq environment, as in tests/example.
"""
import os

SECRET_KEY = "migsnap-multidb-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = []
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "shop",
    "warehouse",
    "legacy",
]


def database(suffix, **extra):
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("PGDATABASE", "multidb") + suffix,
        "HOST": os.environ.get("PGHOST", ""),
        "PORT": os.environ.get("PGPORT", ""),
        "USER": os.environ.get("PGUSER", ""),
        "PASSWORD": os.environ.get("PGPASSWORD", ""),
        **extra,
    }


DATABASES = {
    "default": database(""),
    "warehouse": database("_wh"),
    "replica": database("", TEST={"MIRROR": "default"}),
    "legacy": database("_legacy", TEST={"DEPENDENCIES": []}),
}
DATABASE_ROUTERS = ["multidbproj.routers.Router"]

# `manage.py test` with migsnap's runner unless the test says otherwise.
TEST_RUNNER = os.environ.get("MULTIDB_TEST_RUNNER", "migsnap.django.DiscoverRunner")
