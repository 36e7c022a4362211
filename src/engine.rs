//! The snapshot engine: make sure a template database for the current key
//! exists on the server, building it the cheapest way available.
//!
//! Order of preference once the template is missing: restore the cached dump
//! for the key; else start from the best ancestor snapshot (all of its
//! migration files unchanged) and let `migrate` apply only the new ones;
//! else migrate from empty. A newly built database is dumped to the cache
//! and then promoted to the template in one transaction.
//!
//! Building happens under two locks, always taken in this order: a file lock
//! per key in the cache dir, then a PostgreSQL advisory lock per key. Both
//! die with the process, so a crash never wedges a later run, and anything a
//! crashed run left behind (temp files, the build database) is removed by
//! the next run while it holds the locks. After Ctrl-C the interrupted run
//! removes them itself (`clean_up_interrupted`).

use crate::django::{self, Applied, MigrateFailure};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::fingerprint::Fingerprint;
use crate::pg::admin::{self, Admin};
use crate::pg::{dump, restore, ConnInfo};
use crate::settings::{ServerChoice, Settings};
use crate::store::{self, BuildInfo, Manifest, Store};
use crate::ui::{self, Ui};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Template,
    Cache,
    Incremental,
    Cold,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
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
    pub base_key: Option<String>,
    pub applied: Vec<Applied>,
}

/// Connect to the configured server; the embedded one is started on demand.
pub async fn connect(settings: &Settings, ui: &Ui) -> Result<Admin> {
    match &settings.server {
        ServerChoice::Url(url) => Admin::connect(&ConnInfo::from_url(url)?).await,
        ServerChoice::Embedded(server) => {
            let info = server.conn_info();
            if server.probably_running() {
                if let Ok(admin) = Admin::connect(&info).await {
                    return Ok(admin);
                }
            }
            let (s, u) = (server.clone(), *ui);
            crate::error::blocking("starting the server", move || s.start(&u)).await??;
            Admin::connect(&info).await
        }
    }
}

/// Build (or find, after waiting for another builder) the template for
/// `fp`. `rebuild` skips templates and caches and migrates from empty.
pub async fn build(
    admin: &Admin,
    settings: &Settings,
    fp: &Fingerprint,
    ui: &Ui,
    rebuild: bool,
) -> Result<Snapshot> {
    // Before any lock or wait: a build needs manage.py, so say now if it is missing.
    django::check_manage_py(settings)?;
    let store = Store::new(settings.ensure_cache_dir()?).with_secret(settings.cache_secret.clone());
    let key = fp.key.as_str();
    let short = fp.short();
    let _file_lock = store
        .lock(key, || {
            ui.info(format!(
                "waiting for another migsnap building snapshot {short} (cache lock)…"
            ))
        })
        .await?;
    admin
        .lock_key(key, || {
            ui.info(format!(
                "waiting for another migsnap building snapshot {short} on the server…"
            ))
        })
        .await?;
    failpoint::point("build.locked");
    set_in_flight(Some(InFlight {
        conn: admin.conn.clone(),
        cache_dir: store.dir().to_path_buf(),
        key: key.to_string(),
    }));
    let result = build_locked(admin, settings, fp, &store, ui, rebuild).await;
    // Not reached when Ctrl-C drops this future: `clean_up_interrupted`
    // then finds the entry and removes what the build left.
    set_in_flight(None);
    // Best effort: closing the connection releases it anyway.
    let _ = admin.unlock_key(key).await;
    result
}

/// The build this process is running, if any: what an interrupted run
/// must clean up.
struct InFlight {
    conn: ConnInfo,
    cache_dir: std::path::PathBuf,
    key: String,
}

static IN_FLIGHT: std::sync::Mutex<Option<InFlight>> = std::sync::Mutex::new(None);

fn set_in_flight(v: Option<InFlight>) {
    *IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner()) = v;
}

/// After Ctrl-C dropped a build (killing Django or abandoning a restore),
/// drop its `migsnap_build_*` database and temp files now rather than on the
/// next run. The build's own locks went with the dropped future, so both are
/// taken again first; if another process got either one in between, that
/// process owns the leftovers and removes them itself.
pub async fn clean_up_interrupted(ui: &Ui) {
    let taken = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner()).take();
    let Some(f) = taken else { return };
    let store = Store::new(&f.cache_dir);
    let Ok(Some(_file_lock)) = store.try_lock(&f.key) else {
        return;
    };
    let Ok(admin) = Admin::connect(&f.conn).await else {
        return;
    };
    if !matches!(admin.try_lock_key(&f.key).await, Ok(true)) {
        return;
    }
    let build = admin::build_name(&f.key);
    match admin.drop_build(&build).await {
        Ok(()) => ui.info(format!("removed the unfinished build database `{build}`")),
        Err(e) => ui.warn(format!("{e}; the next run removes it")),
    }
    store.clean_temp(&f.key);
}

async fn build_locked(
    admin: &Admin,
    settings: &Settings,
    fp: &Fingerprint,
    store: &Store,
    ui: &Ui,
    rebuild: bool,
) -> Result<Snapshot> {
    let key = fp.key.as_str();
    let template = admin::template_name(key);
    if let Some(existing) = admin.database(&template).await? {
        if existing.is_template_for(key) && !rebuild {
            // Another process finished it while we waited for the lock.
            return Ok(Snapshot {
                template,
                source: Source::Template,
                base_key: None,
                applied: vec![],
            });
        }
        if !existing.made_by_migsnap() {
            return Err(Error::usage(format!(
                "database `{template}` exists but was not created by migsnap; refusing to replace it"
            ))
            .hint(format!("rename or drop `{template}` yourself")));
        }
        if !rebuild {
            ui.warn(format!(
                "template `{template}` does not match key {}; rebuilding it",
                fp.short()
            ));
        }
        admin.drop(&existing).await?;
    }
    store.clean_temp(key);
    let build = admin::build_name(key);
    if admin.database(&build).await?.is_some() {
        ui.info(format!("removing `{build}` left by an interrupted run"));
        admin.drop_build(&build).await?;
    }

    if !rebuild {
        if usable_snapshot(store, key, admin.version_num, true, ui).is_some() {
            let t = Instant::now();
            ui.info(format!("restoring cached snapshot {}", fp.short()));
            admin
                .create(&build, None, settings.effective_clone_strategy())
                .await?;
            failpoint::point("build.created");
            if restore_or_drop(admin, settings, store, key, &build, true, ui).await? {
                promote(admin, &build, key).await?;
                ui.info(format!("restored in {}", ui::duration(t.elapsed())));
                return Ok(Snapshot {
                    template,
                    source: Source::Cache,
                    base_key: None,
                    applied: vec![],
                });
            }
        }
        if let Some(base) = store.best_ancestor(fp, admin.version_num) {
            match incremental(admin, settings, fp, store, &base, &build, ui).await {
                Ok(snapshot) => return Ok(snapshot),
                Err(f) if f.history => {
                    ui.warn(format!(
                        "cannot build on snapshot {} ({}); migrating from empty instead",
                        crate::fingerprint::short_key(&base.key),
                        f.error.message
                    ));
                    drop_build(admin, &build).await?;
                }
                Err(f) => {
                    let _ = drop_build(admin, &build).await;
                    return Err(f.error);
                }
            }
        }
    }

    let t = Instant::now();
    ui.info(format!(
        "no snapshot for key {}: migrating from an empty database",
        fp.short()
    ));
    admin
        .create(&build, None, settings.effective_clone_strategy())
        .await?;
    failpoint::point("build.created");
    let report = match django::migrate(settings, &admin.conn, &build, ui).await {
        Ok(r) => r,
        Err(f) => {
            let _ = drop_build(admin, &build).await;
            return Err(f.error);
        }
    };
    finish_or_drop(
        admin,
        fp,
        store,
        &build,
        BuildInfo {
            source: "cold".into(),
            base_key: None,
            seconds: 0.0,
        },
        t,
        ui,
    )
    .await?;
    Ok(Snapshot {
        template,
        source: Source::Cold,
        base_key: None,
        applied: report.applied,
    })
}

/// The cached snapshot for `key` if its manifest and dump check out and the
/// server is not older than the one it came from. Damaged ones are removed.
///
/// `ours`: the caller holds this key's lock. Only then are damaged files
/// removed; another key's files (an ancestor) are just skipped, since its own
/// builder may be rewriting them right now.
fn usable_snapshot(
    store: &Store,
    key: &str,
    server_version_num: u32,
    ours: bool,
    ui: &Ui,
) -> Option<Manifest> {
    let reject = |why: String| {
        reject_snapshot(store, key, ours, why, ui);
        None
    };
    let m = match store.load(key) {
        Ok(Some(m)) => m,
        Ok(None) => return None,
        Err(why) => return reject(why),
    };
    if m.server_major() > server_version_num / 10000 {
        ui.warn(format!(
            "cached snapshot {} comes from PostgreSQL {}, newer than this server ({}); not using it",
            crate::fingerprint::short_key(key),
            m.server_major(),
            server_version_num / 10000
        ));
        return None;
    }
    if let Err(why) = store.verify(&m) {
        return reject(why);
    }
    Some(m)
}

/// Say why a cached snapshot is unusable; discard it if the caller holds its
/// lock (`ours`), else just do not build on it (its builder may be at work).
fn reject_snapshot(store: &Store, key: &str, ours: bool, why: String, ui: &Ui) {
    if ours {
        ui.warn(format!("{why}; discarding it"));
        store.discard(key);
    } else {
        ui.warn(format!("{why}; not building on it"));
    }
}

async fn incremental(
    admin: &Admin,
    settings: &Settings,
    fp: &Fingerprint,
    store: &Store,
    base: &Manifest,
    build: &str,
    ui: &Ui,
) -> Result<Snapshot, MigrateFailure> {
    let t = Instant::now();
    let base_short = crate::fingerprint::short_key(&base.key);
    ui.info(format!(
        "building on snapshot {base_short}: {} of {} migration files unchanged",
        base.migrations.len(),
        fp.migrations.len()
    ));
    // The ancestor's template, if still on the server, is the fastest start.
    let base_template = admin::template_name(&base.key);
    match admin.database(&base_template).await? {
        Some(info) if info.is_template_for(&base.key) => {
            admin
                .create(
                    build,
                    Some(&base_template),
                    settings.effective_clone_strategy(),
                )
                .await?;
            failpoint::point("build.created");
        }
        _ => {
            let Some(m) = usable_snapshot(store, &base.key, admin.version_num, false, ui) else {
                return Err(MigrateFailure {
                    history: true,
                    error: Error::internal(format!("snapshot {base_short} is unusable")),
                });
            };
            admin
                .create(build, None, settings.effective_clone_strategy())
                .await?;
            failpoint::point("build.created");
            if !restore_or_drop(admin, settings, store, &m.key, build, false, ui).await? {
                return Err(MigrateFailure {
                    history: true,
                    error: Error::internal(format!("snapshot {base_short} is damaged")),
                });
            }
        }
    }
    let report = django::migrate(settings, &admin.conn, build, ui).await?;
    let info = BuildInfo {
        source: "incremental".into(),
        base_key: Some(base.key.clone()),
        seconds: 0.0,
    };
    finish_or_drop(admin, fp, store, build, info, t, ui).await?;
    Ok(Snapshot {
        template: admin::template_name(&fp.key),
        source: Source::Incremental,
        base_key: Some(base.key.clone()),
        applied: report.applied,
    })
}

/// Restore the cached dump of `key` into `build`; on failure the build is
/// dropped. Ok(false): the dump turned out damaged while it was decoded,
/// and is discarded as `usable_snapshot` would have (see `reject_snapshot`).
async fn restore_or_drop(
    admin: &Admin,
    settings: &Settings,
    store: &Store,
    key: &str,
    build: &str,
    ours: bool,
    ui: &Ui,
) -> Result<bool> {
    let dump = store.dump_path(key);
    match restore::restore(&admin.conn, build, &dump, settings.restore_jobs).await {
        Ok(()) => Ok(true),
        Err(failure) => {
            let _ = drop_build(admin, build).await;
            match failure {
                restore::Failure::Other(e) => Err(e),
                restore::Failure::Damaged(e) | restore::Failure::Refused(e) => {
                    // The whole chain: the last cause is zstd's own words.
                    let mut why = e.to_string();
                    let mut cause = std::error::Error::source(&e);
                    while let Some(c) = cause {
                        why.push_str(&format!(": {c}"));
                        cause = c.source();
                    }
                    reject_snapshot(store, key, ours, why, ui);
                    Ok(false)
                }
            }
        }
    }
}

async fn drop_build(admin: &Admin, build: &str) -> Result<()> {
    admin.drop_build(build).await
}

/// The promotion, between two crash points.
async fn promote(admin: &Admin, build: &str, key: &str) -> Result<()> {
    failpoint::point("promote.before");
    admin.promote(build, key).await?;
    failpoint::point("promote.after");
    Ok(())
}

/// `finish`, dropping the build database when it fails (a full or
/// read-only cache dir, pg_dump failing): nothing half-made stays behind.
async fn finish_or_drop(
    admin: &Admin,
    fp: &Fingerprint,
    store: &Store,
    build: &str,
    info: BuildInfo,
    started: Instant,
    ui: &Ui,
) -> Result<()> {
    let result = finish(admin, fp, store, build, info, started, ui).await;
    if result.is_err() {
        let _ = drop_build(admin, build).await;
    }
    result
}

/// Dump the finished build database into the cache (dump, then manifest),
/// then promote it to the template.
async fn finish(
    admin: &Admin,
    fp: &Fingerprint,
    store: &Store,
    build: &str,
    mut info: BuildInfo,
    started: Instant,
    ui: &Ui,
) -> Result<()> {
    let applied = applied_rows(&admin.conn, build).await?;
    let t = Instant::now();
    let (conn, db, major, st, key) = (
        admin.conn.clone(),
        build.to_string(),
        admin.major(),
        store.clone(),
        fp.key.clone(),
    );
    let dump = crate::error::blocking("the dump", move || {
        dump::dump_to_store(&conn, &db, major, &st, &key)
    })
    .await??;
    info.seconds = started.elapsed().as_secs_f64();
    let manifest = Manifest {
        format: store::MANIFEST_FORMAT,
        key: fp.key.clone(),
        created_unix: store::now_unix(),
        migsnap_version: env!("CARGO_PKG_VERSION").to_string(),
        server_version_num: admin.version_num,
        dump,
        migrations: fp.migrations.clone(),
        key_inputs: fp.key_inputs.clone(),
        salt_sha256: fp.salt_sha256.clone(),
        applied,
        build: info,
    };
    store.write_manifest(&manifest)?;
    ui.info(format!(
        "saved snapshot {} ({} KiB) in {}",
        fp.short(),
        manifest.dump.size / 1024,
        ui::duration(t.elapsed())
    ));
    promote(admin, build, &fp.key).await
}

/// django_migrations as "app.name" in the order they were applied.
async fn applied_rows(conn: &ConnInfo, db: &str) -> Result<Vec<String>> {
    let client = conn.connect(db).await?;
    let rows = client
        .query(
            "SELECT app || '.' || name FROM django_migrations ORDER BY id",
            &[],
        )
        .await;
    Ok(match rows {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => vec![],
        Err(e) => {
            return Err(crate::pg::db_error(
                format!("cannot read django_migrations in `{db}`"),
                e,
            ))
        }
    })
}
