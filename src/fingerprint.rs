//! Find the migration files and key inputs of a project and hash them into
//! the snapshot key: a pure function of files (no server, no Python), so CI
//! can compute its cache key before anything is running.
//!
//! The key is sha256 over a versioned, length-delimited serialisation of
//! (relative path, content hash) pairs in byte order, so adding, removing,
//! renaming or editing any migration changes it, and bumping
//! `KEY_FORMAT` invalidates every old snapshot at once.

use crate::error::{Error, Kind, Result};
use crate::hash::hash_normalized;
use crate::key::Key;
use crate::keyfiles::{Class, KeyFiles};
use crate::statcache::{self, DirCache, HashKind, Stat, StatCache};
use crate::walkrecord::{self, Derived, Hashed, RecordedFiles, Recording};
use globset::{GlobSet, GlobSetBuilder};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Bump when the key serialisation or the snapshot contents change meaning.
pub const KEY_FORMAT: &str = "migsnap-key-v2";

/// The format of a `prepare --at` key (`Fingerprint::at`): the full key and
/// the targets, in order.
pub const AT_FORMAT: &str = "migsnap-at-v1";
/// The marker that `build-accelerator` adds to a key (issue #24): a
/// snapshot built by the accelerated path has a key of its own, so a stock
/// run never restores one (and the warm path still starts no Python to
/// tell them apart).
pub const ACCELERATED_FORMAT: &str = "migsnap-accelerated-v1";

/// Django's `DEFAULT_DB_ALIAS`.
pub const DEFAULT_ALIAS: &str = "default";

/// Directories that never hold the project's own migrations.
const SKIP_DIRS: &[&str] = &[
    "node_modules",
    "site-packages",
    "__pycache__",
    ".git",
    ".tox",
    ".nox",
];

#[derive(Debug, Clone)]
pub struct Fingerprint {
    pub key: Key,
    /// What the key was computed from (`migrations`, `key_inputs` and
    /// `packages` as maps, made when first asked for: the warm path never
    /// asks).
    files: Files,
    maps: OnceLock<[BTreeMap<String, String>; 3]>,
    /// sha256 of the key salt: snapshots only build on snapshots with the
    /// same salt (changing it invalidates every snapshot).
    pub salt_sha256: String,
    /// The alias it is for (`KeySpec::alias`).
    pub alias: String,
    /// `build-accelerator` was on: the key carries `ACCELERATED_FORMAT`,
    /// and what is built for it is migrated with django-fastmig when the
    /// project's environment has it.
    pub accelerated: bool,
    /// `prepare --at`: the migration targets `migrate` is run to, one after
    /// another (`app.name`, or a migration file's path, project-relative
    /// when inside the project); empty: fully migrated. Part of `key`
    /// (`Fingerprint::at`).
    pub at: Vec<String>,
}

impl Fingerprint {
    /// Relative path (with `/`) -> sha256 hex of the normalised content.
    pub fn migrations(&self) -> &BTreeMap<String, String> {
        &self.maps()[Class::Migration as usize]
    }

    pub fn key_inputs(&self) -> &BTreeMap<String, String> {
        &self.maps()[Class::Input as usize]
    }

    /// The migration packages' `__init__.py` (present) and sourceless `.pyc`
    /// migrations: what else decides which migrations Django loads.
    pub fn packages(&self) -> &BTreeMap<String, String> {
        &self.maps()[Class::Part as usize]
    }

    /// How many migration files the key covers.
    pub fn migration_count(&self) -> usize {
        self.files.get().iter(Class::Migration).len()
    }

    fn maps(&self) -> &[BTreeMap<String, String>; 3] {
        self.maps
            .get_or_init(|| Class::ALL.map(|c| self.files.get().map(c)))
    }

    /// The fingerprint of the database `migrate` reaches at `targets`, one
    /// after another, from these files: a snapshot of its own, so its key
    /// covers the targets as well as the files, and never equals the full
    /// key (the fields are tagged apart from `key_of`'s, under a format
    /// name of their own). No targets: the full migration, unchanged.
    pub fn at(mut self, targets: Vec<String>) -> Fingerprint {
        if targets.is_empty() {
            return self;
        }
        self.key = at_key(&self.key, &targets);
        self.at = targets;
        self
    }

    /// First 16 hex chars: the template database suffix.
    pub fn short(&self) -> &str {
        self.key.short()
    }

    /// The current key of another alias of the same project (the same
    /// files, hashed once): what `ls` and `gc` treat as current besides
    /// this one's.
    pub fn key_for_alias(&self, spec: &KeySpec, alias: &str) -> Key {
        let key = key_over(
            &spec.salt,
            spec.settings_module.as_deref(),
            alias,
            self.files.get(),
        );
        accelerated_key(key, spec.accelerated)
    }

    /// The current keys of this alias and of every alias in `aliases`.
    pub fn current_keys<'a>(
        &self,
        spec: &KeySpec,
        aliases: impl IntoIterator<Item = &'a str>,
    ) -> std::collections::BTreeSet<Key> {
        let mut keys: std::collections::BTreeSet<Key> = aliases
            .into_iter()
            .map(|alias| self.key_for_alias(spec, alias))
            .collect();
        keys.insert(self.key.clone());
        keys
    }
}

/// What the key is computed from: the project dir and which files count.
#[derive(Debug, Clone)]
pub struct KeySpec {
    pub root: PathBuf,
    /// Globs of migration files, relative to `root`.
    pub migrations: Vec<String>,
    pub exclude: Vec<String>,
    /// Globs of key-input files (lock files, dependency lists).
    pub inputs: Vec<String>,
    pub salt: String,
    /// The settings module, when one is given explicitly.
    pub settings_module: Option<String>,
    /// The database alias the snapshot is migrated for (`migrate
    /// --database ALIAS`): the routers give each alias its own schema.
    pub alias: String,
    /// `build-accelerator`: the key carries `ACCELERATED_FORMAT`.
    pub accelerated: bool,
    /// Where the hashes of the last run are remembered with each file's
    /// stat (`statcache`), so that only what changed is read again (issue
    /// #24); None: every file is read.
    pub stat_cache: Option<PathBuf>,
}

/// Which project-relative paths are migration files the key hashes.
pub struct MigrationGlobs {
    migrations: GlobSet,
    exclude: GlobSet,
}

impl MigrationGlobs {
    pub fn new(spec: &KeySpec) -> Result<MigrationGlobs> {
        Ok(MigrationGlobs {
            migrations: globset(&spec.migrations, "migrations")?,
            exclude: globset(&spec.exclude, "exclude")?,
        })
    }

    pub fn is_match(&self, rel: &str) -> bool {
        self.migrations.is_match(rel)
            && !rel.ends_with("/__init__.py")
            && rel != "__init__.py"
            && !self.exclude.is_match(rel)
    }

    /// What else in a migrations package decides what Django loads: that
    /// its `__init__.py` exists (without it, the app counts as unmigrated)
    /// and a sourceless `.pyc` migration (Django loads those too).
    fn is_package_part(&self, rel: &str) -> bool {
        if let Some(dir) = rel.strip_suffix("/__init__.py") {
            return self.is_match(&format!("{dir}/0001_probe.py"));
        }
        rel.strip_suffix(".pyc")
            .is_some_and(|stem| self.is_match(&format!("{stem}.py")))
    }
}

pub fn compute(spec: &KeySpec) -> Result<Fingerprint> {
    compute_noting_links(spec).map(|(fp, _)| fp)
}

/// `compute` for async code: hashing reads every migration file, so it
/// runs on the blocking pool, leaving the runtime free for the connection
/// tasks and Ctrl-C (issue #23).
pub async fn compute_async(spec: &KeySpec) -> Result<Fingerprint> {
    let spec = spec.clone();
    crate::error::blocking("hashing the migrations", move || compute(&spec)).await?
}

/// `compute`, and the links that point at nothing but that a glob matches
/// (relative paths, sorted): left out of the key, for the caller to name.
///
/// Such a link cannot change what Django loads (it could not import it
/// either), and real checkouts have them (issue #22: one in a templates dir
/// stopped `migsnap key`), so it is no reason to fail. One no glob matches
/// is none of the key's business and is not reported.
pub fn compute_noting_links(spec: &KeySpec) -> Result<(Fingerprint, Vec<String>)> {
    let root = spec.root.as_path();

    // Taken before any file is read: the stat cache trusts a recorded hash
    // only for files that had settled before the run that recorded it.
    let started_ns = statcache::now_ns();
    let scope = stat_scope(root);
    // The last walk's record, when nothing it saw has changed: no walk.
    let record = spec.stat_cache.as_deref().map(walkrecord::path_beside);
    let config = walk_config(spec, &scope);
    if let Some(r) = record
        .as_deref()
        .and_then(|p| walkrecord::replay(p, root, &config))
    {
        // The key as the walk derived it, when what else it depends on is
        // the same (a settings module or salt of another run is not).
        let key = (r.derived.from == key_basis(spec)).then(|| Key::from_digest(&r.derived.value));
        return Ok((finish(spec, Files::recorded(r.files), key), r.dangling));
    }
    // Compiled only for a walk: a record is replayed only under the same
    // globs (`walk_config`), which compiled when it was recorded, by this
    // version.
    let migrations = MigrationGlobs::new(spec)?;
    let inputs = globset(&spec.inputs, "key-inputs")?;
    let recording = record.as_ref().map(|_| Arc::new(Recording::default()));
    // The walker waits for ever on a FIFO named like an ignore file; the
    // root's are read before any filter sees a directory.
    if let Some(path) = odd_ignore_file(root) {
        return Err(FilesError::NotAFile { path }.into());
    }
    let odd: Arc<Mutex<Option<PathBuf>>> = Arc::default();

    let found: Mutex<Vec<(Class, String, String)>> = Mutex::default();
    let failure: Mutex<Option<Error>> = Mutex::default();
    let dangling: Mutex<Vec<String>> = Mutex::default();
    let remembered = spec
        .stat_cache
        .as_deref()
        .map(|path| Remembered::load(path, &scope));

    // `ignore` gives us .gitignore handling and a parallel walker; hidden
    // directories (.venv, .git, .tox) are skipped by its defaults.
    // Links are followed: a migration file (or package) linked in from
    // elsewhere is read by Django all the same. The walker detects loops.
    // The ignore files that count are the project's own (`.gitignore`,
    // `.ignore`, in the tree): not the user's global excludes nor
    // `.git/info/exclude`, which live outside what a checkout carries, so
    // a laptop and CI get the same key from the same tree; and none above
    // the project dir, which anyone may write (a `/tmp/.gitignore` of
    // `*.py` took every migration of every project under /tmp out of its
    // key, so a changed migration kept serving the old snapshot). The
    // walk's record watches every file that shapes the walk.
    let in_record = recording.clone();
    let odd_in_tree = odd.clone();
    // migsnap's own cache dir, when it is inside the project: nothing in
    // it is the project's, and its files change on every build (so a walk
    // that listed it could never be replayed, and a key-input glob such as
    // `**/*.json` would take in its manifests).
    let own = spec
        .stat_cache
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf);
    // Left out only when it is not one of the project's packages (a
    // `cache-dir` set to an app's directory by mistake): its migrations
    // would leave the key without a word.
    if let Some(dir) = own.as_deref().filter(|d| *d != root && d.starts_with(root)) {
        if dir.join("__init__.py").exists() {
            return Err(FilesError::CacheDirIsAPackage {
                dir: dir.to_path_buf(),
            }
            .into());
        }
    }
    // The ignore files are read as custom ones: with `git_ignore` or
    // `ignore` on, the walker opens those of every ancestor even with
    // `parents` off (it only leaves their rules out), so a FIFO planted
    // there hung every key. A later name wins over an earlier one, as
    // `.ignore` does over `.gitignore` by default.
    let walker = ignore::WalkBuilder::new(root)
        .require_git(false)
        .parents(false)
        .git_ignore(false)
        .ignore(false)
        .add_custom_ignore_filename(walkrecord::IGNORE_FILES[0])
        .add_custom_ignore_filename(walkrecord::IGNORE_FILES[1])
        .git_global(false)
        .git_exclude(false)
        .follow_links(true)
        .filter_entry(move |e| {
            let is_dir = e.file_type().is_some_and(|t| t.is_dir());
            if !is_dir {
                return true;
            }
            let skipped = e
                .file_name()
                .to_str()
                .is_some_and(|n| SKIP_DIRS.contains(&n))
                || own.as_deref() == Some(e.path());
            if skipped {
                return false;
            }
            let cfg = e.path().join("pyvenv.cfg");
            let venv = match &in_record {
                Some(rec) => rec.observe(&cfg),
                None => cfg.exists(),
            };
            if venv {
                // Its listing says whether it still holds one.
                if let Some(rec) = &in_record {
                    let stat = std::fs::metadata(e.path()).ok().map(|m| Stat::of(&m));
                    rec.dir(e.path(), stat);
                }
                return false;
            }
            if let Some(path) = odd_ignore_file(e.path()) {
                // Not entered (the walker would read it); the walk fails.
                *odd_in_tree.lock().unwrap_or_else(|p| p.into_inner()) = Some(path);
                return false;
            }
            true
        })
        .build_parallel();
    {
        let (migrations, inputs, found, failure, dangling, remembered, recording) = (
            &migrations,
            &inputs,
            &found,
            &failure,
            &dangling,
            remembered.as_ref(),
            recording.as_deref(),
        );
        walker.run(|| {
            // One buffer per walker thread: reading into it skips the statx and
            // the allocation std::fs::read makes for every one of 10,000 files.
            let mut buf = Vec::with_capacity(64 * 1024);
            let mut dirs = DirCache::default();
            Box::new(move |entry| {
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(e) if is_loop(&e) => return ignore::WalkState::Continue,
                    Err(e) if dangling_link(&e).is_some() => {
                        if let (Some(rec), Some(link)) = (recording, dangling_link(&e)) {
                            rec.dangling(link);
                        }
                        // Nothing to hash: left out, and named only when a
                        // glob wanted it.
                        let wanted = dangling_link(&e)
                            .and_then(|path| relative(root, path))
                            .filter(|rel| {
                                migrations.is_match(rel)
                                    || inputs.is_match(rel)
                                    || migrations.is_package_part(rel)
                            });
                        if let Some(rel) = wanted {
                            dangling.lock().unwrap_or_else(|p| p.into_inner()).push(rel);
                        }
                        return ignore::WalkState::Continue;
                    }
                    Err(e) => {
                        *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(walk_error(e));
                        return ignore::WalkState::Quit;
                    }
                };
                if entry.file_type().is_some_and(|t| t.is_dir()) {
                    if let Some(e) = unreadable_ignore_file(entry.path()) {
                        *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        return ignore::WalkState::Quit;
                    }
                    if let Some(rec) = recording {
                        rec.dir(entry.path(), dirs.stat(entry.path()));
                    }
                    return ignore::WalkState::Continue;
                }
                if !entry.file_type().is_some_and(|t| t.is_file()) {
                    return ignore::WalkState::Continue;
                }
                let Some(rel) = relative(root, entry.path()) else {
                    return ignore::WalkState::Continue;
                };
                let is_migration = migrations.is_match(&rel);
                let is_input = !is_migration && inputs.is_match(&rel);
                let is_part = !is_migration && !is_input && migrations.is_package_part(&rel);
                if !is_migration && !is_input && !is_part {
                    return ignore::WalkState::Continue;
                }
                // A migrations package's __init__.py counts by its presence
                // only: what is in it does not change what Django loads.
                let kind = match is_input && is_pyproject(&rel) {
                    true => HashKind::PyprojectDeps,
                    false => HashKind::Content,
                };
                let present = is_part && rel.ends_with("/__init__.py");
                let hashed = if present {
                    Ok(("present".to_string(), None))
                } else if let Some(remembered) = remembered {
                    remembered.hash(entry.path(), &rel, kind, &mut dirs, &mut buf)
                } else {
                    hash_as(entry.path(), kind, &mut buf).map(|h| (h, None))
                };
                let class = match (is_migration, is_input) {
                    (true, _) => Class::Migration,
                    (false, true) => Class::Input,
                    (false, false) => Class::Part,
                };
                match hashed {
                    Ok((h, stat)) => {
                        if let Some(rec) = recording {
                            record_file(rec, class, present, kind, &rel, &h, stat);
                        }
                        found
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((class, rel, h));
                        ignore::WalkState::Continue
                    }
                    Err(e) => {
                        *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        ignore::WalkState::Quit
                    }
                }
            })
        });
    }
    if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    if let Some(path) = odd.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(FilesError::NotAFile { path }.into());
    }
    if let (Some(remembered), Some(path)) = (remembered, &spec.stat_cache) {
        remembered.save(path, &scope, started_ns);
    }
    let mut dangling = dangling.into_inner().unwrap_or_else(|p| p.into_inner());
    dangling.sort();
    let files = KeyFiles::from_unsorted(found.into_inner().unwrap_or_else(|p| p.into_inner()));
    let stock = key_over(
        &spec.salt,
        spec.settings_module.as_deref(),
        &spec.alias,
        &files,
    );
    let rec = recording.and_then(|r| Arc::try_unwrap(r).ok());
    // A key is always 64 hex digits; were it not, no record (a zero key
    // kept in one would be served by every replay).
    let value = crate::hash::unhex32(stock.as_str());
    if let (Some(rec), Some(path), Some(value)) = (rec, &record, value) {
        let derived = Derived {
            from: key_basis(spec),
            value,
        };
        rec.save(path, root, &config, started_ns, &dangling, derived);
    }
    Ok((finish(spec, Files::found(files), Some(stock)), dangling))
}

/// A key file for the walk's record; a content-hashed one without a stat
/// (it vanished between the walk and the stat) leaves no record.
fn record_file(
    rec: &Recording,
    class: Class,
    present: bool,
    kind: HashKind,
    rel: &str,
    hash: &str,
    stat: Option<Stat>,
) {
    let file = match (present, stat, crate::hash::unhex32(hash)) {
        (true, _, _) => walkrecord::File {
            class,
            hashed: Hashed::Present,
            rel: rel.to_string().into(),
            stat: Stat::default(),
            sha256: [0; 32],
        },
        (false, Some(stat), Some(sha256)) => walkrecord::File {
            class,
            hashed: Hashed::Content(kind),
            rel: rel.to_string().into(),
            stat,
            sha256,
        },
        _ => return rec.broken(),
    };
    rec.file(file);
}

/// What the walk's result depends on besides the tree: a record made
/// under other settings is not this walk's.
fn walk_config(spec: &KeySpec, scope: &str) -> [u8; 32] {
    let mut fields = Fields::default();
    let mut field = |tag: &[u8], value: &[u8]| fields.add(tag, value);
    field(b"S", scope.as_bytes());
    // Another version may read globs or ignore rules otherwise.
    field(b"V", env!("CARGO_PKG_VERSION").as_bytes());
    for (tag, globs) in [
        (b"M", &spec.migrations),
        (b"E", &spec.exclude),
        (b"I", &spec.inputs),
    ] {
        for g in globs {
            field(tag, g.as_bytes());
        }
    }
    for d in SKIP_DIRS.iter().chain(walkrecord::IGNORE_FILES) {
        field(b"D", d.as_bytes());
    }
    fields.digest()
}

/// The fingerprint of the key files found, whose stock key (before
/// `accelerated_key`) may be known already.
fn finish(spec: &KeySpec, files: Files, stock: Option<Key>) -> Fingerprint {
    let key = stock.unwrap_or_else(|| {
        key_over(
            &spec.salt,
            spec.settings_module.as_deref(),
            &spec.alias,
            files.get(),
        )
    });
    let key = accelerated_key(key, spec.accelerated);
    Fingerprint {
        key,
        files,
        maps: OnceLock::new(),
        salt_sha256: hash_normalized(spec.salt.as_bytes()),
        alias: spec.alias.clone(),
        accelerated: spec.accelerated,
        at: Vec::new(),
    }
}

/// `key` as the accelerated path's, when `on`: the stock key under a format
/// name of its own (as `at_key` does), so the two never collide and a stock
/// key is what it always was.
pub fn accelerated_key(key: Key, on: bool) -> Key {
    if !on {
        return key;
    }
    let mut fields = Fields::default();
    for (tag, s) in [(b"F", ACCELERATED_FORMAT), (b"K", key.as_str())] {
        fields.add(tag, s.as_bytes());
    }
    Key::from_digest(&fields.digest())
}

/// The key of the database `migrate` reaches at `targets` (non-empty),
/// one after another, from the files whose full key is `full`.
pub fn at_key(full: &Key, targets: &[String]) -> Key {
    let mut fields = Fields::default();
    let mut field = |tag: &[u8], s: &str| fields.add(tag, s.as_bytes());
    field(b"F", AT_FORMAT);
    field(b"K", full.as_str());
    for t in targets {
        field(b"T", t);
    }
    Key::from_digest(&fields.digest())
}

/// Whether a migration target names a file (as `plan` and `prepare --at`
/// take them, and the shim tells them apart): a `/` in it, or `.py` at
/// its end; else it is `app.name`.
pub fn is_file_target(target: &str) -> bool {
    target.contains('/') || target.ends_with(".py")
}

/// A `prepare --at` target as its key covers it: a migration file inside
/// the project by its path relative to it (with `/`), so that every
/// checkout of the project shares the key; any other target as it is.
/// `target` is a path made absolute by the caller, or `app.name`.
pub fn at_target(project_dir: &Path, target: &str) -> String {
    if !is_file_target(target) {
        return target.to_string();
    }
    let canon = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    match canon(Path::new(target)).strip_prefix(canon(project_dir)) {
        Ok(rel) => rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/"),
        Err(_) => target.to_string(),
    }
}

/// The key over already-hashed files. Each field is length-prefixed so no
/// two different file sets serialise to the same bytes.
pub fn key_of<'a>(
    salt: &str,
    settings_module: Option<&str>,
    alias: &str,
    migrations: &'a BTreeMap<String, String>,
    inputs: &'a BTreeMap<String, String>,
    packages: &'a BTreeMap<String, String>,
) -> Key {
    let strs = |(p, h): (&'a String, &'a String)| (p.as_str(), h.as_str());
    key_from(
        salt,
        settings_module,
        alias,
        [migrations, inputs, packages].map(|m| m.iter().map(strs)),
    )
}

/// The key files of a fingerprint: as the walk found them, or still in
/// the walk's record, read out the first time they are asked for.
#[derive(Debug, Clone, Default)]
struct Files {
    read: OnceLock<KeyFiles>,
    recorded: Option<RecordedFiles>,
}

impl Files {
    fn found(files: KeyFiles) -> Files {
        Files {
            read: OnceLock::from(files),
            recorded: None,
        }
    }

    fn recorded(files: RecordedFiles) -> Files {
        Files {
            read: OnceLock::new(),
            recorded: Some(files),
        }
    }

    fn get(&self) -> &KeyFiles {
        self.read.get_or_init(|| {
            self.recorded
                .as_ref()
                .map(RecordedFiles::key_files)
                .unwrap_or_default()
        })
    }
}

/// sha256 over tagged, length-prefixed fields, as every digest of the key
/// is made: no two lists of fields hash the same bytes.
#[derive(Default)]
struct Fields(Sha256);

impl Fields {
    fn add(&mut self, tag: &[u8], value: &[u8]) {
        self.0.update(tag);
        self.0.update((value.len() as u64).to_le_bytes());
        self.0.update(value);
    }

    fn digest(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// What the stock key depends on besides the files (`key_from`'s fields
/// before them): a walk's record keeps the key it derived under this.
fn key_basis(spec: &KeySpec) -> [u8; 32] {
    let mut fields = Fields::default();
    let mut field = |tag: &[u8], s: &str| fields.add(tag, s.as_bytes());
    field(b"F", KEY_FORMAT);
    field(b"S", &spec.salt);
    if let Some(module) = &spec.settings_module {
        field(b"D", module);
    }
    field(b"A", &spec.alias);
    fields.digest()
}

/// `key_of` over the files as found: the same key, no maps made.
fn key_over(salt: &str, settings_module: Option<&str>, alias: &str, files: &KeyFiles) -> Key {
    debug_assert!(files.in_order());
    key_from(
        salt,
        settings_module,
        alias,
        Class::ALL.map(|class| files.iter(class)),
    )
}

/// The key of (path, hash) pairs in path order, per class (migrations,
/// inputs, packages).
fn key_from<'a>(
    salt: &str,
    settings_module: Option<&str>,
    alias: &str,
    files: [impl Iterator<Item = (&'a str, &'a str)>; 3],
) -> Key {
    let mut fields = Fields::default();
    let mut field = |tag: &[u8], s: &str| fields.add(tag, s.as_bytes());
    field(b"F", KEY_FORMAT);
    field(b"S", salt);
    // The settings module decides INSTALLED_APPS: two of them over the same
    // files are two snapshots, not one rebuilt at every switch.
    if let Some(module) = settings_module {
        field(b"D", module);
    }
    // Another alias is another schema (the routers decide what lands
    // where). `default` adds nothing, so its keys are what they were before
    // aliases were known.
    if alias != DEFAULT_ALIAS {
        field(b"A", alias);
    }
    for (tag, files) in [b"M", b"I", b"P"].into_iter().zip(files) {
        for (path, hash) in files {
            field(tag, path);
            field(b"H", hash);
        }
    }
    Key::from_digest(&fields.digest())
}

/// The hash of one file of `kind`: of its content with CRLF folded to LF
/// (so a Windows checkout with autocrlf shares snapshots with Linux CI), or
/// of pyproject.toml's dependency tables.
fn hash_as(path: &Path, kind: HashKind, buf: &mut Vec<u8>) -> Result<String> {
    read_into(path, buf)?;
    Ok(match kind {
        HashKind::Content => hash_normalized(buf),
        HashKind::PyprojectDeps => hash_pyproject(buf),
    })
}

/// What the stat cache's hashes depend on besides the files: the key
/// format, the pyproject canonical form and the root the paths are under.
fn stat_scope(root: &Path) -> String {
    format!(
        "{KEY_FORMAT}\n{PYPROJECT_CANONICAL}\n{}",
        root.to_string_lossy()
    )
}

/// The stat cache as one `compute` uses it: the hashes loaded, which of
/// them this run used, and the files it hashed anew, to write back when
/// something changed.
struct Remembered {
    loaded: StatCache,
    /// Entry i of `loaded` was used: its file is as it was. A flag rather
    /// than a copy of the entry, since on a warm run every file is one and
    /// nothing is written.
    used: Vec<AtomicBool>,
    /// The files read (not in the cache, changed, or not yet settled).
    hashed: Mutex<Vec<statcache::Entry>>,
    /// A file was read: the cache is written again.
    stale: AtomicBool,
}

impl Remembered {
    fn load(path: &Path, scope: &str) -> Remembered {
        let loaded = StatCache::load(path, scope);
        Remembered {
            used: (0..loaded.len()).map(|_| AtomicBool::new(false)).collect(),
            loaded,
            hashed: Mutex::default(),
            stale: Default::default(),
        }
    }

    /// The file's hash: the one recorded when its stat has not changed
    /// since, else read and hashed (and recorded with the stat taken
    /// before the read, so that a write during it shows next time).
    fn hash(
        &self,
        path: &Path,
        rel: &str,
        kind: HashKind,
        dirs: &mut DirCache,
        buf: &mut Vec<u8>,
    ) -> Result<(String, Option<Stat>)> {
        let stat = dirs.stat(path);
        if let Some(i) = stat.and_then(|s| self.loaded.find(kind, rel, &s)) {
            self.used[i].store(true, Ordering::Relaxed);
            return Ok((crate::hash::hex(&self.loaded.sha256_at(i)), stat));
        }
        self.stale.store(true, Ordering::Relaxed);
        let hash = hash_as(path, kind, buf)?;
        if let (Some(stat), Some(sha256)) = (stat, crate::hash::unhex32(&hash)) {
            self.hashed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(statcache::Entry {
                    kind,
                    path: rel.to_string(),
                    stat,
                    sha256,
                });
        }
        Ok((hash, stat))
    }

    /// Write the cache back if this run hashed a file or the set of files
    /// changed; nothing to write on a run that found everything as it was.
    fn save(self, path: &Path, scope: &str, started_ns: i64) {
        let used: Vec<usize> = (self.used.iter().enumerate())
            .filter(|(_, u)| u.load(Ordering::Relaxed))
            .map(|(i, _)| i)
            .collect();
        if !self.stale.into_inner() && used.len() == self.loaded.len() {
            return;
        }
        let mut recorded = self.hashed.into_inner().unwrap_or_else(|p| p.into_inner());
        recorded.extend(used.into_iter().filter_map(|i| self.loaded.entry_at(i)));
        statcache::save(path, scope, started_ns, &mut recorded);
    }
}

fn read_into(path: &Path, buf: &mut Vec<u8>) -> Result<()> {
    use std::io::Read;
    buf.clear();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(buf))
        .map(|_| ())
        .map_err(|source| {
            FilesError::Unreadable {
                path: path.to_path_buf(),
                source,
            }
            .into()
        })
}

/// A project file or directory the key cannot be computed without, or a
/// glob that cannot be read, as data (the binary says how to fix it).
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("cannot read `{}`", .path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `path` is None when the walker does not say which directory.
    #[error("cannot read {} while looking for migrations", which(.path))]
    Walk {
        path: Option<PathBuf>,
        source: ignore::Error,
    },
    #[error("invalid glob `{glob}` in `{setting}`")]
    BadGlob {
        glob: String,
        setting: String,
        source: globset::Error,
    },
    /// The cache dir is inside the project and one of its packages.
    #[error("the cache dir `{}` is one of the project's Python packages (it has an `__init__.py`), and the key leaves the cache dir out", .dir.display())]
    CacheDirIsAPackage { dir: PathBuf },
    /// An ignore file the walk would read that is no regular file, or one
    /// too large to be rules (`IGNORE_FILE_MAX`).
    #[error("`{}` is not a regular file of at most 1 MiB, and the key's walk reads it whole as ignore rules", .path.display())]
    NotAFile { path: PathBuf },
    /// Each glob of `setting` parsed, but not all of them together.
    #[error("invalid globs in `{setting}`")]
    Globs {
        setting: String,
        source: globset::Error,
    },
}

fn which(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!("`{}`", p.display()),
        None => "a directory".to_string(),
    }
}

impl crate::error::Typed for FilesError {
    fn kind(&self) -> Kind {
        Kind::Usage
    }
}

fn is_pyproject(rel: &str) -> bool {
    rel == "pyproject.toml" || rel.ends_with("/pyproject.toml")
}

/// The tables of pyproject.toml that say what gets installed, and so which
/// third-party migrations Django loads: nothing else in it (pytest's
/// options, linters', migsnap's own, which the key covers where they
/// matter) can change what `migrate` does, and enabling the pytest plugin
/// there must not throw every snapshot away.
const PYPROJECT_DEPENDENCY_TABLES: &[&[&str]] = &[
    &["build-system"],
    &["project", "dependencies"],
    &["project", "optional-dependencies"],
    &["dependency-groups"],
    &["tool", "poetry", "dependencies"],
    &["tool", "poetry", "dev-dependencies"],
    &["tool", "poetry", "group"],
    &["tool", "poetry", "extras"],
    &["tool", "poetry", "source"],
    &["tool", "uv"],
    &["tool", "pdm", "dependencies"],
    &["tool", "pdm", "dev-dependencies"],
    &["tool", "pdm", "resolution"],
    &["tool", "pdm", "source"],
    &["tool", "pipenv"],
];

/// The first line of what `hash_pyproject` hashes: names its form.
const PYPROJECT_CANONICAL: &str = "pyproject-dependencies-v1";

/// The hash of pyproject.toml's dependency tables: each present one, by its
/// path, in a canonical form (keys sorted, so reformatting or reordering
/// them changes nothing). A file that is not TOML is hashed whole, as
/// before: nothing is assumed about what it holds.
fn hash_pyproject(bytes: &[u8]) -> String {
    let Some(doc) = std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
    else {
        return hash_normalized(bytes);
    };
    let mut canonical = format!("{PYPROJECT_CANONICAL}\n");
    for path in PYPROJECT_DEPENDENCY_TABLES {
        let mut value = None;
        let mut table = Some(&doc);
        for part in *path {
            value = table.and_then(|t| t.get(*part));
            table = value.and_then(toml::Value::as_table);
        }
        if let Some(value) = value {
            canonical.push_str(&path.join("."));
            canonical.push('=');
            canonical_toml(value, &mut canonical);
            canonical.push('\n');
        }
    }
    hash_normalized(canonical.as_bytes())
}

/// A TOML value as JSON-like text with sorted keys and quoted strings, so
/// equal values always serialise the same and no two differ only in layout.
fn canonical_toml(value: &toml::Value, out: &mut String) {
    let quote = |s: &str, out: &mut String| {
        out.push_str(&serde_json::Value::String(s.to_string()).to_string());
    };
    match value {
        toml::Value::String(s) => quote(s, out),
        toml::Value::Integer(i) => out.push_str(&i.to_string()),
        toml::Value::Float(f) => out.push_str(&f.to_string()),
        toml::Value::Boolean(b) => out.push_str(&b.to_string()),
        toml::Value::Datetime(d) => quote(&d.to_string(), out),
        toml::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_toml(item, out);
            }
            out.push(']');
        }
        toml::Value::Table(table) => {
            let mut entries: Vec<_> = table.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                quote(k, out);
                out.push(':');
                canonical_toml(v, out);
            }
            out.push('}');
        }
    }
}

/// A symlink loop: the walker noticed and stopped there, nothing to hash.
fn is_loop(e: &ignore::Error) -> bool {
    match e {
        ignore::Error::Loop { .. } => true,
        ignore::Error::WithPath { err, .. }
        | ignore::Error::WithDepth { err, .. }
        | ignore::Error::WithLineNumber { err, .. } => is_loop(err),
        ignore::Error::Partial(errs) => errs.iter().all(is_loop),
        _ => false,
    }
}

/// The link a walk error is about, when all that is wrong is that the link
/// points at nothing (or into a loop of links): the walker follows links,
/// so it stats through each one and fails there. An unreadable file or
/// directory is not this, and stays an error.
fn dangling_link(e: &ignore::Error) -> Option<&Path> {
    match e {
        ignore::Error::WithPath { path, err } if unresolvable(err) && is_symlink(path) => {
            Some(path)
        }
        ignore::Error::WithDepth { err, .. } => dangling_link(err),
        _ => None,
    }
}

fn unresolvable(e: &ignore::Error) -> bool {
    match e {
        ignore::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::NotFound
                || matches!(io.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR))
        }
        ignore::Error::WithDepth { err, .. } => unresolvable(err),
        _ => false,
    }
}

/// An ignore file in `dir` that is there but may not be read: `ignore`
/// walks on as if it were empty (it drops the error), so the key would
/// depend on who runs it. An error instead, like an unreadable directory.
/// Opened without waiting on a FIFO (O_NONBLOCK), and only to ask.
fn unreadable_ignore_file(dir: &Path) -> Option<Error> {
    use std::os::unix::fs::OpenOptionsExt;
    walkrecord::IGNORE_FILES.iter().find_map(|name| {
        let path = dir.join(name);
        let opened = std::fs::File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path);
        match opened {
            Err(source) if source.kind() == std::io::ErrorKind::PermissionDenied => {
                Some(FilesError::Unreadable { path, source }.into())
            }
            _ => None,
        }
    })
}

/// An ignore file in `dir` that is there but no regular file (a FIFO, a
/// socket, a device, a directory) or larger than `IGNORE_FILE_MAX`,
/// through links as the walker opens it: the walker would wait for ever on
/// a FIFO, and reads a file whole (a 3 GB one took 22 GB of memory).
fn odd_ignore_file(dir: &Path) -> Option<PathBuf> {
    walkrecord::IGNORE_FILES
        .iter()
        .map(|name| dir.join(name))
        .find(|path| {
            std::fs::metadata(path).is_ok_and(|m| !m.is_file() || m.len() > IGNORE_FILE_MAX)
        })
}

/// The largest ignore file the walk reads (real ones are a few KB).
const IGNORE_FILE_MAX: u64 = 1 << 20;

/// Looked at without following it: only the link itself says it is one.
fn is_symlink(path: &Path) -> bool {
    path.symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink())
}

/// An unreadable directory would hide its migrations from the key: an
/// error, like an unreadable file, never a silent skip.
fn walk_error(e: ignore::Error) -> Error {
    let path = match &e {
        ignore::Error::WithPath { path, .. } => Some(path.clone()),
        _ => None,
    };
    FilesError::Walk { path, source: e }.into()
}

fn relative(root: &Path, path: &Path) -> Option<String> {
    // The walker's paths are `root` joined with one name per level: the
    // rest after `root/` is then the relative path as it is, without
    // splitting it into components and joining them again (a few percent
    // of a warm `key`). Anything else takes the long way.
    let (root_bytes, bytes) = (root.as_os_str().as_bytes(), path.as_os_str().as_bytes());
    if let Some(rest) = bytes
        .strip_prefix(root_bytes)
        .and_then(|r| r.strip_prefix(b"/"))
        .filter(|_| !root_bytes.ends_with(b"/"))
    {
        let clean = !rest.is_empty()
            && rest
                .split(|&b| b == b'/')
                .all(|part| !part.is_empty() && part != b"." && part != b"..");
        if clean {
            return std::str::from_utf8(rest).ok().map(str::to_string);
        }
    }
    let rel = path.strip_prefix(root).ok()?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    Some(parts?.join("/"))
}

fn globset(patterns: &[String], what: &str) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let glob = globset::GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map_err(|source| FilesError::BadGlob {
                glob: p.clone(),
                setting: what.to_string(),
                source,
            })?;
        b.add(glob);
    }
    b.build().map_err(|source| {
        FilesError::Globs {
            setting: what.to_string(),
            source,
        }
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::hang::{mkfifo, within};

    /// The short way and the long way give the same relative path.
    #[test]
    fn a_relative_path_is_the_same_by_bytes_or_by_components() {
        let long = |root: &Path, path: &Path| -> Option<String> {
            let rel = path.strip_prefix(root).ok()?;
            let parts: Option<Vec<&str>> =
                rel.components().map(|c| c.as_os_str().to_str()).collect();
            Some(parts?.join("/"))
        };
        for (root, path) in [
            ("/p", "/p/app/migrations/0001_a.py"),
            ("/p/", "/p/app/x.py"),
            ("/p", "/p//app/./x.py"),
            ("/p", "/p/a/../x.py"),
            ("/p", "/pq/x.py"),
            ("/p", "/p"),
            ("/p", "/p/x.py/"),
            (".", "./a/b.py"),
        ] {
            let (root, path) = (Path::new(root), Path::new(path));
            assert_eq!(
                relative(root, path),
                long(root, path),
                "{path:?} under {root:?}"
            );
        }
    }

    /// `build-accelerator` gives the same files a key of their own, and
    /// leaves the stock key as it was.
    #[test]
    fn an_accelerated_key_is_its_own_and_the_stock_key_is_unchanged() {
        let stock = Key::from_digest(&[7; 32]);
        assert_eq!(accelerated_key(stock.clone(), false), stock);
        let fast = accelerated_key(stock.clone(), true);
        assert_ne!(fast, stock);
        assert_eq!(
            fast,
            accelerated_key(stock.clone(), true),
            "a function of the key"
        );
        assert_ne!(fast, accelerated_key(Key::from_digest(&[8; 32]), true));
    }

    #[test]
    fn an_at_key_covers_the_targets_in_order_and_is_never_the_full_key() {
        let fp = Fingerprint {
            key: Key::from_digest(&[7; 32]),
            files: Files::default(),
            maps: OnceLock::new(),
            salt_sha256: String::new(),
            alias: DEFAULT_ALIAS.into(),
            accelerated: false,
            at: vec![],
        };
        let at = |t: &[&str]| fp.clone().at(t.iter().map(|s| s.to_string()).collect());
        assert_eq!(at(&[]).key, fp.key, "no targets: the full key");
        let one = at(&["catalog.0002"]);
        assert_ne!(one.key, fp.key);
        assert_eq!(one.at, ["catalog.0002"]);
        assert_eq!(
            one.key,
            at(&["catalog.0002"]).key,
            "a function of its inputs"
        );
        assert_ne!(
            at(&["a.1", "b.1"]).key,
            at(&["b.1", "a.1"]).key,
            "order counts"
        );
        assert_ne!(
            at(&["a.1b.1"]).key,
            at(&["a.1", "b.1"]).key,
            "length-delimited"
        );
        let other_files = Fingerprint {
            key: Key::from_digest(&[8; 32]),
            ..fp.clone()
        };
        assert_ne!(
            other_files.at(vec!["catalog.0002".into()]).key,
            one.key,
            "the files count too"
        );
    }

    #[test]
    fn key_depends_on_path_content_salt_and_kind() {
        let m = |p: &str, h: &str| BTreeMap::from([(p.to_string(), h.to_string())]);
        let none = BTreeMap::new();
        let base = key_of(
            "",
            None,
            "default",
            &m("a/migrations/0001.py", "x"),
            &none,
            &none,
        );
        assert_ne!(
            base,
            key_of(
                "",
                None,
                "default",
                &m("a/migrations/0002.py", "x"),
                &none,
                &none
            )
        );
        assert_ne!(
            base,
            key_of(
                "",
                None,
                "default",
                &m("a/migrations/0001.py", "y"),
                &none,
                &none
            )
        );
        assert_ne!(
            base,
            key_of(
                "salt",
                None,
                "default",
                &m("a/migrations/0001.py", "x"),
                &none,
                &none
            )
        );
        assert_ne!(
            base,
            key_of(
                "",
                None,
                "default",
                &none,
                &m("a/migrations/0001.py", "x"),
                &none
            )
        );
        assert_ne!(
            base,
            key_of(
                "",
                Some("s.test"),
                "default",
                &m("a/migrations/0001.py", "x"),
                &none,
                &none
            )
        );
        assert_eq!(
            base,
            key_of(
                "",
                None,
                "default",
                &m("a/migrations/0001.py", "x"),
                &none,
                &none
            )
        );
        // A migrations package without __init__.py is loaded differently.
        assert_ne!(
            base,
            key_of(
                "",
                None,
                "default",
                &m("a/migrations/0001.py", "x"),
                &none,
                &m("a/migrations/__init__.py", "present")
            )
        );
        // Each alias is its own snapshot.
        assert_ne!(
            base,
            key_of(
                "",
                None,
                "replica",
                &m("a/migrations/0001.py", "x"),
                &none,
                &none
            )
        );
        assert_eq!(base.as_str().len(), 64);
    }

    #[test]
    fn only_the_dependency_tables_of_pyproject_count() {
        let base = r#"
[project]
name = "site"
dependencies = ["django>=4.2", "psycopg"]

[tool.pytest.ini_options]
DJANGO_SETTINGS_MODULE = "site.settings"
"#;
        let h = |text: &str| hash_pyproject(text.as_bytes());
        let plugin = base.replace(
            "[tool.pytest.ini_options]\n",
            "[tool.pytest.ini_options]\nmigsnap = true\n",
        );
        assert_eq!(h(base), h(&plugin), "pytest's options");
        let linted = format!("{base}\n[tool.ruff]\nline-length = 100\n");
        assert_eq!(h(base), h(&linted), "another tool's table");
        let renamed = base.replace("name = \"site\"", "name = \"site2\"");
        assert_eq!(h(base), h(&renamed), "the project's name");
        let reformatted = base.replace(
            "[\"django>=4.2\", \"psycopg\"]",
            "[\n    'django>=4.2',\n    'psycopg',\n]",
        );
        assert_eq!(
            h(base),
            h(&reformatted),
            "the same list, laid out otherwise"
        );
        let dep = base.replace("\"psycopg\"", "\"psycopg[binary]\"");
        assert_ne!(h(base), h(&dep), "a dependency");
        for table in [
            "[dependency-groups]\ndev = [\"pytest\"]\n",
            "[tool.poetry.group.dev.dependencies]\npytest = \"*\"\n",
            "[tool.uv]\ndev-dependencies = [\"pytest\"]\n",
            "[build-system]\nrequires = [\"setuptools\"]\n",
            "[project.optional-dependencies]\npg = [\"psycopg\"]\n",
            "[tool.pdm.dev-dependencies]\ntest = [\"pytest\"]\n",
        ] {
            assert_ne!(h(base), h(&format!("{base}\n{table}")), "{table}");
        }
        // Not TOML: the whole file, as any other key input.
        assert_eq!(h("[oops"), hash_normalized(b"[oops"));
    }

    #[test]
    fn a_link_to_nothing_is_left_out_and_named_only_when_a_glob_matches_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("canonical");
        let put = |rel: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            p
        };
        std::fs::write(put("app/migrations/0001_initial.py"), "x").expect("write");
        std::os::unix::fs::symlink("gone.py", put("app/migrations/0002_gone.py")).expect("link");
        std::os::unix::fs::symlink("missing.html", put("templates/base.html")).expect("link");
        std::os::unix::fs::symlink("self.py", put("app/migrations/self.py")).expect("link");
        let spec = KeySpec {
            root: root.clone(),
            migrations: vec!["**/migrations/*.py".into()],
            exclude: vec![],
            inputs: vec![],
            salt: String::new(),
            settings_module: None,
            alias: DEFAULT_ALIAS.into(),
            stat_cache: None,
            accelerated: false,
        };
        let (fp, dangling) = compute_noting_links(&spec).expect("no error for links to nothing");
        assert_eq!(
            fp.migrations().keys().collect::<Vec<_>>(),
            ["app/migrations/0001_initial.py"]
        );
        assert_eq!(
            dangling,
            ["app/migrations/0002_gone.py", "app/migrations/self.py"]
        );
    }

    /// A project of three migrations in a fresh dir, with a private cache
    /// dir beside it, and a spec that uses a stat cache there.
    fn cached_project() -> (tempfile::TempDir, KeySpec) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("proj");
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(root.join("app/migrations")).expect("mkdir");
        std::fs::create_dir(&cache).expect("mkdir");
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        for (name, text) in [
            ("0001_a.py", "one\n"),
            ("0002_b.py", "two\n"),
            ("__init__.py", ""),
        ] {
            std::fs::write(root.join("app/migrations").join(name), text).expect("write");
        }
        std::fs::write(
            root.join("pyproject.toml"),
            "[project]\ndependencies = [\"django\"]\n",
        )
        .expect("write");
        let spec = KeySpec {
            stat_cache: Some(crate::statcache::path_for(&cache, &root)),
            root,
            migrations: vec!["**/migrations/*.py".into()],
            exclude: vec![],
            inputs: vec!["pyproject.toml".into()],
            salt: String::new(),
            settings_module: None,
            alias: DEFAULT_ALIAS.into(),
            accelerated: false,
        };
        (dir, spec)
    }

    fn uncached(spec: &KeySpec) -> Key {
        let plain = KeySpec {
            stat_cache: None,
            ..spec.clone()
        };
        compute(&plain).expect("key").key
    }

    /// Rewrite the stat cache as a run that began well after every file's
    /// last change would have: every entry is then trusted, as on a warm
    /// run minutes after the last edit. `forge` may change the entries.
    fn settle(spec: &KeySpec, forge: impl Fn(&mut crate::statcache::Entry)) {
        let path = spec.stat_cache.as_deref().expect("a stat cache");
        let mut entries = Vec::new();
        let later = statcache::now_ns() + 10 * statcache::RACY_MARGIN_NS;
        let fp = compute(&KeySpec {
            stat_cache: None,
            ..spec.clone()
        })
        .expect("key");
        for (rel, hash) in fp.migrations().iter().chain(fp.key_inputs()) {
            let meta = std::fs::metadata(spec.root.join(rel)).expect("stat");
            let kind = match is_pyproject(rel) {
                true => HashKind::PyprojectDeps,
                false => HashKind::Content,
            };
            let mut e = statcache::Entry {
                kind,
                path: rel.clone(),
                stat: Stat::of(&meta),
                sha256: crate::hash::unhex32(hash).expect("hex"),
            };
            forge(&mut e);
            entries.push(e);
        }
        assert!(statcache::save(
            path,
            &stat_scope(&spec.root),
            later,
            &mut entries
        ));
    }

    #[test]
    fn the_stat_cache_gives_the_key_hashing_gives() {
        let (_dir, spec) = cached_project();
        let plain = uncached(&spec);
        assert_eq!(compute(&spec).expect("key").key, plain, "no cache yet");
        assert!(
            spec.stat_cache.as_deref().is_some_and(Path::exists),
            "written"
        );
        assert_eq!(compute(&spec).expect("key").key, plain, "from the cache");
        settle(&spec, |_| {});
        assert_eq!(
            compute(&spec).expect("key").key,
            plain,
            "every entry trusted"
        );

        // Edits after the cache was written: the key follows them.
        let migrations = spec.root.join("app/migrations");
        std::fs::write(migrations.join("0002_b.py"), "two, edited\n").expect("write");
        std::fs::write(migrations.join("0003_c.py"), "three\n").expect("write");
        std::fs::remove_file(migrations.join("0001_a.py")).expect("remove");
        let edited = uncached(&spec);
        assert_ne!(edited, plain);
        assert_eq!(compute(&spec).expect("key").key, edited, "a stale cache");
        assert_eq!(compute(&spec).expect("key").key, edited, "rewritten");
    }

    #[test]
    fn a_trusted_entry_is_used_and_a_changed_stat_is_not() {
        let (_dir, spec) = cached_project();
        let plain = uncached(&spec);
        // A settled cache that remembers another hash for 0001: used, so
        // the key is not the files' (the cache is read, not decorative).
        let lie = |e: &mut crate::statcache::Entry| {
            if e.path.ends_with("0001_a.py") {
                e.sha256 = [7; 32];
            }
        };
        settle(&spec, lie);
        assert_ne!(
            compute(&spec).expect("key").key,
            plain,
            "the entry was trusted"
        );

        // The same content length, the old mtime put back (`touch -d`,
        // `rsync -t`): the ctime moved, so the file is hashed again.
        settle(&spec, lie);
        let file = spec.root.join("app/migrations/0001_a.py");
        let mtime = std::fs::metadata(&file)
            .expect("stat")
            .modified()
            .expect("mtime");
        std::fs::write(&file, "ONE\n").expect("write");
        std::fs::File::options()
            .write(true)
            .open(&file)
            .and_then(|f| f.set_modified(mtime))
            .expect("restore the mtime");
        let now = std::fs::metadata(&file).expect("stat");
        assert_eq!(now.modified().expect("mtime"), mtime);
        assert_eq!(compute(&spec).expect("key").key, uncached(&spec));
        assert_ne!(uncached(&spec), plain);

        // The same stat, but recorded by a run that began right after the
        // last change (within the racy margin): hashed again, not trusted.
        let path = spec.stat_cache.as_deref().expect("a stat cache");
        let fp = compute(&KeySpec {
            stat_cache: None,
            ..spec.clone()
        })
        .expect("key");
        let mut entries: Vec<_> = fp
            .migrations()
            .keys()
            .map(|rel| statcache::Entry {
                kind: HashKind::Content,
                path: rel.clone(),
                stat: Stat::of(&std::fs::metadata(spec.root.join(rel)).expect("stat")),
                sha256: [9; 32],
            })
            .collect();
        assert!(statcache::save(
            path,
            &stat_scope(&spec.root),
            statcache::now_ns(),
            &mut entries
        ));
        assert_eq!(
            compute(&spec).expect("key").key,
            fp.key,
            "racy entries are hashed"
        );
    }

    /// The walk's record, rewritten as a run long after every change
    /// would have: all of it trusted. With `lie`, it remembers another
    /// hash for 0001: a key that differs from the files' own then tells
    /// the record was used.
    fn settle_record(spec: &KeySpec, lie: bool) {
        let path = walkrecord::path_beside(spec.stat_cache.as_deref().expect("a stat cache"));
        let later = statcache::now_ns() + 10 * statcache::RACY_MARGIN_NS;
        walkrecord::forge(&path, later, |files, derived| {
            if lie {
                for f in files.iter_mut().filter(|f| f.rel.ends_with("0001_a.py")) {
                    f.sha256 = [7; 32];
                }
                derived.value = [7; 32];
            }
        });
    }

    /// `change`, made while a settled record of `spec`'s tree is
    /// replayed (its key a lie that shows when it is taken), is seen: the
    /// key after it is the walk's, never the record's.
    fn assert_seen(spec: &KeySpec, what: &str, change: impl FnOnce()) {
        let before = uncached(spec);
        assert_eq!(compute(spec).expect("key").key, before, "{what}: recorded");
        settle_record(spec, true);
        assert_ne!(compute(spec).expect("key").key, before, "{what}: replayed");
        change();
        let after = uncached(spec);
        assert_ne!(after, before, "{what}: the change changes the key");
        assert_eq!(compute(spec).expect("key").key, after, "{what}: walked");
    }

    #[test]
    fn the_walks_record_is_used_when_nothing_changed_and_gives_the_walks_key() {
        let (_dir, spec) = cached_project();
        let plain = uncached(&spec);
        assert_eq!(compute(&spec).expect("key").key, plain, "the first walk");
        let path = walkrecord::path_beside(spec.stat_cache.as_deref().expect("a stat cache"));
        assert!(path.exists(), "the walk is recorded");
        // Just written: its stats have not settled, so it is not trusted.
        assert_eq!(compute(&spec).expect("key").key, plain);
        settle_record(&spec, false);
        let replayed = compute(&spec).expect("key");
        assert_eq!(replayed.key, plain, "replayed");
        // What is read out of the record when asked for is what the walk
        // found.
        let walked = compute(&KeySpec {
            stat_cache: None,
            ..spec.clone()
        })
        .expect("key");
        assert_eq!(replayed.migrations(), walked.migrations());
        assert_eq!(replayed.key_inputs(), walked.key_inputs());
        assert_eq!(replayed.packages(), walked.packages());
        assert!(!replayed.packages().is_empty(), "the __init__.py counts");
        assert_eq!(replayed.migration_count(), 2);
        assert_eq!(
            replayed.key_for_alias(&spec, "replica"),
            walked.key_for_alias(&spec, "replica")
        );
        settle_record(&spec, true);
        assert_ne!(
            compute(&spec).expect("key").key,
            plain,
            "the record was used"
        );
    }

    /// A tree large enough for the check on two threads: a change in
    /// either thread's share (the first files, the last files, a listed
    /// directory, a watched ignore file) is seen as on one thread.
    #[test]
    fn a_large_trees_record_is_checked_whole_on_two_threads() {
        type Change = fn(&Path);
        let changes: &[(&str, Change)] = &[
            ("the first file", |root| {
                std::fs::write(root.join("a/migrations/0000_m.py"), "edited\n").expect("write")
            }),
            ("the last file", |root| {
                std::fs::write(root.join("z/migrations/0299_m.py"), "edited\n").expect("write")
            }),
            ("a directory's listing", |root| {
                std::fs::write(root.join("a/migrations/0300_new.py"), "new\n").expect("write")
            }),
            ("an ignore file", |root| {
                std::fs::write(root.join(".gitignore"), "z/\n").expect("write")
            }),
        ];
        for (what, change) in changes {
            let (_dir, spec) = cached_project();
            for app in ["a", "z"] {
                let dir = spec.root.join(app).join("migrations");
                std::fs::create_dir_all(&dir).expect("mkdir");
                for i in 0..300 {
                    std::fs::write(dir.join(format!("{i:04}_m.py")), format!("{app}{i}\n"))
                        .expect("write");
                }
            }
            std::fs::write(spec.root.join(".gitignore"), "").expect("write");
            assert_seen(&spec, what, || change(&spec.root));
        }
    }

    /// Ignore files above the project dir are not the project's: anyone
    /// may write `/tmp/.gitignore`, and one of `*.py` took every migration
    /// of every project under /tmp out of its key.
    #[test]
    fn ignore_files_above_the_project_do_not_count() {
        let (dir, spec) = cached_project();
        let before = uncached(&spec);
        std::fs::write(dir.path().join(".gitignore"), "*.py\n").expect("write");
        std::fs::write(dir.path().join(".ignore"), "0002_b.py\n").expect("write");
        assert_eq!(uncached(&spec), before, "walked");
        assert_eq!(compute(&spec).expect("key").key, before, "recorded");
        // Not even opened: a FIFO there would hang the walk.
        std::fs::remove_file(dir.path().join(".ignore")).expect("rm");
        mkfifo(&dir.path().join(".ignore"));
        let walked = KeySpec {
            stat_cache: None,
            ..spec.clone()
        };
        let key = within("a walk below an ancestor's FIFO", move || {
            compute(&walked).map(|fp| fp.key)
        });
        assert_eq!(key.expect("a key"), before, "a FIFO above the root");
        // The project's own still count.
        std::fs::write(spec.root.join(".gitignore"), "0002_b.py\n").expect("write");
        assert_ne!(uncached(&spec), before, "the project's own .gitignore");
    }

    /// A FIFO named like an ignore file, at the root or deeper: the walker
    /// would wait on it for ever; the key is an error instead.
    #[test]
    fn an_ignore_file_that_is_a_fifo_is_an_error_not_a_hang() {
        for at in [".gitignore", "app/.ignore", "app/migrations/.gitignore"] {
            let (_dir, spec) = cached_project();
            mkfifo(&spec.root.join(at));
            let walked = spec.clone();
            let result = within(at, move || compute(&walked).map(|fp| fp.key));
            let e = result.expect_err("an error, not a key");
            assert!(
                e.to_string()
                    .contains(&format!("{at}` is not a regular file")),
                "{at}: {e}"
            );
        }
    }

    /// A cache dir set to one of the project's packages by mistake would
    /// take that package's migrations out of the key: an error instead.
    #[test]
    fn a_cache_dir_that_is_a_package_of_the_project_is_an_error() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, spec) = cached_project();
        let app = spec.root.join("app/migrations");
        std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let spec = KeySpec {
            stat_cache: Some(crate::statcache::path_for(&app, &spec.root)),
            ..spec
        };
        let e = compute(&spec).expect_err("an error, not a key without app's migrations");
        assert!(
            e.to_string()
                .contains("is one of the project's Python packages"),
            "{e}"
        );
    }

    /// An ignore file too large to be rules (a sparse file of gigabytes
    /// took 22 GB as the walker read it whole): an error, before the read.
    #[test]
    fn an_ignore_file_too_large_to_be_rules_is_an_error() {
        let (_dir, spec) = cached_project();
        let file = std::fs::File::create(spec.root.join("app/.gitignore")).expect("create");
        file.set_len(IGNORE_FILE_MAX + 1).expect("sparse");
        let e = compute(&spec).expect_err("an error, not a read of it");
        assert!(
            e.to_string()
                .contains("app/.gitignore` is not a regular file of at most"),
            "{e}"
        );
        file.set_len(IGNORE_FILE_MAX).expect("sparse");
        assert!(compute(&spec).is_ok(), "at the limit");
    }

    /// A directory the walk leaves out (a virtualenv) is not entered, so
    /// what is in it, a FIFO named `.gitignore` too, is none of the key's
    /// business.
    #[test]
    fn a_fifo_in_a_directory_left_out_is_no_error() {
        let (_dir, spec) = cached_project();
        let before = uncached(&spec);
        std::fs::create_dir(spec.root.join("venv")).expect("mkdir");
        std::fs::write(spec.root.join("venv/pyvenv.cfg"), "home = /usr\n").expect("write");
        mkfifo(&spec.root.join("venv/.gitignore"));
        assert_eq!(compute(&spec).expect("key").key, before);
    }

    /// The record keeps the key its walk derived, and a replay takes it
    /// only under the same salt, settings module and alias: under others
    /// the key is derived again from the recorded files.
    #[test]
    fn the_recorded_key_is_taken_only_under_what_it_was_derived_under() {
        let (_dir, spec) = cached_project();
        compute(&spec).expect("key");
        let path = walkrecord::path_beside(spec.stat_cache.as_deref().expect("a stat cache"));
        let later = statcache::now_ns() + 10 * statcache::RACY_MARGIN_NS;
        // A recorded key no files give: it shows when it is taken.
        walkrecord::forge(&path, later, |_, derived| derived.value = [7; 32]);
        let forged = Key::from_digest(&[7; 32]);
        assert_eq!(compute(&spec).expect("key").key, forged, "taken");
        let accelerated = KeySpec {
            accelerated: true,
            ..spec.clone()
        };
        assert_eq!(
            compute(&accelerated).expect("key").key,
            accelerated_key(forged, true),
            "the accelerated key is made from the stock one"
        );
        let others = [
            KeySpec {
                salt: "another".into(),
                ..spec.clone()
            },
            KeySpec {
                settings_module: Some("proj.settings_ci".into()),
                ..spec.clone()
            },
            KeySpec {
                alias: "replica".into(),
                ..spec.clone()
            },
        ];
        for other in others {
            assert_eq!(
                compute(&other).expect("key").key,
                uncached(&other),
                "derived again for {other:?}"
            );
        }
    }

    /// Every change the walk would see sends a run with a settled record
    /// back to the walk: the key is the files' own, never the record's.
    #[test]
    fn any_change_the_walk_would_see_is_not_replayed() {
        use std::os::unix::fs::symlink;
        type Change = fn(&Path, &Path);
        let changes: &[(&str, Change)] = &[
            ("a new migration", |root, _| {
                std::fs::write(root.join("app/migrations/0003_c.py"), "three\n").expect("write")
            }),
            ("a migration removed", |root, _| {
                std::fs::remove_file(root.join("app/migrations/0002_b.py")).expect("rm")
            }),
            ("a migration renamed", |root, _| {
                let m = root.join("app/migrations");
                std::fs::rename(m.join("0002_b.py"), m.join("0002_renamed.py")).expect("mv")
            }),
            ("an edit in place with the old mtime put back", |root, _| {
                let file = root.join("app/migrations/0002_b.py");
                let mtime = std::fs::metadata(&file)
                    .and_then(|m| m.modified())
                    .expect("mtime");
                std::fs::write(&file, "TWO\n").expect("write");
                std::fs::File::options()
                    .write(true)
                    .open(&file)
                    .and_then(|f| f.set_modified(mtime))
                    .expect("mtime back");
            }),
            ("a new .gitignore in a walked directory", |root, _| {
                std::fs::write(root.join("app/.gitignore"), "migrations/0002_b.py\n")
                    .expect("write")
            }),
            ("a .gitignore edited in place", |root, _| {
                std::fs::write(root.join(".gitignore"), "app/migrations/0002_b.py\n")
                    .expect("write")
            }),
            ("a virtualenv that is one no more", |root, _| {
                std::fs::remove_file(root.join("vendored/pyvenv.cfg")).expect("rm")
            }),
            ("a dangling link that now points at a file", |_, outside| {
                std::fs::write(outside.join("target.py"), "linked\n").expect("write")
            }),
            (
                "a .gitignore linked to nothing that now points at rules",
                |_, outside| std::fs::write(outside.join("rules"), "0002_b.py\n").expect("write"),
            ),
            (
                "a link to a plain file whose target becomes migrations",
                |_, outside| {
                    std::fs::remove_file(outside.join("thing")).expect("rm");
                    std::fs::create_dir_all(outside.join("thing/migrations")).expect("mkdir");
                    std::fs::write(outside.join("thing/migrations/0001_t.py"), "t\n")
                        .expect("write")
                },
            ),
            (
                "a virtualenv whose pyvenv.cfg link points at nothing now",
                |_, outside| std::fs::remove_file(outside.join("cfg")).expect("rm"),
            ),
            (
                "a package's __init__.py link that points at nothing now",
                |_, outside| std::fs::remove_file(outside.join("init.py")).expect("rm"),
            ),
            (
                "a link that looped back to the root, now elsewhere",
                |_, outside| {
                    std::fs::remove_file(outside.join("m")).expect("rm");
                    symlink(outside.join("other"), outside.join("m")).expect("link")
                },
            ),
            (
                "a link an ignore rule hid as a directory, now a file",
                |_, outside| {
                    std::fs::remove_dir(outside.join("dir")).expect("rmdir");
                    std::fs::write(outside.join("dir"), "x\n").expect("write")
                },
            ),
            ("a file added behind a linked directory", |_, outside| {
                std::fs::write(outside.join("shared/migrations/0002_s.py"), "s2\n").expect("write")
            }),
        ];
        for (what, change) in changes {
            let (dir, spec) = cached_project();
            let (root, outside) = (spec.root.clone(), dir.path().to_path_buf());
            // What the changes above need: an ignore file, a virtualenv
            // with migrations in it, a link to nothing, a linked directory.
            std::fs::write(root.join(".gitignore"), "*.log\n0005_x.py/\n").expect("write");
            std::fs::create_dir_all(root.join("vendored/migrations")).expect("mkdir");
            std::fs::write(root.join("vendored/pyvenv.cfg"), "").expect("write");
            std::fs::write(root.join("vendored/migrations/0001_v.py"), "v\n").expect("write");
            symlink(
                outside.join("target.py"),
                root.join("app/migrations/0004_link.py"),
            )
            .expect("link");
            std::fs::create_dir_all(outside.join("shared/migrations")).expect("mkdir");
            std::fs::write(outside.join("shared/migrations/0001_s.py"), "s1\n").expect("write");
            symlink(outside.join("shared"), root.join("shared")).expect("link");
            // Links whose targets no listing of the tree covers (issue #24's
            // adversarial review found each of these replayed stale).
            std::fs::write(outside.join("thing"), "hi\n").expect("write");
            symlink(outside.join("thing"), root.join("thing")).expect("link");
            std::fs::create_dir_all(root.join("lib/migrations")).expect("mkdir");
            std::fs::write(outside.join("cfg"), "").expect("write");
            symlink(outside.join("cfg"), root.join("lib/pyvenv.cfg")).expect("link");
            std::fs::write(root.join("lib/migrations/0001_l.py"), "l\n").expect("write");
            std::fs::create_dir_all(root.join("pkg/migrations")).expect("mkdir");
            std::fs::write(outside.join("init.py"), "").expect("write");
            symlink(
                outside.join("init.py"),
                root.join("pkg/migrations/__init__.py"),
            )
            .expect("link");
            std::fs::write(root.join("pkg/migrations/0001_p.py"), "p\n").expect("write");
            std::fs::create_dir_all(outside.join("other/migrations")).expect("mkdir");
            std::fs::write(outside.join("other/migrations/0001_o.py"), "o\n").expect("write");
            symlink(&root, outside.join("m")).expect("link");
            symlink(outside.join("m"), root.join("app/l")).expect("link");
            std::fs::create_dir(outside.join("dir")).expect("mkdir");
            symlink(outside.join("dir"), root.join("app/migrations/0005_x.py")).expect("link");
            symlink(
                outside.join("rules"),
                root.join("app/migrations/.gitignore"),
            )
            .expect("link");

            assert_seen(&spec, what, || change(&root, &outside));
        }
    }

    /// The cache dir inside the project (`cache-dir = "cache"`) is not the
    /// project's: a migration-shaped file in it is not in the key, and what
    /// migsnap writes there does not stop the walk's record from being
    /// replayed.
    #[test]
    fn a_cache_dir_inside_the_project_is_not_walked() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, spec) = cached_project();
        let cache = spec.root.join("cache");
        std::fs::create_dir_all(cache.join("migrations")).expect("mkdir");
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let spec = KeySpec {
            stat_cache: Some(crate::statcache::path_for(&cache, &spec.root)),
            ..spec
        };
        let plain = compute(&spec).expect("key").key;
        std::fs::write(cache.join("migrations/0009_x.py"), "x\n").expect("write");
        assert_eq!(compute(&spec).expect("key").key, plain, "not in the key");
        settle_record(&spec, true);
        assert_ne!(
            compute(&spec).expect("key").key,
            plain,
            "the record was used"
        );
    }
}
