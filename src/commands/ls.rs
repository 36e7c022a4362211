//! `migsnap ls`: what the cache dir and the server hold, and which snapshot
//! the current migration files would use.

use crate::cli::LsArgs;
use crate::settings::Settings;
use migsnap::error::{exit, Result};
use migsnap::fingerprint;
use migsnap::key::Key;
use migsnap::listing::Refused;
use migsnap::names::DbName;
use migsnap::pg::admin::{DbInfo, TEMPLATE_PREFIX};
use migsnap::report::Events;
use migsnap::session::Session;
use migsnap::store::{self, Manifest, Store};
use migsnap::units;
use std::collections::BTreeSet;

#[derive(serde::Serialize)]
struct LsOutput<'a> {
    current_key: Key,
    cache_dir: String,
    snapshots: Vec<SnapshotRow<'a>>,
    /// `None` when the server could not be reached (the cache is still listed).
    templates: Option<Vec<TemplateRow>>,
    /// Ready clones (`None`: server unreachable); `pool_size` is the size
    /// `maintain` keeps for the current key.
    pool: Option<Vec<PoolRow>>,
    pool_size: usize,
    /// Snapshots in the cache dir of other projects (or of no recorded
    /// project), not listed without `--all-projects`.
    other_projects: usize,
    /// This project's snapshots whose manifest `prepare` refuses (unsigned,
    /// signed by an untrusted key, a signature that does not verify): it
    /// discards and rebuilds them, so they are not in `snapshots`.
    refused: Vec<Refused>,
}

#[derive(serde::Serialize)]
struct PoolRow {
    name: String,
    /// The key it was cloned for; `None` while it is being made.
    key: Option<Key>,
    current: bool,
}

#[derive(serde::Serialize)]
struct SnapshotRow<'a> {
    key: Key,
    size: u64,
    created_unix: u64,
    age_seconds: u64,
    /// Migration files hashed into the key.
    migrations: usize,
    /// `cold` or `incremental`.
    source: migsnap::store::BuiltBy,
    base_key: Option<Key>,
    /// Seconds the build took, and what each migration cost when applied.
    build_seconds: f64,
    costs: Vec<super::Cost<'a>>,
    current: bool,
    /// The DATABASES alias it was migrated for.
    alias: &'a str,
    /// A template for this key is on the server.
    template: bool,
    /// The project that built it; `None` if its manifest predates that.
    project_dir: Option<String>,
    /// `prepare --at`: the migrations it was migrated to, in order (left
    /// out for a fully migrated one).
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    at: &'a [String],
}

#[derive(serde::Serialize)]
struct TemplateRow {
    name: String,
    /// From the template's comment; `None` if it is not a finished template.
    key: Option<Key>,
    /// This cache dir has the snapshot for the key.
    cached: bool,
    current: bool,
}

/// `ls --remote`: the snapshot store's snapshots, with the columns of the
/// cache dir's.
#[derive(serde::Serialize)]
struct RemoteLsOutput<'a> {
    current_key: Key,
    remote: String,
    snapshots: Vec<RemoteRow<'a>>,
    /// Snapshots whose manifest failed its checks (damaged, unsigned, …).
    refused: Vec<Refused>,
}

#[derive(serde::Serialize)]
struct RemoteRow<'a> {
    #[serde(flatten)]
    row: SnapshotRow<'a>,
    /// This cache dir has the snapshot too.
    cached: bool,
}

pub async fn run(settings: &Settings, args: &LsArgs, ui: &Events) -> Result<u8> {
    if args.remote {
        return run_remote(settings, args, ui).await;
    }
    let session = settings.session();
    let fp = session.fingerprint().await?;
    // Every snapshot in the cache dir, foreign or not (a listing restores
    // nothing), judged as `prepare` judges it: what it would refuse is
    // listed apart with the reason, never as a snapshot it serves.
    let store = Store::new(&settings.ctx.cache.dir).with_trust(migsnap::sign::Trust {
        trust_unsigned: true,
        ..settings.ctx.cache.trust.clone()
    });
    let strict = Store::new(&settings.ctx.cache.dir).with_trust(settings.ctx.cache.trust.clone());
    // Each alias's current key is current (`*`).
    let current = fp.current_keys(
        &settings.ctx.key,
        store.aliases().iter().map(String::as_str),
    );
    // With the `prepare --at` snapshots made from the same files.
    let current = migsnap::listing::with_at_snapshots(&current, &store.manifests());
    let (listed, others) =
        store.project_manifests(settings.ctx.project_dir(), &current, args.all_projects);
    let (manifests, refused) = migsnap::listing::refused_apart(listed, &strict);
    let cached: BTreeSet<&Key> = manifests.iter().map(|m| &m.key).collect();
    // Templates of snapshots another project built are that project's.
    let theirs: BTreeSet<&Key> = others.iter().map(|m| &m.key).collect();

    // The cache is worth listing even when the server is down.
    let (templates, pool) = match list_templates(&session, ui).await {
        Ok((dbs, members)) => (
            Some(
                dbs.into_iter()
                    .filter(|(_, key)| key.as_ref().is_none_or(|k| !theirs.contains(k)))
                    .map(|(name, key)| TemplateRow {
                        cached: key.as_ref().is_some_and(|k| cached.contains(k)),
                        current: key.as_ref().is_some_and(|k| current.contains(k)),
                        name,
                        key,
                    })
                    .collect::<Vec<_>>(),
            ),
            Some(
                members
                    .into_iter()
                    .map(|m| {
                        let key = migsnap::pool::member_key(&m);
                        PoolRow {
                            current: key.as_ref().is_some_and(|k| current.contains(k)),
                            name: m.name,
                            key,
                        }
                    })
                    .collect(),
            ),
        ),
        Err(e) => {
            ui.warn(format!("{}; listing the cache only", e.message));
            (None, None)
        }
    };
    let on_server = |key: &Key| {
        templates
            .iter()
            .flatten()
            .any(|t| t.key.as_ref() == Some(key))
    };
    let now = store::now_unix();
    let snapshots: Vec<SnapshotRow> = manifests
        .iter()
        .map(|m| SnapshotRow::of(m, &current, on_server(&m.key), now))
        .collect();
    let out = LsOutput {
        current_key: fp.key.clone(),
        cache_dir: settings.ctx.cache.dir.display().to_string(),
        snapshots,
        templates,
        pool,
        pool_size: settings.ctx.pool,
        other_projects: others.len(),
        refused,
    };
    if args.json {
        super::print_json(&out)?;
    } else {
        super::print_stdout(&render(&out));
    }
    Ok(exit::OK)
}

impl<'a> SnapshotRow<'a> {
    fn of(m: &'a Manifest, current: &BTreeSet<Key>, template: bool, now: u64) -> Self {
        SnapshotRow {
            key: m.key.clone(),
            size: m.dump.size,
            created_unix: m.created_unix,
            age_seconds: now.saturating_sub(m.created_unix),
            migrations: m.migrations.len(),
            source: m.build.source,
            base_key: m.build.base_key.clone(),
            build_seconds: m.build.seconds,
            costs: super::costs(&m.build.migrations),
            current: current.contains(&m.key),
            alias: &m.alias,
            template,
            project_dir: m.project_dir.as_ref().map(|p| p.display().to_string()),
            at: &m.at,
        }
    }

    /// One line of the listing; `mark` says more about it (`  [template]`).
    fn line(&self, mark: &str) -> String {
        let base = match &self.base_key {
            Some(b) => format!(" on {}", b.short()),
            None => String::new(),
        };
        let alias = if self.alias == fingerprint::DEFAULT_ALIAS {
            String::new()
        } else {
            format!("  [alias {}]", self.alias)
        };
        let at = match self.at {
            [] => String::new(),
            at => format!("  [at {}]", at.join(", ")),
        };
        format!(
            "  {}{}  {:>10}  {:>8} ago  {:>4} migrations  {}{base}{alias}{at}{mark}\n",
            self.key.short(),
            if self.current { "*" } else { " " },
            units::size(self.size),
            units::age(self.age_seconds),
            self.migrations,
            self.source,
        )
    }
}

/// The heading and one line per snapshot, each with what more there is to
/// say about it (`  [template]`): the cache dir's and the store's alike.
fn snapshot_lines<'a>(
    place: &str,
    current: &Key,
    rows: impl ExactSizeIterator<Item = (&'a SnapshotRow<'a>, &'a str)>,
) -> String {
    let mut text = format!("snapshots in {place} (current key {}):\n", current.short());
    if rows.len() == 0 {
        text.push_str("  (none)\n");
    }
    for (row, mark) in rows {
        text.push_str(&row.line(mark));
    }
    text
}

/// The store's snapshots, from their manifests (downloaded once and kept
/// in the cache dir). A store that cannot be read is this command's
/// failure (exit 6).
async fn run_remote(settings: &Settings, args: &LsArgs, ui: &Events) -> Result<u8> {
    let session = settings.session();
    let fp = session.fingerprint().await?;
    let remote = migsnap::shared::configured(&settings.ctx)?;
    let store = session.store()?;
    let found = remote
        .manifests(&remote.manifest_cache(store.dir())?)
        .await?;
    if let Some(w) = &found.odd_names {
        ui.warn(w);
    }
    let now = store::now_unix();
    let aliases: BTreeSet<&str> = found.manifests.iter().map(|m| m.alias.as_str()).collect();
    let current = fp.current_keys(&settings.ctx.key, aliases);
    let out = RemoteLsOutput {
        current_key: fp.key.clone(),
        remote: remote.url().to_string(),
        snapshots: found
            .manifests
            .iter()
            .map(|m| RemoteRow {
                row: SnapshotRow::of(m, &current, false, now),
                cached: matches!(store.load(&m.key), Ok(Some(_))),
            })
            .collect(),
        refused: found
            .refused
            .into_iter()
            .map(|(key, e)| Refused {
                key,
                reason: migsnap::error::one_line(&e),
            })
            .collect(),
    };
    if args.json {
        super::print_json(&out)?;
    } else {
        let rows = out
            .snapshots
            .iter()
            .map(|s| (&s.row, if s.cached { "  [cached]" } else { "" }));
        let mut text = snapshot_lines(&out.remote, &out.current_key, rows);
        for r in &out.refused {
            text.push_str(&format!("  {}!  refused: {}\n", r.key.short(), r.reason));
        }
        text.push_str("* = current key\n");
        super::print_stdout(&text);
    }
    Ok(exit::OK)
}

/// Templates on the server as (name, key from the comment), and the pool.
type Listed = (Vec<(String, Option<Key>)>, Vec<DbInfo>);

async fn list_templates(session: &Session<'_>, ui: &Events) -> Result<Listed> {
    let admin = session.admin(ui).await?;
    let mut templates = Vec::new();
    let mut pool = Vec::new();
    for d in admin.databases_like(TEMPLATE_PREFIX).await? {
        match DbName::parse(&d.name) {
            // A database named like ours that migsnap did not make (no
            // comment of ours) is someone else's: not listed, not "unfinished".
            Some(DbName::Template(_)) if !d.made_by_migsnap() => {}
            Some(DbName::Template(_)) => {
                let key = d.template_key();
                templates.push((d.name, key));
            }
            Some(DbName::Pool(_)) => pool.push(d),
            _ => {}
        }
    }
    Ok((templates, pool))
}

fn render(out: &LsOutput<'_>) -> String {
    let rows = out
        .snapshots
        .iter()
        .map(|s| (s, if s.template { "  [template]" } else { "" }));
    let mut text = snapshot_lines(&out.cache_dir, &out.current_key, rows);
    for r in &out.refused {
        text.push_str(&format!("  {}!  refused: {}\n", r.key.short(), r.reason));
    }
    match &out.templates {
        None => text.push_str("templates: (server unreachable)\n"),
        Some(ts) => {
            text.push_str("templates on the server:\n");
            if ts.is_empty() {
                text.push_str("  (none)\n");
            }
            for t in ts {
                let state = match (&t.key, t.cached) {
                    (None, _) => "unfinished",
                    (Some(_), true) => "cached",
                    (Some(_), false) => "not in this cache",
                };
                text.push_str(&format!(
                    "  {}{}  {state}\n",
                    t.name,
                    if t.current { "*" } else { " " }
                ));
            }
        }
    }
    if let Some(members) = &out.pool {
        let ready = members.iter().filter(|m| m.current).count();
        // Other keys' members belong to other checkouts or projects on the
        // same server (the JSON lists them); say nothing when there is no
        // pool here.
        if ready > 0 || out.pool_size > 0 {
            text.push_str(&format!(
                "pool: {ready} of {} ready for the current key\n",
                out.pool_size
            ));
        }
    }
    if out.other_projects > 0 {
        text.push_str(&format!(
            "{} snapshot(s) of other projects not shown (--all-projects lists them)\n",
            out.other_projects
        ));
    }
    text.push_str("* = current key\n");
    text
}
