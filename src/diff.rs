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
use crate::error::Result;
use crate::key::Key;
use crate::pg::{db_error, ConnInfo};
use crate::report::Events;
use crate::schema::{self, Column, Schema, Table};
use crate::session::Session;
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
    MissingSequence,
    ExtraSequence,
    /// Same name, or owned by the same column: another type, start,
    /// increment, bounds or cycle.
    SequenceDefinition,
    MissingExtension,
    /// Informational (`fails: false`): DBAs and managed services install
    /// extensions (`pg_stat_statements`) no migration has to make.
    ExtraExtension,
    /// Informational: the version follows the server's packages.
    ExtensionVersion,
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
            DiffKind::MissingSequence => "missing-sequence",
            DiffKind::ExtraSequence => "extra-sequence",
            DiffKind::SequenceDefinition => "sequence-definition",
            DiffKind::MissingExtension => "missing-extension",
            DiffKind::ExtraExtension => "extra-extension",
            DiffKind::ExtensionVersion => "extension-version",
        }
    }

    /// Whether a difference of this kind makes `diff` exit 1. The others
    /// are listed, as warnings, and do not fail the run.
    pub fn fails(self) -> bool {
        !matches!(self, DiffKind::ExtraExtension | DiffKind::ExtensionVersion)
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
                | DiffKind::ExtraSequence
                | DiffKind::ExtraExtension
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub kind: DiffKind,
    /// `None` for an extension.
    pub schema: Option<String>,
    /// `None` for an extension, and for a sequence no column owns; for an
    /// owned sequence, its column's table.
    pub table: Option<String>,
    /// The column, index, constraint, sequence or extension; `None` for a
    /// table.
    pub name: Option<String>,
    /// The database's name for it (`*-renamed`, and a column's sequence
    /// named otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_name: Option<String>,
    /// A sequence's owning column, `schema.table.column` (sequences only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owned_by: Option<String>,
    /// What the migrations make; `None` for `extra-*`.
    pub expected: Option<String>,
    /// What the database has; `None` for `missing-*`.
    pub actual: Option<String>,
    /// The operation that made (or, for `extra-*`, dropped) the object.
    pub migration: Option<MigrationRef>,
    /// Whether it makes `diff` exit 1 (`DiffKind::fails`).
    pub fails: bool,
}

impl Difference {
    fn new(kind: DiffKind, schema: Option<&str>, table: Option<&str>, name: Option<&str>) -> Self {
        Difference {
            kind,
            schema: schema.map(str::to_string),
            table: table.map(str::to_string),
            name: name.map(str::to_string),
            database_name: None,
            owned_by: None,
            expected: None,
            actual: None,
            migration: None,
            fails: kind.fails(),
        }
    }

    fn sides(mut self, expected: Option<String>, actual: Option<String>) -> Self {
        self.expected = expected;
        self.actual = actual;
        self
    }
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
pub async fn against(session: &Session<'_>, url: &str, ui: &Events) -> Result<Diffed> {
    let conn = ConnInfo::from_url(url)?;
    let db = conn.admin_db.clone();
    let client = conn
        .connect_read_only(&db, crate::pg::UrlOrigin::Against)
        .await?;
    let live = schema::read(&client)
        .await
        .map_err(|e| db_error(format!("cannot read the schema of `{db}`"), e))?;
    drop(client);

    let expected = schema::current(session, ui).await?;
    let mut differences = compare(&expected.schema, &live);
    let fp = session.fingerprint().await?;
    let sources = check::migration_sources(session.ctx, fp, &[]);
    attribute(&mut differences, &sources);
    Ok(Diffed {
        key: expected.key,
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
    compare_extensions(&expected.extensions, &actual.extensions, &mut out);
    compare_sequences(expected, actual, &mut out);
    out.sort_by(|x, y| {
        (&x.schema, &x.table, &x.name, x.kind).cmp(&(&y.schema, &y.table, &y.name, y.kind))
    });
    out
}

/// `what` on the side that has it: the database for `extra-*`, the
/// migrations for `missing-*`.
fn one_side(d: Difference, what: String) -> Difference {
    if d.kind.extra() {
        d.sides(None, Some(what))
    } else {
        d.sides(Some(what), None)
    }
}

fn table_difference(kind: DiffKind, t: &Table) -> Difference {
    let d = Difference::new(kind, Some(&t.schema), Some(&t.name), None);
    one_side(d, format!("{} {}", t.kind, t.qualified()))
}

/// Extensions pair by name. Only a missing one fails the run: an extra one
/// or another version is listed but expected of a production server.
fn compare_extensions(e: &[schema::Extension], a: &[schema::Extension], out: &mut Vec<Difference>) {
    let ext = |kind, x: &schema::Extension| Difference::new(kind, None, None, Some(&x.name));
    let matched = check::match_objects(e, a, |x| &x.name, |x| x.name.clone());
    for x in matched.only_left {
        out.push(ext(DiffKind::MissingExtension, x).sides(Some(x.version.clone()), None));
    }
    for x in matched.only_right {
        out.push(ext(DiffKind::ExtraExtension, x).sides(None, Some(x.version.clone())));
    }
    for (ex, ax) in matched.same_name {
        if ex.version != ax.version {
            let (v, w) = (Some(ex.version.clone()), Some(ax.version.clone()));
            out.push(ext(DiffKind::ExtensionVersion, ex).sides(v, w));
        }
    }
}

/// Sequences. One that a column owns (serial, identity) belongs to that
/// column and pairs with the sequence the same column owns on the other
/// side, whatever their names: a table renamed by `AlterModelTable` keeps
/// its sequence's old name, a database built afresh has the new one, and
/// that is no difference. Such a sequence is reported only where its column
/// does not already say it: not when the column (or its table) is missing
/// on one side or its default/identity differs (`column-default`). A
/// sequence no column owns pairs by schema and name.
fn compare_sequences(expected: &Schema, actual: &Schema, out: &mut Vec<Difference>) {
    let columns = |s: &Schema| -> BTreeMap<String, Column> {
        s.tables
            .iter()
            .flat_map(|t| {
                t.columns
                    .iter()
                    .map(move |c| (format!("{}.{}", t.qualified(), c.name), c.clone()))
            })
            .collect()
    };
    let (ec, ac) = (columns(expected), columns(actual));
    // The column says it already, or there is no column to pair by.
    let told_by_column = |owner: &str| match (ec.get(owner), ac.get(owner)) {
        (Some(x), Some(y)) => column_clause(x) != column_clause(y),
        _ => true,
    };
    let owned = |s: &Schema| -> BTreeMap<String, schema::Sequence> {
        s.sequences
            .iter()
            .filter_map(|q| Some((q.owned_by.clone()?, q.clone())))
            .collect()
    };
    let (eo, ao) = (owned(expected), owned(actual));
    let seq = |kind, q: &schema::Sequence, owner: Option<&str>| {
        // `schema.table.column`: the table is the middle part.
        let table = owner
            .and_then(|o| o.rsplit_once('.'))
            .and_then(|(t, _)| t.split_once('.'));
        let mut d = Difference::new(kind, Some(&q.schema), table.map(|(_, t)| t), Some(&q.name));
        d.owned_by = owner.map(str::to_string);
        d
    };
    for (owner, eq) in &eo {
        match ao.get(owner) {
            Some(aq) if eq.definition() != aq.definition() => {
                let mut d = seq(DiffKind::SequenceDefinition, eq, Some(owner))
                    .sides(Some(eq.definition()), Some(aq.definition()));
                if aq.name != eq.name {
                    d.database_name = Some(aq.name.clone());
                }
                out.push(d);
            }
            None if !told_by_column(owner) => {
                let d = seq(DiffKind::MissingSequence, eq, Some(owner));
                out.push(one_side(d, eq.definition()));
            }
            Some(_) | None => {}
        }
    }
    for (owner, aq) in &ao {
        if !eo.contains_key(owner) && !told_by_column(owner) {
            let d = seq(DiffKind::ExtraSequence, aq, Some(owner));
            out.push(one_side(d, aq.definition()));
        }
    }

    let free = |s: &Schema| -> BTreeMap<(String, String), schema::Sequence> {
        s.sequences
            .iter()
            .filter(|q| q.owned_by.is_none())
            .map(|q| ((q.schema.clone(), q.name.clone()), q.clone()))
            .collect()
    };
    let (ef, af) = (free(expected), free(actual));
    for (key, eq) in &ef {
        match af.get(key) {
            Some(aq) if eq.definition() != aq.definition() => out.push(
                seq(DiffKind::SequenceDefinition, eq, None)
                    .sides(Some(eq.definition()), Some(aq.definition())),
            ),
            Some(_) => {}
            None => out.push(one_side(
                seq(DiffKind::MissingSequence, eq, None),
                eq.definition(),
            )),
        }
    }
    for (key, aq) in &af {
        if !ef.contains_key(key) {
            out.push(one_side(
                seq(DiffKind::ExtraSequence, aq, None),
                aq.definition(),
            ));
        }
    }
}

/// What of a column is its default: the default, identity or generated
/// clause.
fn column_clause(c: &Column) -> (Option<String>, Option<String>, Option<String>) {
    (c.default.clone(), c.identity.clone(), c.generated.clone())
}

fn compare_table(e: &Table, a: &Table, out: &mut Vec<Difference>) {
    let diff = |kind, name: &str, expected: Option<String>, actual: Option<String>| {
        Difference::new(kind, Some(&e.schema), Some(&e.name), Some(name)).sides(expected, actual)
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
        if column_clause(ec) != column_clause(ac) {
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

/// Attribute each difference to the migration that made its object.
/// Indexes, constraints, tables, sequences and extensions by their name (a
/// RunSQL's `CREATE INDEX name`, an `AddIndex(… name=…)`, `CREATE
/// EXTENSION name`), an extension first by the operation Django has for it
/// (`TrigramExtension()`). Columns, whose names (`name`, `price`) occur in
/// too many unrelated lines to search for, by reading Django's operations
/// (`check::columns`): a missing column to the operation that made it
/// (`CreateModel`'s field line, `AddField`, `RenameField`), a differing one
/// to the last that defined it (`AlterField`), an extra one to the
/// `RemoveField` that dropped it; a column's own sequence (identity,
/// serial) to its column's maker.
pub fn attribute(differences: &mut [Difference], sources: &[check::MigrationSource]) {
    attribute_by(differences, sources, |d| {
        let name = match d.kind {
            DiffKind::MissingColumn
            | DiffKind::ExtraColumn
            | DiffKind::ColumnType
            | DiffKind::ColumnNullable
            | DiffKind::ColumnDefault => return None,
            DiffKind::MissingTable | DiffKind::ExtraTable => d.table.as_deref()?,
            // Django's operation first: a comment may name the extension.
            DiffKind::MissingExtension | DiffKind::ExtensionVersion => {
                let name = d.name.as_deref()?;
                extension_operation(name).unwrap_or(name)
            }
            _ => d.name.as_deref()?,
        };
        Some(name)
    });
    // Extensions created by name (`RunSQL("CREATE EXTENSION …")`).
    attribute_by(differences, sources, |d| match d.kind {
        DiffKind::MissingExtension | DiffKind::ExtensionVersion if d.migration.is_none() => {
            d.name.as_deref()
        }
        _ => None,
    });

    let origins = check::columns::origins(sources);
    for d in differences.iter_mut() {
        let (Some(table), Some(name)) = (d.table.clone(), d.name.clone()) else {
            continue;
        };
        let column = |c: &str| origins.columns.get(&(table.clone(), c.to_string()));
        d.migration = match d.kind {
            DiffKind::MissingColumn => column(&name).map(|o| o.made.clone()),
            DiffKind::ColumnType | DiffKind::ColumnNullable | DiffKind::ColumnDefault => {
                column(&name).map(|o| o.defined.clone())
            }
            DiffKind::ExtraColumn => origins.removed.get(&(table, name)).cloned(),
            DiffKind::MissingSequence | DiffKind::ExtraSequence | DiffKind::SequenceDefinition
                if d.migration.is_none() =>
            {
                let owner = d.owned_by.as_deref().and_then(|o| o.rsplit_once('.'));
                owner.and_then(|(_, c)| column(c)).map(|o| o.made.clone())
            }
            // Django names a field's own index or constraint with a hash
            // (`app_model_parent_id_140e6a93_fk_…`) no migration spells out:
            // one on a single column comes from that column's definition.
            DiffKind::MissingIndex
            | DiffKind::IndexDefinition
            | DiffKind::IndexRenamed
            | DiffKind::MissingConstraint
            | DiffKind::ConstraintDefinition
            | DiffKind::ConstraintRenamed
                if d.migration.is_none() =>
            {
                let on = d.expected.as_deref().and_then(single_column);
                on.and_then(column).map(|o| o.defined.clone())
            }
            _ => continue,
        };
    }
}

/// The one column an index or constraint definition is on: `… USING btree
/// (parent_id)`, `FOREIGN KEY (parent_id) REFERENCES …`, `UNIQUE (sku)`;
/// `None` for several columns or an expression.
fn single_column(definition: &str) -> Option<&str> {
    let from = definition.find(" USING ").map_or(0, |at| at + 7);
    let rest = &definition[from..];
    let open = rest.find('(')?;
    let close = open + rest[open..].find(')')?;
    let inner = rest[open + 1..close].trim();
    // `sku varchar_pattern_ops`: the column, then its operator class.
    let column = inner.split(' ').next()?.trim_matches('"');
    let plain = !column.is_empty()
        && !inner.contains(',')
        && column
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    plain.then_some(column)
}

/// Set the migration of each difference `name_of` names an object for to
/// the operation that mentions that name (`check::attribute`).
fn attribute_by(
    differences: &mut [Difference],
    sources: &[check::MigrationSource],
    name_of: impl Fn(&Difference) -> Option<&str>,
) {
    let wanted: Vec<(usize, String, bool)> = differences
        .iter()
        .enumerate()
        .filter_map(|(i, d)| Some((i, name_of(d)?.to_string(), d.kind.extra())))
        .collect();
    let names: Vec<(&str, bool)> = wanted.iter().map(|(_, n, g)| (n.as_str(), *g)).collect();
    let refs = check::attribute(&names, sources);
    for ((i, _, _), r) in wanted.iter().zip(refs) {
        differences[*i].migration = r;
    }
}

/// The `django.contrib.postgres.operations` class that creates the
/// extension `name` without naming it.
fn extension_operation(name: &str) -> Option<&'static str> {
    Some(match name {
        "btree_gin" => "BtreeGinExtension",
        "btree_gist" => "BtreeGistExtension",
        "citext" => "CITextExtension",
        "pgcrypto" => "CryptoExtension",
        "hstore" => "HStoreExtension",
        "pg_trgm" => "TrigramExtension",
        "unaccent" => "UnaccentExtension",
        _ => return None,
    })
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
            .map(|d| (d.kind, d.name.or(d.table).unwrap_or_default()))
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
    fn sequence(name: &str, owned_by: Option<&str>, increment: i64) -> schema::Sequence {
        schema::Sequence {
            schema: "public".into(),
            name: name.into(),
            data_type: "bigint".into(),
            start: 1,
            increment,
            min: 1,
            max: i64::MAX,
            cycle: false,
            owned_by: owned_by.map(str::to_string),
        }
    }

    fn extension(name: &str, version: &str) -> schema::Extension {
        schema::Extension {
            name: name.into(),
            version: version.into(),
        }
    }

    #[test]
    fn sequences_pair_by_owning_column_and_extensions_by_name() {
        let mut identity = column("id", "bigint", false);
        identity.identity = Some("by default".into());
        let t = |name: &str| table(name, vec![identity.clone()], vec![]);
        let expected = Schema {
            extensions: vec![extension("pg_trgm", "1.6"), extension("hstore", "1.8")],
            tables: vec![t("a"), t("b"), t("gone")],
            sequences: vec![
                // Renamed on the other side: no difference.
                sequence("old_a_id_seq", Some("public.a.id"), 1),
                sequence("b_id_seq", Some("public.b.id"), 1),
                // Its table is missing: the table says it.
                sequence("gone_id_seq", Some("public.gone.id"), 1),
                sequence("free_seq", None, 1),
            ],
        };
        let actual = Schema {
            extensions: vec![extension("hstore", "1.7"), extension("citext", "1.6")],
            tables: vec![t("a"), t("b")],
            sequences: vec![
                sequence("a_id_seq", Some("public.a.id"), 1),
                sequence("b_id_seq", Some("public.b.id"), 5),
                sequence("by_hand", None, 1),
            ],
        };
        let got: Vec<(DiffKind, Option<String>, String, bool)> = compare(&expected, &actual)
            .into_iter()
            .map(|d| (d.kind, d.table.clone(), d.name.unwrap_or_default(), d.fails))
            .collect();
        let s = |x: &str| x.to_string();
        assert_eq!(
            got,
            vec![
                (DiffKind::ExtraExtension, None, s("citext"), false),
                (DiffKind::ExtensionVersion, None, s("hstore"), false),
                (DiffKind::MissingExtension, None, s("pg_trgm"), true),
                (DiffKind::ExtraSequence, None, s("by_hand"), true),
                (DiffKind::MissingSequence, None, s("free_seq"), true),
                (
                    DiffKind::SequenceDefinition,
                    Some(s("b")),
                    s("b_id_seq"),
                    true
                ),
                (DiffKind::MissingTable, Some(s("gone")), s(""), true),
            ]
        );
    }

    #[test]
    fn single_column_of_index_and_constraint_definitions() {
        let cases = [
            (
                "CREATE INDEX a_b_1 ON public.a USING btree (parent_id)",
                Some("parent_id"),
            ),
            (
                "CREATE INDEX a_like ON public.a USING btree (sku varchar_pattern_ops)",
                Some("sku"),
            ),
            (
                "FOREIGN KEY (parent_id) REFERENCES a(id) DEFERRABLE INITIALLY DEFERRED",
                Some("parent_id"),
            ),
            ("CREATE INDEX x ON public.a USING btree (a, b)", None),
            (
                "CREATE INDEX x ON public.a USING btree (lower((name)::text))",
                None,
            ),
            ("CHECK ((stock >= 0))", None),
        ];
        for (def, want) in cases {
            assert_eq!(single_column(def), want, "{def}");
        }
    }
}
