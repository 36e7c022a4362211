"""Settings for the build accelerator's test project (issue #24): small,
but its migrations take every shape django-fastmig re-implements (renames,
primary-key type changes, multi-table inheritance, proxies, explicit M2M
through models, RunPython reading historical models), so that an
accelerated build can be compared with stock Django's on each.

Connection parameters come from the libpq environment variables, as in
tests/example.
"""
import os

SECRET_KEY = "migsnap-accelproj-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = []

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "authors",
    "books",
    "stores",
]

ROOT_URLCONF = "accelproj.urls"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("PGDATABASE", "accelproj"),
        "HOST": os.environ.get("PGHOST", ""),
        "PORT": os.environ.get("PGPORT", ""),
        "USER": os.environ.get("PGUSER", ""),
        "PASSWORD": os.environ.get("PGPASSWORD", ""),
    }
}

# AutoField, so that the migrations can change primary keys to BigAutoField.
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

USE_TZ = True
TIME_ZONE = "UTC"
