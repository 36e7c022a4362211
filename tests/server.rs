//! The embedded server's lifecycle: created on first start, Unix socket only
//! by default, TCP on 127.0.0.1 only when `server-port` asks for it.

mod common;

use common::*;
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
