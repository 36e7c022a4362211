//! `migsnap lint`: `migsnap::lint` over the plan (`migsnap::plan`), with
//! the rules' levels from `[tool.migsnap] lint-rules`, a baseline, and text,
//! JSON or GitHub annotations.

use crate::cli::{CheckFormat, LintArgs};
use crate::settings::Settings;
use migsnap::check::{self, FindingKind};
use migsnap::error::{exit, Result};
use migsnap::lint::{LintFinding, RuleLevel, Severity, UndeclaredIndex};
use migsnap::plan::{Against, Base, SCHEMA_VERSION};
use migsnap::report::Events;
use migsnap::session::Session;
use serde::{Deserialize, Serialize};

#[derive(Serialize)]
struct Report<'a> {
    schema_version: u32,
    base: &'a Base,
    /// `app.name` of every migration linted.
    migrations: Vec<String>,
    findings: &'a [LintFinding],
    summary: Summary,
}

#[derive(Serialize)]
struct Summary {
    total: usize,
    errors: usize,
    /// Findings on tables `--stats-from` measured as small.
    notes: usize,
    baselined: usize,
}

/// What identifies a finding across runs: not its line, which moves.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct BaselineEntry {
    rule: String,
    migration: String,
    operation: Option<usize>,
    statement: Option<String>,
}

impl BaselineEntry {
    fn of(f: &LintFinding) -> BaselineEntry {
        BaselineEntry {
            rule: f.rule.to_string(),
            migration: f.migration.clone(),
            operation: f.operation,
            statement: f.statement.clone(),
        }
    }
}

pub async fn run(settings: &Settings, args: &LintArgs, ui: &Events) -> Result<u8> {
    let against = match &args.against {
        Some(url) => Against::Database(url.clone()),
        None => Against::Snapshot,
    };
    let targets = super::plan::targets(&args.migrations);
    // One key and one connection for the plan, check's cache and the trace.
    let session = settings.session();
    let mut planned = migsnap::plan::plan(&session, &against, &targets, true, ui).await?;
    super::plan::project_relative(&mut planned.insight, settings);
    let undeclared = undeclared_indexes(settings, &session, ui).await?;
    let traced = traced(settings, &session, args, &targets, ui).await?;
    drop(session);
    let mut findings =
        migsnap::lint::lint(&planned.insight, &undeclared, &traced, &settings.lint_rules);
    if let Some(url) = &args.stats_from {
        let tables = migsnap::lint::tables(&findings);
        let sizes = migsnap::plan::table_sizes(url, &tables).await?;
        migsnap::lint::weigh(&mut findings, &sizes);
    }

    let baseline = super::Baseline {
        write: args.write_baseline.as_deref(),
        read: args.baseline.as_deref(),
        command: "migsnap lint",
    };
    let Some(baselined) = baseline.apply(&mut findings, BaselineEntry::of, ui)? else {
        return Ok(exit::OK);
    };
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let notes = findings
        .iter()
        .filter(|f| f.severity == Severity::Note)
        .count();
    let summary = Summary {
        total: findings.len(),
        errors,
        notes,
        baselined,
    };
    match args.format.or_json(args.json) {
        CheckFormat::Json => super::print_json(&Report {
            schema_version: SCHEMA_VERSION,
            base: &planned.base,
            migrations: planned
                .insight
                .migrations
                .iter()
                .map(|m| format!("{}.{}", m.app, m.name))
                .collect(),
            findings: &findings,
            summary,
        })?,
        CheckFormat::Github => super::print_stdout(&github(&findings)),
        CheckFormat::Text => super::print_stdout(&text(&findings, &summary)),
    }
    Ok(if errors > 0 { exit::FINDINGS } else { exit::OK })
}

/// `check`'s indexes that only migrations make, for the
/// `runsql-index-not-in-model-state` rule: from its cached results for the
/// current key only. Computing them needs a database built from Django's
/// model state (seconds, and a second Python start); `lint` says so and
/// leaves the rule out instead.
async fn undeclared_indexes(
    settings: &Settings,
    session: &Session<'_>,
    ui: &Events,
) -> Result<Vec<UndeclaredIndex>> {
    const RULE: &str = "runsql-index-not-in-model-state";
    if settings.lint_rules.get(RULE) == Some(&RuleLevel::Off) {
        return Ok(vec![]);
    }
    let Some(checked) = check::cached(session, ui).await? else {
        ui.info(format!(
            "rule {RULE} skipped: no `migsnap check` results for this key (run `migsnap check` first)"
        ));
        return Ok(vec![]);
    };
    Ok(checked
        .findings
        .into_iter()
        .filter(|f| f.kind == FindingKind::OnlyInMigrations)
        .filter_map(|f| {
            let m = f.migration?;
            Some(UndeclaredIndex {
                table: format!("{}.{}", f.schema, f.table),
                index: f.index,
                migration: format!("{}.{}", m.app, m.name),
                line: m.line,
            })
        })
        .collect())
}

/// What `trace` measures applying the same range, for the
/// `rewrite-under-exclusive-lock` rule: only with `--trace` (it applies
/// the migrations to a scratch clone, with `--rows` rows per table).
async fn traced(
    settings: &Settings,
    session: &Session<'_>,
    args: &LintArgs,
    targets: &[String],
    ui: &Events,
) -> Result<Vec<migsnap::django::TracedMigration>> {
    const RULE: &str = "rewrite-under-exclusive-lock";
    if settings.lint_rules.get(RULE) == Some(&RuleLevel::Off) {
        return Ok(vec![]);
    }
    if !args.trace {
        ui.info(format!(
            "rule {RULE} skipped: it measures, pass --trace to apply the migrations to a scratch clone"
        ));
        return Ok(vec![]);
    }
    let traced = migsnap::trace::trace(session, targets, args.rows, ui).await?;
    Ok(traced.trace.migrations)
}

fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Note => "note",
    }
}

fn location(f: &LintFinding) -> String {
    match (&f.path, f.line) {
        (Some(p), Some(l)) => format!("{p}:{l}"),
        (Some(p), None) => p.clone(),
        _ => "?".into(),
    }
}

fn text(findings: &[LintFinding], s: &Summary) -> String {
    let mut out = String::new();
    for f in findings {
        out.push_str(&format!(
            "{}[{}]: {}\n",
            severity(f.severity),
            f.rule,
            f.message
        ));
        if let Some(sql) = &f.statement {
            out.push_str(&format!("    {sql}\n"));
        }
        out.push_str(&format!("    --> {} ({})\n", location(f), f.migration));
        out.push_str(&format!("    hint: {}\n", f.hint));
    }
    out.push_str(&super::findings_summary(
        s.total,
        s.errors,
        "error(s)",
        s.baselined,
    ));
    out
}

/// GitHub Actions annotations on the operation's line.
fn github(findings: &[LintFinding]) -> String {
    findings
        .iter()
        .map(|f| {
            super::annotation(
                // GitHub's word for a note.
                match f.severity {
                    Severity::Note => "notice",
                    s => severity(s),
                },
                f.path.as_deref(),
                f.line.map(|l| l as usize),
                &format!("migsnap lint: {}", f.rule),
                &format!("{} (hint: {})", f.message, f.hint),
            )
        })
        .collect()
}
