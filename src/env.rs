//! Every environment variable migsnap reads, in one place, so the table in
//! docs/configuration.md and the code cannot drift apart.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::time::Duration;

/// Server to use instead of the embedded one (any libpq-style postgres:// URL).
pub const SERVER_URL: &str = "MIGSNAP_SERVER_URL";
/// Where snapshots (dumps + manifests) live.
pub const CACHE_DIR: &str = "MIGSNAP_CACHE_DIR";
/// Secret that signs cached snapshots (HMAC-SHA256), besides the Ed25519
/// signing key: a snapshot whose HMAC verifies with it is authenticated.
/// Overrides `cache-secret-file`.
pub const CACHE_SECRET: &str = "MIGSNAP_CACHE_SECRET";
/// `ed25519:<base64 or hex>` public keys, separated by commas or spaces,
/// whose signatures are accepted besides the signing key's own (overrides
/// `trusted-keys`).
pub const TRUSTED_KEYS: &str = "MIGSNAP_TRUSTED_KEYS";
/// The Ed25519 private key (PKCS#8 PEM) that signs what is written and
/// pushed, e.g. a CI secret (overrides `signing-key-file`; default: the
/// per-user key in the data dir, made on first use).
pub const SIGNING_KEY_FILE: &str = "MIGSNAP_SIGNING_KEY_FILE";
/// `1`: use snapshots no trusted key signed, for their own key only, never
/// as the base of an incremental build (overrides `trust-unsigned`).
pub const TRUST_UNSIGNED: &str = "MIGSNAP_TRUST_UNSIGNED";
/// `1`: migrate with django-fastmig when the project's environment has it
/// (overrides `build-accelerator`; off by default while it is experimental).
pub const BUILD_ACCELERATOR: &str = "MIGSNAP_BUILD_ACCELERATOR";
/// `1`: check every accelerated build against stock Django's `migrate` into
/// a scratch database before saving it (overrides `verify-build`).
pub const VERIFY_BUILD: &str = "MIGSNAP_VERIFY_BUILD";
/// The shared snapshot store: `s3://bucket/prefix` or `file:///dir`
/// (overrides `remote` in the config; `off` turns a configured one off).
pub const REMOTE: &str = "MIGSNAP_REMOTE";
/// `true`: `prepare` pushes what it builds to the store (overrides
/// `remote-push`; off by default).
pub const REMOTE_PUSH: &str = "MIGSNAP_REMOTE_PUSH";
/// Seconds any one wait on the store may take (overrides `remote-timeout`).
pub const REMOTE_TIMEOUT: &str = "MIGSNAP_REMOTE_TIMEOUT";
/// KiB per second below which a transfer with the store counts as stalled
/// (overrides `remote-min-rate`).
pub const REMOTE_MIN_RATE: &str = "MIGSNAP_REMOTE_MIN_RATE";
/// Interpreter that runs manage.py.
pub const PYTHON: &str = "MIGSNAP_PYTHON";
/// Data directory of the embedded server (default: one per cache dir in the
/// user's state dir, or under the system temp dir when running as root).
pub const SERVER_DIR: &str = "MIGSNAP_SERVER_DIR";
/// Let the embedded server also listen on 127.0.0.1 at this TCP port.
pub const SERVER_PORT: &str = "MIGSNAP_SERVER_PORT";
/// Ready clones to keep for the current key (overrides `pool` in the config).
pub const POOL: &str = "MIGSNAP_POOL";
/// Directory holding pg_dump, initdb, pg_ctl; searched before PATH.
pub const PG_BINDIR: &str = "MIGSNAP_PG_BINDIR";
/// The shell's search path: PostgreSQL's programs are looked for in it
/// after `MIGSNAP_PG_BINDIR`.
pub const PATH: &str = "PATH";
/// Django's own settings variable; used when no settings module is configured.
pub const DJANGO_SETTINGS_MODULE: &str = "DJANGO_SETTINGS_MODULE";
/// Set by `activate`; its interpreter is preferred over `python3`.
pub const VIRTUAL_ENV: &str = "VIRTUAL_ENV";
/// https://no-color.org: any non-empty value turns colour off. Read by
/// anstream (`render::stderr_color` in the binary), with CLICOLOR, CLICOLOR_FORCE and TERM.
pub const NO_COLOR: &str = "NO_COLOR";
/// Which unprivileged user runs the embedded server when migsnap runs as root.
pub const SERVER_USER: &str = "MIGSNAP_SERVER_USER";
/// Seconds `start` waits for another migsnap starting the same embedded
/// server before it gives up, naming the lock's holder (default 120).
pub const SERVER_LOCK_TIMEOUT: &str = "MIGSNAP_SERVER_LOCK_TIMEOUT";
/// Test-only: `<point>[:<n>]` kills migsnap with SIGKILL the n-th time (default:
/// the first) it reaches the named crash point (see `failpoint`). The crash
/// tests use it to prove that a run killed anywhere leaves nothing a later
/// run would trust.
pub const CRASH_AT: &str = "MIGSNAP_CRASH_AT";
/// Test hook: `<point>:<file>` makes the process wait at that point until
/// `<file>` exists (at most 60 s), so a test can change the world in between
/// (e.g. drop the template between the warm path's look and its clone).
pub const PAUSE_AT: &str = "MIGSNAP_PAUSE_AT";
/// Test hook: any value makes every restored snapshot count as not
/// authenticated (as an unsigned one under `trust-unsigned` will), so the
/// tests reach the stricter checks such a snapshot gets (`failpoint`).
pub const TEST_UNAUTHENTICATED: &str = "MIGSNAP_TEST_UNAUTHENTICATED";
/// Test hook: any value makes `verify-build` find the accelerated build
/// different from stock Django's (a table is added to it first; `rows`:
/// one value of a row is changed instead).
pub const TEST_VERIFY_SKEW: &str = "MIGSNAP_TEST_VERIFY_SKEW";

/// The snapshot store's backend reads its own standard variables, those
/// that start with this: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`,
/// … (every name object_store's S3 configuration knows).
pub const BACKEND_PREFIX: &str = "AWS_";

/// Variables whose value is text (a URL, a name, a number, a flag): one
/// that is not UTF-8 is an error naming it (issue #21: such a value was
/// silently taken as unset, and another server, interpreter or store used).
const TEXT: &[&str] = &[
    SERVER_URL,
    REMOTE,
    REMOTE_PUSH,
    REMOTE_TIMEOUT,
    REMOTE_MIN_RATE,
    SERVER_PORT,
    POOL,
    DJANGO_SETTINGS_MODULE,
    SERVER_USER,
    SERVER_LOCK_TIMEOUT,
    CRASH_AT,
    PAUSE_AT,
];

/// Variables whose value is a path, read as the bytes they are: on Unix a
/// path need not be UTF-8, and refusing one would refuse a real directory
/// (`CACHE_DIR`, `PYTHON`, `SERVER_DIR`, `PG_BINDIR`; `VIRTUAL_ENV` is
/// `activate`'s). `CACHE_SECRET` is bytes too: a secret need not be text.
pub const PATHS: &[&str] = &[CACHE_DIR, PYTHON, SERVER_DIR, PG_BINDIR, VIRTUAL_ENV];

/// The environment as migsnap reads it, taken once: the settings resolve
/// from it, so the library never reads a variable itself, and a test can
/// resolve settings from a given set without touching the process's.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    vars: Vec<(OsString, OsString)>,
}

impl Environment {
    /// This process's environment.
    pub fn from_process() -> Environment {
        Environment {
            vars: std::env::vars_os().collect(),
        }
    }

    /// Exactly these variables (for tests).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Environment {
        Environment {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v)))
                .collect(),
        }
    }

    /// The raw value; the last one wins, as with the process's.
    fn get(&self, name: &str) -> Option<&OsStr> {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_os_str())
    }

    /// Check what can be checked before anything runs, so that a bad value
    /// exits 2 naming its variable instead of being taken as unset: text
    /// that is not UTF-8 (migsnap's variables and the backend's `AWS_*`), a
    /// `MIGSNAP_PG_BINDIR` that is not a directory (PostgreSQL's programs
    /// would otherwise silently come from somewhere else), and a
    /// `MIGSNAP_SERVER_LOCK_TIMEOUT` that is not a positive number of
    /// seconds. The other numbers are checked where the settings are
    /// resolved.
    pub fn check(&self) -> Result<(), crate::error::Error> {
        for name in TEXT {
            if let Some(v) = self.get(name) {
                if v.to_str().is_none() {
                    return Err(not_utf8(name, v));
                }
            }
        }
        for (name, value) in &self.vars {
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(BACKEND_PREFIX) && value.to_str().is_none() {
                return Err(not_utf8(name, value));
            }
        }
        if let Some(dir) = self.path(PG_BINDIR) {
            if !dir.is_dir() {
                return Err(EnvError::BinDirNotDir { dir }.into());
            }
        }
        self.seconds(SERVER_LOCK_TIMEOUT)?;
        Ok(())
    }

    /// A whole, positive number of seconds from `name`, if set.
    pub fn seconds(&self, name: &str) -> Result<Option<Duration>, crate::error::Error> {
        let Some(v) = self.var(name) else {
            return Ok(None);
        };
        match v.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(Some(Duration::from_secs(n))),
            _ => Err(EnvError::NotSeconds {
                name: name.to_string(),
                value: v,
            }
            .into()),
        }
    }

    /// The backend's variables (`BACKEND_PREFIX`), for `remote::Options`.
    /// Those that are not UTF-8 are refused by `check`; here they are left
    /// out.
    pub fn backend_vars(&self) -> Vec<(String, String)> {
        self.vars
            .iter()
            .filter_map(|(name, value)| Some((name.to_str()?, value.to_str()?)))
            .filter(|(name, _)| name.starts_with(BACKEND_PREFIX))
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    /// A variable, treating an empty value like an unset one (CI systems
    /// often export empty strings for "not configured"). A value that is
    /// not UTF-8 reads as unset here: `check` refuses it first, naming it.
    pub fn var(&self, name: &str) -> Option<String> {
        self.get(name)
            .and_then(OsStr::to_str)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }

    /// A path variable, whatever its bytes (see `PATHS`); empty is unset.
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.get(name).filter(|v| !v.is_empty()).map(PathBuf::from)
    }

    /// A search-path variable (`PATH`) as its directories, in order.
    pub fn dirs(&self, name: &str) -> Vec<PathBuf> {
        self.get(name)
            .map(|v| std::env::split_paths(v).collect())
            .unwrap_or_default()
    }

    /// A variable's bytes (a secret need not be text); empty is unset.
    pub fn bytes(&self, name: &str) -> Option<Vec<u8>> {
        use std::os::unix::ffi::OsStrExt;
        self.get(name)
            .filter(|v| !v.is_empty())
            .map(|v| v.as_bytes().to_vec())
    }
}

fn not_utf8(name: &str, value: &OsStr) -> crate::error::Error {
    EnvError::NotUtf8 {
        name: name.to_string(),
        value: value.to_string_lossy().escape_debug().to_string(),
    }
    .into()
}

/// A variable migsnap reads holds a value it cannot use, as data: the
/// variable's name and its value (the binary says how to fix it).
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// `value` is the lossy, escaped text of the bytes.
    #[error("{name} is not valid UTF-8: `{value}`")]
    NotUtf8 { name: String, value: String },
    #[error("{} is `{}`, which is not a directory", PG_BINDIR, .dir.display())]
    BinDirNotDir { dir: PathBuf },
    #[error("{name} must be a whole number of seconds above 0, not `{value}`")]
    NotSeconds { name: String, value: String },
}

impl crate::error::Typed for EnvError {
    fn kind(&self) -> crate::error::Kind {
        crate::error::Kind::Usage
    }
}

/// One variable of this process, for the test-only hooks (`failpoint`),
/// which run before and beside any settings; empty is unset.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}
