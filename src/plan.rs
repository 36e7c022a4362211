//! The `plan` and `sql` use cases: which migrations would run, relative to
//! the nearest snapshot on the server or to a live database's
//! django_migrations, with their operations and the SQL each produces
//! (issue #13). One Python start for the whole range; nothing is written
//! to the database looked at: the shim's connection is read only, and the
//! snapshot is looked at through a scratch clone.

use crate::django::{self, Insight};
use crate::engine;
use crate::error::Result;
use crate::key::Key;
use crate::pg::admin::{self, Admin};
use crate::pg::ConnInfo;
use crate::report::Events;
use crate::session::Session;
use serde::Serialize;

/// The version of `plan --json` and `sql --json` (docs/plan.md).
pub const SCHEMA_VERSION: u32 = 1;

/// What the plan is relative to.
#[derive(Debug, Clone)]
pub enum Against {
    /// The nearest snapshot on the server: the current key's, else the
    /// ancestor an incremental build would start from, else an empty
    /// database.
    Snapshot,
    /// A live database (a libpq URL), read only.
    Database(String),
}

/// What was compared against, for the report.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Base {
    /// A snapshot: its key, and whether it is the current key's.
    Snapshot { key: Key, current: bool },
    /// No snapshot on the server: everything would run.
    Empty,
    /// A live database (the URL without its password).
    Database { url: String },
}

#[derive(Debug)]
pub struct Planned {
    pub base: Base,
    pub insight: Insight,
}

/// The plan for `targets` (`app.name` or absolute migration file paths;
/// empty: what migrate would run), with SQL if `with_sql`.
pub async fn plan(
    session: &Session<'_>,
    against: &Against,
    targets: &[String],
    with_sql: bool,
    ui: &Events,
) -> Result<Planned> {
    let ctx = session.ctx;
    django::check_manage_py(&ctx.django)?;
    match against {
        Against::Database(url) => {
            let conn = ConnInfo::from_url(url)?;
            let db = conn.admin_db.clone();
            let insight = django::plan(&ctx.django, &conn, &db, targets, with_sql, ui).await?;
            Ok(Planned {
                base: Base::Database {
                    url: conn.shown_url(&db),
                },
                insight,
            })
        }
        Against::Snapshot => {
            let admin = session.admin(ui).await?;
            let (template, base) = nearest_snapshot(session, admin).await?;
            let insight = admin
                .with_scratch(template.as_deref(), async |scratch| {
                    django::plan(&ctx.django, &admin.conn, scratch, targets, with_sql, ui).await
                })
                .await?;
            Ok(Planned { base, insight })
        }
    }
}

/// The template to clone: the current key's if it is ready, else that of
/// the ancestor an incremental build would start from; `None`: an empty
/// database (nothing migrated yet).
pub(crate) async fn nearest_snapshot(
    session: &Session<'_>,
    admin: &Admin,
) -> Result<(Option<String>, Base)> {
    let ctx = session.ctx;
    let fp = session.fingerprint().await?;
    let store = session.store()?;
    let ready = |key: Key, inputs: Option<String>| async move {
        let template = admin::template_name(&key);
        // A foreign snapshot's template too: `plan` only reads it.
        let ok = admin
            .template_state(&key, inputs.as_deref())
            .await?
            .is_ready();
        Ok::<_, crate::error::Error>(ok.then_some(template))
    };
    let inputs = engine::current_inputs(&store, fp, ctx.project_dir());
    if let Some(t) = ready(fp.key.clone(), inputs).await? {
        let base = Base::Snapshot {
            key: fp.key.clone(),
            current: true,
        };
        return Ok((Some(t), base));
    }
    let replaced = crate::depends::Replaced::new(ctx.project_dir(), fp);
    let replaced = |path: &str| replaced.covers(path);
    if let Some(m) = store.best_ancestor(fp, admin.version_num, &replaced) {
        if let Some(t) = ready(m.key.clone(), Some(m.depends.digest())).await? {
            let base = Base::Snapshot {
                key: m.key.clone(),
                current: false,
            };
            return Ok((Some(t), base));
        }
    }
    Ok((None, Base::Empty))
}

impl Insight {
    /// Leave out operations of the given types (`AddIndex`, `RunPython`…).
    pub fn exclude_operations(&mut self, types: &[String]) {
        for m in &mut self.migrations {
            m.operations.retain(|op| !types.contains(&op.r#type));
        }
    }
}

/// The size of each of `tables` in the database `url` names, for `lint
/// --stats-from`: the planner's row estimate and the bytes on disk, looked
/// up on a read-only connection among the tables its search_path shows. A
/// table that database does not have is left out.
pub async fn table_sizes(
    url: &str,
    tables: &[String],
) -> Result<std::collections::BTreeMap<String, crate::lint::TableSize>> {
    let conn = ConnInfo::from_url(url)?;
    let db = conn.admin_db.clone();
    let client = conn
        .connect_read_only(&db, crate::pg::UrlOrigin::StatsFrom)
        .await?;
    // reltuples is -1 until the table is first analyzed (PostgreSQL 14 and
    // later; 0 before, which reads as empty).
    let rows = client
        .query(
            "SELECT c.relname, c.reltuples::bigint, pg_total_relation_size(c.oid)
               FROM pg_class c
              WHERE c.relkind IN ('r', 'p') AND c.relname = ANY($1)
                AND pg_table_is_visible(c.oid)",
            &[&tables],
        )
        .await
        .map_err(|e| crate::pg::db_error(format!("cannot read table sizes in `{db}`"), e))?;
    Ok(rows
        .iter()
        .map(|r| {
            let estimate: i64 = r.get(1);
            let size = crate::lint::TableSize {
                rows: (estimate >= 0).then_some(estimate),
                bytes: r.get(2),
            };
            (r.get::<_, String>(0), size)
        })
        .collect())
}
