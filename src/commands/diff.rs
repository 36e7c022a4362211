//! `migsnap diff --against URL`: `migsnap::diff` rendered as text, GitHub
//! annotations or one versioned JSON document; exit 1 on any difference.

use crate::cli::{CheckFormat, DiffArgs};
use crate::settings::Settings;
use migsnap::diff::{DiffKind, Difference};
use migsnap::error::{exit, Result};
use migsnap::key::Key;
use migsnap::report::Events;
use migsnap::schema::SCHEMA_VERSION;

#[derive(serde::Serialize)]
struct Report<'a> {
    schema_version: u32,
    key: &'a Key,
    /// The URL compared against, without its password.
    database: &'a str,
    differences: &'a [Difference],
    summary: Summary,
}

#[derive(serde::Serialize)]
struct Summary {
    total: usize,
    /// Those that make the run exit 1 (`fails: true`).
    failing: usize,
}

pub async fn run(settings: &Settings, args: &DiffArgs, ui: &Events) -> Result<u8> {
    let diffed = migsnap::diff::against(&settings.session(), &args.against, ui).await?;
    let differences = &diffed.differences;
    let failing = differences.iter().filter(|d| d.fails).count();
    match args.format.or_json(args.json) {
        CheckFormat::Json => super::print_json(&Report {
            schema_version: SCHEMA_VERSION,
            key: &diffed.key,
            database: &diffed.database,
            differences,
            summary: Summary {
                total: differences.len(),
                failing,
            },
        })?,
        CheckFormat::Github => super::print_stdout(&github(differences)),
        CheckFormat::Text => {
            ui.info(format!(
                "snapshot {} versus `{}`",
                diffed.key.short(),
                diffed.database
            ));
            super::print_stdout(&text(differences));
        }
    }
    Ok(if failing == 0 {
        exit::OK
    } else {
        exit::FINDINGS
    })
}

fn describe(d: &Difference) -> String {
    let schema = d.schema.as_deref().unwrap_or("");
    let table = format!("`{schema}.{}`", d.table.as_deref().unwrap_or(""));
    let sequence = format!("`{schema}.{}`", d.name.as_deref().unwrap_or(""));
    let owner = match &d.table {
        Some(_) => format!(" (of a column of {table})"),
        None => String::new(),
    };
    let name = d.name.as_deref().unwrap_or("");
    let both = || {
        (
            d.expected.as_deref().unwrap_or("none"),
            d.actual.as_deref().unwrap_or("none"),
        )
    };
    match d.kind {
        DiffKind::MissingTable => format!("table {table} is made by the migrations but missing from the database"),
        DiffKind::ExtraTable => format!("table {table} is in the database but not made by the migrations"),
        DiffKind::MissingColumn => format!("column `{name}` of {table} is made by the migrations but missing from the database"),
        DiffKind::ExtraColumn => format!("column `{name}` of {table} is in the database but not made by the migrations"),
        DiffKind::ColumnType | DiffKind::ColumnNullable | DiffKind::ColumnDefault => {
            let what = match d.kind {
                DiffKind::ColumnType => "type",
                DiffKind::ColumnNullable => "nullability",
                _ => "default",
            };
            let (e, a) = both();
            format!("column `{name}` of {table} differs in {what}: `{e}` in the migrations, `{a}` in the database")
        }
        DiffKind::MissingIndex => format!("index `{name}` on {table} is made by the migrations but missing from the database"),
        DiffKind::ExtraIndex => format!("index `{name}` on {table} is in the database but not made by the migrations"),
        DiffKind::IndexDefinition => format!("index `{name}` on {table} has another definition in the database"),
        DiffKind::IndexRenamed | DiffKind::ConstraintRenamed => format!(
            "{} `{name}` on {table} is named `{}` in the database",
            if d.kind == DiffKind::IndexRenamed { "index" } else { "constraint" },
            d.database_name.as_deref().unwrap_or("?")
        ),
        DiffKind::MissingConstraint => format!("constraint `{name}` on {table} is made by the migrations but missing from the database"),
        DiffKind::ExtraConstraint => format!("constraint `{name}` on {table} is in the database but not made by the migrations"),
        DiffKind::ConstraintDefinition => format!("constraint `{name}` on {table} has another definition in the database"),
        DiffKind::MissingSequence => format!("sequence {sequence}{owner} is made by the migrations but missing from the database"),
        DiffKind::ExtraSequence => format!("sequence {sequence}{owner} is in the database but not made by the migrations"),
        DiffKind::SequenceDefinition => match &d.database_name {
            Some(other) => format!("sequence {sequence}{owner} is `{other}` in the database, with another definition"),
            None => format!("sequence {sequence}{owner} has another definition in the database"),
        },
        DiffKind::MissingExtension => format!("extension `{name}` is created by the migrations but missing from the database"),
        DiffKind::ExtraExtension => format!("extension `{name}` is in the database but not created by the migrations (not a failure)"),
        DiffKind::ExtensionVersion => {
            let (e, a) = both();
            format!("extension `{name}` is version `{a}` in the database, `{e}` where the migrations ran (not a failure)")
        }
    }
}

fn text(differences: &[Difference]) -> String {
    let mut out = String::new();
    for d in differences {
        out.push_str(&format!("{}: {}\n", d.kind.as_str(), describe(d)));
        if let Some(e) = &d.expected {
            out.push_str(&format!("    migrations: {e}\n"));
        }
        if let Some(a) = &d.actual {
            out.push_str(&format!("    database:   {a}\n"));
        }
        if let Some(m) = &d.migration {
            out.push_str(&format!(
                "    --> {}:{} ({}.{})\n",
                m.path, m.line, m.app, m.name
            ));
        }
    }
    let failing = differences.iter().filter(|d| d.fails).count();
    if failing == differences.len() {
        out.push_str(&format!("{} difference(s)\n", differences.len()));
    } else {
        out.push_str(&format!(
            "{} difference(s), {failing} failing\n",
            differences.len()
        ));
    }
    out
}

/// GitHub Actions annotations, on the migration's line where known.
fn github(differences: &[Difference]) -> String {
    differences
        .iter()
        .map(|d| {
            super::annotation(
                if d.fails { "error" } else { "warning" },
                d.migration.as_ref().map(|m| m.path.as_str()),
                d.migration.as_ref().map(|m| m.line),
                &format!("migsnap diff: {}", d.kind.as_str()),
                &describe(d),
            )
        })
        .collect()
}
