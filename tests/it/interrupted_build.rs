//! Ctrl-C while the build database is being created (issue #21: a pytest
//! session interrupted during its early `prepare` once left a
//! `migsnap_build_*` database). `CREATE DATABASE` runs on the server: when
//! the interrupted run dropped the build database while the statement was
//! still running, the drop found nothing and the statement then committed.
//!
//! It holds a session on `template1`, which makes every other cold build on
//! the server wait (PostgreSQL's `CREATE DATABASE` waits up to 5 s for the
//! template's other sessions), so it runs `alone()`: no other test may run
//! beside it on its server.

use crate::common::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "waited too long for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn creating(build: &str) -> bool {
    psql(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
             AND query LIKE 'CREATE DATABASE \"{build}\"%'"
        ),
    ) != "0"
}

#[test]
fn ctrl_c_while_the_build_database_is_created_leaves_no_build_database() {
    // Its session on template1 makes every `CREATE DATABASE` on the server
    // that copies it wait, then fail.
    let _alone = alone();
    let p = Project::example("interrupted_create");
    let key = p.key();
    let build = build_name(&key);
    let db = p.db("ctrlc");
    p.track(&db);
    p.track(&build);
    p.track(&template_name(&key));
    // A session on template1 holds the build's CREATE DATABASE (a cold
    // build copies template1) for up to 5 s.
    let mut holder = Command::new("psql")
        .args(["-X", "-q", "-d"])
        .arg(db_url("template1"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("psql");
    let stdin = holder.stdin.as_mut().expect("stdin");
    stdin.write_all(b"SELECT 1;\n").expect("write");
    stdin.flush().expect("flush");
    wait_until("the template1 session", || {
        psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'template1'",
        ) != "0"
    });

    let run = p
        .cmd(&["prepare", "--database", &db, "--rebuild"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("prepare");
    wait_until("the build's CREATE DATABASE", || creating(&build));
    // Ctrl-C, as the pytest plugin sends it (and a terminal does).
    let ok = Command::new("kill")
        .args(["-INT", &run.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
    let out = run.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(130), "{err}");

    // The template's session goes: a statement still running would now
    // create the database.
    drop(holder.stdin.take());
    let _ = holder.wait();
    wait_until("the CREATE DATABASE to end", || !creating(&build));
    assert!(
        !database_exists(&build),
        "`{build}` was left behind by the interrupted run:\n{err}"
    );
}
