//! How to fix what the library reports as data: the hints that name this
//! binary's flags, settings and the pytest plugin's options. The library's
//! errors carry typed sources (`BadTarget`, `DjangoError`); this is the one
//! place that turns them into advice, so the library never names a flag.

use migsnap::django::{DjangoError, Failure, NoDjango};
use migsnap::error::Error;
use migsnap::pg::admin::BadTarget;
use migsnap::store::BadCacheDir;

/// Add the hint for a typed cause, unless the library already gave one.
pub fn add(error: Error) -> Error {
    if error.hint.is_some() {
        return error;
    }
    let hint = error
        .find::<BadTarget>()
        .map(|b| target_hint(b).to_string())
        .or_else(|| {
            error
                .find::<DjangoError>()
                .map(|d| django_hint(d.kind).into())
        })
        .or_else(|| error.find::<NoDjango>().map(|n| no_django_hint(n).into()))
        .or_else(|| error.find::<BadCacheDir>().and_then(cache_dir_hint));
    match hint {
        Some(h) => error.hint(h),
        None => error,
    }
}

fn cache_dir_hint(bad: &BadCacheDir) -> Option<String> {
    Some(match bad {
        BadCacheDir::Create { exists, .. } => format!(
            "{}: point MIGSNAP_CACHE_DIR (or --cache-dir) at one",
            if *exists {
                "it exists and is not a directory"
            } else {
                "it must be a directory you can create and write"
            }
        ),
        BadCacheDir::Unreadable { .. } => return None,
        BadCacheDir::NotYours { dir, me, .. } => format!(
            "whoever can write the cache dir decides what SQL migsnap runs: use a cache dir of your own (MIGSNAP_CACHE_DIR / --cache-dir), or `chown {me} {}`",
            dir.display()
        ),
        BadCacheDir::OthersWrite { dir, .. } => format!(
            "whoever can write the cache dir decides what SQL migsnap runs: `chmod go-w {}`, or choose another cache dir",
            dir.display()
        ),
    })
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
            "name migrations as `app.name` (a unique prefix of the name will do; `prepare --at` also takes `app.zero`) or by the path of a migration file of an installed app"
        }
        Failure::Applied => {
            "name migrations added since the nearest snapshot, or run `migsnap trace` without arguments to trace all of them"
        }
        Failure::History | Failure::Migration | Failure::Exit => {
            "fix the migration or settings named above; no snapshot was saved"
        }
    }
}
