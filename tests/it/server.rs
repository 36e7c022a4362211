//! The embedded server's lifecycle: created on first start, Unix socket only
//! by default, TCP on 127.0.0.1 only when `server-port` asks for it.

use crate::common::*;
use serde_json::Value;
use std::process::Command;

fn server(dir: &std::path::Path, port: Option<u16>, args: &[&str]) -> Value {
    let mut c = Command::new(bin());
    c.args(["server"])
        .args(args)
        .arg("--json")
        .env("MIGSNAP_SERVER_DIR", dir)
        .env_remove("MIGSNAP_SERVER_URL");
    match port {
        Some(p) => c.env("MIGSNAP_SERVER_PORT", p.to_string()),
        None => c.env_remove("MIGSNAP_SERVER_PORT"),
    };
    let out = c.output().expect("run migsnap server");
    assert!(out.status.success(), "server {args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("json")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn sql(url: &str, q: &str) -> Option<String> {
    let out = Command::new("psql")
        .args(["-X", "-w", "-At", "-d", url, "-c", q])
        .output()
        .expect("psql");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn embedded_server_is_socket_only_unless_a_port_is_asked_for() {
    // Short path: the socket must fit in 107 bytes.
    let dir = tempfile::Builder::new()
        .prefix("ms-srv-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let srv = dir.path().join("s");
    if nix::unistd::geteuid().is_root() {
        // The server runs as `postgres`, which must reach the directory.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
    }
    let before = server(&srv, None, &["status"]);
    assert_eq!(before["running"], false);
    assert_eq!(before["initialized"], false);

    let started = server(&srv, None, &["start"]);
    assert_eq!(started["running"], true);
    assert_eq!(started["tcp_url"], Value::Null);
    let url = started["url"].as_str().expect("url");
    assert_eq!(
        sql(url, "SHOW listen_addresses").as_deref(),
        Some(""),
        "no TCP by default"
    );
    assert_eq!(sql(url, "SHOW fsync").as_deref(), Some("off"));
    // Starting again is a no-op on a running server.
    assert_eq!(server(&srv, None, &["start"])["url"], url);
    server(&srv, None, &["stop"]);
    assert_eq!(server(&srv, None, &["status"])["running"], false);
    // The background work a prepare leaves (`maintain --background`) does
    // not bring a stopped server back; it used to start it again, under a
    // directory its owner was about to remove.
    let p = Project::example("server_background");
    let out = p
        .cmd(&["maintain", "--background", "--json"])
        .env("MIGSNAP_SERVER_DIR", &srv)
        .env_remove("MIGSNAP_SERVER_URL")
        .output()
        .expect("run migsnap maintain");
    assert!(out.status.success(), "{}", stderr(&out));
    let done: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(done["server_stopped"], true);
    assert_eq!(server(&srv, None, &["status"])["running"], false);

    let port = free_port();
    let tcp = server(&srv, Some(port), &["start"]);
    let tcp_url = tcp["tcp_url"].as_str().expect("tcp_url");
    assert!(
        tcp_url.starts_with("postgresql://postgres:")
            && tcp_url.ends_with(&format!("@127.0.0.1:{port}/postgres")),
        "{tcp_url}"
    );
    assert_eq!(sql(tcp_url, "SELECT 42").as_deref(), Some("42"));
    // TCP is reachable by every local user: it must not trust them.
    let no_password = format!("postgresql://postgres@127.0.0.1:{port}/postgres");
    assert_eq!(
        sql(&no_password, "SELECT 42"),
        None,
        "TCP without the password is refused"
    );
    assert_eq!(
        sql(tcp["url"].as_str().expect("url"), "SHOW listen_addresses").as_deref(),
        Some("127.0.0.1")
    );
    server(&srv, Some(port), &["stop"]);
}

/// Runs `migsnap server ARGS --json` with no server dir configured, so the
/// default applies, inside private temp and state dirs.
fn default_server(home: &std::path::Path, cache: &std::path::Path, args: &[&str]) -> Value {
    let out = Command::new(bin())
        .args(["server"])
        .args(args)
        .arg("--json")
        .env_remove("MIGSNAP_SERVER_DIR")
        .env_remove("MIGSNAP_SERVER_URL")
        .env_remove("MIGSNAP_SERVER_PORT")
        .env("TMPDIR", home.join("tmp"))
        .env("XDG_STATE_HOME", home.join("state"))
        .env("MIGSNAP_CACHE_DIR", cache)
        .output()
        .expect("run migsnap server");
    assert!(out.status.success(), "server {args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("json")
}

#[test]
fn default_servers_live_outside_their_cache_dirs_and_ls_and_stop_all_find_them() {
    let home = tempfile::Builder::new()
        .prefix("ms-home-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    if nix::unistd::geteuid().is_root() {
        std::fs::set_permissions(
            home.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
    }
    for sub in ["tmp", "state", "a", "b"] {
        std::fs::create_dir(home.path().join(sub)).expect("mkdir");
        if nix::unistd::geteuid().is_root() {
            std::fs::set_permissions(
                home.path().join(sub),
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .expect("chmod");
        }
    }
    let (a, b) = (home.path().join("a"), home.path().join("b"));
    let started_a = default_server(home.path(), &a, &["start"]);
    let dir_a = started_a["dir"].as_str().expect("dir").to_string();
    assert!(!dir_a.starts_with(a.to_str().expect("utf-8")), "{dir_a}");
    assert!(std::fs::read_dir(&a).expect("cache").next().is_none());
    let dir_b = default_server(home.path(), &b, &["start"])["dir"]
        .as_str()
        .expect("dir")
        .to_string();
    assert_ne!(dir_a, dir_b, "one server per cache dir");

    let listed = default_server(home.path(), &a, &["ls"]);
    let servers = listed["servers"].as_array().expect("servers");
    let dirs: Vec<(&str, bool, bool)> = servers
        .iter()
        .map(|s| {
            (
                s["dir"].as_str().expect("dir"),
                s["running"].as_bool().expect("running"),
                s["current"].as_bool().expect("current"),
            )
        })
        .collect();
    let mut expected = vec![(dir_a.as_str(), true, true), (dir_b.as_str(), true, false)];
    expected.sort();
    assert_eq!(dirs, expected);

    // `stop --all` stops this settings' own server only: a's may be
    // another CI job's, in use.
    let stopped = default_server(home.path(), &b, &["stop", "--all"]);
    let servers = stopped["servers"].as_array().expect("servers");
    assert_eq!(servers.len(), 1, "{stopped}");
    assert_eq!(servers[0]["dir"], dir_b.as_str());
    assert!(servers[0]["stopped"] == true && servers[0]["running"] == false);
    let running: Vec<(String, bool)> = default_server(home.path(), &a, &["ls"])["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .map(|s| {
            (
                s["dir"].as_str().expect("dir").to_string(),
                s["running"] == true,
            )
        })
        .collect();
    let mut expected = vec![(dir_a.clone(), true), (dir_b.clone(), false)];
    expected.sort();
    assert_eq!(running, expected, "a's server still runs");

    // `--everywhere`: every one of this user's.
    let stopped = default_server(home.path(), &b, &["stop", "--everywhere"]);
    let servers = stopped["servers"].as_array().expect("servers");
    assert_eq!(servers.len(), 2);
    assert!(servers.iter().all(|s| s["running"] == false));
    assert!(servers
        .iter()
        .any(|s| s["dir"] == dir_a.as_str() && s["stopped"] == true));
    assert!(default_server(home.path(), &a, &["ls"])["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .all(|s| s["running"] == false));
}
