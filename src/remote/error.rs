//! Why the snapshot store could not be used, in words a user can act on.

use crate::error::{Error, Kind};
use crate::store::ManifestError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("invalid snapshot store URL `{url}`: {why}")]
    BadUrl { url: String, why: String },
    #[error("cannot reach the snapshot store `{url}`: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the snapshot store `{url}` did not answer within {secs} s")]
    Timeout { url: String, secs: f64 },
    /// A download that fell below the minimum rate or overran its deadline.
    #[error(
        "the snapshot store sent `{}` too slowly (less than {} KiB/s; {received} of {size} bytes came)",
        object.display(),
        rate / 1024
    )]
    TooSlow {
        object: PathBuf,
        received: u64,
        size: u64,
        /// Bytes per second.
        rate: u64,
    },
    /// The connection broke in the middle of a download.
    #[error(
        "the snapshot store broke off `{}` after {received} of {size} bytes: {reason}",
        object.display()
    )]
    Interrupted {
        object: PathBuf,
        received: u64,
        size: u64,
        reason: String,
    },
    /// More objects whose names no store path can be than a listing steps
    /// over (`list::MAX_ODD`).
    #[error("the snapshot store `{url}` holds {count} or more objects whose names are not valid object names")]
    OddNames { url: String, count: usize },
    #[error("the snapshot store `{url}` denied access: {reason}")]
    Denied { url: String, reason: String },
    /// A manifest in the store failed its checks (signature, format, key).
    #[error("{why} (in the snapshot store)")]
    Refused {
        short: String,
        #[source]
        why: ManifestError,
    },
    /// An object is not what its manifest says (size, sha256, missing).
    #[error("`{}` is damaged: {why}", object.display())]
    Damaged { object: PathBuf, why: String },
    #[error("the cache dir has no snapshot {short} to push")]
    NotCached { short: String },
    #[error("cannot push snapshot {short}")]
    LocalRefused {
        short: String,
        #[source]
        why: ManifestError,
    },
    #[error("cannot push snapshot {short}: its cached dump {why}")]
    LocalDamaged { short: String, why: String },
    /// The cache dir could not take what was downloaded.
    #[error(transparent)]
    Local(Error),
    /// The object asked for is not there (handled inside this module).
    #[error("no such object")]
    Missing,
    /// A conditional put found the object there (handled inside this module).
    #[error("the object exists")]
    Exists,
}

impl RemoteError {
    /// How to fix it, when migsnap knows.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            RemoteError::BadUrl { .. } => {
                "use s3://BUCKET/PREFIX or file:///ABSOLUTE/DIR as `remote` in [tool.migsnap] (or MIGSNAP_REMOTE)".into()
            }
            RemoteError::Unreachable { .. } => {
                "check the URL, the endpoint (AWS_ENDPOINT_URL) and the region (AWS_REGION), and that the store is up".into()
            }
            RemoteError::Timeout { .. } => {
                "the store may be overloaded or the network slow: raise `remote-timeout` (MIGSNAP_REMOTE_TIMEOUT, seconds) if it is only slow".into()
            }
            RemoteError::TooSlow { .. } => {
                "the store or the network is too slow to beat a local build: lower `remote-min-rate` (MIGSNAP_REMOTE_MIN_RATE, KiB/s) if it is only slow".into()
            }
            RemoteError::Interrupted { .. } => {
                "the store or the network dropped the connection; the next run tries again".into()
            }
            RemoteError::OddNames { .. } => {
                "someone wrote objects to the store's prefix that migsnap cannot list: remove them with the store's own tools (migsnap never does)".into()
            }
            RemoteError::Denied { .. } => {
                "check the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) and that they may read the bucket (and write it, to push)".into()
            }
            RemoteError::Refused { .. } => {
                "snapshots in the store must be signed by a key in `trusted-keys` (MIGSNAP_TRUSTED_KEYS; `migsnap signing-key` prints the pusher's) or with the cache secret: push them from a job that holds one".into()
            }
            RemoteError::Damaged { .. } => {
                "migsnap skips it; delete the snapshot's manifest from the store (`migsnap gc --remote` removes the rest) so that the next push replaces it".into()
            }
            RemoteError::NotCached { .. } => {
                "run `migsnap prepare` first (it builds the snapshot for the current key), or name a cached one with --key".into()
            }
            RemoteError::LocalRefused { .. } | RemoteError::LocalDamaged { .. } => {
                "run `migsnap prepare --rebuild` to build it here (a foreign snapshot is never pushed), then push again".into()
            }
            RemoteError::Local(e) => return e.hint.clone(),
            RemoteError::Missing | RemoteError::Exists => return None,
        })
    }

    /// The store itself failed (down, slow, denying): what `prepare` warns
    /// about once before going on without it.
    pub fn is_store_failure(&self) -> bool {
        matches!(
            self,
            RemoteError::Unreachable { .. }
                | RemoteError::Timeout { .. }
                | RemoteError::TooSlow { .. }
                | RemoteError::OddNames { .. }
                | RemoteError::Interrupted { .. }
                | RemoteError::Denied { .. }
        )
    }
}

impl From<RemoteError> for Error {
    fn from(e: RemoteError) -> Error {
        let kind = match &e {
            RemoteError::BadUrl { .. } | RemoteError::NotCached { .. } => Kind::Usage,
            RemoteError::Local(inner) => inner.kind,
            _ => Kind::Remote,
        };
        if let RemoteError::Local(inner) = e {
            return inner;
        }
        let hint = e.hint();
        let message = e.to_string();
        let mut err = match e {
            // Keep the manifest's own fault as the cause.
            RemoteError::Refused { why, .. } | RemoteError::LocalRefused { why, .. } => {
                Error::new(kind, message).source(why)
            }
            _ => Error::new(kind, message),
        };
        err.hint = hint;
        err
    }
}

/// The last cause in a chain: usually the system's or the server's own
/// words ("Connection refused (os error 111)"), where the outer layers
/// repeat URLs and retry counts.
pub(crate) fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(next) = last.source() {
        last = next;
    }
    let text = last.to_string();
    // A server's error body can be long XML; its first line says enough.
    let line = text.lines().next().unwrap_or("").trim();
    if line.chars().count() > 300 {
        format!("{}…", line.chars().take(300).collect::<String>())
    } else {
        line.to_string()
    }
}
