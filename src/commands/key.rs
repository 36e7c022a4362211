//! `migsnap key`: the migration-set key, computed from files only.

use crate::cli::KeyArgs;
use crate::settings::Settings;
use migsnap::error::{exit, Error, Result};
use migsnap::fingerprint;
use migsnap::ui::Ui;

#[derive(serde::Serialize)]
struct KeyOutput<'a> {
    key: &'a migsnap::key::Key,
    short: &'a str,
    format: &'static str,
    migrations: usize,
    key_inputs: Vec<&'a str>,
}

pub fn run(settings: &Settings, args: &KeyArgs, ui: &Ui) -> Result<u8> {
    let (fp, dangling) = fingerprint::compute_noting_links(&settings.ctx.key)?;
    for path in &dangling {
        ui.warn(format!(
            "`{path}` is a link to nothing: left out of the key"
        ));
    }
    if args.list {
        for path in fp.migrations.keys().chain(fp.key_inputs.keys()) {
            eprintln!("{path}");
        }
    }
    if fp.migrations.is_empty() {
        let globs = &settings.ctx.key.migrations;
        let dir = settings.ctx.project_dir().display();
        // Not a Django project at all (the wrong directory, in a CI step):
        // a key of nothing would make a cache key that matches every such
        // mistake. A project with manage.py and no migrations yet is fine.
        if !settings.ctx.django.manage_py.is_file() && !args.allow_empty {
            return Err(Error::usage(format!(
                "`{dir}` is not a Django project: no manage.py, and no migration files match {globs:?}"
            ))
            .hint("run migsnap from the Django project root or pass `-C DIR` (or `migrations` in [tool.migsnap]); --allow-empty prints the key of no migrations"));
        }
        ui.warn(format!("no migration files match {globs:?} under {dir}"));
    }
    if args.json {
        super::print_json(&KeyOutput {
            key: &fp.key,
            short: fp.short(),
            format: fingerprint::KEY_FORMAT,
            migrations: fp.migrations.len(),
            key_inputs: fp.key_inputs.keys().map(String::as_str).collect(),
        })?;
    } else {
        super::print_stdout(&format!("{}\n", fp.key));
    }
    Ok(exit::OK)
}
