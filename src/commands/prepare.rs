//! `migsnap prepare`: render what `migsnap::prepare` made.

use crate::cli::{PrepareArgs, TargetOpts};
use crate::settings::Settings;
use migsnap::engine::Source;
use migsnap::error::{exit, Result};
use migsnap::key::Key;
pub use migsnap::prepare::Prepared;
use migsnap::prepare::Target;
use migsnap::report::Events;
use migsnap::session::Session;
use migsnap::shared::Origin;

#[derive(serde::Serialize)]
struct PrepareOutput<'a> {
    /// Always true here; false only in `NotPrepared` (`--unless-ready`).
    prepared: bool,
    database: &'a str,
    /// The DATABASES alias it is for.
    alias: &'a str,
    /// With `--all-aliases`: the alias whose database this one uses (a
    /// `TEST["MIRROR"]`, or an alias naming the same database); else null.
    mirror_of: Option<&'a str>,
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
    /// `--at`: the migrations it was migrated to, in order (a file inside
    /// the project by its project-relative path); empty: fully migrated.
    at: &'a [String],
    /// Whether the build that made this database's snapshot ran with the
    /// accelerator (`build-accelerator` with django-fastmig installed).
    accelerated: bool,
    /// The migrations that accelerated build applied with stock Django
    /// (something in them django-fastmig does not know); empty otherwise.
    stock_migrations: &'a [String],
}

/// `prepare --unless-ready` when a pool member was ready: nothing done.
#[derive(serde::Serialize)]
struct NotPrepared<'a> {
    prepared: bool,
    database: &'a str,
    alias: &'a str,
    key: &'a Key,
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

pub async fn run(settings: &Settings, args: &PrepareArgs, ui: &Events) -> Result<u8> {
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
    let Some(database) = &args.database else {
        return all_aliases(settings, args, ui).await;
    };
    // One key (and connection) for the `--unless-ready` look and the prepare.
    let session = settings.session();
    if args.unless_ready {
        // Could not tell (the server refused, a damaged cache dir): prepare,
        // which reports the problem in full.
        if let Ok((key, true)) = migsnap::prepare::pool_member_ready(&session).await {
            let alias = &settings.ctx.django.alias;
            if args.json {
                super::print_json(&NotPrepared {
                    prepared: false,
                    database,
                    alias,
                    key: &key,
                })?;
            } else {
                ui.info(format!(
                    "a pool member is ready for `{database}`: nothing prepared now"
                ));
            }
            return Ok(exit::OK);
        }
    }
    let at = super::plan::targets(&args.at);
    let p = prepare_at(&session, database, &args.how, &at, ui).await?;
    // The target's lock is held until the connection closes: not while
    // the answer is written.
    drop(session);
    if let Some(n) = args.pool_default {
        super::maintain::remember_pool_size(settings, &p.key, usize::from(n), ui);
    }
    if args.json {
        super::print_json(&output(&p, &settings.ctx.django.alias, None))?;
    } else {
        // stdout is data: the URL, for `psql "$(migsnap prepare …)"`; the
        // summary is a message.
        ui.info(p.summary());
        super::print_stdout(&format!("{}\n", p.conn.url(&p.database)));
    }
    // After the answer is out: whoever waits for it does not wait for this.
    if p.maintenance {
        migsnap::failpoint::pause("maintain.spawn").await;
        super::maintain::spawn(settings, ui);
    }
    Ok(exit::OK)
}

fn output<'a>(p: &'a Prepared, alias: &'a str, mirror_of: Option<&'a str>) -> PrepareOutput<'a> {
    PrepareOutput {
        prepared: true,
        database: &p.database,
        alias,
        mirror_of,
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
        at: &p.at,
        accelerated: p.accelerated,
        stock_migrations: &p.stock_migrations,
    }
}

/// `prepare --all-aliases`: every database the settings define, named as
/// Django's test setup names them, all at once (each alias is a snapshot
/// of its own); one entry per alias, mirrors and aliases sharing a
/// database with the entry of the database they use.
async fn all_aliases(settings: &Settings, args: &PrepareArgs, ui: &Events) -> Result<u8> {
    let session = settings.session();
    let admin = session.admin(ui).await?;
    let found = migsnap::django::aliases(&settings.ctx.django, &admin.conn, ui).await?;
    // Each alias is prepared in a session of its own (its own key).
    drop(session);
    let layout = migsnap::aliases::Layout::of(&found);
    // Said before anything is prepared: the databases made would be wrong
    // (one replacing the other) or an alias left out without a word.
    if let Some((a, b)) = layout.clash() {
        return Err(migsnap::error::Error::new(
            migsnap::error::Kind::Django,
            format!(
                "the aliases `{}` and `{}` are different databases in the settings (their HOST, PORT or ENGINE differ) with the same test database name `{}`: migsnap makes every test database on one server, so one would replace the other",
                a.alias, b.alias, a.name
            ),
        )
        .hint("give one a TEST['NAME'] of its own; or, if both are the same database, spell their HOST and PORT alike, or make one a TEST['MIRROR'] of the other"));
    }
    if let Some((alias, target)) = layout.dangling_mirror(&found) {
        return Err(migsnap::error::Error::new(
            migsnap::error::Kind::Django,
            format!(
                "DATABASES['{alias}']['TEST']['MIRROR'] names the alias `{target}`, which DATABASES does not have"
            ),
        )
        .hint("name one of its aliases, or remove the MIRROR"));
    }
    for (alias, vendor) in &layout.others {
        ui.warn(format!(
            "alias `{alias}` uses the {vendor} backend: not prepared (migsnap needs PostgreSQL)"
        ));
    }
    let each: Vec<Settings> = layout
        .databases
        .iter()
        .map(|db| settings.for_alias(&db.alias))
        .collect::<Result<_>>()?;
    let made = futures_util::future::try_join_all(
        layout
            .databases
            .iter()
            .zip(&each)
            .map(|(db, s)| prepare(s, &db.name, &args.how, ui)),
    )
    .await?;
    for (p, s) in made.iter().zip(&each) {
        if let Some(n) = args.pool_default {
            super::maintain::remember_pool_size(s, &p.key, usize::from(n), ui);
        }
    }
    let prepared_for = |alias: &str| {
        let db = layout.database_of(alias)?;
        let i = layout.databases.iter().position(|d| d == db)?;
        Some((&made[i], db.alias.as_str()))
    };
    let entries: Vec<PrepareOutput> = found
        .iter()
        .filter_map(|a| {
            let (p, owner) = prepared_for(&a.alias)?;
            let mirror_of = (owner != a.alias).then_some(owner);
            Some(output(p, &a.alias, mirror_of))
        })
        .collect();
    if args.json {
        super::print_json(&AllOutput { aliases: entries })?;
    } else {
        for p in &made {
            ui.info(p.summary());
        }
        for e in &entries {
            super::print_stdout(&format!("{} {}\n", e.alias, e.url));
        }
    }
    for (p, s) in made.iter().zip(&each) {
        if p.maintenance {
            super::maintain::spawn(s, ui);
        }
    }
    Ok(exit::OK)
}

#[derive(serde::Serialize)]
struct AllOutput<'a> {
    aliases: Vec<PrepareOutput<'a>>,
}

/// The library's use case, with the target the command line names.
pub async fn prepare(
    settings: &Settings,
    database: &str,
    how: &TargetOpts,
    ui: &Events,
) -> Result<Prepared> {
    prepare_at(&settings.session(), database, how, &[], ui).await
}

/// `prepare`, migrated only to `at` (`--at`, file paths made absolute) when
/// it names targets.
async fn prepare_at(
    session: &Session<'_>,
    database: &str,
    how: &TargetOpts,
    at: &[String],
    ui: &Events,
) -> Result<Prepared> {
    let target = Target {
        database: database.to_string(),
        force: how.force,
        rebuild: how.rebuild,
        at: at.to_vec(),
    };
    migsnap::prepare::prepare(session, &target, ui).await
}
