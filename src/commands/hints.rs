//! How to fix what the library reports as data: the hints that name this
//! binary's flags, settings, environment variables and the pytest plugin's
//! options. The library's errors carry typed causes (`BadTarget`,
//! `DjangoError`, `EnvError`, …: one enum per module, see
//! `migsnap::error::Typed`); this is the one place that turns them into
//! advice, so the library never writes a hint (tests/it/architecture.rs keeps
//! it so). The settings' own errors (`SettingsError`) get theirs here too.
//!
//! Every typed error is named in this file (tests/it/architecture.rs checks):
//! those below have no hint, on purpose. `DumpFault` is said in a warning
//! that discards the snapshot, and the rebuild that follows is the fix;
//! `RestoreError`, `StoreError`, `TaskFailed` and `NoRandomness` are
//! migsnap's own or the system's failures (exit code 3), with nothing for
//! the user to change.

use crate::settings::{ConfigFix, SettingsError, MAX_POOL};
use migsnap::check::CheckError;
use migsnap::django::{DjangoError, Failure, NoAccelerator, NoDjango, ShimError};
use migsnap::drop::Refused;
use migsnap::embedded::{EmbeddedError, RuntimeDir};
use migsnap::engine::BuildError;
use migsnap::env::{self, EnvError};
use migsnap::error::Error;
use migsnap::fingerprint::FilesError;
use migsnap::pg::admin::BadTarget;
use migsnap::pg::dump::PgDumpError;
use migsnap::pg::restore::RoleLogin;
use migsnap::pg::tools::ToolError;
use migsnap::pg::{ConnectFailure, PgError, UrlOrigin};
use migsnap::prepare::AtTargetError;
use migsnap::remote::RemoteError;
use migsnap::sign::{KeyFileError, Refusal};
use migsnap::store::BadCacheDir;
use std::error::Error as StdError;

/// Add the hint for the first typed cause that has one, unless the error
/// has one already.
pub fn add(error: Error) -> Error {
    if error.hint.is_some() {
        return error;
    }
    match of(&error) {
        Some(h) => error.hint(h),
        None => error,
    }
}

/// The hint for the first cause in `error`'s chain that migsnap knows a
/// fix for (also what warnings about a typed cause carry).
pub fn of(error: &(dyn StdError + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(h) = hint(e) {
            return Some(h);
        }
        next = e.source();
    }
    None
}

/// The hint for this one error, if it is a typed cause that has one.
fn hint(e: &(dyn StdError + 'static)) -> Option<String> {
    if let Some(s) = e.downcast_ref::<SettingsError>() {
        return settings_hint(s);
    }
    if let Some(b) = e.downcast_ref::<BadTarget>() {
        return Some(target_hint(b).into());
    }
    if let Some(d) = e.downcast_ref::<DjangoError>() {
        return Some(django_hint(d.kind).into());
    }
    if let Some(ShimError::Unfit { .. }) = e.downcast_ref::<ShimError>() {
        return Some(django_hint(Failure::History).into());
    }
    if let Some(n) = e.downcast_ref::<NoAccelerator>() {
        return Some(match n {
            NoAccelerator::Missing { .. } => "`pip install django-fastmig` into the interpreter migsnap runs (`python` in [tool.migsnap], MIGSNAP_PYTHON), or set build-accelerator = false".into(),
            NoAccelerator::Unsupported { .. } => format!("`pip install 'django-fastmig=={}'` into the interpreter migsnap runs, or set build-accelerator = false", migsnap::django::ACCELERATOR_VERSIONS),
        });
    }
    if let Some(n) = e.downcast_ref::<NoDjango>() {
        return Some(no_django_hint(n).into());
    }
    if let Some(b) = e.downcast_ref::<BadCacheDir>() {
        return cache_dir_hint(b);
    }
    if let Some(v) = e.downcast_ref::<EnvError>() {
        return Some(env_hint(v));
    }
    if let Some(r) = e.downcast_ref::<Refused>() {
        return Some(drop_hint(r));
    }
    if let Some(k) = e.downcast_ref::<KeyFileError>() {
        return key_file_hint(k);
    }
    if let Some(r) = e.downcast_ref::<RemoteError>() {
        return remote_hint(r);
    }
    if let Some(f) = e.downcast_ref::<FilesError>() {
        return files_hint(f).map(str::to_string);
    }
    if let Some(b) = e.downcast_ref::<BuildError>() {
        return build_hint(b);
    }
    if let Some(p) = e.downcast_ref::<PgError>() {
        return pg_hint(p);
    }
    if let Some(t) = e.downcast_ref::<ToolError>() {
        return tool_hint(t);
    }
    if let Some(d) = e.downcast_ref::<PgDumpError>() {
        return dump_hint(d).map(str::to_string);
    }
    if let Some(r) = e.downcast_ref::<RoleLogin>() {
        return Some(format!(
            "the restore logs in as the role `{}`, made for it, with a password over the same host and port: let such a role connect (pg_hba.conf), or connect migsnap as a role that is not a superuser",
            r.role
        ));
    }
    if let Some(r) = e.downcast_ref::<RuntimeDir>() {
        return Some(format!(
            "`{}` holds migsnap's locks: remove it if it is yours, or set TMPDIR to a directory only you can write (e.g. `mkdir -m 700 ~/.tmp && export TMPDIR=~/.tmp`)",
            r.dir.display()
        ));
    }
    if let Some(m) = e.downcast_ref::<EmbeddedError>() {
        return embedded_hint(m);
    }
    if e.downcast_ref::<AtTargetError>().is_some() {
        return Some("name migrations as `app.name` (a unique prefix of the name will do, `app.zero` for none of the app's) or by the path of a migration file".into());
    }
    if let Some(CheckError::Unsettled) = e.downcast_ref::<CheckError>() {
        return Some("run `migsnap check` again once they are settled".into());
    }
    None
}

fn settings_hint(e: &SettingsError) -> Option<String> {
    Some(match e {
        SettingsError::NoProjectDir { .. } => {
            "run migsnap from your Django project root or pass `-C DIR`".into()
        }
        SettingsError::PortVar { .. } => {
            "e.g. MIGSNAP_SERVER_PORT=54329, or unset it for Unix-socket only".into()
        }
        SettingsError::PortZero => {
            "use a port number from 1 to 65535, or leave it out for Unix-socket only".into()
        }
        SettingsError::RestoreJobs { config, .. } => format!(
            "use 1 (one connection) to {} in {}",
            migsnap::pg::restore::MAX_JOBS,
            config
                .as_deref()
                .map_or("the config".into(), |p| p.display().to_string())
        ),
        SettingsError::PoolVar { .. } => {
            "e.g. MIGSNAP_POOL=4 (one per pytest-xdist worker), or 0 for no pool".into()
        }
        SettingsError::PoolKey { .. } => format!("use 0 (no pool) to {MAX_POOL}"),
        SettingsError::Alias { .. } => {
            "name a key of the settings' DATABASES: letters, digits, `_` and `-`, at most 63".into()
        }
        SettingsError::LintRule { .. } => {
            let known: Vec<&str> = migsnap::lint::RULES.iter().map(|(id, ..)| *id).collect();
            format!("the rules are: {}", known.join(", "))
        }
        SettingsError::NumberVar { var, .. } => {
            let example = match *var {
                env::REMOTE_TIMEOUT => "30",
                env::REMOTE_MIN_RATE => "256",
                _ => return None,
            };
            format!("e.g. {var}={example}, or unset it for the default")
        }
        SettingsError::NumberKey { what, hi, .. } => {
            format!("use {what} above 0 and at most {hi}")
        }
        SettingsError::SecretUnreadable { path, .. } | SettingsError::SecretEmpty { path } => {
            format!(
                "write a random secret to it with `head -c 32 /dev/urandom | base64 > {0} && chmod 600 {0}`, or set MIGSNAP_CACHE_SECRET",
                path.display()
            )
        }
        SettingsError::SecretOpen { path, .. } => format!("`chmod 600 {}`", path.display()),
        SettingsError::PublicKey { .. } => {
            "write each as `ed25519:<base64>`, as `migsnap signing-key` prints it".into()
        }
        SettingsError::NoDataDir => "make a key with `migsnap signing-key generate PATH` and set MIGSNAP_SIGNING_KEY_FILE to it".into(),
        SettingsError::Config { fix, .. } => match fix {
            ConfigFix::DidYouMean(near) => format!("did you mean `{near}`?"),
            ConfigFix::KnownKeys(known) => format!(
                "the keys migsnap reads are {}",
                known
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ConfigFix::Type => "see docs/configuration.md for each key's type".into(),
            ConfigFix::Toml => {
                "this is not valid TOML: fix the line shown (https://toml.io)".into()
            }
        },
        SettingsError::NoCacheParent { dir, origin } => format!(
            "create it first (`mkdir -p {}`) or fix the path in {origin}",
            dir.display()
        ),
        SettingsError::NoCacheDir => "set MIGSNAP_CACHE_DIR or pass --cache-dir".into(),
        SettingsError::NotBool { name, .. } => match *name {
            env::BUILD_ACCELERATOR => "MIGSNAP_BUILD_ACCELERATOR=1 migrates with django-fastmig when the project's environment has it; 0 turns it off",
            env::VERIFY_BUILD => "MIGSNAP_VERIFY_BUILD=1 checks every accelerated build against stock Django's",
            env::REMOTE_PUSH => "e.g. MIGSNAP_REMOTE_PUSH=true on the default branch's CI job only",
            env::TRUST_UNSIGNED => "MIGSNAP_TRUST_UNSIGNED=1 uses snapshots no trusted key signed; leave it unset unless you must",
            _ => return None,
        }
        .into(),
        SettingsError::Cwd(_) | SettingsError::Resolve { .. } | SettingsError::Read { .. } => {
            return None
        }
    })
}

fn embedded_hint(e: &EmbeddedError) -> Option<String> {
    Some(match e {
        EmbeddedError::OtherPort { .. } => {
            "run `migsnap server stop`, then retry: it restarts with the current settings".into()
        }
        EmbeddedError::DidNotStart { dir, log } => format!(
            "see {}; `migsnap server stop` then retry, or delete {} to start afresh",
            log.display(),
            dir.display()
        ),
        EmbeddedError::Initdb {
            dir,
            disk_full: true,
        } => format!(
            "the disk holding `{}` is full: free some space, or set MIGSNAP_SERVER_DIR to a directory on another disk",
            dir.display()
        ),
        EmbeddedError::Initdb { .. } => {
            "set MIGSNAP_SERVER_URL to use an existing server instead".into()
        }
        EmbeddedError::LockFile { path, .. } => format!(
            "`{}` must be a plain file of yours (not a link): remove it and retry",
            path.display()
        ),
        EmbeddedError::LockTimeout { dir, .. } => format!(
            "another migsnap is starting the embedded server in {}; if that process is stuck, stop it and retry (the wait is set by {})",
            dir.display(),
            env::SERVER_LOCK_TIMEOUT
        ),
        EmbeddedError::Unreachable { .. } => {
            "set MIGSNAP_SERVER_DIR to a directory under /tmp, or `chmod o+x` that directory".into()
        }
        EmbeddedError::UnsafeDir { dir, .. } => format!(
            "migsnap keeps the server in a directory it creates itself (mode 0700): remove `{}` if it is not yours to keep, or point {} at a path that does not exist yet",
            dir.display(),
            env::SERVER_DIR
        ),
        EmbeddedError::NoServerUser { .. } => {
            "create one (`useradd --system postgres`), set MIGSNAP_SERVER_USER, or run migsnap as a normal user".into()
        }
        EmbeddedError::DidNotStop { .. }
        | EmbeddedError::CreateDir { .. }
        | EmbeddedError::Inspect { .. }
        | EmbeddedError::SetUpDir { .. }
        | EmbeddedError::RemoveHalfMade { .. }
        | EmbeddedError::Remove { .. }
        | EmbeddedError::CreateFile { .. }
        | EmbeddedError::HandOver { .. }
        | EmbeddedError::WriteFile { .. }
        | EmbeddedError::MoveIntoPlace { .. } => return None,
    })
}

/// Where the user set the URL a connection came from.
fn url_setting(url: UrlOrigin) -> &'static str {
    match url {
        UrlOrigin::Server => "MIGSNAP_SERVER_URL / --server-url",
        UrlOrigin::Against => "the --against URL",
        UrlOrigin::StatsFrom => "the --stats-from URL",
    }
}

fn pg_hint(e: &PgError) -> Option<String> {
    use tokio_postgres::error::SqlState;
    Some(match e {
        PgError::BadUrl { .. } => {
            "use a libpq URL such as `postgres://user:password@localhost:5432/postgres`".into()
        }
        PgError::SslRequire => {
            "test servers are usually local: use sslmode=disable or prefer".into()
        }
        PgError::Connect {
            database,
            user,
            url,
            why,
            ..
        } => {
            let origin = url_setting(*url);
            match why {
                ConnectFailure::PasswordRefused => {
                    format!("the password was refused: fix it in {origin}")
                }
                ConnectFailure::RoleRefused => format!(
                    "the server refused role `{user}` (no such role, or pg_hba.conf rejects it): check the user in {origin}"
                ),
                ConnectFailure::NoDatabase => format!(
                    "database `{database}` does not exist: put an existing database (e.g. postgres) in the URL path"
                ),
                ConnectFailure::PasswordMissing => format!(
                    "the server wants a password for `{user}` and the URL has none: put it in the URL (postgres://{user}:PASSWORD@…) in {origin}"
                ),
                ConnectFailure::NoAnswer if *url == UrlOrigin::Server => {
                    "is the server running? Check MIGSNAP_SERVER_URL, or unset it to use the embedded server".into()
                }
                ConnectFailure::NoAnswer => {
                    format!("is the server running? Check the host and port in {origin}")
                }
                ConnectFailure::Other => format!("check the host, port and user in {origin}"),
            }
        }
        PgError::NotReadOnly { url, .. } => format!(
            "connect directly to the server in {}, not through a pooler that drops the `options` startup parameter",
            url_setting(*url)
        ),
        PgError::Query {
            database, source, ..
        } => match source.code() {
            Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => {
                "the server role needs the CREATEDB privilege: `ALTER ROLE … CREATEDB`".into()
            }
            Some(c) if *c == SqlState::OBJECT_IN_USE => match database {
                Some(name) => format!(
                    "another session is connected to `{name}`: close it (or stop the test run using it) and retry"
                ),
                None => {
                    "close the other sessions using it (psql, a running test, an IDE) and retry"
                        .into()
                }
            },
            _ => return None,
        },
        PgError::NotABuild { .. } | PgError::Vanished { .. } | PgError::NoVersion => return None,
    })
}

fn tool_hint(e: &ToolError) -> Option<String> {
    Some(match e {
        ToolError::Missing { .. } => {
            "install PostgreSQL (e.g. `apt-get install postgresql`) or set MIGSNAP_PG_BINDIR to its bin directory".into()
        }
        ToolError::TooOld { server, .. } => format!(
            "install the PostgreSQL {server} client tools, or set MIGSNAP_PG_BINDIR to their bin directory"
        ),
        ToolError::Run { .. } => return None,
    })
}

fn dump_hint(e: &PgDumpError) -> Option<&'static str> {
    match e {
        PgDumpError::Failed {
            version_mismatch: true,
            ..
        } => Some("install pg_dump of the server's major version or newer, or set MIGSNAP_PG_BINDIR"),
        PgDumpError::Failed { .. } | PgDumpError::NoStdout | PgDumpError::Wait(_) => None,
        PgDumpError::OtherDatabase { .. } => Some(
            "pg_dump reached another database: check for a connection pooler or proxy in front of the server that routes by something other than the database name",
        ),
    }
}

fn files_hint(bad: &FilesError) -> Option<&'static str> {
    Some(match bad {
        FilesError::Unreadable { .. } | FilesError::Walk { .. } => {
            "make it readable by this user, or leave it out with `exclude` in [tool.migsnap]"
        }
        FilesError::BadGlob { .. } => {
            "globs are relative to the project dir, e.g. `**/migrations/*.py`"
        }
        FilesError::NotAFile { .. } => "remove it, or put the rules in a plain file by that name",
        FilesError::CacheDirIsAPackage { .. } => {
            "give the cache a directory of its own (`cache-dir` in [tool.migsnap], or MIGSNAP_CACHE_DIR)"
        }
        FilesError::Globs { .. } => return None,
    })
}

fn build_hint(e: &BuildError) -> Option<String> {
    Some(match e {
        BuildError::NotOurs { template } => format!("rename or drop `{template}` yourself"),
        BuildError::NothingCached { .. } => "run `migsnap prepare` to build it".into(),
        BuildError::UntrustedExtension { extension, .. }
        | BuildError::CreatesUntrusted { extension, .. } => format!(
            "CREATE EXTENSION runs as the superuser: if you trust `{extension}`, add it to `trusted-extensions` in [tool.migsnap] (docs/security.md)"
        ),
        BuildError::NotRecorded { .. } => {
            "the settings must not point DATABASES['default'] elsewhere (OPTIONS, routers)".into()
        }
        BuildError::Changed { .. } => "run the command again once the checkout is settled".into(),
        BuildError::Unkeyed { dir } => format!("add `{dir}/*.py` to `migrations` in [tool.migsnap]"),
        BuildError::Unverified { .. } => "set build-accelerator = false (or MIGSNAP_BUILD_ACCELERATOR=0) to build with stock Django, and report the difference to django-fastmig (docs/accelerator.md)".into(),
        BuildError::NoReference { .. } => "this is a bug in migsnap: set build-accelerator = false (or MIGSNAP_BUILD_ACCELERATOR=0) to build with stock Django meanwhile".into(),
        BuildError::BorrowsRights { .. }
        | BuildError::NoAnswer { .. }
        | BuildError::BaseUnusable { .. }
        | BuildError::Runtime(_) => return None,
    })
}

fn remote_hint(e: &RemoteError) -> Option<String> {
    Some(match e {
        RemoteError::BadUrl { .. } => {
            "use s3://BUCKET/PREFIX or file:///ABSOLUTE/DIR as `remote` in [tool.migsnap] (or MIGSNAP_REMOTE)".into()
        }
        RemoteError::Unreachable { .. } => {
            "check the URL, the endpoint (AWS_ENDPOINT_URL) and the region (AWS_REGION), and that the store is up".into()
        }
        RemoteError::Timeout { .. } => {
            "the store may be overloaded or the network slow: raise `remote-timeout` (MIGSNAP_REMOTE_TIMEOUT, seconds) if it is only slow".into()
        }
        RemoteError::TooSlow { .. } => {
            "the store or the network is too slow to beat a local build: lower `remote-min-rate` (MIGSNAP_REMOTE_MIN_RATE, KiB/s) if it is only slow".into()
        }
        RemoteError::Interrupted { .. } => {
            "the store or the network dropped the connection; the next run tries again".into()
        }
        RemoteError::OddNames { .. } => {
            "someone wrote objects to the store's prefix that migsnap cannot list: remove them with the store's own tools (migsnap never does)".into()
        }
        RemoteError::Denied { .. } => {
            "check the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) and that they may read the bucket (and write it, to push)".into()
        }
        RemoteError::Refused { .. } => {
            "snapshots in the store must be signed by a key in `trusted-keys` (MIGSNAP_TRUSTED_KEYS; `migsnap signing-key` prints the pusher's) or with the cache secret: push them from a job that holds one".into()
        }
        RemoteError::Damaged { .. } => {
            "migsnap skips it; delete the snapshot's manifest from the store (`migsnap gc --remote` removes the rest) so that the next push replaces it".into()
        }
        RemoteError::NotCached { .. } => {
            "run `migsnap prepare` first (it builds the snapshot for the current key), or name a cached one with --key".into()
        }
        RemoteError::LocalRefused { .. } | RemoteError::LocalDamaged { .. } => {
            "run `migsnap prepare --rebuild` to build it here (a foreign snapshot is never pushed), then push again".into()
        }
        RemoteError::NotConfigured => {
            "set `remote = \"s3://BUCKET/PREFIX\"` in [tool.migsnap], or MIGSNAP_REMOTE".into()
        }
        RemoteError::NoSnapshot { .. } => {
            "push it from a machine that built it (`migsnap push`), or let `prepare` build it".into()
        }
        // The cache dir's own error, further down the chain, has it.
        RemoteError::Local(_)
        | RemoteError::Task { .. }
        | RemoteError::Missing
        | RemoteError::Exists => return None,
    })
}

fn key_file_hint(bad: &KeyFileError) -> Option<String> {
    Some(match bad {
        KeyFileError::Missing { path } => format!(
            "make one with `migsnap signing-key generate {}`, or unset signing-key-file / MIGSNAP_SIGNING_KEY_FILE",
            path.display()
        ),
        KeyFileError::Refused { path, why } => match why {
            Refusal::Symlink => format!(
                "whoever controls the link chooses the key that signs your snapshots: put the key file itself at `{}`",
                path.display()
            ),
            Refusal::NotYours { me, .. } => format!(
                "a signing key must be your own: `chown {me} {0}`, or make a new one with `migsnap signing-key generate PATH`",
                path.display()
            ),
            Refusal::Readable { .. } => format!("`chmod 600 {}`", path.display()),
            Refusal::NotAKey => {
                "make one with `migsnap signing-key generate PATH` (or `openssl genpkey -algorithm ed25519`)".into()
            }
        },
        KeyFileError::Unreadable { .. } => {
            "check its permissions, or point MIGSNAP_SIGNING_KEY_FILE at another key".into()
        }
        KeyFileError::CreateDir { .. } => {
            "set MIGSNAP_SIGNING_KEY_FILE to a key made with `migsnap signing-key generate PATH`"
                .into()
        }
        KeyFileError::DirNotYours { dir, .. } => format!("`chmod 700 {}` if it is yours", dir.display()),
        KeyFileError::Exists { .. } => {
            "choose another path: an existing key is never overwritten".into()
        }
        KeyFileError::Unwritable { .. }
        | KeyFileError::ReadDir { .. }
        | KeyFileError::Generate
        | KeyFileError::ReadBack => return None,
    })
}

fn env_hint(bad: &EnvError) -> String {
    match bad {
        EnvError::NotUtf8 { name, .. } => format!("set {name} to UTF-8 text, or unset it"),
        EnvError::BinDirNotDir { .. } => format!(
            "point {} at the directory holding pg_dump, initdb and pg_ctl (e.g. /usr/lib/postgresql/16/bin), or unset it",
            env::PG_BINDIR
        ),
        EnvError::NotSeconds { name, .. } => {
            format!("e.g. {name}=300, or unset it for the default")
        }
    }
}

fn drop_hint(refused: &Refused) -> String {
    match refused {
        Refused::System { .. } => "name a test database".into(),
        Refused::NotMarked { name } | Refused::NotOwned { name } => format!(
            "migsnap drops only the databases it made (the clones it handed out, its pool members and templates); drop `{name}` yourself if it is yours to drop"
        ),
        Refused::Busy { .. } => "wait for the other migsnap to finish, then retry".into(),
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
        // By kind, not errno: tempfile wraps the OS error with the path.
        BadCacheDir::Write { source, .. } => match source.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                "the disk holding the cache dir is full: free space (old snapshots in it may be deleted)"
            }
            std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied => {
                "the cache dir is read-only: point MIGSNAP_CACHE_DIR at a writable directory"
            }
            _ => "check that the cache dir is writable (MIGSNAP_CACHE_DIR / --cache-dir)",
        }
        .into(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn a_full_disk_gets_a_disk_hint() {
        let dir = PathBuf::from("/tmp/s");
        let full = EmbeddedError::Initdb {
            dir: dir.clone(),
            disk_full: true,
        };
        let hint = |e| embedded_hint(&e).unwrap_or_default();
        assert!(hint(full).contains("disk holding `/tmp/s` is full"));
        let other = EmbeddedError::Initdb {
            dir,
            disk_full: false,
        };
        assert!(hint(other).contains("MIGSNAP_SERVER_URL"));
    }

    #[test]
    fn a_typed_cause_deep_in_the_chain_gets_its_hint_once() {
        // Wrapped twice, as callers do: the hint still comes from the data.
        let inner: Error = EnvError::NotSeconds {
            name: "X".into(),
            value: "y".into(),
        }
        .into();
        let outer = Error::new(migsnap::error::Kind::Usage, "cannot start").source(inner);
        let outer = add(outer);
        assert_eq!(
            outer.hint.as_deref(),
            Some("e.g. X=300, or unset it for the default")
        );
        assert_eq!(
            outer.report(false),
            "error: cannot start\n  Caused by: X must be a whole number of seconds above 0, not `y`\nhint: e.g. X=300, or unset it for the default\n"
        );
    }
}
