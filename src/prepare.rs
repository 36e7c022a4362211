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
use crate::fingerprint;
use crate::key::Key;
use crate::names::DbName;
use crate::pg::admin;
use crate::pg::mark::Mark;
use crate::pg::ConnInfo;
use crate::pool;
use crate::report::Events;
use crate::shared::Origin;
use crate::store::Applied;
use crate::units;
use std::time::{Duration, Instant};

/// The database to prepare, and what may be done to get it.
#[derive(Debug, Clone)]
pub struct Target {
    pub database: String,
    /// Replace it even if its name does not look like a test database.
    pub force: bool,
    /// Ignore templates and cached dumps: migrate from empty and re-snapshot.
    pub rebuild: bool,
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
        format!(
            "{} ready from {}{origin}{applied} in {}",
            self.database,
            self.source.as_str(),
            units::duration(self.elapsed)
        )
    }
}

/// Make `args.database` a fresh clone of the template for the current key,
/// building the template first if needed.
pub async fn prepare(ctx: &Ctx, args: &Target, ui: &Events) -> Result<Prepared> {
    let started = Instant::now();
    let target = args.database.as_str();
    admin::validate_name(target)?;
    // Hash while connecting: the two do not depend on each other, and over
    // a network link the connection (TCP, authentication, the version
    // query) costs several round trips. The key's errors come first, as
    // they would without the server.
    let store = ctx.store()?;
    let (spec, st) = (ctx.key.clone(), store.clone());
    let hashing = crate::error::blocking("hashing the migrations", move || {
        let fp = fingerprint::compute(&spec)?;
        let record = engine::current_record(&st, &fp, &spec.root);
        Ok::<_, crate::error::Error>((fp, record))
    });
    let (hashed, admin) = tokio::join!(hashing, engine::connect(ctx, ui));
    let (fp, record) = hashed??;
    // What the template must be marked with to be served.
    let inputs = record.as_ref().map(Checked::digest);
    let admin = admin?;
    let template = admin::template_name(&fp.key);

    let scratch = admin::clone_scratch_name(target);
    // One prepare per target at a time: two would fight over the scratch
    // clone and the rename. Held until this connection closes; gc drops a
    // scratch clone only when this lock is free. Taken in the same round
    // trip as the look-up.
    let lock = crate::names::DbName::clone_for(target);
    let names = [template.as_str(), target, scratch.as_str()];
    // The pool is looked at only when there is to be one: with none, the
    // warm path stays one look-up and one clone.
    let listing = async {
        if ctx.pool == 0 {
            return Ok(Vec::new());
        }
        pool::list(&admin).await.map(|(members, _)| members)
    };
    let (locked, found, members) = tokio::join!(
        admin.try_lock_key(lock.lock_id()),
        admin.databases(&names),
        listing
    );
    let members = members?;
    let found = if let Some(held) = locked? {
        held.until_closed();
        found?
    } else {
        admin
            .lock_key(lock.lock_id(), || {
                ui.waiting(format!("waiting for another migsnap preparing `{target}`…"))
            })
            .await?
            .until_closed();
        admin.databases(&names).await?
    };
    if let Some(leftover) = found.iter().find(|d| d.name == scratch) {
        // A run killed between clone and rename left it: ours by name.
        admin.drop(leftover).await?;
    }
    let existing = found.iter().find(|d| d.name == target);
    admin::target_check(target, existing, &admin.conn.admin_db, args.force)?;
    let trust_unsigned = ctx.cache.trust.trust_unsigned;
    let served = found.iter().find(|d| {
        d.name == template
            && admin::template_state(Some(d), &fp.key, inputs.as_deref()).serves(trust_unsigned)
    });
    let ready = served.is_some();
    let clone_mark = Mark::Clone {
        short: fp.short().into(),
    };
    // Members ready for the template now in place, before any is taken.
    let mut pool_ready = 0;

    // A ready clone from the pool, by rename: the same few milliseconds at
    // any schema size.
    if let (Some(t), Some(i), false) = (served, &inputs, args.rebuild) {
        let available = pool::ready_members(&members, &fp.key, i, t, &ctx.project_tag());
        pool_ready = available.len();
        for m in available {
            let aside = existing.map(|_| DbName::trash()).transpose()?;
            let aside_name = aside.as_ref().map(DbName::to_string);
            if admin
                .swap_in(&m.name, target, &clone_mark, aside_name.as_deref())
                .await?
            {
                crate::failpoint::point("clone.commented");
                return Ok(Prepared {
                    database: target.to_string(),
                    key: fp.key,
                    source: Source::Pool,
                    base_key: None,
                    applied: vec![],
                    origin: None,
                    elapsed: started.elapsed(),
                    conn: admin.conn.clone(),
                    // One member fewer: refill (and drop what went aside).
                    maintenance: true,
                    built_with: record,
                });
            }
        }
    }

    let mut snapshot = if ready && !args.rebuild {
        Snapshot::ready(template, record)
    } else {
        // With a pool, background work for this key follows anyway: a
        // restore may go straight into the target and the template be
        // made with the refill, off the path the caller waits on.
        let hand_out = (ctx.pool > 0).then_some(engine::HandOut {
            target,
            mark: &clone_mark,
            force: args.force,
        });
        let req = engine::Request {
            rebuild: args.rebuild,
            hand_out,
            cache_only: false,
        };
        engine::build(&admin, ctx, &fp, ui, req).await?
    };
    let done = |snapshot: Snapshot, key: Key, maintenance: bool| Prepared {
        database: target.to_string(),
        key,
        source: snapshot.source,
        base_key: snapshot.base_key,
        origin: snapshot.origin,
        applied: snapshot.applied,
        elapsed: started.elapsed(),
        conn: admin.conn.clone(),
        maintenance,
        built_with: snapshot.built_with,
    };
    if snapshot.handed_out {
        // The template (and the pool) are still to be made, and the
        // replaced target, if any, to be dropped.
        return Ok(done(snapshot, fp.key, true));
    }

    // Clone first, under the scratch name: the old target goes only once
    // its replacement exists, so a failed clone leaves it as it was.
    crate::failpoint::pause("clone.before").await;
    crate::failpoint::point("clone.before");
    let cloned = admin
        .create(&scratch, Some(&snapshot.template), ctx.clone_strategy())
        .await;
    if let Err(e) = cloned {
        // The warm path looks without a lock: a concurrent `--rebuild`
        // or `gc` may have dropped the template since. Then build it
        // again (under the locks) and clone once more; any other failure
        // is the error to report.
        // After a build, the manifest names the inputs anew.
        let inputs = engine::current_inputs(&store, &fp, ctx.project_dir());
        let still_there = admin
            .template_state(&fp.key, inputs.as_deref())
            .await?
            .serves(trust_unsigned);
        if still_there {
            return Err(e);
        }
        ui.warn(format!(
            "template `{}` disappeared before it could be cloned; rebuilding it",
            snapshot.template
        ));
        let rebuilt = engine::build(&admin, ctx, &fp, ui, engine::Request::default()).await?;
        admin
            .create(&scratch, Some(&rebuilt.template), ctx.clone_strategy())
            .await?;
        snapshot = rebuilt;
    }
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

    // Spawned only for work there is: a target set aside, or a pool
    // short of its size (`maintain` hashes the project again).
    let maintenance = aside.is_some() || pool_ready < ctx.pool;
    Ok(done(snapshot, fp.key, maintenance))
}
