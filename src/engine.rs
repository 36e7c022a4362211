//! The snapshot engine: make sure a template database for the current key
//! exists on the server, building it the cheapest way available.
//!
//! Order of preference once the template is missing: restore the cached dump
//! for the key; else the key's dump from the shared snapshot store, when
//! one is configured (`shared`); else start from the best ancestor snapshot
//! (all of its migration files unchanged), in the cache dir or the store,
//! and let `migrate` apply only the new ones; else migrate from empty. A
//! newly built database is dumped to the cache and then promoted to the
//! template in one transaction; with `remote-push`, it is then pushed.
//!
//! Building happens under two locks, always taken in this order: a file lock
//! per key in the cache dir, then a PostgreSQL advisory lock per key. Both
//! die with the process, so a crash never wedges a later run, and anything a
//! crashed run left behind (temp files, the build database) is removed by
//! the next run while it holds the locks. After Ctrl-C the interrupted run
//! removes them itself, still under its locks (`Unfinished`).
//!
//! A restore of the cached dump may skip the template altogether: when
//! `prepare` asks for it (`HandOut`) and no other process waits for the
//! key's template, the restored database is renamed into the target's
//! place, and the template is made afterwards, in the background, by
//! restoring the same dump again (`Request::cache_only`, from `maintain`).
//! At 2,000 tables that takes the template clone (seconds) off the path a
//! test run waits on; a second process waiting for the template (another
//! xdist worker) gets it promoted instead, as before, and clones it.

use crate::context::{Ctx, ServerChoice};
use crate::depends::{Checked, Depends};
use crate::django;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::fingerprint::{self, Fingerprint, MigrationGlobs};
use crate::key::Key;
use crate::pg::admin::{self, Admin};
use crate::pg::mark::Mark;
use crate::pg::{dump, extension, restore, ConnInfo};
use crate::report::Events;
use crate::shared::{Origin, Shared};
use crate::store::Applied;
use crate::store::{self, BuildInfo, Manifest, Store};
use crate::units;

mod plan;
mod verify;
use std::path::Path;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A ready clone from the pool, handed out by rename.
    Pool,
    Template,
    Cache,
    Incremental,
    Cold,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Pool => "pool",
            Source::Template => "template",
            Source::Cache => "cache",
            Source::Incremental => "incremental",
            Source::Cold => "cold",
        }
    }
}

#[derive(Debug)]
pub struct Snapshot {
    pub template: String,
    pub source: Source,
    pub base_key: Option<Key>,
    pub applied: Vec<Applied>,
    /// Where the restored dump came from (`cache`, and the base of
    /// `incremental`); None for `template` and `cold`.
    pub origin: Option<Origin>,
    /// The build went straight into the caller's target (`HandOut`)
    /// rather than becoming the template; a target it replaced was
    /// renamed aside, for maintenance to drop.
    pub handed_out: bool,
    /// The inputs record the database was made from, when this run knows
    /// it for certain (a template it found marked with its digest, or the
    /// manifest of a dump it restored); None after a build.
    pub built_with: Option<Checked>,
    /// Whether the build that made the snapshot ran with the accelerator,
    /// when this run knows (it built it, or restored its dump and read the
    /// manifest); None for a template or pool member found ready.
    pub accelerated: Option<bool>,
    /// The migrations that build applied with stock Django although
    /// accelerated (`BuildInfo::stock_migrations`), when this run knows.
    pub stock_migrations: Option<Vec<String>>,
}

/// What a build is asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    /// Ignore templates and caches and migrate from empty.
    pub rebuild: bool,
    /// A restore of the key's own dump may go straight to this target.
    pub hand_out: Option<HandOut<'a>>,
    /// Only restore the key's own cached dump; anything else (an ancestor,
    /// a migrate) is an error. For background work, which must not start
    /// Django behind the user's back.
    pub cache_only: bool,
}

/// Where `prepare` wants its database, for `Request::hand_out`.
#[derive(Debug, Clone, Copy)]
pub struct HandOut<'a> {
    pub target: &'a str,
    /// The mark a clone of the template would carry.
    pub mark: &'a Mark,
    /// `--force`: replace the target even if its name is not a test one.
    pub force: bool,
}

impl Snapshot {
    /// The key's own dump restored, from `origin`: made the template, or
    /// handed out to the caller's target.
    fn restored(template: String, origin: Origin, handed_out: bool, m: &Manifest) -> Snapshot {
        Snapshot {
            template,
            source: Source::Cache,
            base_key: None,
            applied: vec![],
            origin: Some(origin),
            handed_out,
            built_with: Some(m.depends.checked.clone()),
            accelerated: Some(m.build.accelerated),
            stock_migrations: Some(m.build.stock_migrations.clone()),
        }
    }

    /// A template Django just migrated (`base_key`: what it started from).
    fn built(
        template: String,
        source: Source,
        base_key: Option<Key>,
        report: django::MigrateReport,
    ) -> Snapshot {
        Snapshot {
            template,
            source,
            base_key,
            applied: report.applied,
            origin: None,
            handed_out: false,
            built_with: None,
            accelerated: Some(report.accelerated),
            stock_migrations: Some(report.stock),
        }
    }

    /// A pool member of `template` handed out by rename; it was cloned
    /// from the template marked with the digest of `record`.
    pub fn pooled(template: String, record: Option<Checked>) -> Snapshot {
        Snapshot {
            source: Source::Pool,
            ..Snapshot::ready(template, record)
        }
    }

    /// A template that needed no work, marked with the digest of `record`.
    pub fn ready(template: String, record: Option<Checked>) -> Snapshot {
        Snapshot {
            template,
            source: Source::Template,
            base_key: None,
            applied: vec![],
            origin: None,
            handed_out: false,
            built_with: record,
            accelerated: None,
            stock_migrations: None,
        }
    }
}

/// The digest of the inputs the cached snapshot for `fp` was built from, if
/// its manifest exists and everything it recorded beyond the key still holds
/// (`Depends::verify`): the identity its template must carry to be served.
/// This is the warm path's whole check: one small file read, a few hundred
/// hashes at most, no Python, no server.
pub fn current_inputs(store: &Store, fp: &Fingerprint, project_dir: &Path) -> Option<String> {
    current_record(store, &fp.key, project_dir).map(|c| c.digest())
}

/// The record `current_inputs` digests, itself (of the snapshot of `key`).
pub fn current_record(store: &Store, key: &Key, project_dir: &Path) -> Option<Checked> {
    let checked = store.load_checked(key)?;
    checked.verify(project_dir).ok()?;
    Some(checked)
}

/// Connect to the configured server if it runs: None when the embedded
/// one is not running (it is not started).
pub async fn connect_if_running(ctx: &Ctx) -> Result<Option<Admin>> {
    match &ctx.server {
        ServerChoice::Url(url) => Admin::connect(&ConnInfo::from_url(url)?).await.map(Some),
        ServerChoice::Embedded(server) => Ok(running(server).await),
    }
}

/// Connect to the configured server; the embedded one is started on demand.
pub async fn connect(ctx: &Ctx, ui: &Events) -> Result<Admin> {
    match &ctx.server {
        ServerChoice::Url(url) => Admin::connect(&ConnInfo::from_url(url)?).await,
        ServerChoice::Embedded(server) => {
            if let Some(admin) = running(server).await {
                return Ok(admin);
            }
            let (s, u) = (server.clone(), ui.clone());
            crate::error::blocking("starting the server", move || s.start(&u)).await??;
            Admin::connect(&server.conn_info()).await
        }
    }
}

/// A connection to the embedded server if it is up.
async fn running(server: &crate::embedded::Embedded) -> Option<Admin> {
    if !server.probably_running() {
        return None;
    }
    Admin::connect(&server.conn_info()).await.ok()
}

/// The name of `fp`'s template, built first (as `prepare` builds it) unless
/// the server has one made from the current inputs.
pub async fn ensure_template(
    admin: &Admin,
    ctx: &Ctx,
    fp: &Fingerprint,
    ui: &Events,
) -> Result<String> {
    let template = admin::template_name(&fp.key);
    let inputs = current_inputs(&ctx.store()?, fp, ctx.project_dir());
    let state = admin.template_state(&fp.key, inputs.as_deref()).await?;
    if !state.serves(ctx.cache.trust.trust_unsigned) {
        build(admin, ctx, fp, ui, Request::default()).await?;
    }
    Ok(template)
}

/// The advisory lock every process that needs `key`'s template holds
/// (shared) while it builds or waits for it: a builder that finds others
/// holding it promotes its restore to the template rather than handing it
/// out.
fn wanting_lock(key: &Key) -> crate::key::LockId {
    key.tagged_lock_id("wants template")
}

/// Build (or find, after waiting for another builder) the template for
/// `fp`, as `req` asks.
pub async fn build(
    admin: &Admin,
    ctx: &Ctx,
    fp: &Fingerprint,
    ui: &Events,
    req: Request<'_>,
) -> Result<Snapshot> {
    // Before any lock or wait: a build needs manage.py, so say now if it is missing.
    django::check_manage_py(&ctx.django)?;
    let store = ctx.store()?;
    let key = &fp.key;
    // Counted by whoever builds meanwhile; before the locks, so waiting
    // for them counts.
    let wanting = admin.hold_shared(wanting_lock(key)).await?;
    let result = build_wanting(admin, ctx, fp, &store, ui, req).await;
    wanting.release().await;
    result
}

async fn build_wanting(
    admin: &Admin,
    ctx: &Ctx,
    fp: &Fingerprint,
    store: &Store,
    ui: &Events,
    req: Request<'_>,
) -> Result<Snapshot> {
    let key = &fp.key;
    let short = fp.short();
    let _file_lock = store
        .lock(key, || {
            ui.waiting(format!(
                "waiting for another migsnap building snapshot {short} (cache lock)…"
            ))
        })
        .await?;
    let build_lock = admin
        .lock_key(key.lock_id(), || {
            ui.waiting(format!(
                "waiting for another migsnap building snapshot {short} on the server…"
            ))
        })
        .await?;
    failpoint::point("build.locked");
    // Declared after the locks, so it runs (on Ctrl-C) while they are held.
    let mut unfinished = Unfinished {
        conn: admin.conn.clone(),
        pid: admin.pid,
        store: store.clone(),
        key: key.clone(),
        ui: ui.clone(),
        armed: true,
    };
    let shared = Shared::new(ctx, ui);
    let result = build_locked(admin, ctx, fp, store, &shared, ui, req).await;
    // build_locked removes what a failed build left; only a dropped future
    // (Ctrl-C) leaves the guard armed.
    unfinished.armed = false;
    build_lock.release().await;
    drop(_file_lock);
    // Outside the locks: those waiting for the template need not wait for
    // the upload too.
    if let Ok(s) = &result {
        // A database part of the way (`prepare --at`) stays in the cache
        // dir: the store's other readers (older migsnaps among them) would
        // not know it from a fully migrated one.
        if matches!(s.source, Source::Cold | Source::Incremental) && fp.at.is_empty() {
            shared.push_built(store, key).await;
        }
    }
    result
}

/// An interrupted build's leftovers. When Ctrl-C drops the build's future
/// (which kills Django through kill_on_drop and abandons a restore), this
/// guard, dropped with it while both of the build's locks are still held,
/// removes the `migsnap_build_*` database and the temp files at once rather
/// than leaving them to the next run. Drop cannot await, so it does the work
/// on a thread of its own, bounded in time: a hung server must not keep an
/// interrupted run from exiting.
struct Unfinished {
    conn: ConnInfo,
    /// The build's admin session: what it still runs on the server (the
    /// build database's `CREATE DATABASE`) is stopped before the drop.
    pid: i32,
    store: Store,
    key: Key,
    ui: Events,
    armed: bool,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.ui.end_progress();
        let (conn, build) = (self.conn.clone(), admin::build_name(&self.key));
        let (name, pid) = (build.clone(), self.pid);
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::from(BuildError::Runtime(e)))?;
            runtime.block_on(async {
                let work = async {
                    let admin = Admin::connect(&conn).await?;
                    admin.settle(pid).await?;
                    admin.drop_build(&name).await
                };
                tokio::time::timeout(std::time::Duration::from_secs(10), work)
                    .await
                    .map_err(|_| BuildError::NoAnswer { secs: 10 })?
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => self
                .ui
                .info(format!("removed the unfinished build database `{build}`")),
            Ok(Err(e)) => self.ui.warn(format!("{e}; the next run removes it")),
            Err(_) => self.ui.warn(format!(
                "could not remove `{build}`; the next run removes it"
            )),
        }
        self.store.clean_temp(&self.key);
    }
}

/// One build under its locks: what every step needs, carried together.
struct BuildSession<'a> {
    admin: &'a Admin,
    ctx: &'a Ctx,
    fp: &'a Fingerprint,
    store: &'a Store,
    shared: &'a Shared<'a>,
    ui: &'a Events,
    req: Request<'a>,
    /// The key's template name, and the database there now (replaced only
    /// once its successor is complete).
    template: String,
    old: Option<admin::DbInfo>,
    /// The `migsnap_build_*` database every step builds in.
    build: String,
}

/// Find what there is, `plan::plan` what to try, and try it in order.
async fn build_locked(
    admin: &Admin,
    ctx: &Ctx,
    fp: &Fingerprint,
    store: &Store,
    shared: &Shared<'_>,
    ui: &Events,
    req: Request<'_>,
) -> Result<Snapshot> {
    let key = &fp.key;
    let template = admin::template_name(key);
    // The key's own snapshot, if what it recorded beyond the key still holds.
    let own = match store.load(key) {
        Ok(Some(m)) => match m.depends.verify(ctx.project_dir()) {
            Ok(()) => Some(m),
            Err(changed) => {
                ui.info(format!(
                    "snapshot {} no longer matches the project ({changed}); building on it",
                    fp.short()
                ));
                None
            }
        },
        Ok(None) => None,
        Err(why) => {
            reject_snapshot(store, key, true, &why, ui);
            None
        }
    };
    let holds = own.as_ref().map(|m| m.depends.digest());
    // An old template stays until its replacement is complete (dumped and
    // ready to promote): a failed or interrupted rebuild leaves it in place.
    let old = admin.database(&template).await?;
    let state = admin::template_state(old.as_ref(), key, holds.as_deref());
    let own_state = match &own {
        None => plan::Own::Absent,
        Some(m) if too_new(m, admin.version_num) => plan::Own::TooNew,
        Some(_) => plan::Own::Usable,
    };
    let plan = plan::plan(&plan::Found {
        rebuild: req.rebuild,
        cache_only: req.cache_only,
        template: state,
        trust_unsigned: ctx.cache.trust.trust_unsigned,
        own: own_state,
        inputs_recorded: holds.is_some(),
        // Never pushed, so never in the store.
        store: shared.configured() && fp.at.is_empty(),
    });
    match plan.steps.first() {
        Some(plan::Step::RefuseNotOurs) => {
            return Err(BuildError::NotOurs {
                template: template.to_string(),
            }
            .into())
        }
        // Another process finished it while we waited for the lock.
        Some(plan::Step::Ready) => {
            return Ok(Snapshot::ready(template, own.map(|m| m.depends.checked)))
        }
        _ => {}
    }
    if plan.warn_stale_template {
        ui.warn(format!(
            "template `{template}` does not match key {}; rebuilding it",
            fp.short()
        ));
    }
    if own_state == plan::Own::TooNew && !req.rebuild {
        if let Some(m) = &own {
            warn_too_new(m, admin.version_num, ui);
        }
    }
    store.clean_temp(key);
    let build = admin::build_name(key);
    if admin.database(&build).await?.is_some() {
        ui.info(format!("removing `{build}` left by an interrupted run"));
        admin.drop_build(&build).await?;
    }
    let session = BuildSession {
        admin,
        ctx,
        fp,
        store,
        shared,
        ui,
        req,
        template,
        old,
        build,
    };
    for step in plan.steps {
        let done = match step {
            plan::Step::Ready | plan::Step::RefuseNotOurs => unreachable!("decided above"),
            plan::Step::RestoreOwn => {
                let m = own
                    .as_ref()
                    .expect("planned only with a snapshot of its own");
                session
                    .restore_own(m, Origin::Local, OnReject::Discard)
                    .await?
            }
            plan::Step::RestoreFromStore => match shared.own(fp, store, admin.version_num).await {
                Some(m) => {
                    let restored = session
                        .restore_own(&m, Origin::Remote, OnReject::SkipStore)
                        .await?;
                    if restored.is_none() {
                        // Damaged or refused: not built on, not pushed over.
                        shared.skip(&m.key);
                    }
                    restored
                }
                None => None,
            },
            plan::Step::NothingCached => {
                return Err(BuildError::NothingCached {
                    short: fp.short().to_string(),
                }
                .into())
            }
            plan::Step::Ancestor => session.on_ancestor().await?,
            plan::Step::Cold => Some(session.cold().await?),
        };
        if let Some(snapshot) = done {
            return Ok(snapshot);
        }
    }
    unreachable!("every plan ends in a step that ends the build")
}

impl BuildSession<'_> {
    /// Restore the key's own snapshot `m` (its dump in the cache dir) into
    /// the build database, then hand it out as the request's target when
    /// nobody else waits for the template, else promote it. None: the dump
    /// turned out damaged or refused, and went as `on_reject` says
    /// (`restore_or_drop`).
    async fn restore_own(
        &self,
        m: &Manifest,
        origin: Origin,
        on_reject: OnReject,
    ) -> Result<Option<Snapshot>> {
        let (admin, ui, build) = (self.admin, self.ui, self.build.as_str());
        let t = Instant::now();
        if !m.authenticated {
            ui.warn(format!(
                "snapshot {} is not signed by a trusted key; restoring it for its own key only, as trust-unsigned allows (its triggers run as whoever runs the tests)",
                m.key.short()
            ));
        }
        ui.info(format!("restoring cached snapshot {}", m.key.short()));
        admin.create(build, None, self.ctx.clone_strategy()).await?;
        failpoint::point("build.created");
        if !restore_or_drop(admin, self.ctx, self.store, m, build, on_reject, ui).await? {
            return Ok(None);
        }
        failpoint::pause("restore.done").await;
        let handed_out = match self.req.hand_out {
            Some(to) => {
                let waiting = admin.others_holding(wanting_lock(&m.key)).await?;
                match plan::after_restore(true, waiting) {
                    plan::AfterRestore::HandOut => Some(to),
                    plan::AfterRestore::Promote => None,
                }
            }
            None => None,
        };
        if let Some(to) = handed_out {
            if let Err(e) = hand_out(admin, build, to).await {
                let _ = drop_build(admin, build).await;
                return Err(e);
            }
            ui.info(format!(
                "restored in {} into `{}`; the template follows in the background",
                units::duration(t.elapsed()),
                to.target
            ));
        } else {
            promote(admin, build, m, self.old.as_ref()).await?;
            ui.info(format!("restored in {}", units::duration(t.elapsed())));
        }
        Ok(Some(Snapshot::restored(
            self.template.clone(),
            origin,
            handed_out.is_some(),
            m,
        )))
    }

    /// Build on the best older snapshot, the cache dir's or the store's.
    /// None: there is none, or Django found it does not fit (said; the
    /// build database is gone and the next step starts from empty).
    async fn on_ancestor(&self) -> Result<Option<Snapshot>> {
        if !self.fp.at.is_empty() {
            return self.on_at_ancestor().await;
        }
        let (admin, fp, store, shared) = (self.admin, self.fp, self.store, self.shared);
        let replaced = crate::depends::Replaced::new(self.ctx.project_dir(), fp);
        let replaced = |path: &str| replaced.covers(path);
        let local = store.best_ancestor(fp, admin.version_num, &replaced);
        let better = shared
            .better_ancestor(fp, store, admin.version_num, local.as_ref(), &replaced)
            .await;
        // The store's, when it is better: its template may be here already;
        // else its dump comes down into the cache dir, or the cache dir's
        // own ancestor serves after all.
        let (base, origin) = match better {
            Some(b) if base_template_ready(admin, &b).await? => (Some(b), Origin::Local),
            Some(b) if shared.fetch_ancestor(&b, store, &fp.key).await => (Some(b), Origin::Remote),
            _ => (local, Origin::Local),
        };
        let Some(base) = base else {
            return Ok(None);
        };
        self.build_on(&base, origin).await
    }

    /// Build on `base` (from `origin`); None: it does not fit after all
    /// (said; the build database is gone and the next step starts from
    /// empty).
    async fn build_on(&self, base: &Manifest, origin: Origin) -> Result<Option<Snapshot>> {
        let (admin, fp, shared) = (self.admin, self.fp, self.shared);
        // A base just downloaded is the store's: a rejected one is
        // skipped (its copy discarded) and not pushed over.
        let on_reject = match origin {
            Origin::Remote if base.key == fp.key => OnReject::SkipStore,
            Origin::Remote => OnReject::SkipStoreAncestor,
            Origin::Local => OnReject::Leave,
        };
        let built = self.incremental(base, on_reject).await;
        if built.as_ref().is_err_and(cannot_build_on) && origin == Origin::Remote {
            shared.skip(&base.key);
        }
        match built {
            Ok(snapshot) => Ok(Some(Snapshot {
                origin: Some(origin),
                ..snapshot
            })),
            Err(e) if cannot_build_on(&e) => {
                self.ui.warn(format!(
                    "cannot build on snapshot {} ({}); migrating from empty instead",
                    base.key.short(),
                    e.message
                ));
                drop_build(admin, &self.build).await?;
                Ok(None)
            }
            Err(e) => {
                let _ = drop_build(admin, &self.build).await;
                Err(e)
            }
        }
    }

    /// `prepare --at`: build on the snapshot in the cache dir with the
    /// most migrations applied from which Django reaches the targets as
    /// it would from empty: a step that would unapply a migration, or a
    /// snapshot past the targets, rules one out (`django::choose_base`).
    /// The targets are resolved there, before any database is made.
    async fn on_at_ancestor(&self) -> Result<Option<Snapshot>> {
        let (admin, ctx, fp, store) = (self.admin, self.ctx, self.fp, self.store);
        let replaced = crate::depends::Replaced::new(ctx.project_dir(), fp);
        let candidates = store.at_candidates(fp, admin.version_num, &|p| replaced.covers(p));
        if candidates.is_empty() {
            return Ok(None);
        }
        let manifests: Vec<_> = candidates
            .iter()
            .map(|m| store.manifest_path(&m.key))
            .collect();
        let targets = shim_targets(&fp.at, ctx.project_dir());
        let chosen =
            django::choose_base(&ctx.django, &admin.conn, &targets, &manifests, self.ui).await?;
        match chosen.and_then(|i| candidates.get(i)) {
            Some(base) => self.build_on(base, Origin::Local).await,
            None => Ok(None),
        }
    }

    /// `migrate` from an empty database.
    async fn cold(&self) -> Result<Snapshot> {
        let (admin, ctx, ui, build) = (self.admin, self.ctx, self.ui, self.build.as_str());
        let t = Instant::now();
        let to = match self.fp.at.as_slice() {
            [] => String::new(),
            at => format!(" to {}", at.join(", then ")),
        };
        ui.info(format!(
            "no snapshot for key {}: migrating from an empty database{to}",
            self.fp.short()
        ));
        admin.create(build, None, ctx.clone_strategy()).await?;
        failpoint::point("build.created");
        let targets = shim_targets(&self.fp.at, ctx.project_dir());
        let migrate = async |tell: Option<django::OnAccelerator<'_>>| {
            let hooks = django::Hooks {
                inputs: None,
                accelerator: tell,
            };
            migrate_checked(ctx, admin, build, ui, hooks, &targets).await
        };
        // `verify-build`: stock Django into an empty scratch database,
        // beside the build.
        let (report, reference) = beside_stock(admin, ctx, self.fp, None, migrate, ui).await;
        let (report, reference) = match (report, reference) {
            (Ok(r), Ok(reference)) => (r, reference),
            (Err(e), _) | (_, Err(e)) => {
                let _ = drop_build(admin, build).await;
                return Err(e);
            }
        };
        self.finish_or_drop(Built {
            build,
            report: &report,
            info: BuildInfo {
                source: store::BuiltBy::Cold,
                base_key: None,
                seconds: 0.0,
                migrations: vec![],
                accelerated: false,
                verified: false,
                stock_migrations: vec![],
            },
            started: t,
            replacing: self.old.as_ref(),
            reference,
            base_is_stock: true,
        })
        .await?;
        Ok(Snapshot::built(
            self.template.clone(),
            Source::Cold,
            None,
            report,
        ))
    }

    async fn finish_or_drop(&self, built: Built<'_>) -> Result<()> {
        finish_or_drop(self.admin, self.ctx, self.fp, self.store, built, self.ui).await
    }
}

/// Rename the restored `build` into the target's place, as a clone of
/// the template would be put there (`Admin::put_in_place`), once the
/// restore's own sessions have gone.
async fn hand_out(admin: &Admin, build: &str, to: HandOut<'_>) -> Result<()> {
    failpoint::point("handout.before");
    admin.wait_for_sessions_to_end(build).await?;
    let existing = admin.database(to.target).await?;
    admin
        .put_in_place(build, to.target, to.mark, existing.as_ref(), to.force)
        .await?;
    failpoint::point("handout.after");
    Ok(())
}

/// Whether `base`'s template is on the server and still its own: the
/// fastest start for an incremental build, with nothing to restore. Never
/// a template restored from a foreign snapshot (issue #21), even when the
/// store now has an authenticated manifest for its key: what is in it came
/// from the foreign dump.
async fn base_template_ready(admin: &Admin, base: &Manifest) -> Result<bool> {
    let state = admin
        .template_state(&base.key, Some(&base.depends.digest()))
        .await?;
    Ok(base.authenticated && state.builds_on())
}

/// An ancestor's cached snapshot (`key` is not ours), if its manifest
/// checks out and the server is not older than the one it came from (the
/// dump itself is checked as it is restored). A damaged one is only skipped:
/// its own builder may be rewriting it right now.
fn ancestor_snapshot(
    store: &Store,
    key: &Key,
    server_version_num: u32,
    ui: &Events,
) -> Option<Manifest> {
    let reject = |why: store::ManifestError| {
        reject_snapshot(store, key, false, &why, ui);
        None
    };
    let m = match store.load(key) {
        Ok(Some(m)) => m,
        Ok(None) => return None,
        Err(why) => return reject(why),
    };
    // Replaced by a foreign one since it was chosen: never built on.
    if !m.authenticated {
        return None;
    }
    fits_server(&m, server_version_num, ui).then_some(m)
}

/// A dump never goes into an older server major version than it came from.
fn too_new(m: &Manifest, server_version_num: u32) -> bool {
    m.server_major() > server_version_num / 10000
}

fn warn_too_new(m: &Manifest, server_version_num: u32, ui: &Events) {
    ui.warn(format!(
        "cached snapshot {} comes from PostgreSQL {}, newer than this server ({}); not using it",
        m.key.short(),
        m.server_major(),
        server_version_num / 10000
    ));
}

/// Whether `m` can be restored on this server (a newer major's dump may
/// not load here): said when it cannot.
fn fits_server(m: &Manifest, server_version_num: u32, ui: &Events) -> bool {
    if too_new(m, server_version_num) {
        warn_too_new(m, server_version_num, ui);
        return false;
    }
    true
}

/// Say why a cached snapshot is unusable; discard it if the caller holds its
/// lock (`ours`), else just do not build on it (its builder may be at work).
fn reject_snapshot(
    store: &Store,
    key: &Key,
    ours: bool,
    why: &(dyn std::error::Error + 'static),
    ui: &Events,
) {
    let why = crate::error::one_line(why);
    if ours {
        ui.warn(format!("{why}; discarding it"));
        store.discard(key);
    } else {
        ui.warn(format!("{why}; not building on it"));
    }
}

/// Whether an incremental build failed because its base does not fit
/// (then it goes cold) rather than for a reason a cold build would hit too.
fn cannot_build_on(e: &Error) -> bool {
    django::is_history(e)
        || matches!(
            e.find::<BuildError>(),
            Some(BuildError::BaseUnusable { .. })
        )
}

impl BuildSession<'_> {
    /// Build on `base`: its template if still on the server, else its dump;
    /// then `migrate` forward, Django checking that the base still fits.
    async fn incremental(&self, base: &Manifest, on_reject: OnReject) -> Result<Snapshot> {
        let (admin, ctx, fp, store, ui) = (self.admin, self.ctx, self.fp, self.store, self.ui);
        let (build, replacing) = (self.build.as_str(), self.old.as_ref());
        let t = Instant::now();
        let base_short = base.key.short();
        ui.info(format!(
            "building on snapshot {base_short}: {} of {} migration files unchanged",
            store::ancestor_rank(base, fp).0,
            fp.migration_count()
        ));
        // The ancestor's template, if still on the server, is the fastest start.
        match base_template_ready(admin, base).await? {
            true => {
                let base_template = admin::template_name(&base.key);
                admin
                    .create(build, Some(&base_template), ctx.clone_strategy())
                    .await?;
                failpoint::point("build.created");
            }
            false => {
                let Some(m) = ancestor_snapshot(store, &base.key, admin.version_num, ui) else {
                    return Err(BuildError::BaseUnusable {
                        short: base_short.to_string(),
                        damaged: false,
                    }
                    .into());
                };
                admin.create(build, None, ctx.clone_strategy()).await?;
                failpoint::point("build.created");
                if !restore_or_drop(admin, ctx, store, &m, build, on_reject, ui).await? {
                    return Err(BuildError::BaseUnusable {
                        short: base_short.to_string(),
                        damaged: true,
                    }
                    .into());
                }
            }
        }
        // Django decides, once it has loaded the migrations, whether the base
        // still fits: same Django, no app removed, everything it applied unchanged.
        let fits = |now: &crate::depends::ShimInputs| {
            Depends::compatible(&base.depends, &base.applied, now, ctx.project_dir())
                .map_err(|c| c.to_string())
        };
        let targets = shim_targets(&fp.at, ctx.project_dir());
        // `verify-build` compares an accelerated increment with stock
        // Django's from the same start (a copy of the base, taken before
        // migrating, in `beside_stock`): from empty, the content types and
        // permissions the base's post_migrate made for a model renamed or
        // removed since would differ, as after any incremental build.
        let migrate = async |tell: Option<django::OnAccelerator<'_>>| {
            let hooks = django::Hooks {
                inputs: Some(&fits),
                accelerator: tell,
            };
            migrate_checked(ctx, admin, build, ui, hooks, &targets).await
        };
        let (report, reference) = beside_stock(admin, ctx, fp, Some(build), migrate, ui).await;
        let (report, reference) = (report?, reference?);
        {
            let built = Built {
                build,
                report: &report,
                info: BuildInfo {
                    source: store::BuiltBy::Incremental,
                    base_key: Some(base.key.clone()),
                    seconds: 0.0,
                    migrations: base.build.migrations.clone(),
                    accelerated: false,
                    verified: false,
                    stock_migrations: vec![],
                },
                started: t,
                replacing,
                reference,
                base_is_stock: !base.build.accelerated || base.build.verified,
            };
            finish_or_drop(admin, ctx, fp, store, built, ui).await?;
        }
        Ok(Snapshot {
            origin: Some(Origin::Local),
            ..Snapshot::built(
                self.template.clone(),
                Source::Incremental,
                Some(base.key.clone()),
                report,
            )
        })
    }
}

/// What becomes of a snapshot `restore_or_drop` cannot restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnReject {
    /// The key's own, in the cache dir, its lock held: discarded.
    Discard,
    /// The key's own, just downloaded from the store (its lock held): the
    /// copy is discarded and the store's object skipped for the rest of the
    /// run (`Shared::skip`); the run builds locally.
    SkipStore,
    /// An ancestor just downloaded from the store: the same, the copy
    /// discarded only if its lock is free.
    SkipStoreAncestor,
    /// An ancestor's: its own builder may be at work, so only not built on.
    Leave,
}

/// Restore the cached dump of `m` into `build`; on failure the build is
/// dropped. Ok(false): the dump turned out not to be what its manifest
/// says, or damaged, or refused (an extension `trusted-extensions` does not
/// name, a statement the server rejects, a `SECURITY DEFINER` function in a
/// snapshot that is not authenticated): it goes as `on_reject` says.
/// The restore checks the dump's sha256 and size in the same read that
/// checks its statements, before any of it runs.
async fn restore_or_drop(
    admin: &Admin,
    ctx: &Ctx,
    store: &Store,
    m: &Manifest,
    build: &str,
    on_reject: OnReject,
    ui: &Events,
) -> Result<bool> {
    let key = &m.key;
    let dump = store.dump_path(key);
    let expected = restore::Expected {
        sha256: m.dump.sha256.clone(),
        size: m.dump.size,
        server_major: admin.major(),
        // A foreign snapshot (kept under `trust-unsigned`) takes the
        // unprivileged path only (issue #21).
        authenticated: m.authenticated && !failpoint::unauthenticated(),
        extensions: m
            .extensions
            .iter()
            .map(|e| extension::Extension {
                name: e.name.clone(),
                schema: e.schema.clone(),
                version: e.version.clone(),
            })
            .collect(),
    };
    // Before anything is made: `CREATE EXTENSION` runs the extension's
    // script as the superuser, so only the ones the config trusts.
    let untrusted = extension::untrusted(&expected.extensions, &ctx.build.trusted_extensions);
    if let Some(first) = untrusted.first() {
        let _ = drop_build(admin, build).await;
        let why = BuildError::UntrustedExtension {
            short: key.short().to_string(),
            extension: first.name.clone(),
        };
        reject(store, key, on_reject, &why, ui);
        ui.advise(&why);
        return Ok(false);
    }
    let authenticated = expected.authenticated;
    let role = match admin.restore_role(build).await {
        Ok(role) => role,
        Err(e) => {
            let _ = drop_build(admin, build).await;
            return Err(e);
        }
    };
    let runners = restore::Runners {
        lanes: role.as_ref().unwrap_or(&admin.conn),
        privileged: &admin.conn,
    };
    let mut restored =
        restore::restore(runners, build, &dump, expected, ctx.build.restore_jobs).await;
    // Before the restore role's objects become the superuser's.
    if restored.is_ok() && !authenticated {
        restored = match admin.borrowed_rights(build, &runners.lanes.user).await {
            Ok(found) if found.is_empty() => Ok(()),
            Ok(found) => Err(restore::Failure::Refused(
                BuildError::BorrowsRights {
                    short: key.short().to_string(),
                    found: found.join(", "),
                    role: admin.conn.user.clone(),
                }
                .into(),
            )),
            // The server rejecting the check's own query means the dump
            // left something in its way: its fault, not the server's.
            Err(e) => Err(restore::Failure::after_restore(e)),
        };
    }
    let restored = match (restored, &role) {
        (Ok(()), Some(_)) => admin
            .end_restore_role(build)
            .await
            .map_err(restore::Failure::after_restore),
        (r, _) => r,
    };
    match restored {
        Ok(()) => Ok(true),
        Err(failure) => {
            let _ = drop_build(admin, build).await;
            if role.is_some() {
                let _ = admin.end_restore_role(build).await;
            }
            match failure {
                restore::Failure::Other(e) => Err(e),
                restore::Failure::Damaged(e) | restore::Failure::Refused(e) => {
                    reject(store, key, on_reject, &e, ui);
                    Ok(false)
                }
            }
        }
    }
}

/// `reject_snapshot`, as `on_reject` says.
fn reject(
    store: &Store,
    key: &Key,
    on_reject: OnReject,
    why: &(dyn std::error::Error + 'static),
    ui: &Events,
) {
    match on_reject {
        OnReject::Discard => reject_snapshot(store, key, true, why, ui),
        OnReject::Leave => reject_snapshot(store, key, false, why, ui),
        OnReject::SkipStore | OnReject::SkipStoreAncestor => {
            let why = crate::error::one_line(why);
            ui.warn(format!(
                "{why}; skipping the store's snapshot and building locally"
            ));
            // Nothing of it stays in the cache dir, unless someone here is
            // writing that key right now.
            match on_reject {
                OnReject::SkipStore => store.discard(key),
                _ => {
                    if let Ok(Some(_lock)) = store.try_lock(key) {
                        store.discard(key);
                    }
                }
            }
        }
    }
}

/// Why a build or a restore stopped (or what it warns about), as data:
/// the binary says how to fix each (`commands::hints`).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("database `{template}` exists but was not created by migsnap; refusing to replace it")]
    NotOurs { template: String },
    #[error("no usable cached snapshot of key {short} to make its template from")]
    NothingCached { short: String },
    /// A snapshot's dump needs an extension the config does not trust.
    #[error(
        "refused snapshot {short}: it needs extension `{extension}`, which trusted-extensions does not name"
    )]
    UntrustedExtension { short: String, extension: String },
    /// A warning: the user's own migrations created one.
    #[error(
        "the migrations create extension `{extension}`, which trusted-extensions does not name: the template of snapshot {short} serves this server, but its dump will not be restored (a new server, the store) and it is not pushed"
    )]
    CreatesUntrusted { extension: String, short: String },
    /// A warning: Django read migrations from `dir`, which the key's
    /// globs do not cover (the settings' text does not name it either).
    #[error(
        "migrations in `{dir}` are not covered by the `migrations` globs, and the settings' text does not name them in MIGRATION_MODULES: migsnap records and checks them, and `migsnap key` covers them once a build recorded them, but a CI job that computes its cache key before restoring the cache does not"
    )]
    Unkeyed { dir: String },
    /// A snapshot that is not authenticated left objects that would run
    /// with the rights of migsnap's `role`: `found` lists them.
    #[error(
        "refused snapshot {short}: it is not authenticated and its {found}, which would run with the rights of `{role}`"
    )]
    BorrowsRights {
        short: String,
        found: String,
        role: String,
    },
    /// Removing an interrupted build's database took longer than `secs`.
    #[error("the server did not answer in {secs} s")]
    NoAnswer { secs: u64 },
    /// Django migrated some other database than the build database.
    #[error(
        "Django reported applying {migration} but `{build}` does not record it; nothing was saved"
    )]
    NotRecorded { migration: String, build: String },
    /// `what` says which files changed while migrate ran.
    #[error(
        "{what} while migrate ran; nothing was saved, since the database may not match the files"
    )]
    Changed { what: String },
    /// `verify-build`: the accelerated build is not what stock Django's
    /// `migrate` makes (`what`: the first difference).
    #[error(
        "verify-build: the accelerated build of snapshot {short} differs from stock Django's: {what}; nothing was saved"
    )]
    Unverified { short: String, what: String },
    /// `verify-build` found an accelerated build with no stock result
    /// beside it to compare with: a bug (`beside_stock` makes one whenever
    /// the accelerator and verification are on).
    #[error("verify-build: snapshot {short} was built with the accelerator but no stock build ran beside it; nothing was saved")]
    NoReference { short: String },
    /// The snapshot an incremental build would start from cannot be used
    /// (gone from the server and its dump `damaged`, or unusable or
    /// refused): the build goes cold, as when Django finds the history
    /// does not fit.
    #[error("snapshot {short} is {}", if *.damaged { "damaged" } else { "unusable" })]
    BaseUnusable { short: String, damaged: bool },
    /// Removing an interrupted build's database needs a runtime of its own.
    #[error("cannot start a runtime")]
    Runtime(#[source] std::io::Error),
}

impl crate::error::Typed for BuildError {
    fn kind(&self) -> crate::error::Kind {
        match self {
            BuildError::NotRecorded { .. } | BuildError::Unverified { .. } => {
                crate::error::Kind::Django
            }
            BuildError::NoAnswer { .. } => crate::error::Kind::Server,
            BuildError::BaseUnusable { .. }
            | BuildError::Runtime(_)
            | BuildError::NoReference { .. } => crate::error::Kind::Internal,
            _ => crate::error::Kind::Usage,
        }
    }
}

/// `migrate` (the build's), and, with `verify-build` and the accelerator
/// on, stock Django's `migrate` of the same migrations beside it, into a
/// scratch database (a copy of `start` taken before `migrate` begins, or an
/// empty one) that is dropped once its facts are read. The stock build
/// starts once the build's Django says django-fastmig is migrating (`tell`):
/// without it there is nothing to verify, and nothing runs. Both results,
/// the build's first: a failed build is reported before its reference.
async fn beside_stock<T>(
    admin: &Admin,
    ctx: &Ctx,
    fp: &Fingerprint,
    start: Option<&str>,
    migrate: impl AsyncFnOnce(Option<django::OnAccelerator<'_>>) -> Result<T>,
    ui: &Events,
) -> (Result<T>, Result<Option<verify::Facts>>) {
    if !(ctx.django.accelerate && ctx.build.verify) {
        return (migrate(None).await, Ok(None));
    }
    let (copied, copy_made) = tokio::sync::oneshot::channel::<()>();
    let (told, accelerated) = tokio::sync::oneshot::channel::<bool>();
    let told = std::sync::Mutex::new(Some(told));
    let tell = |active: bool| {
        if let Some(told) = told.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = told.send(active);
        }
    };
    let reference = admin.with_scratch(start, async |db| {
        let _ = copied.send(());
        match accelerated.await {
            Ok(true) => verify::stock_facts(admin, ctx, fp, db, ui).await.map(Some),
            // Stock Django built it (or it failed before saying): nothing
            // to verify.
            _ => Ok(None),
        }
    });
    let build = async {
        // The copy must be whole before the build changes what it copies;
        // if it could not be made, the build goes ahead (the reference's
        // error is reported after it).
        let _ = copy_made.await;
        let built = migrate(Some(&tell)).await;
        tell(false);
        built
    };
    tokio::join!(build, reference)
}

async fn drop_build(admin: &Admin, build: &str) -> Result<()> {
    admin.drop_build(build).await
}

/// `migrate` into `build` (to `targets`, one after another, when there are
/// any), once it is sure the result can be saved: a pg_dump fit for this
/// server must exist (a few stats and `pg_dump --version`; only builds
/// that migrate need it, so the cache path does not pay).
async fn migrate_checked(
    ctx: &Ctx,
    admin: &Admin,
    build: &str,
    ui: &Events,
    hooks: django::Hooks<'_>,
    targets: &[String],
) -> Result<django::MigrateReport> {
    ctx.build.programs.find("pg_dump", Some(admin.major()))?;
    django::migrate(&ctx.django, &admin.conn, build, ui, hooks, targets).await
}

/// `Fingerprint::at`'s targets as the shim takes them: a project-relative
/// file path (kept so in the key, so that the key is the same in every
/// checkout) made absolute again.
fn shim_targets(at: &[String], project_dir: &Path) -> Vec<String> {
    at.iter()
        .map(
            |t| match fingerprint::is_file_target(t) && Path::new(t).is_relative() {
                true => project_dir.join(t).to_string_lossy().into_owned(),
                false => t.clone(),
            },
        )
        .collect()
}

/// The promotion, between two crash points. The template it replaces (a
/// stale one, or the old one under `--rebuild`) goes only now, once the new
/// one is complete: DROP DATABASE cannot share the promotion's transaction,
/// and a crash in between leaves the dump and manifest, which the next run
/// restores.
async fn promote(
    admin: &Admin,
    build: &str,
    m: &Manifest,
    replacing: Option<&admin::DbInfo>,
) -> Result<()> {
    failpoint::point("promote.before");
    if let Some(old) = replacing {
        admin.drop(old).await?;
    }
    let inputs = m.depends.digest();
    admin
        .promote(build, &m.key, &inputs, !m.authenticated)
        .await?;
    failpoint::point("promote.after");
    Ok(())
}

/// A build database Django has just migrated, and how it came about.
struct Built<'a> {
    build: &'a str,
    report: &'a django::MigrateReport,
    info: BuildInfo,
    started: Instant,
    replacing: Option<&'a admin::DbInfo>,
    /// `verify-build`: what stock Django's `migrate` made from the same
    /// start, beside the build (`beside_stock`); None when not asked for.
    reference: Option<verify::Facts>,
    /// What the build started from is stock Django's result (empty, a
    /// stock snapshot, a verified accelerated one): only then is a
    /// verified build equal to stock Django's whole.
    base_is_stock: bool,
}

/// `finish`, dropping the build database when it fails (a full or
/// read-only cache dir, pg_dump failing, files changed during the build):
/// nothing half-made stays behind.
async fn finish_or_drop(
    admin: &Admin,
    ctx: &Ctx,
    fp: &Fingerprint,
    store: &Store,
    built: Built<'_>,
    ui: &Events,
) -> Result<()> {
    let build = built.build;
    let result = finish(admin, ctx, fp, store, built, ui).await;
    if result.is_err() {
        let _ = drop_build(admin, build).await;
    }
    result
}

/// Record what the build read, make sure none of it changed while Django
/// ran, dump the build database into the cache (dump, then manifest), then
/// promote it to the template.
async fn finish(
    admin: &Admin,
    ctx: &Ctx,
    fp: &Fingerprint,
    store: &Store,
    built: Built<'_>,
    ui: &Events,
) -> Result<()> {
    let Built {
        build,
        report,
        mut info,
        started,
        replacing,
        reference,
        base_is_stock,
    } = built;
    let depends = settled_inputs(ctx, fp, report, ui).await?;
    let identity = dump::identity(&admin.conn, build).await?;
    let extensions = {
        let client = admin.conn.connect(build).await?;
        extension::installed(&client, build).await?
    };
    // The migrations are the user's own, so the build ran them; but a
    // restore of this snapshot creates only trusted extensions, so say now
    // rather than refuse it later without a word about why.
    for e in extension::untrusted(&extensions, &ctx.build.trusted_extensions) {
        let warning = BuildError::CreatesUntrusted {
            extension: e.name.clone(),
            short: fp.short().to_string(),
        };
        ui.warn_about(warning.to_string(), &warning);
    }
    let applied = identity.applied();
    // Everything Django said it applied must be recorded in the build
    // database; else it migrated some other database.
    if let Some(missing) = report.applied.iter().find(|a| !applied.contains(&a.name)) {
        return Err(BuildError::NotRecorded {
            migration: missing.name.clone(),
            build: build.to_string(),
        }
        .into());
    }
    // Before the dump: a build that fails its check is never saved.
    info.accelerated = report.accelerated;
    info.stock_migrations = report.stock.clone();
    if report.accelerated && ctx.build.verify {
        let Some(reference) = &reference else {
            return Err(BuildError::NoReference {
                short: fp.short().to_string(),
            }
            .into());
        };
        verify::against(admin, ctx, fp, build, reference).await?;
        info.verified = base_is_stock;
    }
    let t = Instant::now();
    let (programs, conn, db, major, st, key) = (
        ctx.build.programs.clone(),
        admin.conn.clone(),
        build.to_string(),
        admin.major(),
        store.clone(),
        fp.key.clone(),
    );
    let dump = crate::error::blocking("the dump", move || {
        let tmp = st.temp_file(&key)?;
        let dir = st.dir().to_path_buf();
        let write_error = |e| store::cache_write_error(&dir, e);
        let (tmp, dumped) = dump::dump(&programs, &conn, &db, major, tmp, &identity, write_error)?;
        failpoint::point("dump.written");
        st.persist(tmp, &st.dump_path(&key))?;
        failpoint::point("dump.renamed");
        Ok::<_, Error>(store::DumpInfo {
            file: format!("{key}.sql.zst"),
            sha256: dumped.sha256,
            size: dumped.size,
        })
    })
    .await??;
    info.seconds = started.elapsed().as_secs_f64();
    // The base's figures for what is still applied, then this build's own.
    info.migrations
        .retain(|m| applied.contains(&m.name) && !report.applied.iter().any(|a| a.name == m.name));
    info.migrations.extend(report.applied.iter().cloned());
    let manifest = Manifest {
        format: store::MANIFEST_FORMAT,
        key: fp.key.clone(),
        created_unix: store::now_unix(),
        migsnap_version: env!("CARGO_PKG_VERSION").to_string(),
        server_version_num: admin.version_num,
        dump,
        migrations: fp.migrations().clone(),
        key_inputs: fp.key_inputs().clone(),
        salt_sha256: fp.salt_sha256.clone(),
        applied,
        build: info,
        depends,
        extensions: extensions
            .into_iter()
            .map(|e| store::ExtensionRecord {
                name: e.name,
                schema: e.schema,
                version: e.version,
            })
            .collect(),
        project_dir: Some(ctx.project_dir().to_path_buf()),
        alias: fp.alias.clone(),
        at: fp.at.clone(),
        // Built here (cold, or on an authenticated ancestor): signed as ours.
        authenticated: true,
    };
    store.write_manifest(&manifest)?;
    ui.info(format!(
        "saved snapshot {} ({} KiB) in {}",
        fp.short(),
        manifest.dump.size / 1024,
        units::duration(t.elapsed())
    ));
    promote(admin, build, &manifest, replacing).await
}

/// What the build depended on beyond the key, once it is certain that
/// nothing changed while Django ran: the key's files are hashed again, and
/// so is everything Django reported reading. A `git checkout` during the
/// build makes this an error, and nothing is saved.
async fn settled_inputs(
    ctx: &Ctx,
    fp: &Fingerprint,
    report: &django::MigrateReport,
    ui: &Events,
) -> Result<Depends> {
    let changed = |what: String| -> Error { BuildError::Changed { what }.into() };
    let globs = MigrationGlobs::new(&ctx.key)?;
    let recorded = Depends::record(ctx.project_dir(), fp, &report.inputs, |rel| {
        globs.is_match(rel)
    })
    .map_err(|c| changed(c.0))?;
    for dir in &recorded.unkeyed_dirs {
        let warning = BuildError::Unkeyed { dir: dir.clone() };
        ui.warn_about(warning.to_string(), &warning);
    }
    let (spec, depends, at) = (ctx.key.clone(), recorded.depends, fp.at.clone());
    let (again, depends) = crate::error::blocking("hashing the migrations", move || {
        let again = fingerprint::compute(&spec).map(|fp| fp.at(at));
        let holds = depends.verify(&spec.root);
        (again.map(|fp| (fp, holds)), depends)
    })
    .await?;
    let (again, holds) = again?;
    if again.key != fp.key {
        let what = fp
            .migrations()
            .iter()
            .find(|(path, hash)| again.migrations().get(*path) != Some(hash))
            .map(|(path, _)| format!("`{path}` changed"))
            .unwrap_or_else(|| "the migration files changed".to_string());
        return Err(changed(what));
    }
    holds.map_err(|c| changed(c.0))?;
    Ok(depends)
}
