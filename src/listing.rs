//! What `ls` lists and `gc` keeps, decided from the cache dir's (or the
//! store's) manifests alone: no server, no settings, so each decision is
//! unit-tested on made-up manifests.

use crate::key::Key;
use crate::store::{Manifest, Store};
use std::collections::BTreeSet;

/// A snapshot `prepare` would refuse, and why (one line).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Refused {
    pub key: Key,
    pub reason: String,
}

/// Split snapshots (newest first) into kept and removed: the `keep` newest,
/// trimmed from the oldest end until their total fits `max_size`, plus the
/// current keys' (one per alias) whatever their age and size.
pub fn select(
    all: Vec<Manifest>,
    current: &BTreeSet<Key>,
    keep: usize,
    max_size: Option<u64>,
) -> (Vec<Manifest>, Vec<Manifest>) {
    let mut total: u64 = all
        .iter()
        .filter(|m| current.contains(&m.key))
        .map(|m| m.dump.size)
        .sum();
    let (mut kept, mut removed) = (Vec::new(), Vec::new());
    for (i, m) in all.into_iter().enumerate() {
        if current.contains(&m.key) {
            kept.push(m);
            continue;
        }
        let fits = max_size.is_none_or(|max| total + m.dump.size <= max);
        // Once one goes, every older one goes too: the limits trim the
        // oldest end, they do not pick an arbitrary subset that fits.
        if i < keep && fits && removed.is_empty() {
            total += m.dump.size;
            kept.push(m);
        } else {
            removed.push(m);
        }
    }
    (kept, removed)
}

/// `current` with the `prepare --at` snapshots of each current key among
/// `all`: made from the same files, they are as current as the fully
/// migrated one (a migration test suite asks for them run after run), so
/// `gc` keeps them and `ls` marks them; they go once the files change.
pub fn with_at_snapshots(current: &BTreeSet<Key>, all: &[Manifest]) -> BTreeSet<Key> {
    let mut out = current.clone();
    for m in all.iter().filter(|m| !m.at.is_empty()) {
        if current
            .iter()
            .any(|full| crate::fingerprint::at_key(full, &m.at) == m.key)
        {
            out.insert(m.key.clone());
        }
    }
    out
}

/// `listed` (read without refusing any) split into what `strict` (the
/// trust `prepare` uses) accepts and what it refuses, with why.
pub fn refused_apart(listed: Vec<Manifest>, strict: &Store) -> (Vec<Manifest>, Vec<Refused>) {
    let mut kept = Vec::new();
    let mut refused = Vec::new();
    for m in listed {
        // Authenticated, or accepted as foreign under `trust-unsigned`.
        if m.authenticated || strict.trust().trust_unsigned {
            kept.push(m);
            continue;
        }
        match strict.load(&m.key) {
            Ok(Some(_)) => kept.push(m),
            Ok(None) => {}
            Err(e) => refused.push(Refused {
                key: m.key,
                reason: crate::error::one_line(&e),
            }),
        }
    }
    (kept, refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_at_snapshot_is_current_with_its_full_key() {
        let full = Key::from_digest(&[1; 32]);
        let old = Key::from_digest(&[2; 32]);
        let at = vec!["catalog.0002".to_string()];
        let of = |key: Key, at: &[String]| Manifest {
            key,
            at: at.to_vec(),
            ..snap("a", 1, 1)
        };
        let all = [
            of(full.clone(), &[]),
            of(crate::fingerprint::at_key(&full, &at), &at),
            of(crate::fingerprint::at_key(&old, &at), &at),
            // Claims targets its key does not cover: not current.
            of(Key::from_digest(&[3; 32]), &at),
        ];
        let current = with_at_snapshots(&BTreeSet::from([full.clone()]), &all);
        assert_eq!(
            current,
            BTreeSet::from([full.clone(), crate::fingerprint::at_key(&full, &at)])
        );
    }
    use crate::store::{BuildInfo, DumpInfo, MANIFEST_FORMAT};

    fn snap(key: &str, created: u64, size: u64) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            key: Key::parse(&key.repeat(64)).expect("test key"),
            created_unix: created,
            migsnap_version: String::new(),
            server_version_num: 150000,
            dump: DumpInfo {
                file: String::new(),
                sha256: String::new(),
                size,
            },
            migrations: Default::default(),
            key_inputs: Default::default(),
            salt_sha256: String::new(),
            applied: vec![],
            build: BuildInfo {
                source: crate::store::BuiltBy::Cold,
                base_key: None,
                seconds: 0.0,
                migrations: vec![],
                accelerated: false,
                verified: false,
                stock_migrations: vec![],
            },
            depends: Default::default(),
            extensions: vec![],
            project_dir: None,
            alias: "default".into(),
            at: vec![],
            authenticated: true,
        }
    }

    /// The current keys made of repeated hex letters.
    fn k(letters: &str) -> BTreeSet<Key> {
        letters
            .chars()
            .map(|c| Key::parse(&c.to_string().repeat(64)).expect("test key"))
            .collect()
    }

    fn keys(v: &[Manifest]) -> Vec<&str> {
        v.iter().map(|m| &m.key.as_str()[..1]).collect()
    }

    #[test]
    fn keeps_the_newest_and_always_the_current() {
        // Newest first, as Store::manifests returns them.
        let all = || {
            vec![
                snap("d", 4, 10),
                snap("c", 3, 10),
                snap("b", 2, 10),
                snap("a", 1, 10),
            ]
        };
        let (kept, removed) = select(all(), &k("a"), 2, None);
        assert_eq!(keys(&kept), ["d", "c", "a"]);
        assert_eq!(keys(&removed), ["b"]);
        let (kept, removed) = select(all(), &k("d"), 0, None);
        assert_eq!(keys(&kept), ["d"]);
        assert_eq!(keys(&removed), ["c", "b", "a"]);
        // 25 bytes: current (10) + one more; the oldest go first.
        let (kept, removed) = select(all(), &k("a"), 10, Some(25));
        assert_eq!(keys(&kept), ["d", "a"]);
        assert_eq!(keys(&removed), ["c", "b"]);
        // The current one stays even when it alone is over the limit.
        let (kept, _) = select(all(), &k("b"), 10, Some(1));
        assert_eq!(keys(&kept), ["b"]);
        // Every alias's current key stays (each alias is its own snapshot).
        let (kept, removed) = select(all(), &k("ab"), 0, None);
        assert_eq!(keys(&kept), ["b", "a"]);
        assert_eq!(keys(&removed), ["d", "c"]);
    }
}
