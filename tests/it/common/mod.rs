//! Test harness: a real PostgreSQL server and a real Django, shared by all
//! tests of a run but with no shared state.
//!
//! The server is migsnap's own embedded server (started through the binary,
//! so that path is exercised too) in `MIGSNAP_TEST_SERVER_DIR`, or any
//! server given as `MIGSNAP_TEST_SERVER_URL`. Each test gets a copy of the
//! example project, its own cache dir and a unique key salt, so template
//! names never collide between tests running in parallel. Databases a test
//! made are dropped when it passes and kept (and printed) when it fails.
//!
//! A test that acts on the whole server, not only on what it made (`gc`
//! sweeps every leftover on it; a count of every scratch clone; a session
//! on `template1`, which holds up every `CREATE DATABASE`), calls [`alone`]
//! first: it then runs on a second server that only such tests use, one at
//! a time.

use serde_json::Value;
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_migsnap"))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The project's venv interpreter (created by scripts/venv.sh).
pub fn python() -> PathBuf {
    let p = std::env::var_os("MIGSNAP_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"));
    assert!(
        p.exists(),
        "no Python venv at {}: run the suite with scripts/test.sh (it creates .venv)",
        p.display()
    );
    p
}

pub fn server_dir() -> PathBuf {
    std::env::var_os("MIGSNAP_TEST_SERVER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("migsnap-test-server"))
}

/// Where [`alone`]'s server lives: next to the shared one, so whatever
/// stops and removes that one (scripts/test.sh) finds it by the same name.
pub fn alone_server_dir() -> PathBuf {
    let mut dir = server_dir().into_os_string();
    dir.push("-alone");
    PathBuf::from(dir)
}

thread_local! {
    /// Whether the test on this thread holds [`alone`]'s turn (libtest runs
    /// each test on a thread of its own).
    static ALONE: Cell<bool> = const { Cell::new(false) };
}

/// URL of the server this test uses: the shared one, or [`alone`]'s while
/// the test holds its turn.
pub fn server_url() -> &'static str {
    if ALONE.with(Cell::get) {
        alone_server_url()
    } else {
        shared_server_url()
    }
}

/// The server of every test but [`alone`]'s, started once per process (the
/// start is idempotent and locked, so two test processes share one server).
fn shared_server_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        std::env::var("MIGSNAP_TEST_SERVER_URL").unwrap_or_else(|_| start_server(&server_dir()))
    })
}

/// [`alone`]'s server: always an embedded one, also when the shared server
/// is given as a URL (a second server is what isolates the sweeping tests).
fn alone_server_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| start_server(&alone_server_dir()))
}

fn start_server(dir: &Path) -> String {
    let out = Command::new(bin())
        .args(["server", "start", "--json"])
        .env("MIGSNAP_SERVER_DIR", dir)
        .env_remove("MIGSNAP_SERVER_URL")
        .output()
        .expect("run migsnap server start");
    assert!(
        out.status.success(),
        "server start in {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("server start --json");
    v["url"].as_str().expect("url").to_string()
}

/// This test's turn on a server of its own, until the guard is dropped;
/// call it before making a [`Project`] (a project keeps the server it was
/// made on). For the tests that act on the whole server: `gc` sweeps every
/// dead build, scratch clone, pool member and restore role on it, which
/// would take another test's planted leftovers from under it (and another
/// test's leftovers would show in its own report); a count of the scratch
/// clones on the server counts everyone's; a session on `template1` makes
/// every `CREATE DATABASE` on the server wait, then fail. Such tests take
/// turns on their server; every other test runs beside them, never on it.
pub fn alone() -> Alone {
    static TURN: Mutex<()> = Mutex::new(());
    // A test that failed holding the turn leaves nothing the next needs.
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    ALONE.with(|a| a.set(true));
    Alone { _turn: turn }
}

/// See [`alone`].
pub struct Alone {
    _turn: MutexGuard<'static, ()>,
}

impl Drop for Alone {
    fn drop(&mut self) {
        ALONE.with(|a| a.set(false));
    }
}

/// psql against the test server, failing the test on error.
pub fn psql(db: &str, sql: &str) -> String {
    let out = psql_output(db, sql);
    assert!(
        out.status.success(),
        "psql {db}: {sql}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn psql_output(db: &str, sql: &str) -> Output {
    psql_output_at(server_url(), db, sql)
}

fn psql_output_at(server: &str, db: &str, sql: &str) -> Output {
    Command::new("psql")
        .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(db_url_at(server, db))
        .args(["-c", sql])
        .output()
        .expect("run psql")
}

/// The server URL with its database replaced.
pub fn db_url(db: &str) -> String {
    db_url_at(server_url(), db)
}

fn db_url_at(url: &str, db: &str) -> String {
    let (head, query) = url
        .split_once('?')
        .map(|(h, q)| (h, Some(q)))
        .unwrap_or((url, None));
    let base = head.rsplit_once('/').map(|(b, _)| b).unwrap_or(head);
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

pub fn database_exists(db: &str) -> bool {
    psql(
        "postgres",
        &format!("SELECT count(*) FROM pg_database WHERE datname = '{db}'"),
    ) == "1"
}

/// pg_dump --schema-only, minus the lines that differ between any two dumps
/// (pg_dump >= 15.14 writes a random \restrict key).
pub fn schema(db: &str) -> String {
    let out = Command::new("pg_dump")
        .args(["--schema-only", "--no-owner", "--no-privileges", "-d"])
        .arg(db_url(db))
        .output()
        .expect("run pg_dump");
    assert!(
        out.status.success(),
        "pg_dump {db}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split('\n')
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every row of every table in `public`, order-independent, without the
/// columns that legitimately differ between equivalent builds (serial ids
/// and the applied timestamp).
pub fn data(db: &str) -> String {
    rows_without(db, &["id", "applied", "content_type_id"])
}

/// Every row of every table in `public` with every column but
/// `django_migrations.applied` (a timestamp): for builds that must agree
/// even on the ids they handed out (the same migrations applied from the
/// same start).
pub fn exact_data(db: &str) -> String {
    rows_without(db, &["applied"])
}

/// One psql for all tables: a session-temporary function (gone with the
/// session, so never in a schema dump) aggregates each table's rows, less
/// the columns `dropped`.
fn rows_without(db: &str, dropped: &[&str]) -> String {
    let minus: String = dropped.iter().map(|c| format!(" - ''{c}''")).collect();
    psql(
        db,
        &format!(
            "CREATE FUNCTION pg_temp.migsnap_rows(t text) RETURNS text LANGUAGE plpgsql AS $f$ \
             DECLARE r text; BEGIN EXECUTE format('SELECT coalesce(jsonb_agg(j ORDER BY j::text), ''[]'')::text \
             FROM (SELECT to_jsonb(x){minus} AS j FROM public.%I x) s', t) \
             INTO r; RETURN r; END $f$; \
             SELECT tablename || ': ' || pg_temp.migsnap_rows(tablename) FROM pg_tables \
             WHERE schemaname = 'public' ORDER BY tablename"
        ),
    )
}

pub fn django_migrations(db: &str) -> Vec<String> {
    psql(
        db,
        "SELECT app || '.' || name FROM django_migrations ORDER BY app, name",
    )
    .lines()
    .map(String::from)
    .collect()
}

/// The crash and pause tests need migsnap built with its test points; a
/// plain `cargo test` would otherwise see runs that never crash.
#[allow(clippy::assertions_on_constants)] // constant per build, on purpose
pub fn require_failpoints() {
    assert!(
        cfg!(feature = "failpoints"),
        "this test needs migsnap's crash points: run `cargo test --features failpoints` (scripts/test.sh does)"
    );
}

/// What a plain `migrate` builds for a project: what every snapshot must equal.
pub struct Reference {
    schema: String,
    migrations: Vec<String>,
    data: String,
    exact: String,
}

impl Reference {
    /// What a plain migrate builds from `p`'s files as they are now. For
    /// the example project exactly as shipped (most tests start from it; a
    /// plain migrate is the slowest step of the suite) it is made once per
    /// test process; any other state of the files is migrated afresh, since
    /// its settings may read files outside the project that no digest here
    /// would see.
    pub fn of(p: &Project) -> std::sync::Arc<Reference> {
        static PRISTINE: OnceLock<Mutex<Option<std::sync::Arc<Reference>>>> = OnceLock::new();
        static SHIPPED: OnceLock<String> = OnceLock::new();
        let shipped = SHIPPED.get_or_init(|| files_digest(&repo().join("tests/example")));
        let pristine = files_digest(p.path()) == *shipped;
        let memo = PRISTINE.get_or_init(Default::default);
        if pristine {
            if let Some(r) = memo.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                return r.clone();
            }
        }
        let db = p.db("ref");
        p.plain_migrate(&db);
        let r = std::sync::Arc::new(Reference::read(&db));
        if pristine {
            *memo.lock().unwrap_or_else(|e| e.into_inner()) = Some(r.clone());
        }
        r
    }

    /// What `db` holds now: the reference for a result made some other
    /// way than one plain migrate (e.g. a plain migrate in two steps, as an
    /// incremental build is made).
    pub fn read(db: &str) -> Reference {
        Reference {
            schema: schema(db),
            migrations: django_migrations(db),
            data: data(db),
            exact: exact_data(db),
        }
    }

    pub fn check(&self, db: &str, context: &str) {
        assert_eq!(schema(db), self.schema, "{context}: schema differs");
        assert_eq!(
            django_migrations(db),
            self.migrations,
            "{context}: django_migrations differs"
        );
        assert_eq!(data(db), self.data, "{context}: rows differ");
    }

    /// `check`, and the rows with their ids too (`exact_data`).
    pub fn check_exact(&self, db: &str, context: &str) {
        self.check(db, context);
        assert_eq!(
            exact_data(db),
            self.exact,
            "{context}: rows or their ids differ"
        );
    }
}

/// Every file under `dir` (paths and contents), but bytecode caches and
/// migsnap's own config (each test sets its own key salt there), which a
/// plain migrate does not read.
fn files_digest(dir: &Path) -> String {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in rd.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if name == "__pycache__"
                || name == "migsnap.toml"
                || path.extension().is_some_and(|e| e == "pyc")
            {
                continue;
            }
            if path.is_dir() {
                walk(&path, root, out);
            } else if let Ok(bytes) = std::fs::read(&path) {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                out.push((rel.to_string_lossy().into_owned(), bytes));
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files);
    files.sort();
    let mut all = Vec::new();
    for (rel, bytes) in files {
        all.extend_from_slice(format!("{}:{rel}:{}\n", rel.len(), bytes.len()).as_bytes());
        all.extend_from_slice(&bytes);
    }
    migsnap::hash::hash_normalized(&all)
}

/// `python -m pytest` with migsnap's plugin (and no cache dir of pytest's
/// own in the project), for [`Project::python_cmd`].
pub const PYTEST_WITH_PLUGIN: [&str; 6] = [
    "-m",
    "pytest",
    "-p",
    "migsnap.pytest_plugin",
    "-p",
    "no:cacheprovider",
];

/// A migration to add on top of the example project: one field and one
/// RunSQL index, so incremental builds have schema and index work to do.
pub const NEW_MIGRATION: &str = r#"from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("catalog", "0004_product_is_active")]
    operations = [
        migrations.AddField("product", "note", models.TextField(blank=True, default="")),
        migrations.RunSQL(
            "CREATE INDEX catalog_product_note_idx ON catalog_product (note)",
            "DROP INDEX catalog_product_note_idx",
        ),
    ]
"#;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A private copy of a Django project with its own cache dir and key salt.
pub struct Project {
    pub dir: tempfile::TempDir,
    pub cache: tempfile::TempDir,
    /// The user's data dir for this test (`XDG_DATA_HOME`): where its
    /// per-user signing key is made. No test writes the real user's key.
    pub data_home: tempfile::TempDir,
    pub name: String,
    /// The server it was made on (see [`alone`]): its commands and its
    /// cleanup go there, whatever thread drops it.
    server: &'static str,
    created: Mutex<Vec<String>>,
}

impl Project {
    /// Copy of tests/example, salted with the test's name.
    pub fn example(test: &str) -> Project {
        Self::copy_of(&repo().join("tests/example"), test)
    }

    pub fn copy_of(src: &Path, test: &str) -> Project {
        let dir = tempfile::Builder::new()
            .prefix("migsnap-proj-")
            .tempdir()
            .expect("tempdir");
        copy_dir(src, dir.path());
        let name = format!(
            "{test}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        std::fs::write(
            dir.path().join("migsnap.toml"),
            format!("key-salt = \"{name}\"\n"),
        )
        .expect("write config");
        let cache = tempfile::Builder::new()
            .prefix("migsnap-cache-")
            .tempdir()
            .expect("tempdir");
        let data_home = tempfile::Builder::new()
            .prefix("migsnap-data-")
            .tempdir()
            .expect("tempdir");
        Project {
            dir,
            cache,
            data_home,
            name,
            server: server_url(),
            created: Mutex::new(Vec::new()),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// What this project's background `maintain` runs said (their log in
    /// the cache dir), for a failing test's message.
    pub fn maintain_log(&self) -> String {
        std::fs::read_to_string(self.cache.path().join("maintain.log")).unwrap_or_default()
    }

    /// Wait until no background `maintain` of this project runs (found by
    /// its command line naming this cache dir), so that what it did can be
    /// asserted exactly rather than polled for: a member marked is not yet
    /// a maintenance finished (its lock is still held a moment).
    pub fn wait_for_maintenance(&self) {
        let cache = self.cache.path().as_os_str().as_encoded_bytes().to_vec();
        let migsnap = bin().canonicalize().expect("the migsnap binary");
        // A process is ours while its arguments name this cache dir; or,
        // for a moment, while it execs migsnap with no arguments to read
        // yet: `prepare` spawns the maintenance with posix_spawn, which
        // returns once the child has left the parent's memory, before the
        // kernel has set up its new arguments. A scan in that window saw
        // no maintenance and the test went on while it ran (CI, under
        // load: "the old key's pool is dropped" with the maintenance's
        // log showing it had just started).
        let running = || {
            std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| Some((std::fs::read(e.path().join("cmdline")).ok()?, e.path())))
                .any(|(cmd, proc)| {
                    let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
                    let ours = args.contains(&&b"maintain"[..])
                        && args
                            .windows(2)
                            .any(|w| w[0] == b"--cache-dir" && w[1] == cache);
                    let starting = cmd.is_empty()
                        && std::fs::read_link(proc.join("exe")).ok() == Some(migsnap.clone());
                    ours || starting
                })
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
        while running() {
            assert!(
                std::time::Instant::now() < deadline,
                "the background maintenance never ended; its log:\n{}",
                self.maintain_log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// A database name unique to this test, remembered for cleanup.
    pub fn db(&self, suffix: &str) -> String {
        let n = format!("test_{}_{suffix}", self.name);
        assert!(n.len() <= 63, "test database name too long: {n}");
        self.track(&n);
        n
    }

    pub fn track(&self, db: &str) {
        self.created.lock().expect("lock").push(db.to_string());
    }

    /// `migsnap ARGS` in the project, against the test server.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .current_dir(self.path())
            .env("MIGSNAP_SERVER_URL", self.server)
            .env("MIGSNAP_CACHE_DIR", self.cache.path())
            .env("MIGSNAP_PYTHON", python())
            .env_remove("DJANGO_SETTINGS_MODULE")
            .env_remove("VIRTUAL_ENV");
        self.isolate_keys(&mut c);
        c
    }

    /// This test's own signing key and trust settings, whatever the
    /// environment running the suite says.
    pub fn isolate_keys(&self, c: &mut Command) {
        c.env("XDG_DATA_HOME", self.data_home.path())
            .env_remove("MIGSNAP_SIGNING_KEY_FILE")
            .env_remove("MIGSNAP_TRUSTED_KEYS")
            .env_remove("MIGSNAP_TRUST_UNSIGNED");
    }

    /// The per-user signing key's file for this test (made on first use).
    pub fn user_key_file(&self) -> PathBuf {
        self.data_home.path().join("migsnap/keys/signing-key")
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run migsnap")
    }

    /// `prepare --json`, asserting success; returns the JSON result.
    pub fn prepare(&self, db: &str) -> Value {
        self.track(db);
        let out = self.run(&["prepare", "--database", db, "--json"]);
        assert!(
            out.status.success(),
            "prepare {db} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("prepare --json prints JSON");
        self.track(&template_of(&v));
        v
    }

    pub fn key(&self) -> String {
        Self::key_output(self.cmd(&["key"]))
    }

    /// The key as a run with `DJANGO_SETTINGS_MODULE=module` sees it (the
    /// settings module is part of the key; pytest-django exports the ini's).
    pub fn key_with_settings(&self, module: &str) -> String {
        let mut c = self.cmd(&["key"]);
        c.env("DJANGO_SETTINGS_MODULE", module);
        Self::key_output(c)
    }

    fn key_output(mut c: Command) -> String {
        let out = c.output().expect("run migsnap key");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Plain `manage.py migrate` into a fresh database: the reference result.
    pub fn plain_migrate(&self, db: &str) {
        self.track(db);
        psql("postgres", &format!("DROP DATABASE IF EXISTS \"{db}\""));
        psql("postgres", &format!("CREATE DATABASE \"{db}\""));
        self.migrate_on(db);
    }

    /// Plain `manage.py migrate` into `db` as it is (a plain migrate done
    /// in steps, as an incremental build is made).
    pub fn migrate_on(&self, db: &str) {
        let out = Command::new(python())
            .args(["manage.py", "migrate", "--noinput", "-v", "0"])
            .current_dir(self.path())
            .envs(libpq_env(db))
            .output()
            .expect("run manage.py migrate");
        assert!(
            out.status.success(),
            "plain migrate failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `lines` added to its migsnap.toml (after the key salt it holds).
    pub fn add_config(&self, lines: &str) {
        let path = self.path().join("migsnap.toml");
        let mut text = std::fs::read_to_string(&path).expect("read config");
        text.push_str(lines);
        std::fs::write(&path, text).expect("write config");
    }

    /// The venv's Python in the project, with migsnap's Python package
    /// from the source tree (its pytest plugin, its test runner) calling
    /// the binary `migsnap` with this test's server and cache; the example
    /// settings take the database NAME from PGDATABASE, this test's name.
    pub fn python_cmd(&self, migsnap: &Path) -> Command {
        let mut c = Command::new(python());
        c.current_dir(self.path())
            .env("PYTHONPATH", repo().join("python"))
            .env("MIGSNAP_BIN", migsnap)
            .env("MIGSNAP_SERVER_URL", server_url())
            .env("MIGSNAP_CACHE_DIR", self.cache.path())
            .envs(libpq_env(&self.name))
            .env_remove("DJANGO_SETTINGS_MODULE")
            .env_remove("MIGSNAP_PYTHON");
        self.isolate_keys(&mut c);
        c
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        // No background `maintain` of this test outlives it: on the shared
        // server it would still be making and dropping databases while the
        // next test that acts on the whole server takes its turn.
        if !std::thread::panicking() {
            self.wait_for_maintenance();
        }
        let dbs = self.created.lock().map(|v| v.clone()).unwrap_or_default();
        if std::thread::panicking() {
            eprintln!(
                "test failed: kept databases {dbs:?} on {} and project {}",
                self.server,
                self.dir.path().display()
            );
            let _ = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir")).keep();
            return;
        }
        for db in dbs {
            let _ = psql_output_at(
                self.server,
                "postgres",
                &format!("UPDATE pg_database SET datistemplate = false WHERE datname = '{db}'"),
            );
            let _ = psql_output_at(
                self.server,
                "postgres",
                &format!("DROP DATABASE IF EXISTS \"{db}\""),
            );
        }
    }
}

pub fn template_of(prepare: &Value) -> String {
    template_name(prepare["key"].as_str().expect("key"))
}

/// The key a `prepare --json` result names.
pub fn key_of(prepare: &Value) -> String {
    prepare["key"].as_str().expect("key").to_string()
}

/// The example project after one `prepare` of its database `t`, where the
/// cache and trust tests start from before they damage or plant something:
/// (the project, what a plain migrate of it builds, `t`, the key).
pub fn built_example(test: &str) -> (Project, std::sync::Arc<Reference>, String, String) {
    let p = Project::example(test);
    let reference = Reference::of(&p);
    let db = p.db("t");
    let key = key_of(&p.prepare(&db));
    (p, reference, db, key)
}

/// [`built_example`], then its template dropped, as on a machine that has
/// only the cache dir: the next `prepare` restores the dump.
pub fn built_elsewhere(test: &str) -> (Project, std::sync::Arc<Reference>, String, String) {
    let (p, reference, db, key) = built_example(test);
    drop_template(&key);
    (p, reference, db, key)
}

/// migsnap's own name shapes (`migsnap::names`), so the tests cannot drift
/// from them.
pub fn template_name(key: &str) -> String {
    migsnap::names::DbName::template(&parse_key(key)).to_string()
}

pub fn build_name(key: &str) -> String {
    migsnap::names::DbName::build(&parse_key(key)).to_string()
}

/// A key migsnap printed; panics (failing the test) on anything else.
pub fn parse_key(key: &str) -> migsnap::key::Key {
    migsnap::key::Key::parse(key).unwrap_or_else(|e| panic!("{e}"))
}

/// The key's short form, as migsnap shows it and names databases with.
pub fn short(key: &str) -> String {
    parse_key(key).short().to_string()
}

/// The advisory lock a live migsnap building `key` holds.
pub fn lock_id(key: &str) -> i64 {
    parse_key(key).lock_id().0
}

/// The comment `prepare` puts on a database it made from `key`'s snapshot.
pub fn clone_mark(key: &str) -> String {
    migsnap::pg::mark::Mark::Clone { short: short(key) }.encode()
}

/// The template a clone was made from, read from the clone's comment;
/// panics (failing the test) on a comment that is no clone's mark.
pub fn template_of_clone_mark(comment: &str) -> String {
    use migsnap::pg::mark::Mark;
    match Mark::parse(comment) {
        Some(Mark::Clone { short }) => migsnap::names::DbName::Template(short).to_string(),
        other => panic!("not a clone's mark: {comment:?} ({other:?})"),
    }
}

/// The role a restore of `key`'s dump runs as (`migsnap_restore_<short>`).
pub fn restore_role_name(key: &str) -> String {
    migsnap::pg::admin::restore_role_name(&build_name(key))
}

/// PGHOST & co. for the test server and `db` (the example settings read them).
pub fn libpq_env(db: &str) -> Vec<(String, String)> {
    let (host, port, user) = split_url(server_url());
    vec![
        ("PGHOST".into(), host),
        ("PGPORT".into(), port),
        ("PGUSER".into(), user),
        ("PGDATABASE".into(), db.into()),
    ]
}

/// host, port, user from the URLs this harness deals with: the embedded
/// server's `postgresql://user@/db?host=…&port=…` or `postgresql://user[:pw]@host:port/db`.
fn split_url(url: &str) -> (String, String, String) {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (auth, hostpart) = main.split_once('@').unwrap_or(("", main));
    let user = auth.split(':').next().unwrap_or("").to_string();
    let hostport = hostpart.split('/').next().unwrap_or("");
    let (mut host, mut port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.to_string()),
        None => (hostport.to_string(), "5432".to_string()),
    };
    for kv in query.split('&') {
        if let Some((k, v)) = kv.split_once('=') {
            let v = v.replace("%2F", "/");
            match k {
                "host" => host = v,
                "port" => port = v,
                _ => {}
            }
        }
    }
    (host, port, user)
}

pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for e in std::fs::read_dir(src).expect("read_dir") {
        let e = e.expect("entry");
        let name = e.file_name();
        if name == "__pycache__" {
            continue;
        }
        let to = dst.join(&name);
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).expect("copy");
        }
    }
}

/// `migsnap ARGS` in `p`, asserting success; its stdout as one JSON document.
pub fn json_of(p: &Project, args: &[&str]) -> Value {
    let out = p.run(args);
    assert!(out.status.success(), "migsnap {args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("one JSON document on stdout")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Drop the template of `key` (the cached dump stays): the next `prepare`
/// restores from the cache.
pub fn drop_template(key: &str) {
    let t = template_name(key);
    psql(
        "postgres",
        &format!("UPDATE pg_database SET datistemplate = false WHERE datname = '{t}'"),
    );
    psql("postgres", &format!("DROP DATABASE IF EXISTS \"{t}\""));
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The name of `key`'s dump `dump` in a snapshot store.
pub fn store_dump_name(key: &str, dump: &[u8]) -> String {
    migsnap::remote::Remote::dump_name(&parse_key(key), &sha256_hex(dump))
}

/// Write `bytes` as the dump of `key` and update its manifest's sha256 and
/// size to match, as someone (or something) rewriting both would.
pub fn replace_dump_keeping_manifest_in_step(dir: &Path, key: &str, bytes: &[u8]) {
    std::fs::write(dir.join(format!("{key}.sql.zst")), bytes).expect("write");
    let mpath = dir.join(format!("{key}.json"));
    let mut m: Value = serde_json::from_slice(&std::fs::read(&mpath).expect("read")).expect("json");
    m["dump"]["sha256"] = sha256_hex(bytes).into();
    m["dump"]["size"] = bytes.len().into();
    std::fs::write(&mpath, serde_json::to_vec(&m).expect("json")).expect("write");
}

/// Put `sql` in front of the cached dump of `key`, recompress it and
/// recompute the manifest's checksum, as someone with write access to the
/// cache dir would.
pub fn plant(cache: &Path, key: &str, sql: &str) {
    let path = cache.join(format!("{key}.sql.zst"));
    let dump = zstd::decode_all(&std::fs::read(&path).expect("read dump")[..]).expect("decode");
    let mut text = sql.as_bytes().to_vec();
    text.extend_from_slice(&dump);
    let bytes = zstd::encode_all(&text[..], 3).expect("encode");
    replace_dump_keeping_manifest_in_step(cache, key, &bytes);
}

// ---- the S3-compatible test server (scripts/s3_server.sh) ----

/// Where the snapshot-store tests' S3 server is: scripts/test.sh starts it
/// (`scripts/s3_server.sh start DIR` prints these variables for a run of
/// one test file).
pub struct S3 {
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
}

pub fn s3() -> S3 {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: run the suite with scripts/test.sh, or \
                 `eval \"$(scripts/s3_server.sh start /tmp/migsnap-s3)\"` first"
            )
        })
    };
    S3 {
        endpoint: var("MIGSNAP_TEST_S3_ENDPOINT"),
        bucket: var("MIGSNAP_TEST_S3_BUCKET"),
        access_key: var("MIGSNAP_TEST_S3_ACCESS_KEY"),
        secret_key: var("MIGSNAP_TEST_S3_SECRET_KEY"),
    }
}

/// The backend environment that reaches the test server. Always complete:
/// without credentials the S3 client would ask a cloud metadata address.
pub fn s3_env() -> Vec<(String, String)> {
    let s = s3();
    s3_env_with(&s.endpoint, &s.access_key, &s.secret_key)
}

pub fn s3_env_with(endpoint: &str, access_key: &str, secret_key: &str) -> Vec<(String, String)> {
    vec![
        ("AWS_ENDPOINT_URL".into(), endpoint.into()),
        ("AWS_ACCESS_KEY_ID".into(), access_key.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), secret_key.into()),
        ("AWS_REGION".into(), "us-east-1".into()),
    ]
}

/// The backend environment of a store that is down: a loopback port
/// nobody listens on, with valid credentials.
pub fn s3_env_down() -> Vec<(String, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let s = s3();
    s3_env_with(
        &format!("http://127.0.0.1:{port}"),
        &s.access_key,
        &s.secret_key,
    )
}

/// A store URL of its own for a test: an empty prefix in the test bucket.
pub fn s3_url(test: &str) -> String {
    format!(
        "s3://{}/{test}-{}-{}",
        s3().bucket,
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// The test store's objects as the server holds them, to tamper with like
/// a broken disk or a hostile writer would: the client and the prefix of
/// the `s3://` URL `url`.
pub fn s3_raw(
    url: &str,
) -> (
    std::sync::Arc<dyn object_store::ObjectStore>,
    object_store::path::Path,
) {
    // The TLS provider migsnap installs for itself (see remote::transfer).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let s = s3();
    let (bucket, prefix) = url
        .strip_prefix("s3://")
        .and_then(|r| r.split_once('/'))
        .expect("s3 url");
    let store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_endpoint(&s.endpoint)
        .with_allow_http(true)
        .with_access_key_id(&s.access_key)
        .with_secret_access_key(&s.secret_key)
        .with_region("us-east-1")
        .build()
        .expect("raw client");
    (
        std::sync::Arc::new(store),
        object_store::path::Path::from(prefix),
    )
}

/// `migsnap ARGS` in `p` with the snapshot store at `url` (reached with
/// `env`) and the cache dir `cache`: what the shared-store tests run.
pub fn store_cmd(
    p: &Project,
    cache: &Path,
    url: &str,
    env: &[(String, String)],
    args: &[&str],
) -> Command {
    let mut c = p.cmd(args);
    c.env("MIGSNAP_CACHE_DIR", cache).env("MIGSNAP_REMOTE", url);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// `prepare --json` of `db` with the snapshot store at `url` (reached with
/// `env`) and the cache dir `cache`, asserting success: (result, stderr).
pub fn store_prepare(
    p: &Project,
    cache: &Path,
    url: &str,
    env: &[(String, String)],
    db: &str,
) -> (Value, String) {
    p.track(db);
    let out = succeeded(
        store_cmd(p, cache, url, env, &["prepare", "--database", db, "--json"])
            .output()
            .expect("run"),
        "prepare",
    );
    let v = json_out(&out);
    p.track(&template_of(&v));
    (v, stderr(&out))
}

/// `out`, after asserting that `what` succeeded (its stderr shown if not).
#[track_caller]
pub fn succeeded(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        stderr(&out)
    );
    out
}

/// The one JSON document a command printed on stdout.
pub fn json_out(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("one JSON document on stdout")
}

/// [`succeeded`], then (the JSON document on stdout, stderr): for the
/// `--json` runs whose warnings a test reads too.
#[track_caller]
pub fn succeeded_json(out: Output, what: &str) -> (Value, String) {
    let out = succeeded(out, what);
    (json_out(&out), stderr(&out))
}

/// Run `cmd` (a `prepare --json`), asserting success: (its result, its
/// stderr).
#[track_caller]
pub fn prepare_json(cmd: &mut Command) -> (Value, String) {
    succeeded_json(cmd.output().expect("run migsnap"), "prepare")
}

/// Run `cmd` with the crash point `point` (`MIGSNAP_CRASH_AT`): it must
/// die there by SIGKILL, or the crash the test is about never happened.
#[track_caller]
pub fn killed_at(mut cmd: Command, point: &str) {
    let out = cmd
        .env("MIGSNAP_CRASH_AT", point)
        .output()
        .expect("run migsnap");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(9),
        "{point}: the crash point was not reached ({}):\n{}",
        out.status,
        stderr(&out)
    );
}

/// Read `child`'s stderr until it says `what` (a pause point's "paused at
/// `…`", a "waiting for…"); what it said so far, and a thread that keeps
/// reading the rest (so the child never blocks on a full pipe) and
/// returns it.
pub fn stderr_until(
    child: &mut std::process::Child,
    what: &str,
) -> (String, std::thread::JoinHandle<String>) {
    use std::io::{BufRead, Read};
    let mut lines = std::io::BufReader::new(child.stderr.take().expect("stderr piped"));
    let mut seen = String::new();
    while !seen.contains(what) {
        let mut line = String::new();
        if lines.read_line(&mut line).expect("read stderr") == 0 {
            panic!("never said `{what}`: {seen}");
        }
        seen.push_str(&line);
    }
    let rest = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = lines.read_to_string(&mut rest);
        rest
    });
    (seen, rest)
}

/// Start `cmd` with stdout and stderr piped, returned once its stderr says
/// `what`: the child, what it said so far, and the reader of the rest
/// (see [`stderr_until`]).
pub fn spawn_until(
    mut cmd: Command,
    what: &str,
) -> (std::process::Child, String, std::thread::JoinHandle<String>) {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let (seen, rest) = stderr_until(&mut child, what);
    (child, seen, rest)
}

/// A migsnap run stopped at a pause point (`MIGSNAP_PAUSE_AT`).
pub struct Paused {
    pub child: std::process::Child,
    /// What it said on stderr up to the pause.
    pub said: String,
    /// The rest of its stderr, read meanwhile.
    pub rest: std::thread::JoinHandle<String>,
    go: PathBuf,
}

impl Paused {
    /// Let it go on past the pause.
    pub fn go_on(&self) {
        std::fs::write(&self.go, "").expect("release the pause");
    }
}

impl Project {
    /// Start `cmd` (from `Project::cmd`) with stdout and stderr piped and
    /// wait until it pauses at the failpoint `point`.
    pub fn spawn_paused(&self, mut cmd: Command, point: &str) -> Paused {
        let go = self.cache.path().join(format!("go-{point}"));
        let mut child = cmd
            .env("MIGSNAP_PAUSE_AT", format!("{point}:{}", go.display()))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let (said, rest) = stderr_until(&mut child, &format!("paused at `{point}`"));
        Paused {
            child,
            said,
            rest,
            go,
        }
    }
}

/// The findings of one rule in a `lint --json` document.
pub fn findings_of_rule(v: &Value, rule: &str) -> Vec<Value> {
    v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["rule"] == rule)
        .cloned()
        .collect()
}
