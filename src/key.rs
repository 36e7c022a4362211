//! The snapshot key: 64 lowercase hex digits (a sha256), checked once where
//! it enters migsnap (computed from files, read from a manifest, a template
//! comment or a cache file name, typed by the user), then carried as a
//! `Key` so nothing downstream re-checks it or falls back on a default.
//!
//! Its first 16 hex are the suffix of the databases made for it (`names`)
//! and the advisory lock id a live build holds (`LockId`).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Hex digits in a full key.
pub const KEY_LEN: usize = 64;
/// Hex digits in its short form (database names, lock ids).
pub const SHORT_LEN: usize = 16;

/// A valid key: 64 lowercase hex digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Key(String);

/// Why a string is not a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a migsnap key (64 lowercase hex digits)")]
pub struct BadKey {
    pub text: String,
}

impl Key {
    pub fn parse(text: &str) -> Result<Key, BadKey> {
        if text.len() == KEY_LEN && is_lower_hex(text) {
            Ok(Key(text.to_string()))
        } else {
            Err(BadKey {
                text: text.chars().take(80).collect(),
            })
        }
    }

    /// The key of a finished sha256.
    pub fn from_digest(digest: &[u8; 32]) -> Key {
        Key(crate::hash::hex(digest))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 16 hex: the suffix of this key's databases.
    pub fn short(&self) -> &str {
        &self.0[..SHORT_LEN]
    }

    pub fn lock_id(&self) -> LockId {
        LockId::from_hex16(self.short())
    }

    /// Another advisory lock id of this key's, for a purpose named by
    /// `tag` (the pool's refiller, the processes waiting for its template):
    /// the first 64 bits of a hash of both, so it shares nothing with the
    /// build lock or with another tag's.
    pub fn tagged_lock_id(&self, tag: &str) -> LockId {
        let hash = crate::hash::hash_normalized(format!("{tag} {self}").as_bytes());
        LockId::from_hex16(&hash[..SHORT_LEN])
    }
}

/// Whether `text` is 16 lowercase-or-uppercase hex digits, the short form
/// found in database and role names.
pub fn is_hex16(text: &str) -> bool {
    text.len() == SHORT_LEN && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The PostgreSQL advisory lock id for one key's builds: its first 64 bits.
/// Built only from a `Key` or a name shape already checked to carry 16 hex,
/// so there is no fallback id two unrelated keys could share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockId(pub i64);

impl LockId {
    /// From 16 hex digits; callers hold them checked (`Key::short`,
    /// `names::DbName::hex`), so a bad digit is a bug, reported as such.
    pub(crate) fn from_hex16(hex: &str) -> LockId {
        debug_assert!(is_hex16(hex), "lock id from `{hex}`");
        let value = hex
            .bytes()
            .fold(0u64, |acc, b| (acc << 4) | u64::from(hex_value(b)));
        LockId(value as i64)
    }
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

impl TryFrom<String> for Key {
    type Error = BadKey;
    fn try_from(text: String) -> Result<Key, BadKey> {
        Key::parse(&text)
    }
}

impl From<Key> for String {
    fn from(key: Key) -> String {
        key.0
    }
}

impl std::str::FromStr for Key {
    type Err = BadKey;
    fn from_str(text: &str) -> Result<Key, BadKey> {
        Key::parse(text)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.short())
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Key {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn only_64_lowercase_hex_is_a_key() {
        let good = "0123456789abcdef".repeat(4);
        let key = Key::parse(&good).expect("valid");
        assert_eq!(key.short(), "0123456789abcdef");
        assert_eq!(key.lock_id(), LockId(0x0123_4567_89ab_cdef));
        for bad in [
            "",
            "0123",
            &good[..63],
            &format!("{good}0"),
            &good.to_uppercase(),
            &format!("../{}", &good[3..]),
            &format!("{}g", &good[..63]),
        ] {
            assert!(Key::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_manifest_with_a_bad_key_does_not_deserialize() {
        let bad: Result<Key, _> = serde_json::from_str("\"../../etc/passwd\"");
        assert!(bad.is_err());
        let good = format!("\"{}\"", "ab".repeat(32));
        let key: Key = serde_json::from_str(&good).expect("valid");
        assert_eq!(serde_json::to_string(&key).expect("serialize"), good);
    }

    proptest! {
        #[test]
        fn lock_id_is_the_first_64_bits(bytes in proptest::array::uniform32(any::<u8>())) {
            let key = Key::from_digest(&bytes);
            let mut first = [0u8; 8];
            first.copy_from_slice(&bytes[..8]);
            prop_assert_eq!(key.lock_id().0, i64::from_be_bytes(first));
        }
    }
}
