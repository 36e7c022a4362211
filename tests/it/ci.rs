//! Two CI runs, as the workflows in docs/ci.md play them: a fresh server every
//! run, and only the cache dir carried over by the CI system's cache
//! (restored by exact key, else by prefix).

use crate::common::*;
use serde_json::Value;
use std::path::Path;

const NEW_MIGRATION: &str = r#"from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("orders", "0004_lower_status_index")]
    operations = [
        migrations.AddField("order", "note", models.TextField(blank=True, default="")),
    ]
"#;

/// One CI job: restore the saved cache into a fresh dir, `prepare`, save the
/// cache back. Returns prepare's JSON.
fn ci_job(p: &Project, saved: &Path, db: &str) -> Value {
    let workspace = tempfile::tempdir().expect("tempdir");
    copy_dir(saved, workspace.path());
    let out = p
        .cmd(&["prepare", "--database", db, "--json"])
        .env("MIGSNAP_CACHE_DIR", workspace.path())
        .output()
        .expect("run migsnap");
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    copy_dir(workspace.path(), saved);
    v
}

/// The job's server goes away: nothing of it survives into the next job.
fn fresh_server(p: &Project, db: &str, results: &[&Value]) {
    for v in results {
        let t = template_of(v);
        p.track(&t);
        psql(
            "postgres",
            &format!("ALTER DATABASE \"{t}\" IS_TEMPLATE false"),
        );
        psql("postgres", &format!("DROP DATABASE IF EXISTS \"{t}\""));
    }
    psql("postgres", &format!("DROP DATABASE IF EXISTS \"{db}\""));
}

#[test]
fn two_ci_runs_share_only_the_cache_dir() {
    let p = Project::example("ci");
    let db = p.db("ci");
    let saved = tempfile::tempdir().expect("tempdir");

    // Run 0, on main: nothing cached yet, migrate from empty.
    let first = ci_job(&p, saved.path(), &db);
    assert_eq!(first["source"], "cold");
    let main_key = p.key();
    assert_eq!(first["key"], main_key.as_str());
    fresh_server(&p, &db, &[&first]);

    // Run 1, same migrations: the exact cache key hits and the dump is
    // restored; Django does not run.
    assert!(saved.path().join(format!("{main_key}.json")).is_file());
    let second = ci_job(&p, saved.path(), &db);
    assert_eq!(second["source"], "cache");
    assert_eq!(second["applied"], serde_json::json!([]));
    assert_eq!(
        psql(
            &db,
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'catalog_product_name_trgm'"
        ),
        "1"
    );
    fresh_server(&p, &db, &[&second]);

    // Run 2, a branch with one new migration: the key changes, the cache is
    // restored by prefix (the old snapshot), and only the new one runs.
    p.write("orders/migrations/0005_order_note.py", NEW_MIGRATION);
    let branch_key = p.key();
    assert_ne!(branch_key, main_key);
    assert!(!saved.path().join(format!("{branch_key}.json")).exists());
    let third = ci_job(&p, saved.path(), &db);
    assert_eq!(third["source"], "incremental");
    assert_eq!(third["base_key"], main_key.as_str());
    assert_eq!(
        third["applied"],
        serde_json::json!(["orders.0005_order_note"])
    );
    assert_eq!(
        psql(&db, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'orders_order' AND column_name = 'note'"),
        "1"
    );
    p.track(&template_of(&third));
    assert!(
        saved.path().join(format!("{branch_key}.json")).is_file(),
        "the new snapshot is saved for the next run"
    );
}
