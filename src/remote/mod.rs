//! The shared snapshot store (issue #14): the cache dir's dumps and
//! manifests on object storage (S3 or S3-compatible, or a shared
//! directory), so that a snapshot one machine built serves every other.
//!
//! Layout under the URL's prefix, for one key:
//!
//! ```text
//! <key>.<16 hex>.sql.zst         the dump, byte for byte the cache dir's,
//!                                named by its sha256 (the manifest has all of it)
//! <key>.<16 hex>.sig             the manifest's signatures (`sign`: Ed25519
//!                                by the pusher's signing key, an HMAC with a
//!                                cache secret), named by the sha256 of the
//!                                manifest it signs
//! <key>.json                     the manifest, byte for byte; written last
//! ```
//!
//! The manifest is the commit marker: it is created with a conditional put
//! (`If-None-Match: *`), after the dump and the signature it names. The dump
//! and the signature are content-addressed, so even two pushers of one key
//! whose conditional puts a store fails to serialise can never pair a
//! manifest with another build's dump or signature: whichever manifest
//! stands, what it names is its own. A dump or signature that no manifest
//! names is never read, and `gc --remote` removes it once it is old enough
//! not to belong to a push in flight.
//!
//! Nothing read from the store is believed before it is checked, exactly as
//! the cache dir's files are (`store::check_manifest`): the signature (a
//! snapshot no trusted key signed is refused, or with `trust-unsigned` kept
//! foreign: never signed into the cache dir, never an ancestor), then the
//! manifest's format and key, then the dump's
//! size and sha256 while it streams into the cache dir. A damaged object is
//! reported and never enters the cache dir; what does enter it is restored
//! by the same checked path as a dump built here (the restore's allow-list).
//!
//! This module knows no PostgreSQL server, no Django and no settings: it
//! moves checked snapshots between a `Store` (the cache dir) and the
//! object store, and says why when it cannot.

mod error;
mod list;
mod transfer;

pub use error::RemoteError;

use crate::key::Key;
use crate::sign::Trust;
use crate::store::{self, Manifest, Signature, Store};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long any one wait on the store may take unless configured
/// otherwise: connecting, each read of a download, each small request as a
/// whole (retries included).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The slowest transfer accepted unless configured otherwise, in bytes per
/// second: a store that sends (or takes) less in any `timeout` window, or
/// whose download of S bytes is not over after `2 × timeout + S / rate`, is
/// treated as down (issue #21: a store dribbling one byte every two seconds
/// kept `prepare` waiting forever, each read finishing within the timeout).
pub const DEFAULT_MIN_RATE: u64 = 256 << 10;
/// The largest manifest accepted from the store. 10,000 migrations make
/// about 1.5 MB; this bounds what a hostile store can make migsnap hold.
const MAX_MANIFEST: u64 = 64 << 20;
const MAX_SIGNATURE: u64 = 1024;
/// A dump or signature that no manifest names, younger than this, may
/// belong to a push still uploading: `gc --remote` leaves it.
pub const ORPHAN_AGE: Duration = Duration::from_secs(60 * 60);

/// How to open a store.
#[derive(Debug, Clone)]
pub struct Options {
    /// Bounds every wait on the store (see `DEFAULT_TIMEOUT`).
    pub timeout: Duration,
    /// Bytes per second below which a transfer counts as stalled (see
    /// `DEFAULT_MIN_RATE`); never 0.
    pub min_rate: u64,
    /// Signs what is pushed; judges what is fetched.
    pub trust: Trust,
    /// The backend's own environment (`AWS_*`), as `env::backend_vars`
    /// collects it: passed in, not read here, so that the settings decide
    /// what migsnap reads.
    pub env: Vec<(String, String)>,
}

impl Options {
    pub fn new(env: Vec<(String, String)>) -> Options {
        Options {
            timeout: DEFAULT_TIMEOUT,
            min_rate: DEFAULT_MIN_RATE,
            trust: Trust::default(),
            env,
        }
    }
}

/// A snapshot store, opened from its URL.
#[derive(Clone)]
pub struct Remote {
    /// As configured; credentials never appear in it (they come from the
    /// backend's environment), so it is safe to print.
    url: String,
    objects: Arc<dyn ObjectStore>,
    /// How the prefix is listed: not through `objects`, whose listing
    /// fails as a whole on one name it cannot represent (see `list`).
    lister: list::Lister,
    prefix: ObjPath,
    timeout: Duration,
    min_rate: u64,
    trust: Trust,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.url).finish()
    }
}

/// A manifest read from the store and checked.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub manifest: Manifest,
}

/// What `push` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// Uploaded: the dump's size in bytes.
    Uploaded { bytes: u64 },
    /// The store already had a snapshot for the key (pushed before, or by
    /// a concurrent pusher that committed first); nothing was left behind.
    AlreadyThere,
}

/// One object under the prefix that migsnap wrote, as a listing shows it.
#[derive(Debug, Clone)]
pub struct Object {
    pub key: Key,
    pub kind: ObjectKind,
    /// Its location in the store (for messages and `gc --json`).
    pub name: String,
    pub size: u64,
    pub modified_unix: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectKind {
    Manifest,
    /// A dump, named by its sha256.
    Dump {
        sha256: String,
    },
    /// A signature, named by the first 16 hex of its manifest's sha256.
    Signature {
        manifest: String,
    },
}

/// Everything under the prefix that has migsnap's names, and the names of
/// the objects that have not (not ours: never read, followed or removed).
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub objects: Vec<Object>,
    /// Objects directly under the prefix that are not migsnap's, by name
    /// (unprintable characters escaped): what `odd_names` warns about.
    pub odd: Vec<String>,
}

impl Listing {
    /// The warning a listing with objects that are not migsnap's deserves
    /// (said once per run by whoever lists).
    pub fn odd_names(&self, url: &str) -> Option<String> {
        const SHOWN: usize = 3;
        if self.odd.is_empty() {
            return None;
        }
        let mut names = self
            .odd
            .iter()
            .take(SHOWN)
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ");
        if self.odd.len() > SHOWN {
            names.push_str(&format!(" and {} more", self.odd.len() - SHOWN));
        }
        Some(format!(
            "the snapshot store `{url}` holds {} object(s) that migsnap did not write ({names}): skipping them",
            self.odd.len()
        ))
    }

    /// Keys with a manifest: the committed snapshots.
    pub fn committed(&self) -> impl Iterator<Item = &Object> {
        self.objects
            .iter()
            .filter(|o| o.kind == ObjectKind::Manifest)
    }
}

/// A store's URL, checked (cheap: nothing is built or contacted), so that
/// a typo is a configuration error at once while the client itself is
/// made only when a run needs the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// As written, without a trailing `/`: safe to print (credentials come
    /// from the backend's environment, never from the URL).
    text: String,
    place: Place,
    prefix: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    S3 { bucket: String },
    Dir(PathBuf),
}

impl Url {
    /// `s3://bucket[/prefix]`, or `file:///absolute/dir`.
    pub fn parse(url: &str) -> Result<Url, RemoteError> {
        let bad = |why: &str| RemoteError::BadUrl {
            url: url.to_string(),
            why: why.to_string(),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("it has no scheme"))?;
        let (place, prefix) = match scheme {
            "s3" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(bad("it names no bucket"));
                }
                let bucket = bucket.to_string();
                (Place::S3 { bucket }, prefix.trim_matches('/'))
            }
            "file" if rest.starts_with('/') => (Place::Dir(PathBuf::from(rest)), ""),
            "file" => return Err(bad("a file:// store needs an absolute path")),
            _ => return Err(bad("migsnap reads s3:// and file:// stores")),
        };
        ObjPath::parse(prefix).map_err(|_| bad("its path has an empty or `.` part"))?;
        Ok(Url {
            text: url.trim_end_matches('/').to_string(),
            place,
            prefix: prefix.to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Remote {
    /// The client for the store at `url`: for S3, credentials, region and
    /// endpoint from the backend's standard variables in `opts.env`.
    /// Nothing is contacted yet.
    pub fn open(url: &Url, opts: Options) -> Result<Remote, RemoteError> {
        let Options {
            timeout,
            min_rate,
            trust,
            env,
        } = opts;
        let bad = |why: String| RemoteError::BadUrl {
            url: url.text.clone(),
            why,
        };
        let (objects, lister): (Arc<dyn ObjectStore>, _) = match &url.place {
            Place::S3 { bucket } => {
                let s3 = Arc::new(transfer::s3(bucket, timeout, &env).map_err(bad)?);
                (s3.clone(), list::Lister::S3(s3))
            }
            Place::Dir(dir) => (
                Arc::new(
                    object_store::local::LocalFileSystem::new_with_prefix(dir)
                        .map_err(|_| bad("the directory does not exist".into()))?,
                ),
                list::Lister::Dir(dir.clone()),
            ),
        };
        let prefix = ObjPath::parse(&url.prefix).map_err(|_| bad("bad prefix".into()))?;
        Ok(Remote {
            url: url.text.clone(),
            objects,
            lister,
            prefix,
            timeout,
            min_rate: min_rate.max(1),
            trust,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn path(&self, name: &str) -> ObjPath {
        self.prefix.clone().join(name)
    }

    fn manifest_name(key: &Key) -> String {
        format!("{key}.json")
    }

    /// 16 hex of the sha256 tell two builds' dumps apart (the download
    /// checks all 64 against the manifest); names stay short enough for
    /// stores that keep each object in a file named after it.
    pub fn dump_name(key: &Key, sha256: &str) -> String {
        format!("{key}.{}.sql.zst", &sha256[..sha256.len().min(16)])
    }

    pub fn signature_name(key: &Key, manifest: &[u8]) -> String {
        let digest = crate::hash::sha256(manifest);
        format!("{key}.{}.sig", &digest[..16])
    }

    /// Where an object is, for messages: the URL and its name.
    fn shown(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("{}/{name}", self.url))
    }

    /// The committed snapshot for `key`, checked (signature, format, key),
    /// or None when the store has none. A manifest that fails a check is an
    /// error (`RemoteError::Refused`), to be reported and skipped.
    pub async fn fetch(&self, key: &Key) -> Result<Option<Fetched>, RemoteError> {
        let name = Self::manifest_name(key);
        let Some(bytes) = self.get_small(&name, MAX_MANIFEST).await? else {
            return Ok(None);
        };
        let sig_name = Self::signature_name(key, &bytes);
        let sig = self.get_small(&sig_name, MAX_SIGNATURE).await?;
        let signature = Signature {
            trust: &self.trust,
            text: sig.as_deref(),
            path: self.shown(&sig_name),
        };
        let manifest =
            store::check_manifest(key, &self.shown(&name), &bytes, signature).map_err(|why| {
                RemoteError::Refused {
                    short: key.short().to_string(),
                    why,
                }
            })?;
        Ok(Some(Fetched { manifest }))
    }

    /// Download the dump of `fetched` into the cache dir `into` and commit
    /// it there (dump, then manifest, signed as this machine signs when the
    /// store's copy was authenticated, left unsigned when it was not). The dump streams to a temp file with its size and sha256
    /// checked as it goes (memory stays flat); if it is not what the
    /// manifest says, nothing enters the cache dir. The caller holds the
    /// key's cache lock. `project`: the project the cache dir's copy is
    /// recorded for (the one that downloaded it: `ls` and `gc` act on a
    /// project's own snapshots), else the builder's, as the store has it.
    /// Returns the dump's size.
    pub async fn download(
        &self,
        fetched: &Fetched,
        into: &Store,
        project: Option<&Path>,
    ) -> Result<u64, RemoteError> {
        let m = &fetched.manifest;
        let name = Self::dump_name(&m.key, &m.dump.sha256);
        let expected = transfer::Expected {
            sha256: &m.dump.sha256,
            size: m.dump.size,
        };
        let tmp = transfer::download(self, &name, into, &m.key, expected).await?;
        into.persist(tmp, &into.dump_path(&m.key))
            .map_err(RemoteError::Local)?;
        let mut local = m.clone();
        if let Some(p) = project {
            local.project_dir = Some(p.to_path_buf());
        }
        into.write_manifest(&local).map_err(RemoteError::Local)?;
        Ok(m.dump.size)
    }

    /// Upload the cache dir's snapshot for `key`: the dump (checked against
    /// its manifest as it is read), its signature by this machine's signing
    /// key (and the cache secret), then the manifest with a conditional
    /// put. A store that already has the key keeps what it has. A foreign
    /// snapshot (kept under `trust-unsigned`) is never pushed: the push
    /// would sign it into trust.
    pub async fn push(&self, from: &Store, key: &Key) -> Result<Pushed, RemoteError> {
        let short = key.short().to_string();
        let (m, bytes) = match from.load_with_bytes(key) {
            Ok(Some(found)) => found,
            Ok(None) => return Err(RemoteError::NotCached { short }),
            Err(why) => return Err(RemoteError::LocalRefused { short, why }),
        };
        if !m.authenticated {
            let why = store::ManifestError::Unsigned {
                short: short.clone(),
            };
            return Err(RemoteError::LocalRefused { short, why });
        }
        // Before anything is uploaded: a refused key file pushes nothing.
        let signed = self.trust.sign(key, &bytes).map_err(RemoteError::Local)?;
        let manifest = Self::manifest_name(key);
        if self.exists(&manifest).await? {
            return Ok(Pushed::AlreadyThere);
        }
        let dump = Self::dump_name(key, &m.dump.sha256);
        transfer::upload(self, &from.dump_path(key), &dump, &m).await?;
        let sig = Self::signature_name(key, &bytes);
        if let Some(text) = &signed {
            self.put(&sig, text.clone().into_bytes(), PutMode::Overwrite)
                .await?;
        }
        crate::failpoint::point("remote.before_manifest");
        match self.put(&manifest, bytes.clone(), PutMode::Create).await {
            Ok(()) => Ok(Pushed::Uploaded { bytes: m.dump.size }),
            Err(RemoteError::Exists) => {
                // Another pusher committed first. Its manifest names its own
                // dump and signature; ours are named by their content, so
                // they go unless they are the very same objects.
                let theirs = self.get_small(&manifest, MAX_MANIFEST).await?;
                let same = |name: &str, their: Option<String>| their.as_deref() == Some(name);
                let their_dump = theirs.as_ref().and_then(|b| {
                    serde_json::from_slice::<Manifest>(b)
                        .ok()
                        .map(|t| Self::dump_name(key, &t.dump.sha256))
                });
                if !same(&dump, their_dump) {
                    let _ = self.delete(&dump).await;
                }
                let their_sig = theirs.as_ref().map(|b| Self::signature_name(key, b));
                if signed.is_some() && !same(&sig, their_sig) {
                    let _ = self.delete(&sig).await;
                }
                Ok(Pushed::AlreadyThere)
            }
            Err(e) => Err(e),
        }
    }

    /// Every object under the prefix that bears migsnap's names, and the
    /// names of the others (`Listing::odd`): set aside, never read,
    /// followed or removed. No name can fail the listing (see `list.rs`).
    pub async fn list(&self) -> Result<Listing, RemoteError> {
        let names = self.names().await?;
        let mut listing = Listing {
            objects: Vec::new(),
            odd: names.odd,
        };
        for e in names.entries {
            match parse_name(&e.name) {
                Some((key, kind)) => listing.objects.push(Object {
                    key,
                    kind,
                    name: format!("{}/{}", self.url, e.name),
                    size: e.size,
                    modified_unix: e.modified_unix,
                }),
                None => listing.odd.push(list::shown(&e.name)),
            }
        }
        listing.odd.sort();
        Ok(listing)
    }

    /// The manifests of every committed snapshot, checked, with a local
    /// copy of each kept in `cache` (a `Store` of manifests only, see
    /// `manifest_cache`) so that each is downloaded once. Copies of keys
    /// the store no longer has are dropped. Manifests that fail their
    /// checks are returned apart, to be reported and skipped.
    pub async fn manifests(&self, cache: &Store) -> Result<Manifests, RemoteError> {
        use futures_util::StreamExt;
        let listing = self.list().await?;
        let committed: BTreeMap<&Key, &Object> = listing.committed().map(|o| (&o.key, o)).collect();
        for stale in cache
            .manifests()
            .iter()
            .filter(|m| !committed.contains_key(&m.key))
        {
            cache.discard(&stale.key);
        }
        let mut found = Manifests {
            odd_names: listing.odd_names(&self.url),
            ..Manifests::default()
        };
        let mut missing = Vec::new();
        for key in committed.keys() {
            match cache.load(key) {
                Ok(Some(m)) => found.manifests.push(m),
                _ => missing.push((*key).clone()),
            }
        }
        // A few at a time: each is two small GETs (manifest, signature).
        let mut fetches = futures_util::stream::iter(missing)
            .map(|key| async move { (self.fetch(&key).await, key) })
            .buffer_unordered(8);
        while let Some((fetched, key)) = fetches.next().await {
            match fetched {
                Ok(Some(f)) => {
                    cache
                        .write_manifest(&f.manifest)
                        .map_err(RemoteError::Local)?;
                    found.manifests.push(f.manifest);
                }
                Ok(None) => {}
                Err(e @ (RemoteError::Refused { .. } | RemoteError::Damaged { .. })) => {
                    found.refused.push((key, e))
                }
                Err(e) => return Err(e),
            }
        }
        found
            .manifests
            .sort_by_key(|m| std::cmp::Reverse(m.created_unix));
        Ok(found)
    }

    /// The directory under `cache_dir` that keeps this store's manifests
    /// (one per store URL), as a `Store` with the same trust: nothing in it
    /// is restored, only read to choose what to download (a foreign one is
    /// kept unsigned, so it is never chosen as an ancestor).
    pub fn manifest_cache(&self, cache_dir: &Path) -> Result<Store, RemoteError> {
        use std::os::unix::fs::DirBuilderExt;
        let digest = crate::hash::sha256(self.url.as_bytes());
        let dir = cache_dir.join(format!("remote-{}", &digest[..16]));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(RemoteError::Local(store::cache_write_error(cache_dir, e))),
        }
        store::check_cache_dir(&dir).map_err(RemoteError::Local)?;
        Ok(Store::new(&dir).with_trust(self.trust.clone()))
    }

    /// Remove `key`'s snapshot: the manifest first (so the snapshot stops
    /// existing at once), then every dump and signature of the key in
    /// `listing`.
    pub async fn remove(&self, key: &Key, listing: &Listing) -> Result<(), RemoteError> {
        self.delete(&Self::manifest_name(key)).await?;
        for o in listing.objects.iter().filter(|o| &o.key == key) {
            if o.kind != ObjectKind::Manifest {
                self.delete(basename(&o.name)).await?;
            }
        }
        Ok(())
    }

    /// Objects that no manifest names and that are older than `ORPHAN_AGE`
    /// at `now`: dumps and signatures of keys without a manifest, and those
    /// of a committed key that its manifest does not name (a lost race).
    pub async fn orphans(&self, listing: &Listing, now: u64) -> Result<Vec<Object>, RemoteError> {
        let old = |o: &&Object| now.saturating_sub(o.modified_unix) >= ORPHAN_AGE.as_secs();
        let committed: std::collections::BTreeSet<&Key> =
            listing.committed().map(|o| &o.key).collect();
        let mut named: BTreeMap<&Key, (String, String)> = BTreeMap::new();
        let mut out = Vec::new();
        for o in listing.objects.iter().filter(old) {
            if o.kind == ObjectKind::Manifest {
                continue;
            }
            if !committed.contains(&o.key) {
                out.push(o.clone());
                continue;
            }
            if !named.contains_key(&o.key) {
                // The manifest's own names; unreadable, it names nothing
                // safely, so leave the key's objects be.
                let Some(bytes) = self
                    .get_small(&Self::manifest_name(&o.key), MAX_MANIFEST)
                    .await?
                else {
                    continue;
                };
                let Ok(m) = serde_json::from_slice::<Manifest>(&bytes) else {
                    continue;
                };
                named.insert(
                    &o.key,
                    (
                        Self::dump_name(&o.key, &m.dump.sha256),
                        Self::signature_name(&o.key, &bytes),
                    ),
                );
            }
            if let Some((dump, sig)) = named.get(&o.key) {
                let name = basename(&o.name);
                if name != dump && name != sig {
                    out.push(o.clone());
                }
            }
        }
        Ok(out)
    }

    /// Delete one object of ours by its listed name.
    pub async fn remove_object(&self, o: &Object) -> Result<(), RemoteError> {
        self.delete(basename(&o.name)).await
    }

    // ---- the requests, each bounded in time and classified ----

    /// A whole small object, at most `limit` bytes; None when absent.
    async fn get_small(&self, name: &str, limit: u64) -> Result<Option<Vec<u8>>, RemoteError> {
        let path = self.path(name);
        let work = async {
            let got = match self.objects.get(&path).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            if got.meta.size > limit {
                return Ok(Some(Err(got.meta.size)));
            }
            got.bytes().await.map(|b| Some(Ok(b.to_vec())))
        };
        match self.bounded(work).await? {
            None => Ok(None),
            Some(Ok(bytes)) if bytes.len() as u64 <= limit => Ok(Some(bytes)),
            Some(Ok(bytes)) => Err(self.too_big(name, bytes.len() as u64, limit)),
            Some(Err(size)) => Err(self.too_big(name, size, limit)),
        }
    }

    fn too_big(&self, name: &str, size: u64, limit: u64) -> RemoteError {
        RemoteError::Damaged {
            object: self.shown(name),
            why: format!(
                "it is {size} bytes, more than the {limit} a migsnap object of its kind can be"
            ),
        }
    }

    async fn exists(&self, name: &str) -> Result<bool, RemoteError> {
        match self.bounded(self.objects.head(&self.path(name))).await {
            Ok(_) => Ok(true),
            Err(RemoteError::Missing) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn put(&self, name: &str, bytes: Vec<u8>, mode: PutMode) -> Result<(), RemoteError> {
        let payload = PutPayload::from(bytes);
        self.bounded(
            self.objects
                .put_opts(&self.path(name), payload, mode.into()),
        )
        .await
        .map(|_| ())
    }

    async fn delete(&self, name: &str) -> Result<(), RemoteError> {
        match self.bounded(self.objects.delete(&self.path(name))).await {
            Ok(()) | Err(RemoteError::Missing) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Run one request under the timeout, retries included, and say what
    /// went wrong in migsnap's terms.
    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> Result<T, RemoteError> {
        match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r.map_err(|e| self.classify(e)),
            Err(_) => Err(RemoteError::Timeout {
                url: self.url.clone(),
                secs: self.timeout.as_secs_f64(),
            }),
        }
    }

    fn classify(&self, e: object_store::Error) -> RemoteError {
        use object_store::Error as E;
        match e {
            E::NotFound { .. } => RemoteError::Missing,
            E::AlreadyExists { .. } | E::Precondition { .. } => RemoteError::Exists,
            E::PermissionDenied { source, .. } | E::Unauthenticated { source, .. } => {
                RemoteError::Denied {
                    url: self.url.clone(),
                    reason: error::innermost(source.as_ref()),
                }
            }
            other => RemoteError::Unreachable {
                url: self.url.clone(),
                reason: error::innermost(&other),
            },
        }
    }
}

/// A checked view of the store's manifests, and those that failed a check.
#[derive(Debug, Default)]
pub struct Manifests {
    /// Newest first.
    pub manifests: Vec<Manifest>,
    pub refused: Vec<(Key, RemoteError)>,
    /// The listing's warning about objects that are not migsnap's
    /// (`Listing::odd_names`), for the caller to say once.
    pub odd_names: Option<String>,
}

/// `(key, kind)` for a name migsnap writes, None for anything else.
fn parse_name(name: &str) -> Option<(Key, ObjectKind)> {
    let (key, rest) = name.split_once('.')?;
    let key = Key::parse(key).ok()?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let kind = if rest == "json" {
        ObjectKind::Manifest
    } else if let Some(sha) = rest.strip_suffix(".sql.zst").filter(|s| hex(s, 16)) {
        ObjectKind::Dump {
            sha256: sha.to_string(),
        }
    } else if let Some(m) = rest.strip_suffix(".sig").filter(|s| hex(s, 16)) {
        ObjectKind::Signature {
            manifest: m.to_string(),
        }
    } else {
        return None;
    };
    Some((key, kind))
}

fn basename(shown: &str) -> &str {
    shown.rsplit('/').next().unwrap_or(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn only_migsnaps_names_are_read_as_ours() {
        let key = || Key::parse(K).expect("key");
        let sha = "f".repeat(16);
        assert_eq!(
            parse_name(&format!("{K}.json")),
            Some((key(), ObjectKind::Manifest))
        );
        assert_eq!(
            parse_name(&format!("{K}.{sha}.sql.zst")),
            Some((
                key(),
                ObjectKind::Dump {
                    sha256: sha.clone()
                }
            ))
        );
        assert_eq!(
            parse_name(&format!("{K}.0011223344556677.sig")),
            Some((
                key(),
                ObjectKind::Signature {
                    manifest: "0011223344556677".into()
                }
            ))
        );
        for other in [
            format!("{K}.sql.zst"),
            format!("{K}.xyz.sql.zst"),
            format!("{K}.{}.sql.zst", "f".repeat(64)),
            format!("{}.json", &K[..63]),
            "README".to_string(),
            format!("{K}.json.tmp"),
        ] {
            assert_eq!(parse_name(&other), None, "{other}");
        }
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        for (url, why) in [
            ("bucket/prefix", "no scheme"),
            ("s3:///prefix", "no bucket"),
            ("file://relative/dir", "absolute path"),
            ("gopher://x/y", "s3:// and file://"),
            ("s3://bucket/a//b", "empty"),
        ] {
            let e = Url::parse(url).expect_err(url);
            assert!(e.to_string().contains(why), "{url}: {e}");
        }
    }

    #[test]
    fn the_url_shown_has_no_trailing_slash() {
        let url = Url::parse("s3://bucket/team/proj/").expect("parses");
        let r = Remote::open(&url, Options::new(vec![])).expect("opens");
        assert_eq!(r.url(), "s3://bucket/team/proj");
        assert_eq!(r.path("x.json").as_ref(), "team/proj/x.json");
    }
}
