//! The module graph of the library, read from its `crate::` paths: no
//! cycles, and the arrows that keep the layers apart. The rule, written down:
//!
//! - `hash`, `files`, `env`, `error` are leaves (they may use `error`), and
//!   `key` uses only those; the key's stat cache (`statcache`) only those too,
//!   and the walk's record (`walkrecord`) those, the stat cache and the
//!   key's files as found (`keyfiles`, a leaf);
//! - the key (`fingerprint`, `depends`) and the cache dir (`store`) know no
//!   server, no Django and no settings (`context`);
//! - `pg` (connection, admin, dump, restore) knows no Django, no store, no
//!   settings and no engine;
//! - the snapshot store (`remote`) builds on the cache dir (`store`) and the
//!   leaves only: it knows no server, no Django, no settings (`context`), no engine, and
//!   prints nothing (its callers decide what to say); the cache dir does not
//!   know it;
//! - the CLI (`src/cli.rs`, `src/commands/`) and settings resolution
//!   (`src/settings.rs`) live in the binary, so no library module can reach
//!   them (the compiler enforces that one); the library takes a resolved
//!   `context::Ctx`;
//! - what `ls` lists and `gc` keeps (`listing`) is decided from manifests
//!   alone: no server, no Django, no settings, no store client;
//! - the use cases (`prepare`, `check`, `plan`, `schema`, `diff`) sit on
//!   top: nothing below them (the key, the store, `pg`) reaches up into
//!   one; `schema` reads a catalog with `check`'s index reader, and `diff`
//!   compares two schemas with `check`'s pairing and attribution, so
//!   `check` knows neither;
//! - `trace` applies the range `plan` resolves, so `plan` does not know
//!   it, and `lint` stays pure: it gets what `trace` measured as data;
//! - one command's key, store and connection are resolved once, by a
//!   `session::Session` the use cases take: it sits on the engine and
//!   `context`, knows no use case, and neither the engine nor `context`
//!   knows it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level library module -> the top-level modules it names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = Vec::new();
    collect(&src, &mut files);
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src");
        let first = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .expect("utf-8 path");
        let module = first.trim_end_matches(".rs").to_string();
        // The binary's modules; the compiler keeps the library from them.
        if matches!(
            module.as_str(),
            "lib" | "main" | "cli" | "commands" | "settings" | "render"
        ) {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read source");
        // Unit tests may reach anywhere.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let deps = edges.entry(module.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != module {
                deps.insert(name);
            }
        }
    }
    edges
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A cycle through `start`, if any, as the path that closes it.
fn cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = stack.iter().position(|n| n == node) {
            let mut path = stack[pos..].to_vec();
            path.push(node.to_string());
            return Some(path);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

#[test]
fn the_library_module_graph_has_no_cycle() {
    let edges = graph();
    assert!(
        edges.contains_key("engine"),
        "the walk found the modules: {edges:?}"
    );
    if let Some(path) = cycle(&edges) {
        panic!("import cycle: {}", path.join(" -> "));
    }
}

/// What the key's caches (`statcache`, `walkrecord`) may not know.
const BYTES_AND_STATS: &[&str] = &[
    "pg",
    "embedded",
    "django",
    "engine",
    "context",
    "store",
    "key",
    "fingerprint",
    "depends",
    "names",
    "remote",
];

#[test]
fn the_layers_keep_their_arrows() {
    let edges = graph();
    let forbidden: &[(&str, &[&str])] = &[
        ("hash", &["*"]),
        ("files", &["*"]),
        ("keyfiles", &["*"]),
        // The key's stat cache, and the walk's record beside it: bytes and
        // stats, no key, no store, no server.
        ("statcache", BYTES_AND_STATS),
        ("walkrecord", BYTES_AND_STATS),
        ("error", &["*"]),
        (
            "key",
            &[
                "pg",
                "embedded",
                "django",
                "engine",
                "context",
                "store",
                "names",
                "fingerprint",
                "depends",
                "prepare",
                "check",
                "plan",
                "schema",
                "diff",
            ],
        ),
        (
            "fingerprint",
            &[
                "pg", "embedded", "django", "engine", "context", "store", "plan", "schema", "diff",
            ],
        ),
        (
            "depends",
            &[
                "pg", "embedded", "django", "engine", "context", "store", "plan", "schema", "diff",
            ],
        ),
        (
            "store",
            &[
                "pg", "embedded", "django", "engine", "context", "plan", "schema", "diff",
            ],
        ),
        (
            "store",
            &["pg", "embedded", "django", "engine", "context", "remote"],
        ),
        (
            "remote",
            &[
                "pg",
                "embedded",
                "django",
                "engine",
                "context",
                "prepare",
                "check",
                "ui",
                "depends",
                "fingerprint",
            ],
        ),
        (
            "names",
            &[
                "pg", "embedded", "django", "engine", "context", "store", "plan", "schema", "diff",
            ],
        ),
        (
            "pg",
            &[
                "django", "store", "context", "engine", "embedded", "depends", "plan", "schema",
                "diff", "trace",
            ],
        ),
        // What `ls` lists and `gc` keeps is decided from manifests alone.
        (
            "listing",
            &[
                "pg", "embedded", "django", "engine", "context", "remote", "shared",
            ],
        ),
        // `check` compares catalogs; `schema` and `diff` build on it, not
        // the other way round; `schema` reads one database and compares
        // nothing.
        ("check", &["schema", "diff"]),
        ("schema", &["diff", "django", "plan", "trace"]),
        // `plan` resolves the range and its base; `trace` applies it, on
        // top of `plan`, never the other way round.
        ("plan", &["trace"]),
        // The session resolves what the use cases share; it is theirs, not
        // the other way round, and below it nothing knows it.
        (
            "session",
            &[
                "prepare", "pool", "shared", "check", "plan", "schema", "diff", "lint", "drop",
                "listing", "trace",
            ],
        ),
        (
            "engine",
            &[
                "session", "prepare", "pool", "check", "plan", "schema", "diff", "lint", "drop",
                "trace",
            ],
        ),
        // What the use cases take (`Ctx`) is resolved settings and the
        // clients made from them: it knows none of the use cases, nor
        // Django's runs, nor how progress is reported.
        (
            "context",
            &[
                "session", "engine", "prepare", "pool", "shared", "check", "plan", "schema",
                "diff", "lint", "drop", "listing", "django", "report", "trace",
            ],
        ),
    ];
    let mut broken = Vec::new();
    // `lint` is pure: rules over the plan the shim reported.
    let lint: &[&str] = &[
        "pg", "embedded", "engine", "store", "context", "prepare", "check", "plan", "schema",
        "diff", "trace",
    ];
    let forbidden: Vec<(&str, &[&str])> = forbidden
        .iter()
        .copied()
        .chain(std::iter::once(("lint", lint)))
        .collect();
    for (module, banned) in &forbidden {
        for dep in edges.get(*module).into_iter().flatten() {
            // A leaf ("*") may still use `error`, itself a leaf.
            if (banned.contains(&"*") && dep != "error") || banned.contains(&dep.as_str()) {
                broken.push(format!("{module} -> {dep}"));
            }
        }
    }
    assert!(broken.is_empty(), "forbidden arrows: {broken:?}");
}

#[test]
fn the_checker_sees_a_cycle_when_there_is_one() {
    // The rule above must be able to fail.
    let edges: BTreeMap<String, BTreeSet<String>> =
        [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"])]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
            .collect();
    assert_eq!(
        cycle(&edges),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

/// Every library source file (not the binary's: `main`, `cli`,
/// `commands/`, `settings`) as (path under src, text without unit tests).
fn library_sources() -> Vec<(String, String)> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    files
        .into_iter()
        .filter_map(|file| {
            let rel = file.strip_prefix(&src).expect("under src");
            let rel = rel.to_str().expect("utf-8 path").to_string();
            let binary = ["main.rs", "cli.rs", "settings.rs", "render.rs"].contains(&rel.as_str())
                || rel.starts_with("commands/");
            if binary {
                return None;
            }
            let text = std::fs::read_to_string(&file).expect("read source");
            let code = text.split("#[cfg(test)]").next().unwrap_or("").to_string();
            Some((rel, code))
        })
        .collect()
}

/// Where the library's sources (but `except`) contain one of `needles`:
/// `file: needle` for each.
fn library_uses(needles: &[&str], except: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for (rel, code) in library_sources() {
        if except.contains(&rel.as_str()) {
            continue;
        }
        found.extend(uses(&rel, &code, needles));
    }
    found
}

/// `rel: needle` for each of `needles` that `code` contains.
fn uses(rel: &str, code: &str, needles: &[&str]) -> Vec<String> {
    needles
        .iter()
        .filter(|n| code.contains(*n))
        .map(|n| format!("{rel}: {n}"))
        .collect()
}

/// The library never writes to the terminal (issue #23): it reports
/// `report::Event`s, and the binary renders them (`src/render.rs`). Only
/// the test-only `failpoint` hooks say something themselves.
#[test]
fn the_library_writes_nothing_to_the_terminal() {
    const WRITES: &[&str] = &[
        "eprintln!",
        "eprint!",
        "println!",
        "print!",
        "io::stderr",
        "io::stdout",
    ];
    let found = library_uses(WRITES, &["failpoint.rs"]);
    assert!(
        found.is_empty(),
        "the library writes to the terminal: {found:?}"
    );
}

/// The library is told its settings (`context::Ctx`), never reads them from
/// the environment behind the settings' back (issue #23): only `env` (the
/// readers the settings call) and the test-only `failpoint` hooks read
/// variables. Naming a variable in a message is fine.
#[test]
fn the_library_reads_no_environment() {
    const READS: &[&str] = &[
        "env::var(",
        "env::var_os(",
        "env::vars(",
        "env::path(",
        "env::bytes(",
        "env::seconds(",
        "env::dirs(",
        "env::backend_vars(",
        "env::check(",
    ];
    let found = library_uses(READS, &["env.rs", "failpoint.rs"]);
    assert!(
        found.is_empty(),
        "environment read in the library: {found:?}"
    );
}

/// Hashing the migration files reads every one of them: from async code it
/// runs on the blocking pool (`fingerprint::compute_async`, or inside a
/// `blocking(` closure), never inline on the runtime, where it stalls the
/// connection tasks and Ctrl-C (issue #23).
#[test]
fn hashing_never_runs_on_the_runtime() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    let mut inline = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src");
        let rel = rel.to_str().expect("utf-8 path").to_string();
        if rel == "fingerprint.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read source");
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let lines: Vec<&str> = code.split('\n').collect();
        for (i, line) in lines.iter().enumerate() {
            let hashes = ["fingerprint::compute(", "compute_noting_links("]
                .iter()
                .any(|c| line.contains(c));
            // The closure opens at most a few lines above the call.
            let off_runtime = lines[i.saturating_sub(3)..=i]
                .iter()
                .any(|l| l.contains("blocking(") || l.contains("spawn_blocking("));
            if hashes && !off_runtime {
                inline.push(format!("{rel}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    assert!(inline.is_empty(), "hashing inline: {inline:?}");
}

/// The library reports what went wrong as data and never writes advice
/// (issue #23): a hint names the binary's flags, settings and variables, or
/// the pytest plugin's options, which the library must not know. Each
/// module's error enum carries the path, database or cause in its fields
/// (`error::Typed`), and `src/commands/hints.rs` words the hint; a warning
/// about a typed cause gets its hint from the reporter (`Events::warn_about`).
#[test]
fn the_library_writes_no_hints() {
    let found = library_uses(&[".hint("], &[]);
    assert!(
        found.is_empty(),
        "a hint written in the library (move it to src/commands/hints.rs, keyed on a typed error): {found:?}"
    );
}

/// The library's errors are data (issue #23): each module's thiserror
/// enum carries the path, the database, the uid, the cause, and becomes an
/// `Error` through `error::Typed` (or `Error::typed`), so the binary can
/// render it and find its hint by type. A message built from a string in
/// place carries none of that: only `error.rs` (which defines the
/// constructors) may build one; the binary may, for its own flags.
const STRING_ERRORS: &[&str] = &[
    "Error::new(",
    "Error::usage(",
    "Error::internal(",
    "Error::server(",
    ".with_kind(",
];

#[test]
fn the_library_builds_no_errors_from_strings() {
    let found = library_uses(STRING_ERRORS, &["error.rs"]);
    assert!(
        found.is_empty(),
        "an error built from a string in the library (make it a variant of the module's error enum): {found:?}"
    );
}

#[test]
fn the_string_error_rule_sees_a_planted_call() {
    // The rule above must be able to fail, whichever way the call is spelt.
    let planted = [
        "return Err(Error::internal(format!(\"cannot lock `{}`\", p.display())));",
        "let e = crate::error::Error::new(Kind::Usage, why);",
        "std::fs::read(p).with_kind(Kind::Usage, || \"cannot read\".into())?;",
    ];
    for code in planted {
        assert_eq!(uses("planted.rs", code, STRING_ERRORS).len(), 1, "{code}");
    }
    assert!(uses(
        "typed.rs",
        "Err(PgError::NotABuild { name }.into())",
        STRING_ERRORS
    )
    .is_empty());
}

/// Every typed error of the library (`impl … Typed for X`) is named in
/// src/commands/hints.rs, where the binary words its hint or says why it
/// has none: a new error type cannot be left out of the renderer unseen.
/// (Within a type, each hint function matches every variant, which the
/// compiler checks.)
#[test]
fn every_typed_error_is_seen_by_the_hints() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let hints = std::fs::read_to_string(src.join("commands/hints.rs")).expect("read hints.rs");
    let mut typed = Vec::new();
    for (rel, code) in library_sources() {
        for line in code.split('\n') {
            let Some(rest) = line.trim().strip_prefix("impl ") else {
                continue;
            };
            if let Some((trait_path, ty)) = rest.split_once(" for ") {
                if trait_path.ends_with("Typed") {
                    let ty: String = ty
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    typed.push((rel.clone(), ty));
                }
            }
        }
    }
    assert!(
        typed.len() > 10,
        "the walk found the typed errors: {typed:?}"
    );
    let unseen: Vec<String> = typed
        .iter()
        .filter(|(_, ty)| {
            !hints
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .any(|w| w == ty)
        })
        .map(|(rel, ty)| format!("{rel}: {ty}"))
        .collect();
    assert!(
        unseen.is_empty(),
        "typed errors src/commands/hints.rs does not name (give each a hint, or say there why it has none): {unseen:?}"
    );
}

/// The key is hashed and the server connected to once per command (issue
/// #23, part 5): a use case or a command asks its `session::Session`,
/// which caches both, and never calls `fingerprint::compute_async` or
/// `engine::connect` itself (that was 14 places, some hashing twice in one
/// run). `engine::settled_inputs` hashes again on purpose, to notice a
/// file changed during a build, with `fingerprint::compute` on the
/// blocking pool; `migsnap key` needs `compute_noting_links`.
#[test]
fn the_key_and_the_connection_are_resolved_by_the_session() {
    const RESOLVES: &[&str] = &[
        "compute_async(",
        "engine::connect(",
        "engine::connect_if_running(",
    ];
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    let mut found = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src");
        let rel = rel.to_str().expect("utf-8 path").to_string();
        // Where they are defined, and the one caller.
        if ["session.rs", "fingerprint.rs", "engine.rs"].contains(&rel.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read source");
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for needle in RESOLVES {
            if code.contains(needle) {
                found.push(format!("{rel}: {needle}"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "resolved outside the session (ask `Session::fingerprint` or `Session::admin`): {found:?}"
    );
}
