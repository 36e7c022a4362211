//! The migration packages `MIGRATION_MODULES` names, read from the settings
//! module as text, never run: the key must be computed without Python, yet a
//! CI cache keyed on it has to change when a migration in `app/db_migrations/`
//! does (issue #22).
//!
//! Only what a literal says is read: `MIGRATION_MODULES = {"app":
//! "app.db_migrations"}` (or `|=`, `.update({…})`, in the settings module,
//! or in any module of its settings package). A value built at run time
//! (`dict(…)`, a comprehension, an environment variable) is not guessed; the
//! dirs a build recorded cover those (`migsnap key`), and the build warns.
//! A wrong read costs little either way: a dir read too many only adds
//! files to the key, one read too few is what the record already checks.

use std::path::Path;

/// Project-relative dirs (with `/`, sorted, no duplicates) of the migration
/// packages the settings module `module` maps apps to, that exist under
/// `root`.
pub fn migration_module_dirs(root: &Path, module: &str) -> Vec<String> {
    let mut dirs: Vec<String> = settings_files(root, module)
        .iter()
        .filter_map(|file| std::fs::read_to_string(file).ok())
        .flat_map(|source| migration_modules_values(&source))
        .filter_map(|value| {
            let rel = dotted_to_rel(&value)?;
            root.join(&rel).is_dir().then_some(rel)
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// The files that may hold the settings of `module`: its own file, and
/// when it is (or lives in) a settings package such as
/// `mysite/settings/{base,test}.py`, every module of that package, since
/// `from .base import *` is how those share `MIGRATION_MODULES`.
fn settings_files(root: &Path, module: &str) -> Vec<std::path::PathBuf> {
    let Some(rel) = dotted_to_rel(module) else {
        return Vec::new();
    };
    let path = root.join(&rel);
    let package = if path.join("__init__.py").is_file() {
        Some(path.clone())
    } else if module.split('.').count() >= 3 {
        // `mysite.settings.test`: its parent is a settings package. For
        // `mysite.settings` the parent is the project package (urls, wsgi):
        // not read.
        path.parent().map(Path::to_path_buf)
    } else {
        None
    };
    let mut files = vec![path.with_extension("py")];
    if let Some(dir) = package {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            files.extend(
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "py")),
            );
        }
    }
    files.sort();
    files.dedup();
    files.into_iter().filter(|f| f.is_file()).collect()
}

/// `a.b_c` -> `a/b_c`, for a dotted name of Python identifiers only.
fn dotted_to_rel(dotted: &str) -> Option<String> {
    let ok = dotted.split('.').all(|part| {
        part.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    });
    ok.then(|| dotted.replace('.', "/"))
}

#[derive(Debug, PartialEq)]
enum Token {
    Str(String),
    Punct(char),
    Other,
}

/// The string values of every `MIGRATION_MODULES` dict literal in `source`:
/// `"key": "value"` pairs at the top level of the braces, where the value
/// is one plain literal (not `"a" + x`). `None` values are skipped.
fn migration_modules_values(source: &str) -> Vec<String> {
    const NAME: &str = "MIGRATION_MODULES";
    let mut values = Vec::new();
    for (at, _) in source.match_indices(NAME) {
        let before = source[..at].chars().next_back();
        let line_start = source[..at].rfind('\n').map_or(0, |i| i + 1);
        let after = &source[at + NAME.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
            || source[line_start..at].contains('#')
            || after.starts_with(|c: char| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let rest = after.trim_start();
        let rest = ["|=", "=", ".update("]
            .iter()
            .find_map(|op| rest.strip_prefix(op))
            .map(str::trim_start);
        let Some(body) = rest.and_then(|r| r.strip_prefix('{')) else {
            continue;
        };
        let tokens = top_level_tokens(body);
        for w in tokens.windows(4) {
            if let [Token::Str(_), Token::Punct(':'), Token::Str(v), Token::Punct(',' | '}')] = w {
                values.push(v.clone());
            }
        }
    }
    values
}

/// The tokens of a dict literal's body at its own nesting level, up to and
/// including its closing `}`; anything nested is one `Other`.
fn top_level_tokens(body: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut depth = 0usize;
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '"' | '\'' => {
                let mut s = String::new();
                while let Some(c2) = chars.next() {
                    match c2 {
                        '\\' => {
                            chars.next();
                        }
                        _ if c2 == c => break,
                        _ => s.push(c2),
                    }
                }
                tokens.push(if depth == 0 {
                    Token::Str(s)
                } else {
                    Token::Other
                });
            }
            '{' | '[' | '(' => {
                depth += 1;
                tokens.push(Token::Other);
            }
            '}' | ']' | ')' if depth > 0 => depth -= 1,
            '}' => {
                tokens.push(Token::Punct('}'));
                break;
            }
            ':' | ',' if depth == 0 => tokens.push(Token::Punct(c)),
            c if c.is_whitespace() => {}
            _ => {
                if tokens.last() != Some(&Token::Other) {
                    tokens.push(Token::Other);
                }
            }
        }
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_values_are_read_and_computed_ones_are_not() {
        let source = r#"
# MIGRATION_MODULES = {"old": "old.gone"}
MIGRATION_MODULES = {
    "audit": "audit.db_migrations",  # moved
    'orders': 'orders.migrations_v2',
    "skipped": None,
    "joined": "a" + SUFFIX,
    "nested": {"x": "not.this"},
}
MIGRATION_MODULES |= {"late": "late.db"}
MIGRATION_MODULES.update({"more": "more.db"})
NOT_MIGRATION_MODULES = {"no": "no.db"}
MIGRATION_MODULES = dict(computed="computed.db")
"#;
        assert_eq!(
            migration_modules_values(source),
            [
                "audit.db_migrations",
                "orders.migrations_v2",
                "late.db",
                "more.db"
            ]
        );
    }

    #[test]
    fn dirs_come_from_the_settings_package_and_must_exist() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let write = |rel: &str, text: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        };
        write("site/settings/__init__.py", "");
        write(
            "site/settings/base.py",
            "MIGRATION_MODULES = {'audit': 'audit.db_migrations', 'gone': 'gone.db'}\n",
        );
        write("site/settings/test.py", "from .base import *\n");
        write("audit/db_migrations/__init__.py", "");
        assert_eq!(
            migration_module_dirs(root, "site.settings.test"),
            ["audit/db_migrations"]
        );
        assert_eq!(
            migration_module_dirs(root, "site.settings"),
            ["audit/db_migrations"]
        );
        // A plain settings module: its siblings (urls, wsgi) are not read.
        write("proj/settings.py", "DEBUG = True\n");
        write(
            "proj/other.py",
            "MIGRATION_MODULES = {'audit': 'audit.db_migrations'}\n",
        );
        assert!(migration_module_dirs(root, "proj.settings").is_empty());
        assert!(migration_module_dirs(root, "../etc").is_empty());
    }
}
