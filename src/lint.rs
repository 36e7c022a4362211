//! `lint`: rules over a plan's operations and SQL (issue #13), each finding
//! with a rule id, a severity, a message, a fix hint and the file and line
//! of the operation. The SQL is Django's own (collected per operation by
//! the shim's plan mode), so the rules read what PostgreSQL would run.

use crate::django::{Insight, LockMode, PlannedMigration, PlannedOperation, TracedMigration};
use pg_query::protobuf::{
    AlterTableCmd, AlterTableType, ColumnDef, ConstrType, Constraint, RangeVar,
};
use pg_query::{NodeEnum, NodeRef};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// A finding on a table `--stats-from` measured as small: reported,
    /// never failing the run.
    Note,
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
        "stored-generated-column",
        Severity::Error,
        "add a plain nullable column and fill it in batches (on PostgreSQL 18, a VIRTUAL generated column stores nothing and rewrites nothing)",
    ),
    (
        "set-not-null",
        Severity::Warning,
        "add CHECK (column IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT in a later migration, then SET NOT NULL: PostgreSQL 12 and later trust the validated check instead of scanning",
    ),
    (
        "unique-not-concurrent",
        Severity::Error,
        "build the unique index first with CREATE UNIQUE INDEX CONCURRENTLY (a migration with atomic = False), then ADD CONSTRAINT … UNIQUE USING INDEX",
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
        "rewrite-under-exclusive-lock",
        Severity::Error,
        "do not rewrite a table in use: add a new column, backfill it in batches, switch over; or run the migration in a maintenance window",
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
    /// The existing table the statement changes, when a statement rule
    /// fired (`--stats-from` looks its size up by this name).
    pub table: Option<String>,
}

/// A table's size in the database `--stats-from` names: the planner's row
/// estimate (`None`: never analyzed) and its size on disk with indexes and
/// TOAST.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TableSize {
    pub rows: Option<i64>,
    pub bytes: i64,
}

/// Below both, a table is small: rewriting or scanning it under a lock is
/// over in milliseconds, so its findings drop to notes.
pub const SMALL_ROWS: i64 = 10_000;
pub const SMALL_BYTES: i64 = 8 * 1024 * 1024;

impl TableSize {
    pub fn is_small(&self) -> bool {
        self.bytes < SMALL_BYTES && self.rows.is_none_or(|r| r < SMALL_ROWS)
    }
}

/// Findings on tables `sizes` measured as small drop to notes, with the
/// size in the message; on a table it does not know (not in that
/// database), they stay as they are.
pub fn weigh(findings: &mut [LintFinding], sizes: &BTreeMap<String, TableSize>) {
    for f in findings {
        let Some(size) = f.table.as_ref().and_then(|t| sizes.get(t)) else {
            continue;
        };
        let rows = match size.rows {
            Some(r) => format!("about {r} rows"),
            None => "never analyzed".to_string(),
        };
        let size_text = crate::units::size(u64::try_from(size.bytes).unwrap_or(0));
        if size.is_small() {
            f.severity = Severity::Note;
            f.message
                .push_str(&format!(" (a small table: {rows}, {size_text})"));
        } else {
            f.message.push_str(&format!(" ({rows}, {size_text})"));
        }
    }
}

/// The existing tables the findings name, for `--stats-from` to measure.
pub fn tables(findings: &[LintFinding]) -> Vec<String> {
    let set: BTreeSet<&String> = findings.iter().filter_map(|f| f.table.as_ref()).collect();
    set.into_iter().cloned().collect()
}

/// Run every rule not turned off over the plan. `levels` overrides rules'
/// severities (`off` drops the rule). `undeclared`: `check`'s indexes
/// that only migrations make (empty when there are no check results).
/// `traced`: what `trace` measured applying the same range (empty when it
/// was not asked for).
pub fn lint(
    insight: &Insight,
    undeclared: &[UndeclaredIndex],
    traced: &[TracedMigration],
    levels: &BTreeMap<String, RuleLevel>,
) -> Vec<LintFinding> {
    let mut out = Vec::new();
    undeclared_rule(insight, undeclared, &mut out);
    rewrite_rule(insight, traced, &mut out);
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
            statement_rules(m, op, s, &mut created, &mut out);
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
        table: None,
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

/// `rewrite-under-exclusive-lock`: each statement `trace` saw give a table
/// that existed before the range a new file (a rewrite) while the
/// migration held ACCESS EXCLUSIVE on it, reported at its operation. The
/// lock is held from the statement that took it to the commit; outside a
/// transaction (a non-atomic migration) no lock is read, and a rewrite,
/// which always takes ACCESS EXCLUSIVE, holds it for the statement.
fn rewrite_rule(insight: &Insight, traced: &[TracedMigration], out: &mut Vec<LintFinding>) {
    let mut created: BTreeSet<&str> = BTreeSet::new();
    for t in traced {
        created.extend(t.new_tables.iter().map(String::as_str));
        let Some(m) = insight
            .migrations
            .iter()
            .find(|m| format!("{}.{}", m.app, m.name) == t.migration)
        else {
            continue;
        };
        // When each table's ACCESS EXCLUSIVE lock was taken.
        let mut exclusive: BTreeMap<&str, f64> = BTreeMap::new();
        for s in &t.statements {
            for lock in s.locks.iter().flatten() {
                if lock.mode == LockMode::AccessExclusive {
                    exclusive.entry(lock.relation.as_str()).or_insert(s.at_ms);
                }
            }
            for table in &s.rewritten {
                if created.contains(table.as_str()) {
                    continue;
                }
                let held_ms = match (&s.locks, exclusive.get(table.as_str())) {
                    (None, _) => s.duration_ms,
                    (Some(_), Some(at)) => t.duration_ms - at,
                    (Some(_), None) => continue,
                };
                let op = s
                    .operation
                    .and_then(|i| m.operations.iter().find(|o| o.index == i));
                let mut f = finding(
                    "rewrite-under-exclusive-lock",
                    m,
                    op,
                    format!(
                        "`{table}` was rewritten under an ACCESS EXCLUSIVE lock, held {} on the scratch clone: reads and writes of it wait that long",
                        crate::units::duration(std::time::Duration::from_secs_f64(held_ms.max(0.0) / 1000.0))
                    ),
                    Some(s.sql.trim()),
                );
                f.table = Some(table.clone());
                out.push(f);
            }
        }
    }
}

/// Functions whose DEFAULT makes PostgreSQL rewrite every row of the table:
/// a volatile default is evaluated once a row. A non-volatile one (a
/// constant, `now()`, `statement_timestamp()`, both stable) is evaluated
/// once and stored in the catalog, PostgreSQL 11 and later.
const VOLATILE: &[&str] = &[
    "random",
    "random_normal",
    "clock_timestamp",
    "timeofday",
    "gen_random_uuid",
    "uuid_generate_v1",
    "uuid_generate_v1mc",
    "uuid_generate_v4",
    "uuidv4",
    "uuidv7",
    "nextval",
];

/// Column types that are a sequence default in disguise (`serial`): adding
/// one fills every existing row from the sequence.
const SERIAL: &[&str] = &[
    "smallserial",
    "serial",
    "bigserial",
    "serial2",
    "serial4",
    "serial8",
];

/// The rules over one piece of SQL an operation runs, read with
/// PostgreSQL's own grammar (libpg_query): a `RunSQL` may hold several
/// statements, quoted names and comments that a reading of the text would
/// get wrong. SQL the grammar cannot read (a psql meta-command, a
/// placeholder) gives no finding. Tables the statements create are added to
/// `created`: changing them later in the range locks nobody.
fn statement_rules(
    m: &PlannedMigration,
    op: Option<&PlannedOperation>,
    sql: &str,
    created: &mut BTreeSet<String>,
    out: &mut Vec<LintFinding>,
) {
    let Ok(parsed) = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT) else {
        return;
    };
    let several = parsed.protobuf.stmts.len() > 1;
    for raw in &parsed.protobuf.stmts {
        let Some(node) = raw.stmt.as_ref().and_then(|n| n.node.as_ref()) else {
            continue;
        };
        // The statement's own text when the SQL holds several.
        let text = match several {
            true => statement_text(sql, raw.stmt_location, raw.stmt_len),
            false => sql.trim(),
        };
        let table = |node: &NodeEnum| match node {
            NodeEnum::IndexStmt(i) => i.relation.as_ref().map(|r| r.relname.clone()),
            NodeEnum::AlterTableStmt(a) => a.relation.as_ref().map(|r| r.relname.clone()),
            _ => None,
        };
        let on = table(node);
        let mut push = |rule, message: String| {
            let mut f = finding(rule, m, op, message, Some(text));
            f.table = on.clone();
            out.push(f);
        };
        if is_concurrent(node) && m.atomic && op.is_some_and(|o| o.r#type == "RunSQL") {
            push(
                "concurrent-in-atomic",
                "CONCURRENTLY in an atomic migration fails: it cannot run in a transaction".into(),
            );
        }
        match node {
            NodeEnum::CreateStmt(c) => {
                if let Some(t) = &c.relation {
                    created.insert(qualified(t));
                }
            }
            NodeEnum::IndexStmt(i) if !i.concurrent => {
                if let Some(t) = existing(i.relation.as_ref(), created) {
                    push(
                        "index-not-concurrent",
                        format!("CREATE INDEX without CONCURRENTLY on the existing table `{t}` blocks its writes while the index builds"),
                    );
                }
            }
            NodeEnum::AlterTableStmt(a) => {
                let Some(table) = existing(a.relation.as_ref(), created) else {
                    continue;
                };
                for cmd in &a.cmds {
                    if let Some(NodeEnum::AlterTableCmd(cmd)) = &cmd.node {
                        alter_table_rules(table, cmd, &mut push);
                    }
                }
            }
            _ => {}
        }
    }
}

/// One action of an `ALTER TABLE` on a table that exists before the range.
fn alter_table_rules(
    table: &str,
    cmd: &AlterTableCmd,
    push: &mut impl FnMut(&'static str, String),
) {
    match cmd.subtype() {
        AlterTableType::AtAddColumn => {
            let Some(NodeEnum::ColumnDef(column)) = cmd.def.as_ref().and_then(|d| d.node.as_ref()) else {
                return;
            };
            add_column_rules(table, column, push);
        }
        AlterTableType::AtAlterColumnType => push(
            "alter-column-type",
            format!("changing a column's type on `{table}` may rewrite the table under an exclusive lock"),
        ),
        AlterTableType::AtSetNotNull => push(
            "set-not-null",
            format!(
                "SET NOT NULL on `{table}`.`{}` scans every row under an ACCESS EXCLUSIVE lock",
                cmd.name
            ),
        ),
        AlterTableType::AtSetExpression => push(
            "stored-generated-column",
            format!("changing a generated column's expression on `{table}` rewrites every row under an exclusive lock"),
        ),
        AlterTableType::AtAddConstraint => {
            let Some(NodeEnum::Constraint(k)) = cmd.def.as_ref().and_then(|d| d.node.as_ref()) else {
                return;
            };
            constraint_rules(table, k, push);
        }
        _ => {}
    }
}

fn add_column_rules(table: &str, column: &ColumnDef, push: &mut impl FnMut(&'static str, String)) {
    let constraints: Vec<&Constraint> = column
        .constraints
        .iter()
        .filter_map(|c| match &c.node {
            Some(NodeEnum::Constraint(k)) => Some(k.as_ref()),
            _ => None,
        })
        .collect();
    let has = |t: ConstrType| constraints.iter().any(|k| k.contype() == t);
    let default = constraints
        .iter()
        .find(|k| k.contype() == ConstrType::ConstrDefault)
        .and_then(|k| k.raw_expr.as_deref())
        .and_then(|e| e.node.as_ref());
    let type_name = column
        .type_name
        .as_ref()
        .and_then(|t| t.names.last())
        .and_then(|n| match &n.node {
            Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
            _ => None,
        })
        .unwrap_or_default();
    let stored = constraints.iter().any(|k| {
        // PostgreSQL 18 reads `GENERATED ALWAYS AS (…)` without a kind as
        // VIRTUAL; earlier majors only have STORED, and Django writes
        // STORED for `db_persist=True`.
        k.contype() == ConstrType::ConstrGenerated && k.generated_kind != "v"
    });
    if stored {
        push(
            "stored-generated-column",
            format!("adding a STORED generated column to `{table}` rewrites every row under an exclusive lock"),
        );
    } else if default.is_some_and(calls_volatile) || SERIAL.contains(&type_name) {
        push(
            "volatile-default",
            format!("adding a column with a volatile default to `{table}` rewrites every row under an exclusive lock"),
        );
    } else if has(ConstrType::ConstrIdentity) {
        push(
            "volatile-default",
            format!("adding an identity column to `{table}` rewrites every row under an exclusive lock to number them"),
        );
    } else if default.is_none() && has(ConstrType::ConstrNotnull) {
        push(
            "not-null-without-default",
            format!("adding a NOT NULL column without a default to `{table}` fails if it has rows"),
        );
    }
    // Django adds a foreign key column with its constraint inline, which
    // cannot be NOT VALID.
    if has(ConstrType::ConstrForeign) {
        push(
            "constraint-not-valid",
            format!("adding a column with a foreign key to `{table}` validates it under a lock (an inline constraint cannot be NOT VALID)"),
        );
    }
    if has(ConstrType::ConstrUnique) || has(ConstrType::ConstrPrimary) {
        push(
            "unique-not-concurrent",
            format!("adding a column with a UNIQUE or PRIMARY KEY constraint to `{table}` builds its index while writes are blocked"),
        );
    }
}

fn constraint_rules(table: &str, k: &Constraint, push: &mut impl FnMut(&'static str, String)) {
    match k.contype() {
        ConstrType::ConstrForeign | ConstrType::ConstrCheck if !k.skip_validation => push(
            "constraint-not-valid",
            format!("adding a foreign key or check constraint to `{table}` without NOT VALID scans the table under a lock"),
        ),
        // `USING INDEX` adopts an index built beforehand (concurrently,
        // if it was built well): nothing to build under the lock.
        ConstrType::ConstrUnique | ConstrType::ConstrPrimary | ConstrType::ConstrExclusion
            if k.indexname.is_empty() =>
        {
            push(
                "unique-not-concurrent",
                format!("adding a UNIQUE, PRIMARY KEY or EXCLUDE constraint to `{table}` builds its index while writes are blocked"),
            )
        }
        _ => {}
    }
}

/// The table's name when it exists before the range (not created by an
/// earlier statement of it). Compared with its schema: a table of the same
/// name made in another schema must not hide the existing one's findings.
fn existing<'a>(relation: Option<&'a RangeVar>, created: &BTreeSet<String>) -> Option<&'a str> {
    relation
        .filter(|r| !created.contains(&qualified(r)))
        .map(|r| r.relname.as_str())
}

/// `schema.table` as PostgreSQL resolves it for Django: an unqualified
/// name is `public`'s, the first schema of the default search_path that
/// Django's migrations run under.
fn qualified(r: &RangeVar) -> String {
    let schema = match r.schemaname.as_str() {
        "" => "public",
        s => s,
    };
    format!("{schema}.{}", r.relname)
}

/// Whether an expression calls a volatile function anywhere in it.
fn calls_volatile(expr: &NodeEnum) -> bool {
    expr.nodes().iter().any(|(n, ..)| match n {
        NodeRef::FuncCall(f) => f.funcname.last().is_some_and(|name| {
            matches!(&name.node, Some(NodeEnum::String(s)) if VOLATILE.contains(&s.sval.to_ascii_lowercase().as_str()))
        }),
        _ => false,
    })
}

/// Whether a statement runs CONCURRENTLY (and so cannot run in a
/// transaction).
fn is_concurrent(node: &NodeEnum) -> bool {
    match node {
        NodeEnum::IndexStmt(i) => i.concurrent,
        NodeEnum::DropStmt(d) => d.concurrent,
        NodeEnum::ReindexStmt(r) => r
            .params
            .iter()
            .any(|p| matches!(&p.node, Some(NodeEnum::DefElem(d)) if d.defname == "concurrently")),
        NodeEnum::RefreshMatViewStmt(r) => r.concurrent,
        NodeEnum::AlterTableStmt(a) => a.cmds.iter().any(|c| {
            matches!(&c.node, Some(NodeEnum::AlterTableCmd(cmd))
                if cmd.subtype() == AlterTableType::AtDetachPartition
                    && matches!(cmd.def.as_ref().and_then(|d| d.node.as_ref()),
                        Some(NodeEnum::PartitionCmd(p)) if p.concurrent))
        }),
        _ => false,
    }
}

/// One statement's text out of several, from the parser's byte offsets
/// (a length of 0 means "to the end").
fn statement_text(sql: &str, location: i32, len: i32) -> &str {
    let start = usize::try_from(location).unwrap_or(0).min(sql.len());
    let end = match usize::try_from(len) {
        Ok(0) | Err(_) => sql.len(),
        Ok(n) => (start + n).min(sql.len()),
    };
    sql.get(start..end).unwrap_or(sql).trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn migration() -> PlannedMigration {
        serde_json::from_value(serde_json::json!({
            "app": "catalog", "name": "0005_x", "path": null, "atomic": true,
            "initial": false, "applied": false, "dependencies": [], "replaces": [],
            "operations": [], "deferred_sql": null, "sql": null
        }))
        .expect("a planned migration")
    }

    /// The rules each statement of `sql` fires on `catalog_product`, an
    /// existing table.
    fn rules(sql: &str) -> Vec<&'static str> {
        let mut out = vec![];
        statement_rules(&migration(), None, sql, &mut BTreeSet::new(), &mut out);
        out.iter().map(|f| f.rule).collect()
    }

    #[test]
    fn what_rewrites_or_scans_an_existing_table() {
        let t = r#"ALTER TABLE "catalog_product" "#;
        assert_eq!(
            rules(&format!("{t}ADD COLUMN \"c\" integer DEFAULT 0 NOT NULL")),
            [] as [&str; 0]
        );
        assert_eq!(
            rules(&format!("{t}ADD COLUMN c integer NOT NULL")),
            ["not-null-without-default"]
        );
        assert_eq!(
            rules(&format!("{t}ADD COLUMN c uuid DEFAULT gen_random_uuid()")),
            ["volatile-default"]
        );
        assert_eq!(
            rules(&format!(
                "{t}ADD COLUMN c uuid DEFAULT (public.GEN_RANDOM_UUID())::uuid"
            )),
            ["volatile-default"]
        );
        // Stable, stored once: no rewrite.
        assert_eq!(
            rules(&format!(
                "{t}ADD COLUMN c timestamptz DEFAULT (STATEMENT_TIMESTAMP()) NOT NULL"
            )),
            [] as [&str; 0]
        );
        assert_eq!(
            rules(&format!("{t}ADD COLUMN c bigserial")),
            ["volatile-default"]
        );
        assert_eq!(
            rules(&format!(
                "{t}ADD COLUMN c integer GENERATED BY DEFAULT AS IDENTITY"
            )),
            ["volatile-default"]
        );
        assert_eq!(
            rules(&format!("{t}ADD COLUMN \"total\" numeric(10, 2) GENERATED ALWAYS AS ((\"price\" * 2)) STORED")),
            ["stored-generated-column"]
        );
        // PostgreSQL 18's virtual columns store nothing.
        assert_eq!(
            rules(&format!(
                "{t}ADD COLUMN c integer GENERATED ALWAYS AS (1) VIRTUAL"
            )),
            [] as [&str; 0]
        );
        assert_eq!(
            rules(&format!("{t}ALTER COLUMN \"sku\" SET NOT NULL")),
            ["set-not-null"]
        );
        assert_eq!(
            rules(&format!("{t}ALTER COLUMN \"sku\" TYPE text")),
            ["alter-column-type"]
        );
        assert_eq!(
            rules(&format!("{t}ADD CONSTRAINT k UNIQUE (sku)")),
            ["unique-not-concurrent"]
        );
        assert_eq!(
            rules(&format!("{t}ADD CONSTRAINT k UNIQUE USING INDEX k_idx")),
            [] as [&str; 0]
        );
        assert_eq!(
            rules(&format!("{t}ADD CONSTRAINT k CHECK (price > 0)")),
            ["constraint-not-valid"]
        );
        assert_eq!(
            rules(&format!("{t}ADD CONSTRAINT k CHECK (price > 0) NOT VALID")),
            [] as [&str; 0]
        );
        assert_eq!(
            rules(&format!("{t}ADD COLUMN p bigint NULL CONSTRAINT f REFERENCES catalog_category(id) DEFERRABLE INITIALLY DEFERRED")),
            ["constraint-not-valid"]
        );
        assert_eq!(
            rules(&format!("{t}ADD COLUMN c integer DEFAULT 0 NOT NULL, ALTER COLUMN d SET NOT NULL, ADD CONSTRAINT k CHECK (c > 0)")),
            ["set-not-null", "constraint-not-valid"]
        );
    }

    #[test]
    fn sql_is_read_as_postgresql_reads_it() {
        // A comment and a string that look like statements are neither.
        assert_eq!(
            rules("-- CREATE INDEX a ON catalog_product (x)\nSELECT 'ALTER TABLE t ADD COLUMN c int NOT NULL'"),
            [] as [&str; 0]
        );
        // Several statements in one RunSQL: each is read, and each finding
        // quotes its own statement.
        let mut out = vec![];
        statement_rules(
            &migration(),
            None,
            "CREATE TABLE \"new\" (id int); CREATE INDEX a ON \"new\" (id);\nCREATE INDEX b ON ONLY public.catalog_product USING gin (payload)",
            &mut BTreeSet::new(),
            &mut out,
        );
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].rule, "index-not-concurrent");
        assert_eq!(
            out[0].statement.as_deref(),
            Some("CREATE INDEX b ON ONLY public.catalog_product USING gin (payload)")
        );
        assert!(
            out[0].message.contains("`catalog_product`"),
            "{}",
            out[0].message
        );
        // A quoted name keeps its case; an unquoted one is folded.
        let mut created = BTreeSet::new();
        statement_rules(
            &migration(),
            None,
            "CREATE TABLE \"Orders\" (id int); CREATE TABLE Items (id int)",
            &mut created,
            &mut vec![],
        );
        assert_eq!(
            created.into_iter().collect::<Vec<_>>(),
            ["public.Orders", "public.items"]
        );
        // A table of the same name in another schema is another table: the
        // existing one's index still blocks its writes.
        assert_eq!(
            rules("CREATE TABLE archive.catalog_product (id int); CREATE INDEX i ON catalog_product (id)"),
            ["index-not-concurrent"]
        );
        assert_eq!(
            rules("CREATE TABLE public.fresh (id int); CREATE INDEX i ON fresh (id)"),
            [] as [&str; 0],
            "the same table, named both ways"
        );
        // What the grammar cannot read gives nothing, not a guess.
        assert_eq!(
            rules("CREATE INDEX %s ON catalog_product (x)"),
            [] as [&str; 0]
        );
    }

    #[test]
    fn a_measured_rewrite_is_reported_for_existing_tables_under_access_exclusive() {
        let mut m = migration();
        m.operations = vec![serde_json::from_value(serde_json::json!({
            "index": 0, "type": "AlterField", "description": "Alter field price on product",
            "arguments": {}, "reversible": true, "reduces_to_sql": true, "line": 8
        }))
        .expect("an operation")];
        let insight = Insight {
            database_applied: 0,
            pending: vec![],
            migrations: vec![m],
        };
        let traced = |atomic: bool, rewritten: &str, new: &[&str]| -> TracedMigration {
            let locks = atomic.then(|| {
                serde_json::json!([
                    {"relation": rewritten, "kind": "table", "mode": "ACCESS EXCLUSIVE"}
                ])
            });
            serde_json::from_value(serde_json::json!({
                "migration": "catalog.0005_x", "path": null, "atomic": atomic,
                "duration_ms": 50.0, "operations": [], "new_tables": new,
                "statements": [{"sql": "ALTER TABLE x", "operation": 0, "at_ms": 10.0,
                                "duration_ms": 30.0, "locks": locks,
                                "rewritten": [rewritten], "rows": null}]
            }))
            .expect("a traced migration")
        };
        let found = |t: TracedMigration| {
            let mut out = vec![];
            rewrite_rule(&insight, &[t], &mut out);
            out
        };
        let f = found(traced(true, "catalog_product", &[]));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rule, "rewrite-under-exclusive-lock");
        assert_eq!((f[0].line, f[0].operation), (Some(8), Some(0)));
        assert_eq!(f[0].table.as_deref(), Some("catalog_product"));
        assert!(f[0].message.contains("held 40ms"), "{}", f[0].message);
        // A table the range made: nobody else uses it yet.
        assert!(found(traced(true, "catalog_tag", &["catalog_tag"])).is_empty());
        // Outside a transaction: held for the statement.
        let f = found(traced(false, "catalog_product", &[]));
        assert!(f[0].message.contains("held 30ms"), "{}", f[0].message);
    }

    #[test]
    fn concurrently_is_found_in_every_statement_that_has_it() {
        for sql in [
            "CREATE INDEX CONCURRENTLY a ON catalog_product (x)",
            "DROP INDEX CONCURRENTLY a",
            "REINDEX (CONCURRENTLY) INDEX a",
            "REINDEX INDEX CONCURRENTLY a",
            "REFRESH MATERIALIZED VIEW CONCURRENTLY v",
            "ALTER TABLE p DETACH PARTITION c CONCURRENTLY",
        ] {
            let node = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT)
                .expect(sql)
                .protobuf
                .stmts[0]
                .stmt
                .as_ref()
                .and_then(|n| n.node.clone())
                .expect(sql);
            assert!(is_concurrent(&node), "{sql}");
        }
    }
}
