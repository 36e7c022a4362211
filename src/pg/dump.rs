//! pg_dump a database into the cache as `<key>.sql.zst`, atomically.
//!
//! The dump is plain SQL (so `zstdcat X.sql.zst | psql` restores it by hand),
//! without owners or privileges (so it restores under any role). It streams
//! pg_dump's stdout through zstd into a temp file while hashing the
//! compressed bytes for the manifest; memory stays flat whatever the size.
//!
//! Before the dump is kept, it must prove to be of the build database: its
//! `django_migrations` rows, timestamps included, must be exactly the ones
//! read from the build database just before (`Identity`). A dump of any
//! other database (issue #10: an inherited PGSERVICE redirected pg_dump)
//! is thrown away with an error instead of becoming the snapshot.

use super::tools::ToolError;
use super::{db_error, tools, ConnInfo};
use crate::error::{Error, Kind, Result};
use crate::failpoint;
use crate::hash::hex;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::process::{Command, Stdio};

/// zstd level 3: within a few percent of level 9's size on SQL at several
/// times the speed; dumps are written once and read many times either way.
const ZSTD_LEVEL: i32 = 3;

/// What a dump wrote: the sha256 and size of the compressed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dumped {
    pub sha256: String,
    pub size: u64,
}

/// Dump `db`, zstd-compressed, into `out`, and give `out` back once the dump
/// has proved to be of `db` (`expected`). `write_error` turns a failed write
/// into the caller's error (it knows where `out` lives). Blocking: call it
/// from `spawn_blocking`.
/// `pg_dump --schema-only` of `db` as text, less the `\restrict` and
/// `\unrestrict` lines (a random token per run): what two databases built
/// the same way share byte for byte (`verify-build`).
pub fn schema_text(
    programs: &tools::Programs,
    conn: &ConnInfo,
    db: &str,
    server_major: u32,
) -> Result<String> {
    let pg_dump = programs.find("pg_dump", Some(server_major))?;
    let mut cmd = Command::new(&pg_dump);
    let out = super::scrub_pg_env(&mut cmd)
        .args(["--schema-only", "--no-owner", "--no-privileges"])
        .arg(format!("--dbname={}", conn.conninfo(db)))
        .envs(conn.child_env(db))
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ToolError::Run {
            path: pg_dump.clone(),
            source,
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let failed = PgDumpError::Failed {
            database: db.to_string(),
            first: stderr.lines().next().unwrap_or("").to_string(),
            version_mismatch: stderr.contains("server version mismatch"),
        };
        return Err(Error::from(failed).detail(stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_inclusive('\n')
        .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
        .collect())
}

pub fn dump<W: Write>(
    programs: &tools::Programs,
    conn: &ConnInfo,
    db: &str,
    server_major: u32,
    out: W,
    expected: &Identity,
    write_error: impl Fn(std::io::Error) -> Error,
) -> Result<(W, Dumped)> {
    let pg_dump = programs.find("pg_dump", Some(server_major))?;
    let mut cmd = Command::new(&pg_dump);
    // A complete connection on the command line and no inherited PG*: a
    // stale PGSERVICE or PGOPTIONS once dumped another database (issue #10).
    let mut child = super::scrub_pg_env(&mut cmd)
        .args([
            "--format=plain",
            "--no-owner",
            "--no-privileges",
            "--quote-all-identifiers",
        ])
        .arg(format!("--dbname={}", conn.conninfo(db)))
        .envs(conn.child_env(db))
        // Timestamps in the dump then read as `identity` reads them.
        .env("PGTZ", "UTC")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ToolError::Run {
            path: pg_dump.clone(),
            source,
        })?;

    // Drain stderr on its own thread so a chatty pg_dump cannot block on a full pipe.
    let mut stderr = child.stderr.take();
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });

    let mut hashing = HashingWriter {
        inner: out,
        hash: Sha256::new(),
        size: 0,
    };
    let mut tap = MigrationsTap::default();
    let copied = {
        let mut enc = zstd::Encoder::new(&mut hashing, ZSTD_LEVEL).map_err(&write_error)?;
        enc.include_checksum(true).map_err(&write_error)?;
        let mut stdout = child.stdout.take().ok_or(PgDumpError::NoStdout)?;
        copy_chunks(&mut stdout, &mut enc, &mut tap).and_then(|_| enc.finish().map(|_| ()))
    };
    let status = child.wait().map_err(PgDumpError::Wait)?;
    let stderr = err_thread.join().unwrap_or_default();
    // A failed write (full or read-only cache dir) comes first: pg_dump then
    // dies of the closed pipe, and its error would hide the real cause.
    copied.map_err(&write_error)?;
    if !status.success() {
        let first = stderr.lines().next().unwrap_or("").to_string();
        let failed = PgDumpError::Failed {
            database: db.to_string(),
            first,
            version_mismatch: stderr.contains("server version mismatch"),
        };
        return Err(Error::from(failed).detail(stderr));
    }
    let HashingWriter {
        inner: out,
        hash,
        size,
    } = hashing;
    // On a mismatch `out` is dropped: a temp file goes with it, and a
    // foreign dump is never kept.
    expected.check(db, &tap.finish())?;
    Ok((
        out,
        Dumped {
            sha256: hex(&hash.finalize()),
            size,
        },
    ))
}

/// `io::copy` with a crash point after every chunk, so the crash tests can
/// stop the process with the temp file part-written.
fn copy_chunks(
    from: &mut impl Read,
    to: &mut impl Write,
    tap: &mut MigrationsTap,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        tap.feed(&buf[..n]);
        failpoint::point("dump.chunk");
    }
}

struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// One `django_migrations` row as text: id, app, name, applied (in UTC).
type Row = [String; 4];

/// The build database's `django_migrations`, read just before the dump.
/// Its `applied` timestamps (microseconds, set as each migration ran) make
/// it practically unique to this build: a copy of the same project's
/// history elsewhere has other ones.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Identity {
    rows: Vec<Row>,
}

/// Read `db`'s identity. Text forms are the ones pg_dump writes: ISO dates,
/// UTC (pg_dump runs with PGTZ=UTC).
pub async fn identity(conn: &ConnInfo, db: &str) -> Result<Identity> {
    let client = conn.connect(db).await?;
    client
        .batch_execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO'")
        .await
        .map_err(|e| db_error(format!("cannot read django_migrations in `{db}`"), e))?;
    let rows = client
        .query(
            // Ordered by the column: `id` alone would be the text output.
            "SELECT id::text, app, name, applied::text FROM django_migrations m ORDER BY m.id",
            &[],
        )
        .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => vec![],
        Err(e) => {
            return Err(db_error(
                format!("cannot read django_migrations in `{db}`"),
                e,
            ))
        }
    };
    Ok(Identity {
        rows: rows
            .iter()
            .map(|r| [r.get(0), r.get(1), r.get(2), r.get(3)])
            .collect(),
    })
}

impl Identity {
    /// The rows as `app.name`, in the order they were applied.
    pub fn applied(&self) -> Vec<String> {
        self.rows
            .iter()
            .map(|[_, app, name, _]| format!("{app}.{name}"))
            .collect()
    }

    /// Whether one of the dump's `django_migrations` tables holds exactly
    /// our rows.
    fn check(&self, db: &str, found: &[Vec<Row>]) -> Result<()> {
        let matches = if self.rows.is_empty() {
            found.iter().all(|rows| rows.is_empty())
        } else {
            found.contains(&self.rows)
        };
        if matches {
            return Ok(());
        }
        let seen = match found.first() {
            None => "no django_migrations table".to_string(),
            Some(rows) => format!("{} django_migrations row(s) of other origin", rows.len()),
        };
        Err(PgDumpError::OtherDatabase {
            database: db.to_string(),
            seen,
            rows: self.rows.len(),
        }
        .into())
    }
}

/// Why a dump was not saved, as data (the binary says how to fix it).
#[derive(Debug, thiserror::Error)]
pub enum PgDumpError {
    /// `first` is the first line pg_dump wrote to stderr (all of it goes
    /// in the error's detail).
    #[error("pg_dump of `{database}` failed: {first}")]
    Failed {
        database: String,
        first: String,
        /// pg_dump is older than the server.
        version_mismatch: bool,
    },
    /// The dump's `django_migrations` rows are not the build database's:
    /// pg_dump reached another database. `seen` says what it found.
    #[error(
        "the dump is not of the build database `{database}`: it has {seen}, the build database has {rows} row(s); nothing was saved"
    )]
    OtherDatabase {
        database: String,
        seen: String,
        rows: usize,
    },
    /// The child was spawned with a pipe for its stdout and has none.
    #[error("pg_dump has no stdout")]
    NoStdout,
    #[error("pg_dump did not finish")]
    Wait(#[source] std::io::Error),
}

impl crate::error::Typed for PgDumpError {
    fn kind(&self) -> Kind {
        match self {
            PgDumpError::Failed { .. } | PgDumpError::OtherDatabase { .. } => Kind::Server,
            PgDumpError::NoStdout | PgDumpError::Wait(_) => Kind::Internal,
        }
    }
}

/// Longest line kept while looking for COPY headers; longer ones cannot be
/// the `django_migrations` header or one of its rows.
const TAP_LINE_CAP: usize = 64 * 1024;

/// Watches the plain dump go by and keeps the rows of every COPY block into
/// a table named `django_migrations`. Only line starts are looked at in
/// other tables' data, so it costs a scan for newlines.
#[derive(Default)]
struct MigrationsTap {
    line: Vec<u8>,
    too_long: bool,
    state: TapState,
    found: Vec<Vec<Row>>,
}

#[derive(Default)]
enum TapState {
    #[default]
    Outside,
    /// In another table's data: only the `\.` terminator matters.
    OtherCopy,
    /// Positions of id, app, name, applied in the COPY column list.
    Migrations { columns: [usize; 4], rows: Vec<Row> },
}

impl MigrationsTap {
    fn feed(&mut self, mut chunk: &[u8]) {
        while let Some(i) = memchr::memchr(b'\n', chunk) {
            self.push(&chunk[..i]);
            self.end_line();
            chunk = &chunk[i + 1..];
        }
        self.push(chunk);
    }

    fn push(&mut self, bytes: &[u8]) {
        // In other data only the first bytes can be `\.`.
        let cap = match self.state {
            TapState::OtherCopy => 2,
            _ => TAP_LINE_CAP,
        };
        let room = cap.saturating_sub(self.line.len());
        if bytes.len() > room {
            self.too_long = true;
        }
        self.line.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        let too_long = std::mem::replace(&mut self.too_long, false);
        let state = std::mem::take(&mut self.state);
        self.state = match state {
            TapState::Outside if too_long || !line.starts_with(b"COPY ") => TapState::Outside,
            TapState::Outside => match migrations_columns(&String::from_utf8_lossy(&line)) {
                Some(Some(columns)) => TapState::Migrations {
                    columns,
                    rows: vec![],
                },
                Some(None) => TapState::OtherCopy,
                None => TapState::Outside,
            },
            TapState::OtherCopy if line == b"\\." && !too_long => TapState::Outside,
            TapState::OtherCopy => TapState::OtherCopy,
            TapState::Migrations { rows, .. } if line == b"\\." => {
                self.found.push(rows);
                TapState::Outside
            }
            TapState::Migrations { columns, mut rows } => {
                let fields: Vec<String> = String::from_utf8_lossy(&line)
                    .split('\t')
                    .map(unescape_copy)
                    .collect();
                let field = |i: usize| fields.get(i).cloned().unwrap_or_default();
                rows.push(columns.map(field));
                TapState::Migrations { columns, rows }
            }
        };
    }

    /// The `django_migrations` blocks seen, rows in id order.
    fn finish(mut self) -> Vec<Vec<Row>> {
        for rows in &mut self.found {
            rows.sort_by_key(|r| r[0].parse::<i64>().unwrap_or(i64::MAX));
        }
        self.found
    }
}

/// For a `COPY … FROM stdin;` line: Some(Some(columns)) for a
/// `django_migrations` table with the columns we compare, Some(None) for any
/// other table, None for a line that is no COPY header.
fn migrations_columns(line: &str) -> Option<Option<[usize; 4]>> {
    let head = line.strip_prefix("COPY ")?.strip_suffix(" FROM stdin;")?;
    let (table, columns) = head.split_once(" (")?;
    let columns = columns.strip_suffix(')')?;
    let table = table.rsplit('.').next().unwrap_or(table).trim_matches('"');
    if table != "django_migrations" {
        return Some(None);
    }
    let names: Vec<&str> = columns.split(", ").map(|c| c.trim_matches('"')).collect();
    let at = |name: &str| names.iter().position(|n| *n == name);
    Some(Some([at("id")?, at("app")?, at("name")?, at("applied")?]))
}

/// A field of COPY's text format, unescaped.
fn unescape_copy(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('v') => out.push('\u{b}'),
            Some(d @ '0'..='7') => {
                let mut v = d.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match chars.peek().and_then(|c| c.to_digit(8)) {
                        Some(n) => {
                            v = v * 8 + n;
                            chars.next();
                        }
                        None => break,
                    }
                }
                out.push(char::from_u32(v).unwrap_or('\u{fffd}'));
            }
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, app: &str, name: &str, at: &str) -> Row {
        [id.into(), app.into(), name.into(), at.into()]
    }

    #[test]
    fn the_tap_finds_django_migrations_rows_in_any_chunking() {
        let dump = "SET x = 1;\n\
            COPY \"public\".\"other\" (\"id\", \"t\") FROM stdin;\n\
            COPY \"public\".\"django_migrations\" (\"id\", \"app\", \"name\", \"applied\") FROM stdin;\n\
            \\.\n\
            COPY \"public\".\"django_migrations\" (\"app\", \"id\", \"name\", \"applied\") FROM stdin;\n\
            b\\\\x\t2\t0002\t2024-01-01 00:00:01+00\n\
            a\t1\t0001_initial\t2024-01-01 00:00:00.5+00\n\
            \\.\n\
            CREATE INDEX i ON t (c);\n";
        for size in [1, 3, 7, dump.len()] {
            let mut tap = MigrationsTap::default();
            for chunk in dump.as_bytes().chunks(size) {
                tap.feed(chunk);
            }
            // The first "header" is a row of `other` and is skipped.
            assert_eq!(
                tap.finish(),
                vec![vec![
                    row("1", "a", "0001_initial", "2024-01-01 00:00:00.5+00"),
                    row("2", "b\\x", "0002", "2024-01-01 00:00:01+00"),
                ]],
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn a_dump_of_another_database_is_refused() {
        let ours = Identity {
            rows: vec![row("1", "a", "0001", "2024-01-01 00:00:00.1+00")],
        };
        assert!(ours.check("b", std::slice::from_ref(&ours.rows)).is_ok());
        let foreign = vec![row("1", "a", "0001", "2023-05-05 10:00:00.2+00")];
        let err = ours.check("b", &[foreign]).expect_err("other timestamps");
        assert_eq!(err.kind, crate::error::Kind::Server);
        assert!(err.message.contains("not of the build database `b`"));
        assert!(ours.check("b", &[]).is_err(), "no table at all");
        assert!(Identity::default().check("b", &[vec![]]).is_ok());
    }

    #[test]
    fn copy_text_is_unescaped() {
        assert_eq!(unescape_copy(r"a\tb\\c\101\n"), "a\tb\\cA\n");
    }
}
