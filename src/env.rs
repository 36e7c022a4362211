//! Every environment variable migsnap reads, in one place, so the README's
//! table and the code cannot drift apart.

/// Server to use instead of the embedded one (any libpq-style postgres:// URL).
pub const SERVER_URL: &str = "MIGSNAP_SERVER_URL";
/// Where snapshots (dumps + manifests) live.
pub const CACHE_DIR: &str = "MIGSNAP_CACHE_DIR";
/// Secret that signs cached snapshots (HMAC-SHA256); when set, unsigned or
/// badly signed snapshots are refused. Overrides `cache-secret-file`.
pub const CACHE_SECRET: &str = "MIGSNAP_CACHE_SECRET";
/// The shared snapshot store: `s3://bucket/prefix` or `file:///dir`
/// (overrides `remote` in the config; `off` turns a configured one off).
pub const REMOTE: &str = "MIGSNAP_REMOTE";
/// `true`: `prepare` pushes what it builds to the store (overrides
/// `remote-push`; off by default).
pub const REMOTE_PUSH: &str = "MIGSNAP_REMOTE_PUSH";
/// Seconds any one wait on the store may take (overrides `remote-timeout`).
pub const REMOTE_TIMEOUT: &str = "MIGSNAP_REMOTE_TIMEOUT";
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
/// Django's own settings variable; used when no settings module is configured.
pub const DJANGO_SETTINGS_MODULE: &str = "DJANGO_SETTINGS_MODULE";
/// Set by `activate`; its interpreter is preferred over `python3`.
pub const VIRTUAL_ENV: &str = "VIRTUAL_ENV";
/// https://no-color.org: any non-empty value turns colour off.
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

/// The snapshot store's backend reads its own standard variables, those
/// that start with this: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`,
/// … (every name object_store's S3 configuration knows).
pub const BACKEND_PREFIX: &str = "AWS_";

/// The backend's variables (`BACKEND_PREFIX`), for `remote::Options`.
pub fn backend_vars() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(name, _)| name.starts_with(BACKEND_PREFIX))
        .collect()
}

/// Read a variable, treating an empty value like an unset one (CI systems
/// often export empty strings for "not configured").
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}
