//! `diff`: the current key's end-state schema (what the migrations make,
//! `crate::schema`) versus a live database's, as structured differences,
//! each attributed to the migration file and line that made the object
//! where a migration names it (`check::attribute`).
//!
//! The live database is only read: its connection has
//! `default_transaction_read_only=on`, and only catalogs are queried. Its
//! URL is taken as `plan --against` takes it (`ConnInfo::from_url`): an
//! explicit connection that no `PG*` variable of the environment can
//! redirect.

use crate::check::{self, MigrationRef};
use crate::context::Ctx;
use crate::error::Result;
use crate::fingerprint;
use crate::key::Key;
use crate::pg::{db_error, ConnInfo};
use crate::schema::{self, Column, Schema, Table};
use crate::ui::Ui;
use serde::Serialize;
use std::collections::BTreeMap;

/// What differs. `missing-*`: the migrations make it, the database lacks
/// it; `extra-*`: the database has it, the migrations do not make it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiffKind {
    MissingTable,
    ExtraTable,
    MissingColumn,
    ExtraColumn,
    ColumnType,
    ColumnNullable,
    ColumnDefault,
    MissingIndex,
    ExtraIndex,
    /// Same name, another definition (or validity).
    IndexDefinition,
    /// Same definition under another name.
    IndexRenamed,
    MissingConstraint,
    ExtraConstraint,
    ConstraintDefinition,
    ConstraintRenamed,
}

impl DiffKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DiffKind::MissingTable => "missing-table",
            DiffKind::ExtraTable => "extra-table",
            DiffKind::MissingColumn => "missing-column",
            DiffKind::ExtraColumn => "extra-column",
            DiffKind::ColumnType => "column-type",
            DiffKind::ColumnNullable => "column-nullable",
            DiffKind::ColumnDefault => "column-default",
            DiffKind::MissingIndex => "missing-index",
            DiffKind::ExtraIndex => "extra-index",
            DiffKind::IndexDefinition => "index-definition",
            DiffKind::IndexRenamed => "index-renamed",
            DiffKind::MissingConstraint => "missing-constraint",
            DiffKind::ExtraConstraint => "extra-constraint",
            DiffKind::ConstraintDefinition => "constraint-definition",
            DiffKind::ConstraintRenamed => "constraint-renamed",
        }
    }

    /// The database has the object and the migrations do not make it: the
    /// migration that explains it is the one that dropped it.
    fn extra(self) -> bool {
        matches!(
            self,
            DiffKind::ExtraTable
                | DiffKind::ExtraColumn
                | DiffKind::ExtraIndex
                | DiffKind::ExtraConstraint
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub kind: DiffKind,
    pub schema: String,
    pub table: String,
    /// The column, index or constraint; `None` for a table.
    pub name: Option<String>,
    /// The database's name for it (`*-renamed` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_name: Option<String>,
    /// What the migrations make; `None` for `extra-*`.
    pub expected: Option<String>,
    /// What the database has; `None` for `missing-*`.
    pub actual: Option<String>,
    /// The operation that made (or, for `extra-*`, dropped) the object.
    pub migration: Option<MigrationRef>,
}

/// The outcome of `against`.
#[derive(Debug)]
pub struct Diffed {
    pub key: Key,
    /// The database compared against, as a URL without its password.
    pub database: String,
    pub differences: Vec<Difference>,
}

/// Compare the current key's schema with the database at `url` (a libpq
/// URL, opened read only). The URL is checked and connected to first, so a
/// mistyped one fails before any build.
pub async fn against(ctx: &Ctx, url: &str, ui: &Ui) -> Result<Diffed> {
    let conn = ConnInfo::from_url(url)?;
    let db = conn.admin_db.clone();
    let client = conn.connect_read_only(&db, "the --against URL").await?;
    let live = schema::read(&client)
        .await
        .map_err(|e| db_error(format!("cannot read the schema of `{db}`"), e))?;
    drop(client);

    let fp = fingerprint::compute(&ctx.key)?;
    let expected = schema::of_key(ctx, &fp, ui).await?;
    let mut differences = compare(&expected.schema, &live);
    let sources = check::migration_sources(ctx, &fp, &[]);
    attribute(&mut differences, &sources);
    Ok(Diffed {
        key: fp.key,
        database: conn.shown_url(&db),
        differences,
    })
}

/// Every difference between what the migrations make (`expected`) and a
/// database (`actual`), sorted by table, object and kind.
pub fn compare(expected: &Schema, actual: &Schema) -> Vec<Difference> {
    let tables = |s: &Schema| -> BTreeMap<(String, String), Table> {
        s.tables
            .iter()
            .map(|t| ((t.schema.clone(), t.name.clone()), t.clone()))
            .collect()
    };
    let (e, a) = (tables(expected), tables(actual));
    let mut out = Vec::new();
    for (key, et) in &e {
        match a.get(key) {
            Some(at) => compare_table(et, at, &mut out),
            None => out.push(table_difference(DiffKind::MissingTable, et)),
        }
    }
    for (key, at) in &a {
        if !e.contains_key(key) {
            out.push(table_difference(DiffKind::ExtraTable, at));
        }
    }
    out.sort_by(|x, y| {
        (&x.schema, &x.table, &x.name, x.kind).cmp(&(&y.schema, &y.table, &y.name, y.kind))
    });
    out
}

fn table_difference(kind: DiffKind, t: &Table) -> Difference {
    let what = Some(format!("{} {}", t.kind, t.qualified()));
    let (expected, actual) = if kind.extra() {
        (None, what)
    } else {
        (what, None)
    };
    Difference {
        kind,
        schema: t.schema.clone(),
        table: t.name.clone(),
        name: None,
        database_name: None,
        expected,
        actual,
        migration: None,
    }
}

fn compare_table(e: &Table, a: &Table, out: &mut Vec<Difference>) {
    let diff = |kind, name: &str, expected: Option<String>, actual: Option<String>| Difference {
        kind,
        schema: e.schema.clone(),
        table: e.name.clone(),
        name: Some(name.to_string()),
        database_name: None,
        expected,
        actual,
        migration: None,
    };

    // Columns pair by name only (the shape is the name): a renamed column
    // is one missing and one extra.
    let columns = check::match_objects(&e.columns, &a.columns, |c| &c.name, |c| c.name.clone());
    for c in columns.only_left {
        let sql = Some(schema::column_sql(c));
        out.push(diff(DiffKind::MissingColumn, &c.name, sql, None));
    }
    for c in columns.only_right {
        let sql = Some(schema::column_sql(c));
        out.push(diff(DiffKind::ExtraColumn, &c.name, None, sql));
    }
    for (ec, ac) in columns.same_name {
        if ec.data_type != ac.data_type {
            let (x, y) = (ec.data_type.clone(), ac.data_type.clone());
            out.push(diff(DiffKind::ColumnType, &ec.name, Some(x), Some(y)));
        }
        if ec.nullable != ac.nullable {
            let null = |c: &Column| if c.nullable { "NULL" } else { "NOT NULL" }.to_string();
            out.push(diff(
                DiffKind::ColumnNullable,
                &ec.name,
                Some(null(ec)),
                Some(null(ac)),
            ));
        }
        let default = |c: &Column| (c.default.clone(), c.identity.clone(), c.generated.clone());
        if default(ec) != default(ac) {
            // The column's clause minus its name, type and nullability.
            let clause = |c: &Column| {
                let bare = Column {
                    nullable: true,
                    ..c.clone()
                };
                let sql = schema::column_sql(&bare);
                let rest = sql[c.name.len() + 1 + c.data_type.len()..]
                    .trim()
                    .to_string();
                (!rest.is_empty()).then_some(rest)
            };
            out.push(diff(
                DiffKind::ColumnDefault,
                &ec.name,
                clause(ec),
                clause(ac),
            ));
        }
    }

    let indexes = check::match_objects(&e.indexes, &a.indexes, |i| &i.name, |i| i.shape());
    for i in indexes.only_left {
        out.push(diff(
            DiffKind::MissingIndex,
            &i.name,
            Some(i.definition.clone()),
            None,
        ));
    }
    for i in indexes.only_right {
        out.push(diff(
            DiffKind::ExtraIndex,
            &i.name,
            None,
            Some(i.definition.clone()),
        ));
    }
    for (ei, ai) in indexes.same_name {
        if ei.shape() != ai.shape() || ei.valid != ai.valid {
            let def = |i: &schema::Index| {
                let invalid = if i.valid { "" } else { " -- INVALID" };
                format!("{}{invalid}", i.definition)
            };
            out.push(diff(
                DiffKind::IndexDefinition,
                &ei.name,
                Some(def(ei)),
                Some(def(ai)),
            ));
        }
    }
    for (ei, ai) in indexes.renamed {
        let mut d = diff(
            DiffKind::IndexRenamed,
            &ei.name,
            Some(ei.definition.clone()),
            Some(ai.definition.clone()),
        );
        d.database_name = Some(ai.name.clone());
        out.push(d);
    }

    let shape = |c: &schema::Constraint| (c.kind.clone(), c.definition.clone());
    let constraints = check::match_objects(&e.constraints, &a.constraints, |c| &c.name, shape);
    for c in constraints.only_left {
        let def = Some(c.definition.clone());
        out.push(diff(DiffKind::MissingConstraint, &c.name, def, None));
    }
    for c in constraints.only_right {
        let def = Some(c.definition.clone());
        out.push(diff(DiffKind::ExtraConstraint, &c.name, None, def));
    }
    for (ec, ac) in constraints.same_name {
        if shape(ec) != shape(ac) {
            let (x, y) = (Some(ec.definition.clone()), Some(ac.definition.clone()));
            out.push(diff(DiffKind::ConstraintDefinition, &ec.name, x, y));
        }
    }
    for (ec, ac) in constraints.renamed {
        let (x, y) = (Some(ec.definition.clone()), Some(ac.definition.clone()));
        let mut d = diff(DiffKind::ConstraintRenamed, &ec.name, x, y);
        d.database_name = Some(ac.name.clone());
        out.push(d);
    }
}

/// Attribute each difference to the migration that names its object:
/// indexes, constraints and tables by their name (a RunSQL's `CREATE INDEX
/// name`, an `AddIndex(… name=…)`). Columns are left unattributed: their
/// names (`name`, `price`) occur in too many unrelated lines to point at
/// one.
pub fn attribute(differences: &mut [Difference], sources: &[check::MigrationSource]) {
    let wanted: Vec<(usize, (&str, bool))> = differences
        .iter()
        .enumerate()
        .filter_map(|(i, d)| {
            let name = match d.kind {
                DiffKind::MissingColumn
                | DiffKind::ExtraColumn
                | DiffKind::ColumnType
                | DiffKind::ColumnNullable
                | DiffKind::ColumnDefault => return None,
                DiffKind::MissingTable | DiffKind::ExtraTable => d.table.as_str(),
                _ => d.name.as_deref()?,
            };
            Some((i, (name, d.kind.extra())))
        })
        .collect();
    let names: Vec<(&str, bool)> = wanted.iter().map(|(_, w)| *w).collect();
    let refs = check::attribute(&names, sources);
    let at: Vec<usize> = wanted.iter().map(|(i, _)| *i).collect();
    for (i, r) in at.into_iter().zip(refs) {
        differences[i].migration = r;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Constraint, Index};

    fn column(name: &str, ty: &str, nullable: bool) -> Column {
        Column {
            name: name.into(),
            data_type: ty.into(),
            nullable,
            default: None,
            identity: None,
            generated: None,
        }
    }

    fn index(name: &str, cols: &str) -> Index {
        Index {
            name: name.into(),
            definition: format!("CREATE INDEX {name} ON public.t USING btree ({cols})"),
            constraint: None,
            valid: true,
        }
    }

    fn table(name: &str, columns: Vec<Column>, indexes: Vec<Index>) -> Table {
        Table {
            schema: "public".into(),
            name: name.into(),
            kind: "table".into(),
            columns,
            indexes,
            constraints: vec![Constraint {
                name: format!("{name}_pkey"),
                kind: "p".into(),
                definition: "PRIMARY KEY (id)".into(),
            }],
        }
    }

    fn schema(tables: Vec<Table>) -> Schema {
        Schema {
            tables,
            ..Schema::default()
        }
    }

    #[test]
    fn equal_schemas_have_no_difference() {
        let s = schema(vec![table(
            "t",
            vec![column("id", "bigint", false)],
            vec![index("t_a", "a")],
        )]);
        assert_eq!(compare(&s, &s.clone()), vec![]);
    }

    #[test]
    fn every_kind_of_difference_is_reported_once() {
        let mut with_default = column("d", "integer", true);
        with_default.default = Some("0".into());
        let expected = schema(vec![
            table(
                "t",
                vec![
                    column("id", "bigint", false),
                    column("a", "character varying(10)", false),
                    column("gone", "text", true),
                    with_default.clone(),
                ],
                vec![index("t_a", "a"), index("t_b", "b"), index("t_c", "c")],
            ),
            table("only_expected", vec![], vec![]),
        ]);
        let actual = schema(vec![
            table(
                "t",
                vec![
                    column("id", "bigint", false),
                    column("a", "text", true),
                    column("new", "text", true),
                    Column {
                        default: None,
                        ..with_default
                    },
                ],
                vec![index("t_renamed", "a"), index("t_b", "b, c")],
            ),
            table("only_actual", vec![], vec![]),
        ]);
        let got: Vec<(DiffKind, String)> = compare(&expected, &actual)
            .into_iter()
            .map(|d| (d.kind, d.name.unwrap_or(d.table)))
            .collect();
        assert_eq!(
            got,
            vec![
                (DiffKind::ExtraTable, "only_actual".to_string()),
                (DiffKind::MissingTable, "only_expected".to_string()),
                (DiffKind::ColumnType, "a".to_string()),
                (DiffKind::ColumnNullable, "a".to_string()),
                (DiffKind::ColumnDefault, "d".to_string()),
                (DiffKind::MissingColumn, "gone".to_string()),
                (DiffKind::ExtraColumn, "new".to_string()),
                (DiffKind::IndexRenamed, "t_a".to_string()),
                (DiffKind::IndexDefinition, "t_b".to_string()),
                (DiffKind::MissingIndex, "t_c".to_string()),
            ]
        );
        let renamed = compare(&expected, &actual)
            .into_iter()
            .find(|d| d.kind == DiffKind::IndexRenamed)
            .and_then(|d| d.database_name);
        assert_eq!(renamed.as_deref(), Some("t_renamed"));
        let default = compare(&expected, &actual)
            .into_iter()
            .find(|d| d.kind == DiffKind::ColumnDefault)
            .expect("default");
        assert_eq!(
            (default.expected.as_deref(), default.actual.as_deref()),
            (Some("DEFAULT 0"), None)
        );
    }

    #[test]
    fn missing_indexes_are_attributed_to_their_creator_columns_to_nothing() {
        let src = check::MigrationSource {
            app: "app".into(),
            name: "0002_x".into(),
            path: "app/migrations/0002_x.py".into(),
            text: "class Migration:\n    operations = [\n        migrations.RunSQL(\n            \"CREATE INDEX t_c ON t (c)\"),\n    ]\n# a\n".into(),
        };
        let expected = schema(vec![table(
            "t",
            vec![column("a", "text", true)],
            vec![index("t_c", "c")],
        )]);
        let actual = schema(vec![table("t", vec![], vec![])]);
        let mut diffs = compare(&expected, &actual);
        attribute(&mut diffs, &[src]);
        let at: Vec<(DiffKind, Option<usize>)> = diffs
            .iter()
            .map(|d| (d.kind, d.migration.as_ref().map(|m| m.line)))
            .collect();
        assert_eq!(
            at,
            vec![
                (DiffKind::MissingColumn, None),
                (DiffKind::MissingIndex, Some(3))
            ]
        );
    }
}
