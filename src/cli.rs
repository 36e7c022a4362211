//! Command-line syntax (clap derive only). Values are validated and merged
//! with the environment and the config file in `settings`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "migsnap",
    version,
    about = "Django + PostgreSQL test databases in a fraction of a second",
    long_about = "migsnap hashes your migration files into a key, keeps a template database and a \
                  compressed dump per key, and clones the template instead of running migrate.",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Django project root (where manage.py and the config file are)
    #[arg(short = 'C', long, global = true, value_name = "DIR")]
    pub project_dir: Option<PathBuf>,
    /// PostgreSQL server URL [env: MIGSNAP_SERVER_URL] (default: the embedded server)
    #[arg(long, global = true, value_name = "URL")]
    pub server_url: Option<String>,
    /// Snapshot cache directory [env: MIGSNAP_CACHE_DIR]
    #[arg(long, global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Shared snapshot store, s3://BUCKET/PREFIX or file:///DIR [env: MIGSNAP_REMOTE]
    #[arg(long, global = true, value_name = "URL")]
    pub remote_url: Option<String>,
    /// Python interpreter that runs manage.py [env: MIGSNAP_PYTHON]
    #[arg(long, global = true, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// Django settings module to migrate with, e.g. mysite.settings.test (part of the key; default: `settings` in the config, else $DJANGO_SETTINGS_MODULE, else whatever manage.py sets)
    #[arg(long, global = true, value_name = "MODULE")]
    pub settings: Option<String>,
    /// Only print errors and warnings on stderr
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Also show Django's own output while it runs
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// How progress, status and warnings are written on stderr: `text` for
    /// people, `json` (one object a line) for programs
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text")]
    pub progress: crate::render::Progress,
}

impl Cli {
    /// Parse the command line; clap reports a mistake and exits 2. A
    /// command given to `run` without `--` gets a hint to add it.
    pub fn parse_args() -> Cli {
        use clap::error::{ContextKind, ErrorKind};
        use clap::{CommandFactory, FromArgMatches};
        let mut command = hide_ignored(Cli::command());
        let e = match command
            .try_get_matches_from_mut(std::env::args_os())
            .and_then(|m| Cli::from_arg_matches(&m))
        {
            Ok(cli) => return cli,
            Err(e) => e.format(&mut command),
        };
        let in_run = e
            .get(ContextKind::Usage)
            .is_some_and(|u| u.to_string().contains("migsnap run "));
        // The first word clap did not take (a misspelt `--flag` is not a command).
        let invalid = e
            .get(ContextKind::InvalidArg)
            .map(|a| a.to_string())
            .unwrap_or_default();
        let hint = match e.kind() {
            ErrorKind::UnknownArgument if in_run && !invalid.starts_with('-') => Some(format!(
                "put `--` before the command, so that it and its options are not migsnap's: `migsnap run --database NAME -- {invalid} …`"
            )),
            ErrorKind::MissingRequiredArgument if in_run && invalid.contains("<CMD>") => Some(
                "name the command to run after `--`: `migsnap run --database NAME -- CMD ARGS…`"
                    .to_string(),
            ),
            _ => None,
        };
        let Some(hint) = hint else { e.exit() };
        let _ = e.print();
        let color = crate::render::stderr_color();
        eprintln!("{} {hint}", migsnap::error::Label::Hint.prefix(color));
        std::process::exit(e.exit_code());
    }
}

/// Global options each command ignores (by field name). They stay
/// accepted, so `migsnap -C DIR --python P key` works in scripts that pass
/// the same options to every command, but a command's `--help` lists only
/// the ones that change what it does.
const IGNORED: &[(&[&str], &[&str])] = &[
    // `key` reads the cache dir: the migration packages the last build recorded.
    (&["key"], &["server_url", "remote_url", "python", "verbose"]),
    (&["ls"], &["python", "verbose"]),
    (&["gc"], &["python", "verbose"]),
    (&["drop"], &["remote_url", "python", "settings", "verbose"]),
    (&["push"], &["server_url", "python", "verbose"]),
    (&["pull"], &["server_url", "python", "verbose"]),
    (&["signing-key"], SIGNING_KEY_IGNORES),
    (&["signing-key", "generate"], SIGNING_KEY_IGNORES),
    (&["server"], SERVER_IGNORES),
    (&["server", "start"], SERVER_IGNORES),
    (&["server", "stop"], SERVER_IGNORES),
    (&["server", "status"], SERVER_IGNORES),
    (&["server", "url"], SERVER_IGNORES),
    (&["server", "ls"], SERVER_IGNORES),
];
const SERVER_IGNORES: &[&str] = &["remote_url", "python", "settings", "verbose"];
const SIGNING_KEY_IGNORES: &[&str] = &[
    "server_url",
    "cache_dir",
    "remote_url",
    "python",
    "settings",
    "verbose",
];

/// `command` with `IGNORED` hidden from each command's help.
fn hide_ignored(mut command: clap::Command) -> clap::Command {
    // Global options reach the subcommands when the command is built.
    command.build();
    for (path, ids) in IGNORED {
        // `mut_args` keeps the order the built command indexes them by
        // (`mut_arg` moves the arg to the end).
        command = mut_path(command, path, &|c| {
            c.mut_args(|a| {
                let hide = a.is_hide_set() || ids.contains(&a.get_id().as_str());
                a.hide(hide)
            })
        });
    }
    command
}

fn mut_path(
    command: clap::Command,
    path: &[&str],
    f: &dyn Fn(clap::Command) -> clap::Command,
) -> clap::Command {
    match path {
        [] => f(command),
        [first, rest @ ..] => command.mut_subcommand(*first, |c| mut_path(c, rest, f)),
    }
}

impl GlobalArgs {
    /// The flags that settings resolution takes over the environment and
    /// the config file.
    pub fn overrides(&self) -> crate::settings::Overrides {
        crate::settings::Overrides {
            project_dir: self.project_dir.clone(),
            server_url: self.server_url.clone(),
            cache_dir: self.cache_dir.clone(),
            remote: self.remote_url.clone(),
            python: self.python.clone(),
            settings: self.settings.clone(),
            quiet: self.quiet,
            verbose: self.verbose,
            alias: None,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create (or replace) a test database in the fully migrated state
    Prepare(PrepareArgs),
    /// Prepare the database, then run a command with PGHOST, PGDATABASE, DATABASE_URL & co. set
    Run(RunArgs),
    /// List cached snapshots and the templates on the server
    Ls(LsArgs),
    /// Remove old snapshots, their templates, and leftovers of interrupted runs
    Gc(GcArgs),
    /// Drop a database migsnap made (a clone it handed out, a pool member, a template); refuse any other
    Drop(DropArgs),
    /// Print the migration-set key (no server needed; use it as a CI cache key)
    Key(KeyArgs),
    /// Upload the current key's snapshot from the cache dir to the shared snapshot store
    Push(SyncArgs),
    /// Download the current key's snapshot from the shared snapshot store into the cache dir
    Pull(SyncArgs),
    /// Compare indexes made by migrations with Django's model state
    Check(CheckArgs),
    /// The migrations that would run, with their operations and SQL (read only)
    Plan(PlanArgs),
    /// The SQL of the migrations that would run (or of the named ones), per operation
    Sql(PlanArgs),
    /// Lint the migrations that would run (or the named ones): locks, rewrites, irreversibility
    Lint(LintArgs),
    /// Apply the migrations that would run (or the named ones) to a scratch clone and measure their locks and rewrites
    Trace(TraceArgs),
    /// The end-state schema of the current key: tables, columns, indexes, constraints, sequences
    Schema(SchemaArgs),
    /// Compare the current key's end-state schema with a live database (read only)
    Diff(DiffArgs),
    /// Drop replaced targets and refill the clone pool (prepare starts it in the background)
    Maintain(MaintainArgs),
    /// Print the public key that signs snapshots here (the line for `trusted-keys`), making it if needed
    SigningKey(SigningKeyArgs),
    /// Manage the embedded PostgreSQL server
    Server {
        #[command(subcommand)]
        action: ServerAction,
    },
}

/// Which of the settings' DATABASES a command is for.
#[derive(Debug, Args)]
pub struct AliasArg {
    /// The DATABASES alias, migrated as `migrate --database ALIAS` would (each alias is its own snapshot)
    #[arg(long, value_name = "ALIAS", default_value = migsnap::fingerprint::DEFAULT_ALIAS)]
    pub alias: String,
}

impl Command {
    /// The alias the command is for, when it takes one.
    pub fn alias(&self) -> Option<&str> {
        let arg = match self {
            Command::Prepare(a) => &a.how.alias,
            Command::Run(a) => &a.target.how.alias,
            Command::Maintain(a) => &a.alias,
            Command::Key(a) => &a.alias,
            Command::Check(a) => &a.alias,
            Command::Plan(a) | Command::Sql(a) => &a.alias,
            Command::Lint(a) => &a.alias,
            Command::Trace(a) => &a.alias,
            Command::Schema(a) => &a.alias,
            Command::Diff(a) => &a.alias,
            _ => return None,
        };
        Some(&arg.alias)
    }
}

/// What `run` prepares.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Name of the database to create
    #[arg(short, long, value_name = "NAME")]
    pub database: String,
    #[command(flatten)]
    pub how: TargetOpts,
}

/// How a database is prepared; shared by `prepare` and `run`.
#[derive(Debug, Args)]
pub struct TargetOpts {
    #[command(flatten)]
    pub alias: AliasArg,
    /// Replace the database even if its name does not look like a test database
    #[arg(long)]
    pub force: bool,
    /// Ignore templates and cached dumps: migrate from empty and re-snapshot
    #[arg(long)]
    pub rebuild: bool,
}

#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// Name of the database to create
    #[arg(
        short,
        long,
        value_name = "NAME",
        required_unless_present = "all_aliases",
        conflicts_with = "all_aliases"
    )]
    pub database: Option<String>,
    #[command(flatten)]
    pub how: TargetOpts,
    /// Prepare every database the settings define (one per distinct database, named as Django's test setup names it; mirrors point at theirs)
    #[arg(long, conflicts_with = "alias")]
    pub all_aliases: bool,
    /// Print the result as one JSON object on stdout
    #[arg(long)]
    pub json: bool,
    /// Remember N as the pool size for runs that configure none (the pytest plugin passes its worker count)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(0..=64))]
    pub pool_default: Option<u16>,
    /// Migrate only to these migrations (`app.name`, `app.zero` or a migration file), one after another, as `manage.py migrate APP NAME` would: a snapshot of its own
    #[arg(
        long,
        value_name = "MIGRATION",
        num_args = 1..,
        conflicts_with_all = ["all_aliases", "pool_default"]
    )]
    pub at: Vec<String>,
    /// Leave everything as it is when a ready pool member waits (printing `"prepared": false`); else prepare as usual (the pytest plugin starts `prepare` early with it)
    #[arg(long, conflicts_with_all = ["rebuild", "all_aliases", "at"])]
    pub unless_ready: bool,
}

#[derive(Debug, Args)]
pub struct DropArgs {
    /// Name of the database to drop
    #[arg(short, long, value_name = "NAME")]
    pub database: String,
    /// Print the result as one JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MaintainArgs {
    #[command(flatten)]
    pub alias: AliasArg,
    /// Print what was done as one JSON object
    #[arg(long)]
    pub json: bool,
    /// Started by `prepare` after its answer: leave a stopped embedded
    /// server stopped (someone stopped it since) and do nothing
    #[arg(long, hide = true)]
    pub background: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The command and its arguments, after `--` (so its options stay its own)
    #[arg(required = true, last = true, value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print snapshots and templates as one JSON object
    #[arg(long)]
    pub json: bool,
    /// List the snapshots of every project in the cache dir, not only this one's
    #[arg(long)]
    pub all_projects: bool,
    /// List the shared snapshot store's snapshots instead (`remote` in the config)
    #[arg(long)]
    pub remote: bool,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Keep this many of the newest snapshots (the current key's is always kept)
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub keep: usize,
    /// Then remove the oldest kept snapshots until the cache holds at most SIZE (e.g. 500M, 2G)
    #[arg(long, value_name = "SIZE", value_parser = migsnap::units::parse_size)]
    pub max_size: Option<u64>,
    /// Say what would be removed, remove nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print what was (or would be) removed as one JSON object
    #[arg(long)]
    pub json: bool,
    /// Act on the snapshots of every project in the cache dir, not only this one's
    #[arg(long)]
    pub all_projects: bool,
    /// Apply the retention to the shared snapshot store instead, and remove
    /// what interrupted pushes left there
    #[arg(long)]
    pub remote: bool,
}

/// Which snapshot `push` and `pull` move.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The snapshot's key (64 hex) [default: the current key]
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Print the result as one JSON object
    #[arg(long)]
    pub json: bool,
}

/// `plan` and `sql`: which migrations, relative to what.
#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub alias: AliasArg,
    /// One JSON document (schema in docs/plan.md)
    #[arg(long)]
    pub json: bool,
    /// Relative to the nearest snapshot on the server (the default)
    #[arg(long, conflicts_with = "against")]
    pub since_snapshot: bool,
    /// Relative to this database's django_migrations (a libpq URL; opened read only)
    #[arg(long, value_name = "URL")]
    pub against: Option<String>,
    /// Leave out operations of these types (comma-separated: AddIndex,RemoveIndex)
    #[arg(long, value_name = "TYPES", value_delimiter = ',')]
    pub exclude_op: Vec<String>,
    /// Only these migrations, as `app.name` or file paths (e.g. from `git diff --name-only`)
    #[arg(value_name = "PATH|app.name")]
    pub migrations: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LintArgs {
    #[command(flatten)]
    pub alias: AliasArg,
    /// Output format
    #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
    pub format: CheckFormat,
    /// Same as --format json
    #[arg(long)]
    pub json: bool,
    /// Relative to this database's django_migrations (a libpq URL; opened read only)
    #[arg(long, value_name = "URL")]
    pub against: Option<String>,
    /// Also apply the migrations to a scratch clone of the nearest snapshot and report measured rewrites under an ACCESS EXCLUSIVE lock (see `migsnap trace`)
    #[arg(long, conflicts_with = "against")]
    pub trace: bool,
    /// With --trace: fill each existing table the migrations name with N synthetic rows first
    #[arg(long, value_name = "N", requires = "trace")]
    pub rows: Option<u64>,
    /// Weigh findings by the size of their tables in this database (a libpq URL; read only): small tables give notes
    #[arg(long, value_name = "URL")]
    pub stats_from: Option<String>,
    /// Accept the findings listed in FILE; fail only on new ones
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Write the current findings to FILE as a baseline and exit 0
    #[arg(long, value_name = "FILE", conflicts_with = "baseline")]
    pub write_baseline: Option<PathBuf>,
    /// Only these migrations, as `app.name` or file paths (e.g. from `git diff --name-only`)
    #[arg(value_name = "PATH|app.name")]
    pub migrations: Vec<String>,
}

/// `trace`: which migrations, and how much data to give them.
#[derive(Debug, Args)]
pub struct TraceArgs {
    #[command(flatten)]
    pub alias: AliasArg,
    /// One JSON document (schema in docs/trace.md)
    #[arg(long)]
    pub json: bool,
    /// First fill each existing table the migrations name with N synthetic rows, so rewrites and index builds cost something
    #[arg(long, value_name = "N")]
    pub rows: Option<u64>,
    /// Only these migrations (and what they need), as `app.name` or file paths
    #[arg(value_name = "PATH|app.name")]
    pub migrations: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    #[command(flatten)]
    pub alias: AliasArg,
    /// One JSON document (schema in docs/schema-diff.md) instead of SQL-like text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub alias: AliasArg,
    /// The database to compare with (a libpq URL; opened read only)
    #[arg(long, value_name = "URL")]
    pub against: String,
    /// Output format
    #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
    pub format: CheckFormat,
    /// Same as --format json
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub alias: AliasArg,
    /// Output format
    #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
    pub format: CheckFormat,
    /// Same as --format json
    #[arg(long)]
    pub json: bool,
    /// Accept the findings listed in FILE; fail only on new ones
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Write the current findings to FILE as a baseline and exit 0
    #[arg(long, value_name = "FILE", conflicts_with = "baseline")]
    pub write_baseline: Option<PathBuf>,
    /// Recompute both catalogs instead of using the cached ones
    #[arg(long)]
    pub refresh: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckFormat {
    /// Human-readable report
    Text,
    /// One JSON document (documented in docs/check.md, docs/lint.md, docs/schema-diff.md)
    Json,
    /// GitHub Actions annotations on the migration file and line
    Github,
}

impl CheckFormat {
    /// `--json` is short for `--format json`.
    pub fn or_json(self, json: bool) -> CheckFormat {
        if json {
            CheckFormat::Json
        } else {
            self
        }
    }
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(flatten)]
    pub alias: AliasArg,
    /// Print the key, file counts and key inputs as JSON
    #[arg(long)]
    pub json: bool,
    /// List every hashed file on stderr
    #[arg(long)]
    pub list: bool,
    /// Print a key even where there is no manage.py and no migration file
    #[arg(long)]
    pub allow_empty: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SigningKeyArgs {
    /// Print the key's id, public key line and file as JSON
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub action: Option<SigningKeyAction>,
}

#[derive(Debug, Subcommand)]
pub enum SigningKeyAction {
    /// Write a new private key to PATH (mode 0600; never over an existing file), e.g. for CI's signing-key-file
    Generate {
        /// Where to write it
        path: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ServerAction {
    /// Initialise (if needed) and start the embedded server
    Start(ServerArgs),
    /// Stop the embedded server (or, with --all, every one `server ls` lists)
    Stop(StopArgs),
    /// Say whether the embedded server is running
    Status(ServerArgs),
    /// Print a postgres:// URL for the embedded server (starting it if needed)
    Url(ServerArgs),
    /// List the embedded servers of this user on this machine (one per cache dir)
    Ls(ServerArgs),
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Stop every embedded server of this project's settings (its server dir, and where older versions put it), not another job's
    #[arg(long)]
    pub all: bool,
    /// Stop every embedded server of yours that `migsnap server ls` lists, other jobs' and projects' too
    #[arg(long)]
    pub everywhere: bool,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}
