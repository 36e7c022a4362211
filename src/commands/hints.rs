//! How to fix what the library reports as data: the hints that name this
//! binary's flags, settings and the pytest plugin's options. The library's
//! errors carry typed sources (`BadTarget`, `DjangoError`); this is the one
//! place that turns them into advice, so the library never names a flag.

use migsnap::django::{DjangoError, Failure, NoDjango};
use migsnap::error::Error;
use migsnap::pg::admin::BadTarget;

/// Add the hint for a typed cause, unless the library already gave one.
pub fn add(error: Error) -> Error {
    if error.hint.is_some() {
        return error;
    }
    let hint = error
        .find::<BadTarget>()
        .map(target_hint)
        .or_else(|| error.find::<DjangoError>().map(|d| django_hint(d.kind)))
        .or_else(|| error.find::<NoDjango>().map(no_django_hint));
    match hint {
        Some(h) => error.hint(h),
        None => error,
    }
}

fn no_django_hint(missing: &NoDjango) -> &'static str {
    match missing {
        NoDjango::ManagePy(_) => {
            "run migsnap from the Django project root, pass `-C DIR`, or set `manage-py` in [tool.migsnap]"
        }
        NoDjango::Interpreter { .. } => django_hint(Failure::Interpreter),
    }
}

fn target_hint(bad: &BadTarget) -> &'static str {
    match bad {
        BadTarget::Empty => "pass --database test_myapp",
        BadTarget::TooLong { .. } => "use a shorter name",
        BadTarget::Nul => "use a plain name",
        BadTarget::Reserved { .. } => "pick a name such as `test_myapp`",
        BadTarget::NotOurs { .. } => {
            "use a `test_` name, or, if this database may really be dropped, pass --force (pytest: --migsnap-force, or `migsnap_force = true` in the ini file)"
        }
    }
}

fn django_hint(kind: Failure) -> &'static str {
    match kind {
        Failure::Settings => {
            "check the settings module (--settings / DJANGO_SETTINGS_MODULE) and the interpreter (MIGSNAP_PYTHON)"
        }
        Failure::Elsewhere => {
            "the settings point DATABASES['default'] elsewhere for migsnap's run too: drop `dbname`, `host` or a `service` from OPTIONS, or a router, when DATABASES is being built for tests"
        }
        Failure::Interpreter => {
            "set MIGSNAP_PYTHON (or --python, or `python` in [tool.migsnap]) to the project's interpreter, e.g. .venv/bin/python"
        }
        Failure::Configuration => {
            "point the alias's DATABASES entry at PostgreSQL (the settings module migsnap uses may be set with --settings)"
        }
        Failure::Alias => {
            "pass --alias with a key of the settings' DATABASES (`migsnap prepare --all-aliases` prepares every one)"
        }
        Failure::OtherAlias => {
            "have the migration read and write only its own database (`schema_editor.connection.alias`): each alias is built on its own, from a snapshot of its own, and no build connects to a real database"
        }
        Failure::Unsupported => {
            "this Django does not support this PostgreSQL server (the error above says which it needs): point migsnap at a newer one (MIGSNAP_SERVER_URL, or MIGSNAP_PG_BINDIR for the embedded server), or use a Django that supports this server"
        }
        Failure::Server => {
            "the server crashed, restarted or was stopped (not a fault of the migration): check its log, then retry; no snapshot was saved"
        }
        Failure::Target => {
            "name migrations as `app.name` (a unique prefix of the name will do) or by the path of a migration file of an installed app"
        }
        Failure::History | Failure::Migration | Failure::Exit => {
            "fix the migration or settings named above; no snapshot was saved"
        }
    }
}
