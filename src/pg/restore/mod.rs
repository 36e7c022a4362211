//! Restore a cached `.sql.zst` dump into a database over tokio-postgres,
//! without psql.
//!
//! A blocking thread decompresses and splits the dump (`split`) and hands
//! batches to the async side through small bounded channels, so reading
//! overlaps with the server's work and memory stays flat. Plain statements
//! are sent many per round trip (one simple-query message per batch), small
//! COPY blocks ride along as INSERTs (`copy_rows`), and big ones stream
//! through copy-in: that is what makes restoring over a slow link fast. The
//! parts of the dump that may run side by side are spread over `jobs`
//! connections ("lanes"), which is what makes it fast on a local server,
//! where the time is the server executing DDL.

mod allow;
mod copy_rows;
mod parse;
mod split;

use super::ConnInfo;
use crate::error::Error;
use crate::failpoint;
use bytes::Bytes;
use futures_util::SinkExt;
use split::Msg;
pub use split::{statements, Expected};
use std::path::Path;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_postgres::Client;

/// Connections a restore uses unless `restore-jobs` says otherwise. On a
/// 2-core machine two took the 1,000-migration project's restore from
/// ~188 ms to ~165 ms (server log, 5 runs each), three gave ~172 ms: the
/// parallel stretches of a dump are short, so more lanes mostly add
/// connections (BENCHMARKS.md).
pub const DEFAULT_JOBS: usize = 2;
pub const MAX_JOBS: usize = 16;

/// Why a restore failed.
#[derive(Debug)]
pub enum Failure {
    /// The file is not a readable dump (a zstd frame fails its checksum, the
    /// text is cut short): the snapshot is damaged and is to be discarded.
    Damaged(Error),
    /// The dump holds something pg_dump never writes for one database
    /// (`allow`): planted, so discarded like a damaged one. Found before
    /// its first statement runs.
    Refused(Error),
    /// Anything else: the server refused a statement, a connection dropped.
    Other(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Other(e)
    }
}

/// What one lane runs, in order.
enum Work {
    Sql {
        text: String,
        line: u64,
    },
    CopyStart {
        stmt: String,
        line: u64,
    },
    CopyData(Bytes),
    CopyEnd,
    /// Reply once everything before it has run.
    Sync(oneshot::Sender<()>),
}

/// Restore `dump` into the (empty) database `db` over `jobs` connections.
pub async fn restore(
    runners: Runners<'_>,
    db: &str,
    dump: &Path,
    expected: Expected,
    jobs: usize,
) -> std::result::Result<(), Failure> {
    let jobs = jobs.clamp(1, MAX_JOBS);
    let (tx, mut rx) = mpsc::channel::<std::result::Result<Msg, Failure>>(16);
    let path = dump.to_path_buf();
    // Started first: its allow-list pass over the whole dump overlaps with
    // opening the connections.
    let reader = tokio::task::spawn_blocking(move || {
        if let Err(e) = split::read(&path, &expected, jobs, &tx) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let lanes_connect =
        futures_util::future::try_join_all((0..jobs).map(|_| runners.lanes.connect(db)));
    let lanes_connect = async {
        lanes_connect.await.map_err(|e| {
            if runners.restricted() {
                e.hint(format!(
                    "the restore logs in as the role `{}`, made for it, with a password over the same host and port: let such a role connect (pg_hba.conf), or connect migsnap as a role that is not a superuser",
                    runners.lanes.user
                ))
            } else {
                e
            }
        })
    };
    let clients = lanes_connect.await?;
    // A JoinSet aborts its tasks when dropped, so a cancelled restore
    // (Ctrl-C) closes every connection at once.
    let mut lanes = JoinSet::new();
    let mut senders = Vec::with_capacity(jobs);
    for client in clients {
        let (ltx, lrx) = mpsc::channel(4);
        senders.push(ltx);
        lanes.spawn(run_lane(client, db.to_string(), lrx));
    }
    let dispatched = dispatch(&mut rx, &senders).await;
    drop(senders);
    // The reader stops at its next send once the receiver is gone.
    drop(rx);
    if let Err(Some(_)) = &dispatched {
        lanes.abort_all();
    }
    let mut lane_error = None;
    while let Some(joined) = lanes.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                lanes.abort_all();
                lane_error.get_or_insert(e);
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                lane_error.get_or_insert(Error::internal("a restore task failed").source(e).into());
            }
        }
    }
    reader
        .await
        .map_err(|e| Error::internal("the dump reader thread failed").source(e))?;
    match (dispatched, lane_error) {
        (Err(Some(f)), _) => Err(f),
        // The lanes run as a role that owns the build database and nothing
        // else: what it may not do, pg_dump's output of one database never
        // needs (a planted function reaching for the server, say).
        (
            _,
            Some(LaneError {
                error,
                denied: true,
            }),
        ) if runners.restricted() => Err(Failure::Refused(error)),
        (_, Some(LaneError { error, .. })) => Err(Failure::Other(error)),
        (Err(None), None) => Err(Error::internal("a restore connection ended early").into()),
        (Ok(()), None) => Ok(()),
    }
}

/// Forward the reader's messages to the lanes. `Err(None)`: a lane is gone
/// (its own error says why); `Err(Some(f))`: the dump could not be read.
async fn dispatch(
    rx: &mut mpsc::Receiver<std::result::Result<Msg, Failure>>,
    lanes: &[mpsc::Sender<Work>],
) -> std::result::Result<(), Option<Failure>> {
    match forward(rx, lanes).await {
        Err(None) => {
            // A lane failed. zstd checks a frame's checksum at the frame's
            // end, so a dump damaged in a way sha256 did not catch (a manifest
            // rewritten to match) runs garbage SQL first and only then fails
            // to decode: read on to the end so that damage is reported as
            // such, and the snapshot discarded, rather than as the server's
            // complaint about the garbage. Costs the rest of the decode, on a
            // path that is an error anyway.
            while let Some(msg) = rx.recv().await {
                if let Err(f) = msg {
                    return Err(Some(f));
                }
            }
            Err(None)
        }
        other => other,
    }
}

async fn forward(
    rx: &mut mpsc::Receiver<std::result::Result<Msg, Failure>>,
    lanes: &[mpsc::Sender<Work>],
) -> std::result::Result<(), Option<Failure>> {
    while let Some(msg) = rx.recv().await {
        let (lane, work) = match msg.map_err(Some)? {
            Msg::Sql { lane, text, line } => (lane, Work::Sql { text, line }),
            Msg::CopyStart { lane, stmt, line } => (lane, Work::CopyStart { stmt, line }),
            Msg::CopyData { lane, data } => (lane, Work::CopyData(data)),
            Msg::CopyEnd { lane } => (lane, Work::CopyEnd),
            Msg::Sync => {
                let mut replies = Vec::with_capacity(lanes.len());
                for lane in lanes {
                    let (done, reply) = oneshot::channel();
                    lane.send(Work::Sync(done)).await.map_err(|_| None)?;
                    replies.push(reply);
                }
                for reply in replies {
                    reply.await.map_err(|_| None)?;
                }
                continue;
            }
        };
        let lane = lanes.get(lane).ok_or(None)?;
        lane.send(work).await.map_err(|_| None)?;
    }
    Ok(())
}

/// Who runs a restore.
#[derive(Debug, Clone, Copy)]
pub struct Runners<'a> {
    /// What the lanes connect as: a role that owns the build database and
    /// nothing else when the caller could make one (see
    /// `Admin::restore_role`), else the caller's own.
    pub lanes: &'a ConnInfo,
    /// The caller's own connection. No statement of a dump runs on it:
    /// the extensions a dump needs are made before the restore, with fixed
    /// text, from the manifest's record (issue #21).
    pub privileged: &'a ConnInfo,
}

impl Runners<'_> {
    fn restricted(&self) -> bool {
        self.lanes.user != self.privileged.user
    }
}

/// A lane's failure; `denied`: the server refused it for lack of privilege.
struct LaneError {
    error: Error,
    denied: bool,
}

impl From<Error> for LaneError {
    fn from(error: Error) -> Self {
        LaneError {
            error,
            denied: false,
        }
    }
}

/// A statement's failure, remembering whether it was a permission denial.
fn lane_error(db: &str, line: u64, e: tokio_postgres::Error) -> LaneError {
    let denied = e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE);
    LaneError {
        error: restore_error(db, line, e),
        denied,
    }
}

/// One connection running its share of the dump, in order.
async fn run_lane(
    client: Client,
    db: String,
    mut rx: mpsc::Receiver<Work>,
) -> std::result::Result<(), LaneError> {
    // Strings are read as the check read them (`parse` assumes
    // standard_conforming_strings on), whatever the server's or a role's
    // default, before the dump's first statement. The lanes wait here while
    // the check pass reads the whole dump, so this costs no time.
    client
        .batch_execute("SET standard_conforming_strings = on")
        .await
        .map_err(|e| lane_error(&db, 0, e))?;
    let mut sink = None;
    let mut copy_line = 0;
    while let Some(work) = rx.recv().await {
        match work {
            Work::Sql { text, line } => {
                client
                    .batch_execute(&text)
                    .await
                    .map_err(|e| lane_error(&db, line, e))?;
                failpoint::point("restore.batch");
            }
            Work::CopyStart { stmt, line } => {
                copy_line = line;
                let s = client
                    .copy_in::<_, Bytes>(stmt.as_str())
                    .await
                    .map_err(|e| lane_error(&db, line, e))?;
                sink = Some(Box::pin(s));
            }
            Work::CopyData(data) => {
                let s = sink
                    .as_mut()
                    .ok_or_else(|| LaneError::from(Error::internal("COPY data outside a COPY")))?;
                s.send(data)
                    .await
                    .map_err(|e| lane_error(&db, copy_line, e))?;
                failpoint::point("restore.copy_data");
            }
            Work::CopyEnd => {
                let mut s = sink
                    .take()
                    .ok_or_else(|| LaneError::from(Error::internal("COPY end outside a COPY")))?;
                s.as_mut()
                    .finish()
                    .await
                    .map_err(|e| lane_error(&db, copy_line, e))?;
                failpoint::point("restore.copy");
            }
            Work::Sync(done) => {
                let _ = done.send(());
            }
        }
    }
    Ok(())
}

fn restore_error(db: &str, line: u64, e: tokio_postgres::Error) -> Error {
    super::db_error(
        format!("restoring into `{db}` failed near line {line} of the dump"),
        e,
    )
}
