//! The walk's record (issue #24): what the last full walk of the project
//! found, so that a warm run checks the tree with one stat per directory
//! and per key file instead of listing every directory, matching every
//! name against the globs and the ignore rules and looking each file up in
//! the stat cache. Git's untracked cache does the same for `git status`.
//! At 5,000 migration files the walk was half of a pool hand-out.
//!
//! Why the stats stand for the walk: the walk's result is a function of
//! the directories' listings, the key files' contents, the ignore files
//! the walker read and its configuration, and the record keeps a stat (or
//! an absence) for each of them:
//! - every directory the walk listed: adding, removing or renaming an
//!   entry (a `.gitignore`, a `pyvenv.cfg`, a link retargeted with
//!   `ln -sf`, which renames over the old link) changes its mtime and
//!   ctime, and a directory replaced by another has another inode. A
//!   linked directory is kept as the walk saw it: through the link, so
//!   its target's stat;
//! - every directory left out because it holds a `pyvenv.cfg`: its
//!   listing says whether it still does;
//! - the `.gitignore` and `.ignore` files of those directories (their
//!   content is not in any listing; the walker reads none above the
//!   root);
//! - each key file, with the hash the walk gave it: the stat cache's
//!   rule, so an edit in place (same size, the old mtime put back) still
//!   moves the ctime;
//! - each link the walk found pointing at nothing: its target may appear
//!   without any listing changing, so it is kept as absent;
//! - the walk's settings (root, globs, formats): `config`, a digest.
//!
//! As in the stat cache, a stat counts only if it had settled before the
//! recording run began (`Stat::settled_before`): a change during or just
//! before that run leaves a stat the next run will not trust. Anything
//! that differs, or cannot be read, sends the run to the full walk, which
//! writes a new record. The file is the stat cache's kind of input: ours,
//! private, whole (a trailing xxh3 checksum), else ignored.

use crate::keyfiles::{Class, KeyFiles};
use crate::statcache::{self, DirCache, HashKind, Reader, Stat};
use std::borrow::Cow;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Bump when the layout or what the walk depends on changes.
const MAGIC: &[u8] = b"migsnap-walk-v5\n";

/// The ignore files the walker reads in each directory it lists, and
/// nowhere else (as custom ignore files, the later winning, with every
/// other source off: see `fingerprint`).
pub const IGNORE_FILES: &[&str] = &[".gitignore", ".ignore"];

/// Below this many key files one thread checks them all: a second one
/// costs more to start than it saves.
const PARALLEL_FROM: usize = 512;

/// How a key file was hashed: a kind of content hash, or only its
/// presence (a migrations package's `__init__.py`, which its directory's
/// listing stands for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hashed {
    Content(HashKind),
    Present,
}

/// One key file as the walk found it (its path borrowed from a record
/// read back).
#[derive(Debug, Clone)]
pub struct File<'a> {
    pub class: Class,
    pub hashed: Hashed,
    /// Relative to the root, with `/`.
    pub rel: Cow<'a, str>,
    /// Its stat before it was read (unused for `Hashed::Present`).
    pub stat: Stat,
    pub sha256: [u8; 32],
}

/// What the caller derived from the files (the key) and from `from`, a
/// digest of whatever else that depends on: kept with the record, so that
/// a replay under the same `from` need not derive it again (hashing 5,000
/// paths and hashes into the key was 0.5 ms of a warm run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Derived {
    pub from: [u8; 32],
    pub value: [u8; 32],
}

/// What a full walk records as it goes, from its threads.
#[derive(Default)]
pub struct Recording {
    dirs: Mutex<Vec<(PathBuf, Stat)>>,
    watched: Mutex<Vec<(PathBuf, Option<Stat>)>>,
    files: Mutex<Vec<File<'static>>>,
    /// Something could not be stat'ed: no record is written.
    broken: AtomicBool,
}

impl Recording {
    /// A directory the walk listed, or left out for its `pyvenv.cfg`, the
    /// ignore files in it and every link in it.
    pub fn dir(&self, path: &Path, stat: Option<Stat>) {
        let Some(stat) = stat else {
            return self.broken();
        };
        lock(&self.dirs).push((path.to_path_buf(), stat));
        self.links_in(path);
        for name in IGNORE_FILES {
            let file = path.join(name);
            match presence(&file) {
                Presence::There(stat) => lock(&self.watched).push((file, Some(stat))),
                // None, or a link to nothing (`links_in` watches that): the
                // directory's listing says if one appears.
                Presence::Absent => {}
                Presence::Unknown => self.broken(),
            }
        }
    }

    /// Every link in `dir`, through the link: what it points at lives
    /// where no listing of ours may cover it, and may become a directory
    /// to walk, a key file, a `pyvenv.cfg` no more, or nothing, while
    /// `dir`'s listing stays as it was (a link to a plain file, a FIFO, a
    /// loop, an ignored name, a package's `__init__.py`). Retargeting the
    /// link itself renames over it: that is in the listing.
    fn links_in(&self, dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return self.broken();
        };
        for entry in entries {
            match entry {
                // The type from the directory entry: no stat of its own.
                Ok(e) if e.file_type().is_ok_and(|t| t.is_symlink()) => self.watch(&e.path()),
                Ok(_) => {}
                Err(_) => self.broken(),
            }
        }
    }

    /// Whether `path` is there (through a link, as the walker looks), for
    /// a decision the walk makes on it (a `pyvenv.cfg`): when it is a
    /// link, what was seen is kept as seen then. Stat'ed again later (the
    /// link in its directory's listing, `links_in`), a link outside the
    /// tree re-pointed in between would leave a record that disagrees with
    /// the walk it stands for.
    pub fn observe(&self, path: &Path) -> bool {
        let seen = presence(path);
        let is_link = path
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink());
        let there = match &seen {
            Presence::There(_) => true,
            Presence::Absent => false,
            // Kept (below) as a broken record; the walk decides as std would.
            Presence::Unknown => path.exists(),
        };
        if is_link || matches!(seen, Presence::Unknown) {
            self.keep(path, seen);
        }
        there
    }

    /// A link that points at nothing: it must still do so.
    pub fn dangling(&self, link: &Path) {
        self.watch(link);
    }

    pub fn file(&self, file: File<'static>) {
        lock(&self.files).push(file);
    }

    pub fn broken(&self) {
        self.broken.store(true, Ordering::Relaxed);
    }

    fn watch(&self, path: &Path) {
        self.keep(path, presence(path));
    }

    /// `path` as it was `seen`: to be the same on a replay.
    fn keep(&self, path: &Path, seen: Presence) {
        match seen {
            Presence::There(stat) => lock(&self.watched).push((path.to_path_buf(), Some(stat))),
            Presence::Absent => lock(&self.watched).push((path.to_path_buf(), None)),
            Presence::Unknown => self.broken(),
        }
    }

    /// Write the record of a walk that began at `started_ns` and reported
    /// `dangling`, from whose files the caller `derived` its value;
    /// nothing when something could not be recorded.
    pub fn save(
        self,
        path: &Path,
        root: &Path,
        config: &[u8; 32],
        started_ns: i64,
        dangling: &[String],
        derived: Derived,
    ) {
        if self.broken.into_inner() {
            // A record of the walk before stays: it fails its checks, as
            // the tree it recorded has changed (else this walk could have
            // stat'ed everything too), and costs one more full walk.
            let _ = std::fs::remove_file(path);
            return;
        }
        let mut files = self.files.into_inner().unwrap_or_else(|p| p.into_inner());
        // By path: a directory's files together, so the check's open
        // directory serves them all.
        files.sort_by(|a, b| a.rel.cmp(&b.rel));
        let record = Record {
            config: *config,
            started_ns,
            root: Cow::Borrowed(root),
            dirs: owned(self.dirs.into_inner().unwrap_or_else(|p| p.into_inner())),
            watched: owned(self.watched.into_inner().unwrap_or_else(|p| p.into_inner())),
            files,
            dangling: dangling.to_vec(),
            derived,
        };
        statcache::write_private(path, &record.encode());
    }
}

/// The walk's result from the record, when every stat in it still holds.
#[derive(Debug)]
pub struct Replayed {
    pub files: RecordedFiles,
    pub dangling: Vec<String>,
    pub derived: Derived,
}

/// A replayed record's key files, read out of its bytes only when asked
/// for: a warm run takes the recorded key (`Derived`) and never asks, and
/// copying 5,000 paths and hashes out cost it 0.5 ms.
#[derive(Debug, Clone)]
pub struct RecordedFiles(Arc<Vec<u8>>);

impl RecordedFiles {
    pub fn key_files(&self) -> KeyFiles {
        // The bytes decoded before (`replay`), and nothing changes them.
        let record = Record::decode(&self.0);
        debug_assert!(record.is_some(), "a replayed record decodes again");
        let Some(record) = record else {
            return KeyFiles::default();
        };
        let bytes = record.files.iter().map(|f| f.rel.len() + 64).sum();
        let mut files = KeyFiles::with_capacity(record.files.len(), bytes);
        for f in &record.files {
            files.push(f.class, &f.rel, |text| match f.hashed {
                Hashed::Present => text.push_str("present"),
                Hashed::Content(_) => crate::hash::hex_into(text, &f.sha256),
            });
        }
        files
    }
}

/// The record at `path` of the walk from `root`, checked against the
/// tree (see the module docs); None: walk.
pub fn replay(path: &Path, root: &Path, config: &[u8; 32]) -> Option<Replayed> {
    let bytes = statcache::read_checked(path)?;
    let record = Record::decode(&bytes)?;
    if record.config != *config || *record.root != *root {
        return None;
    }
    if !record.holds() {
        return None;
    }
    let (dangling, derived) = (record.dangling, record.derived);
    Some(Replayed {
        files: RecordedFiles(Arc::new(bytes)),
        dangling,
        derived,
    })
}

impl Record<'_> {
    /// Every stat in the record still holds: its directories', its
    /// watched paths' and its content-hashed files', each settled before
    /// the recording run. On two threads for a large tree (a stat is
    /// mostly the kernel's name look-up: it spreads over cores): one takes
    /// the directories and watched paths (each a look-up of a whole path)
    /// and part of the files, the other the rest of the files.
    fn holds(&self) -> bool {
        let started = self.started_ns;
        let settled = |now: Option<Stat>, then: &Stat| {
            now.is_some_and(|now| now == *then && then.settled_before(started))
        };
        let differs = AtomicBool::new(false);
        let dirs_hold = || {
            let mut dirs = DirCache::default();
            let dirs_hold = self.dirs.iter().all(|(p, s)| settled(dirs.stat(p), s));
            dirs_hold
                && self
                    .watched
                    .iter()
                    .all(|(p, then)| match (presence(p), then) {
                        (Presence::There(now), Some(then)) => settled(Some(now), then),
                        (Presence::Absent, None) => true,
                        _ => false,
                    })
        };
        let files_hold = |part: &[File<'_>]| {
            let mut open = DirCache::default();
            let mut path = self.root.as_os_str().as_bytes().to_vec();
            let base = path.len();
            for f in part {
                if differs.load(Ordering::Relaxed) {
                    return false;
                }
                if f.hashed == Hashed::Present {
                    continue;
                }
                path.truncate(base);
                path.push(b'/');
                path.extend_from_slice(f.rel.as_bytes());
                if !settled(open.stat(Path::new(OsStr::from_bytes(&path))), &f.stat) {
                    differs.store(true, Ordering::Relaxed);
                    return false;
                }
            }
            true
        };
        let files = &self.files[..];
        if files.len() < PARALLEL_FROM {
            return dirs_hold() && files_hold(files);
        }
        // A whole path's look-up costs about what three names in an open
        // directory do: the first thread's share of files is smaller by
        // that much.
        let paths = 3 * (self.dirs.len() + self.watched.len());
        let (first, second) = files.split_at(files.len().saturating_sub(paths) / 2);
        std::thread::scope(|s| {
            let other = s.spawn(|| {
                let held = dirs_hold() && files_hold(first);
                if !held {
                    differs.store(true, Ordering::Relaxed);
                }
                held
            });
            let held = files_hold(second);
            other.join().unwrap_or(false) && held
        })
    }
}

/// The record of the project whose stat cache is at `stat_cache`: beside
/// it, under its name (so whatever passes the stat cache over, passes this
/// over too).
pub fn path_beside(stat_cache: &Path) -> PathBuf {
    let mut name = stat_cache.as_os_str().to_os_string();
    name.push(".walk");
    PathBuf::from(name)
}

enum Presence {
    There(Stat),
    /// Nothing there, or a link to nothing.
    Absent,
    /// Cannot tell (no permission): never recorded, never trusted.
    Unknown,
}

/// What is at `path`, following links as the walker does.
fn presence(path: &Path) -> Presence {
    match std::fs::metadata(path) {
        Ok(meta) => Presence::There(Stat::of(&meta)),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) =>
        {
            Presence::Absent
        }
        Err(_) => Presence::Unknown,
    }
}

/// Recorded paths as a record's.
fn owned<T>(paths: Vec<(PathBuf, T)>) -> Vec<(Cow<'static, Path>, T)> {
    paths.into_iter().map(|(p, t)| (Cow::Owned(p), t)).collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The record as stored; read back, its paths borrow the bytes read.
struct Record<'a> {
    config: [u8; 32],
    started_ns: i64,
    /// What the files' paths are relative to.
    root: Cow<'a, Path>,
    dirs: Vec<(Cow<'a, Path>, Stat)>,
    watched: Vec<(Cow<'a, Path>, Option<Stat>)>,
    /// In path order, each path once (`decode` refuses anything else).
    files: Vec<File<'a>>,
    dangling: Vec<String>,
    derived: Derived,
}

/// The fewest bytes a stat takes.
const STAT_BYTES: usize = 8 * 5;

impl<'a> Record<'a> {
    /// Layout (little-endian): MAGIC; config (32 bytes); the run's start
    /// (i64 ns); the root (u32 length, bytes); then each list as a count (u32) and its items: a directory
    /// as its path (u32 length, bytes) and stat (size, mtime, ctime,
    /// inode, device: 8 bytes each); a watched path as its path, a
    /// presence byte and the stat when present; a file as class and hash
    /// kind (u8 each: 0 content, 1 pyproject, 2 present), its relative
    /// path, stat and sha256; a dangling link as its relative path; the
    /// derived value's `from` and value (32 bytes each). Then the 64-bit
    /// xxh3 of everything before it (damage, not forgery: see
    /// `Cargo.toml`).
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.files.len() * 120);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.config);
        out.extend_from_slice(&self.started_ns.to_le_bytes());
        let bytes = |out: &mut Vec<u8>, b: &[u8]| {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        };
        bytes(&mut out, self.root.as_os_str().as_bytes());
        let stat = |out: &mut Vec<u8>, s: &Stat| {
            for v in [s.size, s.mtime_ns as u64, s.ctime_ns as u64, s.ino, s.dev] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        };
        out.extend_from_slice(&(self.dirs.len() as u32).to_le_bytes());
        for (p, s) in &self.dirs {
            bytes(&mut out, p.as_os_str().as_bytes());
            stat(&mut out, s);
        }
        out.extend_from_slice(&(self.watched.len() as u32).to_le_bytes());
        for (p, s) in &self.watched {
            bytes(&mut out, p.as_os_str().as_bytes());
            out.push(u8::from(s.is_some()));
            if let Some(s) = s {
                stat(&mut out, s);
            }
        }
        out.extend_from_slice(&(self.files.len() as u32).to_le_bytes());
        for f in &self.files {
            out.push(f.class as u8);
            out.push(match f.hashed {
                Hashed::Content(kind) => kind as u8,
                Hashed::Present => 2,
            });
            bytes(&mut out, f.rel.as_bytes());
            stat(&mut out, &f.stat);
            out.extend_from_slice(&f.sha256);
        }
        out.extend_from_slice(&(self.dangling.len() as u32).to_le_bytes());
        for d in &self.dangling {
            bytes(&mut out, d.as_bytes());
        }
        out.extend_from_slice(&self.derived.from);
        out.extend_from_slice(&self.derived.value);
        let sum = xxhash_rust::xxh3::xxh3_64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// `encode`'s bytes back, or None for anything that is not exactly that.
    fn decode(all: &'a [u8]) -> Option<Record<'a>> {
        let (body, sum) = all.split_at_checked(all.len().checked_sub(8)?)?;
        if xxhash_rust::xxh3::xxh3_64(body).to_le_bytes() != sum {
            return None;
        }
        let mut r = Reader(body);
        if r.take(MAGIC.len())? != MAGIC {
            return None;
        }
        let config: [u8; 32] = r.array()?;
        let started_ns = r.i64()?;
        // No count is trusted to size an allocation beyond what the bytes
        // could hold.
        let count = |r: &mut Reader, least: usize| {
            let n = r.u32()? as usize;
            (n <= body.len() / least).then_some(n)
        };
        let bytes = |r: &mut Reader<'a>| -> Option<&'a [u8]> {
            let n = r.u32()? as usize;
            r.take(n)
        };
        let stat = |r: &mut Reader| {
            Some(Stat {
                size: r.u64()?,
                mtime_ns: r.i64()?,
                ctime_ns: r.i64()?,
                ino: r.u64()?,
                dev: r.u64()?,
            })
        };
        let path = |b: &'a [u8]| Cow::Borrowed(Path::new(OsStr::from_bytes(b)));
        let root = path(bytes(&mut r)?);
        // Each list sized from its count (bounded above): no reallocation
        // copies a 5,000-file list while it is read.
        let n = count(&mut r, 4 + STAT_BYTES)?;
        let mut dirs = Vec::with_capacity(n);
        for _ in 0..n {
            dirs.push((path(bytes(&mut r)?), stat(&mut r)?));
        }
        let n = count(&mut r, 5)?;
        let mut watched = Vec::with_capacity(n);
        for _ in 0..n {
            let p = path(bytes(&mut r)?);
            let s = match r.u8()? {
                0 => None,
                1 => Some(stat(&mut r)?),
                _ => return None,
            };
            watched.push((p, s));
        }
        let n = count(&mut r, 2 + 4 + STAT_BYTES + 32)?;
        let mut files: Vec<File<'a>> = Vec::with_capacity(n);
        for _ in 0..n {
            let class = Class::from_byte(r.u8()?)?;
            let hashed = match r.u8()? {
                0 => Hashed::Content(HashKind::Content),
                1 => Hashed::Content(HashKind::PyprojectDeps),
                2 => Hashed::Present,
                _ => return None,
            };
            let rel = std::str::from_utf8(bytes(&mut r)?).ok()?;
            // The key takes them in this order, once each.
            if files.last().is_some_and(|last| *last.rel >= *rel) {
                return None;
            }
            let stat = stat(&mut r)?;
            let sha256 = r.array()?;
            files.push(File {
                class,
                hashed,
                rel: Cow::Borrowed(rel),
                stat,
                sha256,
            });
        }
        let mut dangling = Vec::new();
        for _ in 0..count(&mut r, 4)? {
            dangling.push(std::str::from_utf8(bytes(&mut r)?).ok()?.to_string());
        }
        let derived = Derived {
            from: r.array()?,
            value: r.array()?,
        };
        if !r.0.is_empty() {
            return None;
        }
        Some(Record {
            config,
            started_ns,
            root,
            dirs,
            watched,
            files,
            dangling,
            derived,
        })
    }
}

/// Rewrite the record at `path` as if its run had begun at `started_ns`,
/// with `forge` applied to its files and derived value: a test's way to a
/// record every stat of which has settled, or that lies about a hash or
/// the key (to tell it was used).
#[cfg(test)]
pub(crate) fn forge(path: &Path, started_ns: i64, forge: impl Fn(&mut [File], &mut Derived)) {
    let bytes = statcache::read_checked(path).expect("a record");
    let mut record = Record::decode(&bytes).expect("whole");
    record.started_ns = started_ns;
    forge(&mut record.files, &mut record.derived);
    assert!(statcache::write_private(path, &record.encode()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_encoded_decodes_back_and_damage_is_refused() {
        let stat = Stat {
            size: 1,
            mtime_ns: 2,
            ctime_ns: 3,
            ino: 4,
            dev: 5,
        };
        let record = Record {
            config: [7; 32],
            started_ns: 99,
            root: Path::new("/p").into(),
            dirs: vec![
                (Path::new("/p").into(), stat),
                (Path::new("/p/a").into(), stat),
            ],
            watched: vec![
                (Path::new("/.gitignore").into(), None),
                (Path::new("/p/.ignore").into(), Some(stat)),
            ],
            files: vec![
                File {
                    class: Class::Migration,
                    hashed: Hashed::Content(HashKind::Content),
                    rel: "a/migrations/0001_initial.py".into(),
                    stat,
                    sha256: [8; 32],
                },
                File {
                    class: Class::Input,
                    hashed: Hashed::Content(HashKind::PyprojectDeps),
                    rel: "pyproject.toml".into(),
                    stat,
                    sha256: [9; 32],
                },
            ],
            dangling: vec!["a/migrations/0002_gone.py".into()],
            derived: Derived {
                from: [5; 32],
                value: [6; 32],
            },
        };
        let bytes = record.encode();
        let back = Record::decode(&bytes).expect("decodes");
        assert_eq!(back.encode(), bytes, "the same record");
        assert_eq!(back.watched[0].1, None);
        assert_eq!(back.derived, record.derived);
        assert_eq!(
            back.files[1].hashed,
            Hashed::Content(HashKind::PyprojectDeps)
        );
        for at in [0, MAGIC.len() + 3, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            assert!(Record::decode(&bad).is_none(), "a flipped byte at {at}");
        }
        assert!(
            Record::decode(&bytes[..bytes.len() - 1]).is_none(),
            "cut short"
        );
        // The key takes the files in path order, once each: a record that
        // has them otherwise is not one a walk wrote.
        for files in [
            vec![record.files[1].clone(), record.files[0].clone()],
            vec![record.files[0].clone(), record.files[0].clone()],
        ] {
            let odd = Record {
                files,
                root: record.root.clone(),
                dirs: record.dirs.clone(),
                watched: record.watched.clone(),
                dangling: record.dangling.clone(),
                ..record
            };
            assert!(Record::decode(&odd.encode()).is_none());
        }
    }
}
