//! pg_dump a database into the cache as `<key>.sql.zst`, atomically.
//!
//! The dump is plain SQL (so `zstdcat X.sql.zst | psql` restores it by hand),
//! without owners or privileges (so it restores under any role). It streams
//! pg_dump's stdout through zstd into a temp file while hashing the
//! compressed bytes for the manifest; memory stays flat whatever the size.

use super::{tools, ConnInfo};
use crate::error::{Context, Error, Kind, Result};
use crate::failpoint;
use crate::fingerprint::hex;
use crate::store::{cache_write_error, DumpInfo, Store};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::process::{Command, Stdio};

/// zstd level 3: within a few percent of level 9's size on SQL at several
/// times the speed; dumps are written once and read many times either way.
const ZSTD_LEVEL: i32 = 3;

/// Dump `db` and move it into place as `<key>.sql.zst`. Blocking: call it
/// from `spawn_blocking`.
pub fn dump_to_store(
    conn: &ConnInfo,
    db: &str,
    server_major: u32,
    store: &Store,
    key: &str,
) -> Result<DumpInfo> {
    let pg_dump = tools::find("pg_dump", Some(server_major))?;
    let mut child = Command::new(&pg_dump)
        .args([
            "--format=plain",
            "--no-owner",
            "--no-privileges",
            "--quote-all-identifiers",
        ])
        .envs(conn.libpq_env(db))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_kind(Kind::Usage, || {
            format!("cannot run `{}`", pg_dump.display())
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

    let tmp = store.temp_file(key)?;
    let mut hashing = HashingWriter {
        inner: tmp,
        hash: Sha256::new(),
        size: 0,
    };
    let copied = {
        let mut enc = zstd::Encoder::new(&mut hashing, ZSTD_LEVEL)
            .map_err(|e| cache_write_error(store.dir(), e))?;
        enc.include_checksum(true)
            .map_err(|e| cache_write_error(store.dir(), e))?;
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::internal("pg_dump has no stdout"))?;
        copy_chunks(&mut stdout, &mut enc).and_then(|_| enc.finish().map(|_| ()))
    };
    let status = child
        .wait()
        .with_kind(Kind::Internal, || "pg_dump did not finish".into())?;
    let stderr = err_thread.join().unwrap_or_default();
    // A failed write (full or read-only cache dir) comes first: pg_dump then
    // dies of the closed pipe, and its error would hide the real cause.
    copied.map_err(|e| cache_write_error(store.dir(), e))?;
    if !status.success() {
        let first = stderr.lines().next().unwrap_or("").to_string();
        let mut err =
            Error::server(format!("pg_dump of `{db}` failed: {first}")).detail(stderr.clone());
        if stderr.contains("server version mismatch") {
            err = err.hint(
                "install pg_dump of the server's major version or newer, or set MIGSNAP_PG_BINDIR",
            );
        }
        return Err(err);
    }
    let HashingWriter {
        inner: tmp,
        hash,
        size,
    } = hashing;
    failpoint::point("dump.written");
    store.persist(tmp, &store.dump_path(key))?;
    failpoint::point("dump.renamed");
    Ok(DumpInfo {
        file: format!("{key}.sql.zst"),
        sha256: hex(&hash.finalize()),
        size,
    })
}

/// `io::copy` with a crash point after every chunk, so the crash tests can
/// stop the process with the temp file part-written.
fn copy_chunks(from: &mut impl Read, to: &mut impl Write) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
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
