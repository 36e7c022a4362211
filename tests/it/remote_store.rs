//! The snapshot store module against a real S3-compatible server (s3s-fs,
//! started by scripts/test.sh on loopback): what a push leaves, what a
//! download lets into the cache dir, and what it refuses. No PostgreSQL and
//! no Django here: the snapshots are made up, the store is real.

use crate::common::*;
use migsnap::key::Key;
use migsnap::remote::{ObjectKind, Options, Pushed, Remote, RemoteError, Url};
use migsnap::sign::{KeySource, Signer, Trust};
use migsnap::store::{BuildInfo, CacheSecret, DumpInfo, Manifest, Store, MANIFEST_FORMAT};
use object_store::{ObjectStoreExt, PutPayload};
use std::time::Duration;

/// Bytes that do not compress, from a seed (xorshift): each snapshot's
/// dump differs from every other's.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn key_of(seed: u64) -> Key {
    Key::parse(&sha256_hex(&seed.to_le_bytes())).expect("a key")
}

/// One signing key for these tests (one user on several machines);
/// its directory lives as long as the process.
fn the_key() -> std::sync::Arc<Signer> {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("tempdir"));
    std::sync::Arc::new(Signer::new(KeySource::UserDir(dir.path().join("keys"))))
}

/// Without a secret: signed and checked with `the_key`. With one: the
/// secret alone (the HMAC of issue #10), no Ed25519 key at all.
fn trust(secret: Option<&CacheSecret>) -> Trust {
    match secret {
        None => Trust {
            signer: Some(the_key()),
            ..Trust::default()
        },
        Some(s) => Trust {
            secret: Some(s.clone()),
            ..Trust::default()
        },
    }
}

/// A cache dir holding one snapshot for `key` whose dump is `dump`.
fn cached(key: &Key, dump: &[u8], secret: Option<&CacheSecret>) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::new(dir.path()).with_trust(trust(secret));
    std::fs::write(store.dump_path(key), dump).expect("write dump");
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        key: key.clone(),
        created_unix: migsnap::store::now_unix(),
        migsnap_version: "test".into(),
        server_version_num: 150000,
        dump: DumpInfo {
            file: format!("{key}.sql.zst"),
            sha256: sha256_hex(dump),
            size: dump.len() as u64,
        },
        migrations: [(
            "app/migrations/0001_initial.py".to_string(),
            "ab".repeat(32),
        )]
        .into(),
        key_inputs: Default::default(),
        salt_sha256: "cd".repeat(32),
        applied: vec!["app.0001_initial".into()],
        build: BuildInfo {
            source: migsnap::store::BuiltBy::Cold,
            base_key: None,
            seconds: 1.0,
            migrations: Vec::new(),
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
    };
    store.write_manifest(&manifest).expect("write manifest");
    (dir, store)
}

fn empty_cache(secret: Option<&CacheSecret>) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::new(dir.path()).with_trust(trust(secret));
    (dir, store)
}

fn open(url: &str, secret: Option<&CacheSecret>) -> Remote {
    open_with(url, secret, s3_env(), Duration::from_secs(10))
}

fn open_with(
    url: &str,
    secret: Option<&CacheSecret>,
    env: Vec<(String, String)>,
    timeout: Duration,
) -> Remote {
    open_trusting(url, trust(secret), env, timeout)
}

fn open_trusting(url: &str, trust: Trust, env: Vec<(String, String)>, timeout: Duration) -> Remote {
    Remote::open(
        &Url::parse(url).expect("url"),
        Options {
            timeout,
            trust,
            ..Options::new(env)
        },
    )
    .expect("open the store")
}

fn secret(text: &str) -> CacheSecret {
    CacheSecret::new(text.as_bytes().to_vec()).expect("secret")
}

async fn raw_put(url: &str, name: &str, bytes: Vec<u8>) {
    let (store, prefix) = s3_raw(url);
    store
        .put(&prefix.join(name), PutPayload::from(bytes))
        .await
        .expect("raw put");
}

/// Every object under the store's prefix, by name.
async fn names(remote: &Remote) -> Vec<String> {
    let mut n: Vec<String> = remote
        .list()
        .await
        .expect("list")
        .objects
        .into_iter()
        .map(|o| o.name.rsplit('/').next().expect("name").to_string())
        .collect();
    n.sort();
    n
}

/// Nothing of `key` in the cache dir: no dump, no manifest, no temp file.
fn nothing_cached(store: &Store, key: &Key) {
    assert!(
        !store.dump_path(key).exists(),
        "a dump entered the cache dir"
    );
    assert!(
        !store.manifest_path(key).exists(),
        "a manifest entered the cache dir"
    );
    assert!(store.temp_files(None).is_empty(), "temp files were left");
}

#[tokio::test]
async fn push_then_download_into_an_empty_cache_dir() {
    let url = s3_url("push-download");
    let remote = open(&url, None);
    let key = key_of(1);
    // Over one part (8 MiB), so the upload is a multipart one.
    let dump = noise(1, 9 << 20);
    let (_src, source) = cached(&key, &dump, None);

    assert_eq!(
        remote.push(&source, &key).await.expect("push"),
        Pushed::Uploaded {
            bytes: dump.len() as u64
        }
    );
    // In the order a listing gives: by name, so by the hashes in them.
    let mut expected = vec![
        Remote::signature_name(
            &key,
            &std::fs::read(source.manifest_path(&key)).expect("manifest"),
        ),
        store_dump_name(key.as_str(), &dump),
        format!("{key}.json"),
    ];
    expected.sort();
    assert_eq!(
        names(&remote).await,
        expected,
        "the dump is named by its content, the signature by its manifest's, the manifest by the key"
    );
    // Pushing again changes nothing.
    assert_eq!(
        remote.push(&source, &key).await.expect("push"),
        Pushed::AlreadyThere
    );

    let (_dst, fresh) = empty_cache(None);
    let fetched = remote.fetch(&key).await.expect("fetch").expect("committed");
    assert_eq!(
        remote
            .download(&fetched, &fresh, None)
            .await
            .expect("download"),
        dump.len() as u64
    );
    assert_eq!(std::fs::read(fresh.dump_path(&key)).expect("dump"), dump);
    assert_eq!(
        std::fs::read(fresh.manifest_path(&key)).expect("manifest"),
        std::fs::read(source.manifest_path(&key)).expect("manifest"),
        "the manifest arrives byte for byte"
    );
    assert!(fresh.load(&key).expect("loads").is_some());

    // A key the store does not have.
    assert!(remote.fetch(&key_of(2)).await.expect("fetch").is_none());
}

#[tokio::test]
async fn signed_snapshots_need_the_same_secret() {
    let url = s3_url("signed");
    let ours = secret("the team's secret");
    let key = key_of(10);
    let dump = noise(10, 1000);
    let (_src, source) = cached(&key, &dump, Some(&ours));
    let remote = open(&url, Some(&ours));
    assert!(matches!(
        remote.push(&source, &key).await,
        Ok(Pushed::Uploaded { .. })
    ));
    assert!(
        names(&remote).await.iter().any(|n| n.ends_with(".sig")),
        "the signature is pushed beside the manifest"
    );

    // The same secret: accepted, and signed again in the cache dir.
    let (_dst, fresh) = empty_cache(Some(&ours));
    let fetched = remote.fetch(&key).await.expect("fetch").expect("there");
    remote
        .download(&fetched, &fresh, None)
        .await
        .expect("download");
    assert!(fresh.load(&key).expect("signed in the cache").is_some());

    // Another secret: refused before anything is downloaded.
    let theirs = open(&url, Some(&secret("another secret")));
    let err = theirs.fetch(&key).await.expect_err("another secret");
    assert!(matches!(err, RemoteError::Refused { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("does not verify with the trusted keys or the cache secret"),
        "{err}"
    );

    // Pushed without the secret (signed by an Ed25519 key only), read with
    // the secret alone: that key is not trusted, refused.
    let key2 = key_of(11);
    let (_src2, other) = cached(&key2, &noise(11, 1000), None);
    open(&url, None).push(&other, &key2).await.expect("push");
    let err = remote.fetch(&key2).await.expect_err("untrusted key");
    assert!(
        err.to_string().contains("which is not in trusted-keys"),
        "{err}"
    );
    // The library keeps the refusal as data; the binary words the hint
    // (remote_prepare checks the `hint:` a user sees).
    let e = migsnap::error::Error::from(err);
    assert!(
        matches!(e.find::<RemoteError>(), Some(RemoteError::Refused { .. })),
        "{e:?}"
    );
    assert!(e.hint.is_none(), "the library writes no hint: {e:?}");
}

#[tokio::test]
async fn a_dump_without_its_manifest_is_ignored_until_gc_takes_it() {
    let url = s3_url("orphan");
    let remote = open(&url, None);
    let key = key_of(20);
    let dump = noise(20, 1000);
    // A push that died before its manifest: only the dump is there.
    raw_put(&url, &store_dump_name(key.as_str(), &dump), dump).await;
    assert!(remote.fetch(&key).await.expect("fetch").is_none());
    let (_c, cache) = empty_cache(None);
    let cache = remote.manifest_cache(cache.dir()).expect("manifest cache");
    assert!(remote
        .manifests(&cache)
        .await
        .expect("manifests")
        .manifests
        .is_empty());

    let listing = remote.list().await.expect("list");
    let now = migsnap::store::now_unix();
    assert!(
        remote
            .orphans(&listing, now)
            .await
            .expect("orphans")
            .is_empty(),
        "a young orphan may be a push in flight"
    );
    let later = now + 2 * 3600;
    let orphans = remote.orphans(&listing, later).await.expect("orphans");
    assert_eq!(orphans.len(), 1);
    assert!(matches!(orphans[0].kind, ObjectKind::Dump { .. }));
    remote.remove_object(&orphans[0]).await.expect("remove");
    assert!(names(&remote).await.is_empty());
}

#[tokio::test]
async fn a_damaged_object_is_reported_and_never_enters_the_cache_dir() {
    let url = s3_url("damaged");
    let remote = open(&url, None);
    let key = key_of(30);
    let dump = noise(30, 100_000);
    let (_src, source) = cached(&key, &dump, None);
    remote.push(&source, &key).await.expect("push");
    let dump_name = store_dump_name(key.as_str(), &dump);
    let (_dst, fresh) = empty_cache(None);
    let fetched = remote.fetch(&key).await.expect("fetch").expect("there");

    // Truncated.
    raw_put(&url, &dump_name, dump[..50_000].to_vec()).await;
    let err = remote
        .download(&fetched, &fresh, None)
        .await
        .expect_err("truncated");
    assert!(matches!(err, RemoteError::Damaged { .. }), "{err}");
    assert!(
        err.to_string().contains("is damaged: it is 50000 bytes"),
        "{err}"
    );
    nothing_cached(&fresh, &key);

    // Same length, one byte changed.
    let mut altered = dump.clone();
    altered[77_777] ^= 1;
    raw_put(&url, &dump_name, altered).await;
    let err = remote
        .download(&fetched, &fresh, None)
        .await
        .expect_err("altered");
    assert!(err.to_string().contains("sha256"), "{err}");
    nothing_cached(&fresh, &key);

    // Longer than the manifest says: cut off as it streams.
    let mut longer = dump.clone();
    longer.extend_from_slice(&noise(31, 1000));
    raw_put(&url, &dump_name, longer).await;
    let err = remote
        .download(&fetched, &fresh, None)
        .await
        .expect_err("longer");
    assert!(err.to_string().contains("longer than"), "{err}");
    nothing_cached(&fresh, &key);

    // Gone.
    let (raw_store, prefix) = s3_raw(&url);
    raw_store
        .delete(&prefix.join(dump_name.as_str()))
        .await
        .expect("delete");
    let err = remote
        .download(&fetched, &fresh, None)
        .await
        .expect_err("missing");
    assert!(err.to_string().contains("missing"), "{err}");
    nothing_cached(&fresh, &key);

    // A manifest that is not JSON, and one for another key: read by a
    // consumer that lets unsigned ones through (`trust-unsigned`), so
    // that what stops them is the manifest's own check.
    let remote = open_trusting(
        &url,
        Trust {
            trust_unsigned: true,
            ..trust(None)
        },
        s3_env(),
        Duration::from_secs(10),
    );
    raw_put(
        &url,
        &format!("{key}.json"),
        b"{\"format\": 3, \"ke".to_vec(),
    )
    .await;
    let err = remote.fetch(&key).await.expect_err("damaged manifest");
    assert!(matches!(err, RemoteError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("is damaged"), "{err}");
    let other = key_of(32);
    let (_o, other_store) = cached(&other, &noise(32, 10), None);
    let foreign = std::fs::read(other_store.manifest_path(&other)).expect("manifest");
    raw_put(&url, &format!("{key}.json"), foreign).await;
    let err = remote.fetch(&key).await.expect_err("foreign manifest");
    assert!(err.to_string().contains("another key"), "{err}");

    // The cached dump itself damaged: nothing is pushed.
    let key3 = key_of(33);
    let (_s3, bad_source) = cached(&key3, &noise(33, 1000), None);
    std::fs::write(bad_source.dump_path(&key3), noise(34, 1000)).expect("rewrite");
    let err = remote
        .push(&bad_source, &key3)
        .await
        .expect_err("damaged local dump");
    assert!(matches!(err, RemoteError::LocalDamaged { .. }), "{err}");
    assert!(
        !names(&remote)
            .await
            .iter()
            .any(|n| n.starts_with(key3.as_str())),
        "nothing of a damaged snapshot reaches the store"
    );
}

#[tokio::test]
async fn two_concurrent_pushers_never_tear_a_snapshot() {
    let url = s3_url("race");
    for round in 0..6u64 {
        // Two machines built the same key, each its own dump.
        let key = key_of(100 + round);
        let (a_dump, b_dump) = (noise(1000 + round, 200_000), noise(2000 + round, 200_000));
        let (_a, a) = cached(&key, &a_dump, None);
        let (_b, b) = cached(&key, &b_dump, None);
        let (ra, rb) = (open(&url, None), open(&url, None));
        let (pa, pb) = tokio::join!(ra.push(&a, &key), rb.push(&b, &key));
        let (pa, pb) = (pa.expect("push a"), pb.expect("push b"));
        assert!(
            matches!(pa, Pushed::Uploaded { .. }) || matches!(pb, Pushed::Uploaded { .. }),
            "round {round}: one of them committed ({pa:?}, {pb:?})"
        );
        // Whichever manifest stands, its dump is its own.
        let (_d, fresh) = empty_cache(None);
        let remote = open(&url, None);
        let fetched = remote.fetch(&key).await.expect("fetch").expect("committed");
        remote
            .download(&fetched, &fresh, None)
            .await
            .expect("a whole snapshot");
        let got = std::fs::read(fresh.dump_path(&key)).expect("dump");
        assert!(
            got == a_dump || got == b_dump,
            "round {round}: a dump of neither"
        );
        // And the loser left nothing behind but what it could not know.
        let listing = remote.list().await.expect("list");
        let later = migsnap::store::now_unix() + 2 * 3600;
        for o in remote.orphans(&listing, later).await.expect("orphans") {
            remote.remove_object(&o).await.expect("remove");
        }
        let left: Vec<String> = names(&remote)
            .await
            .into_iter()
            .filter(|n| n.starts_with(key.as_str()))
            .collect();
        assert_eq!(
            left.len(),
            3,
            "round {round}: one manifest, its dump and its signature: {left:?}"
        );
    }
}

#[tokio::test]
async fn a_wrong_credential_is_denied_with_a_hint() {
    let url = s3_url("denied");
    let s = s3();
    let env = s3_env_with(&s.endpoint, &s.access_key, "not-the-secret");
    let remote = open_with(&url, None, env, Duration::from_secs(10));
    let err = remote.fetch(&key_of(40)).await.expect_err("denied");
    assert!(matches!(err, RemoteError::Denied { .. }), "{err}");
    assert!(err.is_store_failure());
    let (_c, source) = cached(&key_of(40), &noise(40, 100), None);
    let err = remote.push(&source, &key_of(40)).await.expect_err("denied");
    assert!(matches!(err, RemoteError::Denied { .. }), "{err}");
    let e = migsnap::error::Error::from(err);
    assert_eq!(e.exit_code(), migsnap::error::exit::REMOTE);
    // The hint naming AWS_SECRET_ACCESS_KEY is the binary's, found from
    // this typed cause (remote_prepare checks what a user sees).
    assert!(
        matches!(e.find::<RemoteError>(), Some(RemoteError::Denied { .. })),
        "{e:?}"
    );
    assert!(
        names(&open(&url, None)).await.is_empty(),
        "nothing was written"
    );
}

#[tokio::test]
async fn a_store_that_is_down_fails_fast() {
    let env = s3_env_down();
    let remote = open_with("s3://bucket/x", None, env, Duration::from_secs(5));
    let err = remote.fetch(&key_of(50)).await.expect_err("down");
    assert!(matches!(err, RemoteError::Unreachable { .. }), "{err}");
    assert!(err.is_store_failure());
    assert!(err.to_string().to_lowercase().contains("refused"), "{err}");
}

#[tokio::test]
async fn a_store_that_never_answers_times_out() {
    // Accepts connections and says nothing, like a hung server.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in listener.incoming().take(8) {
            conns.push(c);
        }
    });
    let s = s3();
    let env = s3_env_with(
        &format!("http://127.0.0.1:{port}"),
        &s.access_key,
        &s.secret_key,
    );
    let remote = open_with("s3://bucket/x", None, env, Duration::from_secs(1));
    let err = remote.fetch(&key_of(60)).await.expect_err("hung");
    assert!(err.is_store_failure(), "{err}");
    assert!(
        matches!(
            err,
            RemoteError::Timeout { .. } | RemoteError::Unreachable { .. }
        ),
        "{err}"
    );
    drop(held);
}

#[tokio::test]
async fn manifests_are_cached_locally_and_follow_the_store() {
    let url = s3_url("manifests");
    let remote = open(&url, None);
    let (k1, k2) = (key_of(70), key_of(71));
    for k in [&k1, &k2] {
        let (_c, s) = cached(k, &noise(7, 100), None);
        remote.push(&s, k).await.expect("push");
    }
    let (_c, cache_dir) = empty_cache(None);
    let cache = remote
        .manifest_cache(cache_dir.dir())
        .expect("manifest cache");
    let found = remote.manifests(&cache).await.expect("manifests");
    assert_eq!(found.manifests.len(), 2);
    assert!(found.refused.is_empty());
    assert!(cache.manifest_path(&k1).is_file(), "kept in the cache dir");
    assert!(!cache.dump_path(&k1).exists(), "manifests only");

    // gc on the store: the copy goes too.
    let listing = remote.list().await.expect("list");
    remote.remove(&k1, &listing).await.expect("remove");
    let found = remote.manifests(&cache).await.expect("manifests");
    assert_eq!(
        found
            .manifests
            .iter()
            .map(|m| m.key.as_str())
            .collect::<Vec<_>>(),
        vec![k2.as_str()]
    );
    assert!(!cache.manifest_path(&k1).exists());
    assert!(!names(&remote)
        .await
        .iter()
        .any(|n| n.starts_with(k1.as_str())));
}

#[tokio::test]
async fn a_shared_directory_works_as_a_store() {
    let shared = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", shared.path().display());
    let remote = open(&url, None);
    let key = key_of(80);
    let dump = noise(80, 10_000);
    let (_s, source) = cached(&key, &dump, None);
    assert!(matches!(
        remote.push(&source, &key).await,
        Ok(Pushed::Uploaded { .. })
    ));
    assert_eq!(
        remote.push(&source, &key).await.expect("push"),
        Pushed::AlreadyThere
    );
    let (_d, fresh) = empty_cache(None);
    let fetched = remote.fetch(&key).await.expect("fetch").expect("there");
    remote
        .download(&fetched, &fresh, None)
        .await
        .expect("download");
    assert_eq!(std::fs::read(fresh.dump_path(&key)).expect("dump"), dump);
}
