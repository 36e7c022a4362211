//! Ready clones, handed out by rename, and what `prepare` leaves behind to
//! drop later: the off-critical-path half of the warm path.
//!
//! - **Trash.** `prepare` renames the old target aside (`migsnap_trash_*`)
//!   in the transaction that puts its replacement in place, so no DROP
//!   DATABASE (which forces a checkpoint of the whole cluster) is on the
//!   critical path. `maintain` (a detached `migsnap` process the command
//!   spawns after answering) or `gc` drops the trash.
//! - **Pool.** For the current key, `maintain` keeps `size` clones of the
//!   template (`migsnap_pool_*`, closed to connections, their comment naming
//!   the key, the inputs digest and the template's oid). `prepare` takes one
//!   by rename when it can: a rename costs the same at any schema size,
//!   where a clone costs per relation. A member whose comment does not
//!   match the template now in place (another key, a rebuilt template,
//!   changed inputs) is never handed out, and `maintain` drops it.
//!
//! One refiller at a time (an advisory lock per key); a member being made is
//! locked by its own name's lock, so `gc` never drops it half made. A crash
//! leaves at worst an unmarked member or trash, which `gc` and the next
//! `maintain` remove.

use crate::error::Result;
use crate::key::{Key, LockId};
use crate::names::DbName;
use crate::pg::admin::{self, Admin, DbInfo};
use crate::pg::mark::Mark;
use crate::report::Events;
use crate::session::Session;

/// The mark a pool member of `template` carries. `project` tells a
/// project's own members of an older key (dropped when the key changes)
/// from another project's on the same server (theirs to keep).
pub fn member_mark(key: &Key, inputs: &str, template: &DbInfo, project: &str) -> Mark {
    Mark::Pool {
        key: key.clone(),
        inputs: inputs.into(),
        template: template.oid,
        project: project.into(),
    }
}

/// Which project a pool member belongs to (`Ctx::project_tag`).
fn member_project(info: &DbInfo) -> Option<String> {
    match info.mark()? {
        Mark::Pool { project, .. } => Some(project),
        _ => None,
    }
}

/// The key a pool member was made for, from its mark.
pub fn member_key(info: &DbInfo) -> Option<Key> {
    match info.mark()? {
        Mark::Pool { key, .. } => Some(key),
        _ => None,
    }
}

/// The lock only one refiller of `key`'s pool holds.
fn refill_lock(key: &Key) -> LockId {
    key.tagged_lock_id("pool")
}

/// Pool members (finished or not) and trash on the server.
pub async fn list(admin: &Admin) -> Result<(Vec<DbInfo>, Vec<DbInfo>)> {
    let all = admin.databases_like(admin::TEMPLATE_PREFIX).await?;
    Ok(split(all))
}

/// Pool members (finished or not) and trash among migsnap's databases.
pub fn split(all: Vec<DbInfo>) -> (Vec<DbInfo>, Vec<DbInfo>) {
    let (mut pool, mut trash) = (Vec::new(), Vec::new());
    for d in all {
        match DbName::parse(&d.name) {
            Some(DbName::Pool(_)) => pool.push(d),
            Some(DbName::Trash(_)) => trash.push(d),
            _ => {}
        }
    }
    (pool, trash)
}

/// Members ready to be handed out for this template: marked for it, still
/// closed to connections (so nobody has used them), and owned by the role
/// migsnap connects as (on a shared server another role with CREATEDB
/// could otherwise plant a database with a copied comment).
pub fn ready_members<'a>(
    pool: &'a [DbInfo],
    key: &Key,
    inputs: &str,
    template: &DbInfo,
    project: &str,
) -> Vec<&'a DbInfo> {
    let want = Some(member_mark(key, inputs, template, project));
    pool.iter()
        .filter(|d| d.mark() == want && !d.allow_conn && d.owned)
        .collect()
}

/// A member nothing can hand out again: never marked (its maker died), or
/// made for a key whose template is gone from the server. Members of other
/// live keys (another project, another checkout) are theirs to keep.
pub async fn orphaned(admin: &Admin, member: &DbInfo) -> Result<bool> {
    Ok(match member_key(member) {
        None => true,
        Some(k) => admin
            .database(&admin::template_name(&k))
            .await?
            .is_none_or(|t| t.template_key().as_ref() != Some(&k)),
    })
}

/// Drop `info` if nobody holds its name's lock (the maker of a pool
/// member, or of a trash name, holds it while it works).
async fn drop_unlocked(admin: &Admin, info: &DbInfo, ui: &Events) -> Result<bool> {
    let Some(name) = DbName::parse(&info.name) else {
        return Ok(false);
    };
    // One that cannot go (still in use, or not ours to drop on a shared
    // server) must not stop the rest, but says why it stays: the next
    // maintenance or `gc` tries again.
    match admin
        .if_free(name.lock_id(), async || admin.drop(info).await)
        .await?
    {
        Some(Ok(())) => Ok(true),
        Some(Err(e)) => {
            ui.warn_about(format!("`{}` stays: {e}", info.name), &e);
            Ok(false)
        }
        None => {
            ui.info(format!("`{}` stays: another migsnap holds it", info.name));
            Ok(false)
        }
    }
}

/// What `maintain` did.
#[derive(Debug, Default, serde::Serialize)]
pub struct Maintained {
    pub trash_dropped: usize,
    pub pool_dropped: usize,
    pub pool_made: usize,
    /// Members ready for the current key afterwards.
    pub pool_ready: usize,
    /// The current key's template was missing (`prepare` handed its
    /// restore out) and was restored from the cached dump.
    pub template_made: bool,
    /// Nothing was done: the embedded server was not running and the
    /// caller asked not to start it.
    pub server_stopped: bool,
    /// Why the pool could not be refilled, when it could not: a pool left
    /// short must say why (in the background, in `maintain.log`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_refilled: Option<NotRefilled>,
}

/// Why `maintain` made no pool member for the current key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotRefilled {
    /// The cache dir has no snapshot of the current key whose recorded
    /// inputs still hold: nothing to clone from without a migrate.
    NoSnapshot,
    /// The current key's template is not on the server ready to clone
    /// (not made, refused, or marked for other inputs).
    NoTemplate,
}

impl std::fmt::Display for NotRefilled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NotRefilled::NoSnapshot => "no cached snapshot of the current key",
            NotRefilled::NoTemplate => "no ready template of the current key",
        })
    }
}

/// Drop the trash and bring the current key's pool to `size` members,
/// first making the key's template from its cached dump if it is missing
/// (`prepare` handed its restore out). Never
/// migrates (no Python in the background): without a cached snapshot of
/// the current key, only stale members go. `start_server`: false for the
/// background run `prepare` leaves, which must not bring back an embedded
/// server stopped since (`server stop`, a bench or CI cleaning up, its
/// directory maybe being removed).
pub async fn maintain(
    session: &Session<'_>,
    size: usize,
    start_server: bool,
    ui: &Events,
) -> Result<Maintained> {
    let ctx = session.ctx;
    let admin = if start_server {
        Some(session.admin(ui).await?)
    } else {
        session.admin_if_running().await?
    };
    let Some(admin) = admin else {
        return Ok(Maintained {
            server_stopped: true,
            ..Maintained::default()
        });
    };
    let mut done = Maintained::default();
    let project = ctx.project_tag();
    let (_, trash) = list(admin).await?;
    for t in &trash {
        if drop_unlocked(admin, t, ui).await? {
            done.trash_dropped += 1;
        }
    }

    let fp = session.fingerprint().await?;
    let store = session.store()?;
    let inputs = crate::engine::current_inputs(&store, fp, ctx.project_dir());
    let template_name = admin::template_name(&fp.key);
    // Only a template marked for this key and these inputs is cloned.
    let current = |found: Option<DbInfo>| {
        let state = admin::template_state(found.as_ref(), &fp.key, inputs.as_deref());
        found.filter(|_| state.serves(ctx.cache.trust.trust_unsigned))
    };
    let mut template = current(admin.database(&template_name).await?);
    // The pool is refilled from the template: when it is missing (with a
    // pool, `prepare` hands a restore straight out as its target), it is
    // made here from the same cached dump, never by a migrate (that is not
    // background work). Without a pool, nothing here needs it.
    if template.is_none() && inputs.is_some() && size > 0 {
        let req = crate::engine::Request {
            cache_only: true,
            ..Default::default()
        };
        match crate::engine::build(admin, ctx, fp, ui, req).await {
            Ok(_) => {
                done.template_made = true;
                template = current(admin.database(&template_name).await?);
            }
            Err(e) => ui.warn(format!("the template was not made: {e}")),
        }
    }
    // One refiller at a time; a second waits rather than leaving, since
    // the first may have counted a member that was handed out since. The
    // pool is listed only once the lock is held, for the same reason.
    let refilling = admin.lock_key(refill_lock(&fp.key), || {}).await?;
    let (pool, _) = list(admin).await?;
    // Stale: this key's members for another template or inputs, and any
    // member whose key has no template on the server any more (or that was
    // never marked, made by a run that died).
    let want = match (&inputs, &template) {
        (Some(i), Some(t)) => Some(member_mark(&fp.key, i, t, &project)),
        _ => None,
    };
    let mut current = Vec::new();
    for m in &pool {
        if want.is_some() && m.mark() == want && !m.allow_conn && m.owned {
            current.push(m);
            continue;
        }
        // This project's members of any key but this template's go.
        let ours =
            member_key(m).as_ref() == Some(&fp.key) || member_project(m).as_ref() == Some(&project);
        let stale = ours || orphaned(admin, m).await?;
        if stale && drop_unlocked(admin, m, ui).await? {
            done.pool_dropped += 1;
        }
    }
    // Trim: the pool never grows past its size.
    for m in current.iter().skip(size) {
        if drop_unlocked(admin, m, ui).await? {
            done.pool_dropped += 1;
        }
    }
    let mut ready = current.len().min(size);
    if ready < size {
        done.not_refilled = match (&inputs, &template) {
            (None, _) => Some(NotRefilled::NoSnapshot),
            (_, None) => Some(NotRefilled::NoTemplate),
            _ => None,
        };
    }
    if let (Some(mark), Some(t)) = (want, &template) {
        while ready < size {
            let name = DbName::pool()?;
            // Held until the member is marked: `gc` leaves it alone meanwhile.
            let making = admin.lock_key(name.lock_id(), || {}).await?;
            let made = async {
                let n = name.to_string();
                admin
                    .create_with(&n, Some(&t.name), ctx.clone_strategy(), false)
                    .await?;
                admin.mark(&n, &mark).await
            }
            .await;
            making.release().await;
            made?;
            ready += 1;
            done.pool_made += 1;
        }
    }
    refilling.release().await;
    done.pool_ready = ready;
    Ok(done)
}
