//! The privilege layer of a restore (issue #21): no text from a dump runs
//! as the superuser (extensions are the manifest's, created by migsnap with
//! fixed text, and only trusted ones), nothing a snapshot that is not
//! authenticated restores runs with the superuser's rights once ownership
//! is handed back, and a statement the server rejects discards the snapshot
//! and rebuilds it instead of failing every run.
//!
//! Every command that meets a planted dump runs with MIGSNAP_TRUST_UNSIGNED=1,
//! so that the privilege layer is what these tests reach even where
//! signatures would refuse the dump first.

use crate::common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// [`plant`], and `manifest` edits the manifest too (its checksum kept
/// in step).
fn plant_with_manifest(cache: &Path, key: &str, sql: &str, manifest: impl FnOnce(&mut Value)) {
    plant(cache, key, sql);
    let mpath = cache.join(format!("{key}.json"));
    let mut m: Value = serde_json::from_slice(&std::fs::read(&mpath).expect("read")).expect("json");
    manifest(&mut m);
    std::fs::write(&mpath, serde_json::to_vec(&m).expect("json")).expect("write");
}

/// `prepare --json` of `db` as a consumer of foreign snapshots runs it.
fn prepare_cmd(p: &Project, db: &str) -> Command {
    p.track(db);
    let mut c = p.cmd(&["prepare", "--database", db, "--json"]);
    c.env("MIGSNAP_TRUST_UNSIGNED", "1");
    c
}

/// [`prepare_cmd`] run, asserting success: (its result, its stderr).
#[track_caller]
fn prepare_trusting(p: &Project, db: &str) -> (Value, String) {
    prepare_json(&mut prepare_cmd(p, db))
}

fn count(db: &str, sql: &str) -> String {
    psql(db, sql)
}

fn has_extension(db: &str, name: &str) -> bool {
    count(
        db,
        &format!("SELECT count(*) FROM pg_extension WHERE extname = '{name}'"),
    ) == "1"
}

fn dblink_available() -> bool {
    count(
        "postgres",
        "SELECT count(*) FROM pg_available_extensions WHERE name = 'dblink'",
    ) == "1"
}

const CREATE_DBLINK: &str = "CREATE EXTENSION IF NOT EXISTS \"dblink\" WITH SCHEMA \"public\";\n";

#[test]
fn the_manifest_records_the_extensions_and_a_cache_restore_makes_them() {
    // The example project's catalog app creates pg_trgm (TrigramExtension).
    let (p, reference, db, key) = built_example("ext_record");
    let m: Value = serde_json::from_slice(
        &std::fs::read(p.cache.path().join(format!("{key}.json"))).expect("manifest"),
    )
    .expect("json");
    let names: Vec<&str> = m["extensions"]
        .as_array()
        .expect("extensions recorded")
        .iter()
        .map(|e| e["name"].as_str().expect("name"))
        .collect();
    assert!(names.contains(&"pg_trgm"), "{m}");
    // As pg_dump does, not the ones every database has from initdb.
    assert!(!names.contains(&"plpgsql"), "{m}");
    let trgm = m["extensions"]
        .as_array()
        .expect("list")
        .iter()
        .find(|e| e["name"] == "pg_trgm")
        .expect("pg_trgm");
    assert_eq!(trgm["schema"], "public");
    assert!(trgm["version"].as_str().is_some_and(|v| !v.is_empty()));
    drop_template(&key);
    let (v, err) = prepare_trusting(&p, &db);
    assert_eq!(v["source"], "cache", "{err}");
    assert!(has_extension(&db, "pg_trgm"));
    reference.check(&db, "restored with the recorded extensions");
}

#[test]
fn a_dumps_own_create_extension_never_runs() {
    assert!(
        dblink_available(),
        "dblink (PostgreSQL's contrib) must be installed on the test server"
    );
    let (p, reference, db, key) = built_elsewhere("ext_planted");
    // In the dump only: the manifest does not list it.
    plant(p.cache.path(), &key, CREATE_DBLINK);
    let (_, err) = prepare_trusting(&p, &db);
    assert!(
        !has_extension(&db, "dblink"),
        "the dump's CREATE EXTENSION ran: {err}"
    );
    reference.check(&db, "after a planted CREATE EXTENSION");
}

#[test]
fn a_snapshot_needing_an_untrusted_extension_is_refused_until_the_config_trusts_it() {
    assert!(
        dblink_available(),
        "dblink (PostgreSQL's contrib) must be installed on the test server"
    );
    let (p, reference, db, key) = built_elsewhere("ext_untrusted");
    // What a build whose migrations create dblink would record, planted.
    let with_dblink = |m: &mut Value| {
        m["extensions"]
            .as_array_mut()
            .expect("extensions")
            .push(serde_json::json!({"name": "dblink", "schema": "public", "version": "1.2"}));
    };
    plant_with_manifest(p.cache.path(), &key, CREATE_DBLINK, with_dblink);
    let (v, err) = prepare_trusting(&p, &db);
    assert_eq!(v["source"], "cold", "{err}");
    assert!(
        err.contains("needs extension `dblink`, which trusted-extensions does not name")
            && err.contains("discarding it"),
        "{err}"
    );
    assert!(
        err.contains("hint:") && err.contains("trusted-extensions"),
        "{err}"
    );
    assert!(!has_extension(&db, "dblink"), "{err}");
    reference.check(&db, "rebuilt after an untrusted extension");

    // Trusted by the config, the same snapshot restores, and migsnap made
    // the extension itself.
    drop_template(&key);
    plant_with_manifest(p.cache.path(), &key, CREATE_DBLINK, with_dblink);
    p.add_config("trusted-extensions = [\"pg_trgm\", \"dblink\"]\n");
    let (v, err) = prepare_trusting(&p, &db);
    assert_eq!(v["source"], "cache", "{err}");
    assert!(has_extension(&db, "dblink"), "{err}");
}

#[test]
fn a_statement_the_server_rejects_discards_the_snapshot_and_rebuilds() {
    let (p, reference, db, key) = built_elsewhere("rejected_stmt");
    // pg_dump writes setval calls; this sequence does not exist.
    plant(
        p.cache.path(),
        &key,
        "SELECT pg_catalog.setval('\"public\".\"nonexistent_seq\"', 1, true);\n",
    );
    let (v, err) = prepare_trusting(&p, &db);
    assert_eq!(v["source"], "cold", "{err}");
    let warning = err
        .lines()
        .find(|l| l.contains("warning:") && l.contains("rejected"))
        .unwrap_or_else(|| panic!("no warning: {err}"));
    assert!(
        warning.contains("rejected a statement near line 1")
            && warning.contains("nonexistent_seq")
            && warning.contains("discarding it"),
        "{warning}"
    );
    reference.check(&db, "rebuilt after a rejected statement");
    // The rebuilt snapshot is honest: it restores.
    drop_template(&key);
    let (v, err) = prepare_trusting(&p, &db);
    assert_eq!(v["source"], "cache", "{err}");
    reference.check(&db, "restored after the rebuild");
}

/// `CREATE FUNCTION` text as pg_dump writes it, planted before the dump:
/// the parser layer refuses it before anything runs.
const DEFINER: &str = "CREATE FUNCTION \"public\".\"planted_definer\"() RETURNS integer\n    LANGUAGE sql SECURITY DEFINER\n    AS $$SELECT 1$$;\n";

/// The same function made SECURITY DEFINER by code that runs during the
/// restore (a materialized view's refresh), which no parser of the dump
/// sees: the catalog check after the restore finds it.
const DEFINER_AT_RESTORE: &str = "CREATE FUNCTION \"public\".\"planted_definer\"() RETURNS integer\n    LANGUAGE sql\n    AS $$SELECT 1$$;\n\
CREATE FUNCTION \"public\".\"planted_alter\"() RETURNS integer\n    LANGUAGE plpgsql\n    AS $$BEGIN EXECUTE 'ALTER FUNCTION public.planted_definer() SECURITY DEFINER'; RETURN 1; END$$;\n\
CREATE MATERIALIZED VIEW \"public\".\"planted_mv2\" AS\n SELECT \"public\".\"planted_alter\"() AS \"x\"\n  WITH NO DATA;\n\
REFRESH MATERIALIZED VIEW \"public\".\"planted_mv2\";\n";

/// Every statement one pg_dump writes; the function runs (as the restore
/// role, which owns the view) when the materialized view is made, and
/// grants what the dump's text never could.
const GRANTING: &str = "CREATE VIEW \"public\".\"planted_view\" AS\n SELECT 1 AS \"x\";\n\
CREATE FUNCTION \"public\".\"planted_grant\"() RETURNS integer\n    LANGUAGE plpgsql\n    AS $$BEGIN EXECUTE 'GRANT SELECT ON public.planted_view TO PUBLIC'; RETURN 1; END$$;\n\
CREATE MATERIALIZED VIEW \"public\".\"planted_mv\" AS\n SELECT \"public\".\"planted_grant\"() AS \"x\"\n  WITH NO DATA;\n\
REFRESH MATERIALIZED VIEW \"public\".\"planted_mv\";\n";

#[test]
fn an_unauthenticated_snapshot_lends_no_superuser_rights() {
    require_failpoints();
    let (p, reference, db, key) = built_example("definer");
    let unauthenticated = |c: &mut Command| {
        c.env("MIGSNAP_TEST_UNAUTHENTICATED", "1");
    };
    // An honest snapshot has nothing to find.
    drop_template(&key);
    let mut c = prepare_cmd(&p, &db);
    unauthenticated(&mut c);
    let (v, err) = prepare_json(&mut c);
    assert_eq!(v["source"], "cache", "{err}");
    for (what, planted, found) in [
        (
            "definer",
            DEFINER,
            "a SECURITY DEFINER function in an unsigned dump",
        ),
        (
            "definer made at restore",
            DEFINER_AT_RESTORE,
            "it is not authenticated and its function",
        ),
        ("grant", GRANTING, "privileges granted"),
    ] {
        drop_template(&key);
        plant(p.cache.path(), &key, planted);
        let mut c = prepare_cmd(&p, &db);
        unauthenticated(&mut c);
        let (v, err) = prepare_json(&mut c);
        assert_eq!(v["source"], "cold", "{what}: {err}");
        assert!(err.contains(found), "{what}: {err}");
        assert_eq!(
            count(
                &db,
                "SELECT count(*) FROM pg_proc WHERE proname LIKE 'planted%'"
            ),
            "0",
            "{what}"
        );
        reference.check(&db, what);
    }
}

/// Overwrite (or read) an object of the test store behind migsnap's back.
fn raw_put(url: &str, name: &str, bytes: Vec<u8>) {
    use object_store::{ObjectStoreExt, PutPayload};
    let (store, prefix) = s3_raw(url);
    runtime()
        .block_on(store.put(&prefix.join(name), PutPayload::from(bytes)))
        .expect("raw put");
}

fn raw_get(url: &str, name: &str) -> Vec<u8> {
    use object_store::ObjectStoreExt;
    let (store, prefix) = s3_raw(url);
    runtime()
        .block_on(async { store.get(&prefix.join(name)).await?.bytes().await })
        .expect("raw get")
        .to_vec()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_store_snapshot_the_server_rejects_is_skipped_and_built_locally() {
    let p = Project::example("rejected_store");
    let reference = Reference::of(&p);
    let url = s3_url("rejected");
    let db = p.db("t");
    let with_store = |c: &mut Command, cache: &Path| {
        c.env("MIGSNAP_CACHE_DIR", cache)
            .env("MIGSNAP_REMOTE", &url)
            .env("MIGSNAP_REMOTE_PUSH", "true");
        for (k, v) in s3_env() {
            c.env(k, v);
        }
    };
    // A trusted job builds and pushes.
    let ci = tempfile::tempdir().expect("tempdir");
    let mut c = prepare_cmd(&p, &db);
    with_store(&mut c, ci.path());
    let (built, err) = prepare_json(&mut c);
    assert!(err.contains("pushed snapshot"), "{err}");
    let key = key_of(&built);
    p.track(&template_of(&built));

    // Someone who may write the store replaces the snapshot with one whose
    // dump the server rejects, its manifest in step.
    plant(
        ci.path(),
        &key,
        "SELECT pg_catalog.setval('\"public\".\"nonexistent_seq\"', 1, true);\n",
    );
    let dump = std::fs::read(ci.path().join(format!("{key}.sql.zst"))).expect("dump");
    let planted_sha = sha256_hex(&dump);
    raw_put(&url, &store_dump_name(&key, &dump), dump);
    let manifest = std::fs::read(ci.path().join(format!("{key}.json"))).expect("manifest");
    raw_put(&url, &format!("{key}.json"), manifest.clone());

    // A fresh machine, pushing too: it warns once, builds locally, keeps
    // nothing of the store's snapshot and pushes nothing over it.
    drop_template(&key);
    psql("postgres", &format!("DROP DATABASE IF EXISTS \"{db}\""));
    let laptop = tempfile::tempdir().expect("tempdir");
    let mut c = prepare_cmd(&p, &db);
    with_store(&mut c, laptop.path());
    let (got, err) = prepare_json(&mut c);
    assert_eq!(got["source"], "cold", "{err}");
    // Besides trust-unsigned's own notice (the planted snapshot is unsigned).
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("warning:") && !l.contains("is not signed by a trusted key"))
        .collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains("rejected a statement near line 1")
            && warnings[0].contains("skipping the store's snapshot"),
        "{err}"
    );
    reference.check(&db, "built locally after a rejected store snapshot");
    let local = std::fs::read(laptop.path().join(format!("{key}.sql.zst"))).expect("built");
    assert_ne!(sha256_hex(&local), planted_sha, "the store's dump was kept");
    assert_eq!(
        raw_get(&url, &format!("{key}.json")),
        manifest,
        "pushed over the store's snapshot"
    );
}

/// A migration that puts an extension in a schema of its own, and uses it.
const EXTENSION_SCHEMA_MIGRATION: &str = r#"from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("catalog", "0004_product_is_active")]
    operations = [
        migrations.RunSQL(
            "CREATE SCHEMA extensions; "
            "CREATE EXTENSION citext WITH SCHEMA extensions; "
            "CREATE TABLE catalog_tag (name extensions.citext PRIMARY KEY)",
            "DROP TABLE catalog_tag; DROP EXTENSION citext; DROP SCHEMA extensions",
        ),
    ]
"#;

#[test]
fn an_extension_in_a_schema_of_its_own_restores_as_migrate_left_it() {
    let p = Project::example("ext_schema");
    p.write(
        "catalog/migrations/0005_extension_schema.py",
        EXTENSION_SCHEMA_MIGRATION,
    );
    let reference = Reference::of(&p);
    let db = p.db("t");
    let key = key_of(&p.prepare(&db));
    let m: Value = serde_json::from_slice(
        &std::fs::read(p.cache.path().join(format!("{key}.json"))).expect("manifest"),
    )
    .expect("json");
    assert!(
        m["extensions"].as_array().is_some_and(|l| l
            .iter()
            .any(|e| e["name"] == "citext" && e["schema"] == "extensions")),
        "{m}"
    );
    drop_template(&key);
    let (v, err) = prepare_trusting(&p, &db);
    assert_eq!(v["source"], "cache", "{err}");
    assert!(!err.contains("warning:"), "{err}");
    reference.check(&db, "restored with citext in its own schema");
    assert_eq!(
        count(
            &db,
            "SELECT n.nspname || ' ' || (n.nspowner = (SELECT oid FROM pg_roles WHERE rolname = current_user))::text \
             FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'citext'"
        ),
        "extensions true"
    );
}

#[test]
fn an_extension_version_this_server_lacks_rebuilds_the_snapshot() {
    let (p, reference, db, key) = built_elsewhere("ext_version");
    // A snapshot from a server with another pg_trgm (and a quote to keep
    // the fixed text honest).
    plant_with_manifest(p.cache.path(), &key, "", |m| {
        for e in m["extensions"].as_array_mut().expect("extensions") {
            if e["name"] == "pg_trgm" {
                e["version"] = "9.9'; CREATE ROLE x".into();
            }
        }
    });
    let (v, err) = prepare_trusting(&p, &db);
    assert_eq!(v["source"], "cold", "{err}");
    assert!(
        err.contains("cannot make what the snapshot needs") && err.contains("discarding it"),
        "{err}"
    );
    reference.check(&db, "rebuilt after an extension version the server lacks");
}

const DBLINK_MIGRATION: &str = r#"from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("catalog", "0004_product_is_active")]
    operations = [
        migrations.RunSQL("CREATE EXTENSION dblink", "DROP EXTENSION dblink"),
    ]
"#;

#[test]
fn migrations_of_your_own_that_need_an_untrusted_extension_keep_the_template_path() {
    assert!(
        dblink_available(),
        "dblink (PostgreSQL's contrib) must be installed on the test server"
    );
    let p = Project::example("ext_own");
    p.write("catalog/migrations/0005_dblink.py", DBLINK_MIGRATION);
    let db = p.db("t");
    // The build runs the user's migrations (dblink and all), and says
    // what will not happen with the snapshot.
    let (v, err) = prepare_trusting(&p, &db);
    assert_eq!(v["source"], "cold", "{err}");
    assert!(
        err.contains(
            "the migrations create extension `dblink`, which trusted-extensions does not name"
        ) && err.contains("hint:"),
        "{err}"
    );
    assert!(has_extension(&db, "dblink"));
    // The template serves: no rebuild while it is there.
    let (v, err) = prepare_trusting(&p, &db);
    assert_eq!(v["source"], "template", "{err}");
    assert!(!err.contains("warning:"), "{err}");
    // Without it (a new server), the dump is not restored but rebuilt.
    drop_template(&key_of(&v));
    let (v, err) = prepare_trusting(&p, &db);
    assert_eq!(v["source"], "cold", "{err}");
    assert!(has_extension(&db, "dblink"));
}

#[test]
fn what_the_restore_role_cannot_hand_back_discards_the_snapshot() {
    // A function run while the dump is restored (as the restore role,
    // which owns the materialized view) sets default privileges: REASSIGN
    // OWNED does not move them, so the role cannot be dropped. That is the
    // dump's doing, not the server's: rebuilt, not exit 5 on every run.
    let (p, reference, db, key) = built_elsewhere("handback");
    plant(
        p.cache.path(),
        &key,
        "CREATE FUNCTION \"public\".\"planted_acl\"() RETURNS integer\n    LANGUAGE plpgsql\n    AS $$BEGIN EXECUTE 'ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC'; RETURN 1; END$$;\n\
CREATE MATERIALIZED VIEW \"public\".\"planted_mv\" AS\n SELECT \"public\".\"planted_acl\"() AS \"x\"\n  WITH NO DATA;\n\
REFRESH MATERIALIZED VIEW \"public\".\"planted_mv\";\n",
    );
    let (v, err) = prepare_trusting(&p, &db);
    assert_eq!(v["source"], "cold", "{err}");
    assert!(err.contains("discarding it"), "{err}");
    reference.check(&db, "rebuilt after a dump that could not be handed back");
    assert!(
        !count(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_roles WHERE rolname = '{}'",
                restore_role_name(&key)
            )
        )
        .starts_with('1'),
        "the restore role is gone"
    );
}

/// Review of issue #21: code run during the restore (a CHECK on a COPY
/// row) set a database-level `search_path` putting `public` first, so the
/// superuser's own catalog check read a planted `public.pg_roles` view,
/// which ran a planted function as the superuser and hid every finding.
/// The database's settings are now read from the maintenance connection
/// and reset before any superuser session enters the build, whose names
/// resolve in pg_catalog first.
#[test]
fn a_restore_cannot_point_the_superusers_checks_at_planted_objects() {
    let marker = std::env::temp_dir().join(format!("migsnap-blinded-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    // The server's OS user must be able to write there for the attack to show.
    let blinding = format!(
        "CREATE FUNCTION \"public\".\"g\"() RETURNS boolean\n    LANGUAGE \"plpgsql\"\n    AS $$BEGIN EXECUTE format('ALTER DATABASE %I SET search_path = public, pg_catalog', current_database()); EXECUTE 'ALTER FUNCTION public.planted_definer() SECURITY DEFINER'; RETURN true; END$$;\n\
CREATE FUNCTION \"public\".\"evil\"() RETURNS boolean\n    LANGUAGE \"plpgsql\"\n    AS $$BEGIN IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN COPY (SELECT current_user) TO PROGRAM 'id > {m}'; END IF; RETURN false; END$$;\n\
CREATE FUNCTION \"public\".\"planted_definer\"() RETURNS integer\n    LANGUAGE \"sql\"\n    AS $$SELECT 1$$;\n\
CREATE TABLE \"public\".\"planted_t\" (\"x\" integer, CONSTRAINT \"c\" CHECK (\"public\".\"g\"()));\n\
CREATE VIEW \"public\".\"pg_roles\" AS\n SELECT \"r\".\"oid\", \"r\".\"rolname\" FROM \"pg_catalog\".\"pg_roles\" \"r\" WHERE \"public\".\"evil\"();\n\
COPY \"public\".\"planted_t\" (\"x\") FROM stdin;\n1\n\\.\n",
        m = marker.display()
    );
    let (p, reference, db, key) = built_elsewhere("blinding");
    plant(p.cache.path(), &key, &blinding);
    let (v, err) = prepare_trusting(&p, &db);
    assert!(
        !marker.exists(),
        "planted code ran as the superuser:\n{err}"
    );
    assert_eq!(v["source"], "cold", "{err}");
    assert!(
        err.contains("it is not authenticated") && err.contains("settings are attached"),
        "{err}"
    );
    reference.check(&db, "rebuilt after a blinding dump");
}

/// Review of issue #21: the same planting, with a view that raises, made
/// the check's query fail, and that failure was taken for the server's:
/// exit 5 on every run. Now it cannot reach the check, and whatever makes
/// the check fail is the dump's fault: rebuilt, then restored.
#[test]
fn a_foreign_snapshot_cannot_fail_every_prepare() {
    let brick = "CREATE FUNCTION \"public\".\"g\"() RETURNS boolean\n    LANGUAGE \"plpgsql\"\n    AS $$BEGIN EXECUTE format('ALTER DATABASE %I SET search_path = public, pg_catalog', current_database()); RETURN true; END$$;\n\
CREATE FUNCTION \"public\".\"boom\"() RETURNS boolean\n    LANGUAGE \"plpgsql\"\n    AS $$BEGIN RAISE EXCEPTION 'boom'; END$$;\n\
CREATE TABLE \"public\".\"planted_t\" (\"x\" integer, CONSTRAINT \"c\" CHECK (\"public\".\"g\"()));\n\
CREATE VIEW \"public\".\"pg_roles\" AS\n SELECT \"r\".\"oid\", \"r\".\"rolname\" FROM \"pg_catalog\".\"pg_roles\" \"r\" WHERE \"public\".\"boom\"();\n\
COPY \"public\".\"planted_t\" (\"x\") FROM stdin;\n1\n\\.\n";
    let (p, reference, db, key) = built_elsewhere("brick");
    plant(p.cache.path(), &key, brick);
    let (v, err) = prepare_trusting(&p, &db);
    assert_eq!(v["source"], "cold", "{err}");
    reference.check(&db, "rebuilt after a bricking dump");
    drop_template(&key);
    let (v, err) = prepare_trusting(&p, &db);
    assert_eq!(v["source"], "cache", "{err}");
}

/// Review of issue #21: a CHECK run during the restore turned
/// standard_conforming_strings off for its lane, and the next message,
/// one COMMENT for PostgreSQL's parser under the settings the check
/// assumed, was read by the server as a COMMENT, a CREATE TABLE and a DO
/// block. The settings are now said again before every message.
#[test]
fn settings_changed_during_the_restore_do_not_change_how_the_dump_reads() {
    let flip = "CREATE FUNCTION \"public\".\"flip\"() RETURNS boolean\n    LANGUAGE \"sql\"\n    AS $$ SELECT pg_catalog.set_config('standard_conforming_strings', 'off', false) IS NOT NULL $$;\n\
CREATE TABLE \"public\".\"planted_t\" (\"x\" integer, CONSTRAINT \"c\" CHECK (\"public\".\"flip\"()));\n\
COPY \"public\".\"planted_t\" (\"x\") FROM stdin;\n1\n\\.\n\
COMMENT ON TABLE \"public\".\"planted_t\" IS 'a\\'\n' ; CREATE TABLE \"public\".\"planted_unseen\" (); -- ';\n";
    let (p, _, db, key) = built_elsewhere("flip");
    plant(p.cache.path(), &key, flip);
    let (v, err) = prepare_trusting(&p, &db);
    // A foreign snapshot with nothing to refuse serves its own key.
    assert_eq!(v["source"], "cache", "{err}");
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'planted_unseen'"
        ),
        "0",
        "a statement the check never saw ran:\n{err}"
    );
    assert_eq!(
        count(&db, "SELECT obj_description('public.planted_t'::regclass)"),
        // `'a\'` then, after a newline, its continuation (psql trims the end).
        "a\\ ; CREATE TABLE \"public\".\"planted_unseen\" (); --",
        "the comment is the one string the check read"
    );
}

/// Review of issue #21: a grant on the public schema (whose owner is
/// `pg_database_owner` from PostgreSQL 15, so no owner check sees it) let
/// every role on the server plant objects the superuser's tests would run.
#[test]
fn a_foreign_snapshot_cannot_open_the_public_schema() {
    let open = "CREATE FUNCTION \"public\".\"planted_open\"() RETURNS integer\n    LANGUAGE plpgsql\n    AS $$BEGIN EXECUTE 'GRANT CREATE ON SCHEMA public TO PUBLIC'; RETURN 1; END$$;\n\
CREATE MATERIALIZED VIEW \"public\".\"planted_mv\" AS\n SELECT \"public\".\"planted_open\"() AS \"x\"\n  WITH NO DATA;\n\
REFRESH MATERIALIZED VIEW \"public\".\"planted_mv\";\n";
    let (p, reference, db, key) = built_elsewhere("open_public");
    plant(p.cache.path(), &key, open);
    let (v, err) = prepare_trusting(&p, &db);
    assert_eq!(v["source"], "cold", "{err}");
    assert!(
        err.contains("schema public lets every role create"),
        "{err}"
    );
    reference.check(&db, "rebuilt after a dump that opened public");
}
