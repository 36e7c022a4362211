//! `migsnap prepare --at` (issue #25) against a real server and a real
//! Django: a database part of the way through the history equals a plain
//! `manage.py migrate APP NAME` (to each target in turn) on an empty
//! database, is a snapshot of its own (cloned the second time), and leaves
//! the fully migrated snapshot alone.

use crate::common::*;
use serde_json::Value;
use std::process::Command;

/// What a plain `manage.py migrate APP NAME`, run once per target in
/// order on an empty database, leaves: the reference for `--at`.
fn plain_migrate_to(p: &Project, db: &str, targets: &[(&str, &str)]) {
    p.track(db);
    psql("postgres", &format!("DROP DATABASE IF EXISTS \"{db}\""));
    psql("postgres", &format!("CREATE DATABASE \"{db}\""));
    for (app, name) in targets {
        let out = Command::new(python())
            .args(["manage.py", "migrate", app, name, "--noinput", "-v", "0"])
            .current_dir(p.path())
            .envs(libpq_env(db))
            .output()
            .expect("run manage.py migrate");
        assert!(
            out.status.success(),
            "plain migrate {app} {name} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Schema, django_migrations and every row (content types and permissions
/// included: post_migrate makes them) the same in both.
fn assert_same(db: &str, reference: &str) {
    assert_eq!(schema(db), schema(reference), "{db}: schema differs");
    assert_eq!(
        django_migrations(db),
        django_migrations(reference),
        "{db}: django_migrations differs"
    );
    assert_eq!(data(db), data(reference), "{db}: rows differ");
}

/// `prepare --json --database DB --at TARGETS…`, asserting success.
fn prepare_at(p: &Project, db: &str, at: &[&str]) -> Value {
    p.track(db);
    let mut args = vec!["prepare", "--json", "--database", db, "--at"];
    args.extend_from_slice(at);
    let out = p.run(&args);
    assert!(
        out.status.success(),
        "prepare --at {at:?} failed ({}):\n{}",
        out.status,
        stderr(&out)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("prepare --json prints JSON");
    p.track(&template_of(&v));
    v
}

fn content_types(db: &str) -> String {
    psql(
        db,
        "SELECT app_label || '.' || model FROM django_content_type ORDER BY 1",
    )
}

#[test]
fn at_one_migration_equals_a_plain_partial_migrate_and_is_cloned_the_second_time() {
    // gc sweeps the whole server.
    let _alone = alone();
    let p = Project::example("at_one");
    // The fully migrated snapshot first: `--at` must neither build on it
    // (it is past the target) nor disturb it.
    let full_db = p.db("full");
    let full = p.prepare(&full_db);
    let full_key = full["key"].as_str().expect("key").to_string();
    let full_manifest =
        std::fs::read(p.cache.path().join(format!("{full_key}.json"))).expect("manifest");

    let db = p.db("at");
    let at = prepare_at(&p, &db, &["catalog.0002"]);
    assert_eq!(at["source"], "cold", "built from empty: {at}");
    assert_eq!(at["at"], serde_json::json!(["catalog.0002"]));
    let key = at["key"].as_str().expect("key").to_string();
    assert_ne!(key, full_key, "a snapshot of its own");
    let reference = p.db("plain");
    plain_migrate_to(&p, &reference, &[("catalog", "0002")]);
    assert_same(&db, &reference);
    assert_eq!(
        django_migrations(&db),
        ["catalog.0001_initial", "catalog.0002_trigram_name_index"],
        "only as far as the target"
    );
    assert_eq!(
        psql(&db, "SELECT to_regclass('django_content_type') IS NULL"),
        "t",
        "contenttypes is not migrated on the way to catalog.0002"
    );
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(p.cache.path().join(format!("{key}.json"))).expect("its own manifest"),
    )
    .expect("JSON");
    assert_eq!(manifest["at"], serde_json::json!(["catalog.0002"]));

    // The second time: a clone of its template, nothing migrated.
    psql(&db, "CREATE TABLE scribble (x int)");
    let again = prepare_at(&p, &db, &["catalog.0002"]);
    assert_eq!(again["source"], "template", "{again}");
    assert_eq!(again["key"], key.as_str());
    assert!(again["applied"].as_array().expect("applied").is_empty());
    assert_same(&db, &reference);

    // The full snapshot is as it was, and still served.
    assert_eq!(
        std::fs::read(p.cache.path().join(format!("{full_key}.json"))).expect("manifest"),
        full_manifest,
        "the full key's manifest is untouched"
    );
    let full_again = p.prepare(&full_db);
    assert_eq!(full_again["source"], "template");
    assert_eq!(full_again["key"], full_key.as_str());
    assert!(full_again["at"].as_array().expect("at").is_empty());
    Reference::of(&p).check(&full_db, "the full key after --at");

    // Made from the current files, it is as current as the full one: `ls`
    // marks it and `gc` keeps it.
    let ls = json_of(&p, &["ls", "--json"]);
    let row = ls["snapshots"]
        .as_array()
        .expect("snapshots")
        .iter()
        .find(|s| s["key"] == key.as_str())
        .expect("listed")
        .clone();
    assert_eq!(row["current"], true, "{row}");
    assert_eq!(row["at"], serde_json::json!(["catalog.0002"]));
    let gc = p.run(&["gc", "--keep", "0", "--json"]);
    assert!(gc.status.success(), "{}", stderr(&gc));
    for k in [&key, &full_key] {
        assert!(
            p.cache.path().join(format!("{k}.json")).is_file(),
            "gc kept {k}: {}",
            String::from_utf8_lossy(&gc.stdout)
        );
    }
}

#[test]
fn at_several_targets_reaches_each_in_turn_and_a_file_names_a_migration() {
    let p = Project::example("at_many");
    // auth (and contenttypes) first, so that each later migrate's
    // post_migrate makes content types and permissions; forward to
    // catalog.0003 (the default categories are seeded), orders on top,
    // then back to catalog.0002 (they are removed again).
    let targets = ["auth.0012", "catalog.0003", "orders.0001", "catalog.0002"];
    let db = p.db("many");
    let many = prepare_at(&p, &db, &targets);
    assert_eq!(many["source"], "cold");
    let reference = p.db("plain_many");
    plain_migrate_to(
        &p,
        &reference,
        &[
            ("auth", "0012"),
            ("catalog", "0003"),
            ("orders", "0001"),
            ("catalog", "0002"),
        ],
    );
    assert_same(&db, &reference);
    let types = content_types(&db);
    assert!(
        types.contains("catalog.product") && types.contains("orders.order"),
        "post_migrate ran after each target, as in a plain migrate: {types}"
    );
    assert_eq!(
        psql(&db, "SELECT count(*) FROM catalog_category"),
        "0",
        "catalog.0003 was unapplied"
    );
    let mut applied: Vec<&str> = many["applied"]
        .as_array()
        .expect("applied")
        .iter()
        .map(|a| a.as_str().expect("str"))
        .collect();
    applied.sort();
    assert_eq!(
        applied,
        django_migrations(&db),
        "what it reports applied is what the database has (catalog.0003 was undone)"
    );

    // A migration file, by its path: relative to the current directory,
    // or absolute, the same snapshot (the key holds it project-relative).
    let file = "catalog/migrations/0002_trigram_name_index.py";
    let by_file = p.db("file");
    let first = prepare_at(&p, &by_file, &[file]);
    assert_eq!(first["source"], "cold");
    assert_eq!(first["at"], serde_json::json!([file]));
    let reference_one = p.db("plain_one");
    plain_migrate_to(&p, &reference_one, &[("catalog", "0002")]);
    assert_same(&by_file, &reference_one);
    let absolute = p.path().join(file);
    let second = prepare_at(&p, &by_file, &[absolute.to_str().expect("utf-8")]);
    assert_eq!(second["source"], "template", "{second}");
    assert_eq!(second["key"], first["key"]);
}

#[test]
fn an_unknown_target_is_refused_before_anything_is_migrated() {
    let p = Project::example("at_bad");
    let db = p.db("bad");
    let cases: [(&[&str], &str); 4] = [
        (&["catalog.9999"], "no migration `catalog.9999`"),
        (&["nosuchapp.0001"], "no installed app `nosuchapp`"),
        (
            &["catalog/migrations/0009_nope.py"],
            "no such migration file",
        ),
        (&["catalog"], "expected `app.name`"),
    ];
    for (at, says) in cases {
        let mut args = vec!["prepare", "--database", db.as_str(), "--at"];
        args.extend_from_slice(at);
        let out = p.run(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{at:?}: {err}");
        assert!(err.contains(says), "{at:?}: {err}");
        assert!(err.contains("hint: "), "{at:?}: {err}");
        assert!(
            !err.contains("] applying"),
            "{at:?}: nothing migrated: {err}"
        );
    }
    assert!(!database_exists(&db), "no database was made");
    // Those Django refused: their build databases went with the refusal.
    let full = parse_key(&p.key());
    for at in ["catalog.9999", "nosuchapp.0001"] {
        let key = migsnap::fingerprint::at_key(&full, &[at.to_string()]);
        assert!(!database_exists(&build_name(key.as_str())), "{at}");
    }
    let saved: Vec<_> = std::fs::read_dir(p.cache.path())
        .expect("cache dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .collect();
    assert!(saved.is_empty(), "no snapshot was saved: {saved:?}");
    // Options that make no sense with it.
    for other in [&["--all-aliases"][..], &["--pool-default", "2"]] {
        let mut args = vec!["prepare", "--at", "catalog.0002"];
        args.extend_from_slice(other);
        if other[0] != "--all-aliases" {
            args.extend_from_slice(&["--database", db.as_str()]);
        }
        let out = p.run(&args);
        assert_eq!(out.status.code(), Some(2), "{other:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("cannot be used with"),
            "{}",
            stderr(&out)
        );
    }
}

fn applied(v: &Value) -> Vec<&str> {
    v["applied"]
        .as_array()
        .expect("applied")
        .iter()
        .map(|a| a.as_str().expect("str"))
        .collect()
}

#[test]
fn at_a_later_migration_builds_on_a_snapshot_at_or_before_it_and_only_then() {
    let p = Project::example("at_on");
    let db = p.db("on");
    let first = prepare_at(&p, &db, &["catalog.0002"]);
    assert_eq!(first["source"], "cold");

    // catalog.0002's database is on the way to catalog.0004: only the
    // two after it run.
    let later = prepare_at(&p, &db, &["catalog.0004"]);
    assert_eq!(later["source"], "incremental", "{later}");
    assert_eq!(later["base_key"], first["key"]);
    assert_eq!(
        applied(&later),
        [
            "catalog.0003_default_categories",
            "catalog.0004_product_is_active"
        ]
    );
    let reference = p.db("plain_on");
    plain_migrate_to(&p, &reference, &[("catalog", "0004")]);
    assert_same(&db, &reference);

    // Targets that go back: nothing is known to be on their way (from
    // catalog.0002's, the first target would be reached, then undone),
    // so from empty, and as a plain run leaves it.
    let back = prepare_at(&p, &db, &["catalog.0003", "catalog.0002"]);
    assert_eq!(back["source"], "cold", "{back}");
    let reference_back = p.db("plain_back");
    plain_migrate_to(
        &p,
        &reference_back,
        &[("catalog", "0003"), ("catalog", "0002")],
    );
    assert_same(&db, &reference_back);

    // With snapshots to choose from, Django refuses an unknown target
    // before any database is made.
    let out = p.run(&["prepare", "--database", &db, "--at", "catalog.9999"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no migration `catalog.9999`"), "{err}");
    assert!(err.contains("hint: "), "{err}");
    let key = migsnap::fingerprint::at_key(&parse_key(&p.key()), &["catalog.9999".into()]);
    assert!(!database_exists(&build_name(key.as_str())));
    assert!(
        !err.contains("migrating from an empty database"),
        "refused before a build: {err}"
    );
}
