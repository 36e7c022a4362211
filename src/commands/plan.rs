//! `migsnap plan` and `migsnap sql`: two views of one shim answer
//! (`migsnap::plan`), as text or as one versioned JSON document.

use crate::cli::PlanArgs;
use crate::settings::Settings;
use migsnap::django::{PlannedMigration, PlannedOperation};
use migsnap::error::{exit, Result};
use migsnap::plan::{Against, Base, SCHEMA_VERSION};
use migsnap::report::Events;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy)]
pub enum View {
    Plan,
    Sql,
}

#[derive(serde::Serialize)]
struct PlanOutput<'a> {
    schema_version: u32,
    base: &'a Base,
    /// Rows of django_migrations in the database compared against.
    database_applied: usize,
    /// What migrate would apply there, as `app.name`, in order.
    pending: &'a [String],
    migrations: &'a [PlannedMigration],
}

pub async fn run(settings: &Settings, args: &PlanArgs, view: View, ui: &Events) -> Result<u8> {
    let against = match &args.against {
        Some(url) => Against::Database(url.clone()),
        None => Against::Snapshot,
    };
    let targets = targets(&args.migrations);
    // The plan shows each operation's statement count too: SQL always.
    let mut planned =
        migsnap::plan::plan(&settings.session(), &against, &targets, true, ui).await?;
    planned.insight.exclude_operations(&args.exclude_op);
    project_relative(&mut planned.insight, settings);
    let insight = &planned.insight;
    if args.json {
        super::print_json(&PlanOutput {
            schema_version: SCHEMA_VERSION,
            base: &planned.base,
            database_applied: insight.database_applied,
            pending: &insight.pending,
            migrations: &insight.migrations,
        })?;
    } else {
        ui.info(describe_base(&planned.base, insight.migrations.len()));
        let text = match view {
            View::Plan => render_plan(&insight.migrations),
            View::Sql => render_sql(&insight.migrations),
        };
        super::print_stdout(&text);
    }
    Ok(exit::OK)
}

/// Migration paths relative to the project (as CI annotations name them),
/// when inside it.
pub fn project_relative(insight: &mut migsnap::django::Insight, settings: &Settings) {
    let project = settings.ctx.project_dir();
    for m in &mut insight.migrations {
        m.path = m.path.take().map(|p| relative(&p, project));
    }
}

/// The command line's migrations for the shim: file paths (with a `/` or
/// ending in `.py`) made absolute against the current directory, as the
/// shim compares them; `app.name` as it is.
pub fn targets(args: &[String]) -> Vec<String> {
    args.iter().map(|t| target(t)).collect()
}

fn target(t: &str) -> String {
    if t.contains('/') || t.ends_with(".py") {
        let p = Path::new(t);
        let abs = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir()
                .map(|d| d.join(p))
                .unwrap_or_else(|_| p.to_path_buf())
        };
        return abs.to_string_lossy().into_owned();
    }
    t.to_string()
}

pub(super) fn relative(path: &Path, project: &Path) -> PathBuf {
    let canon = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    canon(path)
        .strip_prefix(canon(project))
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| path.to_path_buf())
}

pub(super) fn describe_base(base: &Base, n: usize) -> String {
    let what = match base {
        Base::Snapshot { key, current: true } => {
            format!("the current key's snapshot {}", key.short())
        }
        Base::Snapshot { key, .. } => format!("snapshot {}", key.short()),
        Base::Empty => "an empty database (no snapshot on the server yet)".to_string(),
        Base::Database { url } => format!("`{url}`"),
    };
    format!("{n} migration(s) relative to {what}")
}

fn location(m: &PlannedMigration, op: &PlannedOperation) -> String {
    match (&m.path, op.line) {
        (Some(p), Some(line)) => format!("{}:{line}", p.display()),
        (Some(p), None) => p.display().to_string(),
        _ => String::new(),
    }
}

fn render_plan(migrations: &[PlannedMigration]) -> String {
    let mut out = String::new();
    for m in migrations {
        let path = m.path.as_ref().map(|p| p.display().to_string());
        let mut flags = vec![if m.atomic { "atomic" } else { "non-atomic" }];
        if m.applied {
            flags.push("applied");
        }
        let _ = writeln!(
            out,
            "{}.{}  {}  ({})",
            m.app,
            m.name,
            path.as_deref().unwrap_or("-"),
            flags.join(", ")
        );
        for op in &m.operations {
            let sql = match &op.sql {
                Some(s) => format!("{} statement(s)", s.len()),
                None => "not SQL".to_string(),
            };
            let _ = writeln!(
                out,
                "  {}  {}: {}  [{sql}]",
                location(m, op),
                op.r#type,
                op.description
            );
        }
    }
    out
}

/// Per migration and operation, the statements, with comments saying where
/// they come from; deferred statements after the operations.
fn render_sql(migrations: &[PlannedMigration]) -> String {
    let mut out = String::new();
    for m in migrations {
        let path = m.path.as_ref().map(|p| p.display().to_string());
        let _ = writeln!(
            out,
            "-- migration {}.{} ({})",
            m.app,
            m.name,
            path.as_deref().unwrap_or("-")
        );
        // As sqlmigrate: BEGIN/COMMIT around an atomic migration with SQL.
        if m.output_transaction {
            out.push_str("BEGIN;\n");
        }
        for op in &m.operations {
            let _ = writeln!(
                out,
                "-- {}: {} ({})",
                op.r#type,
                op.description,
                location(m, op)
            );
            match &op.sql {
                Some(sql) => sql.iter().for_each(|s| {
                    let _ = writeln!(out, "{s}");
                }),
                None => out.push_str("-- THIS OPERATION CANNOT BE WRITTEN AS SQL\n"),
            }
        }
        let deferred = m.deferred_sql.as_deref().unwrap_or_default();
        if !deferred.is_empty() {
            out.push_str("-- deferred\n");
            deferred.iter().for_each(|s| {
                let _ = writeln!(out, "{s}");
            });
        }
        if m.output_transaction {
            out.push_str("COMMIT;\n");
        }
    }
    out
}
