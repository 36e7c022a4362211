//! Why the snapshot store could not be used, as data: the URL, the object,
//! the server's own words. The binary says how to fix each
//! (`commands::hints`), since its advice names settings and variables.

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
    /// `push`, `pull` and the `--remote` commands need one.
    #[error("no snapshot store is configured")]
    NotConfigured,
    /// `pull` of a key the store does not hold.
    #[error("the snapshot store `{url}` has no snapshot {short}")]
    NoSnapshot { url: String, short: String },
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
    /// A task of the transfer panicked or was cancelled: `what` says which
    /// (`listing`, `download`, `upload`).
    #[error("the {what} failed")]
    Task {
        what: &'static str,
        source: tokio::task::JoinError,
    },
    /// The object asked for is not there (handled inside this module).
    #[error("no such object")]
    Missing,
    /// A conditional put found the object there (handled inside this module).
    #[error("the object exists")]
    Exists,
}

impl RemoteError {
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

impl RemoteError {
    /// The kind of failure, which decides the exit code: the store's own
    /// failures are `Remote`, a bad request is `Usage`.
    pub fn kind(&self) -> Kind {
        match self {
            RemoteError::BadUrl { .. }
            | RemoteError::NotCached { .. }
            | RemoteError::NotConfigured
            | RemoteError::NoSnapshot { .. } => Kind::Usage,
            RemoteError::Local(inner) => inner.kind,
            RemoteError::Task { .. } => Kind::Internal,
            _ => Kind::Remote,
        }
    }
}

impl From<RemoteError> for Error {
    fn from(e: RemoteError) -> Error {
        if let RemoteError::Local(inner) = e {
            return inner;
        }
        // Kept as the first cause (the binary finds it for the hint); the
        // manifest's own fault, where there is one, is its source.
        Error::typed(e.kind(), e)
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
