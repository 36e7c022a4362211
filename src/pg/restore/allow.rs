//! The allow-list a cached dump must pass, whole, before its first statement
//! runs: only the statement shapes that `pg_dump --format=plain --no-owner
//! --no-privileges --quote-all-identifiers` writes for one database's schema
//! and data (issue #10, "Trust").
//!
//! Why an allow-list: a dump is restored with the rights of the role migsnap
//! connects as, a superuser on the embedded server. A dump whose manifest
//! checksum was simply recomputed would otherwise run `COPY … TO PROGRAM`
//! (a shell command as the server's OS user), `CREATE ROLE … SUPERUSER`,
//! `ALTER SYSTEM` or `DROP DATABASE other`. A deny-list of those misses the
//! next trick; naming what pg_dump writes does not.
//!
//! What this cannot judge: the code inside function bodies, and the
//! expressions (CHECK constraints, index expressions, materialized views)
//! that the restore and later the tests evaluate. Those run with the
//! connecting role's rights whatever the statement around them looks like;
//! the cache dir's ownership and, for shared caches, signing
//! (`MIGSNAP_CACHE_SECRET`) are the defence there (README, "Security model").
//!
//! The statements come from `dump_reader`, which already split the dump;
//! here each one is tokenised just far enough to see its shape, with the
//! same lexical rules (comments, quotes, dollar quotes) as the splitter.

/// A refused statement: what it is, in a few words.
pub type Why = &'static str;

/// Procedural languages a dumped function may use: SQL, PL/pgSQL and the
/// trusted languages. C and `internal` functions come only with `CREATE
/// EXTENSION` (pg_dump never writes them for extension members), and the
/// untrusted languages (`plpython3u`, `plperlu`, …) run code as the server's
/// OS user.
const LANGUAGES: &[&str] = &["sql", "plpgsql", "plperl", "pltcl", "plv8"];

/// Session settings pg_dump 15-18 writes (`_doSetFixedOutputState` and the
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

/// Objects a dump may create or alter: the ones that live inside one
/// database. Roles, databases, tablespaces, languages, event triggers and
/// anything reaching outside (foreign servers, user mappings,
/// subscriptions) are missing on purpose.
const OBJECTS: &[&str] = &[
    "table",
    "index",
    "sequence",
    "view",
    "materialized",
    "function",
    "procedure",
    "aggregate",
    "type",
    "domain",
    "collation",
    "conversion",
    "text",
    "extension",
    "schema",
    "trigger",
    "rule",
    "policy",
    "operator",
    "cast",
    "statistics",
    "publication",
    "transform",
    "access",
];

/// Words that may stand between CREATE and the object kind.
const CREATE_MODIFIERS: &[&str] = &[
    "or",
    "replace",
    "unique",
    "unlogged",
    "constraint",
    "recursive",
    "default",
];

/// Check one SQL statement (as `dump_reader` hands it out, `;` included).
pub fn statement(text: &str) -> Result<(), Why> {
    let mut t = Tokens::new(text);
    let Some(first) = t.next() else {
        return Ok(());
    };
    match first.word().as_deref() {
        Some("set") => set(&mut t),
        Some("select") => select(&mut t),
        Some("create") => create(&mut t),
        Some("alter") => alter(&mut t),
        Some("comment") => comment(&mut t),
        Some("refresh") => {
            if t.next_word().as_deref() == Some("materialized")
                && t.next_word().as_deref() == Some("view")
            {
                Ok(())
            } else {
                Err(NOT_PG_DUMP)
            }
        }
        // pg_dump wraps large-object data in BEGIN; … COMMIT;.
        Some("begin" | "commit") if t.at_end() => Ok(()),
        Some("copy") => Err("COPY other than `FROM stdin` (to or from a program or a server file)"),
        Some("do") => Err("a DO block (runs code)"),
        Some("grant" | "revoke") => {
            Err("a privilege statement (dumps are made with --no-privileges)")
        }
        Some("drop") => Err("a DROP statement"),
        Some("security") => Err("a security label"),
        Some("reset" | "discard") => Err("a session reset"),
        Some("insert" | "update" | "delete" | "truncate" | "merge") => {
            Err("a data change other than `COPY … FROM stdin`")
        }
        Some("load" | "checkpoint" | "vacuum" | "analyze" | "cluster" | "reindex") => {
            Err("a maintenance or server command")
        }
        _ => Err(NOT_PG_DUMP),
    }
}

/// Check the statement of a COPY block: `COPY name [(columns)] FROM stdin;`
/// and nothing else (no options, no query, no program, no file).
pub fn copy_from_stdin(text: &str) -> Result<(), Why> {
    const WHY: Why = "COPY other than `COPY table (columns) FROM stdin`";
    let mut t = Tokens::new(text);
    if t.next_word().as_deref() != Some("copy") {
        return Err(WHY);
    }
    // Rows go into the dump's own tables, never into a system catalog: a
    // row in pg_catalog.pg_authid is a superuser for the whole server. An
    // unqualified `pg_…` name resolves to pg_catalog first, whatever the
    // search_path says.
    let first = match t.next() {
        Some(Tok::Word(name) | Tok::Ident(name)) => name,
        _ => return Err(WHY),
    };
    let save = t.i;
    let qualified = t.next() == Some(Tok::Op("."));
    t.i = save;
    if is_system_schema(first) {
        return Err("COPY into a system catalog");
    }
    if qualified && !(t.next() == Some(Tok::Op(".")) && t.qualified_name()) {
        return Err(WHY);
    }
    let mut next = t.next();
    if next == Some(Tok::Op("(")) {
        loop {
            match t.next() {
                Some(Tok::Ident(_) | Tok::Word(_)) => {}
                _ => return Err(WHY),
            }
            match t.next() {
                Some(Tok::Op(",")) => {}
                Some(Tok::Op(")")) => break,
                _ => return Err(WHY),
            }
        }
        next = t.next();
    }
    let from = next.and_then(|n| n.word());
    if from.as_deref() == Some("from") && t.next_word().as_deref() == Some("stdin") && t.at_end() {
        Ok(())
    } else {
        Err(WHY)
    }
}

/// `pg_catalog`, `information_schema`, `pg_toast` and any other `pg_*`
/// schema: PostgreSQL's own, which a dump of one database never writes to.
fn is_system_schema(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "information_schema" || name.starts_with("pg_")
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

const NOT_PG_DUMP: Why = "not a statement pg_dump writes for one database";

/// `SET name = value` for a setting pg_dump writes, with a plain value.
fn set(t: &mut Tokens) -> Result<(), Why> {
    let Some(name) = t.next_word() else {
        return Err("a SET of something other than a session setting");
    };
    match name.as_str() {
        "role" | "session" => return Err("SET ROLE / SET SESSION AUTHORIZATION"),
        "local" => return Err("a transaction-local SET"),
        n if SETTINGS.contains(&n) => {}
        _ => return Err("a SET of a setting pg_dump never writes"),
    }
    match t.next() {
        Some(Tok::Op("=")) => {}
        Some(Tok::Word(w)) if w.eq_ignore_ascii_case("to") => {}
        _ => return Err(NOT_PG_DUMP),
    }
    let mut values = Vec::new();
    while let Some(tok) = t.next() {
        match tok {
            Tok::Word(_) | Tok::Str(_) | Tok::Ident(_) | Tok::Num(_) | Tok::Op(",") => {
                values.push(tok)
            }
            Tok::Op(";") if t.at_end() => break,
            _ => return Err("a SET whose value is not a plain value"),
        }
    }
    let value = match values.as_slice() {
        [v] => v.text().to_ascii_lowercase(),
        _ if name == "client_encoding" || name == "standard_conforming_strings" => {
            return Err("a SET whose value is not a plain value")
        }
        _ => String::new(),
    };
    // The splitter reads strings with standard_conforming_strings on, and
    // every byte of a statement as ASCII or UTF-8-compatible; a session that
    // lexed the text differently could see statements this check never saw.
    match name.as_str() {
        "standard_conforming_strings" if value != "on" => {
            Err("standard_conforming_strings other than `on`")
        }
        "client_encoding" if !ascii_safe_encoding(&value) => {
            Err("a client encoding whose multibyte characters can hide quotes")
        }
        _ => Ok(()),
    }
}

/// Encodings in which every byte below 0x80 is the ASCII character (all
/// server encodings); the client-only ones (SJIS, BIG5, GBK, UHC, GB18030,
/// JOHAB) put `\` inside multibyte characters.
fn ascii_safe_encoding(name: &str) -> bool {
    let n: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_uppercase();
    matches!(
        n.as_str(),
        "UTF8" | "UNICODE" | "SQLASCII" | "MULEINTERNAL" | "KOI8R" | "KOI8U"
    ) || ["LATIN", "WIN", "ISO8859", "EUC"]
        .iter()
        .any(|p| n.strip_prefix(p).is_some_and(|rest| !rest.is_empty()))
}

/// `SELECT [* FROM] pg_catalog.f(literal, …);` for the functions pg_dump calls.
fn select(t: &mut Tokens) -> Result<(), Why> {
    const WHY: Why = "a SELECT other than the setval / set_config / large-object / statistics calls pg_dump writes";
    let mut tok = t.next();
    if tok == Some(Tok::Op("*")) {
        if t.next_word().as_deref() != Some("from") {
            return Err(WHY);
        }
        tok = t.next();
    }
    let schema_ok = tok.and_then(|s| s.name()).as_deref() == Some("pg_catalog");
    if !schema_ok || t.next() != Some(Tok::Op(".")) {
        return Err(WHY);
    }
    let Some(function) = t.next().and_then(|f| f.name()) else {
        return Err(WHY);
    };
    if t.next() != Some(Tok::Op("(")) {
        return Err(WHY);
    }
    let mut args: Vec<Tok> = Vec::new();
    loop {
        // One literal: optional minus, a string / number / true / false /
        // null, optional `::type` or `::type[]`.
        let mut arg = t.next();
        if arg == Some(Tok::Op("-")) {
            arg = t.next();
        }
        match arg {
            Some(Tok::Str(_) | Tok::Num(_)) => {}
            Some(Tok::Word(w))
                if matches!(w.to_ascii_lowercase().as_str(), "true" | "false" | "null") => {}
            Some(Tok::Op(")")) if args.is_empty() => break,
            _ => return Err(WHY),
        }
        args.push(arg.unwrap_or(Tok::Op("")));
        let mut sep = t.next();
        if sep == Some(Tok::Op("::")) {
            if !matches!(t.next(), Some(Tok::Word(_) | Tok::Ident(_))) {
                return Err(WHY);
            }
            sep = t.next();
            if sep == Some(Tok::Op("[")) {
                if t.next() != Some(Tok::Op("]")) {
                    return Err(WHY);
                }
                sep = t.next();
            }
        }
        match sep {
            Some(Tok::Op(",")) => {}
            Some(Tok::Op(")")) => break,
            _ => return Err(WHY),
        }
    }
    let end_ok = match t.next() {
        None => true,
        Some(Tok::Op(";")) => t.at_end(),
        _ => false,
    };
    if !end_ok {
        return Err(WHY);
    }
    if function == "set_config" {
        // Only `set_config('search_path', '', false)`: pg_dump qualifies
        // every name and empties the search path.
        let search_path = matches!(
            args.as_slice(),
            [Tok::Str("'search_path'"), Tok::Str("''"), Tok::Word(w)] if w.eq_ignore_ascii_case("false")
        );
        return if search_path {
            Ok(())
        } else {
            Err("a set_config call other than emptying search_path")
        };
    }
    if FUNCTIONS.contains(&function.as_str()) {
        Ok(())
    } else {
        Err(WHY)
    }
}

/// `CREATE [OR REPLACE] [modifiers] <object> …` for objects of one database.
fn create(t: &mut Tokens) -> Result<(), Why> {
    let kind = loop {
        match t.next_word() {
            Some(w) if CREATE_MODIFIERS.contains(&w.as_str()) => {}
            Some(w) => break w,
            None => return Err(NOT_PG_DUMP),
        }
    };
    object_kind(&kind)?;
    match kind.as_str() {
        "function" | "procedure" => function(t),
        "table" | "materialized" => {
            // CREATE TABLE … AS SELECT runs a query; pg_dump writes columns
            // (and materialized views WITH NO DATA, filled by REFRESH).
            if kind == "table" && t.any_top_level_pair(|a, b| a == "as" && is_query_start(b)) {
                Err("CREATE TABLE … AS (runs a query)")
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

fn is_query_start(word: &str) -> bool {
    matches!(word, "select" | "values" | "table" | "with" | "execute")
}

/// Whether `kind` (the word after CREATE / ALTER) is an object inside one database.
fn object_kind(kind: &str) -> Result<(), Why> {
    match kind {
        k if OBJECTS.contains(&k) => Ok(()),
        "role" | "user" | "group" => Err("a role statement"),
        "database" => Err("a database-level statement"),
        "tablespace" => Err("a tablespace statement"),
        "system" => Err("ALTER SYSTEM"),
        "event" => Err("an event trigger"),
        "language" | "trusted" | "procedural" => {
            Err("a procedural language (those come with CREATE EXTENSION)")
        }
        "foreign" | "server" | "subscription" => {
            Err("a foreign server, foreign table or subscription (reaches outside the database)")
        }
        "temp" | "temporary" | "global" | "local" => Err("a temporary object"),
        "default" => Err("default privileges (dumps are made with --no-privileges)"),
        "large" => Err("a large-object owner change (dumps are made with --no-owner)"),
        _ => Err(NOT_PG_DUMP),
    }
}

/// A function or procedure: every top-level `LANGUAGE x` must name an
/// allowed language. Text inside its (dollar-quoted) body is not looked at:
/// the restore only stores it.
fn function(t: &mut Tokens) -> Result<(), Why> {
    let mut depth = 0u32;
    let mut after_language = false;
    while let Some(tok) = t.next() {
        if after_language {
            after_language = false;
            let lang = match tok {
                Tok::Word(w) => w.to_ascii_lowercase(),
                Tok::Ident(i) => i.to_string(),
                Tok::Str(s) => s.trim_matches('\'').to_ascii_lowercase(),
                _ => return Err("a function whose LANGUAGE is not a name"),
            };
            if !LANGUAGES.contains(&lang.as_str()) {
                return Err(match lang.as_str() {
                    "c" | "internal" => "a function in LANGUAGE c or internal",
                    _ => "a function in an untrusted or unknown language",
                });
            }
            continue;
        }
        match tok {
            Tok::Op("(") => depth += 1,
            Tok::Op(")") => depth = depth.saturating_sub(1),
            Tok::Word(w) if depth == 0 && w.eq_ignore_ascii_case("language") => {
                after_language = true
            }
            _ => {}
        }
    }
    if after_language {
        return Err("a function whose LANGUAGE is not a name");
    }
    Ok(())
}

/// `ALTER <object> …` for objects of one database, never an owner change.
fn alter(t: &mut Tokens) -> Result<(), Why> {
    let Some(kind) = t.next_word() else {
        return Err(NOT_PG_DUMP);
    };
    match kind.as_str() {
        // Binary-upgrade only; pg_dump never writes it for a plain dump.
        "extension" => return Err("ALTER EXTENSION"),
        "default" => return Err("default privileges (dumps are made with --no-privileges)"),
        k => object_kind(k)?,
    }
    if t.any_top_level_pair(|a, b| a == "owner" && b == "to") {
        return Err("an ownership change (dumps are made with --no-owner)");
    }
    Ok(())
}

/// `COMMENT ON <object> … IS …`, not on a role, database or tablespace.
fn comment(t: &mut Tokens) -> Result<(), Why> {
    if t.next_word().as_deref() != Some("on") {
        return Err(NOT_PG_DUMP);
    }
    match t.next_word().as_deref() {
        Some("role" | "database" | "tablespace" | "subscription" | "server" | "foreign") => {
            Err("a comment on something outside the database")
        }
        Some(_) => Ok(()),
        None => Err(NOT_PG_DUMP),
    }
}

/// The state of a `CREATE FUNCTION … BEGIN ATOMIC … END` (SQL-standard
/// body, PostgreSQL 14+) that the splitter cut at the semicolons inside
/// it, as psql's lexer would have without its `BEGIN` counting. The pieces
/// after the first belong to the body: the server stores them, it does not
/// run them.
#[derive(Debug, Default, Clone, Copy)]
pub struct AtomicBody {
    /// Open `BEGIN ATOMIC` / `CASE` blocks; 0 outside a body.
    depth: u32,
}

impl AtomicBody {
    /// Whether `text` continues a body (and so is not a statement of its own).
    pub fn continues(&mut self, text: &str) -> bool {
        if self.depth == 0 {
            return false;
        }
        self.depth = body_depth(&mut Tokens::new(text), self.depth);
        true
    }

    /// After an allowed statement: whether it opened a body left unclosed.
    pub fn opens(&mut self, text: &str) {
        let mut t = Tokens::new(text);
        if t.next_word().as_deref() != Some("create") {
            return;
        }
        let mut kind = t.next_word();
        if kind.as_deref() == Some("or") {
            if t.next_word().as_deref() != Some("replace") {
                return;
            }
            kind = t.next_word();
        }
        if !matches!(kind.as_deref(), Some("function" | "procedure")) {
            return;
        }
        let mut prev_begin = false;
        while let Some(tok) = t.next() {
            let w = tok.word();
            if prev_begin && w.as_deref() == Some("atomic") {
                self.depth = body_depth(&mut t, 1);
                return;
            }
            prev_begin = w.as_deref() == Some("begin");
        }
    }
}

/// Nesting after the tokens of `t`, starting at `depth`: `CASE` opens,
/// `END` closes (both are reserved words, so they cannot be names).
fn body_depth(t: &mut Tokens, mut depth: u32) -> u32 {
    while let Some(tok) = t.next() {
        match tok.word().as_deref() {
            Some("case") => depth += 1,
            Some("end") => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    depth
}

/// One token of a statement. Strings keep their quotes; identifiers lose theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    /// An unquoted word (keyword or identifier), as written.
    Word(&'a str),
    /// A `"quoted"` identifier's inner text (doubled quotes left doubled).
    Ident(&'a str),
    /// A string literal, quotes and prefix included: `'x'`, `E'x'`.
    Str(&'a str),
    /// A dollar-quoted string.
    Dollar,
    Num(&'a str),
    /// `$1`.
    Param,
    /// Punctuation; `::` is one token, everything else one character.
    Op(&'a str),
}

impl Tok<'_> {
    fn word(self) -> Option<String> {
        match self {
            Tok::Word(w) => Some(w.to_ascii_lowercase()),
            _ => None,
        }
    }

    /// A name, quoted or not (unquoted ones folded to lower case).
    fn name(self) -> Option<String> {
        match self {
            Tok::Word(w) => Some(w.to_ascii_lowercase()),
            Tok::Ident(i) => Some(i.to_string()),
            _ => None,
        }
    }

    fn text(&self) -> &str {
        match self {
            Tok::Word(s) | Tok::Ident(s) | Tok::Num(s) | Tok::Op(s) => s,
            Tok::Str(s) => s.trim_start_matches(['E', 'e']).trim_matches('\''),
            Tok::Dollar | Tok::Param => "",
        }
    }
}

/// Tokens of one statement, comments and whitespace skipped.
struct Tokens<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Tokens<'a> {
    fn new(s: &'a str) -> Self {
        Tokens { s, i: 0 }
    }

    fn next_word(&mut self) -> Option<String> {
        self.next().and_then(Tok::word)
    }

    /// Only a `;` (or nothing) is left.
    fn at_end(&mut self) -> bool {
        let save = self.i;
        let rest: Vec<Tok> = std::iter::from_fn(|| self.next()).take(2).collect();
        self.i = save;
        matches!(rest.as_slice(), [] | [Tok::Op(";")])
    }

    /// `name` or `schema.name`, quoted or not.
    fn qualified_name(&mut self) -> bool {
        loop {
            if !matches!(self.next(), Some(Tok::Word(_) | Tok::Ident(_))) {
                return false;
            }
            let save = self.i;
            if self.next() != Some(Tok::Op(".")) {
                self.i = save;
                return true;
            }
        }
    }

    /// Whether two consecutive words outside parentheses match `f`.
    fn any_top_level_pair(&mut self, f: impl Fn(&str, &str) -> bool) -> bool {
        let mut depth = 0u32;
        let mut prev: Option<String> = None;
        while let Some(tok) = self.next() {
            match tok {
                Tok::Op("(") => depth += 1,
                Tok::Op(")") => depth = depth.saturating_sub(1),
                _ => {}
            }
            let w = tok.word().filter(|_| depth == 0);
            if let (Some(a), Some(b)) = (&prev, &w) {
                if f(a, b) {
                    return true;
                }
            }
            prev = w;
        }
        false
    }

    fn next(&mut self) -> Option<Tok<'a>> {
        let b = self.s.as_bytes();
        loop {
            let c = *b.get(self.i)?;
            match c {
                b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => self.i += 1,
                b'-' if b.get(self.i + 1) == Some(&b'-') => {
                    self.i = b[self.i..]
                        .iter()
                        .position(|&c| c == b'\n')
                        .map_or(b.len(), |p| self.i + p + 1);
                }
                b'/' if b.get(self.i + 1) == Some(&b'*') => {
                    let mut depth = 0u32;
                    while self.i < b.len() {
                        if b[self.i..].starts_with(b"/*") {
                            depth += 1;
                            self.i += 2;
                        } else if b[self.i..].starts_with(b"*/") {
                            depth -= 1;
                            self.i += 2;
                            if depth == 0 {
                                break;
                            }
                        } else {
                            self.i += 1;
                        }
                    }
                }
                _ => break,
            }
        }
        let start = self.i;
        let c = b[start];
        let tok = match c {
            b'\'' => {
                self.i = quoted_end(b, start + 1, b'\'', false);
                Tok::Str(&self.s[start..self.i])
            }
            b'"' => {
                self.i = quoted_end(b, start + 1, b'"', false);
                let end = self.i.saturating_sub(1).max(start + 1);
                Tok::Ident(&self.s[start + 1..end])
            }
            b'$' => {
                let rest = &b[start + 1..];
                if rest.first().is_some_and(u8::is_ascii_digit) {
                    self.i = start + 1 + rest.iter().take_while(|c| c.is_ascii_digit()).count();
                    Tok::Param
                } else if let Some(len) = rest
                    .iter()
                    .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80))
                    .filter(|&len| rest[len] == b'$')
                {
                    let tag = &b[start..start + len + 2];
                    let body = start + tag.len();
                    self.i = b[body..]
                        .windows(tag.len())
                        .position(|w| w == tag)
                        .map_or(b.len(), |p| body + p + tag.len());
                    Tok::Dollar
                } else {
                    self.i += 1;
                    Tok::Op("$")
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let len = b[start..]
                    .iter()
                    .take_while(|&&c| {
                        c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
                    })
                    .count();
                self.i = start + len;
                // E'…' (backslash escapes) and other prefixed strings.
                if len == 1 && b.get(self.i) == Some(&b'\'') {
                    let escapes = c == b'e' || c == b'E';
                    self.i = quoted_end(b, self.i + 1, b'\'', escapes);
                    Tok::Str(&self.s[start..self.i])
                } else {
                    Tok::Word(&self.s[start..self.i])
                }
            }
            c if c.is_ascii_digit()
                || (c == b'.' && b.get(start + 1).is_some_and(u8::is_ascii_digit)) =>
            {
                let len = b[start..]
                    .iter()
                    .take_while(|&&c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_')
                    .count();
                self.i = start + len;
                Tok::Num(&self.s[start..self.i])
            }
            b':' if b.get(start + 1) == Some(&b':') => {
                self.i += 2;
                Tok::Op("::")
            }
            _ => {
                let len = self.s[start..].chars().next().map_or(1, char::len_utf8);
                self.i += len;
                Tok::Op(&self.s[start..self.i])
            }
        };
        Some(tok)
    }
}

/// Offset just past the closing `quote` of a literal whose text starts at
/// `i` (doubled quotes stay inside; with `escapes`, so does `\'`).
fn quoted_end(b: &[u8], mut i: usize, quote: u8, escapes: bool) -> usize {
    while i < b.len() {
        match b[i] {
            b'\\' if escapes => i += 2,
            c if c == quote && b.get(i + 1) == Some(&quote) => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn allowed(sql: &str) {
        assert_eq!(statement(sql), Ok(()), "should be allowed: {sql}");
    }

    #[track_caller]
    fn refused(sql: &str) {
        assert!(statement(sql).is_err(), "should be refused: {sql}");
    }

    /// What pg_dump 15-18 writes, as found in real dumps.
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
            "CREATE EXTENSION IF NOT EXISTS \"pg_trgm\" WITH SCHEMA \"public\";",
            "COMMENT ON EXTENSION \"pg_trgm\" IS 'text similarity measurement and index searching based on trigrams';",
            "COMMENT ON SCHEMA \"public\" IS 'standard public schema';",
            "CREATE TYPE \"public\".\"mood\" AS ENUM (\n    'sad',\n    'ok'\n);",
            "CREATE DOMAIN \"public\".\"posint\" AS integer\n\tCONSTRAINT \"posint_check\" CHECK ((VALUE > 0));",
            "CREATE FUNCTION \"public\".\"slugify\"(\"value\" \"text\") RETURNS \"text\"\n    LANGUAGE \"sql\" IMMUTABLE STRICT\n    AS $_$\n  SELECT regexp_replace(lower($1), '[^a-z0-9]+', '-', 'g');\n$_$;",
            "CREATE FUNCTION \"public\".\"touch\"() RETURNS \"trigger\"\n    LANGUAGE \"plpgsql\"\n    AS $$BEGIN NEW.updated := now(); RETURN NEW; END$$;",
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
        ] {
            allowed(sql);
        }
    }

    #[test]
    fn what_a_planted_dump_would_try_is_refused() {
        for sql in [
            "COPY (SELECT 1) TO PROGRAM 'touch /tmp/x';",
            "copy \"public\".\"t\" to program 'id';",
            "COPY \"public\".\"t\" FROM '/etc/passwd';",
            "COPY \"public\".\"t\" FROM PROGRAM 'id';",
            "COPY \"public\".\"t\" TO '/tmp/out';",
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
            "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE plpgsql LANGUAGE c AS 'x';",
            "SET ROLE postgres;",
            "SET SESSION AUTHORIZATION postgres;",
            "set role 'postgres';",
            "SET LOCAL statement_timeout = 0;",
            "SET session_replication_role = replica;",
            "SET standard_conforming_strings = off;",
            "SET client_encoding = 'SJIS';",
            "SET client_encoding = 'GBK';",
            "RESET ALL;",
            "LOAD 'plpgsql';",
            "CHECKPOINT;",
            "VACUUM;",
            "GRANT ALL ON SCHEMA public TO PUBLIC;",
            "REVOKE ALL ON SCHEMA public FROM PUBLIC;",
            "SECURITY LABEL ON TABLE t IS 'x';",
            "CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION f();",
            "ALTER TABLE \"public\".\"t\" OWNER TO \"postgres\";",
            "ALTER FUNCTION \"public\".\"f\"() OWNER TO postgres;",
            "ALTER SCHEMA \"public\" OWNER TO x;",
            "ALTER DEFAULT PRIVILEGES GRANT ALL ON TABLES TO PUBLIC;",
            "ALTER LARGE OBJECT 1 OWNER TO x;",
            "SELECT pg_catalog.set_config('standard_conforming_strings', 'off', false);",
            "SELECT pg_catalog.set_config('search_path', 'evil', false);",
            "SELECT pg_catalog.set_config('search_path', '', true);",
            "SELECT pg_read_file('/etc/passwd');",
            "SELECT pg_catalog.pg_read_file('/etc/passwd');",
            "SELECT pg_catalog.lo_import('/etc/passwd');",
            "SELECT pg_catalog.setval('s', 1, true); SELECT 1;",
            "SELECT pg_catalog.setval(evil(), 1, true);",
            "SELECT pg_catalog.setval('s', (SELECT 1), true);",
            "SELECT 1;",
            "INSERT INTO t VALUES (1);",
            "CREATE TABLE t AS SELECT evil();",
            "CREATE TEMP TABLE t (x int);",
            "CREATE LANGUAGE plperlu;",
            "CREATE TRUSTED PROCEDURAL LANGUAGE x HANDLER h;",
            "CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw;",
            "CREATE FOREIGN DATA WRAPPER w;",
            "CREATE SUBSCRIPTION s CONNECTION 'host=x' PUBLICATION p;",
            "ALTER EXTENSION x ADD FUNCTION f();",
            "COMMENT ON DATABASE postgres IS 'x';",
            "COMMENT ON ROLE postgres IS 'x';",
            "NOTIFY x;",
            "CALL p();",
            "BEGIN; CREATE ROLE x;",
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
        // The words only count outside strings, identifiers and comments.
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
    fn copy_blocks_must_read_stdin_into_a_table() {
        assert_eq!(
            copy_from_stdin("COPY \"public\".\"t\" (\"id\", \"name\") FROM stdin;"),
            Ok(())
        );
        assert_eq!(
            copy_from_stdin("COPY \"public\".\"t\"  FROM stdin;"),
            Ok(())
        );
        assert_eq!(copy_from_stdin("copy t from STDIN ;"), Ok(()));
        for bad in [
            "COPY (SELECT evil()) FROM stdin;",
            "COPY t (a) FROM stdin WITH (FORMAT binary);",
            "COPY t (a) TO PROGRAM 'x' ; COPY t FROM stdin;",
            "COPY t (evil()) FROM stdin;",
            "COPY t FROM stdin; SELECT 1;",
            // System catalogs: a row in pg_authid is a superuser.
            "COPY \"pg_catalog\".\"pg_authid\" (\"oid\", \"rolname\") FROM stdin;",
            "COPY pg_catalog.pg_authid FROM stdin;",
            "COPY \"pg_authid\" FROM stdin;",
            "COPY \"PG_CATALOG\".x FROM stdin;",
            "COPY information_schema.sql_features FROM stdin;",
            "COPY pg_toast.t FROM stdin;",
        ] {
            assert!(copy_from_stdin(bad).is_err(), "{bad}");
        }
        // A table of the project's own may be called pg_something when it is
        // qualified by its schema.
        assert_eq!(
            copy_from_stdin("COPY \"public\".\"pg_x\" FROM stdin;"),
            Ok(())
        );
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

    #[test]
    fn sql_standard_bodies_span_the_pieces_the_splitter_cut() {
        let mut body = AtomicBody::default();
        let head = "CREATE FUNCTION \"public\".\"f\"() RETURNS integer\n    LANGUAGE \"sql\"\n    BEGIN ATOMIC\n SELECT CASE WHEN true THEN 1 END;";
        allowed(head);
        assert!(!body.continues(head));
        body.opens(head);
        assert!(body.continues(" SELECT 2;"));
        assert!(body.continues("END;"));
        assert!(!body.continues("CREATE ROLE x;"), "the body is closed");

        // `begin` as a name opens nothing.
        let mut body = AtomicBody::default();
        body.opens("CREATE FUNCTION \"begin\"() RETURNS int LANGUAGE sql RETURN 1;");
        assert!(!body.continues("CREATE ROLE x;"));
        let mut body = AtomicBody::default();
        body.opens("CREATE FUNCTION begin() RETURNS int LANGUAGE sql RETURN 1;");
        assert!(!body.continues("CREATE ROLE x;"));
        // A body closed in one piece leaves nothing open.
        let mut body = AtomicBody::default();
        body.opens("CREATE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC END;");
        assert!(!body.continues("CREATE ROLE x;"));
    }
}
