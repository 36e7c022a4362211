//! `migsnap check`: indexes made by migrations versus Django's model state.
//!
//! Both catalogs are computed once per key and cached in the cache dir as
//! `<key>.check.json`, so a second `check` on an unchanged project reads one
//! file, hashes the migration files and connects to nothing: no server, no
//! Python.

use crate::cli::{CheckArgs, CheckFormat};
use migsnap::check::{
    self, Baseline, BaselineEntry, Catalog, Finding, FindingKind, MigrationSource,
};
use migsnap::django::{self, MigrationFile, Mode};
use migsnap::engine;
use migsnap::error::{exit, Context, Error, Kind, Result};
use migsnap::fingerprint::{self, Fingerprint};
use migsnap::key::Key;
use migsnap::names::DbName;
use migsnap::pg::admin::{self, Admin};
use migsnap::pg::{db_error, quote_ident};
use migsnap::settings::{CloneStrategy, Settings};
use migsnap::store::Store;
use migsnap::ui::Ui;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

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
    /// Every migration module Django loaded; paths inside the project are
    /// stored relative to it so a moved checkout still finds them.
    migration_files: Vec<MigrationFile>,
}

#[derive(Serialize)]
struct Report<'a> {
    key: &'a Key,
    findings: &'a [Finding],
    summary: Summary,
}

#[derive(Serialize)]
struct Summary {
    total: usize,
    failing: usize,
    baselined: usize,
}

pub async fn run(settings: &Settings, args: &CheckArgs, ui: &Ui) -> Result<u8> {
    let fp = fingerprint::compute(&settings.key)?;
    let store = Store::new(settings.ensure_cache_dir()?);
    let cache_path = store.dir().join(format!("{}.check.json", fp.key));
    let cached = match engine::current_inputs(&store, &fp, &settings.project_dir) {
        Some(inputs) if !args.refresh => load_cache(&cache_path, &fp.key, &inputs, ui),
        _ => None,
    };
    let cache = match cached {
        Some(c) => c,
        None => {
            let c = build_cache(settings, &fp, ui).await?;
            let bytes = serde_json::to_vec_pretty(&c)
                .with_kind(Kind::Internal, || "cannot serialise the check cache".into())?;
            // Under the key's lock: a concurrent build cleans this key's
            // temp files while it holds that lock.
            let _lock = store.lock(&fp.key, || {}).await?;
            write_atomic(&store, &fp.key, &cache_path, &bytes)?;
            c
        }
    };

    let mut findings = check::compare(&cache.migrated, &cache.model_state);
    let sources = migration_sources(settings, &fp, &cache.migration_files);
    let fail_on: BTreeSet<FindingKind> = settings.check_fail_on.iter().copied().collect();
    check::attribute_all(&mut findings, &sources);
    for f in &mut findings {
        f.fails = fail_on.contains(&f.kind);
    }

    if let Some(path) = &args.write_baseline {
        let mut entries: Vec<BaselineEntry> = findings.iter().map(BaselineEntry::of).collect();
        entries.sort();
        entries.dedup();
        let text = serde_json::to_vec_pretty(&Baseline { findings: entries })
            .with_kind(Kind::Internal, || "cannot serialise the baseline".into())?;
        write_file_atomic(path, &text)?;
        ui.info(format!(
            "wrote {} finding(s) to {}",
            findings.len(),
            path.display()
        ));
        return Ok(exit::OK);
    }
    let mut baselined = 0;
    if let Some(path) = &args.baseline {
        let accepted = read_baseline(path)?;
        let before = findings.len();
        findings.retain(|f| !accepted.contains(&BaselineEntry::of(f)));
        baselined = before - findings.len();
    }

    let failing = findings.iter().filter(|f| f.fails).count();
    let summary = Summary {
        total: findings.len(),
        failing,
        baselined,
    };
    let format = if args.json {
        CheckFormat::Json
    } else {
        args.format
    };
    match format {
        CheckFormat::Json => super::print_json(&Report {
            key: &fp.key,
            findings: &findings,
            summary,
        })?,
        CheckFormat::Github => super::print_stdout(&github(&findings)),
        CheckFormat::Text => super::print_stdout(&text(&findings, &summary)),
    }
    Ok(if failing > 0 {
        exit::FINDINGS
    } else {
        exit::OK
    })
}

fn load_cache(path: &Path, key: &Key, inputs: &str, ui: &Ui) -> Option<CheckCache> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice::<CheckCache>(&bytes) {
        Ok(c) if c.format == check::CACHE_FORMAT && &c.key == key => {
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
async fn build_cache(settings: &Settings, fp: &Fingerprint, ui: &Ui) -> Result<CheckCache> {
    let admin = engine::connect(settings, ui).await?;
    let template = admin::template_name(&fp.key);
    let store = Store::new(settings.ensure_cache_dir()?);
    let inputs = engine::current_inputs(&store, fp, &settings.project_dir);
    let ready = admin.database(&template).await?.is_some_and(|d| {
        inputs
            .as_deref()
            .is_some_and(|i| d.is_template_for(&fp.key, i))
    });
    if !ready {
        engine::build(&admin, settings, fp, ui, false).await?;
    }
    let inputs = engine::current_inputs(&store, fp, &settings.project_dir).ok_or_else(|| {
        Error::usage("the project's files changed while the snapshot was built")
            .hint("run `migsnap check` again once they are settled")
    })?;
    // The key's lock keeps two checks from fighting over the scratch names.
    admin
        .lock_key(fp.key.lock_id(), || {
            ui.info("waiting for another migsnap working on this key…")
        })
        .await?;
    let result = build_cache_locked(&admin, settings, fp, &template, inputs, ui).await;
    let _ = admin.unlock_key(fp.key.lock_id()).await;
    result
}

async fn build_cache_locked(
    admin: &Admin,
    settings: &Settings,
    fp: &Fingerprint,
    template: &str,
    inputs: String,
    ui: &Ui,
) -> Result<CheckCache> {
    let migrated_db = DbName::check(&fp.key).to_string();
    let state_db = DbName::state(&fp.key).to_string();
    for leftover in admin.databases(&[&migrated_db, &state_db]).await? {
        admin.drop(&leftover).await?;
    }

    ui.info("reading the migrated database's indexes");
    admin
        .create(&migrated_db, Some(template), CloneStrategy::Default)
        .await?;
    let migrated = read(admin, &migrated_db).await;
    let prerequisites = prerequisites(admin, &migrated_db).await;
    drop_named(admin, &migrated_db).await?;
    let migrated = migrated?;
    let prerequisites = prerequisites?;

    ui.info("building a database from Django's model state");
    admin
        .create(&state_db, None, CloneStrategy::Default)
        .await?;
    let state = build_state(
        admin,
        settings,
        &state_db,
        &migrated.extensions,
        &prerequisites,
        ui,
    )
    .await;
    drop_named(admin, &state_db).await?;
    let (model_state, files) = state?;

    Ok(CheckCache {
        format: check::CACHE_FORMAT,
        key: fp.key.clone(),
        inputs,
        server_version_num: admin.version_num,
        migrated,
        model_state,
        migration_files: files
            .into_iter()
            .map(|f| MigrationFile {
                path: f.path.map(|p| {
                    p.strip_prefix(&settings.project_dir)
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
    check::read_catalog(&client)
        .await
        .map_err(|e| db_error(format!("cannot read the catalog of `{db}`"), e))
}

/// What the model-state database needs besides extensions (collations,
/// types…), as statements read from the migrated database.
async fn prerequisites(admin: &Admin, db: &str) -> Result<Vec<String>> {
    let client = admin.conn.connect(db).await?;
    check::model_prerequisites(&client)
        .await
        .map_err(|e| db_error(format!("cannot read the collations and types of `{db}`"), e))
}

async fn build_state(
    admin: &Admin,
    settings: &Settings,
    db: &str,
    extensions: &[String],
    prerequisites: &[String],
    ui: &Ui,
) -> Result<(Catalog, Vec<MigrationFile>)> {
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
    let report = django::run_shim(settings, &admin.conn, db, Mode::ModelState, ui)
        .await
        .map_err(|f| f.error)?;
    Ok((read(admin, db).await?, report.migration_files()))
}

async fn drop_named(admin: &Admin, db: &str) -> Result<()> {
    match admin.database(db).await? {
        Some(info) => admin.drop(&info).await,
        None => Ok(()),
    }
}

/// The texts of the migration files to search: Django's list (which
/// includes third-party apps), else the hashed project files.
fn migration_sources(
    settings: &Settings,
    fp: &Fingerprint,
    files: &[MigrationFile],
) -> Vec<MigrationSource> {
    let project = &settings.project_dir;
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
            .migrations
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

fn read_baseline(path: &Path) -> Result<BTreeSet<BaselineEntry>> {
    let bytes = std::fs::read(path).map_err(|e| {
        Error::usage(format!("cannot read baseline `{}`", path.display()))
            .source(e)
            .hint("create it with `migsnap check --write-baseline FILE`")
    })?;
    let b: Baseline = serde_json::from_slice(&bytes).map_err(|e| {
        Error::usage(format!(
            "baseline `{}` is not a migsnap baseline",
            path.display()
        ))
        .source(e)
        .hint("re-create it with `migsnap check --write-baseline FILE`")
    })?;
    Ok(b.findings.into_iter().collect())
}

fn write_atomic(store: &Store, key: &Key, dest: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = store.temp_file(key)?;
    tmp.write_all(bytes)
        .map_err(|e| migsnap::store::cache_write_error(store.dir(), e))?;
    store.persist(tmp, dest)
}

fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let fail =
        |e: std::io::Error| Error::usage(format!("cannot write `{}`", path.display())).source(e);
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    tmp.write_all(bytes).map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

fn describe(f: &Finding) -> String {
    let table = format!("{}.{}", f.schema, f.table);
    match f.kind {
        FindingKind::OnlyInMigrations if !f.table_in_model_state => format!(
            "index `{}` on `{table}` exists only in the migrated database (the table is not in the model state)",
            f.index
        ),
        FindingKind::OnlyInMigrations => {
            format!("index `{}` on `{table}` is created by migrations but not declared in the model state", f.index)
        }
        FindingKind::OnlyInModelState => {
            format!("index `{}` on `{table}` is declared in the model state but missing after migrating", f.index)
        }
        FindingKind::SameDefinitionOtherName => format!(
            "index `{}` on `{table}` is named `{}` in the model state",
            f.index,
            f.model_state_index.as_deref().unwrap_or("?")
        ),
        FindingKind::DifferentDefinition => format!("index `{}` on `{table}` differs from the model state", f.index),
        FindingKind::InvalidIndex => format!("index `{}` on `{table}` is invalid (indisvalid = false)", f.index),
    }
}

fn text(findings: &[Finding], s: &Summary) -> String {
    let mut out = String::new();
    for f in findings {
        let status = if f.fails { "error" } else { "note" };
        out.push_str(&format!("{status}[{}]: {}\n", f.kind.as_str(), describe(f)));
        out.push_str(&format!("    {}\n", f.definition));
        if let Some(d) = &f.model_state_definition {
            out.push_str(&format!("    model state: {d}\n"));
        }
        match &f.migration {
            Some(m) => out.push_str(&format!(
                "    --> {}:{} ({}.{})\n",
                m.path, m.line, m.app, m.name
            )),
            None => out.push_str("    --> no migration mentions this index\n"),
        }
    }
    out.push_str(&format!(
        "{} finding(s), {} failing{}\n",
        s.total,
        s.failing,
        if s.baselined > 0 {
            format!(", {} accepted by the baseline", s.baselined)
        } else {
            String::new()
        }
    ));
    out
}

/// GitHub Actions workflow commands: annotations on the migration's line.
fn github(findings: &[Finding]) -> String {
    let esc_data = |s: &str| {
        s.replace('%', "%25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
    };
    let esc_prop = |s: &str| esc_data(s).replace(':', "%3A").replace(',', "%2C");
    let mut out = String::new();
    for f in findings {
        let level = if f.fails { "error" } else { "warning" };
        let mut props = Vec::new();
        if let Some(m) = &f.migration {
            props.push(format!("file={}", esc_prop(&m.path)));
            props.push(format!("line={}", m.line));
        }
        props.push(format!(
            "title={}",
            esc_prop(&format!("migsnap check: {}", f.kind.as_str()))
        ));
        out.push_str(&format!(
            "::{level} {}::{}\n",
            props.join(","),
            esc_data(&format!("{}: {}", describe(f), f.definition))
        ));
    }
    out
}
