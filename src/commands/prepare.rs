//! `migsnap prepare`: render what `migsnap::prepare` made.

use crate::cli::{PrepareArgs, TargetArgs};
use crate::settings::Settings;
use migsnap::engine::Source;
use migsnap::error::{exit, Result};
use migsnap::key::Key;
pub use migsnap::prepare::Prepared;
use migsnap::prepare::Target;
use migsnap::shared::Origin;
use migsnap::ui::Ui;

#[derive(serde::Serialize)]
struct PrepareOutput<'a> {
    database: &'a str,
    key: &'a Key,
    source: Source,
    base_key: Option<&'a Key>,
    /// `local` or `remote` (the snapshot store): where the restored dump
    /// came from; null for `pool`, `template` and `cold`.
    origin: Option<Origin>,
    applied: Vec<&'a str>,
    /// What each migration applied by this run cost (empty when nothing ran).
    costs: Vec<super::Cost<'a>>,
    elapsed_ms: u64,
    host: &'a str,
    port: u16,
    user: &'a str,
    password: Option<&'a str>,
    dbname: &'a str,
    url: String,
    /// What Django loaded when the database's snapshot was built (its
    /// version, settings module, INSTALLED_APPS, MIGRATION_MODULES), when
    /// known for certain; else null. The pytest plugin checks the database
    /// against Django's migration loader only when its own process differs.
    built_with: Option<BuiltWith<'a>>,
}

#[derive(serde::Serialize)]
struct BuiltWith<'a> {
    django: &'a str,
    settings_module: &'a str,
    installed_apps: &'a [String],
    migration_modules: &'a std::collections::BTreeMap<String, Option<String>>,
}

impl<'a> From<&'a migsnap::depends::Checked> for BuiltWith<'a> {
    fn from(c: &'a migsnap::depends::Checked) -> BuiltWith<'a> {
        BuiltWith {
            django: &c.django,
            settings_module: &c.settings_module,
            installed_apps: &c.installed_apps,
            migration_modules: &c.migration_modules,
        }
    }
}

pub async fn run(settings: &Settings, args: &PrepareArgs, ui: &Ui) -> Result<u8> {
    // The plugin's worker count sizes the pool of this run already (its
    // refill, and whether a restore may go straight to the target), not
    // only the next one's, unless the project sets a size.
    let mut sized;
    let settings = match args.pool_default {
        Some(n) if !settings.pool_configured => {
            sized = settings.clone();
            sized.ctx.pool = usize::from(n);
            &sized
        }
        _ => settings,
    };
    let p = prepare(settings, &args.target, ui).await?;
    if let Some(n) = args.pool_default {
        super::maintain::remember_pool_size(settings, &p.key, usize::from(n), ui);
    }
    if args.json {
        super::print_json(&PrepareOutput {
            database: &p.database,
            key: &p.key,
            source: p.source,
            base_key: p.base_key.as_ref(),
            origin: p.origin,
            applied: p.applied.iter().map(|a| a.name.as_str()).collect(),
            costs: super::costs(&p.applied),
            elapsed_ms: p.elapsed.as_millis() as u64,
            host: &p.conn.host,
            port: p.conn.port,
            user: &p.conn.user,
            password: p.conn.password.as_deref(),
            dbname: &p.database,
            url: p.conn.url(&p.database),
            built_with: p.built_with.as_ref().map(BuiltWith::from),
        })?;
    } else {
        // stdout is data: the URL, for `psql "$(migsnap prepare …)"`; the
        // summary is a message.
        ui.info(p.summary());
        super::print_stdout(&format!("{}\n", p.conn.url(&p.database)));
    }
    // After the answer is out: whoever waits for it does not wait for this.
    if p.maintenance {
        super::maintain::spawn(settings, ui);
    }
    Ok(exit::OK)
}

/// The library's use case, with the target the command line names.
pub async fn prepare(settings: &Settings, args: &TargetArgs, ui: &Ui) -> Result<Prepared> {
    let target = Target {
        database: args.database.clone(),
        force: args.force,
        rebuild: args.rebuild,
    };
    migsnap::prepare::prepare(&settings.ctx, &target, ui).await
}
