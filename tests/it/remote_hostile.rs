//! A snapshot store that works against its readers (issue #21): one that
//! dribbles a download, one that breaks the connection in the middle, and
//! one holding objects whose names are not migsnap's. A real S3-compatible
//! server (s3s-fs, scripts/s3_server.sh), behind a loopback proxy of the
//! test's own where the story needs one, a real PostgreSQL and Django.
//! `prepare` must always finish, building locally, and say why; `ls
//! --remote` and `gc --remote` must list past the odd names.

use crate::common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Run `c` to its end, or kill it once `limit` has passed: a hang is a
/// failed test, not a stuck suite. None when it had to be killed.
fn finish_within(mut c: Command, limit: Duration) -> Option<Output> {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let started = Instant::now();
    while started.elapsed() < limit {
        if child.try_wait().expect("wait").is_some() {
            return Some(child.wait_with_output().expect("output"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait_with_output();
    None
}

/// A trusted job built the project's snapshot and pushed it to a store of
/// the test's own; the server is then made a fresh machine's (no template,
/// no target). Returns (project, url, target database, the build's result).
fn pushed(test: &str) -> (Project, String, String, Value) {
    let p = Project::example(&format!("hostile_{test}"));
    let url = s3_url(test);
    let db = p.db(test);
    let ci = tempfile::tempdir().expect("tempdir");
    let mut env = s3_env();
    env.push(("MIGSNAP_REMOTE_PUSH".into(), "true".into()));
    let (built, err) = store_prepare(&p, ci.path(), &url, &env, &db);
    assert!(err.contains("pushed snapshot"), "{err}");
    drop_template(&key_of(&built));
    psql("postgres", &format!("DROP DATABASE IF EXISTS \"{db}\""));
    (p, url, db, built)
}

// ---- a proxy between migsnap and the store ----

/// What the proxy does to the answer to a dump's GET (other requests and
/// answers pass untouched).
#[derive(Clone, Copy)]
enum Mischief {
    /// The status line and headers at once, then the body one byte every
    /// 100 ms: each read comes well within any timeout.
    Dribble,
    /// The status line, the headers and a few bytes of the body, then the
    /// connection closes.
    Cut,
    /// Every answer passes, but a listing's `…/.-/` reads `…/../`: the
    /// common prefix of an object named `../evil.json` under the store's
    /// prefix, which s3s-fs (a directory underneath) cannot hold. `.-`
    /// sorts just before `..`, so the store's order agrees with the name.
    Rename,
}

/// A loopback TCP proxy to `upstream` (`http://127.0.0.1:PORT`): its own
/// endpoint URL. It runs until the test process ends.
fn proxy(upstream: &str, mischief: Mischief) -> String {
    let upstream = upstream
        .strip_prefix("http://")
        .expect("http endpoint")
        .to_string();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let upstream = upstream.clone();
            std::thread::spawn(move || relay(client, &upstream, mischief));
        }
    });
    format!("http://127.0.0.1:{port}")
}

/// One connection: requests go up as they come; an answer comes back as it
/// comes, unless a dump was asked for on this connection.
fn relay(mut client: TcpStream, upstream: &str, mischief: Mischief) {
    let Ok(mut server) = TcpStream::connect(upstream) else {
        return;
    };
    let dump_asked = Arc::new(AtomicBool::new(false));
    let (mut up_from, mut up_to) = (
        client.try_clone().expect("clone"),
        server.try_clone().expect("clone"),
    );
    let asked = dump_asked.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 << 10];
        loop {
            let n = match up_from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let text = String::from_utf8_lossy(&buf[..n]);
            if text.contains("GET ") && text.contains(".sql.zst") {
                asked.store(true, Ordering::SeqCst);
            }
            if up_to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = up_to.shutdown(Shutdown::Write);
    });
    let mut buf = [0u8; 16 << 10];
    // Of the dump's answer: the bytes of its head seen so far, until the
    // blank line that ends it.
    let mut head: Option<Vec<u8>> = None;
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut chunk = &buf[..n];
        if let Mischief::Rename = mischief {
            let mut bytes = chunk.to_vec();
            for i in 0..bytes.len().saturating_sub(3) {
                if &bytes[i..i + 4] == b"/.-/" {
                    bytes[i + 2] = b'.';
                }
            }
            if client.write_all(&bytes).is_err() {
                break;
            }
            continue;
        }
        if !dump_asked.load(Ordering::SeqCst) {
            if client.write_all(chunk).is_err() {
                break;
            }
            continue;
        }
        let seen = head.get_or_insert_with(Vec::new);
        if !seen.ends_with(b"\r\n\r\n") || seen.is_empty() {
            // Pass the head on at once.
            let mut at = 0;
            while at < chunk.len() && !seen.ends_with(b"\r\n\r\n") {
                seen.push(chunk[at]);
                at += 1;
            }
            if client.write_all(&chunk[..at]).is_err() {
                break;
            }
            chunk = &chunk[at..];
        }
        match mischief {
            Mischief::Dribble => {
                for byte in chunk {
                    std::thread::sleep(Duration::from_millis(100));
                    if client.write_all(std::slice::from_ref(byte)).is_err() {
                        return;
                    }
                }
            }
            Mischief::Rename => unreachable!("passed above"),
            Mischief::Cut => {
                if !seen.ends_with(b"\r\n\r\n") {
                    continue;
                }
                let _ = client.write_all(&chunk[..chunk.len().min(16)]);
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
                return;
            }
        }
    }
    let _ = client.shutdown(Shutdown::Write);
}

/// `prepare --json` on a fresh machine whose store is reached through a
/// proxy doing `mischief`: it must end, and build locally.
fn prepare_through(test: &str, mischief: Mischief) -> (Value, String, tempfile::TempDir, Value) {
    let (p, url, db, built) = pushed(test);
    let s = s3();
    let mut env = s3_env_with(&proxy(&s.endpoint, mischief), &s.access_key, &s.secret_key);
    env.push(("MIGSNAP_REMOTE_TIMEOUT".into(), "2".into()));
    let laptop = tempfile::tempdir().expect("tempdir");
    let c = store_cmd(
        &p,
        laptop.path(),
        &url,
        &env,
        &["prepare", "--database", &db, "--json"],
    );
    // Far more than a local build takes; far less than the dribbled dump.
    let out = finish_within(c, Duration::from_secs(150))
        .expect("prepare hung on a store that dribbles its answer");
    let out = succeeded(out, "prepare");
    let got = json_out(&out);
    let reference = Reference::of(&p);
    reference.check(&db, "built locally after the store failed mid-download");
    (got, stderr(&out), laptop, built)
}

/// What a run left in the cache dir: no temp file of a download.
fn assert_no_partial_download(cache: &Path) {
    for entry in std::fs::read_dir(cache).expect("cache dir") {
        let name = entry.expect("entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            !name.contains(".tmp") && !name.starts_with(".tmp"),
            "a download's temp file was left: {name}"
        );
    }
}

#[test]
fn a_store_that_dribbles_a_download_is_given_up_and_the_run_builds_locally() {
    let (got, err, laptop, built) = prepare_through("dribble", Mischief::Dribble);
    assert_eq!(got["source"], "cold", "{err}");
    assert_eq!(got["origin"], Value::Null, "{err}");
    assert_eq!(got["key"], built["key"]);
    assert!(err.contains("downloading snapshot"), "{err}");
    assert!(err.contains("too slowly"), "{err}");
    assert!(err.contains("going on without it"), "{err}");
    assert!(
        err.contains("hint:") && err.contains("remote-min-rate"),
        "{err}"
    );
    assert_eq!(err.matches("warning:").count(), 1, "{err}");
    assert_no_partial_download(laptop.path());
}

#[test]
fn a_connection_closed_mid_download_is_reported_as_such() {
    let (got, err, laptop, _) = prepare_through("cut", Mischief::Cut);
    assert_eq!(got["source"], "cold", "{err}");
    assert!(err.contains("broke off"), "{err}");
    assert!(!err.contains("did not answer within"), "{err}");
    assert!(err.contains("going on without it"), "{err}");
    assert_eq!(err.matches("warning:").count(), 1, "{err}");
    assert_no_partial_download(laptop.path());
}

/// Objects a hostile or careless writer put under the store's prefix `dir`
/// (a directory: s3s-fs's bucket, or a `file://` store): a name with a
/// control character, one that is not migsnap's, and, where `dotdot`, an
/// object under `.-/` (read as `../` through `Mischief::Rename`).
fn plant_odd_names(dir: &Path, dotdot: bool) -> Vec<std::path::PathBuf> {
    let mut planted = vec![dir.join("evil\u{1}.json"), dir.join("README")];
    if dotdot {
        std::fs::create_dir_all(dir.join(".-")).expect("mkdir");
        planted.push(dir.join(".-/evil.json"));
    }
    for f in &planted {
        std::fs::write(f, b"{}").expect("plant");
    }
    planted
}

#[test]
fn odd_object_names_in_the_store_are_skipped_with_one_warning_and_left_alone() {
    let (p, url, _db, built) = pushed("odd");
    let key = built["key"].as_str().expect("key");
    let prefix = url.rsplit('/').next().expect("prefix");
    let data =
        std::env::var("MIGSNAP_TEST_S3_DATA").expect("MIGSNAP_TEST_S3_DATA (scripts/s3_server.sh)");
    let planted = plant_odd_names(&Path::new(&data).join(prefix), true);
    let s = s3();
    let env = s3_env_with(
        &proxy(&s.endpoint, Mischief::Rename),
        &s.access_key,
        &s.secret_key,
    );
    let laptop = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        store_cmd(&p, laptop.path(), &url, &env, args)
            .output()
            .expect("run")
    };

    let out = succeeded(run(&["ls", "--remote", "--json"]), "ls --remote");
    let err = stderr(&out);
    let rows = json_out(&out)["snapshots"]
        .as_array()
        .expect("rows")
        .clone();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["key"], key);
    assert_eq!(err.matches("warning:").count(), 1, "{err}");
    assert!(
        err.contains("3 object(s) that migsnap did not write"),
        "{err}"
    );
    for shown in ["`../`", "`evil\\u{1}.json`", "`README`"] {
        assert!(err.contains(shown), "{shown}: {err}");
    }
    assert!(
        !err.contains('\u{1}'),
        "a control character reached the terminal: {err:?}"
    );

    let out = succeeded(
        run(&["gc", "--remote", "--keep", "0", "--json"]),
        "gc --remote",
    );
    let err = stderr(&out);
    assert_eq!(err.matches("warning:").count(), 1, "{err}");
    assert!(err.contains("gc leaves them"), "{err}");
    assert_eq!(json_out(&out)["kept"], serde_json::json!([key]));
    for f in &planted {
        assert!(f.exists(), "gc removed {}", f.display());
    }
}

#[test]
fn a_file_store_lists_past_odd_names_and_never_follows_a_link() {
    let p = Project::example("hostile_file");
    let db = p.db("file");
    let store = tempfile::tempdir().expect("store");
    let url = format!("file://{}", store.path().display());
    let ci = tempfile::tempdir().expect("tempdir");
    let env = vec![("MIGSNAP_REMOTE_PUSH".to_string(), "true".to_string())];
    let (built, _) = store_prepare(&p, ci.path(), &url, &env, &db);
    let key = built["key"].as_str().expect("key");
    let planted = plant_odd_names(store.path(), false);
    // A link named like an orphan dump of the key, to a file outside the
    // store: gc must neither follow it nor remove what it points at.
    let outside = tempfile::tempdir().expect("outside");
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"not the store's").expect("victim");
    let link = store.path().join(format!("{key}.0000000000000000.sql.zst"));
    std::os::unix::fs::symlink(&victim, &link).expect("symlink");

    let run = |args: &[&str]| {
        store_cmd(&p, ci.path(), &url, &[], args)
            .output()
            .expect("run")
    };
    let out = succeeded(run(&["ls", "--remote", "--json"]), "ls --remote");
    let err = stderr(&out);
    assert_eq!(
        json_out(&out)["snapshots"].as_array().expect("rows").len(),
        1
    );
    assert_eq!(err.matches("warning:").count(), 1, "{err}");
    assert!(
        err.contains("3 object(s) that migsnap did not write"),
        "{err}"
    );

    let out = succeeded(
        run(&["gc", "--remote", "--keep", "0", "--json"]),
        "gc --remote",
    );
    assert_eq!(json_out(&out)["kept"], serde_json::json!([key]));
    assert!(victim.exists(), "gc removed the link's target");
    assert!(link.symlink_metadata().is_ok(), "gc removed the link");
    for f in &planted {
        assert!(f.exists(), "gc removed {}", f.display());
    }
}

#[test]
fn a_damaged_snapshot_in_the_store_is_reported_and_downloaded_once() {
    use object_store::{ObjectStoreExt, PutPayload};
    let (p, url, db, built) = pushed("once");
    let key = built["key"].as_str().expect("key");
    let (store, prefix) = s3_raw(&url);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // The dump, cut in half as a broken disk would leave it.
    let listed = runtime
        .block_on(store.list_with_delimiter(Some(&prefix)))
        .expect("list");
    let dump = listed
        .objects
        .iter()
        .find(|o| o.location.as_ref().ends_with(".sql.zst"))
        .expect("the dump");
    let bytes = runtime
        .block_on(async { store.get(&dump.location).await?.bytes().await })
        .expect("get");
    runtime
        .block_on(store.put(
            &dump.location,
            PutPayload::from(bytes[..bytes.len() / 2].to_vec()),
        ))
        .expect("put");

    let laptop = tempfile::tempdir().expect("tempdir");
    let (got, err) = store_prepare(&p, laptop.path(), &url, &s3_env(), &db);
    assert_eq!(got["source"], "cold", "{err}");
    assert_eq!(got["key"], key);
    // The key's own snapshot is also the best "ancestor" the store has: it
    // was downloaded and reported a second time.
    assert_eq!(err.matches("downloading snapshot").count(), 1, "{err}");
    assert_eq!(err.matches("is damaged").count(), 1, "{err}");
    assert_eq!(err.matches("warning:").count(), 1, "{err}");
}

#[test]
fn a_store_full_of_names_no_path_can_be_is_refused_not_listed_forever() {
    let (p, url, _db, _) = pushed("many");
    let prefix = url.rsplit('/').next().expect("prefix");
    let data = std::env::var("MIGSNAP_TEST_S3_DATA").expect("MIGSNAP_TEST_S3_DATA");
    let dir = Path::new(&data).join(prefix);
    // Each costs a handful of small requests to step over; past 64 the
    // listing gives up rather than sending thousands.
    for i in 0..70 {
        std::fs::write(dir.join(format!("evil{i:02}\u{1}.json")), b"{}").expect("plant");
    }
    let laptop = tempfile::tempdir().expect("tempdir");
    let out = store_cmd(&p, laptop.path(), &url, &s3_env(), &["ls", "--remote"])
        .output()
        .expect("run");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(
        err.contains("65 or more objects whose names are not valid"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
}

#[test]
fn a_listing_longer_than_a_page_is_read_whole_past_an_odd_name() {
    let (p, url, _db, built) = pushed("pages");
    let prefix = url.rsplit('/').next().expect("prefix");
    let data = std::env::var("MIGSNAP_TEST_S3_DATA").expect("MIGSNAP_TEST_S3_DATA");
    let dir = Path::new(&data).join(prefix);
    // More than a page (1000 keys) of foreign objects sorting before every
    // key ('-' < '0'), with a name no path can be among them: the snapshot
    // is on the second page, past the step over the bad name.
    for i in 0..1100 {
        std::fs::write(dir.join(format!("0-junk-{i:04}")), b"x").expect("plant");
    }
    std::fs::write(dir.join("0-junk-0500\u{1}"), b"x").expect("plant");
    let laptop = tempfile::tempdir().expect("tempdir");
    let out = succeeded(
        store_cmd(
            &p,
            laptop.path(),
            &url,
            &s3_env(),
            &["ls", "--remote", "--json"],
        )
        .output()
        .expect("run"),
        "ls --remote",
    );
    let err = stderr(&out);
    let rows = json_out(&out)["snapshots"]
        .as_array()
        .expect("rows")
        .clone();
    assert_eq!(rows.len(), 1, "{err}");
    assert_eq!(rows[0]["key"], built["key"]);
    assert!(
        err.contains("1101 object(s) that migsnap did not write"),
        "{err}"
    );
    assert_eq!(err.matches("warning:").count(), 1, "{err}");
}
