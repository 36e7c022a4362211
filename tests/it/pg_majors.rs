//! Other PostgreSQL majors, from package registries (`scripts/pg_major.sh`,
//! run by `scripts/test.sh`): a server the project's Django does not
//! support fails with a hint that says so, not one about the settings.
//! (The suite itself also runs against the newest major: see scripts/test.sh.)

use crate::common::*;

#[test]
fn a_server_too_old_for_this_django_gets_a_clear_hint() {
    let bindir = std::env::var("MIGSNAP_TEST_PG13_BINDIR").unwrap_or_else(|_| {
        panic!("set MIGSNAP_TEST_PG13_BINDIR to PostgreSQL 13's bin dir (scripts/test.sh does, with scripts/pg_major.sh 13)")
    });
    let dir = tempfile::Builder::new()
        .prefix("ms-pg13-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let p = Project::example("pg13");
    let run = |args: &[&str]| {
        let mut c = p.cmd(args);
        c.env_remove("MIGSNAP_SERVER_URL")
            .env("MIGSNAP_SERVER_DIR", dir.path().join("s"))
            .env("MIGSNAP_PG_BINDIR", &bindir);
        c.output().expect("run migsnap")
    };
    let out = run(&["prepare", "--database", "test_pg13_a"]);
    let _ = run(&["server", "stop"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("PostgreSQL 14 or later is required"), "{err}");
    assert!(
        err.contains("hint: this Django does not support this PostgreSQL server"),
        "{err}"
    );
    assert!(!err.contains("check the settings module"), "{err}");
}
