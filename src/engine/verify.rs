//! `verify-build` (issue #24): an accelerated build proves it made what
//! stock Django's `migrate` makes, before it is saved.
//!
//! The accelerator (django-fastmig) reimplements part of Django's migration
//! state; if it gets a case wrong, the snapshot is wrong for every test
//! that uses it. So with `verify-build` on, stock Django migrates a scratch
//! database (always dropped) to the same targets, and the two are compared
//! as the benchmark compares them (scripts/bench_accel.sh). An incremental
//! build is compared with stock Django's from the same start (a copy of its
//! base): from empty, the content types and permissions its base's
//! post_migrate made for a model renamed or removed since would differ,
//! as after any incremental build. Compared: the
//! `pg_dump --schema-only` text byte for byte (less its random
//! `\restrict` token), the (app, name) rows of `django_migrations`, and
//! every table's rows: their count, and a digest of their values in every
//! column but those whose values differ between any two plain runs
//! (`VOLATILE_TYPES`: `now()`, `uuid4()` written by data migrations). Equal: the
//! manifest says `verified`. Different: the build fails and nothing is
//! saved.
//!
//! Stock Django migrates beside the accelerated build (two processes at
//! once), so a verified build costs about the longer of the two, not
//! their sum; the snapshot is saved only once both have finished and
//! agree. Serving the snapshot before the check ends would make it
//! unverified until then: not done.

use super::BuildError;
use crate::context::Ctx;
use crate::django;
use crate::error::Result;
use crate::failpoint;
use crate::fingerprint::Fingerprint;
use crate::pg::admin::Admin;
use crate::pg::{db_error, dump, quote_ident};
use crate::report::Events;

/// What two builds of the same migrations must share.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Facts {
    schema: String,
    applied: Vec<(String, String)>,
    /// Every table, sorted by name.
    rows: Vec<Rows>,
}

/// A table's rows, as far as two honest builds agree on them.
#[derive(Debug, PartialEq, Eq)]
struct Rows {
    /// `schema.table`.
    table: String,
    count: i64,
    /// md5 of the rows' text, sorted, over the columns compared (see
    /// `VOLATILE_TYPES`).
    digest: String,
}

/// Column types whose values differ between any two plain runs of the
/// same migrations: `now()` written by a data migration or `applied` in
/// django_migrations, `uuid4()` in a RunPython. Their columns are left out
/// of a table's digest; every other column's values must be equal.
const VOLATILE_TYPES: &[&str] = &[
    "date",
    "time",
    "timetz",
    "timestamp",
    "timestamptz",
    "interval",
    "uuid",
];

/// Stock Django's `migrate` of `fp` into `db` (a scratch copy of what an
/// incremental build starts from, made before it migrates, or an empty
/// one), as the facts an accelerated build must match. It runs beside the
/// accelerated build (`engine`), so a verified build costs about the
/// longer of the two rather than their sum; its progress is not shown
/// (`ui` says it runs), its failure fails the build.
pub(super) async fn stock_facts(
    admin: &Admin,
    ctx: &Ctx,
    fp: &Fingerprint,
    db: &str,
    ui: &Events,
) -> Result<Facts> {
    ui.info(format!(
        "verify-build: migrating a scratch database with stock Django, beside the build, to check snapshot {}",
        fp.short()
    ));
    let stock = crate::context::DjangoRunner {
        accelerate: false,
        ..ctx.django.clone()
    };
    let targets = super::shim_targets(&fp.at, ctx.project_dir());
    let started = std::time::Instant::now();
    // Its progress would interleave with the build's: one line at the end.
    let report = django::migrate(
        &stock,
        &admin.conn,
        db,
        &Events::silent(),
        Default::default(),
        &targets,
    )
    .await?;
    ui.info(format!(
        "verify-build: stock Django applied {} migration(s) in {}",
        report.applied.len(),
        crate::units::duration(started.elapsed())
    ));
    facts(admin, ctx, db).await
}

/// Compare the accelerated `build` with stock Django's result
/// (`stock_facts`); an error (`BuildError::Unverified`) names the first
/// difference.
pub(super) async fn against(
    admin: &Admin,
    ctx: &Ctx,
    fp: &Fingerprint,
    build: &str,
    reference: &Facts,
) -> Result<()> {
    if let Some(skew) = failpoint::verify_skew() {
        let client = admin.conn.connect(build).await?;
        let sql = match skew {
            failpoint::Skew::Table => r#"CREATE TABLE "migsnap_verify_skew" ("id" integer)"#,
            failpoint::Skew::Rows => {
                "UPDATE django_content_type SET model = model || '_skewed' \
                 WHERE id = (SELECT min(id) FROM django_content_type)"
            }
        };
        client
            .batch_execute(sql)
            .await
            .map_err(|e| db_error("cannot skew the build (failpoint)", e))?;
    }
    let built = facts(admin, ctx, build).await?;
    match first_difference(&built, reference) {
        None => Ok(()),
        Some(what) => Err(BuildError::Unverified {
            short: fp.short().to_string(),
            what,
        }
        .into()),
    }
}

async fn facts(admin: &Admin, ctx: &Ctx, db: &str) -> Result<Facts> {
    let (programs, conn, name, major) = (
        ctx.build.programs.clone(),
        admin.conn.clone(),
        db.to_string(),
        admin.major(),
    );
    let schema = crate::error::blocking("the schema dump", move || {
        dump::schema_text(&programs, &conn, &name, major)
    })
    .await??;
    let client = admin.conn.connect(db).await?;
    let query = |what: &'static str| move |e| db_error(format!("cannot read {what} of `{db}`"), e);
    let applied = client
        .query(
            "SELECT app::text, name::text FROM django_migrations ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(query("django_migrations"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let tables = client
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') \
             AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg\\_toast%' \
             ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(query("the tables"))?;
    let mut rows = Vec::with_capacity(tables.len());
    for t in &tables {
        let (schema, table): (String, String) = (t.get(0), t.get(1));
        let columns: Vec<String> = client
            .query(
                "SELECT a.attname::text FROM pg_attribute a \
                 JOIN pg_class c ON c.oid = a.attrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 JOIN pg_type ty ON ty.oid = a.atttypid \
                 WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 \
                 AND NOT a.attisdropped AND ty.typname <> ALL($3) ORDER BY a.attnum",
                &[&schema, &table, &VOLATILE_TYPES],
            )
            .await
            .map_err(query("a table's columns"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        // Names from the catalog, quoted: never text formatted into SQL.
        let row = if columns.is_empty() {
            "''".to_string()
        } else {
            let quoted: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
            format!("ROW({})::text", quoted.join(", "))
        };
        let sql = format!(
            "SELECT count(*), md5(coalesce(string_agg(r, E'\\n' ORDER BY r COLLATE \"C\"), '')) \
             FROM (SELECT {row} AS r FROM {}.{}) s",
            quote_ident(&schema),
            quote_ident(&table)
        );
        let found = client
            .query_one(sql.as_str(), &[])
            .await
            .map_err(query("a table's rows"))?;
        rows.push(Rows {
            table: format!("{schema}.{table}"),
            count: found.get(0),
            digest: found.get(1),
        });
    }
    Ok(Facts {
        schema,
        applied,
        rows,
    })
}

/// The first way `built` (accelerated) differs from `stock`, in words.
fn first_difference<'a>(built: &'a Facts, stock: &'a Facts) -> Option<String> {
    if built.schema != stock.schema {
        let (a, b): (Vec<&str>, Vec<&str>) = (
            built.schema.split('\n').collect(),
            stock.schema.split('\n').collect(),
        );
        let at = (0..a.len().max(b.len()))
            .find(|&i| a.get(i) != b.get(i))
            .unwrap_or(0);
        let line = |v: &[&str]| v.get(at).map_or("(end)".to_string(), |l| format!("`{l}`"));
        return Some(format!(
            "the schema differs at line {} of pg_dump: {} here, {} with stock Django",
            at + 1,
            line(&a),
            line(&b)
        ));
    }
    if let Some(m) = built.applied.iter().find(|m| !stock.applied.contains(m)) {
        return Some(format!(
            "django_migrations records {}.{} here, not with stock Django",
            m.0, m.1
        ));
    }
    if let Some(m) = stock.applied.iter().find(|m| !built.applied.contains(m)) {
        return Some(format!(
            "django_migrations lacks {}.{} here, which stock Django records",
            m.0, m.1
        ));
    }
    let find = |facts: &'a Facts, t: &str| facts.rows.iter().find(|r| r.table == t);
    let tables = built
        .rows
        .iter()
        .chain(&stock.rows)
        .map(|r| r.table.as_str());
    for t in tables {
        let (here, there) = (find(built, t), find(stock, t));
        if here.map(|r| r.count) != there.map(|r| r.count) {
            let n = |r: Option<&Rows>| {
                r.map_or("no table".to_string(), |r| format!("{} rows", r.count))
            };
            return Some(format!(
                "table {t} has {} here, {} with stock Django",
                n(here),
                n(there)
            ));
        }
        if here.map(|r| &r.digest) != there.map(|r| &r.digest) {
            return Some(format!(
                "the rows of table {t} differ from stock Django's (every column but date, time and uuid ones compared)"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(schema: &str, applied: &[(&str, &str)], rows: &[(&str, i64)]) -> Facts {
        Facts {
            schema: schema.to_string(),
            applied: applied
                .iter()
                .map(|(a, n)| (a.to_string(), n.to_string()))
                .collect(),
            rows: rows
                .iter()
                .map(|(t, n)| Rows {
                    table: t.to_string(),
                    count: *n,
                    digest: format!("{n}"),
                })
                .collect(),
        }
    }

    #[test]
    fn the_first_difference_is_named_schema_then_history_then_rows() {
        let base = facts("a\nb\n", &[("app", "0001")], &[("public.t", 1)]);
        assert_eq!(first_difference(&base, &base), None);
        let schema = facts("a\nc\n", &[("app", "0001")], &[("public.t", 2)]);
        assert_eq!(
            first_difference(&schema, &base).as_deref(),
            Some("the schema differs at line 2 of pg_dump: `c` here, `b` with stock Django")
        );
        let history = facts("a\nb\n", &[], &[("public.t", 1)]);
        assert_eq!(
            first_difference(&history, &base).as_deref(),
            Some("django_migrations lacks app.0001 here, which stock Django records")
        );
        let rows = facts("a\nb\n", &[("app", "0001")], &[("public.t", 3)]);
        assert_eq!(
            first_difference(&rows, &base).as_deref(),
            Some("table public.t has 3 rows here, 1 rows with stock Django")
        );
        let mut values = facts("a\nb\n", &[("app", "0001")], &[("public.t", 1)]);
        values.rows[0].digest = "other".into();
        assert_eq!(
            first_difference(&values, &base).as_deref(),
            Some("the rows of table public.t differ from stock Django's (every column but date, time and uuid ones compared)")
        );
    }
}
