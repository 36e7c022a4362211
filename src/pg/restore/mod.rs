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
use std::path::{Path, PathBuf};
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

/// The dump reader's stack: PostgreSQL's parser stops nesting at its own
/// depth limit, and decoding a tree that deep (pg_query's protobuf, then
/// dropping it) recurses once per level. Address space, not memory: pages
/// are used only as deep as a statement goes.
pub const READER_STACK: usize = 256 * 1024 * 1024;

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
    /// The server cannot go on (it went away, is shutting down, is out of
    /// disk): an error of this run, the snapshot is kept. A statement the
    /// server rejects is `Damaged` (issue #21: one bad statement must not
    /// fail every run).
    Other(Error),
}

/// The restore's own role (made for it, not a superuser) could not log
/// in: the connect error, and the role, for the binary's hint.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct RoleLogin {
    pub role: String,
    source: Error,
}

impl crate::error::Typed for RoleLogin {
    fn kind(&self) -> crate::error::Kind {
        self.source.kind
    }
}

/// A restore that could not run its course for migsnap's own reasons (a
/// thread that would not start or panicked, work handed over out of
/// order): neither the dump's fault nor the server's, so the snapshot is
/// kept and the run fails (exit code 3).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("cannot start the dump reader thread")]
    ReaderThread(#[source] std::io::Error),
    #[error("the dump reader thread failed")]
    ReaderPanicked,
    #[error("a restore task failed")]
    Task(#[source] tokio::task::JoinError),
    /// A lane's connection closed its channel before the dump was done.
    #[error("a restore connection ended early")]
    EndedEarly,
    /// `what` (`data`, `end`) came with no COPY started.
    #[error("COPY {0} outside a COPY")]
    OutOfOrder(&'static str),
    /// The second pass could not read the file the first pass checked.
    #[error("cannot reread `{}`", .path.display())]
    Reread {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot decompress `{}`", .path.display())]
    Decompress {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl crate::error::Typed for RestoreError {
    fn kind(&self) -> crate::error::Kind {
        crate::error::Kind::Internal
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Other(e)
    }
}

/// What one lane runs, in order.
enum Work {
    /// `pin` goes first, as a message of its own (see `Splitter::pin`).
    Sql {
        text: String,
        line: u64,
        pin: String,
    },
    CopyStart {
        stmt: String,
        line: u64,
        pin: String,
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
    let extensions = expected.extensions.clone();
    let (tx, mut rx) = mpsc::channel::<std::result::Result<Msg, Failure>>(16);
    let path = dump.to_path_buf();
    // Started first: its allow-list pass over the whole dump overlaps with
    // opening the connections.
    let (finished, reader_done) = oneshot::channel::<()>();
    let reader = std::thread::Builder::new()
        .name("migsnap-dump-reader".into())
        .stack_size(READER_STACK)
        .spawn(move || {
            if let Err(e) = split::read(&path, &expected, jobs, &tx) {
                let _ = tx.blocking_send(Err(e));
            }
            let _ = finished.send(());
        })
        .map_err(|e| Error::from(RestoreError::ReaderThread(e)))?;
    let lanes_connect =
        futures_util::future::try_join_all((0..jobs).map(|_| runners.lanes.connect(db)));
    let lanes_connect = async {
        lanes_connect.await.map_err(|e| {
            if runners.restricted() {
                RoleLogin {
                    role: runners.lanes.user.clone(),
                    source: e,
                }
                .into()
            } else {
                e
            }
        })
    };
    let (clients, privileged) = tokio::try_join!(lanes_connect, runners.privileged.connect(db))?;
    // Before the first lane runs a statement: the dump's objects may use
    // the extensions' types and functions.
    create_extensions(&privileged, db, extensions, &runners.lanes.user).await?;
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
                lane_error.get_or_insert(Error::from(RestoreError::Task(e)).into());
            }
        }
    }
    // Resolves when the reader returned or panicked (the sender dropped):
    // joining is then immediate.
    let _ = reader_done.await;
    if reader.join().is_err() {
        return Err(Error::from(RestoreError::ReaderPanicked).into());
    }
    match (dispatched, lane_error) {
        (Err(Some(f)), _) => Err(f),
        (_, Some(LaneError { error, cause })) => Err(match cause {
            // The lanes run as a role that owns the build database and
            // nothing else: what it may not do, pg_dump's output of one
            // database never needs (a planted function reaching for the
            // server, say).
            Cause::Denied if runners.restricted() => Failure::Refused(of_dump(dump, error)),
            Cause::Denied | Cause::Statement => Failure::Damaged(of_dump(dump, error)),
            // A session of the restore ended while the server goes on
            // answering: the dump's own doing (a session timeout it set),
            // or someone ended it; either way this restore is lost, not
            // the server.
            Cause::Lost if server_answers(&privileged).await => {
                Failure::Damaged(of_dump(dump, error))
            }
            Cause::Lost | Cause::Server => Failure::Other(error),
        }),
        (Err(None), None) => Err(Error::from(RestoreError::EndedEarly).into()),
        (Ok(()), None) => Ok(()),
    }
}

impl Failure {
    /// A failure after the dump ran (handing the database back from the
    /// restore role): the server rejecting a statement there means the dump
    /// left something it cannot take back (default privileges a function
    /// set, say), so the snapshot is damaged; anything else is the server's.
    pub fn after_restore(error: Error) -> Failure {
        let cause = std::error::Error::source(&error)
            .and_then(|s| s.downcast_ref::<tokio_postgres::Error>())
            .map(cause_of);
        match cause {
            Some(Cause::Statement | Cause::Denied) => Failure::Damaged(error),
            _ => Failure::Other(error),
        }
    }
}

/// `error` about the dump at `path`, named in the message.
fn of_dump(path: &Path, error: Error) -> Error {
    Error {
        message: format!("dump `{}`: {}", path.display(), error.message),
        ..error
    }
}

/// Whether the server still runs statements on `client`'s session.
async fn server_answers(client: &Client) -> bool {
    let probe = client.simple_query("SELECT 1");
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(5), probe).await,
        Ok(Ok(_))
    )
}

/// Create the manifest's `extensions` (and the schemas they live in, owned
/// by `schema_owner`, the role the lanes run as) in `db`, with migsnap's
/// own fixed text on the caller's connection, before any of the dump runs
/// (issue #21). The caller has checked them against `trusted-extensions`.
/// One this server cannot create (not installed, another version) makes
/// the snapshot unusable here: refused, and built locally instead.
async fn create_extensions(
    client: &Client,
    db: &str,
    extensions: Vec<crate::pg::extension::Extension>,
    schema_owner: &str,
) -> std::result::Result<(), Failure> {
    for sql in crate::pg::extension::create_statements(&extensions, schema_owner) {
        if let Err(e) = client.batch_execute(&sql).await {
            let cause = cause_of(&e);
            let error = super::db_error(
                format!("cannot make what the snapshot needs in `{db}` (`{sql}`)"),
                e,
            );
            return Err(match cause {
                Cause::Server | Cause::Lost => Failure::Other(error),
                // Said as a warning (the snapshot is skipped, the build
                // goes on locally), which the error's one line is.
                Cause::Denied | Cause::Statement => Failure::Refused(error),
            });
        }
    }
    Ok(())
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
            Msg::Sql {
                lane,
                text,
                line,
                pin,
            } => (lane, Work::Sql { text, line, pin }),
            Msg::CopyStart {
                lane,
                stmt,
                line,
                pin,
            } => (lane, Work::CopyStart { stmt, line, pin }),
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
    /// The caller's own connection, for migsnap's own fixed statements that
    /// only a superuser may run (`create_extensions`); never for the dump's.
    pub privileged: &'a ConnInfo,
}

impl Runners<'_> {
    fn restricted(&self) -> bool {
        self.lanes.user != self.privileged.user
    }
}

/// A lane's failure, and whose fault it is.
struct LaneError {
    error: Error,
    cause: Cause,
}

/// Whose fault a failed statement of a restore is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// The server refused it for lack of privilege.
    Denied,
    /// The server rejected the statement itself (a missing relation, a
    /// syntax error, a timeout the dump set): the dump is at fault, and is
    /// discarded and rebuilt rather than failing every run (issue #21).
    Statement,
    /// The session ended without the server saying why, or for a session
    /// timeout: the server may be gone, or only this session.
    Lost,
    /// The server cannot go on (shutting down, out of disk or memory,
    /// internal error): not the dump's fault, an error of this run.
    Server,
}

impl From<Error> for LaneError {
    fn from(error: Error) -> Self {
        LaneError {
            error,
            cause: Cause::Server,
        }
    }
}

/// Sort a failed statement's error by its SQLSTATE.
fn cause_of(e: &tokio_postgres::Error) -> Cause {
    match e.code() {
        None => Cause::Lost,
        Some(code) => cause_of_code(code.code()),
    }
}

fn cause_of_code(code: &str) -> Cause {
    match code {
        "42501" => Cause::Denied,
        // Session timeouts end the session (FATAL), but only a dump sets
        // them to something that fires during a restore.
        "25P03" | "25P04" | "57P05" => Cause::Lost,
        // Shutdown, crash, the server not accepting sessions, the build
        // database dropped under the restore, an I/O error.
        "57P01" | "57P02" | "57P03" | "57P04" | "58000" | "58030" | "3D000" => Cause::Server,
        // 08: connection exceptions; 53: out of disk, memory or
        // connections; XX: internal errors and corruption.
        _ if code.starts_with("08") => Cause::Lost,
        _ if code.starts_with("53") || code.starts_with("XX") => Cause::Server,
        // Everything else is about the statement, 57014 included: a
        // `statement_timeout` the dump set fires on every run.
        _ => Cause::Statement,
    }
}

/// A statement's failure, sorted by whose fault it is.
fn lane_error(db: &str, line: u64, e: tokio_postgres::Error) -> LaneError {
    let cause = cause_of(&e);
    let error = match cause {
        Cause::Statement | Cause::Denied => rejected_error(line, e),
        Cause::Lost | Cause::Server => restore_error(db, line, e),
    };
    LaneError { error, cause }
}

/// One connection running its share of the dump, in order.
async fn run_lane(
    client: Client,
    db: String,
    mut rx: mpsc::Receiver<Work>,
) -> std::result::Result<(), LaneError> {
    let mut sink = None;
    let mut copy_line = 0;
    while let Some(work) = rx.recv().await {
        match work {
            // Polled together, the two are sent back to back (tokio-postgres
            // pipelines them): the pin costs no round trip.
            Work::Sql { text, line, pin } => {
                let (pinned, ran) =
                    tokio::join!(client.batch_execute(&pin), client.batch_execute(&text));
                pinned.map_err(|e| lane_error(&db, line, e))?;
                ran.map_err(|e| lane_error(&db, line, e))?;
                failpoint::point("restore.batch");
            }
            Work::CopyStart { stmt, line, pin } => {
                copy_line = line;
                let (pinned, started) = tokio::join!(
                    client.batch_execute(&pin),
                    client.copy_in::<_, Bytes>(stmt.as_str())
                );
                pinned.map_err(|e| lane_error(&db, line, e))?;
                let s = started.map_err(|e| lane_error(&db, line, e))?;
                sink = Some(Box::pin(s));
            }
            Work::CopyData(data) => {
                let s = sink.as_mut().ok_or_else(|| {
                    LaneError::from(Error::from(RestoreError::OutOfOrder("data")))
                })?;
                s.send(data)
                    .await
                    .map_err(|e| lane_error(&db, copy_line, e))?;
                failpoint::point("restore.copy_data");
            }
            Work::CopyEnd => {
                let mut s = sink
                    .take()
                    .ok_or_else(|| LaneError::from(Error::from(RestoreError::OutOfOrder("end"))))?;
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

/// The server rejected a statement of the dump: said as what is wrong with
/// the snapshot, for the warning that discards it.
fn rejected_error(line: u64, e: tokio_postgres::Error) -> Error {
    let said = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string());
    DumpFault::Rejected { line, said }.into()
}

/// What is wrong with a snapshot's dump, as data: said in the warning that
/// discards the snapshot (or skips the store's), then built locally.
#[derive(Debug, thiserror::Error)]
pub enum DumpFault {
    /// Missing, or a link (refused by O_NOFOLLOW).
    #[error("cannot open dump `{}`", .path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("dump `{}` is unreadable", .path.display())]
    Unreadable {
        path: PathBuf,
        source: crate::pg::dump_reader::DumpError,
    },
    #[error("dump `{}` is unreadable: the statement at line {line} is over {max} bytes", .path.display())]
    TooLong {
        path: PathBuf,
        line: u64,
        max: usize,
    },
    /// Its size or its sha256 is not the manifest's.
    #[error("dump `{}` does not match its manifest ({})", .path.display(), mismatch(*.size, *.expected))]
    NotAsRecorded {
        path: PathBuf,
        size: u64,
        expected: u64,
    },
    /// Something pg_dump of one database never writes (`allow`): `why`
    /// says what it is, `excerpt` shows it.
    #[error(
        "refused dump `{}`: line {line} has `{excerpt}` ({why}), which pg_dump of one database never writes",
        .path.display()
    )]
    Planted {
        path: PathBuf,
        line: u64,
        excerpt: String,
        why: String,
    },
    /// The server rejected a statement: `said` is its message.
    #[error("the server rejected a statement near line {line} ({said})")]
    Rejected { line: u64, said: String },
}

fn mismatch(size: u64, expected: u64) -> String {
    if size != expected {
        format!("{size} bytes instead of {expected}")
    } else {
        "checksum differs".to_string()
    }
}

impl crate::error::Typed for DumpFault {
    fn kind(&self) -> crate::error::Kind {
        crate::error::Kind::Usage
    }
}

fn restore_error(db: &str, line: u64, e: tokio_postgres::Error) -> Error {
    super::db_error(
        format!("restoring into `{db}` failed near line {line} of the dump"),
        e,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejected_statement_is_the_dumps_fault_and_a_failing_server_is_not() {
        // A missing relation, a syntax error, a timeout the dump set, a
        // deadlock, a file a statement names: the dump's.
        for code in [
            "42P01", "42601", "57014", "40P01", "54000", "58P01", "22023",
        ] {
            assert_eq!(cause_of_code(code), Cause::Statement, "{code}");
        }
        assert_eq!(cause_of_code("42501"), Cause::Denied);
        // Shutdown, crash, out of disk, memory or connections, corruption.
        for code in [
            "57P01", "57P02", "57P03", "53100", "53200", "53300", "58030", "XX000", "XX001",
        ] {
            assert_eq!(cause_of_code(code), Cause::Server, "{code}");
        }
        // The session ended: the server may be fine (`server_answers`).
        for code in ["08006", "25P03", "57P05"] {
            assert_eq!(cause_of_code(code), Cause::Lost, "{code}");
        }
    }
}
