//! One module per subcommand; `run` dispatches and owns the runtime.

mod check;
mod diff;
mod drop;
mod gc;
pub mod hints;
mod key;
mod lint;
mod ls;
mod maintain;
mod plan;
mod prepare;
mod run;
mod schema;
mod server;
mod signing_key;
mod sync;
mod trace;

use crate::cli::{Cli, Command};
use crate::settings::Settings;
use migsnap::error::{Error, Kind, Result};
use migsnap::report::Events;
use std::io::Write;
use std::path::Path;

/// Run the parsed command line; returns the exit code on success.
pub fn run(cli: Cli) -> Result<u8> {
    run_command(cli).map_err(hints::add)
}

fn run_command(cli: Cli) -> Result<u8> {
    let mut overrides = cli.global.overrides();
    overrides.alias = cli.command.alias().map(str::to_string);
    let settings = Settings::resolve(&overrides)?;
    let ui = crate::render::events(cli.global.progress, settings.quiet);
    // `gc --remote` works on the store alone: no server to start.
    let starts_slow_work = match &cli.command {
        Command::Prepare(_)
        | Command::Run(_)
        | Command::Check(_)
        | Command::Plan(_)
        | Command::Sql(_)
        | Command::Lint(_)
        | Command::Trace(_)
        | Command::Schema(_)
        | Command::Diff(_) => true,
        Command::Gc(args) => !args.remote,
        _ => false,
    };
    if starts_slow_work {
        settings.ctx.check_before_starting()?;
    }
    // A current-thread runtime: `key` pays for one thread only, the blocking
    // one its hashing runs on.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal("cannot start the async runtime").source(e))?;
    let outcome = runtime.block_on(interruptible(dispatch(&cli.command, &settings, &ui), &ui));
    // Nothing async may outlive an exec, and after an interrupt nothing is
    // worth waiting for (a server start blocked on its lock): dropping the
    // runtime closes every connection.
    runtime.shutdown_background();
    match outcome? {
        Outcome::Exit(code) => Ok(code),
        Outcome::Exec(prepared, args) => Err(run::exec(&prepared, args, &ui)),
    }
}

/// How a command ends: an exit code, or (`run`) replacing the process.
enum Outcome<'a> {
    Exit(u8),
    Exec(Box<prepare::Prepared>, &'a crate::cli::RunArgs),
}

/// Race `work` against Ctrl-C. Ctrl-C drops the command's future: the Python
/// child is killed (kill_on_drop), a build in progress removes its database
/// as its guard is dropped (see `engine`), and connections close, releasing
/// the advisory locks.
async fn interruptible<T>(
    work: impl std::future::Future<Output = Result<T>>,
    ui: &Events,
) -> Result<T> {
    tokio::select! {
        res = work => res,
        _ = tokio::signal::ctrl_c() => {
            ui.end_progress();
            Err(Error::new(Kind::Interrupted, "interrupted").hint("nothing was saved; run the command again"))
        }
    }
}

async fn dispatch<'a>(
    command: &'a Command,
    settings: &Settings,
    ui: &Events,
) -> Result<Outcome<'a>> {
    let code = match command {
        Command::Run(args) => {
            let prepared =
                prepare::prepare(settings, &args.target.database, &args.target.how, ui).await?;
            if prepared.maintenance {
                maintain::spawn(settings, ui);
            }
            return Ok(Outcome::Exec(Box::new(prepared), args));
        }
        Command::Maintain(args) => maintain::run(settings, args, ui).await?,
        Command::Prepare(args) => prepare::run(settings, args, ui).await?,
        Command::Ls(args) => ls::run(settings, args, ui).await?,
        Command::Gc(args) => gc::run(settings, args, ui).await?,
        Command::Drop(args) => drop::run(settings, args, ui).await?,
        Command::Server { action } => server::run(settings, action, ui).await?,
        Command::Key(args) => key::run(settings, args, ui).await?,
        Command::SigningKey(args) => signing_key::run(settings, args, ui)?,
        Command::Push(args) => sync::push(settings, args, ui).await?,
        Command::Pull(args) => sync::pull(settings, args, ui).await?,
        Command::Check(args) => check::run(settings, args, ui).await?,
        Command::Plan(args) => plan::run(settings, args, plan::View::Plan, ui).await?,
        Command::Sql(args) => plan::run(settings, args, plan::View::Sql, ui).await?,
        Command::Lint(args) => lint::run(settings, args, ui).await?,
        Command::Trace(args) => trace::run(settings, args, ui).await?,
        Command::Schema(args) => schema::run(settings, args, ui).await?,
        Command::Diff(args) => diff::run(settings, args, ui).await?,
    };
    Ok(Outcome::Exit(code))
}

/// Write to stdout; a closed pipe (`migsnap key | head -c1`) is not an error.
pub fn print_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// One migration's cost in `prepare --json` and `ls --json`.
#[derive(serde::Serialize)]
pub struct Cost<'a> {
    name: &'a str,
    seconds: f64,
    statements: u64,
    round_trips: u64,
    /// More round trips than set-based work needs (`migsnap::django::ROW_BY_ROW`).
    row_by_row: bool,
}

pub fn costs(applied: &[migsnap::store::Applied]) -> Vec<Cost<'_>> {
    applied
        .iter()
        .map(|a| Cost {
            name: &a.name,
            seconds: a.seconds,
            statements: a.statements,
            round_trips: a.round_trips,
            row_by_row: migsnap::django::row_by_row(a),
        })
        .collect()
}

/// A baseline file: `{"findings": [entry…]}`, entries sorted, for `check`
/// and `lint` (each with its own entry: what identifies a finding).
#[derive(serde::Serialize, serde::Deserialize)]
struct BaselineFile<E> {
    findings: Vec<E>,
}

/// `--write-baseline` and `--baseline` of `check` and `lint`.
pub struct Baseline<'a> {
    pub write: Option<&'a Path>,
    pub read: Option<&'a Path>,
    /// `migsnap check`, for the hints.
    pub command: &'a str,
}

impl Baseline<'_> {
    /// Write every finding's entry (`None`: the command is done), or drop
    /// the findings the baseline accepts (`Some(how many)`).
    pub fn apply<F, E: serde::Serialize + serde::de::DeserializeOwned + Ord>(
        &self,
        findings: &mut Vec<F>,
        entry: impl Fn(&F) -> E,
        ui: &Events,
    ) -> Result<Option<usize>> {
        if let Some(path) = self.write {
            let mut entries: Vec<E> = findings.iter().map(entry).collect();
            entries.sort();
            entries.dedup();
            let text = serde_json::to_vec_pretty(&BaselineFile { findings: entries })
                .map_err(|e| Error::internal("cannot serialise the baseline").source(e))?;
            write_file_atomic(path, &text)?;
            ui.info(format!(
                "wrote {} finding(s) to {}",
                findings.len(),
                path.display()
            ));
            return Ok(None);
        }
        let Some(path) = self.read else {
            return Ok(Some(0));
        };
        let file: BaselineFile<E> = read_baseline(path, self.command)?;
        let accepted: std::collections::BTreeSet<E> = file.findings.into_iter().collect();
        let before = findings.len();
        findings.retain(|f| !accepted.contains(&entry(f)));
        Ok(Some(before - findings.len()))
    }
}

/// A baseline file `command --write-baseline` wrote.
fn read_baseline<T: serde::de::DeserializeOwned>(path: &Path, command: &str) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| {
        Error::usage(format!("cannot read baseline `{}`", path.display()))
            .source(e)
            .hint(format!("create it with `{command} --write-baseline FILE`"))
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::usage(format!(
            "baseline `{}` is not a {command} baseline",
            path.display()
        ))
        .source(e)
        .hint(format!(
            "re-create it with `{command} --write-baseline FILE`"
        ))
    })
}

/// Write `path` whole or not at all (a temp file beside it, renamed).
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let fail =
        |e: std::io::Error| Error::usage(format!("cannot write `{}`", path.display())).source(e);
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    tmp.write_all(bytes).map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

/// A GitHub Actions workflow command's message, escaped.
fn github_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A workflow command's property (`file=`, `title=`), escaped.
fn github_property(s: &str) -> String {
    github_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// One GitHub Actions annotation (`::error file=…,line=…,title=…::message`),
/// for `check`, `lint` and `diff`.
pub fn annotation(
    level: &str,
    file: Option<&str>,
    line: Option<usize>,
    title: &str,
    message: &str,
) -> String {
    let mut props = Vec::new();
    if let Some(f) = file {
        props.push(format!("file={}", github_property(f)));
    }
    if let Some(l) = line {
        props.push(format!("line={l}"));
    }
    props.push(format!("title={}", github_property(title)));
    format!("::{level} {}::{}\n", props.join(","), github_data(message))
}

/// The last line of a findings report: `3 finding(s), 1 failing, 2 accepted
/// by the baseline`.
pub fn findings_summary(total: usize, failing: usize, what: &str, baselined: usize) -> String {
    let accepted = match baselined {
        0 => String::new(),
        n => format!(", {n} accepted by the baseline"),
    };
    format!("{total} finding(s), {failing} {what}{accepted}\n")
}

pub fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::internal("cannot serialise the result").source(e))?;
    print_stdout(&format!("{text}\n"));
    Ok(())
}
