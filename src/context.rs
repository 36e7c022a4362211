//! What the use cases (`prepare`, `check`, `engine::build`) take: small,
//! already-resolved values. The binary resolves flags, environment and the
//! config file into a `Ctx` (its `settings` module); the library never sees
//! where a value came from, so its messages name no flag. The use cases get
//! it inside a `session::Session`, which adds what is resolved from it once
//! per command (the key, the connection).

use crate::embedded::Embedded;
use crate::error::Result;
use crate::fingerprint::KeySpec;
pub use crate::pg::admin::CloneStrategy;
use crate::remote::{Remote, RemoteError};
use crate::sign::Trust;
use crate::store::Store;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// Where the database server is.
#[derive(Debug, Clone)]
pub enum ServerChoice {
    /// A user-supplied URL.
    Url(String),
    /// migsnap's private cluster.
    Embedded(Embedded),
}

/// How to run the project's Django: its own interpreter and manage.py.
#[derive(Debug, Clone)]
pub struct DjangoRunner {
    pub python: PathBuf,
    pub manage_py: PathBuf,
    /// Explicit settings module; None = whatever manage.py sets.
    pub settings_module: Option<String>,
    /// Where relative paths in Django's reports are anchored.
    pub project_dir: PathBuf,
    /// Echo Django's own output while it runs.
    pub echo_output: bool,
    /// The database alias to migrate (`migrate --database ALIAS`).
    pub alias: String,
    /// `build-accelerator`: `migrate` mode calls `fastmig.install()` first
    /// when the project's environment has django-fastmig (issue #24).
    pub accelerate: bool,
}

/// How snapshots are copied and restored.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// As configured; `Default` is resolved per server by `Ctx::clone_strategy`.
    pub clone_strategy: CloneStrategy,
    /// Connections a cache restore uses.
    pub restore_jobs: usize,
    /// Extensions migsnap creates before restoring a snapshot that needs
    /// them (`trusted-extensions`); a snapshot needing any other is refused.
    pub trusted_extensions: Vec<String>,
    /// Where pg_dump is found (on any server; the embedded one has its own
    /// copy for initdb and pg_ctl).
    pub programs: crate::pg::tools::Programs,
    /// `verify-build`: an accelerated build is checked against stock
    /// Django's `migrate` into a scratch database before it is saved.
    pub verify: bool,
}

/// The cache dir, and what signs what is written to it (and pushed) and
/// judges what is read from it (and fetched).
#[derive(Debug, Clone)]
pub struct CacheDir {
    pub dir: PathBuf,
    pub trust: Trust,
    /// `Ctx::store`, once made: the mkdir and the ownership check run once
    /// per command, not once per use case that asks (issue #23).
    opened: OnceLock<Store>,
}

impl CacheDir {
    pub fn new(dir: PathBuf, trust: Trust) -> CacheDir {
        CacheDir {
            dir,
            trust,
            opened: OnceLock::new(),
        }
    }

    /// The cache dir, created on first use (0700: only we may write the
    /// SQL it holds) and refused when others could write to it, as a store
    /// that signs and checks with the configured keys and secret. Made
    /// once; a failure is not kept, so it is reported wherever it is asked.
    pub fn store(&self) -> Result<Store> {
        if let Some(store) = self.opened.get() {
            return Ok(store.clone());
        }
        let store = self.open_store()?;
        Ok(self.opened.get_or_init(|| store).clone())
    }

    fn open_store(&self) -> Result<Store> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = &self.dir;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| crate::store::BadCacheDir::Create {
                dir: dir.clone(),
                exists: dir.exists(),
                source,
            })?;
        crate::store::check_cache_dir(dir)?;
        Ok(Store::new(dir).with_trust(self.trust.clone()))
    }
}

/// The shared snapshot store (`remote`), when one is configured.
#[derive(Debug, Clone)]
pub struct RemoteSettings {
    pub url: crate::remote::Url,
    /// Push what `prepare` builds. Off unless asked for: whoever may write
    /// the store decides what SQL every reader restores.
    pub push: bool,
    /// Bounds every wait on the store.
    pub timeout: Duration,
    /// Bytes per second below which a transfer counts as stalled.
    pub min_rate: u64,
    /// The backend's own environment (`env::backend_vars`).
    pub env: Vec<(String, String)>,
}

/// Everything a use case needs, resolved.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub key: KeySpec,
    pub django: DjangoRunner,
    pub server: ServerChoice,
    pub cache: CacheDir,
    pub build: BuildOptions,
    /// Ready clones to keep for the current key (`pool`); 0: none.
    pub pool: usize,
    pub remote: Option<RemoteSettings>,
}

impl Ctx {
    pub fn project_dir(&self) -> &Path {
        &self.key.root
    }

    /// 16 hex naming this project (its directory) in what it leaves on a
    /// shared server, such as its pool members.
    pub fn project_tag(&self) -> String {
        let path = self.project_dir().as_os_str().as_encoded_bytes();
        crate::hash::hash_normalized(path)[..16].to_string()
    }

    /// The strategy clones use. `default` means FILE_COPY on the embedded
    /// server: it runs with fsync off and serves nobody else, so the two
    /// checkpoints FILE_COPY forces are nearly free, and copying files beats
    /// WAL-logging every page (8 parallel clones of the 1,000-migration
    /// template: ~1.5x faster; see BENCHMARKS.md). On a server the user
    /// provides, those checkpoints would hit every other session, so the
    /// server's default stands unless the user asks.
    pub fn clone_strategy(&self) -> CloneStrategy {
        match (self.build.clone_strategy, &self.server) {
            (CloneStrategy::Default, ServerChoice::Embedded(_)) => CloneStrategy::FileCopy,
            (strategy, _) => strategy,
        }
    }

    /// The cache dir as a store (`CacheDir::store`).
    pub fn store(&self) -> Result<Store> {
        self.cache.store()
    }

    /// The client for the configured snapshot store, signing and checking
    /// as the cache dir does; None when there is none. Made on demand: the
    /// warm path never needs it.
    pub fn remote(&self) -> Option<Result<Remote, RemoteError>> {
        let r = self.remote.as_ref()?;
        let opts = crate::remote::Options {
            timeout: r.timeout,
            min_rate: r.min_rate,
            trust: self.cache.trust.clone(),
            env: r.env.clone(),
        };
        Some(Remote::open(&r.url, opts))
    }

    /// What can be checked cheaply before anything slow (a server start,
    /// Django, a restore), so that a mistake is reported at once and never
    /// leaves an embedded server running behind an error: the cache dir is
    /// usable and writable, and, when the embedded server would have to be
    /// started, the PostgreSQL programs are there.
    pub fn check_before_starting(&self) -> Result<()> {
        let store = self.store()?;
        tempfile::Builder::new()
            .prefix(".migsnap-probe-")
            .tempfile_in(store.dir())
            .map_err(|e| crate::store::cache_write_error(store.dir(), e))?;
        let ServerChoice::Embedded(server) = &self.server else {
            return Ok(());
        };
        // A running server (or a URL) costs nothing to reach.
        if server.probably_running() {
            return Ok(());
        }
        for program in ["pg_dump", "initdb", "pg_ctl"] {
            server.host.programs.find(program, None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// The cache dir is created and checked when first asked for, then the
    /// same store is handed out: a dir opened to others since is not
    /// noticed by the same command (a fresh one refuses it).
    #[test]
    fn the_store_is_opened_once_per_cache_dir() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("cache");
        let cache = CacheDir::new(dir.clone(), Trust::default());
        let store = cache.store().expect("made and checked");
        assert_eq!(store.dir(), dir);
        let mode = std::fs::metadata(&dir).expect("made").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        assert_eq!(cache.store().expect("not checked again").dir(), dir);
        assert_eq!(cache.clone().store().expect("clones share it").dir(), dir);
        let fresh = CacheDir::new(dir, Trust::default());
        assert!(fresh.store().is_err(), "a dir others can write is refused");
    }
}
