//! Moving dumps between the cache dir and the store, in bounded pieces: a
//! download streams to a temp file in the cache dir, an upload streams from
//! the cached dump, and both hash what passes, so memory stays flat
//! whatever the dump's size. Also how the S3 client is built.

use super::{Remote, RemoteError};
use crate::key::Key;
use crate::store::{Manifest, Store};
use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::{ClientConfigKey, ClientOptions, ObjectStoreExt, RetryConfig, WriteMultipart};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Size of an uploaded part (S3 wants at least 5 MiB but for the last):
/// at most two parts are in flight and one is being filled, so an upload
/// holds ~24 MiB at most.
const PART: usize = 8 << 20;
const PARTS_IN_FLIGHT: usize = 2;

/// What a dump must be.
pub(super) struct Expected<'a> {
    pub sha256: &'a str,
    pub size: u64,
}

/// An S3 client configured from the standard `AWS_*` variables in `env`
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
/// `AWS_REGION`, `AWS_ENDPOINT_URL`, …; read as object_store's `from_env`
/// reads them), with migsnap's bounds: connecting
/// and each read may take `timeout`; a whole request has no limit of its
/// own, since a large download legitimately takes long (the caller bounds
/// small requests as a whole); two retries at most.
pub(super) fn s3(
    bucket: &str,
    timeout: Duration,
    env: &[(String, String)],
) -> Result<AmazonS3, String> {
    install_tls_provider();
    let mut builder = AmazonS3Builder::new();
    for (name, value) in env {
        if let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
            builder = builder.with_config(key, value);
        }
    }
    let builder = builder.with_bucket_name(bucket);
    // A plain-http endpoint (MinIO, a test server on loopback) is what the
    // user asked for by naming it; what travels is checked by sha256 (and
    // HMAC) either way.
    let http_endpoint = builder
        .get_config_value(&AmazonS3ConfigKey::Endpoint)
        .is_some_and(|e| e.starts_with("http://"));
    let allow_http = http_endpoint
        || builder
            .get_config_value(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp))
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let options = ClientOptions::new()
        .with_allow_http(allow_http)
        .with_connect_timeout(timeout)
        .with_read_timeout(timeout)
        .with_timeout_disabled();
    let retry = RetryConfig {
        max_retries: 2,
        retry_timeout: timeout,
        ..RetryConfig::default()
    };
    builder
        .with_client_options(options)
        .with_retry(retry)
        .build()
        .map_err(|e| super::error::innermost(&e))
}

/// rustls needs one process-wide crypto provider; reqwest is built without
/// one (see Cargo.toml: ring, not aws-lc-rs). Installing twice is harmless.
fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Stream the object `name` into a temp file in `into`'s dir, checking its
/// size as it comes and its sha256 at the end. The temp file (deleted when
/// dropped) is returned only if both match.
pub(super) async fn download(
    remote: &Remote,
    name: &str,
    into: &Store,
    key: &Key,
    expected: Expected<'_>,
) -> Result<tempfile::NamedTempFile, RemoteError> {
    let shown = remote.shown(name);
    let damaged = |why: String| RemoteError::Damaged {
        object: shown.clone(),
        why,
    };
    let started = Instant::now();
    let got = match remote.bounded(remote.objects.get(&remote.path(name))).await {
        Err(RemoteError::Missing) => {
            return Err(damaged(
                "it is missing, though its manifest names it".into(),
            ))
        }
        other => other?,
    };
    // Nothing to download when the store says it is not the manifest's
    // dump (the stream is checked all the same: a store may lie).
    if got.meta.size > expected.size {
        return Err(damaged(format!(
            "it is longer than the {} bytes its manifest says",
            expected.size
        )));
    }
    if got.meta.size < expected.size {
        return Err(damaged(format!(
            "it is {} bytes, its manifest says {}",
            got.meta.size, expected.size
        )));
    }
    let tmp = into.temp_file(key).map_err(RemoteError::Local)?;
    let dir = into.dir().to_path_buf();
    let (tx, mut rx) = mpsc::channel::<Bytes>(4);
    // The disk and the hashing on a thread of their own: the runtime keeps
    // serving the connection (and Ctrl-C).
    let writer = tokio::task::spawn_blocking(move || {
        let mut tmp = tmp;
        let mut hash = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = rx.blocking_recv() {
            hash.update(&chunk);
            size += chunk.len() as u64;
            tmp.write_all(&chunk)?;
        }
        Ok::<_, std::io::Error>((tmp, crate::hash::hex(&hash.finalize()), size))
    });
    let mut stream = got.into_stream();
    let mut pace = Pace::new(remote, expected.size, started);
    let streamed = loop {
        let next = match tokio::time::timeout(pace.wait(), stream.next()).await {
            Err(_) => break Err(pace.late(&shown)),
            Ok(next) => next,
        };
        match next {
            None => break Ok(()),
            Some(Err(e)) => break Err(pace.failed(remote, &shown, e)),
            Some(Ok(chunk)) => {
                pace.received += chunk.len() as u64;
                if pace.received > expected.size {
                    break Err(damaged(format!(
                        "it is longer than the {} bytes its manifest says",
                        expected.size
                    )));
                }
                if let Err(e) = pace.check(&shown) {
                    break Err(e);
                }
                if tx.send(chunk).await.is_err() {
                    // The writer stopped: its error says why.
                    break Ok(());
                }
            }
        }
    };
    drop(tx);
    let written = writer.await.map_err(|source| RemoteError::Task {
        what: "download",
        source,
    })?;
    streamed?;
    let (tmp, sha256, size) =
        written.map_err(|e| RemoteError::Local(crate::store::cache_write_error(&dir, e)))?;
    if size != expected.size {
        return Err(damaged(format!(
            "it is {size} bytes, its manifest says {}",
            expected.size
        )));
    }
    if sha256 != expected.sha256 {
        return Err(damaged(
            "its sha256 is not the one its manifest records".into(),
        ));
    }
    Ok(tmp)
}

/// The bounds of one download (issue #21): each read within the timeout;
/// in every window of one timeout, at least `min_rate` bytes per second;
/// and the whole over by `2 × timeout + size / min_rate` after the request
/// went out (one timeout for the answer, one for the last read). Each read
/// finishing in time is not enough: a store that dribbles a byte a second
/// would otherwise hold `prepare` for as long as it likes.
struct Pace {
    url: String,
    timeout: Duration,
    min_rate: u64,
    size: u64,
    deadline: Instant,
    received: u64,
    /// The current window: when it began, and what had arrived by then.
    window: (Instant, u64),
}

impl Pace {
    fn new(remote: &Remote, size: u64, started: Instant) -> Pace {
        let transfer = Duration::from_secs_f64(size as f64 / remote.min_rate as f64);
        Pace {
            url: remote.url.clone(),
            timeout: remote.timeout,
            min_rate: remote.min_rate,
            size,
            deadline: started + remote.timeout * 2 + transfer,
            received: 0,
            window: (Instant::now(), 0),
        }
    }

    /// How long the next read may take.
    fn wait(&self) -> Duration {
        self.timeout
            .min(self.deadline.saturating_duration_since(Instant::now()))
    }

    /// A read did not come within `wait`.
    fn late(&self, shown: &Path) -> RemoteError {
        if Instant::now() >= self.deadline {
            self.slow(shown)
        } else {
            RemoteError::Timeout {
                url: self.url.clone(),
                secs: self.timeout.as_secs_f64(),
            }
        }
    }

    /// After a chunk: a window that is over must have brought enough.
    fn check(&mut self, shown: &Path) -> Result<(), RemoteError> {
        let now = Instant::now();
        let (began, at) = self.window;
        let took = now.duration_since(began);
        if took < self.timeout {
            return Ok(());
        }
        if ((self.received - at) as f64) < self.min_rate as f64 * took.as_secs_f64() {
            return Err(self.slow(shown));
        }
        self.window = (now, self.received);
        Ok(())
    }

    fn slow(&self, shown: &Path) -> RemoteError {
        RemoteError::TooSlow {
            object: shown.to_path_buf(),
            received: self.received,
            size: self.size,
            rate: self.min_rate,
        }
    }

    /// The body ended or failed before its end: say so, with how far it got.
    fn cut(&self, shown: &Path, reason: String) -> RemoteError {
        RemoteError::Interrupted {
            object: shown.to_path_buf(),
            received: self.received,
            size: self.size,
            reason,
        }
    }

    /// An error from the body stream. The client retries a broken body
    /// itself (resuming where it stopped), so what comes here is its last
    /// word; a closed or reset connection is an interruption, not a
    /// timeout.
    fn failed(&self, remote: &Remote, shown: &Path, e: object_store::Error) -> RemoteError {
        match remote.classify(e) {
            RemoteError::Unreachable { reason, .. } => self.cut(shown, reason),
            other => other,
        }
    }
}

/// Upload the cached dump at `local` as `name`, checking as it is read that
/// it is the dump `m` describes; a dump that is not is never completed in
/// the store.
pub(super) async fn upload(
    remote: &Remote,
    local: &Path,
    name: &str,
    m: &Manifest,
) -> Result<(), RemoteError> {
    let short = m.key.short().to_string();
    let local_damaged = |why: String| RemoteError::LocalDamaged {
        short: short.clone(),
        why,
    };
    let mut file = crate::files::open_no_follow(local)
        .map_err(|e| local_damaged(format!("cannot be read: {e}")))?;
    let (tx, mut rx) = mpsc::channel::<Bytes>(1);
    let reader = tokio::task::spawn_blocking(move || {
        let mut hash = Sha256::new();
        let mut size = 0u64;
        loop {
            let mut buf = Vec::with_capacity(PART);
            let n = (&mut file).take(PART as u64).read_to_end(&mut buf)?;
            if n == 0 {
                break;
            }
            hash.update(&buf);
            size += n as u64;
            if tx.blocking_send(Bytes::from(buf)).is_err() {
                break;
            }
        }
        Ok::<_, std::io::Error>((crate::hash::hex(&hash.finalize()), size))
    });
    let read_back = |r: Result<std::io::Result<(String, u64)>, tokio::task::JoinError>| match r {
        Ok(Ok((sha, size))) if size == m.dump.size && sha == m.dump.sha256 => Ok(()),
        Ok(Ok((_, size))) if size != m.dump.size => Err(local_damaged(format!(
            "is {size} bytes, its manifest says {}",
            m.dump.size
        ))),
        Ok(Ok(_)) => Err(local_damaged("does not match its manifest's sha256".into())),
        Ok(Err(e)) => Err(local_damaged(format!("cannot be read: {e}"))),
        Err(source) => Err(RemoteError::Task {
            what: "upload",
            source,
        }),
    };
    let path = remote.path(name);
    // The slowest upload accepted: a part that does not get through at the
    // minimum rate (plus the timeout) means a stalled store.
    let part_timeout =
        remote.timeout + Duration::from_secs_f64(PART as f64 / remote.min_rate as f64);
    let stalled = || RemoteError::Timeout {
        url: remote.url.clone(),
        secs: part_timeout.as_secs_f64(),
    };
    let first = rx.recv().await.unwrap_or_default();
    if first.len() < PART {
        // The whole dump in one piece: one PUT, once it is known to be right.
        read_back(reader.await)?;
        let payload = object_store::PutPayload::from(first);
        return match tokio::time::timeout(part_timeout, remote.objects.put(&path, payload)).await {
            Err(_) => Err(stalled()),
            Ok(r) => r.map(|_| ()).map_err(|e| remote.classify(e)),
        };
    }
    let upload = remote.bounded(remote.objects.put_multipart(&path)).await?;
    let mut parts = WriteMultipart::new_with_chunk_size(upload, PART);
    parts.put(first);
    let sent = async {
        while let Some(chunk) = rx.recv().await {
            match tokio::time::timeout(part_timeout, parts.wait_for_capacity(PARTS_IN_FLIGHT)).await
            {
                Err(_) => return Err(stalled()),
                Ok(r) => r.map_err(|e| remote.classify(e))?,
            }
            parts.put(chunk);
        }
        Ok(())
    }
    .await;
    let checked = read_back(reader.await);
    if let Err(e) = sent.and(checked) {
        // Nothing of it becomes an object; the store drops the parts.
        let _ = tokio::time::timeout(remote.timeout, parts.abort()).await;
        return Err(e);
    }
    match tokio::time::timeout(part_timeout * PARTS_IN_FLIGHT as u32, parts.finish()).await {
        Err(_) => Err(stalled()),
        Ok(r) => r.map(|_| ()).map_err(|e| remote.classify(e)),
    }
}
