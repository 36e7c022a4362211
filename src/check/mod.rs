//! Compare the indexes of the migrated database with those Django's model
//! state declares, and attribute each difference to the migration file and
//! line that made it.
//!
//! Why: `--nomigrations` (and any "syncdb" test database) builds the schema
//! from model state, so indexes created by RunSQL, RunPython or
//! `database_operations` silently do not exist there, and state-only
//! `AddIndex` operations claim indexes the real database lacks.
//!
//! The comparison and the attribution are pure functions of two catalogs and
//! the migration sources, so they are unit-tested here without a server.

pub mod columns;
pub mod leftover;
mod run;
pub use run::{cached, migration_sources, run, CheckError, Checked};

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use tokio_postgres::Client;

/// Bump when the cached catalogs change meaning.
pub const CACHE_FORMAT: u32 = 2;

/// One index (or the index behind a unique/exclusion/primary-key constraint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexInfo {
    pub schema: String,
    pub table: String,
    pub name: String,
    /// `pg_get_indexdef`, as PostgreSQL prints it.
    pub definition: String,
    pub valid: bool,
    /// `p`, `u` or `x` when a constraint owns the index.
    pub constraint: Option<String>,
}

impl IndexInfo {
    /// The definition with the index name taken out, so two indexes that
    /// differ only by name compare equal.
    pub fn shape(&self) -> String {
        without_name(&self.definition)
    }
}

/// `CREATE [UNIQUE] INDEX name ON …` -> `CREATE [UNIQUE] INDEX ON …`.
pub fn without_name(def: &str) -> String {
    for prefix in ["CREATE UNIQUE INDEX ", "CREATE INDEX "] {
        if let Some(rest) = def.strip_prefix(prefix) {
            let after = if let Some(quoted) = rest.strip_prefix('"') {
                // A quoted name ends at a lone `"` (`""` is an escaped quote).
                let bytes = quoted.as_bytes();
                let mut i = 0;
                while i < bytes.len() {
                    if bytes[i] == b'"' {
                        if bytes.get(i + 1) == Some(&b'"') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                &quoted[(i + 1).min(quoted.len())..]
            } else {
                rest.find(' ').map(|i| &rest[i..]).unwrap_or("")
            };
            return format!("{}{}", prefix.trim_end(), after);
        }
    }
    def.to_string()
}

/// What a database looks like for the purpose of the check.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Catalog {
    pub indexes: Vec<IndexInfo>,
    /// `schema.table` of every user table.
    pub tables: BTreeSet<String>,
    pub extensions: Vec<String>,
}

/// User schemas: not the system's, not an extension's.
const USER_NAMESPACE: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname NOT LIKE 'pg\\_%'";

/// `AND` the object `oid` of catalog `class` is no extension's member.
fn not_in_extension(class: &str, oid: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM pg_depend dep WHERE dep.classid = '{class}'::regclass \
         AND dep.objid = {oid} AND dep.deptype = 'e')"
    )
}

/// Statements that recreate what models may reference but only migrations
/// create (CreateCollation, a RunSQL enum or text search configuration):
/// schemas, collations, enum types, text search dictionaries and
/// configurations, domains, in that order. The model-state database needs
/// them before Django creates the models, as it needs the extensions.
/// The server builds each statement with `format('%I', …)` / `%L`, so every
/// name and value is quoted by PostgreSQL itself.
pub async fn model_prerequisites(client: &Client) -> Result<Vec<String>, tokio_postgres::Error> {
    let ns = USER_NAMESPACE;
    let queries = [
        format!(
            "SELECT format('CREATE SCHEMA IF NOT EXISTS %I', n.nspname) FROM pg_namespace n \
             WHERE {ns} AND n.nspname <> 'public' AND {} ORDER BY 1",
            not_in_extension("pg_namespace", "n.oid")
        ),
        // colllocale is PostgreSQL 17's name for 15 and 16's colliculocale.
        format!(
            "SELECT format('CREATE COLLATION IF NOT EXISTS %I.%I (%s)', n.nspname, c.collname, \
               CASE c.collprovider \
                 WHEN 'i' THEN format('provider = icu, locale = %L, deterministic = %s', \
                   coalesce(j->>'colllocale', j->>'colliculocale'), \
                   CASE WHEN c.collisdeterministic THEN 'true' ELSE 'false' END) \
                   || CASE WHEN j->>'collicurules' IS NULL THEN '' \
                      ELSE format(', rules = %L', j->>'collicurules') END \
                 WHEN 'b' THEN format('provider = builtin, locale = %L', j->>'colllocale') \
                 ELSE format('provider = libc, lc_collate = %L, lc_ctype = %L', \
                   c.collcollate, c.collctype) \
               END) \
             FROM pg_collation c CROSS JOIN LATERAL to_jsonb(c) j \
             JOIN pg_namespace n ON n.oid = c.collnamespace \
             WHERE {ns} AND {} ORDER BY 1",
            not_in_extension("pg_collation", "c.oid")
        ),
        format!(
            "SELECT format('CREATE TYPE %I.%I AS ENUM (%s)', n.nspname, t.typname, \
               (SELECT string_agg(format('%L', e.enumlabel), ', ' ORDER BY e.enumsortorder) \
                FROM pg_enum e WHERE e.enumtypid = t.oid)) \
             FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
             WHERE t.typtype = 'e' AND {ns} AND {} ORDER BY 1",
            not_in_extension("pg_type", "t.oid")
        ),
        format!(
            "SELECT format('CREATE TEXT SEARCH DICTIONARY %I.%I (TEMPLATE = %I.%I%s)', \
               n.nspname, d.dictname, tn.nspname, tt.tmplname, \
               coalesce(', ' || d.dictinitoption, '')) \
             FROM pg_ts_dict d JOIN pg_namespace n ON n.oid = d.dictnamespace \
             JOIN pg_ts_template tt ON tt.oid = d.dicttemplate \
             JOIN pg_namespace tn ON tn.oid = tt.tmplnamespace \
             WHERE {ns} AND {} ORDER BY 1",
            not_in_extension("pg_ts_dict", "d.oid")
        ),
        format!(
            "SELECT format('CREATE TEXT SEARCH CONFIGURATION %I.%I (PARSER = %I.%I)', \
               n.nspname, c.cfgname, pn.nspname, p.prsname) \
             || coalesce((SELECT string_agg(format('; ALTER TEXT SEARCH CONFIGURATION %I.%I \
                  ADD MAPPING FOR %s WITH %s', n.nspname, c.cfgname, tt.alias, m.dicts), '' \
                  ORDER BY tt.tokid) \
                FROM (SELECT maptokentype, \
                        string_agg(mapdict::regdictionary::text, ', ' ORDER BY mapseqno) dicts \
                      FROM pg_ts_config_map WHERE mapcfg = c.oid GROUP BY 1) m \
                JOIN ts_token_type(c.cfgparser) tt ON tt.tokid = m.maptokentype), '') \
             FROM pg_ts_config c JOIN pg_namespace n ON n.oid = c.cfgnamespace \
             JOIN pg_ts_parser p ON p.oid = c.cfgparser \
             JOIN pg_namespace pn ON pn.oid = p.prsnamespace \
             WHERE {ns} AND {} ORDER BY 1",
            not_in_extension("pg_ts_config", "c.oid")
        ),
        format!(
            "SELECT format('CREATE DOMAIN %I.%I AS %s', n.nspname, t.typname, \
               format_type(t.typbasetype, t.typtypmod)) \
             || CASE WHEN t.typcollation <> 0 AND t.typcollation <> \
                  (SELECT b.typcollation FROM pg_type b WHERE b.oid = t.typbasetype) \
                THEN ' COLLATE ' || t.typcollation::regcollation::text ELSE '' END \
             || coalesce(' DEFAULT ' || t.typdefault, '') \
             || CASE WHEN t.typnotnull THEN ' NOT NULL' ELSE '' END \
             || coalesce((SELECT string_agg(format(' CONSTRAINT %I %s', k.conname, \
                  pg_get_constraintdef(k.oid)), '' ORDER BY k.conname) \
                FROM pg_constraint k WHERE k.contypid = t.oid), '') \
             FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
             WHERE t.typtype = 'd' AND {ns} AND {} ORDER BY t.oid",
            not_in_extension("pg_type", "t.oid")
        ),
    ];
    let mut statements = Vec::new();
    for q in &queries {
        for row in client.query(q.as_str(), &[]).await? {
            statements.push(row.get(0));
        }
    }
    Ok(statements)
}

/// Schemas that hold no user objects: the system's, TOAST and temp ones.
pub const NOT_SYSTEM: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'";

/// Every index of the user tables (and materialized views) not owned by an
/// extension, by schema, table and name; django_migrations' only with
/// `with_django_migrations` (`check` compares what migrations make, and
/// that table is migrate's own bookkeeping).
pub async fn read_indexes(
    client: &Client,
    with_django_migrations: bool,
) -> Result<Vec<IndexInfo>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!(
                "SELECT n.nspname, t.relname, i.relname, pg_get_indexdef(x.indexrelid), x.indisvalid, \
                        (SELECT c.contype::text FROM pg_constraint c \
                          WHERE c.conindid = x.indexrelid AND c.contype IN ('p', 'u', 'x') LIMIT 1) \
                 FROM pg_index x \
                 JOIN pg_class i ON i.oid = x.indexrelid \
                 JOIN pg_class t ON t.oid = x.indrelid \
                 JOIN pg_namespace n ON n.oid = t.relnamespace \
                 WHERE {NOT_SYSTEM} AND ($1 OR t.relname <> 'django_migrations') AND t.relkind IN ('r', 'p', 'm') \
                   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                                   AND d.objid = t.oid AND d.deptype = 'e') \
                 ORDER BY 1, 2, 3"
            ),
            &[&with_django_migrations],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| IndexInfo {
            schema: r.get(0),
            table: r.get(1),
            name: r.get(2),
            definition: r.get(3),
            valid: r.get(4),
            constraint: r.get(5),
        })
        .collect())
}

/// Read the catalog of the database `client` is connected to: all user
/// schemas, leaving out django_migrations and objects owned by extensions.
pub async fn read_catalog(client: &Client) -> Result<Catalog, tokio_postgres::Error> {
    let indexes = read_indexes(client, false).await?;
    let tables = client
        .query(
            &format!(
                "SELECT n.nspname || '.' || t.relname FROM pg_class t \
                 JOIN pg_namespace n ON n.oid = t.relnamespace \
                 WHERE {NOT_SYSTEM} AND t.relkind IN ('r', 'p', 'm') AND t.relname <> 'django_migrations'"
            ),
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let extensions = client
        .query(
            "SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(Catalog {
        indexes,
        tables,
        extensions,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// Created by migrations (RunSQL, RunPython, database_operations) but not
    /// declared by the model state.
    OnlyInMigrations,
    /// Declared by the model state, absent after migrating.
    OnlyInModelState,
    /// Both sides have it, under different names (a legacy name, usually).
    SameDefinitionOtherName,
    /// Same name on both sides, different definition.
    DifferentDefinition,
    /// `indisvalid = false` after migrating (a failed CONCURRENTLY build).
    InvalidIndex,
    /// The model state declares one index name twice with different
    /// definitions: only one of them can exist.
    ConflictInModelState,
}

impl FindingKind {
    pub const ALL: [FindingKind; 6] = [
        FindingKind::OnlyInMigrations,
        FindingKind::OnlyInModelState,
        FindingKind::SameDefinitionOtherName,
        FindingKind::DifferentDefinition,
        FindingKind::InvalidIndex,
        FindingKind::ConflictInModelState,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::OnlyInMigrations => "only-in-migrations",
            FindingKind::OnlyInModelState => "only-in-model-state",
            FindingKind::SameDefinitionOtherName => "same-definition-other-name",
            FindingKind::DifferentDefinition => "different-definition",
            FindingKind::InvalidIndex => "invalid-index",
            FindingKind::ConflictInModelState => "conflict-in-model-state",
        }
    }

    /// Kinds that fail the run unless configured otherwise.
    pub fn fails_by_default(self) -> bool {
        self != FindingKind::SameDefinitionOtherName
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationRef {
    pub app: String,
    pub name: String,
    /// Relative to the project dir when inside it, else absolute.
    pub path: String,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub schema: String,
    pub table: String,
    pub index: String,
    pub definition: String,
    /// The model-state side's name (same-definition-other-name) or
    /// definition (different-definition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_state_index: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_state_definition: Option<String>,
    /// False for tables that only the migrated database has (unmanaged
    /// models, models removed from state only): a useful filter.
    pub table_in_model_state: bool,
    pub migration: Option<MigrationRef>,
    /// When no migration names the index: the rename whose old name it
    /// still carries (`migration` is then that operation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_by: Option<leftover::LeftBy>,
    /// Whether this finding fails the run (after config and baseline).
    pub fails: bool,
}

/// Compare the migrated catalog with the model-state catalog.
pub fn compare(migrated: &Catalog, state: &Catalog) -> Vec<Finding> {
    type TableKey = (String, String);
    let group = |c: &Catalog| {
        let mut m: BTreeMap<TableKey, Vec<IndexInfo>> = BTreeMap::new();
        for i in &c.indexes {
            m.entry((i.schema.clone(), i.table.clone()))
                .or_default()
                .push(i.clone());
        }
        m
    };
    let (mg, sg) = (group(migrated), group(state));
    let tables: BTreeSet<&TableKey> = mg.keys().chain(sg.keys()).collect();
    let empty = Vec::new();
    let mut out = Vec::new();
    for key in tables {
        let m = mg.get(key).unwrap_or(&empty);
        let s = sg.get(key).unwrap_or(&empty);
        let in_state = state.tables.contains(&format!("{}.{}", key.0, key.1));
        let finding = |kind, i: &IndexInfo| Finding {
            kind,
            schema: i.schema.clone(),
            table: i.table.clone(),
            index: i.name.clone(),
            definition: i.definition.clone(),
            model_state_index: None,
            model_state_definition: None,
            table_in_model_state: in_state,
            migration: None,
            left_by: None,
            fails: false,
        };
        let key = |i: &IndexInfo| (i.shape(), i.constraint.clone());
        let matched = match_objects(m, s, |i| &i.name, key);
        for mi in m.iter().filter(|i| !i.valid) {
            out.push(finding(FindingKind::InvalidIndex, mi));
        }
        for (mi, si) in matched.same_name {
            if key(mi) != key(si) {
                let mut f = finding(FindingKind::DifferentDefinition, mi);
                f.model_state_definition = Some(si.definition.clone());
                out.push(f);
            }
        }
        for (mi, si) in matched.renamed {
            let mut f = finding(FindingKind::SameDefinitionOtherName, mi);
            f.model_state_index = Some(si.name.clone());
            out.push(f);
        }
        for mi in matched.only_left {
            out.push(finding(FindingKind::OnlyInMigrations, mi));
        }
        for si in matched.only_right {
            out.push(finding(FindingKind::OnlyInModelState, si));
        }
    }
    sort(&mut out);
    out
}

/// Findings in report order: by table, index, kind.
pub fn sort(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        (&a.schema, &a.table, &a.index, a.kind).cmp(&(&b.schema, &b.table, &b.index, b.kind))
    });
}

/// A finding for each index name the model state declares twice with
/// different definitions (the shim builds the first): the migrated side is
/// compared with that one, and this says the state itself disagrees.
pub fn conflict_findings(conflicts: &[crate::django::IndexConflict]) -> Vec<Finding> {
    conflicts
        .iter()
        .map(|c| Finding {
            kind: FindingKind::ConflictInModelState,
            schema: c.schema.clone(),
            table: c.table.clone(),
            index: c.index.clone(),
            definition: c.other.clone(),
            model_state_index: None,
            model_state_definition: Some(c.kept.clone()),
            table_in_model_state: true,
            migration: None,
            left_by: None,
            fails: false,
        })
        .collect()
}

/// Two sides' objects (one table's indexes, or constraints) paired up:
/// first by name, then what is left by shape (their definition without the
/// name), so an object renamed on one side is told apart from a missing one.
#[derive(Debug)]
pub struct Matched<'a, T> {
    /// Same name on both sides (the shapes may differ).
    pub same_name: Vec<(&'a T, &'a T)>,
    /// Same shape, different names: (left, right).
    pub renamed: Vec<(&'a T, &'a T)>,
    pub only_left: Vec<&'a T>,
    pub only_right: Vec<&'a T>,
}

pub fn match_objects<'a, T, K: PartialEq>(
    left: &'a [T],
    right: &'a [T],
    name: impl Fn(&T) -> &str,
    shape: impl Fn(&T) -> K,
) -> Matched<'a, T> {
    let by_name: BTreeMap<&str, &T> = right.iter().map(|r| (name(r), r)).collect();
    let left_names: BTreeSet<&str> = left.iter().map(&name).collect();
    let mut unmatched: Vec<&T> = right
        .iter()
        .filter(|r| !left_names.contains(name(r)))
        .collect();
    let mut out = Matched {
        same_name: vec![],
        renamed: vec![],
        only_left: vec![],
        only_right: vec![],
    };
    for l in left {
        if let Some(r) = by_name.get(name(l)) {
            out.same_name.push((l, r));
            continue;
        }
        let s = shape(l);
        match unmatched.iter().position(|r| shape(r) == s) {
            Some(pos) => out.renamed.push((l, unmatched.remove(pos))),
            None => out.only_left.push(l),
        }
    }
    out.only_right = unmatched;
    out
}

/// A migration file's text, for attribution.
#[derive(Debug, Clone)]
pub struct MigrationSource {
    pub app: String,
    pub name: String,
    pub path: String,
    pub text: String,
}

/// For each finding, the migration and line of the operation that mentions
/// its index: for an index the database has, the operation that creates it;
/// for one it lacks, preferably the operation that dropped it, else the one
/// that declares it (`attribute`).
pub fn attribute_all(findings: &mut [Finding], sources: &[MigrationSource]) {
    let wanted: Vec<(&str, bool)> = findings
        .iter()
        .map(|f| (f.index.as_str(), f.kind == FindingKind::OnlyInModelState))
        .collect();
    let refs = attribute(&wanted, sources);
    for (f, r) in findings.iter_mut().zip(refs) {
        f.migration = r;
        // A name Django made up after a table or column that a later
        // migration renamed: no migration mentions it, the rename
        // explains it. (A name only the model state has is the new one.)
        if f.migration.is_none() && f.kind != FindingKind::OnlyInModelState {
            f.left_by = leftover::explain(&f.index, &f.table, sources);
            f.migration = f.left_by.as_ref().map(|l| l.migration.clone());
        }
    }
}

/// For each `(name, gone)`, the migration and line of the operation that
/// mentions the object `name`: the one that creates it, or with `gone`
/// (the object is missing where it was expected) preferably the one that
/// drops it. `None` where no migration names it.
///
/// One pass over every line of every source, looking identifiers up in the
/// set of wanted names: a 1,000-migration project is scanned once, not once
/// per object.
pub fn attribute(
    wanted: &[(&str, bool)],
    sources: &[MigrationSource],
) -> Vec<Option<MigrationRef>> {
    use std::collections::HashMap;
    let by_name: HashMap<&str, Vec<usize>> =
        wanted
            .iter()
            .enumerate()
            .fold(HashMap::new(), |mut m, (i, (name, _))| {
                m.entry(*name).or_default().push(i);
                m
            });
    // wanted -> (score, source order, line index)
    let mut best: Vec<Option<(u8, usize, usize)>> = vec![None; wanted.len()];
    let mut split: Vec<Vec<&str>> = Vec::with_capacity(sources.len());
    for (order, src) in sources.iter().enumerate() {
        let lines: Vec<&str> = src.text.split('\n').collect();
        for (n, line) in lines.iter().enumerate() {
            for token in line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                let Some(ids) = by_name.get(token) else {
                    continue;
                };
                for &i in ids {
                    let score = mention_score(line, wanted[i].1);
                    if best[i].is_none_or(|(s, o, _)| (score, order) > (s, o)) {
                        best[i] = Some((score, order, n));
                    }
                }
            }
        }
        split.push(lines);
    }
    best.into_iter()
        .map(|b| {
            b.map(|(_, order, n)| {
                let src = &sources[order];
                MigrationRef {
                    app: src.app.clone(),
                    name: src.name.clone(),
                    path: src.path.clone(),
                    line: operation_line(&split[order], n) + 1,
                }
            })
        })
        .collect()
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `name` occurs in `line` as a whole identifier.
fn mentions(line: &str, name: &str) -> bool {
    let bytes = line.as_bytes();
    let mut from = 0;
    while let Some(pos) = line[from..].find(name) {
        let start = from + pos;
        let end = start + name.len();
        let before = start == 0 || !is_ident_byte(bytes[start - 1]);
        let after = end == bytes.len() || !is_ident_byte(bytes[end]);
        if before && after {
            return true;
        }
        from = start + 1;
    }
    false
}

fn mention_score(line: &str, gone: bool) -> u8 {
    // An import names an operation's class (`TrigramExtension`) but is
    // none: any operation line beats it.
    let trimmed = line.trim_start();
    if trimmed.starts_with("from ") || trimmed.starts_with("import ") {
        return 0;
    }
    let upper = line.to_ascii_uppercase();
    let drops = upper.contains("DROP ")
        || line.contains("RemoveIndex")
        || line.contains("RemoveConstraint");
    let creates = upper.contains("CREATE ")
        || upper.contains("ADD CONSTRAINT")
        || upper.contains("RENAME")
        || line.contains("name=")
        || line.contains("AddIndex")
        || line.contains("AddConstraint");
    match (gone, drops, creates) {
        (true, true, _) => 3,
        (_, false, true) => 2,
        (_, true, _) => 0,
        _ => 1,
    }
}

/// Walk back from a mention to the line that starts its operation
/// (`migrations.RunSQL(`, `AddIndex(`, …), stopping at a function or class
/// boundary. A mention inside a function (RunPython's code) is attributed
/// to the RunPython operation that calls that function.
fn operation_line(lines: &[&str], mention: usize) -> usize {
    const OPS: &[&str] = &[
        "RunSQL(",
        "RunPython(",
        "AddIndex(",
        "RemoveIndex(",
        "RenameIndex(",
        "AddConstraint(",
        "RemoveConstraint(",
        "CreateModel(",
        "AddField(",
        "AlterField(",
        "AlterUniqueTogether(",
        "AlterIndexTogether(",
    ];
    for i in (0..=mention).rev() {
        let line = lines[i];
        if OPS.iter().any(|op| line.contains(op)) {
            return i;
        }
        let trimmed = line.trim_start();
        if let Some(def) = trimmed.strip_prefix("def ") {
            let func = def.split('(').next().unwrap_or("").trim();
            let caller = lines.iter().position(|l| {
                l.contains("RunPython(") && (mentions(l, func) || next_mentions(lines, l, func))
            });
            return caller.unwrap_or(mention);
        }
        if trimmed.starts_with("class ") {
            break;
        }
    }
    mention
}

/// `migrations.RunPython(\n    forwards, …)`: the function is on the next line.
fn next_mentions(lines: &[&str], line: &str, func: &str) -> bool {
    lines
        .iter()
        .position(|l| std::ptr::eq(*l, line))
        .and_then(|i| lines.get(i + 1))
        .is_some_and(|l| mentions(l, func))
}

/// What identifies a finding in a baseline file (`--write-baseline` writes
/// them, `--baseline` suppresses exactly what it lists).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BaselineEntry {
    pub kind: FindingKind,
    pub schema: String,
    pub table: String,
    pub index: String,
}

impl BaselineEntry {
    pub fn of(f: &Finding) -> BaselineEntry {
        BaselineEntry {
            kind: f.kind,
            schema: f.schema.clone(),
            table: f.table.clone(),
            index: f.index.clone(),
        }
    }
}

pub fn default_fail_on() -> Vec<FindingKind> {
    FindingKind::ALL
        .into_iter()
        .filter(|k| k.fails_by_default())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ix(table: &str, name: &str, cols: &str) -> IndexInfo {
        IndexInfo {
            schema: "public".into(),
            table: table.into(),
            name: name.into(),
            definition: format!("CREATE INDEX {name} ON public.{table} USING btree ({cols})"),
            valid: true,
            constraint: None,
        }
    }

    fn catalog(indexes: Vec<IndexInfo>) -> Catalog {
        let tables = indexes
            .iter()
            .map(|i| format!("{}.{}", i.schema, i.table))
            .collect();
        Catalog {
            indexes,
            tables,
            extensions: vec![],
        }
    }

    #[test]
    fn name_is_removed_from_definitions() {
        assert_eq!(
            without_name("CREATE INDEX a_b ON public.t USING btree (x)"),
            "CREATE INDEX ON public.t USING btree (x)"
        );
        assert_eq!(
            without_name(r#"CREATE UNIQUE INDEX "we""ird name" ON public.t USING btree (x)"#),
            "CREATE UNIQUE INDEX ON public.t USING btree (x)"
        );
    }

    #[test]
    fn compare_classifies_every_difference() {
        let both = ix("t", "t_pk", "id");
        let mut invalid = ix("t", "t_bad", "z");
        invalid.valid = false;
        let migrated = catalog(vec![
            both.clone(),
            ix("t", "t_runsql", "a"),
            ix("t", "t_legacy_name", "b"),
            ix("t", "t_changed", "c"),
            invalid.clone(),
        ]);
        let mut state = catalog(vec![
            both,
            ix("t", "t_state_only", "d"),
            ix("t", "t_new_name", "b"),
            ix("t", "t_changed", "c, d"),
        ]);
        state.indexes.push(IndexInfo {
            valid: true,
            ..invalid
        });
        let got: Vec<(FindingKind, String)> = compare(&migrated, &state)
            .into_iter()
            .map(|f| (f.kind, f.index))
            .collect();
        assert_eq!(
            got,
            vec![
                (FindingKind::InvalidIndex, "t_bad".to_string()),
                (FindingKind::DifferentDefinition, "t_changed".to_string()),
                (
                    FindingKind::SameDefinitionOtherName,
                    "t_legacy_name".to_string()
                ),
                (FindingKind::OnlyInMigrations, "t_runsql".to_string()),
                (FindingKind::OnlyInModelState, "t_state_only".to_string()),
            ]
        );
        let other = compare(&migrated, &state)
            .into_iter()
            .find(|f| f.kind == FindingKind::SameDefinitionOtherName);
        assert_eq!(
            other.and_then(|f| f.model_state_index).as_deref(),
            Some("t_new_name")
        );
    }

    #[test]
    fn unique_constraint_versus_plain_unique_index_differs() {
        let mut a = ix("t", "t_u", "a");
        a.definition = a.definition.replace("CREATE INDEX", "CREATE UNIQUE INDEX");
        let mut b = a.clone();
        b.constraint = Some("u".into());
        let f = compare(&catalog(vec![a]), &catalog(vec![b]));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kind, FindingKind::DifferentDefinition);
    }

    #[test]
    fn tables_missing_from_model_state_are_flagged() {
        let f = compare(
            &catalog(vec![ix("legacy", "legacy_x", "a")]),
            &Catalog::default(),
        );
        assert_eq!(f[0].kind, FindingKind::OnlyInMigrations);
        assert!(!f[0].table_in_model_state);
    }

    fn src(name: &str, text: &str) -> MigrationSource {
        MigrationSource {
            app: "app".into(),
            name: name.into(),
            path: format!("app/migrations/{name}.py"),
            text: text.into(),
        }
    }

    #[test]
    fn attribution_finds_the_operation_line() {
        let runsql = src(
            "0002_x",
            "from django.db import migrations\n\nclass Migration(migrations.Migration):\n    operations = [\n        migrations.RunSQL(\n            \"CREATE INDEX ix_a \"\n            \"ON t (a)\",\n            \"DROP INDEX ix_a\",\n        ),\n    ]\n",
        );
        let runpython = src(
            "0003_y",
            "def fwd(apps, schema_editor):\n    schema_editor.execute(\"CREATE INDEX ix_b ON t (b)\")\n\n\nclass Migration(migrations.Migration):\n    operations = [\n        migrations.RunPython(\n            fwd, migrations.RunPython.noop),\n    ]\n",
        );
        let dropper = src("0004_z", "class Migration:\n    operations = [\n        migrations.RunSQL(\"DROP INDEX ix_c\"),\n    ]\n");
        let declarer = src("0001_w", "class Migration:\n    operations = [\n        migrations.AddIndex(\n            \"m\", models.Index(fields=[\"c\"], name=\"ix_c\")),\n    ]\n");
        let all = [declarer, runsql, runpython, dropper];
        let finding = |index: &str, kind| Finding {
            kind,
            schema: "public".into(),
            table: "t".into(),
            index: index.into(),
            definition: String::new(),
            model_state_index: None,
            model_state_definition: None,
            table_in_model_state: true,
            migration: None,
            left_by: None,
            fails: true,
        };
        let mut f = vec![
            finding("ix_a", FindingKind::OnlyInMigrations),
            finding("ix_b", FindingKind::OnlyInMigrations),
            finding("ix_c", FindingKind::OnlyInModelState),
            finding("ix_a_longer", FindingKind::OnlyInMigrations),
            finding("nowhere", FindingKind::OnlyInMigrations),
        ];
        attribute_all(&mut f, &all);
        let at = |i: usize| f[i].migration.as_ref().map(|m| (m.name.as_str(), m.line));
        assert_eq!(at(0), Some(("0002_x", 5)));
        assert_eq!(at(1), Some(("0003_y", 7)));
        assert_eq!(
            at(2),
            Some(("0004_z", 3)),
            "the drop explains why it is missing"
        );
        assert_eq!(at(3), None, "whole identifiers only");
        assert_eq!(at(4), None);
    }
}
