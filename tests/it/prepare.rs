//! `migsnap prepare` against a real server and a real Django: every source
//! path, and each result compared with what a plain `manage.py migrate`
//! produces (schema dump, django_migrations, table contents).

use crate::common::*;
use serde_json::Value;

fn assert_same_as_plain_migrate(p: &Project, db: &str) {
    Reference::of(p).check(db, &format!("{db} against a plain migrate"));
}

fn applied(v: &Value) -> Vec<String> {
    v["applied"]
        .as_array()
        .expect("applied")
        .iter()
        .map(|a| a.as_str().expect("str").to_string())
        .collect()
}

#[test]
fn every_source_path_gives_the_plain_migrate_result() {
    let p = Project::example("paths");
    let db = p.db("a");

    // 1. cold: nothing anywhere.
    let cold = p.prepare(&db);
    assert_eq!(cold["source"], "cold");
    assert_eq!(cold["base_key"], Value::Null);
    assert_eq!(cold["database"], db.as_str());
    assert_eq!(cold["dbname"], db.as_str());
    assert!(cold["elapsed_ms"].as_u64().is_some());
    let key = cold["key"].as_str().expect("key").to_string();
    assert_eq!(key, p.key(), "prepare and key agree");
    let cold_applied = applied(&cold);
    assert!(cold_applied.contains(&"catalog.0002_trigram_name_index".to_string()));
    assert_eq!(
        cold_applied.len(),
        django_migrations(&db).len(),
        "every applied migration is reported"
    );
    assert!(p.cache.path().join(format!("{key}.sql.zst")).is_file());
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(p.cache.path().join(format!("{key}.json"))).expect("manifest"),
    )
    .expect("manifest is JSON");
    assert_eq!(manifest["migrations"].as_object().expect("files").len(), 10);
    assert!(manifest["server_version_num"].as_u64().expect("version") >= 100000);
    assert_same_as_plain_migrate(&p, &db);
    // The RunSQL / RunPython indexes are there (what --nomigrations would miss).
    let indexes = psql(
        &db,
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'",
    );
    for ix in [
        "catalog_product_name_trgm",
        "orders_order_open_created_idx",
        "audit_auditevent_payload_gin",
    ] {
        assert!(indexes.lines().any(|l| l == ix), "{ix} missing");
    }

    // 2. template: the same key again.
    psql(&db, "CREATE TABLE scribble (x int)"); // a test run dirtied it
    let warm = p.prepare(&db);
    assert_eq!(warm["source"], "template");
    assert_eq!(warm["key"], key.as_str());
    assert!(applied(&warm).is_empty());
    assert_eq!(
        psql(
            &db,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'scribble'"
        ),
        "0",
        "the database was replaced"
    );

    // 3. cache: a fresh server (template gone), only the cache dir carried over.
    let template = template_of(&cold);
    psql(
        "postgres",
        &format!("ALTER DATABASE \"{template}\" IS_TEMPLATE false"),
    );
    psql("postgres", &format!("DROP DATABASE \"{template}\""));
    let cached = p.prepare(&db);
    assert_eq!(cached["source"], "cache");
    assert!(applied(&cached).is_empty());
    assert!(
        database_exists(&template),
        "the template is rebuilt from the dump"
    );
    assert_same_as_plain_migrate(&p, &db);
    // The same on one connection, strictly in dump order (restore-jobs = 1).
    let config = p.path().join("migsnap.toml");
    let salted = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, format!("{salted}restore-jobs = 1\n")).expect("write");
    psql(
        "postgres",
        &format!("ALTER DATABASE \"{template}\" IS_TEMPLATE false"),
    );
    psql("postgres", &format!("DROP DATABASE \"{template}\""));
    assert_eq!(p.prepare(&db)["source"], "cache");
    assert_same_as_plain_migrate(&p, &db);
    std::fs::write(&config, salted).expect("write");

    // 4. incremental: one new migration on top.
    p.write("catalog/migrations/0005_product_note.py", NEW_MIGRATION);
    let inc = p.prepare(&db);
    assert_eq!(inc["source"], "incremental");
    assert_eq!(inc["base_key"], key.as_str());
    assert_eq!(applied(&inc), vec!["catalog.0005_product_note".to_string()]);
    assert_ne!(inc["key"], key.as_str());
    assert_same_as_plain_migrate(&p, &db);

    // 5. an old migration edited: no snapshot has all its files unchanged.
    let path = p
        .path()
        .join("catalog/migrations/0003_default_categories.py");
    let text = std::fs::read_to_string(&path)
        .expect("read")
        .replace("\"garden\"", "\"gardening\"");
    assert!(
        text.contains("gardening"),
        "fixture changed: edit another string"
    );
    std::fs::write(&path, text).expect("write");
    let edited = p.prepare(&db);
    assert_eq!(edited["source"], "cold");
    assert_eq!(edited["base_key"], Value::Null);
    assert_eq!(
        psql(
            &db,
            "SELECT count(*) FROM catalog_category WHERE slug = 'gardening' OR name = 'gardening'"
        ),
        "1"
    );
    assert_same_as_plain_migrate(&p, &db);
}

#[test]
fn incremental_falls_back_to_cold_when_history_is_inconsistent() {
    let p = Project::example("history");
    // Leave catalog's first migration out of the key, as a third-party app's
    // migrations in site-packages are: it can change under a snapshot.
    let config = p.path().join("migsnap.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str("exclude = [\"catalog/migrations/0001_initial.py\"]\n");
    std::fs::write(&config, text).expect("config");
    let db = p.db("a");
    let first = p.prepare(&db);
    assert_eq!(first["source"], "cold");

    // An "upgrade" inserts a migration that the applied 0001 now depends on.
    p.write(
        "catalog/migrations/0000_first.py",
        "from django.db import migrations\n\n\nclass Migration(migrations.Migration):\n    dependencies = []\n    operations = []\n",
    );
    let dep = p.path().join("catalog/migrations/0001_initial.py");
    let text = std::fs::read_to_string(&dep).expect("read");
    let patched = text.replacen(
        "dependencies = [",
        "dependencies = [(\"catalog\", \"0000_first\"), ",
        1,
    );
    assert_ne!(
        text, patched,
        "fixture changed: 0001_initial has no dependencies list"
    );
    std::fs::write(&dep, patched).expect("write");

    let out = p.run(&["prepare", "--database", &db, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    p.track(&template_of(&v));
    let err = stderr(&out);
    assert!(
        err.contains("building on snapshot"),
        "the incremental path was tried: {err}"
    );
    // The snapshot recorded what each applied migration contained: the
    // edited 0001 is caught before Django would even see the history.
    assert!(
        err.contains("migration catalog.0001_initial changed"),
        "the fallback says why: {err}"
    );
    assert_eq!(v["source"], "cold");
    assert!(django_migrations(&db).contains(&"catalog.0000_first".to_string()));
}

#[test]
fn key_is_a_pure_function_of_the_migration_files() {
    let a = Project::example("key_a");
    let run = |p: &Project, args: &[&str]| {
        // An unreachable server proves `key` never connects.
        let out = p
            .cmd(args)
            .env("MIGSNAP_SERVER_URL", "postgres://nobody@127.0.0.1:1/x")
            .output()
            .expect("run");
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let k = run(&a, &["key"]);
    assert_eq!(k.len(), 64);
    assert_eq!(k, run(&a, &["key"]), "stable");

    // Same files, same salt, another directory: same key.
    let b = Project::example("key_b");
    std::fs::copy(a.path().join("migsnap.toml"), b.path().join("migsnap.toml"))
        .expect("copy config");
    assert_eq!(run(&b, &["key"]), k);

    // Things that must not change it: __init__.py, non-migration files,
    // ignored and virtualenv directories, CRLF line endings.
    a.write("catalog/migrations/__init__.py", "# touched\n");
    a.write("catalog/views.py", "x = 1\n");
    a.write(".gitignore", "build/\n");
    a.write("build/old/migrations/0001_x.py", "junk\n");
    a.write("venv/pyvenv.cfg", "home = /usr\n");
    a.write("venv/lib/site/migrations/0001_x.py", "junk\n");
    let f = a.path().join("orders/migrations/0001_initial.py");
    let text = std::fs::read_to_string(&f).expect("read");
    std::fs::write(&f, text.replace('\n', "\r\n")).expect("write");
    assert_eq!(run(&a, &["key"]), k, "ignored inputs changed the key");

    // Things that must: a migration's content, a new migration, a lock file.
    std::fs::write(&f, text.replace("models", "models ")).expect("write");
    let edited = run(&a, &["key"]);
    assert_ne!(edited, k);
    std::fs::write(&f, &text).expect("write");
    assert_eq!(run(&a, &["key"]), k);
    a.write("orders/migrations/0005_new.py", "# new\n");
    let added = run(&a, &["key"]);
    assert_ne!(added, k);
    a.write("requirements.txt", "Django==5.2.8\n");
    let with_lock = run(&a, &["key"]);
    assert_ne!(with_lock, added);

    let json: Value = serde_json::from_str(&run(&a, &["key", "--json"])).expect("json");
    assert_eq!(json["key"], with_lock.as_str());
    assert_eq!(json["migrations"], 11);
    assert_eq!(json["key_inputs"], serde_json::json!(["requirements.txt"]));
}

/// The key's stat cache (issue #24): `key` reuses the hashes an earlier
/// run recorded, and still gives the key a fresh cache dir gives after
/// edits, including one that keeps the size and puts the mtime back.
#[test]
fn key_with_a_stale_stat_cache_is_the_key_without_one() {
    let p = Project::example("statcache_key");
    let key_in = |cache: &std::path::Path| {
        let out = p
            .cmd(&["key"])
            .env("MIGSNAP_CACHE_DIR", cache)
            .output()
            .expect("run");
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let fresh = || {
        let dir = tempfile::tempdir().expect("tempdir");
        key_in(&dir.path().join("cache"))
    };
    // Files that settled before the run that records them: the cache
    // trusts their hashes on the next run (see statcache's racy margin).
    std::thread::sleep(std::time::Duration::from_millis(3500));
    let first = key_in(p.cache.path());
    let cached = std::fs::read_dir(p.cache.path())
        .expect("cache dir")
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("statcache-"));
    assert!(cached, "the stat cache is written");
    assert_eq!(key_in(p.cache.path()), first, "from the cache");
    assert_eq!(fresh(), first);

    // Same size, same mtime, other content: the ctime gives it away.
    let f = p.path().join("orders/migrations/0001_initial.py");
    let text = std::fs::read_to_string(&f).expect("read");
    let mtime = std::fs::metadata(&f)
        .and_then(|m| m.modified())
        .expect("mtime");
    std::fs::write(&f, text.replacen("models", "MODELS", 1)).expect("write");
    std::fs::File::options()
        .write(true)
        .open(&f)
        .and_then(|file| file.set_modified(mtime))
        .expect("put the mtime back");
    let edited = key_in(p.cache.path());
    assert_ne!(edited, first, "the edit is seen");
    assert_eq!(edited, fresh());
    // Added and removed files.
    p.write("orders/migrations/0005_new.py", "# new\n");
    std::fs::remove_file(p.path().join("audit/migrations/0002_payload_gin_index.py"))
        .expect("remove");
    let changed = key_in(p.cache.path());
    assert_ne!(changed, edited);
    assert_eq!(changed, fresh());
    assert_eq!(key_in(p.cache.path()), changed);
}

#[test]
fn refuses_to_replace_a_database_that_is_not_a_test_database() {
    let p = Project::example("refuse");
    let precious = format!("precious_{}", p.name);
    p.track(&precious);
    psql("postgres", &format!("CREATE DATABASE \"{precious}\""));
    psql(
        &precious,
        "CREATE TABLE keep (x int); INSERT INTO keep VALUES (42)",
    );

    let out = p.run(&["prepare", "--database", &precious]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("refusing to replace database"), "{err}");
    // The hint names the way through, from the CLI and from pytest.
    assert!(
        err.contains("hint:") && err.contains("--force") && err.contains("--migsnap-force"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        psql(&precious, "SELECT x FROM keep"),
        "42",
        "nothing was dropped"
    );

    for reserved in ["postgres", "template1"] {
        let out = p.run(&["prepare", "--database", reserved, "--force"]);
        assert_eq!(out.status.code(), Some(2), "{reserved}: {}", stderr(&out));
    }

    // --force is the documented way through; the result is a clone.
    let v: Value = {
        let out = p.run(&["prepare", "--database", &precious, "--force", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("json")
    };
    p.track(&template_of(&v));
    assert_eq!(
        psql(
            &precious,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'keep'"
        ),
        "0"
    );
    // Once migsnap made it, it may replace it again without --force.
    let again = p.prepare(&precious);
    assert_eq!(again["source"], "template");
}

#[test]
fn failing_migration_saves_no_snapshot_and_leaves_nothing_behind() {
    let p = Project::example("failing");
    p.write(
        "orders/migrations/0005_broken.py",
        "from django.db import migrations\n\nclass Migration(migrations.Migration):\n    dependencies = [(\"orders\", \"0004_lower_status_index\")]\n    operations = [migrations.RunSQL(\"SELECT * FROM no_such_table\")]\n",
    );
    let db = p.db("a");
    let out = p.run(&["prepare", "--database", &db]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("migrate failed"), "{err}");
    assert!(
        err.contains("no_such_table"),
        "Django's error is shown: {err}"
    );
    assert!(!err.contains("panicked"));
    let leftovers: Vec<_> = std::fs::read_dir(p.cache.path())
        .expect("cache")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // The key's stat cache is no snapshot: the hashes stay valid.
        .filter(|n| !n.ends_with(".lock") && !n.starts_with("statcache-") && n != "maintain.log")
        .collect();
    assert!(leftovers.is_empty(), "no snapshot files: {leftovers:?}");
    let key = p.key();
    assert!(!database_exists(&template_name(&key)));
    assert!(!database_exists(&build_name(&key)));
    assert!(!database_exists(&db));

    // A syntax error: Django's own message, same exit code.
    p.write("orders/migrations/0005_broken.py", "this is not python(\n");
    let out = p.run(&["prepare", "--database", &db]);
    assert_eq!(out.status.code(), Some(4));
    assert!(stderr(&out).contains("SyntaxError"), "{}", stderr(&out));
}

#[test]
fn concurrent_prepares_build_the_snapshot_once() {
    // Sixteen runs started together on an empty cache and a server without
    // the template, each for its own database.
    let p = Project::example("concurrent");
    let dbs: Vec<String> = (0..16).map(|i| p.db(&format!("w{i}"))).collect();
    let children: Vec<_> = dbs
        .iter()
        .map(|db| {
            p.cmd(&["prepare", "--database", db, "--json"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait"))
        .collect();
    for out in &outputs {
        assert!(out.status.success(), "{}", stderr(out));
    }
    let results: Vec<Value> = outputs
        .iter()
        .map(|o| serde_json::from_slice(&o.stdout).expect("json"))
        .collect();
    p.track(&template_of(&results[0]));
    let cold = results.iter().filter(|v| v["source"] == "cold").count();
    assert_eq!(
        cold, 1,
        "exactly one process built the snapshot: {results:?}"
    );
    assert!(
        results
            .iter()
            .all(|v| v["source"] == "cold" || v["source"] == "template"),
        "the others cloned the template: {results:?}"
    );
    let stderrs: Vec<String> = outputs.iter().map(stderr).collect();
    let migrate_runs = stderrs
        .iter()
        .filter(|e| e.contains("migrating from an empty database"))
        .count();
    assert_eq!(
        migrate_runs, 1,
        "one process migrated from empty: {stderrs:#?}"
    );
    // Whoever arrived while the build ran says that it waits, and for what.
    assert!(
        stderrs.iter().any(|e| e.contains(&format!(
            "waiting for another migsnap building snapshot {}",
            short(results[0]["key"].as_str().expect("key"))
        ))),
        "no process said it was waiting: {stderrs:#?}"
    );
    let reference = schema(&dbs[0]);
    let migrations = django_migrations(&dbs[0]);
    for db in &dbs[1..] {
        assert_eq!(schema(db), reference, "{db} differs");
        assert_eq!(django_migrations(db), migrations);
    }
}

#[test]
fn concurrent_prepares_of_one_target_take_turns_and_leave_nothing_behind() {
    let p = Project::example("one_target");
    let db = p.db("t");
    p.prepare(&db);
    let scratch = migsnap::pg::admin::clone_scratch_name(&db);
    p.track(&scratch);
    let children: Vec<_> = (0..8)
        .map(|_| {
            p.cmd(&["prepare", "--database", &db, "--json"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().expect("wait");
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(!database_exists(&scratch), "no scratch clone is left");
    Reference::of(&p).check(&db, "after eight prepares of one target");
}

#[test]
fn a_failed_rebuild_keeps_the_old_template() {
    let p = Project::example("rebuild_fails");
    let db = p.db("t");
    let first = p.prepare(&db);
    let out = p
        .cmd(&["prepare", "--database", &db, "--rebuild"])
        .env("MIGSNAP_PYTHON", "/nonexistent/python")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        database_exists(&template_of(&first)),
        "the old template is dropped only once its replacement is complete"
    );
    let again = p.prepare(&db);
    assert_eq!(again["source"], "template");
}

/// On PostgreSQL 18 the embedded server's FILE_COPY clones share blocks
/// (`file_copy_method = clone`) where its filesystem has reflinks (XFS with
/// reflink=1, btrfs) and copy files elsewhere, where cloning is no faster and
/// can fail (BENCHMARKS.md, "Clones on PostgreSQL 18 with reflink"). The
/// default suite runs on ext4 or tmpfs and sees `copy`; with
/// `MIGSNAP_TEST_SERVER_DIR` on an XFS mount it sees `clone`, and every other
/// test then clones through it.
#[test]
fn embedded_server_clones_files_only_where_the_filesystem_has_reflinks() {
    if std::env::var_os("MIGSNAP_TEST_SERVER_URL").is_some() {
        return; // not ours: its settings are its owner's
    }
    let version: u32 = psql("postgres", "SHOW server_version_num")
        .parse()
        .expect("server_version_num");
    if version < 180_000 {
        return; // file_copy_method is new in 18
    }
    // What the filesystem says, asked another way than migsnap asks it.
    let probe = tempfile::tempdir_in(server_dir()).expect("tempdir in the server dir");
    let src = probe.path().join("a");
    std::fs::write(&src, [0u8; 4096]).expect("write");
    let reflink = std::process::Command::new("cp")
        .arg("--reflink=always")
        .arg(&src)
        .arg(probe.path().join("b"))
        .output()
        .expect("run cp")
        .status
        .success();
    let expected = if reflink { "clone" } else { "copy" };
    assert_eq!(psql("postgres", "SHOW file_copy_method"), expected);
}
