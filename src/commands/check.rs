//! `migsnap check`: run `migsnap::check::run`, apply the baseline and the
//! failing kinds, and render the findings (text, GitHub annotations, JSON).

use crate::cli::{CheckArgs, CheckFormat};
use crate::settings::Settings;
use migsnap::check::{self, BaselineEntry, Finding, FindingKind};
use migsnap::error::{exit, Result};
use migsnap::key::Key;
use migsnap::report::Events;
use serde::Serialize;
use std::collections::BTreeSet;

#[derive(Serialize)]
struct Report<'a> {
    key: &'a Key,
    findings: &'a [Finding],
    summary: Summary,
}

#[derive(Serialize)]
struct Summary {
    total: usize,
    failing: usize,
    baselined: usize,
}

pub async fn run(settings: &Settings, args: &CheckArgs, ui: &Events) -> Result<u8> {
    let check::Checked { key, mut findings } =
        check::run(&settings.session(), args.refresh, ui).await?;
    let fail_on: BTreeSet<FindingKind> = settings.check_fail_on.iter().copied().collect();
    for f in &mut findings {
        f.fails = fail_on.contains(&f.kind);
    }

    let baseline = super::Baseline {
        write: args.write_baseline.as_deref(),
        read: args.baseline.as_deref(),
        command: "migsnap check",
    };
    let Some(baselined) = baseline.apply(&mut findings, BaselineEntry::of, ui)? else {
        return Ok(exit::OK);
    };

    let failing = findings.iter().filter(|f| f.fails).count();
    let summary = Summary {
        total: findings.len(),
        failing,
        baselined,
    };
    match args.format.or_json(args.json) {
        CheckFormat::Json => super::print_json(&Report {
            key: &key,
            findings: &findings,
            summary,
        })?,
        CheckFormat::Github => super::print_stdout(&github(&findings)),
        CheckFormat::Text => super::print_stdout(&text(&findings, &summary)),
    }
    Ok(if failing > 0 {
        exit::FINDINGS
    } else {
        exit::OK
    })
}

fn describe(f: &Finding) -> String {
    let table = format!("{}.{}", f.schema, f.table);
    match f.kind {
        FindingKind::OnlyInMigrations if !f.table_in_model_state => format!(
            "index `{}` on `{table}` exists only in the migrated database (the table is not in the model state)",
            f.index
        ),
        FindingKind::OnlyInMigrations => {
            format!("index `{}` on `{table}` is created by migrations but not declared in the model state", f.index)
        }
        FindingKind::OnlyInModelState => {
            format!("index `{}` on `{table}` is declared in the model state but missing after migrating", f.index)
        }
        FindingKind::SameDefinitionOtherName => format!(
            "index `{}` on `{table}` is named `{}` in the model state",
            f.index,
            f.model_state_index.as_deref().unwrap_or("?")
        ),
        FindingKind::DifferentDefinition => format!("index `{}` on `{table}` differs from the model state", f.index),
        FindingKind::InvalidIndex => format!("index `{}` on `{table}` is invalid (indisvalid = false)", f.index),
        FindingKind::ConflictInModelState => format!(
            "index `{}` on `{table}` is declared twice in the model state, with different definitions",
            f.index
        ),
    }
}

fn text(findings: &[Finding], s: &Summary) -> String {
    let mut out = String::new();
    for f in findings {
        let status = if f.fails { "error" } else { "note" };
        out.push_str(&format!("{status}[{}]: {}\n", f.kind.as_str(), describe(f)));
        out.push_str(&format!("    {}\n", f.definition));
        if let Some(d) = &f.model_state_definition {
            out.push_str(&format!("    model state: {d}\n"));
        }
        match &f.migration {
            Some(m) => out.push_str(&format!(
                "    --> {}:{} ({}.{})\n",
                m.path, m.line, m.app, m.name
            )),
            None => out.push_str("    --> no migration mentions this index\n"),
        }
        if let Some(l) = &f.left_by {
            out.push_str(&format!(
                "    the name is left from `{}` before {} renamed it (PostgreSQL keeps index names when a table or column is renamed)\n",
                l.old_name, l.operation
            ));
        }
    }
    out.push_str(&super::findings_summary(
        s.total,
        s.failing,
        "failing",
        s.baselined,
    ));
    out
}

/// GitHub Actions workflow commands: annotations on the migration's line.
fn github(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| {
            super::annotation(
                if f.fails { "error" } else { "warning" },
                f.migration.as_ref().map(|m| m.path.as_str()),
                f.migration.as_ref().map(|m| m.line),
                &format!("migsnap check: {}", f.kind.as_str()),
                &format!("{}: {}", describe(f), f.definition),
            )
        })
        .collect()
}
