//! Issue #10, "Trust": what migsnap runs as root in a shared /tmp, and what
//! it inherits from the environment, must not be steerable by anyone else.
//! Planted links and directories are refused (exit 2) without anything
//! being chowned, chmodded or overwritten; a held lock times out naming its
//! holder; a killed postmaster is restarted; PG* variables cannot redirect
//! a dump; a server lost during migrate is a server failure.

use crate::common::*;
use serde_json::Value;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A temp dir the server user can reach (as root the server runs as
/// `postgres`): used as TMPDIR, so each test has its own runtime dir.
fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("ms-trust-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// `migsnap ARGS` in the project against an embedded server, with TMPDIR
/// (and so the per-user runtime dir) inside `tmp`.
fn embedded(p: &Project, tmp: &Path, args: &[&str]) -> Command {
    let mut c = p.cmd(args);
    c.env_remove("MIGSNAP_SERVER_URL")
        .env_remove("MIGSNAP_SERVER_DIR")
        .env("TMPDIR", tmp);
    c
}

fn status(p: &Project, tmp: &Path) -> Value {
    let out = embedded(p, tmp, &["server", "status", "--json"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("json")
}

/// The runtime dir migsnap would make, made by the test (as root, 0711) so
/// that something can be planted inside it.
fn runtime_dir(tmp: &Path) -> PathBuf {
    let dir = tmp.join(format!("migsnap-{}", nix::unistd::geteuid()));
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).expect("chmod");
    dir
}

fn refused(out: &Output, code: i32, says: &str) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(err.contains(says), "expected `{says}`:\n{err}");
    assert!(err.lines().any(|l| l.starts_with("hint: ")), "{err}");
    err
}

/// Owner, mode and listing of a directory, to prove nothing changed.
fn looks(dir: &Path) -> (u32, u32, Vec<(String, Vec<u8>)>) {
    let meta = std::fs::symlink_metadata(dir).expect("stat");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("ls")
        .flatten()
        .map(|e| {
            let content = std::fs::read(e.path()).unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), content)
        })
        .collect();
    files.sort();
    (meta.uid(), meta.mode() & 0o7777, files)
}

/// A victim directory owned by root with a file in it.
fn victim() -> tempfile::TempDir {
    let v = open_tempdir();
    std::fs::write(v.path().join("precious"), "keep me").expect("write");
    v
}

#[test]
fn a_symlink_at_the_default_server_dir_is_not_followed() {
    if !is_root() {
        eprintln!("skipped: the default server dir is under /tmp only as root");
        return;
    }
    let p = Project::example("trust_link");
    let tmp = open_tempdir();
    let dir = PathBuf::from(status(&p, tmp.path())["dir"].as_str().expect("dir"));
    assert!(
        dir.starts_with(runtime_dir(tmp.path())),
        "{}",
        dir.display()
    );
    let v = victim();
    let before = looks(v.path());
    std::os::unix::fs::symlink(v.path(), &dir).expect("symlink");
    let db = p.db("a");
    let out = embedded(&p, tmp.path(), &["prepare", "--database", &db])
        .output()
        .expect("run");
    refused(&out, 2, "is a symbolic link");
    assert_eq!(looks(v.path()), before, "the link's target is untouched");
}

#[test]
fn a_server_dir_of_another_user_or_open_to_all_is_refused_and_left_alone() {
    if !is_root() {
        eprintln!("skipped: needs root to plant a directory of another user");
        return;
    }
    let p = Project::example("trust_owner");
    let tmp = open_tempdir();
    let dir = PathBuf::from(status(&p, tmp.path())["dir"].as_str().expect("dir"));
    runtime_dir(tmp.path());
    std::fs::create_dir(&dir).expect("mkdir");
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("passwd")
        .expect("nobody");
    std::os::unix::fs::chown(&dir, Some(nobody.uid.as_raw()), None).expect("chown");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let before = looks(&dir);
    let out = embedded(&p, tmp.path(), &["server", "start"])
        .output()
        .expect("run");
    refused(&out, 2, "belongs to `nobody`");
    assert_eq!(looks(&dir), before, "not chowned, not chmodded, not filled");

    // MIGSNAP_SERVER_DIR at an existing shared directory (a 1777 tmpfs).
    let shared = open_tempdir();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod");
    let before = looks(shared.path());
    let out = embedded(&p, tmp.path(), &["server", "start"])
        .env("MIGSNAP_SERVER_DIR", shared.path())
        .output()
        .expect("run");
    refused(&out, 2, "can be written by other users (mode 1777)");
    assert_eq!(looks(shared.path()), before);
}

#[test]
fn the_lock_cannot_be_planted_or_held_forever() {
    if !is_root() {
        eprintln!("skipped: as root only");
        return;
    }
    let p = Project::example("trust_lock");
    let tmp = open_tempdir();
    let lock = PathBuf::from(status(&p, tmp.path())["lock"].as_str().expect("lock"));
    let runtime = runtime_dir(tmp.path());
    assert_eq!(lock.parent(), Some(runtime.as_path()), "the lock is ours");

    // A link at the lock path: not followed, the target not overwritten.
    let v = victim();
    let target = v.path().join("precious");
    std::os::unix::fs::symlink(&target, &lock).expect("symlink");
    let before = looks(v.path());
    let out = embedded(&p, tmp.path(), &["server", "start"])
        .output()
        .expect("run");
    refused(&out, 2, "cannot open the lock file");
    assert_eq!(looks(v.path()), before);
    std::fs::remove_file(&lock).expect("rm");

    // A lock someone holds: the wait ends, naming the holder.
    let held = std::fs::File::create(&lock).expect("create");
    held.lock().expect("lock");
    std::fs::write(&lock, "4242").expect("write pid");
    let out = embedded(&p, tmp.path(), &["server", "start"])
        .env("MIGSNAP_SERVER_LOCK_TIMEOUT", "1")
        .output()
        .expect("run");
    let err = refused(&out, 5, "waiting for the lock");
    assert!(err.contains("held by pid 4242"), "{err}");
    drop(held);

    // The runtime dir itself planted as a link elsewhere.
    let tmp2 = open_tempdir();
    let v2 = victim();
    let before = looks(v2.path());
    std::os::unix::fs::symlink(
        v2.path(),
        tmp2.path()
            .join(format!("migsnap-{}", nix::unistd::geteuid())),
    )
    .expect("symlink");
    let out = embedded(&p, tmp2.path(), &["server", "start"])
        .output()
        .expect("run");
    let err = refused(&out, 2, "is a symbolic link");
    assert_eq!(looks(v2.path()), before);
    // Another user made it first: the way out is another TMPDIR, and the
    // hint says so (a different server dir would not help).
    assert!(err.contains("set TMPDIR"), "{err}");
}

#[test]
fn the_socket_dir_fallback_follows_the_same_rules() {
    if !is_root() {
        eprintln!("skipped: as root only");
        return;
    }
    let p = Project::example("trust_sock");
    let tmp = open_tempdir();
    // Too long for a socket path: the socket goes to the runtime dir.
    let long = tmp.path().join("d".repeat(60)).join("e".repeat(40));
    let v: Value = {
        let out = embedded(&p, tmp.path(), &["server", "status", "--json"])
            .env("MIGSNAP_SERVER_DIR", &long)
            .output()
            .expect("run");
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let url = v["url"].as_str().expect("url");
    let host = url
        .split("host=")
        .nth(1)
        .and_then(|h| h.split('&').next())
        .expect("host")
        .replace("%2F", "/");
    let runtime = runtime_dir(tmp.path());
    assert!(Path::new(&host).starts_with(&runtime), "{host}");
    let victim = victim();
    let before = looks(victim.path());
    std::os::unix::fs::symlink(victim.path(), &host).expect("symlink");
    let out = embedded(&p, tmp.path(), &["server", "start"])
        .env("MIGSNAP_SERVER_DIR", &long)
        .output()
        .expect("run");
    refused(&out, 2, "is a symbolic link");
    assert_eq!(looks(victim.path()), before);
}

/// Stops the private embedded server in `dir` when the test ends.
struct Stop(PathBuf);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = Command::new(bin())
            .args(["server", "stop", "-q"])
            .env("MIGSNAP_SERVER_DIR", &self.0)
            .env_remove("MIGSNAP_SERVER_URL")
            .output();
    }
}

#[test]
fn a_killed_postmaster_is_restarted_by_the_next_prepare() {
    let p = Project::example("trust_zombie");
    let tmp = open_tempdir();
    let dir = tmp.path().join("s");
    let _stop = Stop(dir.clone());
    let db = p.db("a");
    let run = || {
        embedded(&p, tmp.path(), &["prepare", "--database", &db, "--json"])
            .env("MIGSNAP_SERVER_DIR", &dir)
            .output()
            .expect("run")
    };
    let out = run();
    assert!(out.status.success(), "{}", stderr(&out));
    for round in 0..3 {
        let pid: i32 = std::fs::read_to_string(dir.join("data/postmaster.pid"))
            .expect("postmaster.pid")
            .split('\n')
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("pid");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill -9");
        let out = run();
        assert!(
            out.status.success(),
            "round {round}: prepare after kill -9 of the postmaster:\n{}",
            stderr(&out)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["source"], "template", "the server's data survived");
    }
}

#[test]
fn initdb_on_a_full_disk_says_so() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let mnt = open_tempdir();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m,mode=755", "tmpfs"])
        .arg(mnt.path())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs");
        return;
    }
    struct Umount(PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _umount = Umount(mnt.path().to_path_buf());
    let p = Project::example("trust_full");
    let tmp = open_tempdir();
    let out = embedded(&p, tmp.path(), &["server", "start"])
        .env("MIGSNAP_SERVER_DIR", mnt.path().join("s"))
        .output()
        .expect("run");
    let err = refused(&out, 5, "initdb failed");
    assert!(err.contains("is full"), "{err}");
}

#[test]
fn a_bad_cache_dir_starts_no_server() {
    let p = Project::example("trust_early");
    let tmp = open_tempdir();
    let dir = tmp.path().join("s");
    let _stop = Stop(dir.clone());
    // A file where the cache dir should be: not writable as a directory.
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, "x").expect("write");
    let db = p.db("a");
    let out = embedded(&p, tmp.path(), &["prepare", "--database", &db])
        .env("MIGSNAP_SERVER_DIR", &dir)
        .env("MIGSNAP_CACHE_DIR", &file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!dir.exists(), "no server was created or started");
}

#[test]
fn pg_variables_cannot_redirect_the_dump_or_the_command() {
    let p = Project::example("trust_pgenv");
    // Another database, with rows, that a service entry points at.
    let foreign = p.db("foreign");
    psql("postgres", &format!("CREATE DATABASE \"{foreign}\""));
    psql(
        &foreign,
        "CREATE TABLE intruder (secret text); INSERT INTO intruder VALUES ('foreign row')",
    );
    let env = libpq_env(&foreign);
    let get = |k: &str| {
        env.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .expect(k)
    };
    let service = p.path().join("pg_service.conf");
    std::fs::write(
        &service,
        format!(
            "[trap]\nhost={}\nport={}\nuser={}\ndbname={foreign}\n",
            get("PGHOST"),
            get("PGPORT"),
            get("PGUSER")
        ),
    )
    .expect("write service file");
    let steer = |c: &mut Command| {
        c.env("PGSERVICEFILE", &service)
            .env("PGSERVICE", "trap")
            .env("PGDATABASE", &foreign)
            .env("PGOPTIONS", "-c default_transaction_read_only=on");
    };

    let db = p.db("a");
    let mut c = p.cmd(&["prepare", "--database", &db, "--json"]);
    steer(&mut c);
    let out = c.output().expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    p.track(&template_of(&v));
    // Restore the snapshot from the cache: it must be the build, not `foreign`.
    let t = template_of(&v);
    psql(
        "postgres",
        &format!("ALTER DATABASE \"{t}\" IS_TEMPLATE false"),
    );
    psql("postgres", &format!("DROP DATABASE \"{t}\""));
    let mut c = p.cmd(&["prepare", "--database", &db, "--json"]);
    steer(&mut c);
    let out = c.output().expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["source"], "cache");
    let reference = p.db("ref");
    p.plain_migrate(&reference);
    assert_eq!(schema(&db), schema(&reference), "schema");
    assert_eq!(data(&db), data(&reference), "no foreign rows");

    // `run`: CMD reaches the prepared database, whatever PG* said before.
    let mut c = p.cmd(&[
        "run",
        "--database",
        &db,
        "--",
        "psql",
        "-X",
        "-At",
        "-c",
        "SELECT current_database() || ' ' || current_setting('default_transaction_read_only')",
    ]);
    steer(&mut c);
    let out = c.output().expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{db} off")
    );
}

#[test]
fn a_server_lost_during_migrate_is_a_server_failure() {
    let p = Project::example("trust_lost");
    p.write(
        "catalog/migrations/0005_lose_the_server.py",
        r#"from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("catalog", "0004_product_is_active")]
    operations = [migrations.RunSQL("SELECT pg_terminate_backend(pg_backend_pid())")]
"#,
    );
    let db = p.db("a");
    let out = p.run(&["prepare", "--database", &db]);
    let err = refused(&out, 5, "the PostgreSQL server ended the connection");
    assert!(!err.contains("fix the migration"), "{err}");
    assert!(
        !database_exists(&build_name(&p.key())),
        "the build was dropped"
    );
}

/// Issue #21: where a statement of a dump ends is decided the same way by
/// migsnap's restore and by the server. Random dump-like scripts, built from
/// allowed statements whose strings, identifiers, dollar quotes, comments
/// and `BEGIN ATOMIC` bodies hold `;`, `--`, `/*` and `\r`, with the blanks
/// between tokens drawn from spaces, newlines, `\r`, `--` comments ended by
/// `\r` or `\n` and nested block comments. The server runs each whole script
/// (one simple-query message, rolled back) and reports one command per
/// statement it saw; migsnap's statements must be as many, and each must be
/// exactly one command for the server when sent alone. A fixed budget of
/// cases (MIGSNAP_FUZZ_CASES, 200 by default) from a fixed seed, so CI runs
/// the same cases every time; a wider search is one variable away.
#[test]
fn statement_boundaries_agree_with_the_server() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

    const BLANKS: &[&str] = &[
        " ",
        "\n",
        "\r",
        "\r\n",
        "\t",
        " -- c; CREATE ROLE x;\n",
        " -- c; CREATE ROLE x;\r",
        "--\r",
        "/* ; */",
        "/* /* ; */ -- */",
        "\n/*\r; */\n",
    ];
    // `{}` is where a blank goes. Every fragment is allowed by the restore's
    // allow-list and runs without error in a fresh database, in this order
    // or any other after the first.
    const FIRST: &str = "CREATE{}TABLE IF NOT EXISTS \"public\".\"fz;t\"{}(\"a;b\" integer,{}\"c\" text DEFAULT 'x;--y'{})";
    const FRAGMENTS: &[&str] = &[
        "COMMENT ON{}TABLE \"public\".\"fz;t\" IS 'it''s; -- not a comment\r; /* nor */'",
        "COMMENT ON TABLE{}\"public\".\"fz;t\" IS E'\\'; CREATE ROLE x; \\\\'",
        "COMMENT ON COLUMN \"public\".\"fz;t\".\"a;b\"{}IS $$ ; $x$ ; -- $$",
        "COMMENT ON TABLE \"public\".\"fz;t\" IS{}$tag$ $$ ; ' \r $tag$",
        "COMMENT ON TABLE \"public\".\"fz;t\" IS U&'d\\0061t\\+000061 ;'",
        // A string continued after a newline; `\r` is one for the server.
        "COMMENT ON TABLE \"public\".\"fz;t\" IS 'a;'\r'b'",
        "CREATE OR REPLACE FUNCTION \"public\".\"fz_f\"() RETURNS integer{}LANGUAGE sql{}BEGIN ATOMIC{}SELECT CASE WHEN true THEN 1 ELSE 2 END AS \"case\";{}SELECT 2;{}END",
        "CREATE OR REPLACE FUNCTION \"public\".\"fz_g\"() RETURNS integer LANGUAGE plpgsql{}AS $$ BEGIN RETURN 1; END; $$",
        "CREATE OR REPLACE FUNCTION \"public\".\"fz_h\"(\"x\" integer) RETURNS integer LANGUAGE sql{}RETURN \"x\"{}+ 1",
        "SET{}statement_timeout = 0",
        "SELECT pg_catalog.set_config('search_path',{}'', false)",
        "CREATE OR REPLACE VIEW \"public\".\"fz_v\" AS SELECT 1 /* ; /* nested ; */ */ AS \"x\"{}, 2 */* ; */ 3 AS \"y\"",
        "CREATE TABLE IF NOT EXISTS \"public\".\"fz_u\" (\"x\" integer{}, \"y\" integer)",
        "CREATE INDEX IF NOT EXISTS \"fz;i\" ON \"public\".\"fz;t\" USING btree{}(\"a;b\")",
    ];

    let cases = std::env::var("MIGSNAP_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let db = format!("test_fuzz_split_{}", std::process::id());
    psql("postgres", &format!("CREATE DATABASE \"{db}\""));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&db_url(&db), tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
    });
    // Commands the server reports for each message, all in one transaction
    // (rolled back), in order.
    let commands = |messages: &[&str]| -> Result<Vec<usize>, String> {
        rt.block_on(async {
            client
                .batch_execute("BEGIN")
                .await
                .map_err(|e| e.to_string())?;
            let mut counts = Vec::new();
            let mut failed = None;
            for sql in messages {
                match client.simple_query(sql).await {
                    Ok(msgs) => counts.push(
                        msgs.iter()
                            .filter(|m| {
                                matches!(m, tokio_postgres::SimpleQueryMessage::CommandComplete(_))
                            })
                            .count(),
                    ),
                    Err(e) => {
                        failed = Some(format!(
                            "{e}: {:?} in {sql:?}",
                            e.as_db_error().map(|d| d.message())
                        ));
                        break;
                    }
                }
            }
            client
                .batch_execute("ROLLBACK")
                .await
                .map_err(|e| e.to_string())?;
            failed.map_or(Ok(counts), Err)
        })
    };

    let fill = |template: &str, blanks: &[usize]| -> String {
        let mut out = String::new();
        for (i, part) in template.split("{}").enumerate() {
            if i > 0 {
                out.push_str(BLANKS[blanks[i % blanks.len()] % BLANKS.len()]);
            }
            out.push_str(part);
        }
        out
    };
    let script = (
        prop::collection::vec(0..FRAGMENTS.len(), 1..12),
        prop::collection::vec(0..BLANKS.len(), 1..24),
        prop::collection::vec(0..BLANKS.len(), 12),
    );
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let result = runner.run(&script, |(picked, blanks, between)| {
        let mut sql = fill(FIRST, &blanks);
        sql.push(';');
        for (i, f) in picked.iter().enumerate() {
            sql.push_str(BLANKS[between[i % between.len()]]);
            sql.push_str(&fill(FRAGMENTS[*f], &blanks[i % blanks.len()..]));
            sql.push(';');
        }
        sql.push('\n');
        let server = commands(&[&sql]).map_err(|e| {
            TestCaseError::fail(format!("the server refused the script: {e}\n{sql:?}"))
        })?[0];
        let ours = migsnap::pg::restore::statements(&sql)
            .map_err(|e| TestCaseError::fail(format!("migsnap refused it: {e}\n{sql:?}")))?;
        prop_assert_eq!(
            ours.len(),
            server,
            "statement counts differ for {:?}: migsnap {:#?}",
            sql,
            ours
        );
        let alone: Vec<&str> = ours.iter().map(String::as_str).collect();
        let counts = commands(&alone).map_err(|e| {
            TestCaseError::fail(format!("migsnap's statements fail one by one: {e}"))
        })?;
        for (s, n) in ours.iter().zip(counts) {
            prop_assert_eq!(
                n,
                1,
                "one of migsnap's statements is {} for the server: {:?}",
                n,
                s
            );
        }
        Ok(())
    });
    drop(client);
    drop(rt);
    psql("postgres", &format!("DROP DATABASE \"{db}\" WITH (FORCE)"));
    if let Err(e) = result {
        panic!("{e}");
    }
}
