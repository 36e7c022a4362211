//! The snapshot cache directory: `<key>.sql.zst` dumps, `<key>.json`
//! manifests, `<key>.lock` files.
//!
//! Atomicity: a dump is written to a temp file in the same directory, fsynced
//! and renamed into place; only then is the manifest written the same way.
//! The manifest holds the dump's sha256 and size, so a snapshot is trusted
//! only if a manifest exists *and* the dump matches it. A crash at any moment
//! leaves either no manifest (ignored, cleaned later) or a complete pair.
//!
//! Trust (issue #10): the dir must be ours and closed to others
//! (`check_cache_dir`), files in it are opened without following symlinks,
//! and every manifest carries a `<key>.sig` (issue #21: Ed25519 by the
//! signing key, plus an HMAC with a cache secret; see `sign`) that is
//! checked before the snapshot is used. A manifest no trusted key signed is
//! foreign: refused, or with `trust-unsigned` loaded with `authenticated`
//! false, which serves its own key and is never built on.

use crate::depends::Checked;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::files::read_no_follow;
use crate::fingerprint::Fingerprint;
use crate::key::Key;
use crate::statcache::{self, Stat};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Bump when the manifest's meaning changes; older manifests are ignored.
/// 4: `extensions` (issue #21): a snapshot without the record is rebuilt
/// once rather than restored with the dump's own `CREATE EXTENSION`.
pub const MANIFEST_FORMAT: u32 = 4;
const TMP_PREFIX: &str = ".tmp-";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub key: Key,
    pub created_unix: u64,
    pub migsnap_version: String,
    /// `server_version_num` of the server the dump came from (e.g. 150018).
    pub server_version_num: u32,
    pub dump: DumpInfo,
    /// Relative path -> sha256 of every migration file in the snapshot.
    pub migrations: BTreeMap<String, String>,
    pub key_inputs: BTreeMap<String, String>,
    /// sha256 of the key salt the snapshot was built with.
    pub salt_sha256: String,
    /// Rows of django_migrations, as "app.name", in id order.
    pub applied: Vec<String>,
    pub build: BuildInfo,
    /// What the build read beyond the key (see `depends`): the snapshot is
    /// served only while these still hold.
    pub depends: crate::depends::Depends,
    /// The build database's extensions (`pg_extension`): what migsnap
    /// creates, with fixed text, before a restore, if `trusted-extensions`
    /// names them all; the dump's own extension statements never run.
    pub extensions: Vec<ExtensionRecord>,
    /// The project dir that built it (canonical), so that `ls` and `gc` in
    /// a cache dir several projects share act on their own snapshots.
    /// `None` in manifests written before it was recorded: no one's.
    #[serde(default)]
    pub project_dir: Option<PathBuf>,
    /// The database alias it was migrated for (`migrate --database`);
    /// manifests written before aliases were known are `default`'s.
    #[serde(default = "default_alias")]
    pub alias: String,
    /// `prepare --at`: the migration targets it was migrated to, in order
    /// (`Fingerprint::at`); empty for a fully migrated snapshot. Such a
    /// snapshot serves its own key only: it is never an ancestor.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub at: Vec<String>,
    /// Whether a trusted key (or the cache secret) signed this manifest, as
    /// found when it was loaded; never stored in it. A new build's is true.
    /// False only with `trust-unsigned`: such a snapshot serves its own key
    /// and is never an ancestor (its triggers would fire in `migrate`).
    #[serde(skip)]
    pub authenticated: bool,
}

/// One extension of the built database (`pg_extension`), as the manifest
/// records it: what `pg::extension::Extension` is to a restore, kept apart
/// because the cache dir knows no server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtensionRecord {
    pub name: String,
    pub schema: String,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DumpInfo {
    pub file: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildInfo {
    pub source: BuiltBy,
    pub base_key: Option<Key>,
    pub seconds: f64,
    /// What each migration of the snapshot cost when it was applied, in
    /// order; an incremental build carries its base's figures forward.
    /// Empty in manifests written before migsnap recorded them.
    #[serde(default)]
    pub migrations: Vec<Applied>,
    /// `build-accelerator`: this build's `migrate` ran with django-fastmig
    /// (issue #24). Absent (false) in stock builds and older manifests.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accelerated: bool,
    /// `verify-build`: the accelerated build was compared with stock
    /// Django's `migrate` and found equal (`engine::verify`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verified: bool,
    /// The migrations this accelerated build applied with stock Django
    /// (what django-fastmig does not know). Absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stock_migrations: Vec<String>,
}

/// How a snapshot's build started: written as `cold` or `incremental` in
/// the manifest (the only two values any version wrote).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuiltBy {
    /// `migrate` from an empty database.
    Cold,
    /// An older snapshot, then `migrate` forward (`base_key` says which).
    Incremental,
}

impl std::fmt::Display for BuiltBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BuiltBy::Cold => "cold",
            BuiltBy::Incremental => "incremental",
        })
    }
}

/// One migration as a build applied it: wall time, and what it sent to
/// PostgreSQL as Django's `execute_wrapper` saw it (see shim.py, `QueryCount`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Applied {
    /// `app.name`.
    pub name: String,
    pub seconds: f64,
    /// SQL statements: one per `execute`, one per parameter set of an
    /// `executemany`.
    #[serde(default)]
    pub statements: u64,
    /// Calls into the driver (`execute` or `executemany`): what a row-by-row
    /// data migration multiplies.
    #[serde(default)]
    pub round_trips: u64,
}

/// Bump when `Warm` changes.
const WARM_FORMAT: u32 = 2;

/// How a snapshot was built, as far as `prepare --json` reports it: kept
/// in `<key>.warm.json` too, so that serving an accelerated key's template
/// does not read the whole manifest for two fields (issue #24). Reported,
/// never acted on: a template is served on its mark and inputs alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HowBuilt {
    #[serde(default)]
    pub accelerated: bool,
    #[serde(default)]
    pub stock_migrations: Vec<String>,
}

/// `<key>.warm.json` (`Store::load_checked`).
#[derive(Serialize, Deserialize)]
struct Warm {
    format: u32,
    key: Key,
    /// The manifest's stat when the record was taken from it.
    manifest: StatRecord,
    /// When that run began: the manifest must have settled before it.
    started_ns: i64,
    checked: Checked,
    built: HowBuilt,
}

/// `statcache::Stat`, as JSON.
#[derive(Serialize, Deserialize)]
struct StatRecord {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
    dev: u64,
}

impl StatRecord {
    fn of(s: &Stat) -> StatRecord {
        StatRecord {
            size: s.size,
            mtime_ns: s.mtime_ns,
            ctime_ns: s.ctime_ns,
            ino: s.ino,
            dev: s.dev,
        }
    }

    fn stat(&self) -> Stat {
        Stat {
            size: self.size,
            mtime_ns: self.mtime_ns,
            ctime_ns: self.ctime_ns,
            ino: self.ino,
            dev: self.dev,
        }
    }
}

/// Why a snapshot's manifest cannot be trusted: reported with a warning,
/// and the snapshot discarded (by whoever holds its lock) and rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read `{}`", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("manifest `{}` is damaged", path.display())]
    Damaged {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("manifest `{}` is for another key or format", path.display())]
    Foreign { path: PathBuf },
    #[error("refused snapshot {short}: it is not signed by a trusted key")]
    Unsigned { short: String },
    #[error("refused snapshot {short}: its signature `{}` does not verify with the trusted keys or the cache secret", path.display())]
    BadSignature { short: String, path: PathBuf },
    #[error("refused snapshot {short}: it is signed by key {id}, which is not in trusted-keys")]
    Untrusted { short: String, id: String },
}

/// What every view of a manifest has: its format and key.
trait Named {
    fn names(&self) -> (u32, &Key);
}

impl Named for Manifest {
    fn names(&self) -> (u32, &Key) {
        (self.format, &self.key)
    }
}

impl Manifest {
    pub fn server_major(&self) -> u32 {
        self.server_version_num / 10000
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    /// Signs new manifests and judges the signatures of those loaded.
    trust: Trust,
}

impl Store {
    /// A store that signs nothing and trusts nothing (`with_trust` says
    /// otherwise).
    pub fn new(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
            trust: Trust::default(),
        }
    }

    pub fn with_trust(mut self, trust: Trust) -> Store {
        self.trust = trust;
        self
    }

    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn dump_path(&self, key: &Key) -> PathBuf {
        self.dir.join(format!("{key}.sql.zst"))
    }

    pub fn manifest_path(&self, key: &Key) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// Exclusive per-key lock, held while a snapshot is built or written.
    /// The OS drops it when the process dies, so a crash never wedges it.
    /// Waiting polls instead of blocking in flock(2), so that the runtime
    /// stays free to notice Ctrl-C while another process builds.
    pub async fn lock(&self, key: &Key, on_wait: impl FnOnce()) -> Result<File> {
        if let Some(file) = self.try_lock(key)? {
            return Ok(file);
        }
        on_wait();
        let mut pause = std::time::Duration::from_millis(20);
        loop {
            tokio::time::sleep(pause).await;
            if let Some(file) = self.try_lock(key)? {
                return Ok(file);
            }
            pause = (pause * 2).min(std::time::Duration::from_millis(250));
        }
    }

    /// `<key>.check.json`: `check`'s catalogs for the key, valid only
    /// alongside its snapshot.
    pub fn check_path(&self, key: &Key) -> PathBuf {
        self.dir.join(format!("{key}.check.json"))
    }

    fn lock_path(&self, key: &Key) -> PathBuf {
        self.dir.join(format!("{key}.lock"))
    }

    /// The per-key lock if nobody holds it now, else None.
    ///
    /// gc unlinks a removed key's lock file while holding it
    /// (`remove_lock`). A process that opened the file before the unlink
    /// then locks an inode no path leads to, while a newcomer creates and
    /// locks a fresh file: two holders. So a lock counts only if the path
    /// still names the inode that was locked; otherwise open it again.
    pub fn try_lock(&self, key: &Key) -> Result<Option<File>> {
        let path = self.lock_path(key);
        loop {
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|e| cache_write_error(&self.dir, e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(StoreError::Lock {
                        path: path.clone(),
                        source: e,
                    }
                    .into())
                }
            }
            let held = file.metadata().map(|m| (m.dev(), m.ino()));
            let named = std::fs::symlink_metadata(&path).map(|m| (m.dev(), m.ino()));
            match (held, named) {
                (Ok(a), Ok(b)) if a == b => return Ok(Some(file)),
                // Unlinked (or replaced) since we opened it: not the lock.
                _ => continue,
            }
        }
    }

    /// Unlink `<key>.lock`. Only while holding it (`try_lock`'s answer),
    /// once the key's files are gone: a waiter on the unlinked file sees
    /// that it no longer names the lock and opens the path again.
    pub fn remove_lock(&self, key: &Key, _held: &File) {
        let _ = std::fs::remove_file(self.lock_path(key));
    }

    /// Keys that have a lock file (gc sweeps those left with no snapshot).
    pub fn locked_keys(&self) -> Vec<Key> {
        self.keys_with_suffix(".lock")
    }

    /// Keys that have a `<key>.sig` (gc sweeps those left with no manifest).
    pub fn signed_keys(&self) -> Vec<Key> {
        self.keys_with_suffix(".sig")
    }

    /// Keys that have `check`'s catalogs cached.
    pub fn checked_keys(&self) -> Vec<Key> {
        self.keys_with_suffix(".check.json")
    }

    /// The manifest for `key`, if present and readable. A damaged one is
    /// reported through `Err` so the caller can warn and discard it.
    pub fn load(&self, key: &Key) -> Result<Option<Manifest>, ManifestError> {
        Ok(self.load_with_bytes(key)?.map(|(m, _)| m))
    }

    /// `<key>.warm.json`: the manifest's `depends.checked` alone, with the
    /// manifest's stat when it was read (see `load_checked`).
    pub fn warm_path(&self, key: &Key) -> PathBuf {
        self.dir.join(format!("{key}.warm.json"))
    }

    /// Only what the warm path needs from the manifest for `key`: what its
    /// build read beyond the key. Taken from `<key>.warm.json` (a few KB)
    /// while the manifest's stat is what it was when that was written, and
    /// the manifest had settled before (`statcache`'s rule: a manifest is
    /// only ever replaced by a rename, so a new one has a new inode and
    /// ctime); otherwise read from the manifest (454 KB on a 1,000-migration
    /// project, most of it skipped by the parser, not built) and the small
    /// file written for the next run (issue #24).
    pub fn load_checked(&self, key: &Key) -> Option<Checked> {
        self.load_warm_record(key).map(|(checked, _)| checked)
    }

    /// How the snapshot of `key` was built, read as `load_checked` reads
    /// its record (the small file when it is current).
    pub fn how_built(&self, key: &Key) -> Option<HowBuilt> {
        self.load_warm_record(key).map(|(_, built)| built)
    }

    fn load_warm_record(&self, key: &Key) -> Option<(Checked, HowBuilt)> {
        let manifest = std::fs::symlink_metadata(self.manifest_path(key)).ok()?;
        if !manifest.is_file() {
            return None;
        }
        let stat = Stat::of(&manifest);
        if let Some(found) = self.load_warm(key, &stat) {
            return Some(found);
        }
        let started_ns = statcache::now_ns();
        let (checked, built) = self.load_checked_from_manifest(key)?;
        self.write_warm(key, &stat, started_ns, &checked, &built);
        Some((checked, built))
    }

    /// The record in `<key>.warm.json`, if it was taken from the manifest
    /// now in place (same stat, settled before it was written).
    fn load_warm(&self, key: &Key, manifest: &Stat) -> Option<(Checked, HowBuilt)> {
        let bytes = read_no_follow(&self.warm_path(key)).ok()?;
        let warm: Warm = serde_json::from_slice(&bytes).ok()?;
        let same = warm.format == WARM_FORMAT
            && &warm.key == key
            && warm.manifest.stat() == *manifest
            && manifest.settled_before(warm.started_ns);
        same.then_some((warm.checked, warm.built))
    }

    /// Best effort: without it, the next run reads the manifest again.
    fn write_warm(
        &self,
        key: &Key,
        manifest: &Stat,
        started_ns: i64,
        checked: &Checked,
        built: &HowBuilt,
    ) {
        let warm = Warm {
            format: WARM_FORMAT,
            key: key.clone(),
            manifest: StatRecord::of(manifest),
            started_ns,
            checked: checked.clone(),
            built: built.clone(),
        };
        let Ok(json) = serde_json::to_vec(&warm) else {
            return;
        };
        // No fsync: a torn file does not parse, and costs one manifest read.
        let Ok(mut tmp) = self.temp_file(key) else {
            return;
        };
        if tmp.write_all(&json).is_ok() {
            let _ = tmp.persist(self.warm_path(key));
        }
    }

    /// `depends.checked` and how it was built, of the manifest for `key`,
    /// parsed from it.
    fn load_checked_from_manifest(&self, key: &Key) -> Option<(Checked, HowBuilt)> {
        #[derive(Deserialize)]
        struct Part {
            format: u32,
            key: Key,
            depends: PartDepends,
            #[serde(default)]
            build: HowBuilt,
        }
        #[derive(Deserialize)]
        struct PartDepends {
            checked: Checked,
        }
        impl Named for Part {
            fn names(&self) -> (u32, &Key) {
                (self.format, &self.key)
            }
        }
        // No signature check (the warm path reads no key): nothing here is
        // restored, and a forged record cannot make a template be served,
        // since the template's comment must carry the digest of a record
        // that still holds. The same holds for `<key>.warm.json`.
        // How it was built is reported only (`prepare --json`), never
        // acted on.
        let part = self.load_bytes_as::<Part>(key, false).ok()??.0;
        Some((part.depends.checked, part.build))
    }

    /// The manifest for `key` as `load` checks it, with its exact bytes
    /// (what `push` uploads, so that the store holds what the cache dir
    /// holds and the signature carries over).
    pub fn load_with_bytes(&self, key: &Key) -> Result<Option<(Manifest, Vec<u8>)>, ManifestError> {
        let Some((mut m, authenticated, text)) = self.load_bytes_as::<Manifest>(key, true)? else {
            return Ok(None);
        };
        m.authenticated = authenticated;
        Ok(Some((m, text)))
    }

    /// The manifest for `key` as `T`, its signature judged when `signed`,
    /// whether it is authenticated, and its bytes.
    fn load_bytes_as<T: serde::de::DeserializeOwned + Named>(
        &self,
        key: &Key,
        signed: bool,
    ) -> Result<Option<(T, bool, Vec<u8>)>, ManifestError> {
        let path = self.manifest_path(key);
        let text = match read_no_follow(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ManifestError::Unreadable { path, source }),
        };
        let sig = match signed {
            true => self.read_signature(key)?,
            false => None,
        };
        let signature = signed.then(|| Signature {
            trust: &self.trust,
            text: sig.as_deref(),
            path: self.sig_path(key),
        });
        let (m, authenticated) = check_as::<T>(key, &path, &text, signature)?;
        Ok(Some((m, authenticated, text)))
    }

    /// Every readable manifest, newest first (damaged ones are skipped:
    /// `load` reports them when their key is asked for).
    pub fn manifests(&self) -> Vec<Manifest> {
        let mut all: Vec<Manifest> = self
            .keys_with_suffix(".json")
            .iter()
            .filter_map(|key| self.load(key).ok().flatten())
            .collect();
        all.sort_by_key(|m| std::cmp::Reverse(m.created_unix));
        all
    }

    /// The project-relative migration packages that the newest snapshot
    /// built in `project` recorded outside its key's globs (Django loaded
    /// them through MIGRATION_MODULES): what `migsnap key` adds so that a
    /// CI cache key changes with them, when the settings' text did not
    /// name them. Read without a signature check, and only the names: a
    /// forged record can only add files to a key that hashes them.
    pub fn recorded_migration_dirs(&self, project: &Path) -> Vec<String> {
        #[derive(Deserialize)]
        struct Dirs {
            format: u32,
            key: Key,
            created_unix: u64,
            #[serde(default)]
            project_dir: Option<PathBuf>,
            depends: DirsDepends,
        }
        #[derive(Deserialize)]
        struct DirsDepends {
            checked: DirsChecked,
        }
        #[derive(Deserialize)]
        struct DirsChecked {
            #[serde(default)]
            dirs: BTreeMap<String, serde::de::IgnoredAny>,
        }
        impl Named for Dirs {
            fn names(&self) -> (u32, &Key) {
                (self.format, &self.key)
            }
        }
        self.keys_with_suffix(".json")
            .iter()
            .filter_map(|key| Some(self.load_bytes_as::<Dirs>(key, false).ok()??.0))
            .filter(|m| m.project_dir.as_deref() == Some(project))
            // The key breaks a tie of seconds, so the answer is the same
            // whatever order the directory lists in.
            .max_by(|a, b| (a.created_unix, &a.key).cmp(&(b.created_unix, &b.key)))
            .map(|m| {
                m.depends
                    .checked
                    .dirs
                    .into_keys()
                    .filter(|d| !Path::new(d).is_absolute())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `manifests()` split into this project's (built in `project`, or
    /// for the `current` key, which any checkout may share) and the
    /// others'; `all` takes every one as this project's.
    pub fn project_manifests(
        &self,
        project: &Path,
        current: &std::collections::BTreeSet<Key>,
        all: bool,
    ) -> (Vec<Manifest>, Vec<Manifest>) {
        self.manifests().into_iter().partition(|m| {
            all || current.contains(&m.key) || m.project_dir.as_deref() == Some(project)
        })
    }

    /// Every alias a snapshot in the cache dir was built for.
    pub fn aliases(&self) -> std::collections::BTreeSet<String> {
        self.manifests().into_iter().map(|m| m.alias).collect()
    }

    /// Keys that have a dump but no manifest: a crash between the two
    /// renames, or a damaged manifest. Nothing will ever use them.
    pub fn orphan_dumps(&self) -> Vec<Key> {
        self.keys_with_suffix(".sql.zst")
            .into_iter()
            .filter(|key| !matches!(self.load(key), Ok(Some(_))))
            .collect()
    }

    fn keys_with_suffix(&self, suffix: &str) -> Vec<Key> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            Key::parse(name.strip_suffix(suffix)?).ok()
        })
        .collect()
    }

    /// Remove a snapshot whose files cannot be trusted (manifest first, so a
    /// crash halfway leaves an orphan dump, never a manifest without dump).
    pub fn discard(&self, key: &Key) {
        let _ = std::fs::remove_file(self.manifest_path(key));
        let _ = std::fs::remove_file(self.dump_path(key));
        let _ = std::fs::remove_file(self.sig_path(key));
        let _ = std::fs::remove_file(self.warm_path(key));
    }

    /// A temp file in the cache dir that `persist` renames into place.
    pub fn temp_file(&self, key: &Key) -> Result<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix(&format!("{TMP_PREFIX}{key}."))
            .tempfile_in(&self.dir)
            .map_err(|e| cache_write_error(&self.dir, e))
    }

    /// fsync + rename + fsync the directory: after this returns the file is
    /// in place for good; before it, it is not there at all.
    pub fn persist(&self, tmp: tempfile::NamedTempFile, dest: &Path) -> Result<()> {
        tmp.as_file()
            .sync_all()
            .map_err(|e| cache_write_error(&self.dir, e))?;
        tmp.persist(dest)
            .map_err(|e| cache_write_error(&self.dir, e.error))?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Write `m` (and, when it is `authenticated`, its signature: a foreign
    /// snapshot kept under `trust-unsigned` stays foreign, never signed
    /// into trust).
    pub fn write_manifest(&self, m: &Manifest) -> Result<()> {
        let json = serde_json::to_vec_pretty(m).map_err(StoreError::Serialise)?;
        // Signed before anything is written: a refused key file leaves the
        // snapshot as it was.
        let sig = match m.authenticated {
            true => self.trust.sign(&m.key, &json)?,
            false => None,
        };
        let mut tmp = self.temp_file(&m.key)?;
        tmp.write_all(&json)
            .map_err(|e| cache_write_error(&self.dir, e))?;
        failpoint::point("manifest.written");
        // The signature goes in place first, so that the manifest is signed
        // the moment it exists: a crash in between leaves the manifest this
        // one replaces with a signature that is not its own (refused and
        // rebuilt), never a new snapshot that reads as foreign. A foreign
        // one's replaced signature must not outlive the manifest it signed.
        match sig {
            Some(sig) => self.write_signature(&m.key, &sig)?,
            None => match std::fs::remove_file(self.sig_path(&m.key)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(cache_write_error(&self.dir, e))
                }
                _ => {}
            },
        }
        self.persist(tmp, &self.manifest_path(&m.key))?;
        failpoint::point("manifest.renamed");
        Ok(())
    }

    /// Temp files left by a process that died, for this key. Only called
    /// under the key's lock, so no live writer owns them.
    pub fn clean_temp(&self, key: &Key) {
        for (path, _) in self.temp_files(Some(key)) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Temp files in the cache dir (for one key, or all), with the key each
    /// belongs to.
    pub fn temp_files(&self, key: Option<&Key>) -> Vec<(PathBuf, Key)> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let rest = name.strip_prefix(TMP_PREFIX)?;
                let owner = Key::parse(rest.split_once('.')?.0).ok()?;
                key.is_none_or(|k| k == &owner).then(|| (e.path(), owner))
            })
            .collect()
    }

    /// Remove a snapshot on purpose (gc). Manifest first, like `discard`;
    /// unlike it, failures are reported.
    pub fn remove(&self, key: &Key) -> Result<()> {
        for path in [
            self.manifest_path(key),
            self.dump_path(key),
            self.sig_path(key),
            self.check_path(key),
            self.warm_path(key),
        ] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(cache_write_error(&self.dir, e)),
            }
        }
        Ok(())
    }

    /// The cached snapshot to build on when there is none for `fp` that still
    /// holds: the one with the most migration files still present with the
    /// same content (ties: the newest), none of them changed. That includes
    /// the key's own snapshot when only inputs outside the key changed (a new
    /// third-party migration, an edited settings file). Key inputs (lock
    /// files) may differ: `migrate` then applies whatever new third-party
    /// migrations they bring, once Django has confirmed that everything the
    /// base applied is still there unchanged (`Depends::compatible`).
    /// A file of the base that is gone counts only if `replaced(path)` says
    /// a migration now on disk may replace it (a squash whose replaced files
    /// were deleted, an app renamed with `replaces`, issue #22); Django then
    /// has the last word. Any other deletion rules the snapshot out, as it
    /// always did: a smaller ancestor that still fits is better than a cold
    /// build after a refused one.
    /// Snapshots from a newer server major version are skipped (a dump never
    /// goes into an older server).
    pub fn best_ancestor(
        &self,
        fp: &Fingerprint,
        server_version_num: u32,
        replaced: &dyn Fn(&str) -> bool,
    ) -> Option<Manifest> {
        self.manifests()
            .into_iter()
            .filter(|m| builds_on(m, fp, server_version_num, replaced))
            // A database migrated part of the way (`prepare --at`) stops
            // short of migrations whose files it shares with `fp`, and
            // `migrate` to a target may have unapplied some: it is no
            // proven start for a full build.
            .filter(|m| m.at.is_empty())
            .max_by_key(|m| ancestor_rank(m, fp))
    }

    /// The snapshots a `prepare --at` build (`fp`) may start from: those a
    /// full build could (`best_ancestor`'s), and those made part of the
    /// way too, newest first. Whether the targets are reached from one as
    /// from empty is Django's to say (`django::choose_base`).
    pub fn at_candidates(
        &self,
        fp: &Fingerprint,
        server_version_num: u32,
        replaced: &dyn Fn(&str) -> bool,
    ) -> Vec<Manifest> {
        let mut found: Vec<Manifest> = self
            .manifests()
            .into_iter()
            .filter(|m| m.key != fp.key && builds_on(m, fp, server_version_num, replaced))
            .collect();
        found.sort_by_key(|m| std::cmp::Reverse(m.created_unix));
        found
    }
}

/// Whether a build of `fp` may start from `m` at all: a server that can
/// load it, authenticated, the same salt and alias, and every migration
/// file it was made from unchanged (or replaced by a squash).
fn builds_on(
    m: &Manifest,
    fp: &Fingerprint,
    server_version_num: u32,
    replaced: &dyn Fn(&str) -> bool,
) -> bool {
    m.server_major() <= server_version_num / 10000
        // Never a foreign one (issue #21): `migrate` on top of it would
        // fire whatever triggers it planted.
        && m.authenticated
        // Same salt (a new salt invalidates everything), and at least one
        // migration in common: an empty snapshot is nobody's ancestor.
        && m.salt_sha256 == fp.salt_sha256
        && ancestor_rank(m, fp).0 > 0
        // Another alias's schema is another database's (the routers
        // decide what lands where): never a base for this one.
        && m.alias == fp.alias
        // Issue #24: an accelerated build is judged whole (verify-build
        // compares it with stock Django's migrate from empty), so it may
        // start from any snapshot; a stock build starts only from what is
        // known to be stock Django's result: a stock snapshot, or an
        // accelerated one that verify-build found equal to it. An
        // unverified accelerated snapshot serves its own key only.
        && (fp.accelerated || !m.build.accelerated || m.build.verified)
        && m
            .migrations
            .iter()
            .all(|(path, hash)| match fp.migrations().get(path) {
                Some(now) => now == hash,
                None => replaced(path),
            })
}

fn default_alias() -> String {
    crate::fingerprint::DEFAULT_ALIAS.to_string()
}

/// How good an ancestor of `fp` the snapshot `m` is: its migration files
/// still present with the same content, then its age (newer is better).
pub fn ancestor_rank(m: &Manifest, fp: &Fingerprint) -> (usize, u64) {
    let unchanged = m
        .migrations
        .iter()
        .filter(|(path, hash)| fp.migrations().get(*path) == Some(hash))
        .count();
    (unchanged, m.created_unix)
}

pub fn cache_write_error(dir: &Path, e: std::io::Error) -> Error {
    BadCacheDir::Write {
        dir: dir.to_path_buf(),
        source: e,
    }
    .into()
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// ---- trust (issue #10) ----

pub use crate::sign::CacheSecret;
use crate::sign::{Trust, Verdict};

impl Store {
    /// `<key>.sig`: signatures (`sign::SIG_HEADER`) over the manifest's
    /// exact bytes, which hold the dump's sha256 and size, so they cover
    /// the dump too.
    pub fn sig_path(&self, key: &Key) -> PathBuf {
        self.dir.join(format!("{key}.sig"))
    }

    fn write_signature(&self, key: &Key, sig: &str) -> Result<()> {
        let mut tmp = self.temp_file(key)?;
        tmp.write_all(sig.as_bytes())
            .map_err(|e| cache_write_error(&self.dir, e))?;
        self.persist(tmp, &self.sig_path(key))
    }

    /// The content of `<key>.sig`, None when there is none.
    fn read_signature(&self, key: &Key) -> Result<Option<Vec<u8>>, ManifestError> {
        let path = self.sig_path(key);
        match read_no_follow(&path) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ManifestError::Unreadable { path, source }),
        }
    }
}

/// A manifest's signature as found beside it, and what judges it.
pub struct Signature<'a> {
    pub trust: &'a Trust,
    /// The signature's text (`sign::SIG_HEADER` …); None: absent.
    pub text: Option<&'a [u8]>,
    /// Where the signature is (or would be), for messages.
    pub path: PathBuf,
}

/// Everything a manifest must pass before anything in it is believed,
/// wherever its bytes come from (the cache dir, the snapshot store): its
/// signature (judged first, over the exact bytes; a foreign one is refused
/// unless `trust-unsigned`, and then marked not `authenticated`), then it
/// parses as this format and names `key`. `path` names the manifest in
/// messages.
pub fn check_manifest(
    key: &Key,
    path: &Path,
    text: &[u8],
    signature: Signature<'_>,
) -> Result<Manifest, ManifestError> {
    let (mut m, authenticated) = check_as::<Manifest>(key, path, text, Some(signature))?;
    m.authenticated = authenticated;
    Ok(m)
}

/// `check_manifest` for any view `T`; `signature` None: not judged (and
/// not authenticated).
fn check_as<T: serde::de::DeserializeOwned + Named>(
    key: &Key,
    path: &Path,
    text: &[u8],
    signature: Option<Signature<'_>>,
) -> Result<(T, bool), ManifestError> {
    let mut authenticated = false;
    if let Some(sig) = signature {
        let short = key.short().to_string();
        let why = match sig.trust.verify(key, text, sig.text) {
            Verdict::Authenticated => None,
            Verdict::Unsigned => Some(ManifestError::Unsigned { short }),
            Verdict::Bad => Some(ManifestError::BadSignature {
                short,
                path: sig.path,
            }),
            Verdict::Untrusted { id } => Some(ManifestError::Untrusted { short, id }),
        };
        match why {
            None => authenticated = true,
            Some(why) if !sig.trust.trust_unsigned => return Err(why),
            Some(_) => {}
        }
    }
    let m: T = serde_json::from_slice(text).map_err(|source| ManifestError::Damaged {
        path: path.to_path_buf(),
        source,
    })?;
    if m.names() != (MANIFEST_FORMAT, key) {
        return Err(ManifestError::Foreign {
            path: path.to_path_buf(),
        });
    }
    Ok((m, authenticated))
}

/// The cache dir failing migsnap for a reason that is neither the dir's
/// nor the user's: the system's, or a bug (exit code 3).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `flock` itself failed (not "held by another").
    #[error("cannot lock `{}`", .path.display())]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot serialise the manifest")]
    Serialise(#[source] serde_json::Error),
}

impl crate::error::Typed for StoreError {
    fn kind(&self) -> crate::error::Kind {
        crate::error::Kind::Internal
    }
}

/// A cache dir migsnap will not use, as data: the binary says how to fix
/// it (`commands::hints`), naming its own flags.
#[derive(Debug, thiserror::Error)]
pub enum BadCacheDir {
    #[error("cannot create the cache directory `{}`", .dir.display())]
    Create {
        dir: PathBuf,
        /// Something that is not a directory has the name.
        exists: bool,
        source: std::io::Error,
    },
    #[error("cannot read the cache dir `{}`", .dir.display())]
    Unreadable {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("refusing the cache dir `{}`: it is owned by uid {owner}, not by you (uid {me})", .dir.display())]
    NotYours { dir: PathBuf, owner: u32, me: u32 },
    #[error("refusing the cache dir `{}`: its mode {mode:04o} lets group or others write to it", .dir.display())]
    OthersWrite { dir: PathBuf, mode: u32 },
    /// Writing failed: full, read-only, denied (the source's kind says).
    #[error("cannot write to the cache dir `{}`", .dir.display())]
    Write {
        dir: PathBuf,
        source: std::io::Error,
    },
}

impl crate::error::Typed for BadCacheDir {
    fn kind(&self) -> crate::error::Kind {
        crate::error::Kind::Usage
    }
}

/// Refuse a cache dir that someone else could write to: its snapshots run
/// as SQL with the connecting role's rights. Like ssh with `~/.ssh`, the
/// dir must be owned by the user running migsnap and not writable by group
/// or others.
pub fn check_cache_dir(dir: &Path) -> Result<()> {
    let meta = std::fs::metadata(dir).map_err(|source| BadCacheDir::Unreadable {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(BadCacheDir::NotYours {
            dir: dir.to_path_buf(),
            owner: meta.uid(),
            me,
        }
        .into());
    }
    if mode & 0o022 != 0 {
        return Err(BadCacheDir::OthersWrite {
            dir: dir.to_path_buf(),
            mode,
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store in a private temp dir, with a manifest for `key` that holds
    /// only what `load_checked` reads, its record naming Django `django`.
    fn store_with(django: &str) -> (tempfile::TempDir, Store, Key) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let store = Store::new(dir.path());
        let key = Key::parse(&"ab".repeat(32)).expect("key");
        put_manifest(&store, &key, django);
        (dir, store, key)
    }

    /// Replace the manifest the way migsnap does: a new file renamed in.
    fn put_manifest(store: &Store, key: &Key, django: &str) {
        let json = serde_json::json!({
            "format": MANIFEST_FORMAT,
            "key": key,
            "depends": {"checked": Checked { django: django.into(), ..Checked::default() }},
        });
        let tmp = store.dir().join("manifest.tmp");
        std::fs::write(&tmp, json.to_string()).expect("write");
        std::fs::rename(&tmp, store.manifest_path(key)).expect("rename");
    }

    fn warm_of(store: &Store, key: &Key) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(store.warm_path(key)).expect("warm file"))
            .expect("json")
    }

    /// Rewrite the warm file as if its run began long after the manifest
    /// settled, with `django` in its record instead of the manifest's.
    fn settle_warm(store: &Store, key: &Key, django: &str) {
        let mut warm = warm_of(store, key);
        warm["started_ns"] = (statcache::now_ns() + 10 * statcache::RACY_MARGIN_NS).into();
        warm["checked"]["django"] = django.into();
        std::fs::write(store.warm_path(key), warm.to_string()).expect("write");
    }

    #[test]
    fn the_warm_record_is_read_from_its_small_file_while_the_manifest_is_unchanged() {
        let (_dir, store, key) = store_with("5.0");
        let django = |s: &Store| s.load_checked(&key).map(|c| c.django);
        assert_eq!(django(&store).as_deref(), Some("5.0"), "from the manifest");
        assert_eq!(warm_of(&store, &key)["checked"]["django"], "5.0", "written");
        // Settled: the small file is what is read (shown by a record that
        // differs from the manifest's, which only a forger would write).
        settle_warm(&store, &key, "from the warm file");
        assert_eq!(django(&store).as_deref(), Some("from the warm file"));

        // A new manifest of the same size: a new inode and ctime, so the
        // small file no longer speaks for it.
        settle_warm(&store, &key, "stale");
        put_manifest(&store, &key, "5.1");
        assert_eq!(django(&store).as_deref(), Some("5.1"));
        assert_eq!(
            warm_of(&store, &key)["checked"]["django"],
            "5.1",
            "rewritten"
        );

        // Not settled (the manifest changed within the margin before the
        // small file's run began): the manifest is read.
        let mut warm = warm_of(&store, &key);
        warm["checked"]["django"] = "racy".into();
        std::fs::write(store.warm_path(&key), warm.to_string()).expect("write");
        assert_eq!(django(&store).as_deref(), Some("5.1"));

        // Damaged: ignored. No manifest: nothing, whatever the small file says.
        std::fs::write(store.warm_path(&key), b"{\"format\": 1, ").expect("write");
        assert_eq!(django(&store).as_deref(), Some("5.1"));
        settle_warm(&store, &key, "orphan");
        std::fs::remove_file(store.manifest_path(&key)).expect("remove");
        assert_eq!(django(&store), None);
    }

    /// How an accelerated snapshot was built rides in the small file, so
    /// serving its template reads no manifest (issue #24).
    #[test]
    fn how_a_snapshot_was_built_is_read_with_the_warm_record() {
        let (_dir, store, key) = store_with("5.0");
        let json = serde_json::json!({
            "format": MANIFEST_FORMAT,
            "key": key,
            "depends": {"checked": Checked { django: "5.0".into(), ..Checked::default() }},
            "build": {"accelerated": true, "stock_migrations": ["shop.0002_x"], "source": "cold"},
        });
        std::fs::write(store.manifest_path(&key), json.to_string()).expect("write");
        let want = HowBuilt {
            accelerated: true,
            stock_migrations: vec!["shop.0002_x".into()],
        };
        assert_eq!(
            store.how_built(&key),
            Some(want.clone()),
            "from the manifest"
        );
        assert_eq!(
            warm_of(&store, &key)["built"]["accelerated"],
            true,
            "written"
        );
        // Settled: read from the small file (a value only it holds).
        let mut warm = warm_of(&store, &key);
        warm["started_ns"] = (statcache::now_ns() + 10 * statcache::RACY_MARGIN_NS).into();
        warm["built"]["stock_migrations"] = serde_json::json!(["from.the_warm_file"]);
        std::fs::write(store.warm_path(&key), warm.to_string()).expect("write");
        assert_eq!(
            store.how_built(&key).map(|b| b.stock_migrations),
            Some(vec!["from.the_warm_file".to_string()])
        );
        // A stock manifest: nothing to say.
        put_manifest(&store, &key, "5.0");
        assert_eq!(store.how_built(&key), Some(HowBuilt::default()));
    }
}
