//! The key's stat cache (issue #24): what hashing each key file gave, with
//! the file's stat as it was then, so that a warm run re-hashes only what
//! changed. Git's index does the same for `git status`.
//!
//! One file per project root in the cache dir. It is an input like any
//! other, never trusted to be right: a file that is not ours, not private,
//! truncated, damaged (its trailing sha256 does not match) or written by
//! another format is ignored, and every file is hashed as without it.
//! Writes go to a temp file in the same directory, renamed into place (a
//! rename replaces a link planted there, it does not follow it); reads open
//! without following a link.
//!
//! When is a remembered hash still the file's? When its stat (size, mtime,
//! ctime, inode, device; nanoseconds) is what was recorded, *and* the file
//! last changed (its ctime and mtime) at least `RACY_MARGIN` before the run
//! that hashed it began (`Header::started_ns`). The second half is git's
//! "racy git" rule, made stricter: git compares with the index file's own
//! mtime, taken after the hashing; here the reference is taken before it.
//! A write after that moment gets a timestamp of at least "that moment
//! minus one timestamp tick", so it cannot keep the recorded ctime: a file
//! changed twice within one tick (ext4 stamps from a coarse clock, FAT in
//! 2 s steps) is hashed again until a later run sees it settled.
//!
//! Why ctime and inode are trusted here, as git trusts them by default
//! (`core.trustctime`): the ctime is set by the kernel on every write,
//! rename into place and `chmod`, and no system call sets it to a chosen
//! value (`touch -d` and `os.utime` set the mtime, and so set the ctime to
//! now), so an edit that keeps the size and puts the old mtime back is
//! still seen. An editor that saves by writing a new file and renaming it
//! over the old one changes the inode as well. What this does not catch:
//! writes to the block device under the file system, and a file system
//! whose clock is not this machine's (a network share from a server whose
//! clock runs behind) that changes a file twice within one of its ticks;
//! the same limits as git's. Something that changes the ctime without the
//! content (a `chmod`, a backup tool's xattr) only costs a hash.

use sha2::{Digest, Sha256};
use std::ffi::OsStr;
use std::fs::Metadata;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Bump when the layout changes (or what a hash of a kind means).
const MAGIC: &[u8] = b"migsnap-statcache-v1\n";

/// How long before a run's start a file must have last changed for the
/// next run to trust its recorded hash: more than the coarsest timestamp
/// tick in use (FAT's 2 s), so that any later write changes the ctime.
/// What it costs: a file saved within 3 s before a run is hashed once more
/// by the next one.
pub const RACY_MARGIN_NS: i64 = 3_000_000_000;

/// A stored file is never larger than this: more is not a stat cache
/// (100,000 entries of a long path), and is not read into memory.
const MAX_BYTES: u64 = 64 << 20;

/// What kind of hash an entry holds: the same file may be hashed two ways
/// under different globs (a pyproject.toml as a key input hashes its
/// dependency tables only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashKind {
    /// `hash::hash_normalized` of the whole content.
    Content = 0,
    /// `fingerprint`'s hash of pyproject.toml's dependency tables.
    PyprojectDeps = 1,
}

impl HashKind {
    fn from_byte(b: u8) -> Option<HashKind> {
        match b {
            0 => Some(HashKind::Content),
            1 => Some(HashKind::PyprojectDeps),
            _ => None,
        }
    }
}

/// A file's stat, as far as the cache compares it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stat {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub dev: u64,
}

impl Stat {
    pub fn of(meta: &Metadata) -> Stat {
        Stat {
            size: meta.size(),
            // Saturating: a file may carry any timestamp (`touch -d` far in
            // the future); it then only never counts as settled.
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }

    /// The same as `of` from a `statx` that asked for the basic stats, as
    /// `std::fs::metadata` does on Linux (the device as glibc's `makedev`
    /// builds it from major and minor, as std does).
    #[cfg(target_os = "linux")]
    pub fn of_statx(sx: &rustix::fs::Statx) -> Stat {
        Stat {
            size: sx.stx_size,
            mtime_ns: ns(sx.stx_mtime.tv_sec, i64::from(sx.stx_mtime.tv_nsec)),
            ctime_ns: ns(sx.stx_ctime.tv_sec, i64::from(sx.stx_ctime.tv_nsec)),
            ino: sx.stx_ino,
            dev: rustix::fs::makedev(sx.stx_dev_major, sx.stx_dev_minor),
        }
    }

    /// Whether the file last changed early enough before `started_ns` for
    /// any later change to show in its stat (see the module's doc).
    pub fn settled_before(&self, started_ns: i64) -> bool {
        let last = self.mtime_ns.max(self.ctime_ns);
        last < started_ns.saturating_sub(RACY_MARGIN_NS)
    }
}

fn ns(secs: i64, nsecs: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsecs)
}

/// One file's record: its stat when it was hashed, and the hash (sha256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: HashKind,
    pub path: String,
    pub stat: Stat,
    pub sha256: [u8; 32],
}

/// Now, in nanoseconds since the epoch: when a run that records hashes
/// begins (taken before the first file is read).
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The hashes a previous run recorded, as loaded (empty when there is no
/// usable cache).
///
/// Held as the file holds them, the paths in one buffer, and found through
/// an index of their own: a map of one `String` per entry cost a third of
/// a warm `key` at 5,000 files in allocations and SipHash, and a binary
/// search over the sorted paths as much again in comparisons of their
/// long shared prefixes (issue #24).
#[derive(Debug, Default)]
pub struct StatCache {
    started_ns: i64,
    /// Every entry's path, one after another.
    paths: Vec<u8>,
    records: Vec<Record>,
    /// Open addressing over `records`: slot `fast_hash(kind, path)` and
    /// the ones after it hold an entry's index + 1, 0 ends the probe.
    /// Twice as many slots as entries, a power of two.
    index: Vec<u32>,
}

#[derive(Debug)]
struct Record {
    kind: HashKind,
    /// Where its path is in `StatCache::paths`.
    start: usize,
    end: usize,
    stat: Stat,
    sha256: [u8; 32],
}

impl StatCache {
    /// The cache at `path`, if it is ours, private, whole and for `scope`
    /// (what the hashes depend on besides the files: the key format and
    /// the project root); otherwise an empty one.
    pub fn load(path: &Path, scope: &str) -> StatCache {
        read_checked(path)
            .and_then(|bytes| decode(&bytes, scope))
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The recorded sha256 of the file at `path`, when its stat is still
    /// `now` and it had settled before the recording run began.
    pub fn lookup(&self, kind: HashKind, path: &str, now: &Stat) -> Option<[u8; 32]> {
        self.find(kind, path, now).map(|i| self.records[i].sha256)
    }

    /// `lookup`, as the index of the entry that holds the hash
    /// (`sha256_at`, `entry_at`): a caller can note which entries it used
    /// without copying their paths.
    pub fn find(&self, kind: HashKind, path: &str, now: &Stat) -> Option<usize> {
        let i = self.position(kind, path.as_bytes())?;
        let r = &self.records[i];
        (r.stat == *now && r.stat.settled_before(self.started_ns)).then_some(i)
    }

    /// Where the entry for (kind, path) is, whatever its stat.
    fn position(&self, kind: HashKind, path: &[u8]) -> Option<usize> {
        let mask = self.index.len().checked_sub(1)?;
        let mut slot = fast_hash(kind, path) & mask;
        loop {
            let i = usize::try_from(self.index[slot]).ok()?.checked_sub(1)?;
            let r = &self.records[i];
            if r.kind == kind && self.path_of(r) == path {
                return Some(i);
            }
            slot = (slot + 1) & mask;
        }
    }

    pub fn sha256_at(&self, i: usize) -> [u8; 32] {
        self.records[i].sha256
    }

    /// Entry `i` as `save` takes it (None only for a path that is not
    /// UTF-8, which `find` never matched).
    pub fn entry_at(&self, i: usize) -> Option<Entry> {
        let r = self.records.get(i)?;
        Some(Entry {
            kind: r.kind,
            path: String::from_utf8(self.path_of(r).to_vec()).ok()?,
            stat: r.stat,
            sha256: r.sha256,
        })
    }

    fn path_of(&self, r: &Record) -> &[u8] {
        &self.paths[r.start..r.end]
    }
}

/// Write `entries`, recorded by a run that began at `started_ns`, to
/// `path` for `scope`: a temp file in its directory, renamed into place.
/// Only into a directory that is ours and closed to others (the cache dir
/// as `store::check_cache_dir` wants it); otherwise nothing is written. No
/// fsync: after a crash, a cache the rename left empty or torn reads as
/// damaged, and costs one full hash.
pub fn save(path: &Path, scope: &str, started_ns: i64, entries: &mut Vec<Entry>) -> bool {
    let Some(dir) = path.parent() else {
        return false;
    };
    if !private_dir(dir) {
        return false;
    }
    entries.sort_by(|a, b| (a.kind as u8, &a.path).cmp(&(b.kind as u8, &b.path)));
    // `decode` takes each (kind, path) once, in order.
    entries.dedup_by(|a, b| a.kind == b.kind && a.path == b.path);
    write_private(path, &encode(scope, started_ns, entries))
}

/// Put `bytes` at `path` whole or not at all: a temp file in its directory
/// (which must be ours and closed to others), renamed into place.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> bool {
    let Some(dir) = path.parent() else {
        return false;
    };
    if !private_dir(dir) {
        return false;
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("statcache");
    // tempfile creates it 0600 with O_EXCL: nothing planted is opened.
    let Ok(mut tmp) = tempfile::Builder::new()
        .prefix(&format!(".tmp-{name}."))
        .tempfile_in(dir)
    else {
        return false;
    };
    if tmp.write_all(bytes).is_err() {
        return false;
    }
    tmp.persist(path).is_ok()
}

/// Ours, and nobody else may write in it.
fn private_dir(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir).is_ok_and(|m| {
        m.is_dir()
            && m.uid() == nix::unistd::geteuid().as_raw()
            && m.permissions().mode() & 0o022 == 0
    })
}

/// The file's bytes, if it is a regular file of ours that only we can read
/// and write, in a directory as private, and of a sane size.
pub(crate) fn read_checked(path: &Path) -> Option<Vec<u8>> {
    if !private_dir(path.parent()?) {
        return None;
    }
    let mut file = crate::files::open_no_follow(path).ok()?;
    let meta = file.metadata().ok()?;
    let ours = meta.uid() == nix::unistd::geteuid().as_raw();
    if !meta.is_file() || !ours || meta.permissions().mode() & 0o077 != 0 || meta.len() > MAX_BYTES
    {
        return None;
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).ok()?);
    file.read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// Each walker thread's last directory, open: a file's stat taken relative
/// to it looks up one name, where a stat through the full path walks every
/// component again (a fifth of a warm `key`'s time at 5,000 files, issue
/// #24). The walker hands out a directory's files together, so one open
/// serves most of them.
#[derive(Default)]
pub(crate) struct DirCache {
    #[cfg(target_os = "linux")]
    open: Option<(PathBuf, std::os::fd::OwnedFd)>,
}

impl DirCache {
    /// The file's stat (following a link, as `std::fs::metadata` does), or
    /// None if it cannot be had.
    #[cfg(target_os = "linux")]
    pub fn stat(&mut self, path: &Path) -> Option<Stat> {
        use rustix::fs::{AtFlags, Mode, OFlags, StatxFlags};
        // Split at the last `/` by hand: `Path::parent` parses components
        // from the back, and showed in the profile. A walker path always
        // has one; anything odd takes the full path.
        let bytes = path.as_os_str().as_bytes();
        let split = memchr::memrchr(b'/', bytes).filter(|&at| at > 0 && at + 1 < bytes.len());
        let Some(at) = split else {
            return std::fs::metadata(path).ok().map(|m| Stat::of(&m));
        };
        let dir = Path::new(OsStr::from_bytes(&bytes[..at]));
        let name = OsStr::from_bytes(&bytes[at + 1..]);
        let same = matches!(&self.open, Some((d, _)) if d.as_os_str() == dir.as_os_str());
        if !same {
            // O_PATH: a handle to look up names in, nothing read.
            let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
            self.open = rustix::fs::open(dir, flags, Mode::empty())
                .ok()
                .map(|fd| (dir.to_path_buf(), fd));
        }
        let Some((_, fd)) = &self.open else {
            return std::fs::metadata(path).ok().map(|m| Stat::of(&m));
        };
        // What std's `metadata` asks for, so that the stat is the one it
        // would give (the cache compares them exactly).
        let sx = rustix::fs::statx(
            fd,
            name,
            AtFlags::STATX_SYNC_AS_STAT,
            StatxFlags::BASIC_STATS,
        )
        .ok()?;
        Some(Stat::of_statx(&sx))
    }

    #[cfg(not(target_os = "linux"))]
    pub fn stat(&mut self, path: &Path) -> Option<Stat> {
        std::fs::metadata(path).ok().map(|m| Stat::of(&m))
    }
}

/// Layout (little-endian): MAGIC; scope (u32 length, bytes); the run's
/// start (i64 ns); the entry count (u32); each entry as kind (u8), the
/// length of the path prefix it shares with the previous entry's (u16),
/// the rest of the path (u16 length, bytes), size (u64), mtime and ctime
/// (i64 ns), inode and device (u64), sha256 (32 bytes); then the sha256 of
/// everything before it. Paths are sorted, so most share their directory
/// with the previous one: 5,000 entries take about 400 KB.
fn encode(scope: &str, started_ns: i64, entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + entries.len() * 100);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(scope.len() as u32).to_le_bytes());
    out.extend_from_slice(scope.as_bytes());
    out.extend_from_slice(&started_ns.to_le_bytes());
    let kept: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.path.len() <= usize::from(u16::MAX))
        .collect();
    out.extend_from_slice(&(kept.len() as u32).to_le_bytes());
    let mut previous: &[u8] = b"";
    for e in kept {
        let path = e.path.as_bytes();
        let shared = previous
            .iter()
            .zip(path)
            .take_while(|(a, b)| a == b)
            .count();
        let rest = &path[shared..];
        out.push(e.kind as u8);
        out.extend_from_slice(&(shared as u16).to_le_bytes());
        out.extend_from_slice(&(rest.len() as u16).to_le_bytes());
        out.extend_from_slice(rest);
        out.extend_from_slice(&e.stat.size.to_le_bytes());
        out.extend_from_slice(&e.stat.mtime_ns.to_le_bytes());
        out.extend_from_slice(&e.stat.ctime_ns.to_le_bytes());
        out.extend_from_slice(&e.stat.ino.to_le_bytes());
        out.extend_from_slice(&e.stat.dev.to_le_bytes());
        out.extend_from_slice(&e.sha256);
        previous = path;
    }
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

/// `encode`'s bytes back, or None for anything that is not exactly that.
fn decode(bytes: &[u8], scope: &str) -> Option<StatCache> {
    let (body, sum) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
    if Sha256::digest(body).as_slice() != sum {
        return None;
    }
    let mut r = Reader(body);
    if r.take(MAGIC.len())? != MAGIC {
        return None;
    }
    let scope_len = r.u32()? as usize;
    if r.take(scope_len)? != scope.as_bytes() {
        return None;
    }
    let started_ns = r.i64()?;
    let count = r.u32()? as usize;
    // No more entries than the bytes could hold: a count is not trusted
    // to size an allocation.
    let mut records: Vec<Record> = Vec::with_capacity(count.min(body.len() / ENTRY_MIN));
    let mut paths: Vec<u8> = Vec::with_capacity(records.capacity() * 48);
    let mut path: Vec<u8> = Vec::new();
    for _ in 0..count {
        let kind = HashKind::from_byte(r.u8()?)?;
        let shared = usize::from(r.u16()?);
        let rest_len = usize::from(r.u16()?);
        if shared > path.len() {
            return None;
        }
        path.truncate(shared);
        path.extend_from_slice(r.take(rest_len)?);
        let stat = Stat {
            size: r.u64()?,
            mtime_ns: r.i64()?,
            ctime_ns: r.i64()?,
            ino: r.u64()?,
            dev: r.u64()?,
        };
        let sha256: [u8; 32] = r.take(32)?.try_into().ok()?;
        // Paths are compared as bytes: one that is not UTF-8 never
        // matches a lookup (and `entry_at` leaves it out).
        let start = paths.len();
        paths.extend_from_slice(&path);
        records.push(Record {
            kind,
            start,
            end: paths.len(),
            stat,
            sha256,
        });
    }
    if !r.0.is_empty() {
        return None;
    }
    let mut cache = StatCache {
        started_ns,
        paths,
        records,
        index: Vec::new(),
    };
    cache.index = cache.build_index()?;
    Some(cache)
}

impl StatCache {
    /// `index` for `records`; None when a (kind, path) is there twice,
    /// which `save` never writes.
    fn build_index(&self) -> Option<Vec<u32>> {
        let slots = (self.records.len() * 2)
            .max(1)
            .checked_next_power_of_two()?;
        let mut index = vec![0u32; slots];
        let mask = slots - 1;
        for (i, r) in self.records.iter().enumerate() {
            let path = self.path_of(r);
            let mut slot = fast_hash(r.kind, path) & mask;
            while let Some(j) = index[slot].checked_sub(1) {
                let other = &self.records[j as usize];
                if other.kind == r.kind && self.path_of(other) == path {
                    return None;
                }
                slot = (slot + 1) & mask;
            }
            index[slot] = u32::try_from(i + 1).ok()?;
        }
        Some(index)
    }
}

/// A quick, non-cryptographic hash of a path, for `StatCache::index`
/// only (FxHash's multiply-rotate, 8 bytes at a time): the file is ours
/// and private, and a bad spread would only cost time.
fn fast_hash(kind: HashKind, path: &[u8]) -> usize {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    let mix = |h: u64, w: u64| (h.rotate_left(5) ^ w).wrapping_mul(K);
    let mut h = mix(kind as u64, path.len() as u64);
    let mut chunks = path.chunks_exact(8);
    for c in &mut chunks {
        h = mix(h, u64::from_le_bytes(c.try_into().unwrap_or_default()));
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = mix(h, u64::from_le_bytes(tail));
    // The high bits are the well-mixed ones.
    (h ^ (h >> 29)) as usize
}

/// The fewest bytes an entry takes in the file (an empty rest of path).
const ENTRY_MIN: usize = 1 + 2 + 2 + 8 * 5 + 32;

pub(crate) struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    pub fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }
    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.array()?))
    }
}

/// Where the stat cache of the project at `root` lives in `cache_dir`: one
/// per project root, since its paths are relative to it.
pub fn path_for(cache_dir: &Path, root: &Path) -> PathBuf {
    let tag = crate::hash::hash_normalized(root.as_os_str().as_encoded_bytes());
    cache_dir.join(format!("statcache-{}", &tag[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, n: u8) -> Entry {
        Entry {
            kind: HashKind::Content,
            path: path.into(),
            stat: Stat {
                size: u64::from(n),
                mtime_ns: 1_000,
                ctime_ns: 2_000,
                ino: 7,
                dev: 8,
            },
            sha256: [n; 32],
        }
    }

    fn private_tempdir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        dir
    }

    #[test]
    fn what_is_saved_loads_back_with_shared_prefixes() {
        let dir = private_tempdir();
        let path = dir.path().join("statcache-x");
        let mut entries = vec![
            entry("app/migrations/0002_b.py", 2),
            entry("app/migrations/0001_a.py", 1),
            entry("zoo/migrations/0001_a.py", 3),
        ];
        let started = 10 * RACY_MARGIN_NS;
        assert!(save(&path, "scope", started, &mut entries));
        let mode = std::fs::metadata(&path)
            .expect("saved")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let cache = StatCache::load(&path, "scope");
        assert_eq!(cache.len(), 3);
        for e in &entries {
            assert_eq!(
                cache.lookup(e.kind, &e.path, &e.stat),
                Some(e.sha256),
                "{}",
                e.path
            );
            let mut other = e.stat;
            other.ctime_ns += 1;
            assert_eq!(cache.lookup(e.kind, &e.path, &other), None, "ctime");
            assert_eq!(
                cache.lookup(HashKind::PyprojectDeps, &e.path, &e.stat),
                None,
                "another kind of hash"
            );
        }
        assert!(
            StatCache::load(&path, "another scope").is_empty(),
            "another root or key format"
        );
    }

    /// The stat `fingerprint` takes relative to a directory is the one
    /// `std::fs::metadata` gives: entries written by either are trusted by
    /// the other.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_statx_gives_the_stat_metadata_gives() {
        use rustix::fs::{AtFlags, Mode, OFlags, StatxFlags};
        let dir = private_tempdir();
        let file = dir.path().join("a.py");
        std::fs::write(&file, "x = 1\n").expect("write");
        let fd = rustix::fs::open(dir.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
            .expect("open");
        let sx = rustix::fs::statx(
            &fd,
            "a.py",
            AtFlags::STATX_SYNC_AS_STAT,
            StatxFlags::BASIC_STATS,
        )
        .expect("statx");
        let meta = std::fs::metadata(&file).expect("stat");
        assert_eq!(Stat::of_statx(&sx), Stat::of(&meta));
    }

    #[test]
    fn a_cache_with_a_path_twice_is_not_one_save_wrote() {
        let dir = private_tempdir();
        let path = dir.path().join("statcache-x");
        let started = 10 * RACY_MARGIN_NS;
        let entries = [entry("b.py", 2), entry("a.py", 1)];
        // Out of order is still found.
        std::fs::write(&path, encode("s", started, &entries)).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let cache = StatCache::load(&path, "s");
        for e in &entries {
            assert_eq!(cache.lookup(e.kind, &e.path, &e.stat), Some(e.sha256));
        }
        let twice = [entry("a.py", 1), entry("a.py", 3)];
        std::fs::write(&path, encode("s", started, &twice)).expect("write");
        assert!(StatCache::load(&path, "s").is_empty(), "a path twice");
        // Many entries, in an index of their own: each found, nothing else.
        let mut many: Vec<Entry> = (0..3000u32)
            .map(|i| Entry {
                path: format!("app{:03}/migrations/{i:04}_x.py", i % 50),
                ..entry("", (i % 251) as u8)
            })
            .collect();
        assert!(save(&path, "s", started, &mut many));
        let cache = StatCache::load(&path, "s");
        assert_eq!(cache.len(), many.len());
        for e in &many {
            assert_eq!(cache.lookup(e.kind, &e.path, &e.stat), Some(e.sha256));
        }
        assert_eq!(
            cache.lookup(
                HashKind::Content,
                "app000/migrations/9999_x.py",
                &many[0].stat
            ),
            None
        );
        // `save` sorts and keeps one of each.
        let mut saved = vec![entry("b.py", 2), entry("a.py", 1), entry("a.py", 1)];
        assert!(save(&path, "s", started, &mut saved));
        let cache = StatCache::load(&path, "s");
        assert_eq!(cache.len(), 2);
        for e in &saved {
            assert_eq!(cache.lookup(e.kind, &e.path, &e.stat), Some(e.sha256));
            let i = cache.find(e.kind, &e.path, &e.stat).expect("found");
            assert_eq!(cache.entry_at(i).as_ref(), Some(e));
        }
    }

    #[test]
    fn a_file_that_changed_near_the_recording_run_is_not_trusted() {
        let dir = private_tempdir();
        let path = dir.path().join("statcache-x");
        let settled = entry("a.py", 1);
        let mut racy = entry("b.py", 2);
        // Changed within the margin before the run began: a second write in
        // the same timestamp tick would not show.
        racy.stat.ctime_ns = 10 * RACY_MARGIN_NS - RACY_MARGIN_NS / 2;
        let mut entries = vec![settled.clone(), racy.clone()];
        assert!(save(&path, "s", 10 * RACY_MARGIN_NS, &mut entries));
        let cache = StatCache::load(&path, "s");
        assert!(cache.lookup(settled.kind, "a.py", &settled.stat).is_some());
        assert_eq!(cache.lookup(racy.kind, "b.py", &racy.stat), None);
    }

    #[test]
    fn a_damaged_foreign_or_open_cache_is_ignored() {
        let dir = private_tempdir();
        let path = dir.path().join("statcache-x");
        let mut entries = vec![entry("a.py", 1)];
        assert!(save(&path, "s", 10 * RACY_MARGIN_NS, &mut entries));
        let good = std::fs::read(&path).expect("read");
        let load = || StatCache::load(&path, "s").len();
        assert_eq!(load(), 1);

        // Any byte flipped (a hash, a size): the trailing sum no longer holds.
        for at in [
            0,
            MAGIC.len() + 3,
            good.len() / 2,
            good.len() - 40,
            good.len() - 1,
        ] {
            let mut bad = good.clone();
            bad[at] ^= 0x20;
            std::fs::write(&path, &bad).expect("write");
            assert_eq!(load(), 0, "flipped byte {at}");
        }
        for cut in [0, 10, good.len() - 1] {
            std::fs::write(&path, &good[..cut]).expect("write");
            assert_eq!(load(), 0, "cut at {cut}");
        }
        // Readable by others: not ours to trust.
        std::fs::write(&path, &good).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(load(), 0, "mode 0644");
        // A link is not followed, wherever it points.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::rename(&path, &elsewhere).expect("move");
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        std::os::unix::fs::symlink(&elsewhere, &path).expect("link");
        assert_eq!(load(), 0, "a symlink");
        // Saving replaces the link, and leaves its target alone.
        assert!(save(&path, "s", 10 * RACY_MARGIN_NS, &mut entries));
        assert!(!std::fs::symlink_metadata(&path)
            .expect("saved")
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&elsewhere).expect("kept"), good);
        // In a directory others may write to: neither read nor written.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        assert_eq!(load(), 0, "an open directory");
        assert!(!save(&path, "s", 10 * RACY_MARGIN_NS, &mut entries));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
    }
}
