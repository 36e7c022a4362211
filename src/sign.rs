//! Who vouches for a snapshot (issue #21): Ed25519 signing keys, the
//! optional HMAC cache secret, and the versioned `<key>.sig` text both
//! write. A snapshot is *authenticated* when its signature verifies with a
//! trusted public key (the signer's own, or one in `trusted-keys`) or with
//! the cache secret; anything else is foreign.
//!
//! The signing key is read (and, for the per-user default, made) only when
//! something is signed, never on the warm path: a template clone reads no
//! key. Verifying reads the key file only if it exists: nothing is signed
//! by a key that was never made.
//!
//! A leaf module: the store and the remote sign and verify through
//! `Trust`; nothing here knows where a manifest lives.

use crate::error::{Error, Result};
use crate::key::Key;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use sha2::Sha256;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The first line of every `<key>.sig`. A change of what is signed or of
/// this text bumps the version: older signatures then read as unsigned.
pub const SIG_HEADER: &str = "migsnap-signature v2";
/// Bound into every signature, Ed25519 and HMAC alike, so that a signature
/// over a manifest can never be replayed as one over anything else.
const DOMAIN: &[u8] = b"migsnap-snapshot-sig-v2\0";
/// The per-user key's file name in its directory.
const KEY_FILE: &str = "signing-key";
const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// What is signed for `key`'s manifest `bytes`.
fn message(key: &Key, manifest: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 65 + manifest.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(key.as_str().as_bytes());
    m.push(0);
    m.extend_from_slice(manifest);
    m
}

// ---- public keys ----

/// An Ed25519 public key, as `trusted-keys` lists it.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// `ed25519:<base64>` or `ed25519:<64 hex>`.
    pub fn parse(text: &str) -> Option<PublicKey> {
        let body = text.trim().strip_prefix("ed25519:")?;
        let bytes = if body.len() == 64 && body.bytes().all(|b| b.is_ascii_hexdigit()) {
            unhex(body)?
        } else {
            B64.decode(body).ok()?
        };
        Some(PublicKey(bytes.try_into().ok()?))
    }

    /// 16 hex of the key's sha256: what a signature line names it by.
    pub fn id(&self) -> String {
        crate::hash::sha256(&self.0)[..16].to_string()
    }

    fn verifies(&self, msg: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(msg, sig)
            .is_ok()
    }
}

impl std::fmt::Display for PublicKey {
    /// The line to paste into `trusted-keys`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ed25519:{}", B64.encode(self.0))
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.id())
    }
}

// ---- the HMAC cache secret (issue #10) ----

/// The HMAC-SHA256 key that signs snapshots (`MIGSNAP_CACHE_SECRET` or
/// `cache-secret-file`). Never printed.
#[derive(Clone)]
pub struct CacheSecret(Vec<u8>);

impl std::fmt::Debug for CacheSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheSecret(…)")
    }
}

impl CacheSecret {
    /// None for an empty secret (the caller says why that is an error).
    pub fn new(bytes: Vec<u8>) -> Option<CacheSecret> {
        (!bytes.is_empty()).then_some(CacheSecret(bytes))
    }

    fn mac(&self, msg: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(msg);
        mac
    }
}

// ---- the signing key ----

/// Where the key that signs what this process writes comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `signing-key-file` / MIGSNAP_SIGNING_KEY_FILE: must exist (a CI job
    /// that signs with a missing key must fail, not sign with another).
    File(PathBuf),
    /// The per-user key in this directory (the user's data dir), made on
    /// first use.
    UserDir(PathBuf),
}

impl KeySource {
    pub fn path(&self) -> PathBuf {
        match self {
            KeySource::File(p) => p.clone(),
            KeySource::UserDir(d) => d.join(KEY_FILE),
        }
    }
}

/// The signing key, read on first use.
#[derive(Debug)]
pub struct Signer {
    source: KeySource,
    pair: Mutex<Option<Arc<Ed25519KeyPair>>>,
}

impl Signer {
    pub fn new(source: KeySource) -> Signer {
        Signer {
            source,
            pair: Mutex::new(None),
        }
    }

    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// The key pair, made first if it is the per-user key and there is none.
    pub fn pair(&self) -> Result<Arc<Ed25519KeyPair>> {
        let mut held = self.pair.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = held.as_ref() {
            return Ok(p.clone());
        }
        let path = self.source.path();
        let pair = match (read_key_file(&path)?, &self.source) {
            (Some(pair), _) => pair,
            (None, KeySource::UserDir(dir)) => {
                make_key_dir(dir)?;
                match write_new_key(&path)? {
                    Some(pair) => pair,
                    // Another process made it first: theirs is ours.
                    None => read_key_file(&path)?.ok_or_else(|| missing_key(&path))?,
                }
            }
            (None, KeySource::File(_)) => return Err(missing_key(&path)),
        };
        let pair = Arc::new(pair);
        *held = Some(pair.clone());
        Ok(pair)
    }

    /// The public key, if the key exists (never made here): a key that was
    /// never made has signed nothing. A key file that is refused verifies
    /// nothing either; writing reports why.
    fn public_if_made(&self) -> Option<PublicKey> {
        {
            let held = self.pair.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(p) = held.as_ref() {
                return Some(public_of(p));
            }
        }
        match read_key_file(&self.source.path()) {
            Ok(Some(pair)) => {
                let public = public_of(&pair);
                *self.pair.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(pair));
                Some(public)
            }
            _ => None,
        }
    }
}

pub fn public_of(pair: &Ed25519KeyPair) -> PublicKey {
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(pair.public_key().as_ref());
    PublicKey(bytes)
}

fn missing_key(path: &Path) -> Error {
    KeyFileError::Missing {
        path: path.to_path_buf(),
    }
    .into()
}

/// A signing key file (or its directory) migsnap will not use or cannot
/// make, as data: the path and why (the binary says how to fix it).
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("the signing key file `{}` does not exist", .path.display())]
    Missing { path: PathBuf },
    #[error("refusing the signing key file `{}`: {why}", .path.display())]
    Refused { path: PathBuf, why: Refusal },
    #[error("cannot read the signing key file `{}`", .path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the signing key file `{}`", .path.display())]
    Unwritable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the signing key directory `{}`", .dir.display())]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read `{}`", .dir.display())]
    ReadDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "refusing the signing key directory `{}`: it is not yours alone (owner uid {owner}, mode {mode:04o})",
        .dir.display()
    )]
    DirNotYours { dir: PathBuf, owner: u32, mode: u32 },
    /// `signing-key generate` never overwrites a file.
    #[error("`{}` already exists", .path.display())]
    Exists { path: PathBuf },
    /// ring could not make a key (it says no more than that).
    #[error("cannot generate an Ed25519 key")]
    Generate,
    /// ring refused the key it had just made.
    #[error("cannot read back the generated Ed25519 key")]
    ReadBack,
}

/// Why a signing key file is refused, as ssh refuses a private key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("it is a symbolic link")]
    Symlink,
    #[error("it is owned by uid {owner}, not by you (uid {me})")]
    NotYours { owner: u32, me: u32 },
    #[error("its mode {mode:04o} lets group or others read it")]
    Readable { mode: u32 },
    #[error("it is not an Ed25519 private key in PKCS#8 PEM")]
    NotAKey,
}

impl crate::error::Typed for KeyFileError {
    fn kind(&self) -> crate::error::Kind {
        match self {
            KeyFileError::Generate | KeyFileError::ReadBack => crate::error::Kind::Internal,
            _ => crate::error::Kind::Usage,
        }
    }
}

/// Read a private key file, None when it does not exist. Refused, like
/// ssh refuses a private key: a symlink, a file of another user, a file
/// group or others may read.
pub fn read_key_file(path: &Path) -> Result<Option<Ed25519KeyPair>> {
    let refuse = |why: Refusal| {
        Err(KeyFileError::Refused {
            path: path.to_path_buf(),
            why,
        }
        .into())
    };
    let unreadable = |source| KeyFileError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let file = match crate::files::open_no_follow(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return refuse(Refusal::Symlink),
        Err(e) => return Err(unreadable(e).into()),
    };
    let meta = file.metadata().map_err(unreadable)?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return refuse(Refusal::NotYours {
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return refuse(Refusal::Readable { mode });
    }
    let mut text = String::new();
    use std::io::Read;
    let read = (&file).take(64 << 10).read_to_string(&mut text);
    let pair = read.ok().and_then(|_| parse_pem(&text));
    match pair {
        Some(pair) => Ok(Some(pair)),
        None => refuse(Refusal::NotAKey),
    }
}

fn parse_pem(text: &str) -> Option<Ed25519KeyPair> {
    let body = text.split(PEM_BEGIN).nth(1)?.split(PEM_END).next()?;
    let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = B64.decode(b64).ok()?;
    // openssl writes PKCS#8 v1 (no public key); ring's own, v2.
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).ok()
}

/// The per-user key's directory: created 0700; one that others may write
/// to (they could swap the key) is refused.
fn make_key_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| KeyFileError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
    let meta = std::fs::metadata(dir).map_err(|source| KeyFileError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let me = nix::unistd::geteuid().as_raw();
    let mode = meta.permissions().mode() & 0o777;
    if meta.uid() != me || mode & 0o022 != 0 {
        return Err(KeyFileError::DirNotYours {
            dir: dir.to_path_buf(),
            owner: meta.uid(),
            mode,
        }
        .into());
    }
    Ok(())
}

/// Make a new key and write it to `path` (mode 0600, through a temp file
/// in the same directory, never over an existing file). None when `path`
/// exists already: a key is never replaced.
pub fn write_new_key(path: &Path) -> Result<Option<Ed25519KeyPair>> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyFileError::Generate)?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| KeyFileError::ReadBack)?;
    let mut pem = format!("{PEM_BEGIN}\n");
    let b64 = B64.encode(pkcs8.as_ref());
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str(PEM_END);
    pem.push('\n');
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let write_err = |source: std::io::Error| -> Error {
        KeyFileError::Unwritable {
            path: path.to_path_buf(),
            source,
        }
        .into()
    };
    // tempfile makes its files 0600.
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-signing-key.")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(write_err)?;
    use std::io::Write;
    tmp.write_all(pem.as_bytes()).map_err(write_err)?;
    tmp.as_file().sync_all().map_err(write_err)?;
    match tmp.persist_noclobber(path) {
        Ok(_) => Ok(Some(pair)),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(write_err(e.error)),
    }
}

/// `migsnap signing-key generate PATH`: a new key file; an existing file is
/// never overwritten.
pub fn generate(path: &Path) -> Result<PublicKey> {
    match write_new_key(path)? {
        Some(pair) => Ok(public_of(&pair)),
        None => Err(KeyFileError::Exists {
            path: path.to_path_buf(),
        }
        .into()),
    }
}

// ---- trust: what signs, what verifies ----

/// How snapshots are signed and which signatures are believed.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Signs what is written (and checks with its own public key).
    pub signer: Option<Arc<Signer>>,
    /// `trusted-keys`: accepted besides the signer's own.
    pub keys: Vec<PublicKey>,
    pub secret: Option<CacheSecret>,
    /// `trust-unsigned`: a foreign snapshot is used (for its own key only)
    /// instead of refused.
    pub trust_unsigned: bool,
}

/// What a signature says about a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Authenticated,
    /// No signature, or none this migsnap can read (an older format), or
    /// only an HMAC while no cache secret is set.
    Unsigned,
    /// A signature by a trusted key (or the secret) that does not verify:
    /// the manifest changed after it was signed.
    Bad,
    /// Signed, but by a key that is not trusted.
    Untrusted {
        id: String,
    },
}

impl Trust {
    /// The text of `<key>.sig` for `key`'s manifest `bytes`: an Ed25519 line
    /// when there is a signer, an HMAC line when there is a secret; None
    /// when there is neither.
    pub fn sign(&self, key: &Key, manifest: &[u8]) -> Result<Option<String>> {
        if self.signer.is_none() && self.secret.is_none() {
            return Ok(None);
        }
        let msg = message(key, manifest);
        let mut text = format!("{SIG_HEADER}\n");
        if let Some(signer) = &self.signer {
            let pair = signer.pair()?;
            let sig = pair.sign(&msg);
            text.push_str(&format!(
                "ed25519 {} {}\n",
                public_of(&pair).id(),
                B64.encode(sig.as_ref())
            ));
        }
        if let Some(secret) = &self.secret {
            let mac = secret.mac(&msg).finalize().into_bytes();
            text.push_str(&format!("hmac-sha256 {}\n", crate::hash::hex(&mac)));
        }
        Ok(Some(text))
    }

    /// Judge the signature `sig` (None: absent) of `key`'s manifest `bytes`.
    pub fn verify(&self, key: &Key, manifest: &[u8], sig: Option<&[u8]>) -> Verdict {
        let Some(text) = sig.and_then(|s| std::str::from_utf8(s).ok()) else {
            return Verdict::Unsigned;
        };
        let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
        if lines.next() != Some(SIG_HEADER) {
            return Verdict::Unsigned;
        }
        let msg = message(key, manifest);
        let own = self.signer.as_ref().and_then(|s| s.public_if_made());
        let trusted = |id: &str| self.keys.iter().chain(own.iter()).find(|k| k.id() == id);
        let mut verdict = Verdict::Unsigned;
        for line in lines.filter(|l| !l.is_empty()) {
            let mut words = line.split(' ');
            match (words.next(), words.next(), words.next(), words.next()) {
                (Some("ed25519"), Some(id), Some(sig), None) => match trusted(id) {
                    Some(k) => match B64.decode(sig) {
                        Ok(sig) if k.verifies(&msg, &sig) => return Verdict::Authenticated,
                        _ => verdict = Verdict::Bad,
                    },
                    None if verdict == Verdict::Unsigned => {
                        verdict = Verdict::Untrusted { id: id.to_string() }
                    }
                    None => {}
                },
                (Some("hmac-sha256"), Some(hex), None, None) => {
                    if let Some(secret) = &self.secret {
                        let sig = unhex(hex).unwrap_or_default();
                        if secret.mac(&msg).verify_slice(&sig).is_ok() {
                            return Verdict::Authenticated;
                        }
                        verdict = Verdict::Bad;
                    }
                }
                _ => verdict = Verdict::Bad,
            }
        }
        verdict
    }
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn key() -> Key {
        Key::parse(K).expect("key")
    }

    fn signer(dir: &Path) -> Arc<Signer> {
        Arc::new(Signer::new(KeySource::UserDir(dir.join("keys"))))
    }

    #[test]
    fn a_signature_verifies_with_its_own_key_and_a_trusted_one_only() {
        let a = tempfile::tempdir().expect("tmp");
        let b = tempfile::tempdir().expect("tmp");
        let mine = Trust {
            signer: Some(signer(a.path())),
            ..Trust::default()
        };
        let sig = mine.sign(&key(), b"{}").expect("sign").expect("signed");
        assert_eq!(
            mine.verify(&key(), b"{}", Some(sig.as_bytes())),
            Verdict::Authenticated
        );
        assert_eq!(
            mine.verify(&key(), b"{ }", Some(sig.as_bytes())),
            Verdict::Bad
        );
        assert_eq!(mine.verify(&key(), b"{}", None), Verdict::Unsigned);
        let public = mine
            .signer
            .as_ref()
            .and_then(|s| s.public_if_made())
            .expect("made");
        let other = Trust {
            signer: Some(signer(b.path())),
            ..Trust::default()
        };
        assert_eq!(
            other.verify(&key(), b"{}", Some(sig.as_bytes())),
            Verdict::Untrusted { id: public.id() }
        );
        let trusting = Trust {
            keys: vec![PublicKey::parse(&public.to_string()).expect("parses")],
            ..other
        };
        assert_eq!(
            trusting.verify(&key(), b"{}", Some(sig.as_bytes())),
            Verdict::Authenticated
        );
        // The key file: PEM, 0600, in a 0700 directory.
        let path = a.path().join("keys").join(KEY_FILE);
        let mode = std::fs::metadata(&path).expect("key").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mode = std::fs::metadata(a.path().join("keys"))
            .expect("dir")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn hmac_lines_verify_with_the_secret_and_old_formats_read_as_unsigned() {
        let secret = CacheSecret::new(b"s3cret".to_vec());
        let t = Trust {
            secret: secret.clone(),
            ..Trust::default()
        };
        let sig = t.sign(&key(), b"m").expect("sign").expect("signed");
        assert_eq!(
            t.verify(&key(), b"m", Some(sig.as_bytes())),
            Verdict::Authenticated
        );
        let other = Trust {
            secret: CacheSecret::new(b"other".to_vec()),
            ..Trust::default()
        };
        assert_eq!(
            other.verify(&key(), b"m", Some(sig.as_bytes())),
            Verdict::Bad
        );
        assert_eq!(
            Trust::default().verify(&key(), b"m", Some(sig.as_bytes())),
            Verdict::Unsigned
        );
        // Version 1 was a bare hex HMAC.
        assert_eq!(t.verify(&key(), b"m", Some(b"00ff\n")), Verdict::Unsigned);
    }

    #[test]
    fn public_keys_parse_as_base64_or_hex() {
        let hex = "ed25519:".to_string() + &"ab".repeat(32);
        let k = PublicKey::parse(&hex).expect("hex");
        assert_eq!(PublicKey::parse(&k.to_string()), Some(k));
        assert_eq!(PublicKey::parse("ed25519:abc"), None);
        assert_eq!(PublicKey::parse(&"ab".repeat(32)), None);
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let d = tempfile::tempdir().expect("tmp");
        let path = d.path().join("k");
        generate(&path).expect("generate");
        assert!(generate(&path).is_err(), "never overwritten");
        assert!(read_key_file(&path).expect("ok").is_some());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let e = read_key_file(&path).expect_err("refused");
        assert!(e.message.contains("mode 0640"), "{}", e.message);
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        let e = read_key_file(&link).expect_err("refused");
        assert!(e.message.contains("symbolic link"), "{}", e.message);
    }
}
