//! `migsnap check` on the example project and on a generated project: the
//! RunSQL/RunPython/database-only indexes and the state-only AddIndex are
//! reported with their file and line, and nothing else is.

use crate::common::*;
use serde_json::Value;
use std::collections::BTreeSet;

/// 1-based line of the first line in `rel` containing `marker`.
fn line_of(p: &Project, rel: &str, marker: &str) -> u64 {
    let text = std::fs::read_to_string(p.path().join(rel)).expect("read migration");
    let i = text
        .split('\n')
        .position(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("{marker} not in {rel}"));
    i as u64 + 1
}

fn check_json(p: &Project, extra: &[&str]) -> (Option<i32>, Value) {
    let mut args = vec!["check", "--format", "json"];
    args.extend_from_slice(extra);
    let out = p.run(&args);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("check --format json is JSON ({e}): {}", stderr(&out)));
    (out.status.code(), v)
}

fn track_check_dbs(p: &Project) {
    let key = p.key();
    p.track(&template_name(&key));
}

#[test]
fn example_project_findings_are_exact_and_attributed() {
    let p = Project::example("check_example");
    track_check_dbs(&p);
    let (code, v) = check_json(&p, &[]);
    assert_eq!(code, Some(1), "findings fail the run: {v}");
    assert_eq!(v["key"], p.key().as_str());

    let got: BTreeSet<(String, String, String, String, u64)> = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            assert_eq!(f["schema"], "public");
            assert!(f["definition"]
                .as_str()
                .expect("definition")
                .starts_with("CREATE "));
            let m = &f["migration"];
            (
                f["kind"].as_str().expect("kind").to_string(),
                f["index"].as_str().expect("index").to_string(),
                f["table"].as_str().expect("table").to_string(),
                m["path"].as_str().unwrap_or("-").to_string(),
                m["line"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let e = |kind: &str, index: &str, table: &str, path: &str, marker: &str| {
        (
            kind.to_string(),
            index.to_string(),
            table.to_string(),
            path.to_string(),
            line_of(&p, path, marker),
        )
    };
    let expected: BTreeSet<_> = [
        e(
            "only-in-migrations",
            "catalog_product_name_trgm",
            "catalog_product",
            "catalog/migrations/0002_trigram_name_index.py",
            "migrations.RunSQL(",
        ),
        e(
            "only-in-migrations",
            "orders_order_open_created_idx",
            "orders_order",
            "orders/migrations/0002_open_orders_partial_index.py",
            "migrations.RunSQL(",
        ),
        e(
            "only-in-migrations",
            "orders_order_lower_status_idx",
            "orders_order",
            "orders/migrations/0004_lower_status_index.py",
            "migrations.RunSQL(",
        ),
        e(
            "only-in-migrations",
            "audit_auditevent_payload_gin",
            "audit_auditevent",
            "audit/migrations/0002_payload_gin_index.py",
            "migrations.RunPython(",
        ),
        e(
            "only-in-model-state",
            "orders_order_status_idx",
            "orders_order",
            "orders/migrations/0003_status_index_state_only.py",
            "migrations.AddIndex(",
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        got, expected,
        "Django's auto-named indexes must match on both sides; only these differ"
    );
    let app_names: BTreeSet<(String, String)> = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["migration"]["app"].as_str().expect("app").into(),
                f["migration"]["name"].as_str().expect("name").into(),
            )
        })
        .collect();
    assert!(app_names.contains(&("audit".into(), "0002_payload_gin_index".into())));
    assert_eq!(v["summary"]["failing"], 5);

    // Text and GitHub formats say the same, exit 1.
    let out = p.run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("--> catalog/migrations/0002_trigram_name_index.py:"),
        "{text}"
    );
    assert!(text.contains("5 finding(s), 5 failing"), "{text}");
    let out = p.run(&["check", "--format", "github"]);
    assert_eq!(out.status.code(), Some(1));
    let gh = String::from_utf8_lossy(&out.stdout);
    let line = line_of(
        &p,
        "orders/migrations/0003_status_index_state_only.py",
        "migrations.AddIndex(",
    );
    assert!(
        gh.lines().any(|l| l.starts_with(&format!(
            "::error file=orders/migrations/0003_status_index_state_only.py,line={line},title=migsnap check%3A only-in-model-state::"
        ))),
        "{gh}"
    );
    assert_eq!(
        gh.lines().filter(|l| l.starts_with("::error ")).count(),
        5,
        "{gh}"
    );

    // A second check on the unchanged project starts no Python and needs no
    // server: both are made unusable and it still answers the same.
    let out = p
        .cmd(&["check", "--format", "json"])
        .env("MIGSNAP_PYTHON", "/nonexistent/python")
        .env("MIGSNAP_SERVER_URL", "postgres://nobody@127.0.0.1:1/x")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let again: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(again["findings"], v["findings"]);
}

#[test]
fn baseline_suppresses_exactly_what_it_lists_and_fail_kinds_are_configurable() {
    let p = Project::example("check_baseline");
    track_check_dbs(&p);
    let baseline = p.path().join("baseline.json");
    let out = p.run(&[
        "check",
        "--write-baseline",
        baseline.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (code, v) = check_json(&p, &["--baseline", baseline.to_str().expect("utf8")]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["findings"].as_array().expect("findings").len(), 0);
    assert_eq!(v["summary"]["baselined"], 5);

    // A new RunSQL index is new: only it is reported.
    p.write(
        "catalog/migrations/0005_sku_idx.py",
        "from django.db import migrations\n\n\nclass Migration(migrations.Migration):\n    dependencies = [(\"catalog\", \"0004_product_is_active\")]\n    operations = [\n        migrations.RunSQL(\n            \"CREATE INDEX catalog_product_upper_sku ON catalog_product (upper(sku))\",\n            \"DROP INDEX catalog_product_upper_sku\",\n        ),\n    ]\n",
    );
    track_check_dbs(&p);
    let (code, v) = check_json(&p, &["--baseline", baseline.to_str().expect("utf8")]);
    assert_eq!(code, Some(1), "{v}");
    let findings = v["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), 1, "{v}");
    assert_eq!(findings[0]["index"], "catalog_product_upper_sku");
    assert_eq!(
        findings[0]["migration"]["path"],
        "catalog/migrations/0005_sku_idx.py"
    );
    assert_eq!(findings[0]["migration"]["line"], 7);

    // A broken baseline is a usage error, not a crash.
    std::fs::write(&baseline, "not json").expect("write");
    let out = p.run(&["check", "--baseline", baseline.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("hint:"));

    // Which kinds fail is configurable.
    let config = p.path().join("migsnap.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str("check-fail-on = [\"only-in-model-state\"]\n");
    std::fs::write(&config, text).expect("config");
    let (code, v) = check_json(&p, &[]);
    assert_eq!(code, Some(1));
    assert_eq!(v["summary"]["failing"], 1, "{v}");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text = text.replace(
        "check-fail-on = [\"only-in-model-state\"]",
        "check-fail-on = []",
    );
    std::fs::write(&config, text).expect("config");
    let (code, v) = check_json(&p, &[]);
    assert_eq!(code, Some(0));
    assert_eq!(v["summary"]["total"], 6);
}

#[test]
fn generated_project_reports_every_runsql_index_and_nothing_else() {
    let gen = tempfile::tempdir().expect("tempdir");
    let proj = gen.path().join("proj");
    let out = std::process::Command::new(python())
        .arg(repo().join("scripts/gen_project.py"))
        .arg(&proj)
        .args(["--apps", "3", "--migrations-per-app", "12", "--seed", "3"])
        .output()
        .expect("run generator");
    assert!(out.status.success(), "{}", stderr(&out));
    let p = Project::copy_of(&proj, "check_gen");
    let db = p.db("a");
    p.prepare(&db);

    // Every `CREATE INDEX "name"` in a RunSQL whose index survives migrating.
    let existing: BTreeSet<String> = psql(
        &db,
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'",
    )
    .lines()
    .map(String::from)
    .collect();
    let mut expected = BTreeSet::new();
    for app in std::fs::read_dir(p.path()).expect("dir").flatten() {
        let migrations = app.path().join("migrations");
        let Ok(files) = std::fs::read_dir(&migrations) else {
            continue;
        };
        // Migration modules only: a cold build's import leaves __pycache__.
        for f in files
            .flatten()
            .filter(|f| f.path().extension().is_some_and(|e| e == "py"))
        {
            let text = std::fs::read_to_string(f.path()).expect("read");
            for (i, line) in text.split('\n').enumerate() {
                if let Some(rest) = line.split("CREATE INDEX \"").nth(1) {
                    let name = rest.split('"').next().expect("name").to_string();
                    if existing.contains(&name) {
                        let rel = f
                            .path()
                            .strip_prefix(p.path())
                            .expect("rel")
                            .to_string_lossy()
                            .into_owned();
                        // The operation starts at the nearest RunSQL( above.
                        let op = text
                            .split('\n')
                            .take(i + 1)
                            .collect::<Vec<_>>()
                            .iter()
                            .rposition(|l| l.contains("RunSQL("))
                            .expect("RunSQL");
                        expected.insert((name, rel, op as u64 + 1));
                    }
                }
            }
        }
    }
    assert!(
        !expected.is_empty(),
        "the generated project has RunSQL indexes"
    );
    let (_, v) = check_json(&p, &[]);
    let got: BTreeSet<(String, String, u64)> = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["kind"] != "same-definition-other-name")
        .map(|f| {
            assert_eq!(f["kind"], "only-in-migrations", "unexpected finding {f}");
            (
                f["index"].as_str().expect("index").into(),
                f["migration"]["path"].as_str().expect("path").into(),
                f["migration"]["line"].as_u64().expect("line"),
            )
        })
        .collect();
    assert_eq!(got, expected);
}

const TRICKY: &str = r#"from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("catalog", "0004_product_is_active"), ("orders", "0004_lower_status_index")]
    operations = [
        # Built CONCURRENTLY-style as a plain unique index, then adopted.
        migrations.RunSQL("CREATE UNIQUE INDEX catalog_product_name_tmp ON catalog_product (name)"),
        migrations.RunSQL(
            "ALTER TABLE catalog_product ADD CONSTRAINT catalog_product_name_uniq UNIQUE USING INDEX catalog_product_name_tmp"
        ),
        # Created under one name, renamed later.
        migrations.RunSQL("CREATE INDEX orders_order_old_idx ON orders_order (product_id, status)"),
        migrations.RunSQL("ALTER INDEX orders_order_old_idx RENAME TO orders_order_product_status_idx"),
        # A table Django's state never knew (a managed=False model's table).
        migrations.RunSQL(
            "CREATE TABLE legacy_report (id int PRIMARY KEY, day date); "
            "CREATE INDEX legacy_report_day_idx ON legacy_report (day)"
        ),
        # An index Django also declares, under a legacy name.
        migrations.RunSQL(
            "ALTER INDEX catalog_product_cat_price_idx RENAME TO catalog_product_legacy_cp",
            "ALTER INDEX catalog_product_legacy_cp RENAME TO catalog_product_cat_price_idx",
        ),
    ]
"#;

#[test]
fn reports_stay_precise_on_adopted_renamed_legacy_and_unmanaged() {
    let p = Project::example("check_tricky");
    let rel = "catalog/migrations/0005_tricky.py";
    p.write(rel, TRICKY);
    track_check_dbs(&p);
    let (code, v) = check_json(&p, &[]);
    assert_eq!(code, Some(1), "{v}");
    let find = |index: &str| {
        v["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .find(|f| f["index"] == index)
            .unwrap_or_else(|| panic!("no finding for {index}: {v}"))
            .clone()
    };
    let adopted = find("catalog_product_name_uniq");
    assert_eq!(adopted["kind"], "only-in-migrations");
    assert_eq!(
        adopted["migration"]["line"],
        line_of(&p, rel, "ADD CONSTRAINT") - 1,
        "the RunSQL that adopts it"
    );

    let renamed = find("orders_order_product_status_idx");
    assert_eq!(renamed["kind"], "only-in-migrations");
    assert_eq!(
        renamed["migration"]["line"],
        line_of(&p, rel, "RENAME TO orders_order_product_status_idx")
    );

    let legacy_table = find("legacy_report_day_idx");
    assert_eq!(legacy_table["kind"], "only-in-migrations");
    assert_eq!(legacy_table["table_in_model_state"], false);
    assert_eq!(find("legacy_report_pkey")["table_in_model_state"], false);

    let legacy_name = find("catalog_product_legacy_cp");
    assert_eq!(legacy_name["kind"], "same-definition-other-name");
    assert_eq!(
        legacy_name["model_state_index"],
        "catalog_product_cat_price_idx"
    );
    assert_eq!(legacy_name["fails"], false, "informational by default");

    // The temporary name is gone everywhere: never reported.
    assert!(v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .all(|f| f["index"] != "catalog_product_name_tmp"));
    assert!(v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .all(|f| f["index"] != "orders_order_old_idx"));
}

/// A migration that creates a collation (CreateCollation, for natural
/// sorting) and a field using it: the model-state database must get the
/// collation before Django creates the models, else building it fails with
/// `collation "natural_sort" … does not exist`. The findings stay exactly
/// the example's: the new field's index is declared on both sides.
#[test]
fn a_collation_made_by_a_migration_reaches_the_model_state() {
    let p = Project::example("check_collation");
    track_check_dbs(&p);
    let (code, plain) = check_json(&p, &[]);
    assert_eq!(code, Some(1), "{plain}");
    p.write(
        "catalog/migrations/0005_natural_sort.py",
        r#"from django.contrib.postgres.operations import CreateCollation
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("catalog", "0004_product_is_active")]
    operations = [
        CreateCollation("natural_sort", provider="icu", locale="und-u-kn-true"),
        migrations.AddField(
            "product",
            "natural_code",
            models.CharField(max_length=40, default="", db_collation="natural_sort"),
        ),
        migrations.AddIndex(
            "product", models.Index(fields=["natural_code"], name="catalog_product_natcode_idx")
        ),
    ]
"#,
    );
    track_check_dbs(&p);
    let out = p.run(&["check", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let names = |v: &Value| -> BTreeSet<(String, String)> {
        v["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .map(|f| (f["kind"].to_string(), f["index"].to_string()))
            .collect()
    };
    assert_eq!(names(&v), names(&plain), "the same findings as before");
}

/// An index added by AddIndex and then "renamed" into existence from
/// `old_fields`, as django-taggit does: RenameIndex appends it to the state
/// again, so the state lists it twice while `migrate` builds it once. The
/// model-state database must have it once, not fail on the second `CREATE
/// INDEX`; a name declared twice with different definitions is a finding.
#[test]
fn an_index_the_state_lists_twice_is_one_index_or_a_conflict() {
    let p = Project::example("check_dup_index");
    p.write(
        "catalog/migrations/0005_name_active_index.py",
        r#"from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("catalog", "0004_product_is_active")]
    operations = [
        migrations.AddIndex(
            "product", models.Index(fields=["name", "is_active"], name="catalog_prod_name_active_idx")
        ),
    ]
"#,
    );
    p.write(
        "catalog/migrations/0006_rename_name_active_index.py",
        r#"from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("catalog", "0005_name_active_index")]
    operations = [
        migrations.RenameIndex(
            "product", new_name="catalog_prod_name_active_idx", old_fields=("name", "is_active")
        ),
    ]
"#,
    );
    track_check_dbs(&p);
    let out = p.run(&["check", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let findings = v["findings"].as_array().expect("findings").clone();
    assert!(
        findings
            .iter()
            .all(|f| f["index"] != "catalog_prod_name_active_idx"),
        "one index on both sides: {v}"
    );
    assert_eq!(
        v["summary"]["failing"], 5,
        "the example's findings only: {v}"
    );

    // The same name, "renamed" into existence on other columns: the state
    // now declares two different indexes under it.
    let conflicting = "catalog/migrations/0007_conflicting_index.py";
    p.write(
        conflicting,
        r#"from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("catalog", "0006_rename_name_active_index")]
    operations = [
        migrations.RunSQL(
            "DROP INDEX catalog_prod_name_active_idx; "
            "CREATE INDEX catalog_prod_tmp ON catalog_product (brand, is_active)",
            migrations.RunSQL.noop,
        ),
        migrations.RenameIndex(
            "product", new_name="catalog_prod_name_active_idx", old_fields=("brand", "is_active")
        ),
    ]
"#,
    );
    track_check_dbs(&p);
    let out = p.run(&["check", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let conflict = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["kind"] == "conflict-in-model-state")
        .unwrap_or_else(|| panic!("no conflict reported: {v}"))
        .clone();
    assert_eq!(conflict["index"], "catalog_prod_name_active_idx");
    assert_eq!(conflict["table"], "catalog_product");
    assert_eq!(conflict["schema"], "public");
    assert_eq!(conflict["fails"], true, "fails by default");
    let def = |k: &str| conflict[k].as_str().unwrap_or_default().to_string();
    assert!(def("definition").contains("\"brand\""), "{conflict}");
    assert!(
        def("model_state_definition").contains("\"name\""),
        "{conflict}"
    );
    assert_eq!(conflict["migration"]["path"], conflicting, "{conflict}");

    let text = p.run(&["check"]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains(
            "index `catalog_prod_name_active_idx` on `public.catalog_product` is declared twice in the model state"
        ),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
}

/// Issue #25: an index named after a table or column that a later
/// migration renamed keeps its old name in the migrated database (PostgreSQL
/// renames no index with its table or column), while the model state names
/// it after the new one. No migration mentions such a name; `check` says
/// which rename left it.
#[test]
fn names_left_by_a_rename_are_explained_by_the_rename() {
    let p = Project::example("check_leftover");
    let file = "catalog/migrations/0005_renames.py";
    p.write(
        file,
        r#"from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("catalog", "0004_product_is_active")]
    operations = [
        migrations.RenameModel(
            old_name="Category",
            new_name="Group",
        ),
        migrations.RenameField(
            model_name="product",
            old_name="brand",
            new_name="maker",
        ),
    ]
"#,
    );
    track_check_dbs(&p);
    let (_, v) = check_json(&p, &[]);
    let findings = v["findings"].as_array().expect("findings").clone();
    let left = |prefix: &str| -> Vec<Value> {
        findings
            .iter()
            .filter(|f| f["index"].as_str().is_some_and(|i| i.starts_with(prefix)))
            .cloned()
            .collect()
    };
    let category = left("catalog_category_");
    assert!(!category.is_empty(), "the old table's names: {v}");
    for f in &category {
        assert_eq!(f["left_by"]["operation"], "RenameModel", "{f}");
        assert_eq!(f["left_by"]["old_name"], "catalog_category", "{f}");
        assert_eq!(f["migration"]["path"], file, "{f}");
        assert_eq!(f["migration"]["line"], 7, "{f}");
    }
    let brand = left("catalog_product_brand_");
    assert!(!brand.is_empty(), "the old column's names: {v}");
    for f in &brand {
        assert_eq!(f["left_by"]["operation"], "RenameField", "{f}");
        assert_eq!(f["left_by"]["old_name"], "brand", "{f}");
        assert_eq!(f["migration"]["line"], 11, "{f}");
    }
    // Nothing else is put on the renames.
    assert_eq!(
        findings.iter().filter(|f| !f["left_by"].is_null()).count(),
        category.len() + brand.len(),
        "{v}"
    );
    let text = p.run(&["check"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("the name is left from `catalog_category` before RenameModel renamed it"),
        "{text}"
    );
}
