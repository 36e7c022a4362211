//! The shared snapshot store inside a build (issue #14): `engine` asks it
//! for the key's own snapshot once the cache dir has none, for ancestors
//! beside the cache dir's, and hands it what it built when `remote-push` is
//! on.
//!
//! A store that is down, slow or denying never fails a run: its first
//! failure is reported once, with the reason and a hint, and the rest of the
//! run goes on without it, building locally. A damaged or refused snapshot
//! in the store is reported and skipped; nothing of it enters the cache dir.
//! What does enter it goes through the same checked restore as a dump built
//! here.

use crate::context::Ctx;
use crate::fingerprint::Fingerprint;
use crate::key::Key;
use crate::remote::{Pushed, Remote, RemoteError};
use crate::report::Events;
use crate::store::{Manifest, Store};
use crate::units;
use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::time::Instant;

/// Where a restored dump came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The cache dir (or a template already on the server).
    Local,
    /// Downloaded from the snapshot store in this run.
    Remote,
}

/// The store as one build uses it.
pub struct Shared<'a> {
    ctx: &'a Ctx,
    ui: &'a Events,
    remote: Option<Remote>,
    /// Set at the first failure of the store itself: not asked again.
    down: Cell<bool>,
    /// Warnings already said: each once per run (issue #21: the same
    /// damaged snapshot was reported as the key's own, then again as the
    /// best ancestor).
    said: RefCell<BTreeSet<String>>,
    /// Keys whose store snapshot failed in this run (damaged, refused, or rejected by the
    /// server during a restore: `skip`): not downloaded again, not built on,
    /// not pushed over.
    failed: RefCell<BTreeSet<Key>>,
}

impl<'a> Shared<'a> {
    /// The configured store, if any; one that cannot even be opened (a
    /// file:// directory that is gone) counts as down.
    pub fn new(ctx: &'a Ctx, ui: &'a Events) -> Shared<'a> {
        let mut shared = Shared {
            ctx,
            ui,
            remote: None,
            down: Cell::new(false),
            said: RefCell::new(BTreeSet::new()),
            failed: RefCell::new(BTreeSet::new()),
        };
        match ctx.remote() {
            Some(Ok(r)) => shared.remote = Some(r),
            Some(Err(e)) => shared.trouble(e),
            None => {}
        }
        shared
    }

    fn usable(&self) -> Option<&Remote> {
        self.remote.as_ref().filter(|_| !self.down.get())
    }

    /// The store's snapshot of `key` could not be restored (damaged, or
    /// refused): the caller warned once; for the rest of the run it is
    /// neither built on nor pushed over (issue #21).
    pub fn skip(&self, key: &Key) {
        self.failed.borrow_mut().insert(key.clone());
    }

    fn skipped(&self, key: &Key) -> bool {
        self.failed.borrow().contains(key)
    }

    /// Say what went wrong. The store failing (down, slow, denying) is
    /// said once, and the store is left alone for the rest of the run; a
    /// damaged or refused snapshot is said each time, and skipped.
    fn trouble(&self, e: RemoteError) {
        if e.is_store_failure() || matches!(e, RemoteError::BadUrl { .. }) {
            if !self.down.replace(true) {
                self.warn_once(format!("{e}; going on without it"), &e);
            }
        } else {
            self.warn_once(format!("{}; skipping it", crate::error::one_line(&e)), &e);
        }
    }

    /// A warning (and the reporter's hint for `e`) unless this run said it
    /// already.
    fn warn_once(&self, warning: String, e: &RemoteError) {
        if self.said.borrow_mut().insert(warning.clone()) {
            self.ui.warn_about(warning, e);
        }
    }

    /// Whether a store is configured (it may still turn out to be down).
    pub fn configured(&self) -> bool {
        self.remote.is_some()
    }

    /// The key's own snapshot from the store, downloaded into `store` (the
    /// caller holds the key's cache lock), if the store has one, what it
    /// recorded beyond the key holds for this project, and its server is
    /// not newer than this one. Otherwise None (an own snapshot whose
    /// records changed may still serve as an ancestor).
    pub async fn own(
        &self,
        fp: &Fingerprint,
        store: &Store,
        server_version_num: u32,
    ) -> Option<Manifest> {
        let remote = self.usable()?;
        let fetched = match remote.fetch(&fp.key).await {
            Ok(Some(f)) => f,
            Ok(None) => return None,
            Err(e) => {
                self.failed.borrow_mut().insert(fp.key.clone());
                self.trouble(e);
                return None;
            }
        };
        let m = &fetched.manifest;
        if m.depends.verify(self.ctx.project_dir()).is_err()
            || m.server_major() > server_version_num / 10000
        {
            return None;
        }
        self.download(remote, &fetched, store).await
    }

    async fn download(
        &self,
        remote: &Remote,
        fetched: &crate::remote::Fetched,
        store: &Store,
    ) -> Option<Manifest> {
        let m = &fetched.manifest;
        let t = Instant::now();
        self.ui.info(format!(
            "downloading snapshot {} ({}) from {}",
            m.key.short(),
            units::size(m.dump.size),
            remote.url()
        ));
        match remote
            .download(fetched, store, Some(self.ctx.project_dir()))
            .await
        {
            Ok(_) => {
                self.ui
                    .info(format!("downloaded in {}", units::duration(t.elapsed())));
                Some(m.clone())
            }
            Err(e) => {
                self.failed.borrow_mut().insert(m.key.clone());
                self.trouble(e);
                None
            }
        }
    }

    /// The store's best ancestor for `fp`, chosen as the cache dir's is
    /// (`Store::best_ancestor`) from its manifests, which are downloaded
    /// once and kept in the cache dir; None when the cache dir's own
    /// `local` is at least as good (it needs no download).
    pub async fn better_ancestor(
        &self,
        fp: &Fingerprint,
        store: &Store,
        server_version_num: u32,
        local: Option<&Manifest>,
        replaced: &dyn Fn(&str) -> bool,
    ) -> Option<Manifest> {
        let remote = self.usable()?;
        let cache = match remote.manifest_cache(store.dir()) {
            Ok(c) => c,
            Err(e) => {
                self.trouble(e);
                return None;
            }
        };
        let found = match remote.manifests(&cache).await {
            Ok(found) => found,
            Err(e) => {
                self.trouble(e);
                return None;
            }
        };
        if let Some(w) = found.odd_names {
            if self.said.borrow_mut().insert(w.clone()) {
                self.ui.warn(w);
            }
        }
        for (key, e) in found.refused {
            self.failed.borrow_mut().insert(key);
            self.trouble(e);
        }
        // What failed in this run is no candidate (the own key's snapshot,
        // damaged, would otherwise be chosen as the best ancestor and
        // downloaded again).
        for key in self.failed.borrow().iter() {
            cache.discard(key);
        }
        let best = cache
            .best_ancestor(fp, server_version_num, replaced)
            .filter(|m| !self.skipped(&m.key))?;
        let rank = |m: &Manifest| crate::store::ancestor_rank(m, fp);
        match local {
            Some(l) if rank(l) >= rank(&best) => None,
            _ => Some(best),
        }
    }

    /// Download the ancestor `base` (from `better_ancestor`) into the cache
    /// dir, under its key's lock (already held when it is `ours`, the key
    /// being built). False when it could not be had: the caller builds on
    /// something else.
    pub async fn fetch_ancestor(&self, base: &Manifest, store: &Store, ours: &Key) -> bool {
        let Some(remote) = self.usable() else {
            return false;
        };
        // Someone building that key here holds its lock: leave it to them.
        let _lock = if &base.key == ours {
            None
        } else {
            match store.try_lock(&base.key) {
                Ok(Some(lock)) => Some(lock),
                _ => return false,
            }
        };
        // Fresh from the store: the cached copy only chose it.
        let fetched = match remote.fetch(&base.key).await {
            // Authenticated still: a foreign one is never built on.
            Ok(Some(f))
                if f.manifest.dump.sha256 == base.dump.sha256 && f.manifest.authenticated =>
            {
                f
            }
            Ok(_) => return false,
            Err(e) => {
                self.trouble(e);
                return false;
            }
        };
        self.download(remote, &fetched, store).await.is_some()
    }

    /// Push the snapshot just built, when `remote-push` is on. Never an
    /// error: the run's database is ready whatever the store says.
    pub async fn push_built(&self, store: &Store, key: &Key) {
        if !self.ctx.remote.as_ref().is_some_and(|r| r.push) {
            return;
        }
        let Some(remote) = self.usable() else {
            return;
        };
        if self.skipped(key) {
            return;
        }
        // A consumer would refuse it (`trusted-extensions`); the build said why.
        let trusted = &self.ctx.build.trusted_extensions;
        if let Ok(Some(m)) = store.load(key) {
            let is_trusted = |name: &str| crate::pg::extension::is_trusted(name, trusted);
            if !m.extensions.iter().all(|e| is_trusted(&e.name)) {
                return;
            }
        }
        let t = Instant::now();
        match remote.push(store, key).await {
            Ok(Pushed::Uploaded { bytes }) => self.ui.info(format!(
                "pushed snapshot {} ({}) to {} in {}",
                key.short(),
                units::size(bytes),
                remote.url(),
                units::duration(t.elapsed())
            )),
            Ok(Pushed::AlreadyThere) => self.ui.info(format!(
                "{} already has snapshot {}",
                remote.url(),
                key.short()
            )),
            Err(e) => self.trouble(e),
        }
    }
}

// ---- the use cases of `push` and `pull` ----

/// The configured store, or why there is none.
pub fn configured(ctx: &Ctx) -> crate::error::Result<Remote> {
    match ctx.remote() {
        Some(r) => Ok(r?),
        None => Err(RemoteError::NotConfigured.into()),
    }
}

/// Upload the cache dir's snapshot for `key` (`migsnap push`).
pub async fn push(ctx: &Ctx, key: &Key) -> crate::error::Result<Pushed> {
    let remote = configured(ctx)?;
    let store = ctx.store()?;
    Ok(remote.push(&store, key).await?)
}

/// What `pull` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pulled {
    /// Downloaded into the cache dir: the dump's size.
    Downloaded { bytes: u64 },
    /// The cache dir already had a good snapshot for the key.
    AlreadyCached,
}

/// Download the store's snapshot for `key` into the cache dir, and nothing
/// else (`migsnap pull`). Under the key's cache lock, as a build writes it;
/// a snapshot the cache dir already has in good order is kept.
pub async fn pull(ctx: &Ctx, key: &Key, ui: &Events) -> crate::error::Result<Pulled> {
    let remote = configured(ctx)?;
    let store = ctx.store()?;
    let _lock = store
        .lock(key, || {
            ui.waiting(format!(
                "waiting for another migsnap writing snapshot {} (cache lock)…",
                key.short()
            ))
        })
        .await?;
    if let Ok(Some(_)) = store.load(key) {
        return Ok(Pulled::AlreadyCached);
    }
    store.clean_temp(key);
    let Some(fetched) = remote.fetch(key).await? else {
        return Err(RemoteError::NoSnapshot {
            url: remote.url().to_string(),
            short: key.short().to_string(),
        }
        .into());
    };
    let bytes = remote
        .download(&fetched, &store, Some(ctx.project_dir()))
        .await?;
    Ok(Pulled::Downloaded { bytes })
}
