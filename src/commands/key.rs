//! `migsnap key`: the migration-set key, computed from files only.

use crate::cli::KeyArgs;
use crate::settings::Settings;
use migsnap::error::{exit, Error, Result};
use migsnap::fingerprint::{self, KeySpec, MigrationGlobs};
use migsnap::report::Events;
use migsnap::store::Store;

#[derive(serde::Serialize)]
struct KeyOutput<'a> {
    key: &'a migsnap::key::Key,
    short: &'a str,
    format: &'static str,
    migrations: usize,
    key_inputs: Vec<&'a str>,
}

pub async fn run(settings: &Settings, args: &KeyArgs, ui: &Events) -> Result<u8> {
    // Reading every migration file is blocking work: off the runtime, so
    // that a Ctrl-C is heard meanwhile (issue #23).
    let (spec, cache_dir) = (settings.ctx.key.clone(), settings.ctx.cache.dir.clone());
    let hashed = migsnap::error::blocking("hashing the migrations", move || {
        let (spec, recorded) = with_recorded_dirs(spec, &cache_dir)?;
        Ok::<_, Error>((fingerprint::compute_noting_links(&spec)?, recorded))
    });
    let ((fp, dangling), recorded) = hashed.await??;
    let globs = &settings.ctx.key.migrations;
    let dir = settings.ctx.project_dir().display();
    let manage_py = &settings.ctx.django.manage_py;
    // Every other command runs manage.py from the project dir and stops
    // when it is not there (`django::check_manage_py`); the key must stop
    // too. From an app's subdirectory the globs still match that app's
    // migrations, and the key of those alone is a plausible, wrong CI cache
    // key (issue #22). Only --allow-empty's key of nothing needs no project.
    let needs_project = !(args.allow_empty && fp.migration_count() == 0);
    if needs_project && !manage_py.is_file() {
        if fp.migration_count() == 0 {
            // Not a Django project at all (the wrong directory, in a CI
            // step): a key of nothing would match every such mistake.
            return Err(Error::usage(format!(
                "`{dir}` is not a Django project: no manage.py, and no migration files match {globs:?}"
            ))
            .hint("run migsnap from the Django project root or pass `-C DIR` (or `migrations` in [tool.migsnap]); --allow-empty prints the key of no migrations"));
        }
        return Err(Error::usage(format!(
            "no manage.py at `{}`: `{dir}` is not the Django project root, and the key of part of a project is not its key",
            manage_py.display()
        ))
        .hint(root_hint(settings.ctx.project_dir())));
    }
    for path in &dangling {
        ui.warn(format!(
            "`{path}` is a link to nothing: left out of the key"
        ));
    }
    for dir in &recorded {
        ui.warn(format!(
            "migrations in `{dir}` (MIGRATION_MODULES, as the last build recorded it) are outside the `migrations` globs: this key covers them, the snapshot key does not; add `{dir}/*.py` to `migrations` in [tool.migsnap]"
        ));
    }
    if args.list {
        for path in fp.migrations().keys().chain(fp.key_inputs().keys()) {
            eprintln!("{path}");
        }
    }
    if fp.migration_count() == 0 {
        // A project with manage.py and no migrations yet is fine.
        ui.warn(format!("no migration files match {globs:?} under {dir}"));
    }
    if args.json {
        super::print_json(&KeyOutput {
            key: &fp.key,
            short: fp.short(),
            format: fingerprint::KEY_FORMAT,
            migrations: fp.migration_count(),
            key_inputs: fp.key_inputs().keys().map(String::as_str).collect(),
        })?;
    } else {
        super::print_stdout(&format!("{}\n", fp.key));
    }
    Ok(exit::OK)
}

/// Where to run instead: the nearest directory above with a manage.py when
/// there is one (not used silently: a manage.py above can be another
/// project's, and the key must come from the dir the user names).
fn root_hint(dir: &std::path::Path) -> String {
    match dir
        .ancestors()
        .skip(1)
        .find(|d| d.join("manage.py").is_file())
    {
        Some(root) => format!(
            "run migsnap from `{0}` (it has manage.py) or pass `-C {0}`",
            root.display()
        ),
        None => "run migsnap from the Django project root, pass `-C DIR`, or set `manage-py` in [tool.migsnap]".into(),
    }
}

/// What the key hashes: the globs' files, and the migration packages the
/// newest build of this project recorded outside them (MIGRATION_MODULES
/// that the settings' text does not show, such as a dict built at run
/// time), which are returned too. Without them a CI cache keyed on
/// `migsnap key` would never change when those migrations do; no Python
/// runs for them. Before any build there is no record, and the key is the
/// globs' alone.
fn with_recorded_dirs(
    mut spec: KeySpec,
    cache_dir: &std::path::Path,
) -> Result<(KeySpec, Vec<String>)> {
    let globs = MigrationGlobs::new(&spec)?;
    let recorded: Vec<String> = Store::new(cache_dir)
        .recorded_migration_dirs(&spec.root)
        .into_iter()
        .filter(|dir| !globs.is_match(&format!("{dir}/0001_probe.py")))
        .filter(|dir| spec.root.join(dir).is_dir())
        .collect();
    spec.migrations
        .extend(recorded.iter().map(|dir| format!("{dir}/*.py")));
    Ok((spec, recorded))
}
