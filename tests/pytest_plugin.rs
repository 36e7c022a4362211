//! The pytest plugin (python/migsnap) with a real pytest-django and
//! pytest-xdist against the example project: the suite in
//! tests/pytest_suite runs in a temp copy of tests/example, and each worker
//! writes a record of what it saw, which these tests check.

mod common;

use common::*;
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

/// `python -m pytest ARGS` in the project, with the plugin loaded from the
/// source tree and the freshly built binary; returns the output and the
/// worker records (worker id -> record).
/// `python -m pytest` in the project with the plugin from the source tree,
/// the given migsnap binary, and this test's server, cache and database name.
fn pytest_cmd(p: &Project, migsnap: &Path) -> Command {
    let mut c = Command::new(python());
    c.args([
        "-m",
        "pytest",
        "-p",
        "migsnap.pytest_plugin",
        "-p",
        "no:cacheprovider",
    ])
    .current_dir(p.path())
    .env("PYTHONPATH", repo().join("python"))
    .env("MIGSNAP_BIN", migsnap)
    .env("MIGSNAP_SERVER_URL", server_url())
    .env("MIGSNAP_CACHE_DIR", p.cache.path())
    // The example settings take NAME from PGDATABASE: test_<this> is
    // then unique to this test.
    .envs(libpq_env(&p.name))
    .env_remove("DJANGO_SETTINGS_MODULE")
    .env_remove("MIGSNAP_PYTHON");
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
    // pytest-django exports the ini's settings module, and the settings
    // module is part of the key.
    let out = p
        .cmd(&["key"])
        .env("DJANGO_SETTINGS_MODULE", "exampleproj.settings")
        .output()
        .expect("key");
    let template = template_name(String::from_utf8_lossy(&out.stdout).trim());
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
        records.iter().all(|r| r["source"] == "template"),
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
        records.iter().all(|r| r["source"] == "template"),
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
    let p = suite_project("pytest_name");
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
        "[tool.pytest.ini_options]\nDJANGO_SETTINGS_MODULE = \"suite_settings\"\n",
    );
    // Enabled by the flag this time; no xdist workers.
    let (out, records) = pytest(&p, &["--migsnap"]);
    assert!(out.status.success(), "{}", report(&out));
    assert_eq!(databases(&records), vec![name.clone()]);
    assert_eq!(records[0]["applied"], serde_json::json!([]));
    assert!(!database_exists(&name), "dropped at the end of the session");
}

#[test]
fn a_database_django_would_still_migrate_is_rebuilt_not_tested_on() {
    // INSTALLED_APPS read from the environment: no file migsnap can check
    // changes when it does, so only Django, in the pytest process, sees it.
    let p = suite_project("pytest_verify");
    let db = format!("test_{}", p.name);
    p.track(&db);
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
    let (out, _) = pytest(&p, &["-k", "data_migration"]);
    assert!(out.status.success(), "{}", report(&out));

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
