//! `migsnap key`: the migration-set key, computed from files only.

use crate::cli::KeyArgs;
use crate::settings::Settings;
use migsnap::error::{exit, Result};
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
    let fp = fingerprint::compute(&settings.ctx.key)?;
    if args.list {
        for path in fp.migrations.keys().chain(fp.key_inputs.keys()) {
            eprintln!("{path}");
        }
    }
    if fp.migrations.is_empty() {
        ui.warn(format!(
            "no migration files match {:?} under {}",
            settings.ctx.key.migrations,
            settings.ctx.project_dir().display()
        ));
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
