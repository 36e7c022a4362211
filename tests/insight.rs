//! Migration insight against a real server and a real Django: what each
//! migration of a build cost (time, statements, round trips), and `plan`.

mod common;

use common::*;
use serde_json::Value;

/// The same 1,200 rows, once with a `get_or_create` per row and once with
/// one `bulk_create`: what a row-by-row data migration looks like next to
/// the set-based one.
const ROWS: usize = 1200;

fn data_migration(name: &str, after: &str, body: &str) -> String {
    format!(
        r#"from django.db import migrations


def forward(apps, schema_editor):
    Category = apps.get_model("catalog", "Category")
{body}


class Migration(migrations.Migration):
    dependencies = [("catalog", "{after}")]
    operations = [migrations.RunPython(forward, migrations.RunPython.noop)]
# {name}
"#
    )
}

fn cost<'a>(costs: &'a Value, name: &str) -> &'a Value {
    costs
        .as_array()
        .expect("costs")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no cost for {name} in {costs}"))
}

#[test]
fn every_build_records_what_each_migration_cost() {
    let p = Project::example("cost");
    p.write(
        "catalog/migrations/0005_rows_one_by_one.py",
        &data_migration(
            "0005",
            "0004_product_is_active",
            &format!(
                "    for i in range({ROWS}):\n        Category.objects.get_or_create(slug=\"one-%d\" % i, defaults={{\"name\": \"one %d\" % i}})"
            ),
        ),
    );
    p.write(
        "catalog/migrations/0006_rows_in_bulk.py",
        &data_migration(
            "0006",
            "0005_rows_one_by_one",
            &format!(
                "    Category.objects.bulk_create([Category(slug=\"bulk-%d\" % i, name=\"bulk %d\" % i) for i in range({ROWS})])"
            ),
        ),
    );
    let db = p.db("a");
    let out = p.run(&["prepare", "--database", &db, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    p.track(&template_of(&v));

    let one = cost(&v["costs"], "catalog.0005_rows_one_by_one");
    let bulk = cost(&v["costs"], "catalog.0006_rows_in_bulk");
    let (one_trips, bulk_trips) = (
        one["round_trips"].as_u64().expect("round_trips"),
        bulk["round_trips"].as_u64().expect("round_trips"),
    );
    assert!(one_trips >= ROWS as u64, "{one}");
    assert!(
        one["statements"].as_u64().expect("statements") >= ROWS as u64,
        "{one}"
    );
    assert!(
        bulk_trips < 20,
        "one INSERT per batch, and the bookkeeping: {bulk}"
    );
    assert_eq!(one["row_by_row"], true);
    assert_eq!(bulk["row_by_row"], false);
    assert!(one["seconds"].as_f64().expect("seconds") > 0.0);
    // Every applied migration has its figures; DDL counts too.
    assert_eq!(
        v["costs"].as_array().expect("costs").len(),
        v["applied"].as_array().expect("applied").len()
    );
    assert!(
        cost(&v["costs"], "catalog.0001_initial")["statements"]
            .as_u64()
            .expect("n")
            > 0
    );
    // The end-of-build report names the row-by-row one, with its count.
    let err = stderr(&out);
    assert!(err.contains(&format!("({one_trips} queries)")), "{err}");
    assert!(
        err.contains("catalog.0005_rows_one_by_one made") && err.contains("row by row"),
        "{err}"
    );
    assert!(!err.contains("catalog.0006_rows_in_bulk made"), "{err}");

    // Kept in the manifest, shown by `ls --json`.
    let key = v["key"].as_str().expect("key").to_string();
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(p.cache.path().join(format!("{key}.json"))).expect("manifest"),
    )
    .expect("manifest");
    let recorded = &manifest["build"]["migrations"];
    assert_eq!(
        cost(recorded, "catalog.0005_rows_one_by_one")["round_trips"],
        one_trips
    );
    let ls = p.run(&["ls", "--json"]);
    assert!(ls.status.success(), "{}", stderr(&ls));
    let ls: Value = serde_json::from_slice(&ls.stdout).expect("ls json");
    let row = ls["snapshots"]
        .as_array()
        .expect("snapshots")
        .iter()
        .find(|s| s["key"] == key.as_str())
        .expect("the snapshot is listed");
    assert_eq!(
        cost(&row["costs"], "catalog.0006_rows_in_bulk")["round_trips"],
        bulk_trips
    );

    // An incremental build applies only the new migration, and the manifest
    // still has the figures of what its base applied.
    p.write(
        "catalog/migrations/0007_more.py",
        &data_migration(
            "0007",
            "0006_rows_in_bulk",
            "    Category.objects.filter(slug=\"bulk-1\").update(name=\"b\")",
        ),
    );
    let next = p.prepare(&p.db("b"));
    assert_eq!(next["source"], "incremental");
    assert_eq!(next["costs"].as_array().expect("costs").len(), 1);
    let key = next["key"].as_str().expect("key").to_string();
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(p.cache.path().join(format!("{key}.json"))).expect("manifest"),
    )
    .expect("manifest");
    let recorded = &manifest["build"]["migrations"];
    assert_eq!(
        cost(recorded, "catalog.0005_rows_one_by_one")["round_trips"],
        one_trips
    );
    cost(recorded, "catalog.0007_more");
    assert_eq!(
        recorded.as_array().expect("list").len(),
        django_migrations(&p.db("b")).len()
    );
}
