//! A snapshot store that works against its readers (issue #21): one that
//! dribbles a download, one that breaks the connection in the middle, and
//! one holding objects whose names are not migsnap's. A real S3-compatible
//! server (s3s-fs, scripts/s3_server.sh), behind a loopback proxy of the
//! test's own where the story needs one, a real PostgreSQL and Django.
//! `prepare` must always finish, building locally, and say why; `ls
//! --remote` and `gc --remote` must list past the odd names.

mod common;

use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn cmd(p: &Project, cache: &Path, url: &str, env: &[(String, String)], args: &[&str]) -> Command {
    let mut c = p.cmd(args);
    c.env("MIGSNAP_CACHE_DIR", cache).env("MIGSNAP_REMOTE", url);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        stderr(&out)
    );
    out
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("one JSON document on stdout")
}

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
    p.track(&db);
    let out = ok(
        cmd(&p, ci.path(), &url, &env, &["prepare", "--database", &db, "--json"])
            .output()
            .expect("run"),
        "prepare (pushing)",
    );
    let built = json(&out);
    assert!(stderr(&out).contains("pushed snapshot"), "{}", stderr(&out));
    let key = built["key"].as_str().expect("key").to_string();
    p.track(&template_name(&key));
    drop_template(&key);
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
    let (mut up_from, mut up_to) = (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
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
    let c = cmd(&p, laptop.path(), &url, &env, &["prepare", "--database", &db, "--json"]);
    // Far more than a local build takes; far less than the dribbled dump.
    let out = finish_within(c, Duration::from_secs(150))
        .expect("prepare hung on a store that dribbles its answer");
    let out = ok(out, "prepare");
    let got = json(&out);
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
    eprintln!("STDERR:\n{err}");
    assert_eq!(got["source"], "cold", "{err}");
    assert_eq!(got["origin"], Value::Null, "{err}");
    assert_eq!(got["key"], built["key"]);
    assert!(err.contains("downloading snapshot"), "{err}");
    assert!(err.contains("too slowly"), "{err}");
    assert!(err.contains("going on without it"), "{err}");
    assert!(err.contains("hint:") && err.contains("remote-min-rate"), "{err}");
    assert_eq!(err.matches("warning:").count(), 1, "{err}");
    assert_no_partial_download(laptop.path());
}

#[test]
fn a_connection_closed_mid_download_is_reported_as_such() {
    let (got, err, laptop, _) = prepare_through("cut", Mischief::Cut);
    eprintln!("STDERR:\n{err}");
    assert_eq!(got["source"], "cold", "{err}");
    assert!(err.contains("broke off"), "{err}");
    assert!(!err.contains("did not answer within"), "{err}");
    assert!(err.contains("going on without it"), "{err}");
    assert_eq!(err.matches("warning:").count(), 1, "{err}");
    assert_no_partial_download(laptop.path());
}
