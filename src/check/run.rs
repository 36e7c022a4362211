//! `check`'s use case: both catalogs for the current key (the migrated
//! template's indexes, and those of a database built from Django's model
//! state), computed once per key and cached in the cache dir as
//! `<key>.check.json`, so a second `check` on an unchanged project reads one
//! file, hashes the migration files and connects to nothing: no server, no
//! Python. Then the comparison, attributed to migration files.

use super::{Catalog, Finding, MigrationSource};
use crate::context::Ctx;
use crate::django::{self, IndexConflict, MigrationFile, Mode};
use crate::engine;
use crate::error::Result;
use crate::fingerprint::Fingerprint;
use crate::key::Key;
use crate::names::DbName;
use crate::pg::admin::Admin;
use crate::pg::{db_error, quote_ident};
use crate::report::Events;
use crate::session::Session;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// What `check` found for the current key.
#[derive(Debug)]
pub struct Checked {
    pub key: Key,
    /// Every difference, attributed to the migration that made it.
    pub findings: Vec<Finding>,
}

/// Compare the current key's migrated indexes with its model state.
/// `refresh`: recompute the catalogs even if cached.
pub async fn run(session: &Session<'_>, refresh: bool, ui: &Events) -> Result<Checked> {
    let ctx = session.ctx;
    let fp = session.fingerprint().await?;
    let store = session.store()?;
    let cached = match refresh {
        false => load_current(ctx, fp, &store, ui),
        true => None,
    };
    let cache = match cached {
        Some(c) => c,
        None => {
            let c = build_cache(session, fp, ui).await?;
            let bytes = serde_json::to_vec_pretty(&c).map_err(CheckError::Serialise)?;
            // Under the key's lock: a concurrent build cleans this key's
            // temp files while it holds that lock.
            let _lock = store.lock(&fp.key, || {}).await?;
            write_atomic(&store, &fp.key, &store.check_path(&fp.key), &bytes)?;
            c
        }
    };
    Ok(checked(ctx, fp, &cache))
}

/// What `run` would find, if `check` has cached both catalogs for the
/// current key and inputs; `None` (without connecting to anything or
/// starting Python) otherwise. For `lint`, which must not build a
/// model-state database to lint a plan.
pub async fn cached(session: &Session<'_>, ui: &Events) -> Result<Option<Checked>> {
    let ctx = session.ctx;
    let fp = session.fingerprint().await?;
    let store = session.store()?;
    Ok(load_current(ctx, fp, &store, ui).map(|cache| checked(ctx, fp, &cache)))
}

/// The cache of `fp`, if it is there and built from the current inputs.
fn load_current(ctx: &Ctx, fp: &Fingerprint, store: &Store, ui: &Events) -> Option<CheckCache> {
    let inputs = engine::current_inputs(store, fp, ctx.project_dir())?;
    load_cache(&store.check_path(&fp.key), &fp.key, &inputs, ui)
}

/// The comparison, attributed to migration files.
fn checked(ctx: &Ctx, fp: &Fingerprint, cache: &CheckCache) -> Checked {
    let mut findings = super::compare(&cache.migrated, &cache.model_state);
    findings.extend(super::conflict_findings(&cache.model_state_conflicts));
    super::sort(&mut findings);
    let sources = migration_sources(ctx, fp, &cache.migration_files);
    super::attribute_all(&mut findings, &sources);
    Checked {
        key: fp.key.clone(),
        findings,
    }
}

/// Both sides of the comparison for one key.
#[derive(Debug, Serialize, Deserialize)]
struct CheckCache {
    format: u32,
    key: Key,
    /// Digest of the inputs the key's snapshot was built from (`depends`):
    /// the catalogs hold only while those do.
    inputs: String,
    server_version_num: u32,
    migrated: Catalog,
    model_state: Catalog,
    /// Index names the model state declares twice, differently. A cache
    /// written before they were reported has none: such a state could not
    /// be built then (the second `CREATE INDEX` failed).
    #[serde(default)]
    model_state_conflicts: Vec<IndexConflict>,
    /// Every migration module Django loaded; paths inside the project are
    /// stored relative to it so a moved checkout still finds them.
    migration_files: Vec<MigrationFile>,
}

fn load_cache(path: &Path, key: &Key, inputs: &str, ui: &Events) -> Option<CheckCache> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice::<CheckCache>(&bytes) {
        Ok(c) if c.format == super::CACHE_FORMAT && &c.key == key => {
            // Built from other inputs (an app added since): recompute.
            (c.inputs == inputs).then_some(c)
        }
        _ => {
            ui.warn(format!("ignoring damaged check cache `{}`", path.display()));
            None
        }
    }
}

/// Compute both catalogs: the migrated side from a throwaway clone of the
/// key's template (built through the same engine as `prepare`), the model
/// side from a database the shim fills from Django's migration state.
async fn build_cache(session: &Session<'_>, fp: &Fingerprint, ui: &Events) -> Result<CheckCache> {
    let ctx = session.ctx;
    let admin = session.admin(ui).await?;
    let template = engine::ensure_template(admin, ctx, fp, ui).await?;
    let store = session.store()?;
    let inputs =
        engine::current_inputs(&store, fp, ctx.project_dir()).ok_or(CheckError::Unsettled)?;
    // The key's lock keeps two checks from fighting over the scratch names.
    let lock = admin
        .lock_key(fp.key.lock_id(), || {
            ui.waiting("waiting for another migsnap working on this key…")
        })
        .await?;
    let result = build_cache_locked(admin, ctx, fp, &template, inputs, ui).await;
    lock.release().await;
    result
}

async fn build_cache_locked(
    admin: &Admin,
    ctx: &Ctx,
    fp: &Fingerprint,
    template: &str,
    inputs: String,
    ui: &Events,
) -> Result<CheckCache> {
    let migrated_db = DbName::check(&fp.key).to_string();
    let state_db = DbName::state(&fp.key).to_string();
    for leftover in admin.databases(&[&migrated_db, &state_db]).await? {
        admin.drop(&leftover).await?;
    }

    ui.info("reading the migrated database's indexes");
    let (migrated, prerequisites) = admin
        .with_database(&migrated_db, Some(template), async |db| {
            Ok((read(admin, db).await?, prerequisites(admin, db).await?))
        })
        .await?;

    ui.info("building a database from Django's model state");
    let (model_state, model_state_conflicts, files) = admin
        .with_database(&state_db, None, async |db| {
            build_state(admin, ctx, db, &migrated.extensions, &prerequisites, ui).await
        })
        .await?;

    Ok(CheckCache {
        format: super::CACHE_FORMAT,
        key: fp.key.clone(),
        inputs,
        server_version_num: admin.version_num,
        migrated,
        model_state,
        model_state_conflicts,
        migration_files: files
            .into_iter()
            .map(|f| MigrationFile {
                path: f.path.map(|p| {
                    p.strip_prefix(ctx.project_dir())
                        .map(Path::to_path_buf)
                        .unwrap_or(p)
                }),
                ..f
            })
            .collect(),
    })
}

async fn read(admin: &Admin, db: &str) -> Result<Catalog> {
    let client = admin.conn.connect(db).await?;
    super::read_catalog(&client)
        .await
        .map_err(|e| db_error(format!("cannot read the catalog of `{db}`"), e))
}

/// What the model-state database needs besides extensions (collations,
/// types…), as statements read from the migrated database.
async fn prerequisites(admin: &Admin, db: &str) -> Result<Vec<String>> {
    let client = admin.conn.connect(db).await?;
    super::model_prerequisites(&client)
        .await
        .map_err(|e| db_error(format!("cannot read the collations and types of `{db}`"), e))
}

async fn build_state(
    admin: &Admin,
    ctx: &Ctx,
    db: &str,
    extensions: &[String],
    prerequisites: &[String],
    ui: &Events,
) -> Result<(Catalog, Vec<IndexConflict>, Vec<MigrationFile>)> {
    // Models alone cannot create extensions, but their indexes may need
    // them (gin_trgm_ops, btree_gin): install what the migrated side has.
    {
        let client = admin.conn.connect(db).await?;
        for ext in extensions {
            client
                .batch_execute(&format!(
                    "CREATE EXTENSION IF NOT EXISTS {}",
                    quote_ident(ext)
                ))
                .await
                .map_err(|e| db_error(format!("cannot create extension `{ext}` in `{db}`"), e))?;
        }
        // Likewise collations (CreateCollation), enums, domains and text
        // search configurations that fields and indexes may name.
        for sql in prerequisites {
            client
                .batch_execute(sql)
                .await
                .map_err(|e| db_error(format!("cannot recreate `{sql}` in `{db}`"), e))?;
        }
    }
    let report = django::run_shim(&ctx.django, &admin.conn, db, Mode::ModelState, ui).await?;
    let files = report.migration_files();
    Ok((read(admin, db).await?, report.index_conflicts, files))
}

/// The texts of the migration files to search: Django's list (which
/// includes third-party apps), else the hashed project files.
pub fn migration_sources(
    ctx: &Ctx,
    fp: &Fingerprint,
    files: &[MigrationFile],
) -> Vec<MigrationSource> {
    let project = ctx.project_dir();
    let from_django = files.iter().filter_map(|f| {
        let path = f.path.as_ref()?;
        let full = project.join(path);
        let text = std::fs::read_to_string(&full).ok()?;
        Some(MigrationSource {
            app: f.app.clone(),
            name: f.name.clone(),
            path: path.to_string_lossy().into_owned(),
            text,
        })
    });
    let mut sources: Vec<MigrationSource> = from_django.collect();
    if sources.is_empty() {
        sources = fp
            .migrations()
            .keys()
            .filter_map(|rel| {
                let text = std::fs::read_to_string(project.join(rel)).ok()?;
                let mut parts = rel.rsplit('/');
                let name = parts.next()?.trim_end_matches(".py").to_string();
                let app = parts.nth(1).unwrap_or("").to_string();
                Some(MigrationSource {
                    app,
                    name,
                    path: rel.clone(),
                    text,
                })
            })
            .collect();
    }
    sources
}

fn write_atomic(store: &Store, key: &Key, dest: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = store.temp_file(key)?;
    tmp.write_all(bytes)
        .map_err(|e| crate::store::cache_write_error(store.dir(), e))?;
    store.persist(tmp, dest)
}

/// Why `check` could not compare, as data (the binary says how to fix it).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("the project's files changed while the snapshot was built")]
    Unsettled,
    #[error("cannot serialise the check cache")]
    Serialise(#[source] serde_json::Error),
}

impl crate::error::Typed for CheckError {
    fn kind(&self) -> crate::error::Kind {
        match self {
            CheckError::Unsettled => crate::error::Kind::Usage,
            CheckError::Serialise(_) => crate::error::Kind::Internal,
        }
    }
}
