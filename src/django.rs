//! Run the project's Django (its own interpreter, its own manage.py) through
//! a small shim, pointed at a database migsnap chose, and follow its progress.
//!
//! The shim is embedded in the binary (`django/shim.py`) and passed with
//! `python -c`, so nothing is installed into the user's environment.

use crate::context::DjangoRunner;
use crate::depends::ShimInputs;
use crate::error::{Error, Kind, Result};
use crate::pg::ConnInfo;
use crate::report::{self, Events};
use crate::units;
use serde::Deserialize;
use std::collections::VecDeque;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

mod settings_text;
pub use settings_text::migration_module_dirs;

const SHIM: &str = include_str!("django/shim.py");
/// Lines of Django's output kept for the error report.
const STDERR_TAIL: usize = 60;
/// How many of the slowest migrations to list after a run.
const SLOWEST: usize = 5;
/// Round trips above which a migration is flagged as working row by row
/// (a RunPython loop of `get_or_create`/`save` rather than set-based SQL or
/// `bulk_create`): the usual reason a data migration takes hours.
pub const ROW_BY_ROW: u64 = 1000;

#[derive(Debug, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Event {
    Ready {
        settings: String,
        django: String,
    },
    Plan {
        migrations: Vec<String>,
    },
    Start {
        migration: String,
    },
    Done {
        migration: String,
        seconds: f64,
        #[serde(default)]
        statements: u64,
        #[serde(default)]
        round_trips: u64,
    },
    /// `at` mode's answer: the index of the candidate to start from.
    AtBase {
        index: Option<usize>,
    },
    /// A migration unapplied (`migrate` to a target behind what an
    /// earlier target applied).
    Undone {
        migration: String,
    },
    /// The running migration's counts so far (at most every 0.5 s).
    Queries {
        round_trips: u64,
    },
    Error {
        r#type: String,
        message: String,
        #[serde(default)]
        category: Failure,
    },
    Created {
        models: usize,
        /// Index names the migration state declares more than once with
        /// different definitions (older shims did not report them).
        #[serde(default)]
        conflicts: Vec<IndexConflict>,
    },
    Inputs(Box<ShimInputs>),
    /// `plan` mode's answer.
    Insight(Box<Insight>),
    /// `trace` mode's answer.
    Trace(Box<Trace>),
    /// `aliases` mode's answer.
    Aliases {
        aliases: Vec<crate::aliases::AliasInfo>,
    },
    /// `migrate` mode with `MIGSNAP_ACCELERATE`: whether django-fastmig
    /// patched Django's migration state before migrating (`active`), and
    /// if not, why (`missing`: the import failed).
    Accelerator {
        active: bool,
        #[serde(default)]
        missing: Option<String>,
        /// The version found, when it is not one migsnap was checked
        /// against (the shim's `ACCELERATOR_VERSIONS`): not used.
        #[serde(default)]
        unsupported: Option<String>,
    },
    /// An accelerated `migrate` applied (or unapplied) `migration` with
    /// stock Django: it holds something django-fastmig does not know
    /// (`why`: a third-party operation, a package's relation field).
    Stock {
        migration: String,
        why: String,
    },
    Finished,
}

/// What `plan` mode reports (shim.py, `plan`): the migrations in the order
/// migrate would apply them, with their operations and SQL.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Insight {
    /// Rows of the connected database's django_migrations.
    pub database_applied: usize,
    /// What migrate would apply to the connected database, as `app.name`.
    pub pending: Vec<String>,
    pub migrations: Vec<PlannedMigration>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct PlannedMigration {
    pub app: String,
    pub name: String,
    pub path: Option<std::path::PathBuf>,
    pub atomic: bool,
    pub initial: bool,
    /// Recorded in the connected database's django_migrations.
    pub applied: bool,
    pub dependencies: Vec<String>,
    pub replaces: Vec<String>,
    pub operations: Vec<PlannedOperation>,
    /// Statements the schema editor ran at the end of the migration
    /// (deferred foreign keys and indexes); `None` without SQL.
    pub deferred_sql: Option<Vec<String>>,
    /// For each deferred statement, the index of the operation that
    /// deferred it (`None`: not known).
    #[serde(default)]
    pub deferred_operations: Option<Vec<Option<usize>>>,
    /// Everything collected for the migration, comments included: what
    /// `sqlmigrate` prints between its BEGIN/COMMIT.
    pub sql: Option<Vec<String>>,
    /// Whether `sqlmigrate` would wrap it in BEGIN/COMMIT.
    #[serde(default)]
    pub output_transaction: bool,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct PlannedOperation {
    pub index: usize,
    /// The class name: `AddField`, `RunPython`, `AddIndexConcurrently`…
    pub r#type: String,
    pub description: String,
    /// Its constructor arguments as the migration file spells them
    /// (positional ones as `_0`, `_1`…).
    pub arguments: std::collections::BTreeMap<String, String>,
    pub reversible: bool,
    pub reduces_to_sql: bool,
    /// The line of the operation in the file, when `operations` is a literal list.
    pub line: Option<u32>,
    /// The statements it produces; `None` when it cannot be written as SQL
    /// (RunPython) or SQL was not asked for.
    #[serde(default)]
    pub sql: Option<Vec<String>>,
    /// What Django raised collecting its SQL (what migrate would fail with).
    #[serde(default)]
    pub error: Option<String>,
}

/// What `trace` mode reports (shim.py, `trace`): the range applied to a
/// scratch database, each statement with what it locked and rewrote.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Trace {
    /// Synthetic rows asked for per table (`--rows`), if any.
    pub rows: Option<u64>,
    /// The tables filled before applying, or why one was not.
    pub seeded: Vec<Seeded>,
    pub migrations: Vec<TracedMigration>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Seeded {
    pub table: String,
    /// Rows inserted; `None`: skipped (see `skipped`).
    pub rows: Option<u64>,
    pub skipped: Option<String>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct TracedMigration {
    /// `app.name`.
    pub migration: String,
    pub path: Option<std::path::PathBuf>,
    pub atomic: bool,
    /// From its first statement to the end of its transaction (the commit),
    /// the time spent reading the locks left out.
    pub duration_ms: f64,
    pub operations: Vec<TracedOperation>,
    pub statements: Vec<TracedStatement>,
    /// Tables this migration created (they did not exist when the range
    /// started).
    pub new_tables: Vec<String>,
    /// Per table: the strongest lock and how long it was held (computed
    /// from the statements, `trace::summarize`).
    #[serde(default)]
    pub tables: Vec<TableLock>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct TracedOperation {
    pub index: usize,
    pub r#type: String,
    pub description: String,
    pub line: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct TracedStatement {
    pub sql: String,
    /// The operation it belongs to (the one that deferred it, for deferred
    /// SQL); `None`: the schema editor's own.
    pub operation: Option<usize>,
    /// When it started, from the start of the migration.
    pub at_ms: f64,
    pub duration_ms: f64,
    /// Locks it took that the transaction did not hold yet; `None` outside
    /// a transaction (a non-atomic migration), where they end with it.
    pub locks: Option<Vec<Lock>>,
    /// Tables whose file it replaced (`relfilenode` changed): rewritten.
    pub rewritten: Vec<String>,
    /// Rows an INSERT, UPDATE, DELETE, MERGE or COPY changed.
    pub rows: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Lock {
    pub relation: String,
    /// `table`, `index`, `sequence`…
    pub kind: String,
    pub mode: LockMode,
}

/// PostgreSQL's table lock modes, weakest first (the order of the table
/// "Conflicting Lock Modes" in its documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
pub enum LockMode {
    #[serde(rename = "ACCESS SHARE")]
    AccessShare,
    #[serde(rename = "ROW SHARE")]
    RowShare,
    #[serde(rename = "ROW EXCLUSIVE")]
    RowExclusive,
    #[serde(rename = "SHARE UPDATE EXCLUSIVE")]
    ShareUpdateExclusive,
    #[serde(rename = "SHARE")]
    Share,
    #[serde(rename = "SHARE ROW EXCLUSIVE")]
    ShareRowExclusive,
    #[serde(rename = "EXCLUSIVE")]
    Exclusive,
    #[serde(rename = "ACCESS EXCLUSIVE")]
    AccessExclusive,
}

impl LockMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::AccessShare => "ACCESS SHARE",
            LockMode::RowShare => "ROW SHARE",
            LockMode::RowExclusive => "ROW EXCLUSIVE",
            LockMode::ShareUpdateExclusive => "SHARE UPDATE EXCLUSIVE",
            LockMode::Share => "SHARE",
            LockMode::ShareRowExclusive => "SHARE ROW EXCLUSIVE",
            LockMode::Exclusive => "EXCLUSIVE",
            LockMode::AccessExclusive => "ACCESS EXCLUSIVE",
        }
    }
}

/// One table of a traced migration: the strongest lock the migration took
/// on it, from which statement, how long it held it.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
pub struct TableLock {
    pub table: String,
    pub strongest_lock: LockMode,
    /// The statement (index in `statements`) that first took it.
    pub statement: usize,
    /// From that statement's start to the end of the transaction.
    pub held_ms: f64,
    /// Some statement of the migration rewrote it.
    pub rewritten: bool,
    /// It existed before the range (not created by it).
    pub existed: bool,
}

/// A migration module Django loaded (the project's and third-party ones).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct MigrationFile {
    pub app: String,
    pub name: String,
    pub path: Option<std::path::PathBuf>,
}

/// One index name the migration state declares twice, differently: the
/// model-state database holds the first (`kept`), not the other.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct IndexConflict {
    pub schema: String,
    pub table: String,
    pub index: String,
    /// Django's `CREATE INDEX` for each declaration.
    pub kept: String,
    pub other: String,
}

/// What the shim can be asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `manage.py migrate`.
    Migrate,
    /// Create the schema the migration state declares (no migrations run).
    ModelState,
    /// Report the migrations that would run (or the named ones), their
    /// operations and SQL, over a read-only connection.
    Plan,
    /// Report the settings' DATABASES (no connection, nothing migrated).
    Aliases,
    /// `prepare --at`: resolve the targets and choose the snapshot to
    /// start from (no connection, nothing migrated).
    At,
    /// Apply the range to a scratch database, statement by statement,
    /// reading the locks and files after each.
    Trace,
}

pub use crate::store::Applied;

#[derive(Debug)]
pub struct MigrateReport {
    pub applied: Vec<Applied>,
    /// What Django read: every migration it loaded, the settings files, its
    /// version (see `depends`); empty in `plan` mode.
    pub inputs: ShimInputs,
    /// `plan` mode's answer.
    pub insight: Option<Box<Insight>>,
    /// `trace` mode's answer.
    pub trace: Option<Box<Trace>>,
    /// `aliases` mode's answer.
    pub aliases: Option<Vec<crate::aliases::AliasInfo>>,
    /// `at` mode's answer: the candidate to start from, if any.
    pub at_base: Option<Option<usize>>,
    /// Model-state mode: index names declared twice, differently.
    pub index_conflicts: Vec<IndexConflict>,
    /// `migrate` ran with django-fastmig installed (`build-accelerator`,
    /// and the project's environment has it).
    pub accelerated: bool,
    /// The migrations that accelerated `migrate` applied with stock Django
    /// (`Event::Stock`), in order, each once.
    pub stock: Vec<String>,
}

impl MigrateReport {
    /// The migration modules Django loaded (the project's and third-party ones).
    pub fn migration_files(&self) -> Vec<MigrationFile> {
        self.inputs
            .migrations
            .iter()
            .map(|m| MigrationFile {
                app: m.app.clone(),
                name: m.name.clone(),
                path: m.path.clone(),
            })
            .collect()
    }
}

/// Decides, once Django has loaded the migrations, whether the build may go
/// on (an incremental build checks that its base still fits): `Err(why)`
/// stops Django and fails the build as a history failure.
pub type InputsCheck<'a> = &'a (dyn Fn(&ShimInputs) -> std::result::Result<(), String> + Sync);

/// Told, once Django has started, whether django-fastmig is migrating
/// (`build-accelerator`): `verify-build` starts its stock build beside an
/// accelerated one only then.
pub type OnAccelerator<'a> = &'a (dyn Fn(bool) + Sync);

/// What a caller hears of a running shim before its report: the inputs
/// Django loaded (to refuse a build that would not fit), whether the
/// accelerator is on. None: nothing.
#[derive(Default, Clone, Copy)]
pub struct Hooks<'a> {
    pub inputs: Option<InputsCheck<'a>>,
    pub accelerator: Option<OnAccelerator<'a>>,
}

/// What kind of failure the shim reported. Decided in Python, with
/// `isinstance` and the connection's state (shim.py, `category_of`), never
/// by matching message text here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// The starting database does not fit these migrations
    /// (InconsistentMigrationHistory, NodeNotFoundError; a base the
    /// build's inputs check refused is `ShimError::Unfit`): an incremental
    /// build goes cold.
    History,
    /// The connection to PostgreSQL was lost or refused mid-run.
    Server,
    /// Raised before Django was set up: the settings or what they import.
    Settings,
    /// A migration raised (the default for anything unclassified).
    #[default]
    Migration,
    /// The settings send DATABASES['default'] somewhere other than the
    /// database migsnap chose.
    Elsewhere,
    /// The interpreter cannot import Django.
    Interpreter,
    /// DATABASES is unusable for migsnap (not PostgreSQL, no default alias).
    Configuration,
    /// This Django does not support this PostgreSQL server (too old).
    Unsupported,
    /// manage.py exited before (or instead of) migrating.
    Exit,
    /// A migration named on the command line does not exist.
    Target,
    /// A migration named to `trace` is already in the snapshot it starts
    /// from: there is nothing to apply.
    Applied,
    /// The settings' DATABASES has no such alias.
    Alias,
    /// A migration used another alias than the one being built: that
    /// alias still names a real database, which the build never touches.
    OtherAlias,
}

/// A failed Django run as data: the error's source, so the command layer
/// can pick the hint from `kind` (`commands::hints`).
#[derive(Debug, thiserror::Error)]
pub struct DjangoError {
    /// `migrate`, or building the model-state database.
    pub what: &'static str,
    pub kind: Failure,
    /// The Python exception's class name.
    pub exception: String,
    /// Its message's first line.
    pub message: String,
}

impl std::fmt::Display for DjangoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let DjangoError {
            what,
            exception,
            message,
            ..
        } = self;
        match self.kind {
            Failure::Server => write!(
                f,
                "{what} failed: the PostgreSQL server ended the connection: {exception}: {message}"
            ),
            // Nothing was migrated yet: the settings (or what they import)
            // are what the user has to fix, not a migration.
            Failure::Settings => write!(
                f,
                "the Django settings failed to load: {exception}: {message}"
            ),
            // The user's own words, refused before anything ran: the
            // exception's class (the shim's own) says nothing more.
            Failure::Target | Failure::Applied => write!(f, "{message}"),
            _ => write!(f, "{what} failed: {exception}: {message}"),
        }
    }
}

impl crate::error::Typed for DjangoError {
    fn kind(&self) -> Kind {
        match self.kind {
            Failure::Server => Kind::Server,
            Failure::Target | Failure::Applied | Failure::Alias => Kind::Usage,
            _ => Kind::Django,
        }
    }
}

/// Whether `error` says the starting database does not fit these
/// migrations (an incremental build then goes cold), as the shim or the
/// build's inputs check decided it; never read from the message.
pub fn is_history(error: &Error) -> bool {
    error
        .find::<DjangoError>()
        .is_some_and(|d| d.kind == Failure::History)
        || matches!(error.find::<ShimError>(), Some(ShimError::Unfit { .. }))
}

/// A run of the shim that failed other than by Django raising: the
/// build's inputs check refused the base (`Unfit`), or migsnap's own side
/// of the protocol broke (exit code 3).
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// The inputs check's `why`: the base no longer fits, so an
    /// incremental build goes cold, as on a `Failure::History`.
    #[error("{why}")]
    Unfit { why: String },
    /// `what`: the targets or the candidates handed to the shim.
    #[error("cannot serialise the {what}")]
    Serialise {
        what: &'static str,
        source: serde_json::Error,
    },
    /// The shim finished without the report its mode makes (`what`:
    /// plan, trace, aliases).
    #[error("the shim reported no {what}")]
    NoReport { what: &'static str },
    #[error("the shim chose no base")]
    NoBase,
    /// The child was spawned with pipes and has none (`which`).
    #[error("no {which} from python")]
    NoPipe { which: &'static str },
    #[error("python did not finish")]
    Wait(#[source] std::io::Error),
}

impl crate::error::Typed for ShimError {
    fn kind(&self) -> Kind {
        match self {
            ShimError::Unfit { .. } => Kind::Django,
            _ => Kind::Internal,
        }
    }
}

/// Django cannot be started at all: what is missing, as data (the binary
/// says how to fix it: `commands::hints`).
#[derive(Debug, thiserror::Error)]
pub enum NoDjango {
    #[error("no manage.py at `{}`", .0.display())]
    ManagePy(std::path::PathBuf),
    #[error("cannot run the Python interpreter `{}`", .python.display())]
    Interpreter {
        python: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// A warning: `build-accelerator` is on, but django-fastmig could not be
/// used in the project's interpreter; the build went on with stock Django.
#[derive(Debug, thiserror::Error)]
pub enum NoAccelerator {
    /// `import fastmig` failed.
    #[error(
        "build-accelerator is on but django-fastmig is not installed in the project's environment (`{}`: {why}); migrated with stock Django",
        .python.display()
    )]
    Missing {
        python: std::path::PathBuf,
        why: String,
    },
    /// It imported, but is a release migsnap was not checked against: the
    /// shim relies on its internals to run unknown operations stock.
    #[error(
        "build-accelerator is on but django-fastmig {version} (in `{}`) is not a release migsnap was checked against ({known}); migrated with stock Django",
        .python.display(),
        known = ACCELERATOR_VERSIONS
    )]
    Unsupported {
        python: std::path::PathBuf,
        version: String,
    },
}

/// The django-fastmig releases the shim uses (its `ACCELERATOR_VERSIONS`),
/// for messages.
pub const ACCELERATOR_VERSIONS: &str = "0.1.1";

impl crate::error::Typed for NoAccelerator {
    fn kind(&self) -> crate::error::Kind {
        crate::error::Kind::Usage
    }
}

impl crate::error::Typed for NoDjango {
    fn kind(&self) -> crate::error::Kind {
        crate::error::Kind::Usage
    }
}

/// The project's manage.py exists (else a usage error saying where we looked).
pub fn check_manage_py(django: &DjangoRunner) -> Result<()> {
    let manage = &django.manage_py;
    if !manage.is_file() {
        return Err(NoDjango::ManagePy(manage.clone()).into());
    }
    Ok(())
}

/// The settings module manage.py sets when DJANGO_SETTINGS_MODULE is unset:
/// the value of its one `os.environ.setdefault("DJANGO_SETTINGS_MODULE",
/// "…")` line, as `startproject` writes it. Read as text, never run. None when
/// there is no such line, more than one, or the value is not a dotted name:
/// then nothing is assumed.
///
/// The key uses it for "no module given", so that `migsnap prepare` from a
/// shell and the pytest plugin (pytest-django exports DJANGO_SETTINGS_MODULE
/// from pytest.ini) find the same snapshot when both mean the same module.
/// A wrong guess cannot serve a wrong database: a snapshot records the module
/// Django actually loaded and is rebuilt when it differs.
pub fn manage_py_settings_module(source: &str) -> Option<String> {
    const CALL: &str = "environ.setdefault(";
    let mut found = None;
    for line in source.lines() {
        let code = line.trim_start();
        let Some(at) = code.find(CALL).filter(|_| !code.starts_with('#')) else {
            continue;
        };
        let mut literals = string_literals(&code[at + CALL.len()..]);
        if literals.next().as_deref() != Some("DJANGO_SETTINGS_MODULE") {
            continue;
        }
        let module = literals.next()?;
        let dotted = module.split('.').all(|part| {
            part.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
        if !dotted || found.replace(module).is_some() {
            return None;
        }
    }
    found
}

/// The plain quoted strings of a line of Python, in order (no escapes: a
/// module name has none).
fn string_literals(code: &str) -> impl Iterator<Item = String> + '_ {
    let mut rest = code;
    std::iter::from_fn(move || {
        let start = rest.find(['"', '\''])?;
        let quote = rest[start..].chars().next()?;
        let body = &rest[start + 1..];
        let end = body.find(quote)?;
        rest = &body[end + 1..];
        Some(body[..end].to_string())
    })
}

/// `manage.py migrate` into `db`, with progress on stderr; with `targets`
/// (`app.name` or absolute file paths), `manage.py migrate APP NAME` to
/// each, one after another. The shim resolves them all before it migrates
/// anything: a target it does not know is a `Failure::Target`.
pub async fn migrate(
    django: &DjangoRunner,
    conn: &ConnInfo,
    db: &str,
    ui: &Events,
    hooks: Hooks<'_>,
    targets: &[String],
) -> Result<MigrateReport> {
    let mut env = vec![];
    if !targets.is_empty() {
        let targets = serde_json::to_string(targets).map_err(|source| ShimError::Serialise {
            what: "targets",
            source,
        })?;
        env.push(("MIGSNAP_MIGRATE_TARGETS", targets));
    }
    run_shim_checked(django, conn, db, Mode::Migrate, ui, hooks, &env).await
}

/// The migrations that would run against `db` (read only), or those
/// `targets` name (`app.name` or absolute file paths), with their
/// operations and, if `with_sql`, the SQL each produces.
pub async fn plan(
    django: &DjangoRunner,
    conn: &ConnInfo,
    db: &str,
    targets: &[String],
    with_sql: bool,
    ui: &Events,
) -> Result<Insight> {
    let targets = serde_json::to_string(targets).map_err(|source| ShimError::Serialise {
        what: "targets",
        source,
    })?;
    let env = [
        ("MIGSNAP_PLAN_TARGETS", targets),
        (
            "MIGSNAP_PLAN_SQL",
            if with_sql { "1" } else { "0" }.to_string(),
        ),
    ];
    let report = run_shim_checked(django, conn, db, Mode::Plan, ui, Hooks::default(), &env).await?;
    report
        .insight
        .map(|i| *i)
        .ok_or_else(|| ShimError::NoReport { what: "plan" }.into())
}

/// Apply `targets` (as `plan` takes them; empty: what migrate would run)
/// to `db`, a scratch database, and report each statement's locks,
/// rewrites, time and rows; with `rows`, fill the tables the range names
/// with that many synthetic rows first.
pub async fn trace(
    django: &DjangoRunner,
    conn: &ConnInfo,
    db: &str,
    targets: &[String],
    rows: Option<u64>,
    ui: &Events,
) -> Result<Trace> {
    let targets = serde_json::to_string(targets).map_err(|source| ShimError::Serialise {
        what: "targets",
        source,
    })?;
    let mut env = vec![("MIGSNAP_PLAN_TARGETS", targets)];
    if let Some(n) = rows {
        env.push(("MIGSNAP_TRACE_ROWS", n.to_string()));
    }
    let report =
        run_shim_checked(django, conn, db, Mode::Trace, ui, Hooks::default(), &env).await?;
    report
        .trace
        .map(|t| *t)
        .ok_or_else(|| ShimError::NoReport { what: "trace" }.into())
}

/// `prepare --at`: which of `candidates` (manifest files, their
/// django_migrations rows) `migrate` to `targets`, one after another,
/// reaches exactly as it does from an empty database, only applying
/// migrations (the one with the most rows); None: start from empty.
/// Django resolves the targets first: one it does not know is a
/// `Failure::Target`, before any database is made.
pub async fn choose_base(
    django: &DjangoRunner,
    conn: &ConnInfo,
    targets: &[String],
    candidates: &[std::path::PathBuf],
    ui: &Events,
) -> Result<Option<usize>> {
    let targets = serde_json::to_string(targets).map_err(|source| ShimError::Serialise {
        what: "targets",
        source,
    })?;
    let candidates = serde_json::to_string(candidates).map_err(|source| ShimError::Serialise {
        what: "candidates",
        source,
    })?;
    let env = [
        ("MIGSNAP_MIGRATE_TARGETS", targets),
        ("MIGSNAP_AT_CANDIDATES", candidates),
    ];
    let report = run_shim_checked(
        django,
        conn,
        "postgres",
        Mode::At,
        ui,
        Hooks::default(),
        &env,
    )
    .await?;
    report.at_base.ok_or_else(|| ShimError::NoBase.into())
}

/// The settings' DATABASES as Django's test setup sees them.
pub async fn aliases(
    django: &DjangoRunner,
    conn: &ConnInfo,
    ui: &Events,
) -> Result<Vec<crate::aliases::AliasInfo>> {
    let report = run_shim_checked(
        django,
        conn,
        "postgres",
        Mode::Aliases,
        ui,
        Hooks::default(),
        &[],
    )
    .await?;
    report
        .aliases
        .ok_or_else(|| ShimError::NoReport { what: "aliases" }.into())
}

/// Run the shim in `mode` against `db`.
pub async fn run_shim(
    django: &DjangoRunner,
    conn: &ConnInfo,
    db: &str,
    mode: Mode,
    ui: &Events,
) -> Result<MigrateReport> {
    run_shim_checked(django, conn, db, mode, ui, Hooks::default(), &[]).await
}

async fn run_shim_checked(
    django: &DjangoRunner,
    conn: &ConnInfo,
    db: &str,
    mode: Mode,
    ui: &Events,
    hooks: Hooks<'_>,
    extra_env: &[(&str, String)],
) -> Result<MigrateReport> {
    check_manage_py(django)?;
    let manage = &django.manage_py;
    let mut cmd = Command::new(&django.python);
    cmd.arg("-c")
        .arg(SHIM)
        .arg(manage)
        .current_dir(manage.parent().unwrap_or(&django.project_dir))
        .env(
            "MIGSNAP_MODE",
            match mode {
                Mode::Migrate => "migrate",
                Mode::ModelState => "state",
                Mode::Plan => "plan",
                Mode::Aliases => "aliases",
                Mode::At => "at",
                Mode::Trace => "trace",
            },
        )
        .envs(extra_env.iter().map(|(k, v)| (k, v)))
        // Only `migrate` builds what is saved; the other modes read.
        .env(
            "MIGSNAP_ACCELERATE",
            if django.accelerate && mode == Mode::Migrate {
                "1"
            } else {
                ""
            },
        )
        .env("MIGSNAP_ALIAS", &django.alias)
        .env("MIGSNAP_DB_NAME", db)
        .env("MIGSNAP_DB_HOST", &conn.host)
        .env("MIGSNAP_DB_PORT", conn.port.to_string())
        .env("MIGSNAP_DB_USER", &conn.user)
        .env(
            "MIGSNAP_DB_PASSWORD",
            conn.password.as_deref().unwrap_or(""),
        )
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // No inherited PG* (PGOPTIONS, PGSERVICE… would steer psycopg), and
    // the PG* a settings module may read name the database being built.
    // Listing the aliases opens no connection and reads names only: in the
    // environment the tests run in, so that settings that take NAME from
    // PGDATABASE name the test databases as the test run will.
    if !matches!(mode, Mode::Aliases | Mode::At) {
        crate::pg::scrub_pg_env(cmd.as_std_mut());
        cmd.envs(conn.child_env(db));
    }
    if let Some(module) = &django.settings_module {
        cmd.env(crate::env::DJANGO_SETTINGS_MODULE, module);
    }
    let mut child = cmd.spawn().map_err(|source| NoDjango::Interpreter {
        python: django.python.clone(),
        source,
    })?;
    let stdout = child
        .stdout
        .take()
        .ok_or(ShimError::NoPipe { which: "stdout" })?;
    let stderr = child
        .stderr
        .take()
        .ok_or(ShimError::NoPipe { which: "stderr" })?;
    // Read raw lines and decode lossily: a migration printing invalid UTF-8
    // must not stop us draining its pipe (Python would block on a full pipe
    // and both sides would wait forever).
    let mut events = BufReader::new(stdout);
    let mut output = BufReader::new(stderr);
    let (mut ev_buf, mut out_buf) = (Vec::new(), Vec::new());

    let started = Instant::now();
    let mut progress = Progress::default();
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut failure: Option<(String, String, Failure)> = None;
    let mut inputs: Option<ShimInputs> = None;
    let mut insight: Option<Box<Insight>> = None;
    let mut trace: Option<Box<Trace>> = None;
    let mut aliases: Option<Vec<crate::aliases::AliasInfo>> = None;
    let mut at_base: Option<Option<usize>> = None;
    let mut index_conflicts: Vec<IndexConflict> = Vec::new();
    let mut refused: Option<String> = None;
    let mut accelerated = false;
    let mut stock: Vec<String> = Vec::new();
    let mut finished = false;
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let (mut events_open, mut output_open) = (true, true);

    while events_open || output_open {
        tokio::select! {
            line = read_line(&mut events, &mut ev_buf), if events_open => match line {
                Some(line) => match serde_json::from_str::<Event>(&line) {
                    Ok(ev) => {
                        match &ev {
                            Event::Error { r#type, message, category } => {
                                failure = Some((r#type.clone(), message.clone(), *category))
                            }
                            Event::Inputs(seen) => {
                                if let Some(Err(why)) = hooks.inputs.map(|c| c(seen)) {
                                    // Whatever Django did so far goes with the build database.
                                    let _ = child.start_kill();
                                    refused = Some(why);
                                }
                                inputs = Some((**seen).clone());
                            }
                            Event::Finished => finished = true,
                            Event::Insight(found) => insight = Some(found.clone()),
                            Event::Trace(found) => trace = Some(found.clone()),
                            Event::Aliases { aliases: found } => aliases = Some(found.clone()),
                            Event::AtBase { index } => at_base = Some(*index),
                            Event::Created { conflicts, .. } => index_conflicts = conflicts.clone(),
                            Event::Stock { migration, .. } if !stock.contains(migration) => {
                                stock.push(migration.clone())
                            }
                            Event::Accelerator {
                                active,
                                missing,
                                unsupported,
                            } => {
                                accelerated = *active;
                                if let Some(tell) = hooks.accelerator {
                                    tell(*active);
                                }
                                let python = django.python.clone();
                                let warning = match (missing, unsupported) {
                                    (Some(why), _) => Some(NoAccelerator::Missing {
                                        python,
                                        why: why.clone(),
                                    }),
                                    (_, Some(version)) => Some(NoAccelerator::Unsupported {
                                        python,
                                        version: version.clone(),
                                    }),
                                    _ => None,
                                };
                                if let Some(warning) = warning {
                                    ui.warn_about(warning.to_string(), &warning);
                                }
                            }
                            _ => {}
                        }
                        progress.on_event(ev, ui);
                    }
                    // A stray print to the saved stdout: treat as output.
                    Err(_) => push_tail(&mut tail, line),
                },
                None => events_open = false,
            },
            line = read_line(&mut output, &mut out_buf), if output_open => match line {
                Some(line) => {
                    if django.echo_output {
                        ui.output(line.clone());
                    }
                    push_tail(&mut tail, line);
                }
                None => output_open = false,
            },
            _ = ticker.tick() => progress.redraw(ui),
        }
    }
    let status = child.wait().await.map_err(ShimError::Wait)?;
    ui.end_progress();
    if let Some(why) = refused {
        return Err(ShimError::Unfit { why }.into());
    }

    // Success means the shim said it finished (having reported what it
    // read): a manage.py that exits 0 early (sys.exit inside it) must not
    // pass for a migrated database.
    let complete = match mode {
        Mode::Plan => insight.is_some(),
        Mode::Trace => trace.is_some(),
        Mode::Aliases => aliases.is_some(),
        Mode::At => at_base.is_some(),
        Mode::Migrate | Mode::ModelState => inputs.is_some(),
    };
    let succeeded = status.success() && failure.is_none() && finished && complete;
    if !succeeded {
        let (exception, message, kind) = failure.unwrap_or_else(|| {
            let how = if status.success() {
                "before migrating"
            } else {
                "with an error"
            };
            let message = format!("python exited {how} ({status})");
            ("exit".into(), message, Failure::Exit)
        });
        let shown: Vec<String> = tail.into_iter().collect();
        let what = match mode {
            Mode::Migrate => "migrate",
            Mode::ModelState => "building the model-state database",
            Mode::Plan => "reading the migrations",
            Mode::Aliases => "reading the settings' DATABASES",
            Mode::At => "reading the migrations",
            Mode::Trace => "tracing the migrations",
        };
        let detail = match shown.len() {
            0 => String::new(),
            n => format!(
                "--- Django output (last {n} lines) ---\n{}",
                shown.join("\n")
            ),
        };
        let failed = DjangoError {
            what,
            kind,
            exception,
            message,
        };
        return Err(Error::from(failed).detail(detail));
    };
    let report = MigrateReport {
        applied: progress.applied,
        inputs: inputs.unwrap_or_default(),
        insight,
        trace,
        aliases,
        at_base,
        index_conflicts,
        accelerated,
        stock,
    };
    if !report.applied.is_empty() {
        ui.info(format!(
            "applied {} migration(s) in {}",
            report.applied.len(),
            units::duration(started.elapsed())
        ));
        ui.info(format!("slowest: {}", slowest(&report.applied).join(", ")));
        for a in report.applied.iter().filter(|a| row_by_row(a)) {
            ui.warn(format!(
                "{} made {} round trips to PostgreSQL ({} statements): it works row by row",
                a.name, a.round_trips, a.statements
            ));
        }
    }
    Ok(report)
}

/// The slowest migrations, slowest first, with their time and query counts:
/// `app.0002_x 1.2s (4005 queries)`.
fn slowest(applied: &[Applied]) -> Vec<String> {
    let mut slow: Vec<&Applied> = applied.iter().collect();
    slow.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    slow.iter()
        .take(SLOWEST)
        .map(|a| {
            format!(
                "{} {} ({} queries)",
                a.name,
                units::duration(Duration::from_secs_f64(a.seconds)),
                a.round_trips
            )
        })
        .collect()
}

/// More round trips than set-based work needs (see [`ROW_BY_ROW`]).
pub fn row_by_row(a: &Applied) -> bool {
    a.round_trips > ROW_BY_ROW
}

/// One line (without its newline), decoded lossily; None at end of stream
/// or on a read error. Cancel-safe inside `select!`: `read_until` keeps a
/// partial line in `buf`, so `buf` is cleared only once a line is complete.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Option<String> {
    let res = r.read_until(b'\n', buf).await;
    if buf.is_empty() || res.is_err() {
        return None;
    }
    let mut line = std::mem::take(buf);
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    Some(String::from_utf8_lossy(&line).into_owned())
}

fn push_tail(tail: &mut VecDeque<String>, line: String) {
    if tail.len() == STDERR_TAIL {
        tail.pop_front();
    }
    tail.push_back(line);
}

/// Migrations applied of total, the current one, elapsed: an `Applying`
/// event per migration and a `StillApplying` one twice a second, so a slow
/// migration never looks like a hang (the renderer decides how often a
/// log shows it).
#[derive(Default)]
struct Progress {
    total: usize,
    current: Option<(String, Instant)>,
    /// Round trips of the current migration so far.
    queries: u64,
    applied: Vec<Applied>,
}

impl Progress {
    fn on_event(&mut self, ev: Event, ui: &Events) {
        match ev {
            Event::Ready { settings, django } => {
                ui.info(format!("running Django {django} ({settings})"))
            }
            Event::Plan { migrations } => {
                self.total = migrations.len();
                if self.total == 0 {
                    ui.info("no migrations to apply");
                }
            }
            Event::Start { migration } => {
                ui.report(report::Event::Applying {
                    index: self.applied.len() + 1,
                    total: self.total,
                    migration: migration.clone(),
                });
                self.current = Some((migration, Instant::now()));
                self.queries = 0;
            }
            Event::Queries { round_trips, .. } => self.queries = round_trips,
            // What the database no longer has was not applied by this run.
            Event::Undone { migration } => self.applied.retain(|a| a.name != migration),
            Event::Done {
                migration,
                seconds,
                statements,
                round_trips,
            } => {
                self.current = None;
                self.applied.push(Applied {
                    name: migration,
                    seconds,
                    statements,
                    round_trips,
                });
                crate::failpoint::point("migrate.applied");
            }
            Event::Created { models, .. } => ui.info(format!(
                "created {models} model tables from the migration state"
            )),
            Event::Error { .. }
            | Event::Finished
            | Event::Inputs(_)
            | Event::Insight(_)
            | Event::Trace(_)
            | Event::Aliases { .. }
            | Event::AtBase { .. } => self.current = None,
            Event::Accelerator { active: true, .. } => {
                ui.info("migrating with django-fastmig (build-accelerator)")
            }
            // Not installed: warned where the event is read.
            Event::Accelerator { .. } => {}
            Event::Stock { migration, why } => ui.info(format!(
                "django-fastmig does not know the {why} in {migration}: stock Django applies it"
            )),
        }
    }

    fn redraw(&mut self, ui: &Events) {
        let Some((name, since)) = &self.current else {
            return;
        };
        ui.report(report::Event::StillApplying {
            index: self.applied.len() + 1,
            total: self.total,
            migration: name.clone(),
            elapsed_ms: since.elapsed().as_millis() as u64,
            queries: self.queries,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The versions the messages name are the ones the shim uses.
    #[test]
    fn the_accelerator_versions_named_are_the_shims() {
        let line = SHIM
            .lines()
            .find(|l| l.starts_with("ACCELERATOR_VERSIONS = "))
            .expect("the shim names its versions");
        let named: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        assert_eq!(named.join(", "), ACCELERATOR_VERSIONS);
    }

    #[test]
    fn the_settings_module_manage_py_sets_is_read_without_running_it() {
        let startproject = r#"
def main():
    """Run administrative tasks."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    try:
"#;
        assert_eq!(
            manage_py_settings_module(startproject).as_deref(),
            Some("mysite.settings")
        );
        let single = "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings.local')";
        assert_eq!(
            manage_py_settings_module(single).as_deref(),
            Some("config.settings.local")
        );
        // Nothing is assumed when manage.py chooses some other way.
        for source in [
            "import os\n",
            "# os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'a.settings')\n",
            "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'a.settings')\n\
             os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'b.settings')\n",
            "os.environ.setdefault('DJANGO_SETTINGS_MODULE', base + '.settings')\n",
            "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'a settings')\n",
            "os.environ.setdefault('OTHER', 'a.settings')\n",
        ] {
            assert_eq!(manage_py_settings_module(source), None, "{source}");
        }
    }

    #[test]
    fn the_failure_kind_comes_from_the_shim_as_data() {
        let parse = |line: &str| match serde_json::from_str::<Event>(line) {
            Ok(Event::Error { category, .. }) => category,
            other => panic!("{other:?}"),
        };
        let line = |category: &str| {
            format!(
                r#"{{"event": "error", "type": "OperationalError", "message": "x", "category": "{category}"}}"#
            )
        };
        assert_eq!(parse(&line("server")), Failure::Server);
        assert_eq!(parse(&line("history")), Failure::History);
        assert_eq!(parse(&line("elsewhere")), Failure::Elsewhere);
        // The same exception text, another kind: nothing is read from it.
        assert_eq!(parse(&line("migration")), Failure::Migration);
        // An older shim's line without a category is a migration failure.
        assert_eq!(
            parse(
                r#"{"event": "error", "type": "ValueError", "message": "terminating connection"}"#
            ),
            Failure::Migration
        );
    }
}
