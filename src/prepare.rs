//! The `prepare` use case: put a fully migrated database under the given
//! name.
//!
//! Warm path: one hash of the files, a few hashes of what the snapshot
//! recorded beyond them (`depends`), one query, one CREATE DATABASE …
//! TEMPLATE (plus a DROP when the name exists). Nothing else, and no Python.

use crate::context::Ctx;
use crate::depends::Checked;
use crate::engine::{self, Snapshot, Source};
use crate::error::Result;
use crate::fingerprint::{self, Fingerprint};
use crate::key::Key;
use crate::names::DbName;
use crate::pg::admin;
use crate::pg::mark::Mark;
use crate::pg::ConnInfo;
use crate::pool;
use crate::report::Events;
use crate::session::Session;
use crate::shared::Origin;
use crate::store::Applied;
use crate::units;
use std::borrow::Cow;
use std::time::{Duration, Instant};

/// The database to prepare, and what may be done to get it.
#[derive(Debug, Clone)]
pub struct Target {
    pub database: String,
    /// Replace it even if its name does not look like a test database.
    pub force: bool,
    /// Ignore templates and cached dumps: migrate from empty and re-snapshot.
    pub rebuild: bool,
    /// `--at`: migrate to these targets, one after another, rather than
    /// all the way (`app.name`, or a migration file's absolute path); a
    /// snapshot of its own (`Fingerprint::at`). Empty: fully migrated.
    pub at: Vec<String>,
}

/// A database that is ready, and how it got there. `run` and `prepare` both
/// start from this.
#[derive(Debug)]
pub struct Prepared {
    pub database: String,
    pub key: Key,
    pub source: Source,
    pub base_key: Option<Key>,
    pub applied: Vec<Applied>,
    /// Where the restored dump came from (see `Snapshot::origin`).
    pub origin: Option<Origin>,
    pub elapsed: Duration,
    /// How to reach the server (the database is `database`).
    pub conn: ConnInfo,
    /// Work left for `pool::maintain`, off the critical path: the replaced
    /// target renamed aside, or a pool below its size.
    pub maintenance: bool,
    /// The inputs record the database was made from, when known for
    /// certain (see `Snapshot::built_with`): what Django loaded for that
    /// build, which the pytest plugin compares with its own process.
    pub built_with: Option<Checked>,
    /// The targets it was migrated to (`Fingerprint::at`: file paths
    /// project-relative); empty: fully migrated.
    pub at: Vec<String>,
    /// The build that made its snapshot ran with the accelerator
    /// (`build-accelerator`, django-fastmig installed).
    pub accelerated: bool,
    /// The migrations that accelerated build applied with stock Django,
    /// because django-fastmig does not know something in them (empty for a
    /// stock build).
    pub stock_migrations: Vec<String>,
}

impl Prepared {
    /// `test_app ready from template in 85ms`, for humans.
    pub fn summary(&self) -> String {
        let applied = match self.applied.len() {
            0 => String::new(),
            n => format!(", {n} migration(s) applied"),
        };
        let origin = match self.origin {
            Some(Origin::Remote) => " (downloaded from the snapshot store)",
            _ => "",
        };
        let at = match self.at.as_slice() {
            [] => String::new(),
            at => format!(" (migrated to {})", at.join(", then ")),
        };
        format!(
            "{}{at} ready from {}{origin}{applied} in {}",
            self.database,
            self.source.as_str(),
            units::duration(self.elapsed)
        )
    }
}

/// How `prepare` serves its target, decided from what it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Take a ready pool member by rename, else clone the template.
    Pool,
    /// Clone the template.
    Template,
    /// Build the template first (`engine::build`); with a pool, a restore
    /// may go straight into the target (`hand_out`).
    Build { hand_out: bool },
}

/// `serves`: the key's template is there and may be cloned; `inputs_known`:
/// the cache dir records what it was built from (pool members carry it);
/// `pool`: the pool size.
fn route(serves: bool, inputs_known: bool, rebuild: bool, pool: usize) -> Route {
    match (serves && !rebuild, inputs_known && pool > 0) {
        (true, true) => Route::Pool,
        (true, false) => Route::Template,
        // With a pool, background work for this key follows anyway: a
        // restore may go straight into the target and the template be
        // made with the refill, off the path the caller waits on.
        (false, _) => Route::Build { hand_out: pool > 0 },
    }
}

/// Whether `pool::maintain` has work: a target set aside to drop, or a
/// pool short of its size (`maintain` hashes the project again, so it is
/// spawned only for work there is).
fn needs_maintenance(set_aside: bool, pool_ready: usize, pool: usize) -> bool {
    set_aside || pool_ready < pool
}

/// What `prepare` found under its target's lock.
struct Found {
    /// The target and every database of migsnap's (templates, the scratch
    /// clone), as they are.
    databases: Vec<admin::DbInfo>,
    /// The pool's members.
    members: Vec<admin::DbInfo>,
}

/// Make `args.database` a fresh clone of the template for the current key,
/// building the template first if needed.
pub async fn prepare(session: &Session<'_>, args: &Target, ui: &Events) -> Result<Prepared> {
    let started = Instant::now();
    let ctx = session.ctx;
    let target = args.database.as_str();
    admin::validate_name(target)?;
    let at = at_targets(ctx, &args.at)?;
    // A database part of the way is no pool's: the pool holds clones of
    // the fully migrated template.
    let pool = if at.is_empty() { ctx.pool } else { 0 };
    // Hash while connecting and looking: neither needs the key, and over
    // a network link the connection (TCP, authentication, the version
    // query) costs several round trips, and a new server process's first
    // look at the catalogs more than a millisecond even on this machine
    // (issue #24). The key's errors come first, as they would without the
    // server.
    let store = session.store()?;
    let scratch = admin::clone_scratch_name(target);
    let (hashed, looked) = tokio::join!(current(session, &store, at), async {
        let admin = session.admin(ui).await?;
        let found = look(admin, target, &scratch, ui).await?;
        Ok::<_, crate::error::Error>((admin, found))
    });
    let (fp, record) = hashed?;
    // What the template must be marked with to be served.
    let inputs = record.as_ref().map(Checked::digest);
    let (admin, found) = looked?;
    let template = admin::template_name(&fp.key);

    if let Some(leftover) = found.databases.iter().find(|d| d.name == scratch) {
        // A run killed between clone and rename left it: ours by name.
        admin.drop(leftover).await?;
    }
    let existing = found.databases.iter().find(|d| d.name == target);
    admin::target_check(target, existing, &admin.conn.admin_db, args.force)?;
    let trust_unsigned = ctx.cache.trust.trust_unsigned;
    let served = found.databases.iter().find(|d| {
        d.name == template
            && admin::template_state(Some(d), &fp.key, inputs.as_deref()).serves(trust_unsigned)
    });
    let ready = served.is_some();
    let clone_mark = Mark::Clone {
        short: fp.short().into(),
    };
    let done = |snapshot: Snapshot, key: Key, maintenance: bool| {
        // A template found ready says nothing of how it was built; its
        // manifest does. Only an accelerated key can have an accelerated
        // build, so a stock warm path reads nothing more.
        let (accelerated, stock_migrations) =
            match (snapshot.accelerated, snapshot.stock_migrations) {
                (Some(a), Some(s)) => (a, s),
                _ if !fp.accelerated => (false, vec![]),
                // The small warm record, not the manifest: this is the
                // warm path of every accelerated key.
                _ => match store.how_built(&key) {
                    Some(b) => (b.accelerated, b.stock_migrations),
                    None => (false, vec![]),
                },
            };
        Prepared {
            database: target.to_string(),
            accelerated,
            stock_migrations,
            key,
            source: snapshot.source,
            base_key: snapshot.base_key,
            origin: snapshot.origin,
            applied: snapshot.applied,
            elapsed: started.elapsed(),
            conn: admin.conn.clone(),
            maintenance,
            built_with: snapshot.built_with,
            at: fp.at.clone(),
        }
    };
    // Members ready for the template now in place, before any is taken.
    let mut pool_ready = 0;

    let route = route(ready, inputs.is_some(), args.rebuild, pool);
    let mut snapshot = match route {
        Route::Pool | Route::Template => {
            if let (Route::Pool, Some(t), Some(i)) = (route, served, &inputs) {
                // A ready clone from the pool, by rename: the same few
                // milliseconds at any schema size.
                let available =
                    pool::ready_members(&found.members, &fp.key, i, t, &ctx.project_tag());
                pool_ready = available.len();
                for m in available {
                    let aside = existing.map(|_| DbName::trash()).transpose()?;
                    let aside_name = aside.as_ref().map(DbName::to_string);
                    if admin
                        .swap_in(&m.name, target, &clone_mark, aside_name.as_deref())
                        .await?
                    {
                        crate::failpoint::point("clone.commented");
                        // One member fewer: refill (and drop what went aside).
                        let snapshot = Snapshot::pooled(template, record);
                        return Ok(done(snapshot, fp.key.clone(), true));
                    }
                }
            }
            Snapshot::ready(template, record)
        }
        Route::Build { hand_out } => {
            let hand_out = hand_out.then_some(engine::HandOut {
                target,
                mark: &clone_mark,
                force: args.force,
            });
            let req = engine::Request {
                rebuild: args.rebuild,
                hand_out,
                cache_only: false,
            };
            engine::build(admin, ctx, &fp, ui, req).await?
        }
    };
    if snapshot.handed_out {
        // The template (and the pool) are still to be made, and the
        // replaced target, if any, to be dropped.
        return Ok(done(snapshot, fp.key.clone(), true));
    }
    snapshot = clone_template(ctx, admin, &fp, &store, snapshot, &scratch, ui).await?;
    crate::failpoint::point("clone.created");
    // The target may have appeared while we built; look again before
    // setting it aside.
    let existing = if snapshot.source == Source::Template && ready {
        existing.cloned()
    } else {
        admin.database(target).await?
    };
    let aside = admin
        .put_in_place(&scratch, target, &clone_mark, existing.as_ref(), args.force)
        .await?;
    crate::failpoint::point("clone.commented");
    let maintenance = needs_maintenance(aside.is_some(), pool_ready, pool);
    Ok(done(snapshot, fp.key.clone(), maintenance))
}

/// A `prepare --at` target that names no migration, as data (the binary
/// says how to name one).
#[derive(Debug, thiserror::Error)]
pub enum AtTargetError {
    #[error("`{target}`: no such migration file")]
    NoFile { target: String },
    #[error("`{target}` names no migration: expected `app.name`")]
    NotAName { target: String },
}

impl crate::error::Typed for AtTargetError {
    fn kind(&self) -> crate::error::Kind {
        crate::error::Kind::Usage
    }
}

/// `--at`'s targets as the key covers them (`fingerprint::at_target`),
/// checked for what can be told without Django: a file that exists, or
/// `app.name`. Whether Django knows the migration is the shim's to say,
/// before it migrates anything.
fn at_targets(ctx: &Ctx, targets: &[String]) -> Result<Vec<String>> {
    for t in targets {
        if fingerprint::is_file_target(t) {
            if !std::path::Path::new(t).is_file() {
                return Err(AtTargetError::NoFile { target: t.clone() }.into());
            }
        } else if !matches!(t.split_once('.'), Some((app, name)) if !app.is_empty() && !name.is_empty())
        {
            return Err(AtTargetError::NotAName { target: t.clone() }.into());
        }
    }
    Ok(targets
        .iter()
        .map(|t| fingerprint::at_target(ctx.project_dir(), t))
        .collect())
}

/// Whether `prepare` would hand out a ready pool member right now: the
/// server runs, the current key's template serves, and a member made from
/// it waits. Nothing is made, changed or started (a stopped embedded server
/// stays stopped: then the answer is no). The pytest plugin asks this
/// before starting `prepare` early (issue #24): a member takes milliseconds
/// to hand out when the fixture asks for it, so only a build, a restore or
/// a clone is worth overlapping with collection. The key's key is returned
/// with the answer.
pub async fn pool_member_ready(session: &Session<'_>) -> Result<(Key, bool)> {
    let ctx = session.ctx;
    let store = session.store()?;
    let (hashed, admin) = tokio::join!(
        current(session, &store, Vec::new()),
        session.admin_if_running()
    );
    let (fp, record) = hashed?;
    let (Some(admin), Some(inputs), true) =
        (admin?, record.as_ref().map(Checked::digest), ctx.pool > 0)
    else {
        return Ok((fp.key.clone(), false));
    };
    let template = admin::template_name(&fp.key);
    let names = [template.as_str()];
    let (found, members) = tokio::join!(admin.databases(&names), pool::list(admin));
    let found = found?;
    let served = found.iter().find(|d| {
        admin::template_state(Some(d), &fp.key, Some(&inputs))
            .serves(ctx.cache.trust.trust_unsigned)
    });
    let ready = match served {
        Some(t) => {
            !pool::ready_members(&members?.0, &fp.key, &inputs, t, &ctx.project_tag()).is_empty()
        }
        None => false,
    };
    Ok((fp.key.clone(), ready))
}

/// The session's fingerprint, migrated to `at` (`Fingerprint::at`), and
/// the record of what its cached snapshot was built from, checked on the
/// blocking pool (it hashes what the build read beyond the key). Borrowed
/// when fully migrated: a copy of every file's path and hash cost half a
/// millisecond of a 5,000-file pool hand-out (issue #24).
async fn current<'s>(
    session: &'s Session<'_>,
    store: &crate::store::Store,
    at: Vec<String>,
) -> Result<(Cow<'s, Fingerprint>, Option<Checked>)> {
    let fp = session.fingerprint().await?;
    let fp = match at.is_empty() {
        true => Cow::Borrowed(fp),
        false => Cow::Owned(fp.clone().at(at)),
    };
    let (st, root, key) = (
        store.clone(),
        session.ctx.project_dir().to_path_buf(),
        fp.key.clone(),
    );
    let record = crate::error::blocking("checking the snapshot's inputs", move || {
        engine::current_record(&st, &key, &root)
    })
    .await?;
    Ok((fp, record))
}

/// Take the target's lock (one prepare per target at a time: two would
/// fight over the scratch clone and the rename; held until this connection
/// closes, with the caller's session, and gc drops a scratch clone only
/// when it is free) and look at the target and every database of
/// migsnap's (whichever the key's template is, and the scratch clone), in
/// the same round trip as the lock when nobody else holds it. Nothing here
/// needs the key: it runs while the files are hashed.
async fn look(admin: &admin::Admin, target: &str, scratch: &str, ui: &Events) -> Result<Found> {
    let lock = crate::names::DbName::clone_for(target);
    debug_assert!(scratch.starts_with(admin::TEMPLATE_PREFIX));
    let list = || async {
        let (ours, target) = tokio::join!(
            admin.databases_like(admin::TEMPLATE_PREFIX),
            admin.database(target)
        );
        let mut databases = ours?;
        databases.extend(target?);
        Ok::<_, crate::error::Error>(databases)
    };
    let (locked, found) = tokio::join!(admin.try_lock_key(lock.lock_id()), list());
    let databases = if let Some(held) = locked? {
        held.until_closed();
        found?
    } else {
        admin
            .lock_key(lock.lock_id(), || {
                ui.waiting(format!("waiting for another migsnap preparing `{target}`…"))
            })
            .await?
            .until_closed();
        list().await?
    };
    let (members, _) = pool::split(databases.clone());
    Ok(Found { databases, members })
}

/// Clone the template under the scratch name: the old target goes only
/// once its replacement exists, so a failed clone leaves it as it was.
/// The warm path looks without a lock: a concurrent `--rebuild` or `gc`
/// may have dropped the template since; then it is built again (under the
/// locks) and cloned once more. The snapshot the clone came from.
async fn clone_template(
    ctx: &Ctx,
    admin: &admin::Admin,
    fp: &fingerprint::Fingerprint,
    store: &crate::store::Store,
    snapshot: Snapshot,
    scratch: &str,
    ui: &Events,
) -> Result<Snapshot> {
    crate::failpoint::pause("clone.before").await;
    crate::failpoint::point("clone.before");
    let Err(e) = admin
        .create(scratch, Some(&snapshot.template), ctx.clone_strategy())
        .await
    else {
        return Ok(snapshot);
    };
    // After a build, the manifest names the inputs anew.
    let inputs = engine::current_inputs(store, fp, ctx.project_dir());
    let still_there = admin
        .template_state(&fp.key, inputs.as_deref())
        .await?
        .serves(ctx.cache.trust.trust_unsigned);
    if still_there {
        return Err(e);
    }
    ui.warn(format!(
        "template `{}` disappeared before it could be cloned; rebuilding it",
        snapshot.template
    ));
    let rebuilt = engine::build(admin, ctx, fp, ui, engine::Request::default()).await?;
    admin
        .create(scratch, Some(&rebuilt.template), ctx.clone_strategy())
        .await?;
    Ok(rebuilt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_serving_template_is_cloned_or_a_pool_member_taken_else_built() {
        // The pool only with a size and a record its members carry.
        assert_eq!(route(true, true, false, 2), Route::Pool);
        assert_eq!(route(true, true, false, 0), Route::Template);
        assert_eq!(route(true, false, false, 2), Route::Template);
        // --rebuild, or nothing that serves: build; a restore may go
        // straight to the target only with a pool behind it.
        assert_eq!(route(true, true, true, 2), Route::Build { hand_out: true });
        assert_eq!(
            route(false, true, false, 0),
            Route::Build { hand_out: false }
        );
        assert_eq!(
            route(false, false, false, 3),
            Route::Build { hand_out: true }
        );
    }

    #[test]
    fn maintenance_only_for_work_there_is() {
        assert!(!needs_maintenance(false, 2, 2));
        assert!(!needs_maintenance(false, 0, 0));
        assert!(needs_maintenance(true, 2, 2), "a target set aside");
        assert!(needs_maintenance(false, 1, 2), "a pool short of its size");
    }
}
