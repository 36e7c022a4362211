//! The hashing every layer shares: sha256 of normalised text and lowercase
//! hex. A leaf module, so that the key, the store,
//! the server code and the names can all use it without depending on each
//! other.

use sha2::{Digest, Sha256};

/// sha256 of the content with CRLF folded to LF, so a Windows checkout with
/// autocrlf shares snapshots with Linux CI.
pub fn hash_normalized(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    let mut rest = bytes;
    while let Some(pos) = find_crlf(rest) {
        h.update(&rest[..pos]);
        rest = &rest[pos + 1..]; // drop the \r, keep the \n
    }
    h.update(rest);
    hex(&h.finalize())
}

/// sha256 of the bytes as they are, in hex.
pub fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// SIMD search: hashing 10,000 migration files for `key` is CPU-bound, and
/// a byte-by-byte scan for CRLF cost about as much as sha256 itself.
fn find_crlf(b: &[u8]) -> Option<usize> {
    memchr::memmem::find(b, b"\r\n")
}

/// Lowercase hex; a table lookup, since `write!` per byte showed up in profiles of `key`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    hex_into(&mut s, bytes);
    s
}

/// `hex`, appended to `out` (no string of its own), a chunk at a time:
/// pushing char by char was most of the time a warm run spent on the
/// 5,000 hashes of its walk's record.
pub fn hex_into(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 64];
    for chunk in bytes.chunks(32) {
        for (pair, &b) in buf.chunks_exact_mut(2).zip(chunk) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 0xf)];
        }
        let digits = &buf[..chunk.len() * 2];
        out.push_str(std::str::from_utf8(digits).unwrap_or_default());
    }
}

/// 64 hex digits (either case) back into the 32 bytes of a sha256.
pub fn unhex32(text: &str) -> Option<[u8; 32]> {
    let digits = text.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let value = |b: u8| char::from(b).to_digit(16).map(|v| v as u8);
    let mut out = [0u8; 32];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = value(pair[0])? << 4 | value(pair[1])?;
    }
    Some(out)
}

/// `bytes` random bytes from the kernel, in hex (passwords migsnap makes).
pub fn random_hex(bytes: usize) -> crate::error::Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(NoRandomness)?;
    Ok(hex(&buf))
}

/// The kernel's random bytes could not be read: a broken system.
#[derive(Debug, thiserror::Error)]
#[error("cannot read /dev/urandom")]
pub struct NoRandomness(#[source] std::io::Error);

impl crate::error::Typed for NoRandomness {
    fn kind(&self) -> crate::error::Kind {
        crate::error::Kind::Internal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_and_lf_hash_the_same_but_lone_cr_differs() {
        assert_eq!(hash_normalized(b"a\r\nb\r\n"), hash_normalized(b"a\nb\n"));
        assert_ne!(hash_normalized(b"a\rb"), hash_normalized(b"ab"));
        assert_ne!(hash_normalized(b"a\nb"), hash_normalized(b"a\n b"));
    }

    #[test]
    fn hex_is_lowercase_and_zero_padded() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
        assert_eq!(hex(&[]), "");
        let sha = [0xa5u8; 32];
        assert_eq!(unhex32(&hex(&sha)), Some(sha));
        assert_eq!(unhex32("ab"), None);
        assert_eq!(unhex32(&"g".repeat(64)), None);
    }
}
