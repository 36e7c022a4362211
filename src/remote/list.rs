//! Listing the store's prefix so that no name in it can fail the listing
//! (issue #21). object_store turns a listing into paths, and one name that
//! no path can be (`p/../evil.json`, a control character) fails the whole
//! page: `ls --remote` and `gc --remote` then exited 6 as if the store were
//! down, and `prepare` went on without the store's ancestors. Here such a
//! name is set aside, named, and the rest is listed.
//!
//! - S3: pages of `ListObjectsV2` (string prefix, `/` delimiter, resumed
//!   with `start-after`, which every S3-compatible store honours). A page
//!   that fails on a name is asked again with fewer keys (a binary search
//!   on `max-keys`) until the names before the bad one are had; the bad one
//!   is then named by the error and stepped over.
//! - A `file://` store: the directory read directly, one entry at a time,
//!   without following symbolic links.

use super::{Remote, RemoteError};
use object_store::aws::AmazonS3;
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use std::path::PathBuf;
use std::sync::Arc;

/// How a store's prefix is listed.
#[derive(Clone)]
pub(super) enum Lister {
    S3(Arc<AmazonS3>),
    Dir(PathBuf),
}

/// One object directly under the prefix.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// Its name under the prefix.
    pub name: String,
    pub size: u64,
    pub modified_unix: u64,
}

/// What a listing found: objects whose names a store path can be, and
/// those it cannot (or that are not plain objects: a symbolic link in a
/// `file://` store), shown with anything unprintable escaped.
#[derive(Debug, Default)]
pub(super) struct Names {
    pub entries: Vec<Entry>,
    pub odd: Vec<String>,
}

/// Keys in one page of an S3 listing (S3's own default and maximum).
const PAGE: usize = 1000;
/// Names no path can be, at most, stepped over in one listing: each costs
/// about ten small requests, and a store full of them is not a store to
/// list.
pub(super) const MAX_ODD: usize = 64;

impl Remote {
    /// Every object directly under the prefix, and the names set aside.
    pub(super) async fn names(&self) -> Result<Names, RemoteError> {
        match &self.lister {
            Lister::S3(s3) => self.s3_names(s3).await,
            Lister::Dir(dir) => {
                let dir = dir.clone();
                let listed = tokio::task::spawn_blocking(move || dir_names(&dir));
                match tokio::time::timeout(self.timeout, listed).await {
                    Ok(Ok(Ok(names))) => Ok(names),
                    Ok(Ok(Err(e))) => Err(RemoteError::Unreachable {
                        url: self.url.clone(),
                        reason: e.to_string(),
                    }),
                    Ok(Err(source)) => Err(RemoteError::Task {
                        what: "listing",
                        source,
                    }),
                    Err(_) => Err(RemoteError::Timeout {
                        url: self.url.clone(),
                        secs: self.timeout.as_secs_f64(),
                    }),
                }
            }
        }
    }

    async fn s3_names(&self, s3: &Arc<AmazonS3>) -> Result<Names, RemoteError> {
        let base = match self.prefix.as_ref() {
            "" => String::new(),
            p => format!("{p}/"),
        };
        let mut names = Names::default();
        let mut after: Option<String> = None;
        loop {
            let (result, more, bad) = match self.page(s3, &base, &after, PAGE).await? {
                Ok(page) => (Some(page.result), page.page_token.is_some(), None),
                Err(bad) => {
                    // Fewer keys until the page stops short of the bad one.
                    let (mut ok, mut fails) = (None, (PAGE, bad));
                    let mut lo = 0;
                    while fails.0 - lo > 1 {
                        let mid = lo + (fails.0 - lo) / 2;
                        match self.page(s3, &base, &after, mid).await? {
                            Ok(page) => (lo, ok) = (mid, Some(page.result)),
                            Err(bad) => fails = (mid, bad),
                        }
                    }
                    // The first failing page holds one entry more than the
                    // last good one: the bad one, which its error names.
                    let bad = fails.1;
                    (ok, true, Some(bad))
                }
            };
            let mut last = after.clone();
            let mut latest = |name: String| {
                if last.as_ref().is_none_or(|l| *l < name) {
                    last = Some(name);
                }
            };
            let (prefixes, objects) =
                result.map_or((vec![], vec![]), |r| (r.common_prefixes, r.objects));
            for prefix in &prefixes {
                // Skip everything under it: `x/` becomes `x0` ('0' follows '/').
                latest(format!("{prefix}0"));
            }
            for meta in objects {
                let key = meta.location.as_ref().to_string();
                latest(key.clone());
                let name = key.strip_prefix(&base).unwrap_or(&key).to_string();
                names.entries.push(Entry {
                    name,
                    size: meta.size,
                    modified_unix: u64::try_from(meta.last_modified.timestamp()).unwrap_or(0),
                });
            }
            if let Some(bad) = bad {
                let skip = match bad.strip_suffix('/') {
                    Some(p) => format!("{p}0"),
                    None => bad.clone(),
                };
                latest(skip);
                names
                    .odd
                    .push(shown(bad.strip_prefix(&base).unwrap_or(&bad)));
                if names.odd.len() > MAX_ODD {
                    return Err(RemoteError::OddNames {
                        url: self.url.clone(),
                        count: names.odd.len(),
                    });
                }
            }
            if !more || last == after {
                return Ok(names);
            }
            after = last;
        }
    }

    /// One page: Ok(Err(name)) when a name in it is no path.
    async fn page(
        &self,
        s3: &AmazonS3,
        base: &str,
        after: &Option<String>,
        max: usize,
    ) -> Result<Result<object_store::list::PaginatedListResult, String>, RemoteError> {
        let opts = PaginatedListOptions {
            offset: after.clone(),
            delimiter: Some("/".into()),
            max_keys: Some(max),
            ..Default::default()
        };
        let prefix = (!base.is_empty()).then_some(base);
        let asked = tokio::time::timeout(self.timeout, s3.list_paginated(prefix, opts)).await;
        match asked {
            Err(_) => Err(RemoteError::Timeout {
                url: self.url.clone(),
                secs: self.timeout.as_secs_f64(),
            }),
            Ok(Ok(page)) => Ok(Ok(page)),
            Ok(Err(object_store::Error::InvalidPath { source })) => Ok(Err(bad_name(source))),
            Ok(Err(e)) => Err(self.classify(e)),
        }
    }
}

/// The name a path error is about, as the store sent it.
fn bad_name(e: object_store::path::Error) -> String {
    use object_store::path::Error as E;
    match e {
        E::EmptySegment { path } | E::BadSegment { path, .. } | E::NonUnicode { path, .. } => path,
        other => other.to_string(),
    }
}

/// A name for a message: anything unprintable escaped, so that a name
/// cannot write to the terminal.
pub(super) fn shown(name: &str) -> String {
    name.chars().flat_map(char::escape_debug).collect()
}

/// A `file://` store's directory, entry by entry. Subdirectories are other
/// prefixes, as in S3, and are left out; symbolic links and other special
/// files are never followed, only named; object_store's own temp files
/// (`name#123`, a put in flight) are left out.
fn dir_names(dir: &std::path::Path) -> std::io::Result<Names> {
    let mut names = Names::default();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let raw = entry.file_name();
        let Some(name) = raw.to_str() else {
            names.odd.push(shown(&raw.to_string_lossy()));
            continue;
        };
        let representable = object_store::path::PathPart::parse(name).is_ok();
        if kind.is_dir() && representable {
            continue;
        }
        let in_flight = name
            .rsplit_once('#')
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if in_flight && kind.is_file() {
            continue;
        }
        if !kind.is_file() || !representable {
            names.odd.push(shown(name));
            continue;
        }
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let modified_unix = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        names.entries.push(Entry {
            name: name.to_string(),
            size: meta.len(),
            modified_unix,
        });
    }
    Ok(names)
}
