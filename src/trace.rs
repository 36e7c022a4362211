//! The `trace` use case (issue #25, part 3): apply the range `plan` would
//! report to a scratch clone of the nearest snapshot, statement by
//! statement, and measure what each locked and rewrote, instead of
//! guessing it from the SQL. The clone is always dropped; the snapshot is
//! only read (cloned).

use crate::django::{self, TableLock, Trace, TracedMigration};
use crate::error::Result;
use crate::plan::{self, Base};
use crate::report::Events;
use crate::session::Session;
use std::collections::BTreeMap;

/// The version of `trace --json` (docs/trace.md).
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug)]
pub struct Traced {
    pub base: Base,
    pub trace: Trace,
}

/// Trace `targets` (`app.name` or absolute migration file paths; empty:
/// what migrate would run on the nearest snapshot), with `rows` synthetic
/// rows per table the range names.
pub async fn trace(
    session: &Session<'_>,
    targets: &[String],
    rows: Option<u64>,
    ui: &Events,
) -> Result<Traced> {
    let ctx = session.ctx;
    django::check_manage_py(&ctx.django)?;
    let admin = session.admin(ui).await?;
    let (template, base) = plan::nearest_snapshot(session, admin).await?;
    let mut trace = admin
        .with_scratch(template.as_deref(), async |scratch| {
            django::trace(&ctx.django, &admin.conn, scratch, targets, rows, ui).await
        })
        .await?;
    let mut created = std::collections::BTreeSet::new();
    for m in &mut trace.migrations {
        created.extend(m.new_tables.iter().cloned());
        m.tables = summarize(m, &created);
    }
    Ok(Traced { base, trace })
}

/// Per table a migration locked: the strongest mode, the statement that
/// first took it, and how long it was held, from that statement's start to
/// the end of the migration's transaction (a non-atomic migration's locks
/// are not read). `created`: tables created in the range so far, which
/// did not exist before it. Indexes, sequences and views are left out.
pub fn summarize(
    m: &TracedMigration,
    created: &std::collections::BTreeSet<String>,
) -> Vec<TableLock> {
    let mut tables: BTreeMap<&str, TableLock> = BTreeMap::new();
    for (i, s) in m.statements.iter().enumerate() {
        for lock in s.locks.iter().flatten() {
            if !matches!(
                lock.kind.as_str(),
                "table" | "partitioned table" | "materialized view"
            ) {
                continue;
            }
            let held_ms = (m.duration_ms - s.at_ms).max(0.0);
            let entry = tables
                .entry(lock.relation.as_str())
                .or_insert_with(|| TableLock {
                    table: lock.relation.clone(),
                    strongest_lock: lock.mode,
                    statement: i,
                    held_ms,
                    rewritten: false,
                    existed: !created.contains(&lock.relation),
                });
            if lock.mode > entry.strongest_lock {
                entry.strongest_lock = lock.mode;
                entry.statement = i;
                entry.held_ms = held_ms;
            }
        }
    }
    for s in &m.statements {
        for t in &s.rewritten {
            if let Some(entry) = tables.get_mut(t.as_str()) {
                entry.rewritten = true;
            }
        }
    }
    let mut out: Vec<TableLock> = tables.into_values().collect();
    // The strongest first: what blocks the most is what a reader wants.
    out.sort_by_key(|t| std::cmp::Reverse(t.strongest_lock));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::django::LockMode;

    fn migration() -> TracedMigration {
        serde_json::from_value(serde_json::json!({
            "migration": "catalog.0005_x", "path": null, "atomic": true,
            "duration_ms": 100.0, "operations": [], "new_tables": ["catalog_new"],
            "statements": [
                {"sql": "SELECT 1", "operation": 0, "at_ms": 10.0, "duration_ms": 1.0,
                 "locks": [{"relation": "catalog_product", "kind": "table", "mode": "ROW EXCLUSIVE"},
                           {"relation": "catalog_product_pkey", "kind": "index", "mode": "ACCESS SHARE"}],
                 "rewritten": [], "rows": 3},
                {"sql": "ALTER TABLE", "operation": 1, "at_ms": 40.0, "duration_ms": 20.0,
                 "locks": [{"relation": "catalog_product", "kind": "table", "mode": "ACCESS EXCLUSIVE"},
                           {"relation": "catalog_new", "kind": "table", "mode": "SHARE"}],
                 "rewritten": ["catalog_product"], "rows": null}
            ]
        }))
        .expect("a traced migration")
    }

    #[test]
    fn the_strongest_lock_is_held_from_its_statement_to_the_commit() {
        let m = migration();
        let created = m.new_tables.iter().cloned().collect();
        let tables = summarize(&m, &created);
        assert_eq!(tables.len(), 2, "indexes are left out: {tables:?}");
        let product = &tables[0];
        assert_eq!(product.table, "catalog_product");
        assert_eq!(product.strongest_lock, LockMode::AccessExclusive);
        assert_eq!(product.statement, 1);
        assert_eq!(product.held_ms, 60.0);
        assert!(product.rewritten && product.existed);
        let new = &tables[1];
        assert_eq!(new.strongest_lock, LockMode::Share);
        assert!(!new.rewritten && !new.existed);
    }

    #[test]
    fn lock_modes_are_ordered_by_strength() {
        assert!(LockMode::AccessExclusive > LockMode::Exclusive);
        assert!(LockMode::ShareUpdateExclusive > LockMode::RowExclusive);
        assert!(LockMode::AccessShare < LockMode::RowShare);
    }
}
