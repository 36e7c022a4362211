//! The allow-list a cached dump must pass, whole, before its first statement
//! runs: only the statement shapes that `pg_dump --format=plain --no-owner
//! --no-privileges --quote-all-identifiers` writes for one database's schema
//! and data (issues #10 and #21, "Trust").
//!
//! Each statement arrives as PostgreSQL's own parse tree (`parse`, which
//! runs libpg_query: the server's grammar built as a library), so what is
//! judged here is what the server will execute, not an approximation of its
//! lexer: `\r` ending a `--` comment, a `BEGIN ATOMIC` body or a dollar
//! quote cannot make this check see one statement where the server sees
//! another. The list names node types and, for each, the shapes pg_dump
//! writes; every other node type is refused.
//!
//! Why an allow-list: a dump is restored by a throwaway unprivileged role
//! (`Admin::restore_role`), so the server already stops most harm; but that
//! role still owns what it makes, and after the restore everything is handed
//! to the connecting role, a superuser on the embedded server. A deny-list
//! misses the next trick; naming what pg_dump writes does not.
//!
//! What this cannot judge: the code inside function bodies and the
//! expressions (CHECK constraints, index expressions, materialized views)
//! that the restore and later the tests evaluate. Those run with the rights
//! of whoever evaluates them. Signatures (only snapshots signed by a trusted
//! key are restored unless `trust-unsigned` is on) are the defence there
//! (docs/security.md).

use crate::pg::extension::Extension;
use pg_query::protobuf::{
    a_const, AlterTableCmd, AlterTableType, ConstrType, DefineStmt, FuncCall, ObjectType, RangeVar,
    TransactionStmtKind, VariableSetKind,
};
use pg_query::{Node, NodeEnum};

/// A refused statement: what it is, in a few words.
pub type Why = &'static str;

/// What the restore does with an allowed statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it to a lane (the unprivileged restore role).
    Run,
    /// Never send it: migsnap made what it would make before the restore,
    /// with fixed text (an extension of the manifest, its schema, or the
    /// comment the extension's own script already set).
    Skip,
}

/// What the dump's context allows beyond pg_dump's shapes.
pub struct Policy<'a> {
    /// Signed by a trusted key (or built here). An unauthenticated dump may
    /// not define `SECURITY DEFINER` functions: after the restore they would
    /// belong to the superuser that the database is handed back to.
    pub authenticated: bool,
    /// The extensions the manifest records; migsnap creates them before
    /// the restore. A dump's `CREATE EXTENSION` must name one of them.
    pub extensions: &'a [Extension],
}

impl Policy<'_> {
    fn extension(&self, name: &str) -> Option<&Extension> {
        self.extensions.iter().find(|e| e.name == name)
    }

    /// A schema migsnap creates before the restore, for an extension's
    /// objects (see `extension::pre_created_schemas`).
    fn pre_created_schema(&self, name: &str) -> bool {
        crate::pg::extension::pre_created_schemas(self.extensions)
            .iter()
            .any(|s| s == name)
    }
}

/// What a skipped statement stands for (`Verdict::Skip`): pg_dump writes
/// one of each, so a second is refused (`split::check`).
pub fn skip_key(node: &NodeEnum) -> String {
    match node {
        NodeEnum::CreateExtensionStmt(s) => format!("extension {}", s.extname),
        NodeEnum::CreateSchemaStmt(s) => format!("schema {}", s.schemaname),
        NodeEnum::CommentStmt(s) => match s.object.as_deref().and_then(|o| o.node.as_ref()) {
            Some(NodeEnum::String(name)) => format!("comment {}", name.sval),
            _ => "comment".into(),
        },
        _ => String::new(),
    }
}

/// Procedural languages a dumped function may use: SQL, PL/pgSQL and the
/// trusted languages. C and `internal` functions come only with `CREATE
/// EXTENSION` (pg_dump never writes them for extension members), and the
/// untrusted languages (`plpython3u`, `plperlu`, …) run code as the server's
/// OS user.
const LANGUAGES: &[&str] = &["sql", "plpgsql", "plperl", "pltcl", "plv8"];

/// Session settings pg_dump 13-18 writes (`_doSetFixedOutputState` and the
/// tablespace / access-method selection in pg_backup_archiver.c).
const SETTINGS: &[&str] = &[
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "transaction_timeout",
    "client_encoding",
    "standard_conforming_strings",
    "check_function_bodies",
    "xmloption",
    "client_min_messages",
    "row_security",
    "default_tablespace",
    "default_table_access_method",
];

/// Server-side functions a dump may call at top level, each with literal
/// arguments only: sequence values, large objects, and (pg_dump 18)
/// optimizer statistics. `set_config` is checked on its own.
const FUNCTIONS: &[&str] = &[
    "setval",
    "lo_create",
    "lo_open",
    "lowrite",
    "lo_close",
    "pg_restore_relation_stats",
    "pg_restore_attribute_stats",
];

const NOT_PG_DUMP: Why = "not a statement pg_dump writes for one database";

/// Check one statement's parse tree.
pub fn statement(node: &NodeEnum, policy: &Policy) -> Result<Verdict, Why> {
    use NodeEnum as N;
    let run = Ok(Verdict::Run);
    match node {
        N::VariableSetStmt(s) => set(s).and(run),
        N::SelectStmt(s) => select(s).and(run),
        N::CreateStmt(s) => {
            relation(s.relation.as_ref())?;
            if !s.tablespacename.is_empty() {
                return Err("a TABLESPACE clause (pg_dump sets default_tablespace instead)");
            }
            run
        }
        N::CreateTableAsStmt(s) => {
            // pg_dump writes materialized views WITH NO DATA (REFRESH fills
            // them later); CREATE TABLE … AS runs a query.
            let into = s.into.as_deref().ok_or(NOT_PG_DUMP)?;
            if s.objtype() != ObjectType::ObjectMatview || !into.skip_data || s.is_select_into {
                return Err("CREATE TABLE … AS (runs a query)");
            }
            relation(into.rel.as_ref())?;
            if !into.table_space_name.is_empty() {
                return Err("a TABLESPACE clause (pg_dump sets default_tablespace instead)");
            }
            run
        }
        N::RefreshMatViewStmt(s) => relation(s.relation.as_ref()).and(run),
        N::ViewStmt(s) => relation(s.view.as_ref()).and(run),
        N::IndexStmt(s) => {
            relation(s.relation.as_ref())?;
            if s.concurrent || !s.table_space.is_empty() {
                return Err("CREATE INDEX CONCURRENTLY or with a TABLESPACE");
            }
            run
        }
        N::CreateSeqStmt(s) => relation(s.sequence.as_ref()).and(run),
        N::AlterSeqStmt(s) => relation(s.sequence.as_ref()).and(run),
        N::AlterTableStmt(s) => {
            relation(s.relation.as_ref())?;
            match s.objtype() {
                ObjectType::ObjectTable
                | ObjectType::ObjectIndex
                | ObjectType::ObjectSequence
                | ObjectType::ObjectView
                | ObjectType::ObjectMatview
                | ObjectType::ObjectType => {}
                ObjectType::ObjectForeignTable => return Err(OUTSIDE),
                _ => return Err(NOT_PG_DUMP),
            }
            for cmd in &s.cmds {
                match &cmd.node {
                    Some(N::AlterTableCmd(c)) => alter_table_cmd(c)?,
                    _ => return Err(NOT_PG_DUMP),
                }
            }
            run
        }
        N::CreateFunctionStmt(s) => function(&s.options, policy).and(run),
        N::DefineStmt(s) => define(s).and(run),
        N::CompositeTypeStmt(s) => relation(s.typevar.as_ref()).and(run),
        N::CreateEnumStmt(_) | N::CreateRangeStmt(_) | N::CreateDomainStmt(_) => run,
        N::AlterDomainStmt(s) => {
            // `ALTER DOMAIN d ADD CONSTRAINT …` (a constraint that had to
            // wait for something defined later).
            if s.subtype == "C" {
                run
            } else {
                Err(NOT_PG_DUMP)
            }
        }
        N::CommentStmt(s) => comment(s.objtype(), s.object.as_deref(), policy),
        N::CreateExtensionStmt(s) => extension(s, policy),
        N::CreateSchemaStmt(s) => {
            if s.authrole.is_some() || !s.schema_elts.is_empty() {
                return Err("CREATE SCHEMA with AUTHORIZATION or elements");
            }
            if is_system_schema(&s.schemaname) {
                return Err("a schema named like PostgreSQL's own");
            }
            if policy.pre_created_schema(&s.schemaname) {
                Ok(Verdict::Skip)
            } else {
                run
            }
        }
        N::CreateTrigStmt(s) => relation(s.relation.as_ref()).and(run),
        N::RuleStmt(s) => relation(s.relation.as_ref()).and(run),
        N::CreatePolicyStmt(s) => relation(s.table.as_ref()).and(run),
        N::CreateStatsStmt(_)
        | N::CreatePublicationStmt(_)
        | N::AlterPublicationStmt(_)
        | N::CreateCastStmt(_)
        | N::CreateConversionStmt(_)
        | N::CreateOpClassStmt(_)
        | N::CreateOpFamilyStmt(_)
        | N::AlterOpFamilyStmt(_)
        | N::CreateTransformStmt(_)
        | N::CreateAmStmt(_)
        | N::AlterTsconfigurationStmt(_)
        | N::AlterObjectDependsStmt(_) => run,
        // pg_dump wraps large-object data in BEGIN; … COMMIT;.
        N::TransactionStmt(s) => match s.kind() {
            TransactionStmtKind::TransStmtBegin | TransactionStmtKind::TransStmtCommit
                if s.options.is_empty() && !s.chain =>
            {
                run
            }
            _ => Err("a transaction statement other than BEGIN / COMMIT"),
        },
        N::CopyStmt(_) => Err("COPY other than `COPY table (columns) FROM stdin`"),
        N::DoStmt(_) => Err("a DO block (runs code)"),
        N::CallStmt(_) => Err("a CALL (runs code)"),
        N::GrantStmt(_) | N::GrantRoleStmt(_) | N::AlterDefaultPrivilegesStmt(_) => {
            Err("a privilege statement (dumps are made with --no-privileges)")
        }
        N::CreateRoleStmt(_)
        | N::AlterRoleStmt(_)
        | N::AlterRoleSetStmt(_)
        | N::DropRoleStmt(_) => Err("a role statement"),
        N::CreatedbStmt(_)
        | N::AlterDatabaseStmt(_)
        | N::AlterDatabaseSetStmt(_)
        | N::AlterDatabaseRefreshCollStmt(_)
        | N::DropdbStmt(_) => Err("a database-level statement"),
        N::CreateTableSpaceStmt(_)
        | N::AlterTableSpaceOptionsStmt(_)
        | N::DropTableSpaceStmt(_) => Err("a tablespace statement"),
        N::AlterSystemStmt(_) => Err("ALTER SYSTEM"),
        N::CreateEventTrigStmt(_) | N::AlterEventTrigStmt(_) => Err("an event trigger"),
        N::CreatePlangStmt(_) => Err("a procedural language (those come with CREATE EXTENSION)"),
        N::CreateForeignTableStmt(_)
        | N::CreateForeignServerStmt(_)
        | N::AlterForeignServerStmt(_)
        | N::CreateFdwStmt(_)
        | N::AlterFdwStmt(_)
        | N::CreateUserMappingStmt(_)
        | N::AlterUserMappingStmt(_)
        | N::ImportForeignSchemaStmt(_)
        | N::CreateSubscriptionStmt(_)
        | N::AlterSubscriptionStmt(_) => Err(OUTSIDE),
        N::AlterOwnerStmt(_) | N::ReassignOwnedStmt(_) => {
            Err("an ownership change (dumps are made with --no-owner)")
        }
        N::AlterExtensionStmt(_) | N::AlterExtensionContentsStmt(_) => Err("ALTER EXTENSION"),
        N::DropStmt(_) | N::DropOwnedStmt(_) => Err("a DROP statement"),
        N::SecLabelStmt(_) => Err("a security label"),
        N::DiscardStmt(_) => Err("a session reset"),
        N::InsertStmt(_)
        | N::UpdateStmt(_)
        | N::DeleteStmt(_)
        | N::TruncateStmt(_)
        | N::MergeStmt(_) => Err("a data change other than `COPY … FROM stdin`"),
        N::LoadStmt(_)
        | N::CheckPointStmt(_)
        | N::VacuumStmt(_)
        | N::ClusterStmt(_)
        | N::ReindexStmt(_) => Err("a maintenance or server command"),
        _ => Err(NOT_PG_DUMP),
    }
}

const OUTSIDE: Why =
    "a foreign server, foreign table or subscription (reaches outside the database)";

/// The statement of a COPY block: `COPY name [(columns)] FROM stdin;` and
/// nothing else (no options, no query, no program, no file), into a table of
/// the dump's own, never into a system catalog (a row in
/// `pg_catalog.pg_authid` is a superuser for the whole server).
pub fn copy_from_stdin(node: &NodeEnum) -> Result<(), Why> {
    const WHY: Why = "COPY other than `COPY table (columns) FROM stdin`";
    let NodeEnum::CopyStmt(c) = node else {
        return Err(WHY);
    };
    let plain = c.is_from
        && !c.is_program
        && c.filename.is_empty()
        && c.query.is_none()
        && c.options.is_empty()
        && c.where_clause.is_none();
    if !plain {
        return Err(WHY);
    }
    let rel = c.relation.as_ref().ok_or(WHY)?;
    // An unqualified `pg_…` name resolves to pg_catalog first, whatever the
    // search_path says.
    let schema = if rel.schemaname.is_empty() {
        &rel.relname
    } else {
        &rel.schemaname
    };
    if is_system_schema(schema) || !rel.catalogname.is_empty() {
        return Err("COPY into a system catalog");
    }
    if c.attlist
        .iter()
        .all(|a| matches!(a.node, Some(NodeEnum::String(_))))
    {
        Ok(())
    } else {
        Err(WHY)
    }
}

/// Check a psql meta-command (without its backslash): only `\restrict KEY`
/// and `\unrestrict KEY`, which pg_dump >= 15.14 brackets its script with.
/// `\connect` appears only in `--create` dumps, and `\!` runs a shell.
pub fn meta_command(command: &str) -> Result<(), Why> {
    let mut words = command.split_ascii_whitespace();
    let name = words.next().unwrap_or("");
    let key_ok = words
        .next()
        .is_some_and(|k| k.bytes().all(|b| b.is_ascii_alphanumeric()));
    if matches!(name, "restrict" | "unrestrict") && key_ok && words.next().is_none() {
        Ok(())
    } else {
        Err("a psql meta-command other than \\restrict / \\unrestrict")
    }
}

/// `pg_catalog`, `information_schema`, `pg_toast` and any other `pg_*`
/// schema: PostgreSQL's own, which a dump of one database never writes to.
fn is_system_schema(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "information_schema" || name.starts_with("pg_")
}

/// A relation a statement creates or changes: one of the dump's own (not
/// in a system schema, not temporary, not in another database).
fn relation(rel: Option<&RangeVar>) -> Result<(), Why> {
    let Some(rel) = rel else {
        return Ok(());
    };
    if !rel.catalogname.is_empty() {
        return Err("a name qualified by a database");
    }
    if is_system_schema(&rel.schemaname) {
        return Err("an object in a system schema");
    }
    if rel.relpersistence == "t" {
        return Err("a temporary object");
    }
    Ok(())
}

/// `SET name = value` for a setting pg_dump writes, with plain values.
fn set(s: &pg_query::protobuf::VariableSetStmt) -> Result<(), Why> {
    if s.is_local {
        return Err("a transaction-local SET");
    }
    let name = s.name.as_str();
    match (s.kind(), name) {
        (_, "role" | "session_authorization") => {
            return Err("SET ROLE / SET SESSION AUTHORIZATION")
        }
        (VariableSetKind::VarSetValue, n) if SETTINGS.contains(&n) => {}
        (VariableSetKind::VarSetValue, _) => return Err("a SET of a setting pg_dump never writes"),
        (VariableSetKind::VarReset | VariableSetKind::VarResetAll, _) => {
            return Err("a session reset")
        }
        _ => return Err("a SET whose value is not a plain value"),
    }
    let mut values = Vec::with_capacity(s.args.len());
    for arg in &s.args {
        match &arg.node {
            Some(NodeEnum::AConst(c)) => values.push(const_text(c)),
            _ => return Err("a SET whose value is not a plain value"),
        }
    }
    // The reader parses strings with standard_conforming_strings on, and
    // every byte of a statement as UTF-8; a session that lexed the text
    // differently could see statements this check never saw.
    let one = match values.as_slice() {
        [v] => v.to_ascii_lowercase(),
        _ if name == "client_encoding" || name == "standard_conforming_strings" => {
            return Err("a SET whose value is not a plain value")
        }
        _ => String::new(),
    };
    match name {
        "standard_conforming_strings" if one != "on" => {
            Err("standard_conforming_strings other than `on`")
        }
        "client_encoding" if !ascii_safe_encoding(&one) => {
            Err("a client encoding whose multibyte characters can hide quotes")
        }
        _ => Ok(()),
    }
}

/// The text of a constant as a SET value: strings and names as they are,
/// numbers in their written form.
fn const_text(c: &pg_query::protobuf::AConst) -> String {
    match &c.val {
        Some(a_const::Val::Sval(s)) => s.sval.clone(),
        Some(a_const::Val::Ival(i)) => i.ival.to_string(),
        Some(a_const::Val::Fval(f)) => f.fval.clone(),
        Some(a_const::Val::Boolval(b)) => b.boolval.to_string(),
        Some(a_const::Val::Bsval(b)) => b.bsval.clone(),
        None => String::new(),
    }
}

/// The client encodings a dump may set: PostgreSQL's server encodings, by
/// the names (and aliases) its `clean_encoding_name` leaves (lower case,
/// letters and digits only), matched whole. In each, every byte below 0x80
/// is the ASCII character. The client-only encodings (SJIS, BIG5, GBK, UHC,
/// GB18030, JOHAB) put `\` inside multibyte characters, and some of their
/// aliases look like server encodings (`WIN932` is SJIS, `WIN936` GBK,
/// `WIN949` UHC, `WIN950` BIG5): no prefix may stand for a list.
const SERVER_ENCODINGS: &[&str] = &[
    "utf8",
    "unicode",
    "sqlascii",
    "latin1",
    "latin2",
    "latin3",
    "latin4",
    "latin5",
    "latin6",
    "latin7",
    "latin8",
    "latin9",
    "latin10",
    "iso88591",
    "iso88592",
    "iso88593",
    "iso88594",
    "iso88595",
    "iso88596",
    "iso88597",
    "iso88598",
    "iso88599",
    "iso885910",
    "iso885913",
    "iso885914",
    "iso885915",
    "iso885916",
    "win866",
    "win874",
    "win1250",
    "win1251",
    "win1252",
    "win1253",
    "win1254",
    "win1255",
    "win1256",
    "win1257",
    "win1258",
    "windows866",
    "windows874",
    "windows1250",
    "windows1251",
    "windows1252",
    "windows1253",
    "windows1254",
    "windows1255",
    "windows1256",
    "windows1257",
    "windows1258",
    "koi8r",
    "koi8u",
    "koi8",
    "eucjp",
    "euccn",
    "euckr",
    "euctw",
    "eucjis2004",
    "muleinternal",
];

fn ascii_safe_encoding(name: &str) -> bool {
    let n: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase();
    SERVER_ENCODINGS.contains(&n.as_str())
}

/// The strings of a qualified name (`[schema, name]`).
fn names(nodes: &[Node]) -> Option<Vec<&str>> {
    nodes
        .iter()
        .map(|n| match &n.node {
            Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
            _ => None,
        })
        .collect()
}

/// A literal argument: a constant, maybe cast to a plain type
/// (`'180000'::integer`, `'{a}'::text[]`).
fn literal(node: &Node) -> bool {
    match &node.node {
        Some(NodeEnum::AConst(_)) => true,
        Some(NodeEnum::TypeCast(c)) => {
            c.arg
                .as_deref()
                .is_some_and(|a| matches!(a.node, Some(NodeEnum::AConst(_))))
                && c.type_name
                    .as_ref()
                    .is_some_and(|t| t.typmods.is_empty() && names(&t.names).is_some() && !t.setof)
        }
        _ => false,
    }
}

/// `SELECT pg_catalog.f(literal, …);` or `SELECT * FROM pg_catalog.f(…);`
/// for the functions pg_dump calls, and nothing else in the query.
fn select(s: &pg_query::protobuf::SelectStmt) -> Result<(), Why> {
    const WHY: Why = "a SELECT other than the setval / set_config / large-object / statistics calls pg_dump writes";
    let bare = s.distinct_clause.is_empty()
        && s.into_clause.is_none()
        && s.where_clause.is_none()
        && s.group_clause.is_empty()
        && s.having_clause.is_none()
        && s.window_clause.is_empty()
        && s.values_lists.is_empty()
        && s.sort_clause.is_empty()
        && s.limit_offset.is_none()
        && s.limit_count.is_none()
        && s.locking_clause.is_empty()
        && s.with_clause.is_none()
        && s.larg.is_none()
        && s.rarg.is_none();
    if !bare {
        return Err(WHY);
    }
    let target = match s.target_list.as_slice() {
        [t] => match &t.node {
            Some(NodeEnum::ResTarget(r)) if r.name.is_empty() && r.indirection.is_empty() => {
                r.val.as_deref().and_then(|v| v.node.as_ref())
            }
            _ => None,
        },
        _ => None,
    };
    let call: &FuncCall = match (target, s.from_clause.as_slice()) {
        (Some(NodeEnum::FuncCall(f)), []) => f,
        // SELECT * FROM pg_catalog.f(…) (pg_dump 18's statistics).
        (Some(NodeEnum::ColumnRef(c)), [from]) if is_star(c) => {
            let Some(NodeEnum::RangeFunction(rf)) = &from.node else {
                return Err(WHY);
            };
            if rf.lateral || rf.ordinality || rf.is_rowsfrom || !rf.coldeflist.is_empty() {
                return Err(WHY);
            }
            let [pair] = rf.functions.as_slice() else {
                return Err(WHY);
            };
            let Some(NodeEnum::List(list)) = &pair.node else {
                return Err(WHY);
            };
            match list.items.first().and_then(|i| i.node.as_ref()) {
                Some(NodeEnum::FuncCall(f)) => f,
                _ => return Err(WHY),
            }
        }
        _ => return Err(WHY),
    };
    let plain_call = call.agg_order.is_empty()
        && call.agg_filter.is_none()
        && call.over.is_none()
        && !call.agg_star
        && !call.agg_distinct
        && !call.func_variadic;
    if !plain_call || !call.args.iter().all(literal) {
        return Err(WHY);
    }
    let function = match names(&call.funcname).as_deref() {
        Some(["pg_catalog", f]) => *f,
        _ => return Err(WHY),
    };
    if function == "set_config" {
        // Only `set_config('search_path', '', false)`: pg_dump qualifies
        // every name and empties the search path.
        let arg = |i: usize| match call.args.get(i).and_then(|a| a.node.as_ref()) {
            Some(NodeEnum::AConst(c)) => Some(const_text(c)),
            _ => None,
        };
        let search_path = call.args.len() == 3
            && arg(0).as_deref() == Some("search_path")
            && arg(1).as_deref() == Some("")
            && arg(2).as_deref() == Some("false");
        return if search_path {
            Ok(())
        } else {
            Err("a set_config call other than emptying search_path")
        };
    }
    if FUNCTIONS.contains(&function) {
        Ok(())
    } else {
        Err(WHY)
    }
}

fn is_star(c: &pg_query::protobuf::ColumnRef) -> bool {
    matches!(c.fields.as_slice(), [f] if matches!(f.node, Some(NodeEnum::AStar(_))))
}

/// One subcommand of `ALTER TABLE` / `ALTER INDEX` / …: the ones pg_dump
/// writes (constraints, defaults, identity, partitions, clustering, row
/// security, storage and statistics settings, trigger and rule states).
fn alter_table_cmd(c: &AlterTableCmd) -> Result<(), Why> {
    use AlterTableType as T;
    match c.subtype() {
        T::AtChangeOwner => Err("an ownership change (dumps are made with --no-owner)"),
        T::AtSetTableSpace => Err("a tablespace statement"),
        T::AtGenericOptions | T::AtAlterColumnGenericOptions => Err(OUTSIDE),
        T::AtAddConstraint => match &c.def.as_deref().and_then(|d| d.node.as_ref()) {
            Some(NodeEnum::Constraint(k)) if k.contype() != ConstrType::Undefined => Ok(()),
            _ => Err(NOT_PG_DUMP),
        },
        T::AtAddColumn
        | T::AtColumnDefault
        | T::AtSetNotNull
        | T::AtDropNotNull
        | T::AtSetExpression
        | T::AtSetStatistics
        | T::AtSetOptions
        | T::AtSetStorage
        | T::AtSetCompression
        | T::AtAddIndex
        | T::AtAddIndexConstraint
        | T::AtValidateConstraint
        | T::AtClusterOn
        | T::AtSetLogged
        | T::AtSetUnLogged
        | T::AtSetAccessMethod
        | T::AtSetRelOptions
        | T::AtReplicaIdentity
        | T::AtEnableRowSecurity
        | T::AtForceRowSecurity
        | T::AtEnableTrig
        | T::AtEnableAlwaysTrig
        | T::AtEnableReplicaTrig
        | T::AtDisableTrig
        | T::AtEnableRule
        | T::AtEnableAlwaysRule
        | T::AtEnableReplicaRule
        | T::AtDisableRule
        | T::AtAddInherit
        | T::AtAddOf
        | T::AtAttachPartition
        | T::AtAddIdentity
        | T::AtSetIdentity => Ok(()),
        _ => Err(NOT_PG_DUMP),
    }
}

/// A function or procedure: its language must be an allowed one, and an
/// unauthenticated dump may not make it `SECURITY DEFINER`. Its body is
/// not looked into: the restore only stores it.
fn function(options: &[Node], policy: &Policy) -> Result<(), Why> {
    let mut language = None;
    for option in options {
        let Some(NodeEnum::DefElem(d)) = &option.node else {
            return Err(NOT_PG_DUMP);
        };
        let arg = d.arg.as_deref().and_then(|a| a.node.as_ref());
        match d.defname.as_str() {
            "language" => match arg {
                Some(NodeEnum::String(s)) => language = Some(s.sval.to_ascii_lowercase()),
                _ => return Err("a function whose LANGUAGE is not a name"),
            },
            "security" => {
                let definer = matches!(arg, Some(NodeEnum::Boolean(b)) if b.boolval);
                if definer && !policy.authenticated {
                    return Err(
                        "a SECURITY DEFINER function in an unsigned dump (it would run as the superuser)",
                    );
                }
            }
            _ => {}
        }
    }
    match language.as_deref() {
        Some(l) if LANGUAGES.contains(&l) => Ok(()),
        Some("c" | "internal") => Err("a function in LANGUAGE c or internal"),
        // A SQL-standard body (BEGIN ATOMIC / RETURN) may leave LANGUAGE
        // out: it is SQL.
        None => Ok(()),
        Some(_) => Err("a function in an untrusted or unknown language"),
    }
}

/// `CREATE AGGREGATE / OPERATOR / TYPE / COLLATION / TEXT SEARCH
/// CONFIGURATION / DICTIONARY`; text search parsers and templates take C
/// functions and a superuser.
fn define(s: &DefineStmt) -> Result<(), Why> {
    match s.kind() {
        ObjectType::ObjectAggregate
        | ObjectType::ObjectOperator
        | ObjectType::ObjectType
        | ObjectType::ObjectCollation
        | ObjectType::ObjectTsconfiguration
        | ObjectType::ObjectTsdictionary => Ok(()),
        _ => Err(NOT_PG_DUMP),
    }
}

/// `COMMENT ON <object> … IS …`, not on anything outside the database. A
/// comment on an extension is skipped: its own script set it when migsnap
/// created it, as a plain migrate's `CREATE EXTENSION` does.
fn comment(kind: ObjectType, object: Option<&Node>, policy: &Policy) -> Result<Verdict, Why> {
    use ObjectType as O;
    match kind {
        O::ObjectRole
        | O::ObjectDatabase
        | O::ObjectTablespace
        | O::ObjectSubscription
        | O::ObjectForeignServer
        | O::ObjectFdw
        | O::ObjectEventTrigger
        | O::ObjectLanguage => Err("a comment on something outside the database"),
        O::ObjectExtension => match object.and_then(|o| o.node.as_ref()) {
            Some(NodeEnum::String(s)) if policy.extension(&s.sval).is_some() => Ok(Verdict::Skip),
            _ => Err("a comment on an extension the snapshot does not record"),
        },
        _ => Ok(Verdict::Run),
    }
}

/// `CREATE EXTENSION [IF NOT EXISTS] name [WITH SCHEMA s]`: never run, only
/// checked against the manifest's record, whose extensions migsnap creates
/// itself before the restore with fixed text.
fn extension(s: &pg_query::protobuf::CreateExtensionStmt, policy: &Policy) -> Result<Verdict, Why> {
    let Some(recorded) = policy.extension(&s.extname) else {
        return Err("CREATE EXTENSION of an extension the snapshot's manifest does not record");
    };
    for option in &s.options {
        let Some(NodeEnum::DefElem(d)) = &option.node else {
            return Err(NOT_PG_DUMP);
        };
        let arg = d.arg.as_deref().and_then(|a| a.node.as_ref());
        match (d.defname.as_str(), arg) {
            ("schema", Some(NodeEnum::String(schema))) if schema.sval == recorded.schema => {}
            ("schema", _) => {
                return Err("CREATE EXTENSION into another schema than the manifest records")
            }
            ("new_version", Some(NodeEnum::String(_))) => {}
            _ => return Err("CREATE EXTENSION with options pg_dump never writes"),
        }
    }
    Ok(Verdict::Skip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(name: &str, schema: &str) -> Extension {
        Extension::new(name, schema, "1.0")
    }

    fn check_as(sql: &str, authenticated: bool) -> Result<Verdict, Why> {
        let extensions = [ext("pg_trgm", "public"), ext("hstore", "extensions")];
        let policy = Policy {
            authenticated,
            extensions: &extensions,
        };
        let parsed = pg_query::parse(sql, 0).map_err(|_| "does not parse")?;
        let [stmt] = parsed.protobuf.stmts.as_slice() else {
            return Err("not one statement");
        };
        let node = stmt
            .stmt
            .as_ref()
            .and_then(|n| n.node.as_ref())
            .ok_or("empty")?;
        if let NodeEnum::CopyStmt(_) = node {
            return copy_from_stdin(node).map(|()| Verdict::Run);
        }
        statement(node, &policy)
    }

    fn check(sql: &str) -> Result<Verdict, Why> {
        check_as(sql, true)
    }

    #[track_caller]
    fn allowed(sql: &str) {
        assert_eq!(check(sql), Ok(Verdict::Run), "should be allowed: {sql}");
    }

    #[track_caller]
    fn refused(sql: &str) {
        assert!(check(sql).is_err(), "should be refused: {sql}");
    }

    #[test]
    fn pg_dump_output_is_allowed() {
        for sql in [
            "SET statement_timeout = 0;",
            "SET lock_timeout = 0;",
            "SET idle_in_transaction_session_timeout = 0;",
            "SET transaction_timeout = 0;",
            "SET client_encoding = 'UTF8';",
            "SET client_encoding = 'LATIN1';",
            "SET standard_conforming_strings = on;",
            "SELECT pg_catalog.set_config('search_path', '', false);",
            "SET check_function_bodies = false;",
            "SET xmloption = content;",
            "SET client_min_messages = warning;",
            "SET row_security = off;",
            "SET default_tablespace = '';",
            "SET default_table_access_method = \"heap\";",
            "SET default_table_access_method = heap;",
            "CREATE SCHEMA \"audit\";",
            "COMMENT ON SCHEMA \"public\" IS 'standard public schema';",
            "CREATE TYPE \"public\".\"mood\" AS ENUM (\n    'sad',\n    'ok'\n);",
            "CREATE TYPE \"public\".\"pair\" AS (\n\t\"a\" integer,\n\t\"b\" \"text\"\n);",
            "CREATE DOMAIN \"public\".\"posint\" AS integer\n\tCONSTRAINT \"posint_check\" CHECK ((VALUE > 0));",
            "CREATE FUNCTION \"public\".\"slugify\"(\"value\" \"text\") RETURNS \"text\"\n    LANGUAGE \"sql\" IMMUTABLE STRICT\n    AS $_$\n  SELECT regexp_replace(lower($1), '[^a-z0-9]+', '-', 'g');\n$_$;",
            "CREATE FUNCTION \"public\".\"touch\"() RETURNS \"trigger\"\n    LANGUAGE \"plpgsql\"\n    AS $$BEGIN NEW.updated := now(); RETURN NEW; END$$;",
            "CREATE FUNCTION \"public\".\"f\"() RETURNS integer\n    LANGUAGE \"sql\"\n    BEGIN ATOMIC\n SELECT 1 AS \"case\";\nEND;",
            "CREATE PROCEDURE \"public\".\"p\"()\n    LANGUAGE \"plpgsql\"\n    AS $$ BEGIN NULL; END $$;",
            "CREATE AGGREGATE \"public\".\"agg\"(integer) (\n    SFUNC = \"int4pl\",\n    STYPE = integer\n);",
            "CREATE TABLE \"public\".\"blog_post\" (\n    \"id\" bigint NOT NULL,\n    \"title\" character varying(200) NOT NULL\n);",
            "CREATE UNLOGGED TABLE \"public\".\"u\" (\n    \"x\" integer\n);",
            "CREATE TABLE \"public\".\"p1\" PARTITION OF \"public\".\"p\"\nFOR VALUES FROM (1) TO (10);",
            "ALTER TABLE \"public\".\"blog_post\" ALTER COLUMN \"id\" ADD GENERATED BY DEFAULT AS IDENTITY (\n    SEQUENCE NAME \"public\".\"blog_post_id_seq\"\n    START WITH 1\n    INCREMENT BY 1\n    NO MINVALUE\n    NO MAXVALUE\n    CACHE 1\n);",
            "CREATE SEQUENCE \"public\".\"s\"\n    AS integer\n    START WITH 1\n    INCREMENT BY 1\n    NO MINVALUE\n    NO MAXVALUE\n    CACHE 1;",
            "ALTER SEQUENCE \"public\".\"s\" OWNED BY \"public\".\"t\".\"id\";",
            "ALTER TABLE ONLY \"public\".\"t\" ALTER COLUMN \"id\" SET DEFAULT \"nextval\"('\"public\".\"s\"'::\"regclass\");",
            "CREATE VIEW \"public\".\"v\" AS\n SELECT 1 AS \"x\";",
            "CREATE OR REPLACE VIEW \"public\".\"v\" AS\n SELECT 1 AS \"x\";",
            "CREATE MATERIALIZED VIEW \"public\".\"mv\" AS\n SELECT 1 AS \"x\"\n  WITH NO DATA;",
            "REFRESH MATERIALIZED VIEW \"public\".\"mv\";",
            "CREATE INDEX \"t_name_trgm\" ON \"public\".\"t\" USING \"gin\" (\"name\" \"public\".\"gin_trgm_ops\");",
            "CREATE UNIQUE INDEX \"u\" ON \"public\".\"t\" USING \"btree\" (\"x\");",
            "ALTER TABLE ONLY \"public\".\"t\"\n    ADD CONSTRAINT \"t_pkey\" PRIMARY KEY (\"id\");",
            "ALTER TABLE ONLY \"public\".\"t\"\n    ADD CONSTRAINT \"t_fk\" FOREIGN KEY (\"o\") REFERENCES \"public\".\"o\"(\"id\") DEFERRABLE INITIALLY DEFERRED;",
            "ALTER TABLE ONLY \"public\".\"p\" ATTACH PARTITION \"public\".\"p1\" FOR VALUES FROM (1) TO (10);",
            "ALTER INDEX \"public\".\"p_idx\" ATTACH PARTITION \"public\".\"p1_idx\";",
            "ALTER TABLE \"public\".\"t\" ENABLE ROW LEVEL SECURITY;",
            "ALTER TABLE \"public\".\"t\" CLUSTER ON \"t_pkey\";",
            "ALTER TABLE \"public\".\"t\" DISABLE TRIGGER \"x\";",
            "ALTER TABLE ONLY \"public\".\"t\" REPLICA IDENTITY FULL;",
            "CREATE POLICY \"p\" ON \"public\".\"t\" USING ((\"owner\" = CURRENT_USER));",
            "CREATE TRIGGER \"t_touch\" BEFORE UPDATE ON \"public\".\"t\" FOR EACH ROW EXECUTE FUNCTION \"public\".\"touch\"();",
            "CREATE CONSTRAINT TRIGGER \"c\" AFTER INSERT ON \"public\".\"t\" DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION \"public\".\"touch\"();",
            "CREATE RULE \"r\" AS\n    ON DELETE TO \"public\".\"t\" DO INSTEAD NOTHING;",
            "CREATE COLLATION \"public\".\"ci\" (provider = icu, deterministic = false, locale = 'und-u-ks-level2');",
            "CREATE TEXT SEARCH CONFIGURATION \"public\".\"fr\" (\n    PARSER = \"pg_catalog\".\"default\" );",
            "ALTER TEXT SEARCH CONFIGURATION \"public\".\"fr\"\n    ADD MAPPING FOR \"asciiword\" WITH \"french_stem\";",
            "CREATE OPERATOR \"public\".=== (\n    FUNCTION = \"public\".\"f\",\n    LEFTARG = integer,\n    RIGHTARG = integer\n);",
            "CREATE CAST (integer AS \"public\".\"mood\") WITH INOUT;",
            "CREATE STATISTICS \"public\".\"st\" ON \"a\", \"b\" FROM \"public\".\"t\";",
            "COMMENT ON TABLE \"public\".\"t\" IS 'it''s; a table';",
            "COMMENT ON COLUMN \"public\".\"t\".\"x\" IS 'x';",
            "SELECT pg_catalog.setval('\"public\".\"blog_post_id_seq\"', 3, true);",
            "SELECT pg_catalog.setval('\"public\".\"neg_seq\"', -5, false);",
            "SELECT pg_catalog.lo_create('16390');",
            "SELECT pg_catalog.lo_open('16390', 131072);",
            "SELECT pg_catalog.lowrite(0, '\\x68656c6c6f');",
            "SELECT pg_catalog.lo_close(0);",
            "BEGIN;",
            "COMMIT;",
            "SELECT * FROM pg_catalog.pg_restore_relation_stats(\n\t'version', '180000'::integer,\n\t'schemaname', 'public',\n\t'relname', 't',\n\t'relpages', '0'::integer,\n\t'reltuples', '-1'::real,\n\t'relallvisible', '0'::integer\n);",
            "SELECT * FROM pg_catalog.pg_restore_attribute_stats(\n\t'version', '180000'::integer,\n\t'schemaname', 'public',\n\t'relname', 't',\n\t'attname', 'x',\n\t'inherited', 'f'::boolean,\n\t'null_frac', '0'::real,\n\t'most_common_vals', '{a,b}'::text,\n\t'most_common_freqs', '{0.5,0.5}'::real[]\n);",
            "COPY \"public\".\"t\" (\"id\", \"name\") FROM stdin;",
            "COPY \"public\".\"pg_x\" FROM stdin;",
            "copy t from STDIN ;",
        ] {
            allowed(sql);
        }
    }

    #[test]
    fn extensions_are_checked_against_the_manifest_and_never_run() {
        let skip = Ok(Verdict::Skip);
        assert_eq!(
            check("CREATE EXTENSION IF NOT EXISTS \"pg_trgm\" WITH SCHEMA \"public\";"),
            skip
        );
        assert_eq!(
            check("COMMENT ON EXTENSION \"pg_trgm\" IS 'text similarity';"),
            skip
        );
        assert_eq!(
            check("CREATE EXTENSION IF NOT EXISTS \"hstore\" WITH SCHEMA \"extensions\";"),
            skip
        );
        // Its schema exists already: migsnap made it for the extension.
        assert_eq!(check("CREATE SCHEMA \"extensions\";"), skip);
        refused("CREATE EXTENSION IF NOT EXISTS \"dblink\" WITH SCHEMA \"public\";");
        refused("CREATE EXTENSION \"file_fdw\";");
        refused("CREATE EXTENSION IF NOT EXISTS \"pg_trgm\" WITH SCHEMA \"evil\";");
        refused("CREATE EXTENSION \"pg_trgm\" CASCADE;");
        refused("COMMENT ON EXTENSION \"dblink\" IS 'x';");
    }

    #[test]
    fn security_definer_needs_a_signed_dump() {
        let sql = "CREATE FUNCTION \"public\".\"f\"() RETURNS integer\n    LANGUAGE \"sql\" SECURITY DEFINER\n    AS $$ SELECT 1 $$;";
        assert_eq!(check_as(sql, true), Ok(Verdict::Run));
        assert!(check_as(sql, false).is_err());
        let invoker =
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql SECURITY INVOKER AS 'select 1';";
        assert_eq!(check_as(invoker, false), Ok(Verdict::Run));
    }

    #[test]
    fn what_a_planted_dump_would_try_is_refused() {
        for sql in [
            "COPY (SELECT 1) TO PROGRAM 'touch /tmp/x';",
            "copy \"public\".\"t\" to program 'id';",
            "COPY \"public\".\"t\" FROM '/etc/passwd';",
            "COPY \"public\".\"t\" FROM PROGRAM 'id';",
            "COPY \"public\".\"t\" TO '/tmp/out';",
            "COPY (SELECT evil()) TO stdout;",
            "COPY t (a) FROM stdin WITH (FORMAT binary);",
            "COPY t FROM stdin WHERE evil();",
            // System catalogs: a row in pg_authid is a superuser.
            "COPY \"pg_catalog\".\"pg_authid\" (\"oid\", \"rolname\") FROM stdin;",
            "COPY pg_catalog.pg_authid FROM stdin;",
            "COPY \"pg_authid\" FROM stdin;",
            "COPY \"PG_CATALOG\".x FROM stdin;",
            "COPY information_schema.sql_features FROM stdin;",
            "COPY pg_toast.t FROM stdin;",
            "CREATE ROLE \"planted\" SUPERUSER LOGIN;",
            "CREATE USER planted;",
            "ALTER ROLE postgres PASSWORD 'x';",
            "CREATE USER MAPPING FOR postgres SERVER s;",
            "ALTER SYSTEM SET archive_command = 'id';",
            "DROP DATABASE \"victim\" WITH (FORCE);",
            "CREATE DATABASE x;",
            "ALTER DATABASE x SET search_path = evil;",
            "CREATE TABLESPACE t LOCATION '/tmp';",
            "DO $$ BEGIN PERFORM 1; END $$;",
            "CREATE FUNCTION \"public\".\"f\"() RETURNS integer\n    LANGUAGE \"c\"\n    AS '/lib/x.so', 'f';",
            "CREATE FUNCTION f() RETURNS int LANGUAGE internal AS 'int4pl';",
            "CREATE FUNCTION f() RETURNS int AS 'x.so', 'f' LANGUAGE 'C';",
            "CREATE FUNCTION f() RETURNS int LANGUAGE plpython3u AS $$ import os $$;",
            "SET ROLE postgres;",
            "SET SESSION AUTHORIZATION postgres;",
            "set role 'postgres';",
            "SET LOCAL statement_timeout = 0;",
            "SET session_replication_role = replica;",
            "SET standard_conforming_strings = off;",
            "SET client_encoding = 'SJIS';",
            "SET client_encoding = 'GBK';",
            "SET client_encoding = 'WIN932';",
            "SET client_encoding = 'win950';",
            "SET client_encoding = 'SHIFT_JIS_2004';",
            "SET search_path = evil;",
            "RESET ALL;",
            "RESET search_path;",
            "LOAD 'plpgsql';",
            "CHECKPOINT;",
            "VACUUM;",
            "GRANT ALL ON SCHEMA public TO PUBLIC;",
            "REVOKE ALL ON SCHEMA public FROM PUBLIC;",
            "SECURITY LABEL ON TABLE t IS 'x';",
            "CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION f();",
            "ALTER TABLE \"public\".\"t\" OWNER TO \"postgres\";",
            "ALTER FUNCTION \"public\".\"f\"() OWNER TO postgres;",
            "ALTER FUNCTION \"public\".\"f\"() SECURITY DEFINER;",
            "ALTER SCHEMA \"public\" OWNER TO x;",
            "ALTER DEFAULT PRIVILEGES GRANT ALL ON TABLES TO PUBLIC;",
            "ALTER LARGE OBJECT 1 OWNER TO x;",
            "SELECT pg_catalog.set_config('standard_conforming_strings', 'off', false);",
            "SELECT pg_catalog.set_config('search_path', 'evil', false);",
            "SELECT pg_catalog.set_config('search_path', '', true);",
            "SELECT pg_read_file('/etc/passwd');",
            "SELECT pg_catalog.pg_read_file('/etc/passwd');",
            "SELECT pg_catalog.lo_import('/etc/passwd');",
            "SELECT pg_catalog.setval(evil(), 1, true);",
            "SELECT pg_catalog.setval('s', (SELECT 1), true);",
            "SELECT pg_catalog.setval('s', 1, true) FROM evil;",
            "SELECT pg_catalog.setval('s', 1, true) INTO t;",
            "SELECT * FROM pg_catalog.pg_read_file('/etc/passwd');",
            "SELECT * FROM pg_catalog.setval('s', 1, true), evil();",
            "SELECT 1;",
            "INSERT INTO t VALUES (1);",
            "CREATE TABLE t AS SELECT evil();",
            "CREATE MATERIALIZED VIEW mv AS SELECT evil();",
            "SELECT evil() INTO t;",
            "CREATE TEMP TABLE t (x int);",
            "CREATE TABLE pg_catalog.t (x int);",
            "CREATE TABLE t (x int) TABLESPACE evil;",
            "CREATE LANGUAGE plperlu;",
            "CREATE TRUSTED PROCEDURAL LANGUAGE x HANDLER h;",
            "CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw;",
            "CREATE FOREIGN DATA WRAPPER w;",
            "CREATE FOREIGN TABLE f (x int) SERVER s;",
            "CREATE SUBSCRIPTION s CONNECTION 'host=x' PUBLICATION p;",
            "ALTER EXTENSION x ADD FUNCTION f();",
            "COMMENT ON DATABASE postgres IS 'x';",
            "COMMENT ON ROLE postgres IS 'x';",
            "CREATE SCHEMA evil AUTHORIZATION postgres;",
            "CREATE SCHEMA pg_evil;",
            "NOTIFY x;",
            "CALL p();",
            "EXPLAIN ANALYZE SELECT evil();",
            "PREPARE p AS SELECT 1;",
            "BEGIN ISOLATION LEVEL SERIALIZABLE;",
            "ROLLBACK;",
            "CREATE INDEX CONCURRENTLY i ON t (x);",
        ] {
            refused(sql);
        }
    }

    #[test]
    fn case_comments_and_quotes_do_not_change_the_verdict() {
        allowed("set STATEMENT_TIMEOUT to 0;");
        allowed("/* c */ create /* c */ table -- c\n \"t\" (\"x\" int);");
        refused("create /* table */ role x;");
        refused("CrEaTe RoLe x;");
        refused("/* SET statement_timeout = 0; */ CREATE ROLE x;");
        refused("alter table t owner /* x */ to postgres;");
        allowed("COMMENT ON TABLE \"t\" IS 'ALTER SYSTEM; CREATE ROLE x; OWNER TO y';");
        allowed("ALTER TABLE \"owner\" ADD COLUMN \"to\" integer;");
        allowed("CREATE TABLE \"t\" (\"as\" integer, \"select\" integer);");
        allowed("ALTER TABLE \"t\" ADD CONSTRAINT \"c\" CHECK ((\"x\" <> 'OWNER TO'));");
    }

    #[test]
    fn function_bodies_are_not_looked_into() {
        // The restore only stores a body; it never runs it.
        allowed(
            "CREATE FUNCTION \"public\".\"f\"() RETURNS void\n    LANGUAGE \"plpgsql\"\n    AS $$BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''id'''; CREATE ROLE x; END$$;",
        );
        allowed("CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $fn$ $$ LANGUAGE c $$ $fn$;");
        allowed("CREATE FUNCTION f(\"language\" text) RETURNS text LANGUAGE sql AS 'select 1';");
        refused("CREATE FUNCTION f() RETURNS void AS $$ LANGUAGE plpgsql $$ LANGUAGE c;");
    }

    #[test]
    fn only_restrict_and_unrestrict_meta_commands() {
        assert_eq!(meta_command("restrict AbC123xyz"), Ok(()));
        assert_eq!(meta_command("unrestrict AbC123xyz"), Ok(()));
        for bad in [
            "connect postgres",
            "c postgres",
            "connect -reuse-previous=on \"dbname='x'\"",
            "! touch /tmp/x",
            "o /tmp/x",
            "copy t from '/etc/passwd'",
            "i /etc/passwd",
            "setenv X y",
            "restrict",
            "restrict a b",
            "restrict `id`",
        ] {
            assert!(meta_command(bad).is_err(), "{bad}");
        }
    }
}
