//! `lint`: rules over a plan's operations and SQL (issue #13), each finding
//! with a rule id, a severity, a message, a fix hint and the file and line
//! of the operation. The SQL is Django's own (collected per operation by
//! the shim's plan mode), so the rules read what PostgreSQL would run.

use crate::django::{Insight, PlannedMigration, PlannedOperation};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

/// What `[tool.migsnap] lint-rules` may set a rule to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleLevel {
    Off,
    Warning,
    Error,
}

/// Every rule: id, default severity, what it means, how to fix it.
pub const RULES: &[(&str, Severity, &str)] = &[
    (
        "index-not-concurrent",
        Severity::Error,
        "create the index with AddIndexConcurrently (django.contrib.postgres.operations) in a migration with atomic = False",
    ),
    (
        "concurrent-in-atomic",
        Severity::Error,
        "set atomic = False on the migration: CONCURRENTLY cannot run inside a transaction",
    ),
    (
        "volatile-default",
        Severity::Error,
        "add the column nullable without the default, backfill in batches, then set the default and NOT NULL",
    ),
    (
        "not-null-without-default",
        Severity::Error,
        "give the field a default (or db_default), or add it nullable, backfill, then make it NOT NULL",
    ),
    (
        "alter-column-type",
        Severity::Warning,
        "a type change rewrites the table under an ACCESS EXCLUSIVE lock (raising a varchar length does not): add a new column, backfill, switch",
    ),
    (
        "constraint-not-valid",
        Severity::Warning,
        "add the constraint NOT VALID (RunSQL or SeparateDatabaseAndState), then VALIDATE CONSTRAINT in a later migration",
    ),
    (
        "run-python-no-reverse",
        Severity::Warning,
        "pass reverse_code (migrations.RunPython.noop if there is nothing to undo)",
    ),
    (
        "run-sql-no-reverse",
        Severity::Warning,
        "pass reverse_sql (migrations.RunSQL.noop if there is nothing to undo)",
    ),
    (
        "runsql-index-not-in-model-state",
        Severity::Warning,
        "declare the index in the model's Meta.indexes (wrap the RunSQL in SeparateDatabaseAndState with an AddIndex state operation), so databases built from the models (--nomigrations) have it too",
    ),
];

/// An index the migrations create that Django's model state does not
/// declare, as `check` found and attributed it: the input of the
/// `runsql-index-not-in-model-state` rule (`lint` itself compares no
/// catalogs).
#[derive(Debug, Clone)]
pub struct UndeclaredIndex {
    /// `schema.table`.
    pub table: String,
    pub index: String,
    /// `app.name` of the migration that creates it.
    pub migration: String,
    /// The line of the operation that creates it.
    pub line: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct LintFinding {
    pub rule: &'static str,
    pub severity: Severity,
    pub message: String,
    pub hint: &'static str,
    /// `app.name`.
    pub migration: String,
    pub path: Option<String>,
    pub line: Option<u32>,
    /// Index of the operation in the migration's `operations`.
    pub operation: Option<usize>,
    /// The statement the rule matched, if it was a statement.
    pub statement: Option<String>,
}

/// Run every rule not turned off over the plan. `levels` overrides rules'
/// severities (`off` drops the rule). `undeclared`: `check`'s indexes
/// that only migrations make (empty when there are no check results).
pub fn lint(
    insight: &Insight,
    undeclared: &[UndeclaredIndex],
    levels: &BTreeMap<String, RuleLevel>,
) -> Vec<LintFinding> {
    let mut out = Vec::new();
    undeclared_rule(insight, undeclared, &mut out);
    // Tables created inside the range: changing them locks nobody.
    let mut created: BTreeSet<String> = BTreeSet::new();
    for m in &insight.migrations {
        let mut statements: Vec<(Option<&PlannedOperation>, &str)> = vec![];
        for op in &m.operations {
            operation_rules(m, op, &mut out);
            for s in op.sql.iter().flatten() {
                statements.push((Some(op), s));
            }
        }
        let owners = m.deferred_operations.as_deref().unwrap_or_default();
        for (i, s) in m.deferred_sql.iter().flatten().enumerate() {
            let owner = owners.get(i).copied().flatten();
            statements.push((
                owner.and_then(|o| m.operations.iter().find(|op| op.index == o)),
                s,
            ));
        }
        for (op, s) in statements {
            if let Some(t) = created_table(s) {
                created.insert(t);
            }
            statement_rules(m, op, s, &created, &mut out);
        }
    }
    out.retain_mut(|f| match levels.get(f.rule) {
        Some(RuleLevel::Off) => false,
        Some(RuleLevel::Warning) => {
            f.severity = Severity::Warning;
            true
        }
        Some(RuleLevel::Error) => {
            f.severity = Severity::Error;
            true
        }
        None => true,
    });
    out
}

fn finding(
    rule: &'static str,
    m: &PlannedMigration,
    op: Option<&PlannedOperation>,
    message: String,
    statement: Option<&str>,
) -> LintFinding {
    let (severity, hint) = RULES
        .iter()
        .find(|(id, ..)| *id == rule)
        .map(|(_, s, h)| (*s, *h))
        .unwrap_or((Severity::Warning, ""));
    LintFinding {
        rule,
        severity,
        message,
        hint,
        migration: format!("{}.{}", m.app, m.name),
        path: m.path.as_ref().map(|p| p.to_string_lossy().into_owned()),
        line: op.and_then(|o| o.line),
        operation: op.map(|o| o.index),
        statement: statement.map(str::to_string),
    }
}

fn operation_rules(m: &PlannedMigration, op: &PlannedOperation, out: &mut Vec<LintFinding>) {
    let t = op.r#type.as_str();
    if m.atomic && matches!(t, "AddIndexConcurrently" | "RemoveIndexConcurrently") {
        out.push(finding(
            "concurrent-in-atomic",
            m,
            Some(op),
            format!("{t} in an atomic migration fails: CONCURRENTLY cannot run in a transaction"),
            None,
        ));
    }
    if t == "RunPython" && !op.arguments.contains_key("reverse_code") {
        out.push(finding(
            "run-python-no-reverse",
            m,
            Some(op),
            "RunPython without reverse_code: the migration cannot be unapplied".into(),
            None,
        ));
    }
    if t == "RunSQL" && !op.arguments.contains_key("reverse_sql") {
        out.push(finding(
            "run-sql-no-reverse",
            m,
            Some(op),
            "RunSQL without reverse_sql: the migration cannot be unapplied".into(),
            None,
        ));
    }
}

/// `runsql-index-not-in-model-state`: each undeclared index made by a
/// migration of the plan, at the RunSQL/RunPython operation that makes it.
fn undeclared_rule(insight: &Insight, undeclared: &[UndeclaredIndex], out: &mut Vec<LintFinding>) {
    for u in undeclared {
        let Some(m) = insight
            .migrations
            .iter()
            .find(|m| format!("{}.{}", m.app, m.name) == u.migration)
        else {
            continue;
        };
        let op = m
            .operations
            .iter()
            .find(|op| op.line.map(|l| l as usize) == Some(u.line));
        let how = op.map_or("a migration", |o| o.r#type.as_str());
        let mut f = finding(
            "runsql-index-not-in-model-state",
            m,
            op,
            format!(
                "index `{}` on `{}` is created by {how} but not declared in the model state: a database built from the models lacks it",
                u.index, u.table
            ),
            None,
        );
        // The operation may be missing from the plan (`--exclude-op`), its
        // line is still known.
        f.line = f.line.or(u32::try_from(u.line).ok());
        out.push(f);
    }
}

/// Functions whose DEFAULT makes PostgreSQL rewrite every row of the table
/// (a non-volatile default is stored once, PostgreSQL 11 and later).
const VOLATILE: &[&str] = &[
    "RANDOM(",
    "CLOCK_TIMESTAMP(",
    "TIMEOFDAY(",
    "GEN_RANDOM_UUID(",
    "UUID_GENERATE_V1(",
    "UUID_GENERATE_V4(",
    "NEXTVAL(",
    "STATEMENT_TIMESTAMP(",
];

fn statement_rules(
    m: &PlannedMigration,
    op: Option<&PlannedOperation>,
    sql: &str,
    created: &BTreeSet<String>,
    out: &mut Vec<LintFinding>,
) {
    let upper = sql.to_ascii_uppercase();
    let words: Vec<&str> = upper.split_whitespace().collect();
    let starts = |prefix: &[&str]| words.len() >= prefix.len() && words[..prefix.len()] == *prefix;
    let existing = |table: Option<String>| table.filter(|t| !created.contains(t));
    let mut push = |rule, message: String| out.push(finding(rule, m, op, message, Some(sql)));

    if (starts(&["CREATE", "INDEX"]) || starts(&["CREATE", "UNIQUE", "INDEX"]))
        && !upper.contains(" CONCURRENTLY ")
    {
        if let Some(t) = existing(index_table(sql)) {
            push(
                "index-not-concurrent",
                format!("CREATE INDEX without CONCURRENTLY on the existing table `{t}` blocks its writes while the index builds"),
            );
        }
    }
    if upper.contains(" CONCURRENTLY ") && m.atomic && op.is_some_and(|o| o.r#type == "RunSQL") {
        push(
            "concurrent-in-atomic",
            "CONCURRENTLY in an atomic migration fails: it cannot run in a transaction".into(),
        );
    }
    if !starts(&["ALTER", "TABLE"]) {
        return;
    }
    let Some((table, actions)) = altered_table(sql) else {
        return;
    };
    let Some(table) = existing(Some(table)) else {
        return;
    };
    for clause in split_clauses(&actions.to_ascii_uppercase()) {
        let clause = clause.trim();
        if let Some(column) = clause.strip_prefix("ADD COLUMN ") {
            let has_default = column.contains(" DEFAULT ");
            if has_default && VOLATILE.iter().any(|f| column.contains(f)) {
                push(
                    "volatile-default",
                    format!("adding a column with a volatile default to `{table}` rewrites every row under an exclusive lock"),
                );
            } else if !has_default
                && column.contains(" NOT NULL")
                && !column.contains(" GENERATED ")
            {
                push(
                    "not-null-without-default",
                    format!("adding a NOT NULL column without a default to `{table}` fails if it has rows"),
                );
            }
            // Django adds a foreign key column with its constraint inline,
            // which cannot be NOT VALID.
            if column.contains(" REFERENCES ") {
                push(
                    "constraint-not-valid",
                    format!("adding a column with a foreign key to `{table}` validates it under a lock (an inline constraint cannot be NOT VALID)"),
                );
            }
        }
        if clause.starts_with("ALTER COLUMN ") && clause.contains(" TYPE ") {
            push(
                "alter-column-type",
                format!("changing a column's type on `{table}` may rewrite the table under an exclusive lock"),
            );
        }
        if clause.starts_with("ADD CONSTRAINT ")
            && (clause.contains(" FOREIGN KEY ") || clause.contains(" CHECK "))
            && !clause.contains(" NOT VALID")
        {
            push(
                "constraint-not-valid",
                format!("adding a foreign key or check constraint to `{table}` without NOT VALID scans the table under a lock"),
            );
        }
    }
}

/// The comma-separated actions of an ALTER TABLE (what follows its
/// table), outside parentheses and quotes, up to the first `;`.
fn split_clauses(body: &str) -> Vec<&str> {
    let (mut depth, mut quoted, mut start, mut parts) = (0i32, false, 0, vec![]);
    for (i, c) in body.char_indices() {
        match c {
            '\'' | '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                parts.push(&body[start..i]);
                start = i + 1;
            }
            ';' if !quoted && depth == 0 => {
                parts.push(&body[start..i]);
                return parts;
            }
            _ => {}
        }
    }
    parts.push(&body[start..]);
    parts
}

/// The (possibly schema-qualified) identifier at the start of `rest`:
/// `"quoted"` or a bare word (folded to lower case), and what follows it.
fn identifier(rest: &str) -> Option<(String, &str)> {
    let rest = rest.trim_start();
    let (name, after) = if let Some(q) = rest.strip_prefix('"') {
        let end = q.find('"')?;
        (q[..end].to_string(), &q[end + 1..])
    } else {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            return None;
        }
        (rest[..end].to_ascii_lowercase(), &rest[end..])
    };
    match after.strip_prefix('.') {
        // `schema.table`: the table is what counts.
        Some(more) => identifier(more),
        None => Some((name, after)),
    }
}

fn after_keywords<'a>(sql: &'a str, keywords: &[&str]) -> Option<&'a str> {
    let mut rest = sql.trim_start();
    for k in keywords {
        let head = rest.get(..k.len())?;
        if !head.eq_ignore_ascii_case(k) {
            return None;
        }
        rest = rest[k.len()..].trim_start();
    }
    Some(rest)
}

fn skip_optional<'a>(mut rest: &'a str, words: &[&str]) -> &'a str {
    for w in words {
        if let Some(r) = after_keywords(rest, &[w]) {
            rest = r;
        }
    }
    rest
}

fn created_table(sql: &str) -> Option<String> {
    let rest = after_keywords(sql, &["CREATE", "TABLE"])?;
    identifier(skip_optional(rest, &["IF NOT EXISTS"])).map(|(t, _)| t)
}

/// The table an ALTER TABLE changes, and its actions.
fn altered_table(sql: &str) -> Option<(String, &str)> {
    let rest = after_keywords(sql, &["ALTER", "TABLE"])?;
    identifier(skip_optional(rest, &["IF EXISTS", "ONLY"]))
}

fn index_table(sql: &str) -> Option<String> {
    let upper = sql.to_ascii_uppercase();
    let on = upper.find(" ON ")?;
    identifier(skip_optional(&sql[on + 4..], &["ONLY"])).map(|(t, _)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_read_from_the_statements() {
        assert_eq!(
            index_table(r#"CREATE INDEX "a_b_idx" ON "app_model" ("b")"#).as_deref(),
            Some("app_model")
        );
        assert_eq!(
            index_table("CREATE INDEX x ON ONLY app_model USING gin (payload)").as_deref(),
            Some("app_model")
        );
        let (t, rest) =
            altered_table(r#"ALTER TABLE "t" ADD COLUMN "c" integer DEFAULT 0 NOT NULL"#)
                .expect("t");
        assert_eq!(
            (t.as_str(), rest.trim()),
            ("t", r#"ADD COLUMN "c" integer DEFAULT 0 NOT NULL"#)
        );
        let (t, _) = altered_table("alter table ONLY public.Orders add column x int").expect("t");
        assert_eq!(t, "orders");
        assert_eq!(
            created_table(r#"CREATE TABLE "t" ("id" bigint)"#).as_deref(),
            Some("t")
        );
        let clauses = split_clauses(
            r#" ADD COLUMN "c" numeric(10, 2) NOT NULL, ADD CONSTRAINT "k" CHECK ("c" > 0); SET CONSTRAINTS x IMMEDIATE"#,
        );
        assert_eq!(clauses.len(), 2, "{clauses:?}");
    }
}
