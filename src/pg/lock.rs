//! Advisory locks that release themselves: `Admin::lock`, `try_lock` and
//! `hold_shared` hand back an `AdvisoryLock`, and no early `?` return, error
//! or dropped future (Ctrl-C) can leave the lock held (issue #23).
//!
//! Every lock is session-level on the admin connection, so a killed process
//! never leaves one held: the server releases it when the connection closes.
//! Within a live process the guard releases it. `release` awaits the
//! unlock, keeping the order callers rely on (a build's lock is free before
//! its upload starts). Dropped without `release`, the guard cannot await
//! in `Drop`, so it spawns the unlock on the runtime, on its own handle to
//! the connection. That deferred unlock is sound because a session-level
//! advisory lock counts: each lock taken needs one unlock, and the order of
//! lock and unlock on the one session does not change the final count, so
//! a later `try_lock` of the same id by this session, queued before the
//! deferred unlock runs, still ends up held exactly once. With no runtime
//! left (the process is exiting) nothing is spawned: closing the
//! connection releases the lock.
//!
//! Not transaction-scoped (`pg_advisory_xact_lock`): the work done under
//! these locks includes `CREATE DATABASE` and `DROP DATABASE`, which cannot
//! run inside a transaction block.

use super::db_error;
use crate::error::Result;
use crate::key::LockId;
use std::sync::Arc;
use tokio_postgres::Client;

/// A session-level advisory lock the admin connection holds; released by
/// `release` or, failing that, when dropped.
#[derive(Debug)]
#[must_use = "the lock is released as soon as this guard is dropped"]
pub struct AdvisoryLock {
    client: Arc<Client>,
    id: LockId,
    shared: bool,
    held: bool,
}

impl AdvisoryLock {
    pub(super) fn held(client: &Arc<Client>, id: LockId, shared: bool) -> AdvisoryLock {
        AdvisoryLock {
            client: client.clone(),
            id,
            shared,
            held: true,
        }
    }

    /// Release it now. Best effort: an unlock that fails means the
    /// connection is broken, and a closed connection holds no lock.
    pub async fn release(mut self) {
        self.held = false;
        let _ = unlock(&self.client, self.id, self.shared).await;
    }

    /// Keep it until the connection closes, sparing the unlock's round
    /// trip: for a lock held to the end of the work its connection exists
    /// for (`prepare`'s, on the warm path).
    pub fn until_closed(mut self) {
        self.held = false;
    }
}

impl Drop for AdvisoryLock {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (client, id, shared) = (self.client.clone(), self.id, self.shared);
        runtime.spawn(async move {
            let _ = unlock(&client, id, shared).await;
        });
    }
}

async fn unlock(client: &Client, id: LockId, shared: bool) -> Result<()> {
    let sql = if shared {
        "SELECT pg_advisory_unlock_shared($1)"
    } else {
        "SELECT pg_advisory_unlock($1)"
    };
    client
        .execute(sql, &[&id.0])
        .await
        .map_err(|e| db_error("cannot release an advisory lock", e))?;
    Ok(())
}
