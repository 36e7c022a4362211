//! `migsnap trace`: `migsnap::trace` rendered per migration (the strongest
//! lock on each table and for how long), or as one versioned JSON document.

use crate::cli::TraceArgs;
use crate::settings::Settings;
use migsnap::django::{Seeded, TracedMigration};
use migsnap::error::{exit, Result};
use migsnap::plan::Base;
use migsnap::report::Events;
use migsnap::trace::SCHEMA_VERSION;
use std::fmt::Write as _;
use std::time::Duration;

#[derive(serde::Serialize)]
struct TraceOutput<'a> {
    schema_version: u32,
    base: &'a Base,
    /// Synthetic rows asked for per table (`--rows`).
    rows: Option<u64>,
    seeded: &'a [Seeded],
    migrations: &'a [TracedMigration],
}

pub async fn run(settings: &Settings, args: &TraceArgs, ui: &Events) -> Result<u8> {
    let targets = super::plan::targets(&args.migrations);
    let mut traced = migsnap::trace::trace(&settings.session(), &targets, args.rows, ui).await?;
    let project = settings.ctx.project_dir();
    for m in &mut traced.trace.migrations {
        m.path = m.path.take().map(|p| super::plan::relative(&p, project));
    }
    let trace = &traced.trace;
    for s in &trace.seeded {
        match (&s.rows, &s.skipped) {
            (Some(n), _) => ui.info(format!("filled `{}` with {n} synthetic rows", s.table)),
            (None, why) => ui.warn(format!(
                "left `{}` empty: {}",
                s.table,
                why.as_deref().unwrap_or("no synthetic rows for it")
            )),
        }
    }
    if args.json {
        super::print_json(&TraceOutput {
            schema_version: SCHEMA_VERSION,
            base: &traced.base,
            rows: trace.rows,
            seeded: &trace.seeded,
            migrations: &trace.migrations,
        })?;
    } else {
        ui.info(format!(
            "traced {}",
            super::plan::describe_base(&traced.base, trace.migrations.len())
        ));
        super::print_stdout(&render(&trace.migrations));
    }
    Ok(exit::OK)
}

fn ms(ms: f64) -> String {
    migsnap::units::duration(Duration::from_secs_f64(ms.max(0.0) / 1000.0))
}

/// Per migration, each table it locked: the strongest mode, how long it was
/// held, whether it was rewritten.
fn render(migrations: &[TracedMigration]) -> String {
    let mut out = String::new();
    for m in migrations {
        let path = m.path.as_ref().map(|p| p.display().to_string());
        let how = if m.atomic { "atomic" } else { "non-atomic" };
        let _ = writeln!(
            out,
            "{}  {}  ({how}, {})",
            m.migration,
            path.as_deref().unwrap_or("-"),
            ms(m.duration_ms)
        );
        let width = m
            .tables
            .iter()
            .map(|t| t.strongest_lock.as_str().len())
            .max()
            .unwrap_or(0);
        for t in &m.tables {
            let mut notes = vec![];
            if t.rewritten {
                notes.push("rewritten");
            }
            if !t.existed {
                notes.push("new");
            }
            let notes = match notes.is_empty() {
                true => String::new(),
                false => format!("  ({})", notes.join(", ")),
            };
            let _ = writeln!(
                out,
                "  {:<width$}  {}  held {}{notes}",
                t.strongest_lock.as_str(),
                t.table,
                ms(t.held_ms),
            );
        }
        if !m.atomic {
            out.push_str(
                "  (statements commit one by one: their locks end with them and are not read)\n",
            );
            // What a non-atomic migration rewrote is still measured.
            for s in &m.statements {
                for t in &s.rewritten {
                    let _ = writeln!(out, "  rewritten  {t}  in {}", ms(s.duration_ms));
                }
            }
        }
    }
    out
}
