//! The pytest plugin (python/migsnap) with a real pytest-django and
//! pytest-xdist against the example project: the suite in
//! tests/pytest_suite runs in a temp copy of tests/example, and each worker
//! writes a record of what it saw, which these tests check.

use crate::common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

/// A project copy with the suite and a pytest config that enables migsnap.
fn suite_project(test: &str) -> Project {
    let p = Project::example(test);
    copy_dir(&repo().join("tests/pytest_suite"), p.path());
    p.write(
        "pyproject.toml",
        "[tool.pytest.ini_options]\nDJANGO_SETTINGS_MODULE = \"exampleproj.settings\"\nmigsnap = true\n",
    );
    p
}

/// A suite project whose settings name the test database `custom_<name>`
/// (`TEST["NAME"]`, without the `test_` prefix), with `ini` added to its
/// pytest section.
fn custom_name_project(test: &str, ini: &str) -> (Project, String) {
    let p = suite_project(test);
    let name = format!("custom_{}", p.name);
    p.track(&name);
    p.write(
        "suite_settings.py",
        &format!(
            "from exampleproj.settings import *  # noqa: F403\n\n\
             DATABASES[\"default\"][\"TEST\"] = {{\"NAME\": \"{name}\"}}  # noqa: F405\n"
        ),
    );
    p.write(
        "pyproject.toml",
        &format!("[tool.pytest.ini_options]\nDJANGO_SETTINGS_MODULE = \"suite_settings\"\n{ini}"),
    );
    (p, name)
}

/// The key of the suite project as the plugin's runs see it.
fn suite_key(p: &Project) -> String {
    p.key_with_settings("exampleproj.settings")
}

/// INSTALLED_APPS read from the environment: no file migsnap can check
/// changes when it does, so only Django, in the pytest process, sees it.
fn sites_from_the_environment(p: &Project) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(p.path().join("exampleproj/settings.py"))
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(
                b"\nif os.environ.get(\"WITH_SITES\"):\n    INSTALLED_APPS += [\"django.contrib.sites\"]\n",
            )
        })
        .expect("append");
}

/// `python -m pytest` in the project with the plugin from the source tree,
/// the given migsnap binary, and this test's server, cache and database name.
fn pytest_cmd(p: &Project, migsnap: &Path) -> Command {
    let mut c = p.python_cmd(migsnap);
    c.args(PYTEST_WITH_PLUGIN)
        // pytest prints every failure's message in full in its short summary
        // when it sees a CI environment, and trims it to one line otherwise:
        // run as on CI everywhere, the stricter case for "shown once".
        .env("CI", "true")
        .env_remove("BUILD_NUMBER");
    c
}

fn pytest(p: &Project, args: &[&str]) -> (Output, Vec<Value>) {
    let records = tempfile::tempdir().expect("tempdir");
    let out = pytest_cmd(p, &bin())
        .args(args)
        .env("MIGSNAP_SUITE_RECORDS", records.path())
        .output()
        .expect("run pytest");
    let mut found: Vec<Value> = std::fs::read_dir(records.path())
        .expect("records")
        .flatten()
        .map(|e| serde_json::from_slice(&std::fs::read(e.path()).expect("read")).expect("json"))
        .collect();
    found.sort_by_key(|r| r["worker"].as_str().unwrap_or("").to_string());
    (out, found)
}

/// A clone of the current template or a pool member made from it: which
/// one depends on how far the background refill (the plugin passes its
/// worker count as the pool size) has got, and both are a ready snapshot.
fn from_ready_snapshot(source: &Value) -> bool {
    source == "template" || source == "pool"
}

fn report(out: &Output) -> String {
    format!(
        "exit {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn databases(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["database"].as_str().expect("database").to_string())
        .collect()
}

#[test]
fn xdist_workers_get_their_own_clones_and_nothing_migrates() {
    let p = suite_project("pytest");
    let base = format!("test_{}", p.name);
    let workers = [format!("{base}_gw0"), format!("{base}_gw1")];
    for db in &workers {
        p.track(db);
    }
    p.track(&base);
    let template = template_name(&suite_key(&p));
    p.track(&template);

    // 1. Enabled by the ini option; two workers, each running every test.
    let (out, records) = pytest(&p, &["-n", "2", "--dist", "each"]);
    assert!(out.status.success(), "{}", report(&out));
    assert_eq!(databases(&records), workers, "{records:?}");
    for r in &records {
        assert_eq!(r["applied"], serde_json::json!([]), "{r}");
        assert_eq!(r["pre_migrate"], serde_json::json!([]), "{r}");
        assert!(
            r["comment"]
                .as_str()
                .expect("comment")
                .starts_with("migsnap clone of "),
            "{r}"
        );
    }
    let sources: Vec<&str> = records
        .iter()
        .map(|r| r["source"].as_str().expect("source"))
        .collect();
    assert_eq!(
        sources.iter().filter(|s| **s == "cold").count(),
        1,
        "one worker built the snapshot, the other cloned it: {sources:?}"
    );
    assert!(database_exists(&template));
    for db in &workers {
        assert!(
            !database_exists(db),
            "{db} is dropped at the end without --reuse-db"
        );
    }

    // 2. --reuse-db keeps the clones, as pytest-django does.
    let (out, records) = pytest(&p, &["-n", "2", "--dist", "each", "--reuse-db"]);
    assert!(out.status.success(), "{}", report(&out));
    assert_eq!(databases(&records), workers);
    assert!(
        records.iter().all(|r| from_ready_snapshot(&r["source"])),
        "{records:?}"
    );
    for db in &workers {
        assert!(database_exists(db), "{db} is kept with --reuse-db");
    }

    // 3. --create-db rebuilds the snapshot (once, in the controller): the
    // template is a new database afterwards.
    let oid = |db: &str| {
        psql(
            "postgres",
            &format!("SELECT oid FROM pg_database WHERE datname = '{db}'"),
        )
    };
    let before = oid(&template);
    let (out, records) = pytest(&p, &["-n", "2", "--dist", "each", "--create-db"]);
    assert!(out.status.success(), "{}", report(&out));
    assert_eq!(databases(&records), workers);
    // The workers clone what the controller rebuilt; none rebuilds again.
    assert!(
        records.iter().all(|r| from_ready_snapshot(&r["source"])),
        "{records:?}"
    );
    let after = oid(&template);
    assert!(
        !after.is_empty() && after != before,
        "template rebuilt: {before} -> {after}"
    );
    assert!(
        !database_exists(&base),
        "the controller's scratch clone is dropped"
    );
}

#[test]
fn the_migration_counter_catches_a_plain_pytest_django_run() {
    // Control: without migsnap, pytest-django migrates, and the suite's
    // check fails. This proves the check above can fail.
    let p = suite_project("pytest_ctl");
    p.track(&format!("test_{}", p.name));
    let (out, records) = pytest(&p, &["--no-migsnap", "-k", "no_migration_ran"]);
    assert_eq!(out.status.code(), Some(1), "{}", report(&out));
    assert_eq!(records.len(), 1);
    let applied = records[0]["applied"].as_array().expect("applied");
    assert!(
        applied
            .iter()
            .any(|a| a == "catalog.0002_trigram_name_index"),
        "{records:?}"
    );
    assert!(
        !p.cache.path().join(format!("{}.json", p.key())).exists(),
        "migsnap did not run"
    );
}

#[test]
fn plugin_reports_a_missing_binary_clearly() {
    let p = suite_project("pytest_nobin");
    let missing = Path::new("/nonexistent/migsnap");
    let out = pytest_cmd(&p, missing)
        .args(["-k", "data_migration"])
        .output()
        .expect("run pytest");
    assert!(!out.status.success(), "{}", report(&out));
    let text = report(&out);
    assert!(text.contains("MIGSNAP_BIN=/nonexistent/migsnap"), "{text}");
}

#[test]
fn test_name_from_the_settings_is_respected() {
    let (p, name) = custom_name_project("pytest_name", "");
    // Enabled by the flag this time; no xdist workers.
    let (out, records) = pytest(&p, &["--migsnap"]);
    assert!(out.status.success(), "{}", report(&out));
    assert_eq!(databases(&records), vec![name.clone()]);
    assert_eq!(records[0]["applied"], serde_json::json!([]));
    assert!(!database_exists(&name), "dropped at the end of the session");
}

#[test]
fn a_database_django_would_still_migrate_is_rebuilt_not_tested_on() {
    let p = suite_project("pytest_verify");
    let db = format!("test_{}", p.name);
    p.track(&db);
    sites_from_the_environment(&p);
    let (out, records) = pytest(&p, &["-k", "data_migration"]);
    assert!(out.status.success(), "{}", report(&out));
    // Just built: checked against Django's loader. From a ready snapshot
    // whose build saw the same apps and modules as this process: checked
    // against that record instead (the loader imports every migration).
    assert_eq!(records[0]["verified"], "loader");
    let (out, records) = pytest(&p, &["-k", "data_migration"]);
    assert!(out.status.success(), "{}", report(&out));
    assert!(from_ready_snapshot(&records[0]["source"]), "{records:?}");
    assert_eq!(records[0]["verified"], "record");

    // Opted out (pyproject.toml is a key input: the ini option comes from
    // the command line here), the stale clone is used as it is.
    let records = tempfile::tempdir().expect("tmp");
    let out = pytest_cmd(&p, &bin())
        .args([
            "-k",
            "data_migration",
            "--reuse-db",
            "-o",
            "migsnap_verify=false",
        ])
        .env("WITH_SITES", "1")
        .env("MIGSNAP_SUITE_RECORDS", records.path())
        .output()
        .expect("run pytest");
    assert!(out.status.success(), "{}", report(&out));
    assert_eq!(
        psql(&db, "SELECT to_regclass('django_site') IS NULL"),
        "t",
        "control: without the check the tests ran on the old schema"
    );

    let out = pytest_cmd(&p, &bin())
        .args(["-k", "data_migration", "--reuse-db"])
        .env("WITH_SITES", "1")
        .env("MIGSNAP_SUITE_RECORDS", records.path())
        .output()
        .expect("run pytest");
    let text = report(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("sites.0001_initial") && text.contains("rebuilding the snapshot"),
        "{text}"
    );
    assert_eq!(psql(&db, "SELECT count(*) FROM django_site"), "1");
}

/// How many lines of `text` contain `needle`.
fn lines_with(text: &str, needle: &str) -> usize {
    text.split('\n').filter(|l| l.contains(needle)).count()
}

#[test]
fn migsnap_speaks_through_pytest_progress_warnings_and_one_summary_line() {
    let p = suite_project("pytest_voice");
    let db = format!("test_{}", p.name);
    p.track(&db);
    let key = suite_key(&p);
    p.track(&template_name(&key));

    // 1. A cold build: its progress is on pytest's terminal (stdout, past
    // the capture), not swallowed; then one summary line for the run.
    let (out, _) = pytest(&p, &["-k", "data_migration"]);
    let text = report(&out);
    assert!(out.status.success(), "{text}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("migsnap: [1/") && stdout.contains("migsnap: applied "),
        "{text}"
    );
    assert_eq!(lines_with(&stdout, "migsnap: slowest: "), 1, "{text}");
    assert_eq!(
        lines_with(&stdout, &format!("migsnap: {db} from cold in ")),
        1,
        "{text}"
    );

    // 2. Warm and -q: no progress, still the summary.
    let (out, _) = pytest(&p, &["-q", "-k", "data_migration"]);
    let text = report(&out);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("migsnap: [1/"), "{text}");
    assert!(
        ["template", "pool"]
            .iter()
            .any(|s| text.contains(&format!("migsnap: {db} from {s} in "))),
        "{text}"
    );

    // 3. A damaged cache: the warning shows even with -q and a passing run.
    drop_template(&key);
    let dump = p.cache.path().join(format!("{key}.sql.zst"));
    let bytes = std::fs::read(&dump).expect("read dump");
    std::fs::write(&dump, &bytes[..bytes.len() / 2]).expect("truncate dump");
    let (out, _) = pytest(&p, &["-q", "-k", "data_migration"]);
    let text = report(&out);
    assert!(out.status.success(), "{text}");
    assert_eq!(lines_with(&text, "migsnap: warning: "), 1, "{text}");
    assert!(text.contains("discarding it"), "{text}");
    assert!(!text.contains("migsnap: [1/"), "-q: no progress\n{text}");
    assert!(
        text.contains(&format!("migsnap: {db} from cold in ")),
        "{text}"
    );
}

#[test]
fn under_xdist_one_worker_draws_progress_and_every_worker_warns() {
    let p = suite_project("pytest_xvoice");
    let key = suite_key(&p);
    p.track(&template_name(&key));
    let base = format!("test_{}", p.name);
    for w in ["gw0", "gw1"] {
        p.track(&format!("{base}_{w}"));
    }
    sites_from_the_environment(&p);
    let args = ["-n", "2", "--dist", "each", "-k", "data_migration"];

    // 1. Both workers need the database; one builds the snapshot, the other
    // waits for it. Only the builder's progress is drawn, tagged with its id.
    let (out, records) = pytest(&p, &args);
    let text = report(&out);
    assert!(out.status.success(), "{text}");
    assert_eq!(records.len(), 2, "{text}");
    let drawn: Vec<&str> = text
        .split('\n')
        .filter(|l| l.contains("] migsnap: [1/"))
        .collect();
    assert_eq!(drawn.len(), 1, "one build, drawn once: {text}");
    let tag = &drawn[0][..drawn[0].find(']').expect("tag") + 1];
    assert!(
        text.split('\n')
            .filter(|l| l.contains("] migsnap: "))
            .all(|l| l.starts_with(tag)),
        "only {tag} draws: {text}"
    );
    assert!(!text.contains("waiting for another migsnap"), "{text}");
    assert_eq!(
        lines_with(&text, &format!("migsnap: {base}_gw0 from ")),
        1,
        "{text}"
    );
    assert!(text.contains(&format!("{base}_gw1 from ")), "{text}");

    // 2. Each worker finds its clone stale (an app enabled by the
    // environment): both say so, not only the one drawing.
    let out = pytest_cmd(&p, &bin())
        .args(args)
        .arg("--reuse-db")
        .env("WITH_SITES", "1")
        .output()
        .expect("run pytest");
    let text = report(&out);
    assert!(out.status.success(), "{text}");
    for w in ["[gw0]", "[gw1]"] {
        assert_eq!(
            text.split('\n')
                .filter(|l| l.starts_with(w) && l.contains("rebuilding the snapshot"))
                .count(),
            1,
            "{w} warns: {text}"
        );
    }
}

#[test]
fn nomigrations_is_refused_once_at_start_up() {
    let p = suite_project("pytest_nomig");
    let (out, records) = pytest(&p, &["--nomigrations"]);
    let text = report(&out);
    // pytest's exit code for a usage error, before any test ran.
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert_eq!(
        lines_with(&text, "--nomigrations and --migsnap exclude each other"),
        1,
        "{text}"
    );
    assert!(text.contains("hint: "), "{text}");
    assert!(records.is_empty(), "no test ran: {records:?}");
}

#[test]
fn a_failed_prepare_is_reported_in_full_once_not_for_every_test() {
    let p = suite_project("pytest_fail");
    p.write(
        "catalog/migrations/0005_broken.py",
        "from django.db import migrations\n\nclass Migration(migrations.Migration:\n",
    );
    let (out, _) = pytest(&p, &[]);
    let text = report(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    // Five database tests error; migsnap's report (its hint is its last
    // line) is shown once, the other four point at it in one line.
    assert_eq!(lines_with(&text, "hint: "), 1, "{text}");
    assert_eq!(lines_with(&text, "shown in full for "), 4, "{text}");
    assert!(text.contains("5 errors"), "{text}");
}

#[test]
fn an_existing_database_without_the_test_prefix_is_replaced_with_migsnap_force() {
    let (p, name) = custom_name_project("pytest_force", "migsnap = true\n");
    // Left by a plain pytest-django run, say: not a migsnap clone, no test_ prefix.
    let leftover = || psql("postgres", &format!("CREATE DATABASE \"{name}\""));
    leftover();

    let (out, _) = pytest(&p, &["-k", "data_migration or orm_works"]);
    let text = report(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("refusing to replace"), "{text}");
    assert_eq!(
        lines_with(&text, "--migsnap-force"),
        1,
        "the hint says how: {text}"
    );
    assert!(database_exists(&name), "left alone");

    for how in [&["--migsnap-force"][..], &["-o", "migsnap_force=true"][..]] {
        let mut args = vec!["-k", "data_migration or orm_works"];
        args.extend_from_slice(how);
        let (out, records) = pytest(&p, &args);
        let text = report(&out);
        assert!(out.status.success(), "{how:?}: {text}");
        assert_eq!(databases(&records), vec![name.clone()], "{how:?}");
        assert!(
            records[0]["comment"]
                .as_str()
                .expect("comment")
                .starts_with("migsnap clone of "),
            "{how:?}: replaced by a clone: {records:?}"
        );
        // The clone is dropped at the end; leave one again for the next way.
        leftover();
    }
}

/// A test module whose import (during collection) waits, up to `secs`, for
/// the database `db` to appear on the test server: it appears only if the
/// plugin prepares it while pytest collects.
fn collection_waits_for(p: &Project, db: &str, secs: u32) {
    p.write(
        "test_collection_waits.py",
        &format!(
            "import time\n\nimport psycopg\n\n\
             deadline = time.monotonic() + {secs}\n\
             while True:\n    \
                 with psycopg.connect(dbname=\"postgres\") as c:\n        \
                     if c.execute(\"SELECT 1 FROM pg_database WHERE datname = %s\", [\"{db}\"]).fetchone():\n            \
                         break\n    \
                 if time.monotonic() > deadline:\n        \
                     raise RuntimeError(\"{db} was not prepared while pytest collected\")\n    \
                 time.sleep(0.05)\n\n\
             def test_nothing():\n    pass\n"
        ),
    );
}

#[test]
fn the_database_is_prepared_while_pytest_collects() {
    let p = suite_project("pytest_early");
    let db = format!("test_{}", p.name);
    p.track(&db);
    // A cold build included: collection cannot end before the database is
    // there, so only a prepare started before collection lets it pass.
    collection_waits_for(&p, &db, 300);
    let (out, records) = pytest(&p, &[]);
    let text = report(&out);
    assert!(out.status.success(), "{text}");
    assert_eq!(databases(&records), vec![db.clone()]);
    assert_eq!(records[0]["applied"], serde_json::json!([]), "{text}");
    assert_eq!(
        lines_with(&text, &format!("migsnap: {db} from cold in ")),
        1,
        "{text}"
    );
    assert_eq!(lines_with(&text, "(tests waited "), 1, "{text}");
    assert!(!database_exists(&db), "dropped at the end of the session");

    // Opted out, the database is made when the first test needs it: after
    // collection, which now gives up waiting for it.
    collection_waits_for(&p, &db, 2);
    let (out, _) = pytest(&p, &["-o", "migsnap_early=false"]);
    let text = report(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("was not prepared while pytest collected"),
        "{text}"
    );
}

/// The current key's pool members that are ready (closed to connections).
fn ready_members(key: &str) -> usize {
    psql(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'migsnap\\_pool\\_%' \
             AND NOT datallowconn \
             AND shobj_description(oid, 'pg_database') LIKE 'migsnap pool key={key} %'"
        ),
    )
    .trim()
    .parse()
    .expect("a count")
}

/// Issue #24: `prepare` starts with the session only when it has work that
/// takes time (a build, a restore, a clone). When a ready pool member
/// waits, the early one does nothing and the fixture takes the member.
#[test]
fn the_early_prepare_starts_only_when_a_ready_pool_member_does_not_wait() {
    let p = suite_project("pytest_early_ready");
    let db = format!("test_{}", p.name);
    p.track(&db);
    let key = suite_key(&p);
    p.track(&template_name(&key));
    // Nothing built: the build starts before collection, as always.
    let (out, records) = pytest(&p, &["-k", "data_migration"]);
    let text = report(&out);
    assert!(out.status.success(), "{text}");
    assert_eq!(records[0]["source"], "cold", "{text}");
    assert_eq!(records[0]["early"], true, "{text}");
    // The plugin asked for a pool of 1 (its worker count): wait for the
    // background refill to make the member.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while ready_members(&key) < 1 {
        assert!(std::time::Instant::now() < deadline, "no pool member made");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // A member waits: nothing is prepared early; the fixture takes it.
    let (out, records) = pytest(&p, &["-k", "data_migration"]);
    let text = report(&out);
    assert!(out.status.success(), "{text}");
    assert_eq!(records[0]["source"], "pool", "{text}");
    assert_eq!(records[0]["early"], false, "{text}");
    assert_eq!(
        lines_with(&text, &format!("migsnap: {db} from pool in ")),
        1,
        "{text}"
    );
    assert!(!database_exists(&db), "dropped at the end of the session");
    // The refill's members are this test's to remove.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while ready_members(&key) < 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let members = psql(
        "postgres",
        &format!(
            "SELECT datname FROM pg_database WHERE shobj_description(oid, 'pg_database') \
             LIKE 'migsnap pool key={key} %'"
        ),
    );
    for member in members.lines() {
        psql("postgres", &format!("DROP DATABASE IF EXISTS \"{member}\""));
    }
}

#[test]
fn an_early_database_no_test_uses_is_dropped() {
    let p = suite_project("pytest_early_unused");
    let db = format!("test_{}", p.name);
    p.track(&db);
    // Warm the snapshot, so the early prepare has time to finish.
    let (out, _) = pytest(&p, &["-k", "data_migration"]);
    assert!(out.status.success(), "{}", report(&out));
    // A session with no database test (and without the suite's conftest,
    // whose autouse fixture wants the database).
    p.write(
        "test_plain.py",
        "def test_plain():\n    assert 1 + 1 == 2\n",
    );
    collection_waits_for(&p, &db, 300);
    // No pool (the plugin's --pool-default yields to MIGSNAP_POOL): the
    // early prepare has a clone to make, not a ready member to leave.
    let out = pytest_cmd(&p, &bin())
        .args(["--noconftest", "test_collection_waits.py", "test_plain.py"])
        .env("MIGSNAP_POOL", "0")
        .output()
        .expect("run pytest");
    let text = report(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("2 passed"), "{text}");
    assert!(!database_exists(&db), "no test used it: dropped\n{text}");
}

/// Teardown drops the clone only if `migsnap drop` finds migsnap's mark on
/// it: a test that put its own comment there (one starting the way the
/// clone mark does, which the plugin once took for it) keeps its database,
/// with a warning saying why.
#[test]
fn teardown_keeps_a_database_that_lost_migsnaps_mark() {
    let p = suite_project("pytest_teardown_mark");
    let db = format!("test_{}", p.name);
    p.track(&db);
    p.write(
        "test_unmark.py",
        "import pytest\n\n\n\
         @pytest.mark.django_db(transaction=True)\n\
         def test_unmark():\n    \
             from django.db import connection\n\n    \
             with connection.cursor() as cursor:\n        \
                 cursor.execute(\n            \
                     'COMMENT ON DATABASE \"%s\" IS %%s' % connection.settings_dict['NAME'],\n            \
                     ['migsnap clone of my own data'],\n        \
                 )\n",
    );
    let (out, _) = pytest(&p, &["test_unmark.py"]);
    let text = report(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "migsnap: not dropping `{db}`: refusing to drop database `{db}`: it does not carry migsnap's mark"
        )),
        "{text}"
    );
    assert!(database_exists(&db), "{text}");

    // With its mark, the clone goes at the end of the run.
    psql("postgres", &format!("DROP DATABASE \"{db}\""));
    let (out, _) = pytest(&p, &["-k", "data_migration"]);
    assert!(out.status.success(), "{}", report(&out));
    assert!(!database_exists(&db), "{}", report(&out));
}

#[test]
fn a_test_database_renamed_by_a_conftest_gets_its_own_clone() {
    let p = suite_project("pytest_early_renamed");
    let guessed = format!("test_{}", p.name);
    let renamed = format!("{guessed}_renamed");
    p.track(&guessed);
    p.track(&renamed);
    // pytest-django's documented hook for changing the test database
    // settings: the plugin's early guess of the name is then wrong.
    std::fs::OpenOptions::new()
        .append(true)
        .open(p.path().join("conftest.py"))
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(
                b"\n\n@pytest.fixture(scope=\"session\")\n\
                  def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):\n    \
                      from django.conf import settings\n\n    \
                      db = settings.DATABASES[\"default\"]\n    \
                      db[\"TEST\"][\"NAME\"] = \"test_%s_renamed\" % db[\"NAME\"]\n",
            )
        })
        .expect("append");
    let (out, records) = pytest(&p, &["--reuse-db"]);
    let text = report(&out);
    assert!(out.status.success(), "{text}");
    assert_eq!(databases(&records), vec![renamed.clone()], "{text}");
    assert!(database_exists(&renamed), "kept with --reuse-db");
    // The early clone under the guessed name was made for nothing: it goes,
    // --reuse-db or not (it is a fresh clone, nothing anyone kept).
    assert!(
        !database_exists(&guessed),
        "the unused early clone is dropped"
    );
    let (out, records) = pytest(&p, &[]);
    let text = report(&out);
    assert!(out.status.success(), "{text}");
    assert_eq!(databases(&records), vec![renamed.clone()], "{text}");
    assert!(!database_exists(&renamed), "dropped at the end");
    assert!(
        !database_exists(&guessed),
        "the unused early clone is dropped"
    );
}

/// Two tests in order: the first commits a row and records the database's
/// oid; the second must find a new database without that row, with the
/// rows the data migration wrote (a flush would have emptied them).
const FRESH_TESTS: &str = r#"from django.db import connection

SEEN = []


def _oid():
    with connection.cursor() as c:
        c.execute("SELECT oid FROM pg_database WHERE datname = current_database()")
        return c.fetchone()[0]


def test_a_commits(FIXTURE):
    from catalog.models import Category

    Category.objects.create(slug="fresh-a", name="A")
    SEEN.append(_oid())


def test_b_starts_fresh(FIXTURE):
    from catalog.models import Category

    assert not Category.objects.filter(slug="fresh-a").exists(), "a's row is still there"
    assert Category.objects.filter(slug="books").exists(), "the data migration's rows are gone"
    assert _oid() != SEEN[0], "the same database"
"#;

/// A test that leaves a connection Django does not know about open, so its
/// database cannot be renamed aside after it, then one that would see its
/// row. (Both `migsnap_fresh_db`: pytest-django runs `db` tests first.)
const FRESH_LEAK_TESTS: &str = r#"from django.db import connection

LEAKED = []


def test_a_leaks_a_connection(migsnap_fresh_db):
    from catalog.models import Category

    Category.objects.create(slug="leaked-a", name="A")
    LEAKED.append(connection.Database.connect(**connection.get_connection_params()))


def test_b_would_see_a_row(migsnap_fresh_db):
    from catalog.models import Category

    assert not Category.objects.filter(slug="leaked-a").exists(), "a's row is still there"
"#;

#[test]
fn a_failed_fresh_db_swap_fails_the_later_database_tests() {
    let p = suite_project("pytest_fresh_leak");
    let db = format!("test_{}", p.name);
    p.track(&db);
    p.write("test_leak.py", FRESH_LEAK_TESTS);
    let (out, _) = pytest(&p, &["test_leak.py"]);
    let text = report(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    // a's teardown reports the failed swap; b is not run on a's leftovers
    // (it would fail on a's row, not on this).
    assert!(
        text.contains(&format!(
            "the database `{db}` still holds what test_leak.py::test_a_leaks_a_connection left"
        )),
        "{text}"
    );
    assert!(!text.contains("a's row is still there"), "{text}");
    assert!(
        text.contains("1 passed") && text.contains("2 errors"),
        "{text}"
    );
}

#[test]
fn migsnap_fresh_db_swaps_in_a_new_clone_after_each_test() {
    let p = suite_project("pytest_fresh");
    let db = format!("test_{}", p.name);
    p.track(&db);
    p.write(
        "test_fresh.py",
        &FRESH_TESTS.replace("FIXTURE", "migsnap_fresh_db"),
    );
    let (out, records) = pytest(&p, &["test_fresh.py"]);
    let text = report(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("2 passed"), "{text}");
    assert_eq!(databases(&records), vec![db.clone()]);
    assert_eq!(lines_with(&text, ", then 2 fresh ("), 1, "{text}");
    assert!(!database_exists(&db), "dropped at the end of the session");

    // The control: transactional_db flushes, and the flush also empties
    // what the data migration wrote; the same tests fail on that.
    p.write(
        "test_fresh.py",
        &FRESH_TESTS.replace("FIXTURE", "transactional_db"),
    );
    let (out, _) = pytest(&p, &["test_fresh.py"]);
    let text = report(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("the data migration's rows are gone"),
        "{text}"
    );
}

/// django-test-migrations' API over `prepare --at`: the old state and
/// database at catalog.0002 (a build the first time, a clone the second),
/// the tested migration applied in the test, and a fully migrated database
/// for the tests after (a fresh clone, not a migrate).
const MIGRATOR_TESTS: &str = r#"from django.db import connection

SOURCES = []


def _catalog_migrations():
    with connection.cursor() as c:
        c.execute("SELECT name FROM django_migrations WHERE app = 'catalog' ORDER BY name")
        return [r[0] for r in c.fetchall()]


def test_a_initial_then_tested(migsnap_migrator):
    old = migsnap_migrator.apply_initial_migration(("catalog", "0002_trigram_name_index"))
    SOURCES.append(migsnap_migrator.prepared["source"])
    assert _catalog_migrations() == ["0001_initial", "0002_trigram_name_index"]
    Category = old.apps.get_model("catalog", "Category")
    assert Category.objects.count() == 0, "the data migration has not run yet"
    assert "is_active" not in [f.name for f in old.apps.get_model("catalog", "Product")._meta.fields]
    new = migsnap_migrator.apply_tested_migration(("catalog", "0003_default_categories"))
    Category = new.apps.get_model("catalog", "Category")
    assert sorted(Category.objects.values_list("slug", flat=True)) == ["books", "electronics", "garden"]


def test_b_initial_again_is_a_clone(migsnap_migrator):
    migsnap_migrator.apply_initial_migration([("catalog", "0002_trigram_name_index")])
    SOURCES.append(migsnap_migrator.prepared["source"])
    assert _catalog_migrations() == ["0001_initial", "0002_trigram_name_index"]
    assert SOURCES == ["cold", "template"], SOURCES


def test_c_fully_migrated_after(migsnap_fresh_db):
    from catalog.models import Category, Product

    assert _catalog_migrations()[-1] == "0004_product_is_active"
    assert Product.objects.filter(is_active=True).count() == 0
    assert Category.objects.filter(slug="books").exists()
"#;

#[test]
fn migsnap_migrator_starts_from_a_prepare_at_clone_and_resets_to_a_full_one() {
    let p = suite_project("pytest_migrator");
    let db = format!("test_{}", p.name);
    p.track(&db);
    p.write("test_migrator.py", MIGRATOR_TESTS);
    let (out, _) = pytest(&p, &["test_migrator.py"]);
    let text = report(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("3 passed"), "{text}");
    // The database at catalog.0002 is a snapshot of its own in the cache.
    let at_snapshots = std::fs::read_dir(p.cache.path())
        .expect("cache dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| serde_json::from_slice::<Value>(&std::fs::read(e.path()).ok()?).ok())
        .filter(|m| m["at"] == serde_json::json!(["catalog.0002_trigram_name_index"]))
        .count();
    assert_eq!(at_snapshots, 1, "{text}");
    for e in std::fs::read_dir(p.cache.path())
        .expect("cache dir")
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(key) = name.strip_suffix(".json").filter(|k| k.len() == 64) {
            p.track(&template_name(key));
        }
    }
    assert!(!database_exists(&db), "dropped at the end of the session");
}

#[test]
fn a_cold_build_whose_json_result_outgrows_a_pipe_does_not_hang_the_plugin() {
    // 400 more migrations with long names: the cold build's JSON result
    // lists each one (applied, and its cost), well over the 64 KiB a pipe
    // holds. The plugin read migsnap's stderr to its end before stdout, so
    // migsnap blocked writing the result and both waited for ever.
    let p = suite_project("pytest_big_result");
    let mut previous = "0002_payload_gin_index".to_string();
    for n in 3..403 {
        let name = format!(
            "{n:04}_a_long_descriptive_migration_name_that_fills_the_json_result_{}",
            "x".repeat(40)
        );
        p.write(
            &format!("audit/migrations/{name}.py"),
            &format!(
                "from django.db import migrations\n\n\nclass Migration(migrations.Migration):\n    \
                 dependencies = [(\"audit\", \"{previous}\")]\n    \
                 operations = [migrations.RunSQL(\"SELECT 1\", migrations.RunSQL.noop)]\n"
            ),
        );
        previous = name;
    }
    let db = format!("test_{}", p.name);
    p.track(&db);
    let records = tempfile::tempdir().expect("tempdir");
    let mut child = pytest_cmd(&p, &bin())
        .args(["-k", "data_migration", "--reuse-db"])
        .env("MIGSNAP_SUITE_RECORDS", records.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run pytest");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = std::process::Command::new("pkill")
                .args(["-f", &format!("prepare --json --database {db}")])
                .status();
            panic!("pytest still running after 10 minutes: the plugin hangs on the result");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(status.success(), "pytest failed: {status}");
    assert_eq!(
        psql(
            &db,
            "SELECT count(*) FROM django_migrations WHERE app = 'audit'"
        ),
        "402"
    );
}

/// A data migration for the example project: every product's SKU in
/// capitals, so a test can create lower-case ones before it and see them
/// changed after.
const UPPER_SKUS: &str = r#"from django.db import migrations
from django.db.models.functions import Upper


def upper_skus(apps, schema_editor):
    Product = apps.get_model("catalog", "Product")
    Product.objects.using(schema_editor.connection.alias).update(sku=Upper("sku"))


class Migration(migrations.Migration):
    dependencies = [("catalog", "0004_product_is_active")]
    operations = [migrations.RunPython(upper_skus, migrations.RunPython.noop)]
"#;

/// django-test-migrations' `MigratorTestCase` API under `manage.py test`:
/// rows made in the old state by `prepare()`, transformed by the tested
/// migration; the first test's database at 0004 is a build, the second's a
/// clone. `test_z_after` (a later module, the same kind of test case, so
/// it runs after) sees a fully migrated database with the rows 0003 seeded:
/// swapped in, not flushed.
const MIGRATOR_TESTCASE: &str = r#"from django.db import connection

from migsnap.django import MigratorTestCase

SOURCES = []


class UpperSkus(MigratorTestCase):
    migrate_from = ("catalog", "0004_product_is_active")
    migrate_to = ("catalog", "0005_upper_skus")

    def prepare(self):
        SOURCES.append(self._migrator.prepared["source"])
        with connection.cursor() as c:
            c.execute("SELECT max(name) FROM django_migrations WHERE app = 'catalog'")
            assert c.fetchone()[0] == "0004_product_is_active"
        Category = self.old_state.apps.get_model("catalog", "Category")
        Product = self.old_state.apps.get_model("catalog", "Product")
        books = Category.objects.get(slug="books")
        for sku in ("ab-1", "cd-2"):
            Product.objects.create(category=books, sku=sku, name=sku, price=1, brand="b")

    def test_a_skus_are_upper_case(self):
        Product = self.new_state.apps.get_model("catalog", "Product")
        self.assertEqual(sorted(Product.objects.values_list("sku", flat=True)), ["AB-1", "CD-2"])

    def test_b_the_second_start_is_a_clone(self):
        self.assertEqual(SOURCES, ["cold", "template"])
"#;

const AFTER_MIGRATOR: &str = r#"from django.db import connection
from django.test import TransactionTestCase


class After(TransactionTestCase):
    def test_z_fully_migrated_and_not_flushed(self):
        from catalog.models import Category, Product

        with connection.cursor() as c:
            c.execute("SELECT max(name) FROM django_migrations WHERE app = 'catalog'")
            self.assertEqual(c.fetchone()[0], "0005_upper_skus")
        self.assertEqual(Product.objects.count(), 0)
        self.assertTrue(Category.objects.filter(slug="books").exists())
"#;

/// `manage.py test ARGS` in the example project, its database on the test
/// server.
fn manage_test(p: &Project, args: &[&str]) -> Output {
    p.python_cmd(&bin())
        .args(["manage.py", "test"])
        .args(args)
        .output()
        .expect("run manage.py test")
}

#[test]
fn migrator_test_case_runs_a_data_migration_test_from_a_prepare_at_clone() {
    let p = Project::example("migrator_testcase");
    let db = format!("test_{}", p.name);
    p.track(&db);
    p.write("catalog/migrations/0005_upper_skus.py", UPPER_SKUS);
    p.write("test_migrator.py", MIGRATOR_TESTCASE);
    p.write("test_zafter.py", AFTER_MIGRATOR);
    let out = manage_test(
        &p,
        &["--testrunner", "migsnap.django.DiscoverRunner", "-v", "2"],
    );
    let text = report(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Ran 3 tests"), "{text}");
    let mut at_snapshots = 0;
    for e in std::fs::read_dir(p.cache.path())
        .expect("cache dir")
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(key) = name.strip_suffix(".json").filter(|k| k.len() == 64) else {
            continue;
        };
        p.track(&template_name(key));
        let meta: Value =
            serde_json::from_slice(&std::fs::read(e.path()).expect("read")).expect("snapshot json");
        if meta["at"] == serde_json::json!(["catalog.0004_product_is_active"]) {
            at_snapshots += 1;
        }
    }
    assert_eq!(
        at_snapshots, 1,
        "the database at 0004 is a snapshot: {text}"
    );
    assert!(!database_exists(&db), "dropped at the end of the run");

    // Under Django's own runner the database is Django's: the test case
    // says what it needs, and no test runs.
    let out = manage_test(&p, &["test_migrator", "-v", "1"]);
    let text = report(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("needs migsnap's test runner")
            && text.contains("--testrunner migsnap.django.DiscoverRunner"),
        "{text}"
    );
}
