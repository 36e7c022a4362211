//! Restore a cached `.sql.zst` dump into a database over tokio-postgres,
//! without psql.
//!
//! A blocking thread decompresses and splits the dump (`dump_reader`) and
//! hands batches to the async side through a small bounded channel, so
//! reading overlaps with the server's work and memory stays flat. Plain
//! statements are sent many per round trip (one simple-query message per
//! batch), which is what makes restoring over a slow link fast; COPY data is
//! streamed through copy-in.

use super::dump_reader::{DumpReader, Item};
use super::ConnInfo;
use crate::error::{Error, Kind, Result};
use crate::failpoint;
use bytes::Bytes;
use futures_util::SinkExt;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

/// A batch is sent when it reaches either bound. The statement bound keeps
/// each implicit transaction's lock count well under the default lock table
/// (64 x max_connections), which a 2,000-table schema would otherwise exceed.
const BATCH_BYTES: usize = 512 * 1024;
const BATCH_STATEMENTS: usize = 200;

enum Msg {
    Sql { text: String, line: u64 },
    CopyStart { stmt: String, line: u64 },
    CopyData(Bytes),
    CopyEnd,
}

/// Restore `dump` into the (empty) database `db`.
pub async fn restore(conn: &ConnInfo, db: &str, dump: &Path) -> Result<()> {
    let client = conn.connect(db).await?;
    let (tx, mut rx) = mpsc::channel::<Result<Msg>>(16);
    let path = dump.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || {
        if let Err(e) = read_batches(&path, &tx) {
            let _ = tx.blocking_send(Err(e));
        }
    });

    let mut sink = None;
    let mut copy_line = 0;
    while let Some(msg) = rx.recv().await {
        match msg? {
            Msg::Sql { text, line } => client
                .batch_execute(&text)
                .await
                .map_err(|e| restore_error(db, line, e))
                .map(|()| failpoint::point("restore.batch"))?,
            Msg::CopyStart { stmt, line } => {
                copy_line = line;
                let s = client
                    .copy_in::<_, Bytes>(stmt.as_str())
                    .await
                    .map_err(|e| restore_error(db, line, e))?;
                sink = Some(Box::pin(s));
            }
            Msg::CopyData(data) => {
                let s = sink
                    .as_mut()
                    .ok_or_else(|| Error::internal("COPY data outside a COPY"))?;
                s.send(data)
                    .await
                    .map_err(|e| restore_error(db, copy_line, e))?;
                failpoint::point("restore.copy_data");
            }
            Msg::CopyEnd => {
                let mut s = sink
                    .take()
                    .ok_or_else(|| Error::internal("COPY end outside a COPY"))?;
                s.as_mut()
                    .finish()
                    .await
                    .map_err(|e| restore_error(db, copy_line, e))?;
                failpoint::point("restore.copy");
            }
        }
    }
    reader
        .await
        .map_err(|e| Error::internal("the dump reader thread failed").source(e))?;
    Ok(())
}

fn restore_error(db: &str, line: u64, e: tokio_postgres::Error) -> Error {
    super::db_error(
        format!("restoring into `{db}` failed near line {line} of the dump"),
        e,
    )
}

/// Blocking side: decompress, split, batch, send.
fn read_batches(path: &PathBuf, tx: &mpsc::Sender<Result<Msg>>) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| {
        Error::new(
            Kind::Usage,
            format!("cannot open dump `{}`", path.display()),
        )
        .source(e)
    })?;
    let decoder = zstd::Decoder::new(file).map_err(|e| {
        Error::internal(format!("cannot decompress `{}`", path.display())).source(e)
    })?;
    let mut reader = DumpReader::new(BufReader::with_capacity(1 << 20, decoder));
    let mut batch = String::new();
    let mut count = 0;
    let mut batch_line = 1;
    // A COPY is held back until its first row: pg_dump writes a COPY block
    // for every table, and in a migrated schema most are empty. Sending
    // those would cost three round trips each (prepare, copy-in, finish) for
    // nothing, which over a slow link is most of the restore. Skipping them
    // is safe because triggers and rules are created after the data.
    let mut pending_copy: Option<(String, u64)> = None;
    // Returns false when the receiver is gone (the async side failed).
    let send = |m: Msg| tx.blocking_send(Ok(m)).is_ok();
    let bad = |path: &PathBuf, e: super::dump_reader::DumpError| {
        Error::new(
            Kind::Usage,
            format!("dump `{}` is unreadable", path.display()),
        )
        .source(e)
    };

    loop {
        let item = reader.next_item().map_err(|e| bad(path, e))?;
        let line = reader.item_line();
        let flush = matches!(item, None | Some(Item::CopyStart(_)))
            || batch.len() >= BATCH_BYTES
            || count >= BATCH_STATEMENTS;
        if flush && !batch.is_empty() {
            if !send(Msg::Sql {
                text: std::mem::take(&mut batch),
                line: batch_line,
            }) {
                return Ok(());
            }
            count = 0;
        }
        let Some(item) = item else { return Ok(()) };
        let sent = match item {
            Item::Statement(s) => {
                if batch.is_empty() {
                    batch_line = line;
                }
                batch.push_str(&s);
                batch.push('\n');
                count += 1;
                true
            }
            Item::CopyStart(stmt) => {
                pending_copy = Some((stmt, line));
                true
            }
            Item::CopyData(d) => {
                let started = match pending_copy.take() {
                    Some((stmt, line)) => send(Msg::CopyStart { stmt, line }),
                    None => true,
                };
                started && send(Msg::CopyData(Bytes::from(d)))
            }
            // An empty COPY block: nothing was sent for it.
            Item::CopyEnd if pending_copy.take().is_some() => true,
            Item::CopyEnd => send(Msg::CopyEnd),
            Item::MetaCommand(cmd) => {
                // pg_dump >= 15.14 brackets the script with \restrict/\unrestrict
                // (a psql-only guard); \connect only appears with --create, and
                // we always restore into the database we chose.
                let name = cmd.split_whitespace().next().unwrap_or("");
                if !matches!(name, "restrict" | "unrestrict" | "connect" | "c") {
                    return Err(Error::usage(format!(
                        "dump `{}` uses the psql meta-command `\\{name}` (line {line}), which migsnap cannot run",
                        path.display()
                    ))
                    .hint("restore it with psql, or re-create the snapshot with `migsnap prepare --rebuild`"));
                }
                true
            }
        };
        if !sent {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the reader thread sends for `sql`, as short strings.
    fn messages(sql: &str) -> Vec<String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("dump.sql.zst");
        let compressed = zstd::encode_all(sql.as_bytes(), 3).expect("compress");
        std::fs::write(&path, compressed).expect("write dump");
        let (tx, mut rx) = mpsc::channel(1024);
        read_batches(&path, &tx).expect("read");
        drop(tx);
        let mut out = vec![];
        while let Ok(msg) = rx.try_recv() {
            out.push(match msg.expect("message") {
                Msg::Sql { text, .. } => format!("sql {}", text.trim_end()),
                Msg::CopyStart { stmt, .. } => format!("copy {stmt}"),
                Msg::CopyData(d) => format!("data {}", String::from_utf8_lossy(&d).trim_end()),
                Msg::CopyEnd => "end".to_string(),
            });
        }
        out
    }

    #[test]
    fn empty_copy_blocks_are_not_sent() {
        let sql = "CREATE TABLE a (x int);\nCREATE TABLE b (x int);\n\
                   COPY public.a (x) FROM stdin;\n\\.\n\
                   COPY public.b (x) FROM stdin;\n1\n2\n\\.\n\
                   COPY public.c (x) FROM stdin;\n\\.\n\
                   CREATE INDEX i ON b (x);\n";
        assert_eq!(
            messages(sql),
            [
                "sql CREATE TABLE a (x int);\nCREATE TABLE b (x int);",
                "copy COPY public.b (x) FROM stdin;",
                "data 1\n2",
                "end",
                "sql CREATE INDEX i ON b (x);",
            ]
        );
    }
}
