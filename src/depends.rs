//! What a snapshot depends on beyond its key: the inputs Django actually read
//! while building it, recorded so that the warm path can tell, without
//! Python, whether a plain `migrate` would still build the same database.
//!
//! The key covers the migration files the `migrations` globs find and the
//! key-input files. Django reads more: migrations in site-packages or in
//! packages that `MIGRATION_MODULES` moves out of `*/migrations/`, the
//! settings module (which decides `INSTALLED_APPS`), `manage.py`, Django
//! itself. The shim reports all of them with their sha256 as it loads them;
//! the snapshot records those that the key does not cover (`Depends`), plus
//! the listing of every migration package outside the key (so that a new
//! file there counts too). A snapshot is served only while every recorded
//! file hashes the same and every listing is the same; the digest of the
//! record is part of the template's identity (its comment), so a template
//! built from other inputs is never mistaken for ours.
//!
//! The same record makes incremental builds safe: a snapshot is built on
//! only if Django is the same version, no app it had was removed, and every
//! migration it applied is still loaded from identical content (`compatible`).

use crate::fingerprint::Fingerprint;
use crate::hash::{hash_normalized, hex};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One file the shim read, with the sha256 of its normalised content.
#[derive(Debug, Clone, Deserialize)]
pub struct HashedPath {
    pub path: PathBuf,
    pub sha256: Option<String>,
}

/// A migration module Django's loader found.
#[derive(Debug, Clone, Deserialize)]
pub struct LoadedMigration {
    pub app: String,
    pub name: String,
    pub path: Option<PathBuf>,
    pub sha256: Option<String>,
    /// `(app, name)` of each migration this one replaces (a squash, or an
    /// app renamed with `replaces`). Older shims did not report it.
    #[serde(default)]
    pub replaces: Vec<(String, String)>,
}

/// What the shim saw, as it reports it (the `inputs` event).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ShimInputs {
    pub django: String,
    pub settings_module: String,
    pub installed_apps: Vec<String>,
    pub migration_modules: BTreeMap<String, Option<String>>,
    pub migrations: Vec<LoadedMigration>,
    /// Directories of every app's migrations package.
    pub migration_dirs: Vec<PathBuf>,
    /// manage.py, the settings module and the project modules it imported,
    /// and Django's own `__init__.py` (which holds its version).
    pub files: Vec<HashedPath>,
    /// The project's own modules that migrations import (a custom field, a
    /// RunPython helper), and what those import.
    #[serde(default)]
    pub migration_code: Vec<HashedPath>,
}

/// What the warm path checks and the template's identity covers: every
/// input of the build that the key does not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checked {
    pub django: String,
    pub settings_module: String,
    pub installed_apps: Vec<String>,
    pub migration_modules: BTreeMap<String, Option<String>>,
    /// Files outside the key -> sha256. Paths inside the project are
    /// relative to it (so a checkout elsewhere shares snapshots), others
    /// absolute.
    pub files: BTreeMap<String, String>,
    /// Migration packages whose new files the key would not see -> the
    /// module names in them, sorted.
    pub dirs: BTreeMap<String, Vec<String>>,
    /// Code that migrations import -> sha256: when it changes, what the
    /// applied migrations built may change too, so no build goes on from
    /// a snapshot made with other code.
    pub code: BTreeMap<String, String>,
}

/// The record kept in the manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Depends {
    pub checked: Checked,
    /// `app.name` -> sha256 of every migration Django loaded (project and
    /// third-party): what an incremental build checks the base against.
    /// Not part of the identity: the key and `checked.files` already cover
    /// every one of those files, and `checked` the settings that map names
    /// to files.
    pub migrations: BTreeMap<String, String>,
}

/// Why recorded inputs no longer hold (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed(pub String);

impl std::fmt::Display for Changed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The project-relative form of a path inside the project, else the absolute one.
fn display(project_dir: &Path, path: &Path) -> String {
    match path.strip_prefix(project_dir) {
        Ok(rel) => rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/"),
        Err(_) => path.to_string_lossy().into_owned(),
    }
}

fn resolve(project_dir: &Path, shown: &str) -> PathBuf {
    let p = Path::new(shown);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        project_dir.join(p)
    }
}

/// A recorded build's inputs, and the migration packages inside the project
/// that the `migrations` globs miss (to suggest a glob for them).
pub struct Recorded {
    pub depends: Depends,
    pub unkeyed_dirs: Vec<String>,
}

impl Depends {
    /// Turn what the shim reported into the record, given the key the build
    /// started from. `covered(rel)`: whether a project-relative path is a
    /// migration file the key's globs take. A migration the key hashed that
    /// Django read with other content changed while the build ran.
    pub fn record(
        project_dir: &Path,
        fp: &Fingerprint,
        inputs: &ShimInputs,
        covered: impl Fn(&str) -> bool,
    ) -> Result<Recorded, Changed> {
        let mut d = Depends {
            checked: Checked {
                django: inputs.django.clone(),
                settings_module: inputs.settings_module.clone(),
                installed_apps: inputs.installed_apps.clone(),
                migration_modules: inputs.migration_modules.clone(),
                ..Checked::default()
            },
            ..Depends::default()
        };
        for m in &inputs.migrations {
            let (Some(path), Some(sha)) = (&m.path, &m.sha256) else {
                continue;
            };
            d.migrations
                .insert(format!("{}.{}", m.app, m.name), sha.clone());
            let shown = display(project_dir, path);
            match fp.migrations().get(&shown) {
                Some(keyed) if keyed == sha => {}
                Some(_) => {
                    return Err(Changed(format!(
                        "`{shown}` changed while Django was loading it"
                    )))
                }
                None => {
                    d.checked.files.insert(shown, sha.clone());
                }
            }
        }
        for f in &inputs.files {
            if let Some(sha) = &f.sha256 {
                d.checked
                    .files
                    .insert(display(project_dir, &f.path), sha.clone());
            }
        }
        for f in &inputs.migration_code {
            if let Some(sha) = &f.sha256 {
                d.checked
                    .code
                    .insert(display(project_dir, &f.path), sha.clone());
            }
        }
        let mut unkeyed_dirs = Vec::new();
        for dir in &inputs.migration_dirs {
            let shown = display(project_dir, dir);
            let inside = !Path::new(&shown).is_absolute();
            if inside && covered(&format!("{shown}/0001_probe.py")) {
                continue;
            }
            if inside {
                unkeyed_dirs.push(shown.clone());
            }
            d.checked.dirs.insert(shown, list_modules(dir));
        }
        Ok(Recorded {
            depends: d,
            unkeyed_dirs,
        })
    }

    /// The template's identity beyond the key (see `Checked::digest`).
    pub fn digest(&self) -> String {
        self.checked.digest()
    }

    /// See `Checked::verify`.
    pub fn verify(&self, project_dir: &Path) -> Result<(), Changed> {
        self.checked.verify(project_dir)
    }

    /// Whether a database built from `base` (with `base_applied` rows in
    /// django_migrations), plus `migrate`, is what a plain `migrate` would
    /// build from `now`: same Django, no app removed, and every migration the
    /// base applied still loaded, from identical content.
    pub fn compatible(
        base: &Depends,
        base_applied: &[String],
        now: &ShimInputs,
        project_dir: &Path,
    ) -> Result<(), Changed> {
        let was = &base.checked;
        // Code the base's migrations ran (a field class, a helper): changed,
        // and the applied migrations would build something else now.
        let code_now: BTreeMap<String, Option<&str>> = now
            .migration_code
            .iter()
            .map(|f| (display(project_dir, &f.path), f.sha256.as_deref()))
            .collect();
        for (shown, sha) in &was.code {
            let same = match code_now.get(shown) {
                Some(now) => *now == Some(sha.as_str()),
                None => hash_regular_file(&resolve(project_dir, shown), &mut Vec::new())
                    .is_some_and(|now| now == *sha),
            };
            if !same {
                return Err(Changed(format!(
                    "`{shown}`, which its migrations import, changed"
                )));
            }
        }
        if was.settings_module != now.settings_module {
            return Err(Changed(format!(
                "it was built with settings `{}`, this run uses `{}`",
                was.settings_module, now.settings_module
            )));
        }
        if was.django != now.django {
            return Err(Changed(format!(
                "it was built with Django {}, this is Django {}",
                was.django, now.django
            )));
        }
        let loaded: BTreeMap<String, &str> = now
            .migrations
            .iter()
            .filter_map(|m| Some((format!("{}.{}", m.app, m.name), m.sha256.as_deref()?)))
            .collect();
        let covered = covered_by_replacements(base_applied, now);
        let apps: BTreeSet<&String> = now.installed_apps.iter().collect();
        for gone in was.installed_apps.iter().filter(|a| !apps.contains(a)) {
            // An app renamed with `replaces` (issue #22): its rows are the
            // new app's now, and a plain `migrate` builds its tables under
            // the new name. Which label the gone app had is not recorded;
            // Django's default (the last part of the name) is assumed, and
            // an app with no row under it is refused as before.
            let label = gone.rsplit('.').next().unwrap_or(gone);
            let mut rows = base_applied
                .iter()
                .filter(|r| r.split_once('.').is_some_and(|(app, _)| app == label))
                .peekable();
            let taken_over = rows.peek().is_some() && rows.all(|r| covered.contains(r));
            if !taken_over {
                return Err(Changed(format!("app `{gone}` is no longer installed")));
            }
        }
        for name in base_applied {
            match (base.migrations.get(name), loaded.get(name)) {
                (Some(was), Some(is)) if was == is => {}
                // Django's loader counts a replacing migration applied when
                // all it replaces is, and `migrate` then records it, as a
                // plain `migrate` records both it and what it replaces.
                (_, None) if covered.contains(name) => {}
                (_, None) => {
                    return Err(Changed(format!(
                        "migration {name} is applied there but no longer exists"
                    )))
                }
                _ => return Err(Changed(format!("migration {name} changed since"))),
            }
        }
        Ok(())
    }
}

/// The base's applied migrations that a loaded replacing migration stands
/// for, as Django's loader decides (`MigrationLoader.build_graph`): a
/// replacement is used when all or none of what it replaces is applied, and
/// counts as applied only when all is. So a row is covered when a loaded
/// migration replaces it and every other row that migration replaces was
/// applied too; a partly applied one is dropped from Django's graph, and
/// the row's own file, gone, can no longer be loaded.
fn covered_by_replacements(base_applied: &[String], now: &ShimInputs) -> BTreeSet<String> {
    let applied: BTreeSet<&str> = base_applied.iter().map(String::as_str).collect();
    let mut covered = BTreeSet::new();
    for m in now.migrations.iter().filter(|m| !m.replaces.is_empty()) {
        let names: Vec<String> = m
            .replaces
            .iter()
            .map(|(app, name)| format!("{app}.{name}"))
            .collect();
        if names.iter().all(|n| applied.contains(n.as_str())) {
            covered.extend(names);
        }
    }
    covered
}

/// Which gone migration files a migration on disk may replace, for the
/// choice of an ancestor before Python runs (`Store::best_ancestor`): the
/// bare names (`0003_tags`) that some migration file of the key lists in a
/// `replaces = [...]`. A squash whose replaced files were deleted, or an app
/// renamed with `replaces`, leaves a snapshot that applied those files a
/// good ancestor; a file deleted for any other reason (a branch switch)
/// must not make it one, or the build would be refused after the clone and
/// go cold. The match is by name only, so it may say yes too often, never
/// too rarely; `Depends::compatible` then decides as Django's loader does.
/// The files are read once, and only when some candidate lacks one.
pub struct Replaced<'a> {
    project_dir: &'a Path,
    fp: &'a Fingerprint,
    names: std::cell::OnceCell<BTreeSet<String>>,
}

impl<'a> Replaced<'a> {
    pub fn new(project_dir: &'a Path, fp: &'a Fingerprint) -> Self {
        Replaced {
            project_dir,
            fp,
            names: std::cell::OnceCell::new(),
        }
    }

    /// Whether the gone migration file `path` (project-relative) may be
    /// replaced by a migration on disk.
    pub fn covers(&self, path: &str) -> bool {
        let names = self.names.get_or_init(|| {
            let mut names = BTreeSet::new();
            for rel in self.fp.migrations().keys() {
                if let Ok(text) = std::fs::read(resolve(self.project_dir, rel)) {
                    names.extend(replaces_literals(&String::from_utf8_lossy(&text)));
                }
            }
            names
        });
        let file = path.rsplit('/').next().unwrap_or(path);
        names.contains(file.strip_suffix(".py").unwrap_or(file))
    }
}

/// Every string literal inside the brackets of each `replaces = [...]` (or
/// `(...)`) in a migration's source: app labels and migration names alike.
fn replaces_literals(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    let bytes = source.as_bytes();
    let mut from = 0;
    while let Some(at) = source[from..].find("replaces") {
        let mut i = from + at + "replaces".len();
        from = i;
        let skip_ws = |mut i: usize| {
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            i
        };
        i = skip_ws(i);
        if bytes.get(i) != Some(&b'=') {
            continue;
        }
        i = skip_ws(i + 1);
        if !matches!(bytes.get(i), Some(b'[' | b'(')) {
            continue;
        }
        let mut depth = 0usize;
        while i < bytes.len() {
            match bytes[i] {
                b'[' | b'(' => depth += 1,
                b']' | b')' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                quote @ (b'\'' | b'"') => {
                    let start = i + 1;
                    let mut j = start;
                    while j < bytes.len() && bytes[j] != quote {
                        j += if bytes[j] == b'\\' { 2 } else { 1 };
                    }
                    let end = j.min(bytes.len());
                    found.push(String::from_utf8_lossy(&bytes[start..end]).into_owned());
                    i = j;
                }
                _ => {}
            }
            i += 1;
        }
        from = i.min(bytes.len());
    }
    found
}

impl Checked {
    /// sha256 of the record: part of the template's identity.
    pub fn digest(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        hex(&Sha256::digest(&bytes))
    }

    /// Whether every recorded file and listing is as it was. This is the
    /// warm path's check: a few dozen small files (the project's own
    /// migrations are in the key), no Python.
    pub fn verify(&self, project_dir: &Path) -> Result<(), Changed> {
        let mut buf = Vec::with_capacity(64 * 1024);
        for (shown, sha) in self.files.iter().chain(&self.code) {
            match hash_regular_file(&resolve(project_dir, shown), &mut buf) {
                Some(now) if now == *sha => {}
                Some(_) => return Err(Changed(format!("`{shown}` changed"))),
                None => return Err(Changed(format!("`{shown}` is gone"))),
            }
        }
        for (shown, names) in &self.dirs {
            if list_modules(&resolve(project_dir, shown)) != *names {
                return Err(Changed(format!("the migrations in `{shown}` changed")));
            }
        }
        Ok(())
    }
}

/// The normalised sha256 of `path` if it is a regular file, read into `buf`.
/// The record comes from the cache dir, so a path in it may name anything:
/// a FIFO or `/dev/zero` must read as "gone", not hang or fill memory.
fn hash_regular_file(path: &Path, buf: &mut Vec<u8>) -> Option<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    buf.clear();
    file.read_to_end(buf).ok()?;
    Some(hash_normalized(buf))
}

/// Module names in a migrations package, as Django's loader finds them
/// (pkgutil: `.py` files and packages; names starting with `_` or `~`
/// skipped), sorted. An unreadable or missing directory lists as empty.
pub fn list_modules(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if name.starts_with('_') || name.starts_with('~') {
                return None;
            }
            if let Some(stem) = name.strip_suffix(".py") {
                return Some(stem.to_string());
            }
            let is_package = e.path().join("__init__.py").is_file();
            is_package.then_some(name)
        })
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(django: &str, apps: &[&str], migrations: &[(&str, &str)]) -> ShimInputs {
        ShimInputs {
            django: django.into(),
            settings_module: "s".into(),
            installed_apps: apps.iter().map(|s| s.to_string()).collect(),
            migration_modules: BTreeMap::new(),
            migrations: migrations
                .iter()
                .map(|(label, sha)| {
                    let (app, name) = label.split_once('.').expect("app.name");
                    LoadedMigration {
                        app: app.into(),
                        name: name.into(),
                        path: Some(PathBuf::from(format!("/x/{app}/{name}.py"))),
                        sha256: Some(sha.to_string()),
                        replaces: vec![],
                    }
                })
                .collect(),
            migration_dirs: vec![],
            files: vec![],
            migration_code: vec![],
        }
    }

    #[test]
    fn a_base_is_compatible_only_if_nothing_it_applied_changed() {
        let base = Depends {
            checked: Checked {
                django: "5.2".into(),
                settings_module: "s".into(),
                installed_apps: vec!["a".into(), "b".into()],
                ..Checked::default()
            },
            migrations: BTreeMap::from([
                ("a.0001".to_string(), "h1".to_string()),
                ("b.0001".to_string(), "h2".to_string()),
            ]),
        };
        let applied = vec!["a.0001".to_string(), "b.0001".to_string()];
        let ok = inputs(
            "5.2",
            &["a", "b", "c"],
            &[("a.0001", "h1"), ("b.0001", "h2"), ("a.0002", "h3")],
        );
        assert_eq!(
            Depends::compatible(&base, &applied, &ok, Path::new("/x")),
            Ok(())
        );
        let newer = inputs("6.0", &["a", "b"], &[("a.0001", "h1"), ("b.0001", "h2")]);
        assert!(Depends::compatible(&base, &applied, &newer, Path::new("/x")).is_err());
        let removed = inputs("5.2", &["a"], &[("a.0001", "h1"), ("b.0001", "h2")]);
        assert!(Depends::compatible(&base, &applied, &removed, Path::new("/x")).is_err());
        let edited = inputs("5.2", &["a", "b"], &[("a.0001", "hX"), ("b.0001", "h2")]);
        assert!(Depends::compatible(&base, &applied, &edited, Path::new("/x")).is_err());
        let squashed = inputs("5.2", &["a", "b"], &[("a.0001", "h1")]);
        assert!(Depends::compatible(&base, &applied, &squashed, Path::new("/x")).is_err());
    }

    #[test]
    fn rows_a_loaded_replacement_stands_for_count_as_present() {
        let base = Depends {
            checked: Checked {
                django: "5.2".into(),
                settings_module: "s".into(),
                installed_apps: vec!["a".into(), "shop.old".into()],
                ..Checked::default()
            },
            migrations: BTreeMap::from([
                ("a.0001".to_string(), "h1".to_string()),
                ("a.0002".to_string(), "h2".to_string()),
                ("old.0001".to_string(), "h3".to_string()),
            ]),
        };
        let applied: Vec<String> = ["a.0001", "a.0002", "old.0001"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        // (app, name, replaces) of each loaded migration.
        type Loaded<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);
        let with = |apps: &[&str], loaded: &[Loaded]| {
            let mut now = inputs("5.2", apps, &[]);
            now.migrations = loaded
                .iter()
                .map(|(app, name, replaces)| LoadedMigration {
                    app: app.to_string(),
                    name: name.to_string(),
                    path: None,
                    sha256: Some("new".into()),
                    replaces: replaces
                        .iter()
                        .map(|(a, n)| (a.to_string(), n.to_string()))
                        .collect(),
                })
                .collect();
            Depends::compatible(&base, &applied, &now, Path::new("/x"))
        };
        let squash: &[(&str, &str)] = &[("a", "0001"), ("a", "0002")];
        let renamed: &[(&str, &str)] = &[("old", "0001")];
        assert_eq!(
            with(
                &["a", "shop.new"],
                &[("a", "0001_squashed", squash), ("new", "0001", renamed)]
            ),
            Ok(())
        );
        // A replacement of more than the base applied is not used by
        // Django (partly applied), so the rows it names are gone.
        let wider: &[(&str, &str)] = &[("a", "0001"), ("a", "0002"), ("a", "0003")];
        assert!(with(
            &["a", "shop.new"],
            &[("a", "0001_squashed", wider), ("new", "0001", renamed)]
        )
        .is_err());
        // The old app removed without a replacement: its table would stay.
        let err = with(&["a"], &[("a", "0001_squashed", squash)]).expect_err("refused");
        assert_eq!(err.0, "app `shop.old` is no longer installed");
    }

    #[test]
    fn replaces_lists_are_read_from_source_text() {
        let source = "class Migration(migrations.Migration):\n    \
                      replaces = [\n        (\"app\", '0001_initial'),\n        (\"app\", \"0002_x\"),\n    ]\n    \
                      dependencies = [(\"other\", \"0009_not_replaced\")]\n";
        assert_eq!(
            replaces_literals(source),
            vec!["app", "0001_initial", "app", "0002_x"]
        );
        // A mention that is no assignment, and broken text, read as nothing
        // and never panic.
        assert!(replaces_literals("# this replaces 0001\n").is_empty());
        assert_eq!(replaces_literals("replaces = [('a\\é"), vec!["a\\é"]);
        assert!(replaces_literals("replaces = ").is_empty());
    }

    #[test]
    fn the_digest_changes_with_any_recorded_input() {
        let a = Checked {
            files: BTreeMap::from([("s.py".to_string(), "h".to_string())]),
            ..Checked::default()
        };
        let mut b = a.clone();
        assert_eq!(a.digest(), b.digest());
        b.installed_apps.push("x".into());
        assert_ne!(a.digest(), b.digest());
    }

    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let record = |path: &str| Checked {
            files: BTreeMap::from([(path.to_string(), hash_normalized(b""))]),
            ..Checked::default()
        };
        std::fs::write(dir.path().join("empty.py"), "").expect("write");
        assert_eq!(record("empty.py").verify(dir.path()), Ok(()));
        // /dev/null reads as empty, but it is no file of the project's.
        assert!(record("/dev/null").verify(dir.path()).is_err());
        assert!(record("/dev/zero").verify(dir.path()).is_err());
    }

    #[test]
    fn listing_follows_pkgutil() {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in [
            "0001_initial.py",
            "__init__.py",
            "_private.py",
            "~x.py",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(f), "").expect("write");
        }
        std::fs::create_dir(dir.path().join("pkg")).expect("mkdir");
        std::fs::write(dir.path().join("pkg/__init__.py"), "").expect("write");
        std::fs::create_dir(dir.path().join("__pycache__")).expect("mkdir");
        assert_eq!(list_modules(dir.path()), vec!["0001_initial", "pkg"]);
    }
}
