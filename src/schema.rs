//! The end-state schema of a database, read from `pg_catalog` (issue #13):
//! tables, columns, indexes, constraints, sequences and extensions, in a
//! stable, sorted, versioned shape (`migsnap schema --json`,
//! docs/schema-diff.md). `current` reads it from a scratch clone of the
//! current key's template (built first, as `prepare` builds it, if the
//! server has none): no migrate, no Python on a warm key.
//!
//! Everything PostgreSQL can print for itself it prints (`format_type`,
//! `pg_get_expr`, `pg_get_constraintdef`, `pg_get_indexdef`), so two
//! schemas compare by text (the `diff` module). Only rows of catalogs are read,
//! never the rows of a table (django_migrations included: its structure is
//! part of the schema, its content is not).

use crate::check::{self, IndexInfo, NOT_SYSTEM};
use crate::engine;
use crate::error::Result;
use crate::key::Key;
use crate::pg::db_error;
use crate::report::Events;
use crate::session::Session;
use serde::Serialize;
use std::collections::BTreeMap;
use tokio_postgres::Client;

/// The version of `schema --json` and `diff --json` (docs/schema-diff.md).
pub const SCHEMA_VERSION: u32 = 1;

/// A database's schema: user objects only, each list sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Schema {
    pub extensions: Vec<Extension>,
    pub tables: Vec<Table>,
    pub sequences: Vec<Sequence>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Extension {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Table {
    pub schema: String,
    pub name: String,
    /// `table`, `partitioned table` or `materialized view`.
    pub kind: String,
    /// In the table's column order.
    pub columns: Vec<Column>,
    pub indexes: Vec<Index>,
    pub constraints: Vec<Constraint>,
}

impl Table {
    /// `schema.name`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Column {
    pub name: String,
    /// `format_type`: `character varying(100)`, `numeric(10,2)`, `bigint`.
    #[serde(rename = "type")]
    pub data_type: String,
    pub nullable: bool,
    /// `pg_get_expr` of the default (or of the expression of a generated
    /// column); `None` when there is none.
    pub default: Option<String>,
    /// `always` or `by default` for an identity column.
    pub identity: Option<String>,
    /// `stored` for a generated column.
    pub generated: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Index {
    pub name: String,
    /// `pg_get_indexdef`.
    pub definition: String,
    /// `p`, `u` or `x` when a constraint owns the index.
    pub constraint: Option<String>,
    pub valid: bool,
}

impl Index {
    /// The definition without the name (`check::without_name`), and the
    /// owning constraint's kind: what two indexes that differ only by name
    /// share.
    pub fn shape(&self) -> (String, Option<String>) {
        (
            check::without_name(&self.definition),
            self.constraint.clone(),
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Constraint {
    pub name: String,
    /// `p` primary key, `u` unique, `f` foreign key, `c` check, `x`
    /// exclusion, `t` constraint trigger, `n` not null (PostgreSQL 18+).
    #[serde(rename = "type")]
    pub kind: String,
    /// `pg_get_constraintdef`: `FOREIGN KEY (category_id) REFERENCES …`.
    pub definition: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sequence {
    pub schema: String,
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
    pub start: i64,
    pub increment: i64,
    pub min: i64,
    pub max: i64,
    pub cycle: bool,
    /// `schema.table.column` of the column that owns it (serial, identity).
    pub owned_by: Option<String>,
}

impl Sequence {
    /// `AS type INCREMENT BY … START WITH … [NO] CYCLE`, as in CREATE
    /// SEQUENCE: what two sequences that differ only by name share.
    pub fn definition(&self) -> String {
        let cycle = if self.cycle { "CYCLE" } else { "NO CYCLE" };
        format!(
            "AS {} INCREMENT BY {} MINVALUE {} MAXVALUE {} START WITH {} {cycle}",
            self.data_type, self.increment, self.min, self.max, self.start
        )
    }
}

/// The end-state schema of the current key.
#[derive(Debug)]
pub struct Described {
    pub key: Key,
    pub server_version_num: u32,
    pub schema: Schema,
}

/// The current key's schema, read from a scratch clone of its template
/// (built first if the server has none for the current inputs).
pub async fn current(session: &Session<'_>, ui: &Events) -> Result<Described> {
    let fp = session.fingerprint().await?;
    let admin = session.admin(ui).await?;
    let template = engine::ensure_template(admin, session.ctx, fp, ui).await?;
    let schema = admin
        .with_scratch(Some(&template), async |scratch| {
            let client = admin.conn.connect(scratch).await?;
            read(&client)
                .await
                .map_err(|e| db_error(format!("cannot read the schema of `{template}`"), e))
        })
        .await?;
    Ok(Described {
        key: fp.key.clone(),
        server_version_num: admin.version_num,
        schema,
    })
}

/// `AND` the relation `t` (joined to its namespace `n`) is a user's: in no
/// system schema, no extension's member.
fn user_relation() -> String {
    format!(
        "{NOT_SYSTEM} AND NOT EXISTS (SELECT 1 FROM pg_depend d \
         WHERE d.classid = 'pg_class'::regclass AND d.objid = t.oid AND d.deptype = 'e')"
    )
}

/// Read the schema of the database `client` is connected to.
pub async fn read(client: &Client) -> Result<Schema, tokio_postgres::Error> {
    let user = user_relation();
    let tables = client
        .query(
            &format!(
                "SELECT n.nspname, t.relname, CASE t.relkind WHEN 'p' THEN 'partitioned table' \
                   WHEN 'm' THEN 'materialized view' ELSE 'table' END \
                 FROM pg_class t JOIN pg_namespace n ON n.oid = t.relnamespace \
                 WHERE t.relkind IN ('r', 'p', 'm') AND {user}"
            ),
            &[],
        )
        .await?;
    let mut by_table: BTreeMap<(String, String), Table> = tables
        .iter()
        .map(|r| {
            let (schema, name): (String, String) = (r.get(0), r.get(1));
            let table = Table {
                schema: schema.clone(),
                name: name.clone(),
                kind: r.get(2),
                columns: vec![],
                indexes: vec![],
                constraints: vec![],
            };
            ((schema, name), table)
        })
        .collect();

    let columns = client
        .query(
            &format!(
                "SELECT n.nspname, t.relname, a.attname, format_type(a.atttypid, a.atttypmod), \
                   NOT a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid), \
                   CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' END, \
                   CASE a.attgenerated WHEN 's' THEN 'stored' WHEN 'v' THEN 'virtual' END \
                 FROM pg_attribute a JOIN pg_class t ON t.oid = a.attrelid \
                 JOIN pg_namespace n ON n.oid = t.relnamespace \
                 LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum \
                 WHERE a.attnum > 0 AND NOT a.attisdropped AND t.relkind IN ('r', 'p', 'm') AND {user} \
                 ORDER BY n.nspname, t.relname, a.attnum"
            ),
            &[],
        )
        .await?;
    for r in &columns {
        if let Some(t) = by_table.get_mut(&(r.get(0), r.get(1))) {
            t.columns.push(Column {
                name: r.get(2),
                data_type: r.get(3),
                nullable: r.get(4),
                default: r.get(5),
                identity: r.get(6),
                generated: r.get(7),
            });
        }
    }

    for i in check::read_indexes(client, true).await? {
        let IndexInfo {
            schema,
            table,
            name,
            definition,
            valid,
            constraint,
        } = i;
        if let Some(t) = by_table.get_mut(&(schema, table)) {
            t.indexes.push(Index {
                name,
                definition,
                constraint,
                valid,
            });
        }
    }

    let constraints = client
        .query(
            &format!(
                "SELECT n.nspname, t.relname, c.conname, c.contype::text, pg_get_constraintdef(c.oid) \
                 FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid \
                 JOIN pg_namespace n ON n.oid = t.relnamespace \
                 WHERE t.relkind IN ('r', 'p', 'm') AND {user}"
            ),
            &[],
        )
        .await?;
    for r in &constraints {
        if let Some(t) = by_table.get_mut(&(r.get(0), r.get(1))) {
            t.constraints.push(Constraint {
                name: r.get(2),
                kind: r.get(3),
                definition: r.get(4),
            });
        }
    }

    let sequences = client
        .query(
            &format!(
                "SELECT n.nspname, t.relname, format_type(s.seqtypid, NULL), \
                   s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcycle, \
                   (SELECT format('%s.%s.%s', on_.nspname, ot.relname, oa.attname) \
                    FROM pg_depend d JOIN pg_class ot ON ot.oid = d.refobjid \
                    JOIN pg_namespace on_ ON on_.oid = ot.relnamespace \
                    JOIN pg_attribute oa ON oa.attrelid = d.refobjid AND oa.attnum = d.refobjsubid \
                    WHERE d.classid = 'pg_class'::regclass AND d.objid = t.oid \
                      AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') LIMIT 1) \
                 FROM pg_sequence s JOIN pg_class t ON t.oid = s.seqrelid \
                 JOIN pg_namespace n ON n.oid = t.relnamespace WHERE {user}"
            ),
            &[],
        )
        .await?;
    let mut sequences: Vec<Sequence> = sequences
        .iter()
        .map(|r| Sequence {
            schema: r.get(0),
            name: r.get(1),
            data_type: r.get(2),
            start: r.get(3),
            increment: r.get(4),
            min: r.get(5),
            max: r.get(6),
            cycle: r.get(7),
            owned_by: r.get(8),
        })
        .collect();
    sequences.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));

    let mut extensions: Vec<Extension> = client
        .query(
            "SELECT extname, extversion FROM pg_extension WHERE extname <> 'plpgsql'",
            &[],
        )
        .await?
        .iter()
        .map(|r| Extension {
            name: r.get(0),
            version: r.get(1),
        })
        .collect();
    extensions.sort_by(|a, b| a.name.cmp(&b.name));

    // Sorted here, by byte order, not by the database's collation: two
    // servers with different locales print the same document.
    let tables = by_table
        .into_values()
        .map(|mut t| {
            t.indexes.sort_by(|a, b| a.name.cmp(&b.name));
            t.constraints.sort_by(|a, b| a.name.cmp(&b.name));
            t
        })
        .collect();
    Ok(Schema {
        extensions,
        tables,
        sequences,
    })
}

/// The schema as SQL-like text, for reading (not for running: it is a
/// summary, not a dump).
pub fn to_sql(schema: &Schema) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for e in &schema.extensions {
        let _ = writeln!(out, "-- extension {} {}", e.name, e.version);
    }
    for t in &schema.tables {
        let _ = writeln!(
            out,
            "\nCREATE {} {} (",
            t.kind.to_uppercase(),
            t.qualified()
        );
        let mut lines: Vec<String> = t.columns.iter().map(column_sql).collect();
        lines.extend(
            t.constraints
                .iter()
                .map(|c| format!("CONSTRAINT {} {}", c.name, c.definition)),
        );
        let _ = writeln!(out, "    {}\n);", lines.join(",\n    "));
        for i in t.indexes.iter().filter(|i| i.constraint.is_none()) {
            let invalid = if i.valid { "" } else { "  -- INVALID" };
            let _ = writeln!(out, "{};{invalid}", i.definition);
        }
    }
    if !schema.sequences.is_empty() {
        out.push('\n');
    }
    for s in &schema.sequences {
        let owned = match &s.owned_by {
            Some(o) => format!(" OWNED BY {o}"),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "CREATE SEQUENCE {}.{} {}{owned};",
            s.schema,
            s.name,
            s.definition()
        );
    }
    out
}

/// `name type [NOT NULL] [DEFAULT …]` as in CREATE TABLE.
pub fn column_sql(c: &Column) -> String {
    let mut s = format!("{} {}", c.name, c.data_type);
    if let Some(g) = &c.generated {
        let expr = c.default.as_deref().unwrap_or("");
        s.push_str(&format!(
            " GENERATED ALWAYS AS ({expr}) {}",
            g.to_uppercase()
        ));
    } else if let Some(d) = &c.default {
        s.push_str(" DEFAULT ");
        s.push_str(d);
    }
    if let Some(i) = &c.identity {
        s.push_str(&format!(" GENERATED {} AS IDENTITY", i.to_uppercase()));
    }
    if !c.nullable {
        s.push_str(" NOT NULL");
    }
    s
}
