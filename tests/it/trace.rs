//! `migsnap trace` against a real server and a real Django (issue #25 part
//! 3): the locks and rewrites of migrations applied to a scratch clone of
//! the nearest snapshot, measured rather than read from the SQL.

use crate::common::*;
use serde_json::Value;

/// A type change: PostgreSQL rewrites the table (numeric to double
/// precision is no binary-coercible cast).
const RETYPE: &str = r#"from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("catalog", "0004_product_is_active")]

    operations = [
        migrations.AlterField("product", "price", models.FloatField()),
    ]
"#;

/// A longer varchar: a catalog change, no rewrite.
const WIDEN: &str = r#"from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("catalog", "0005_price_float")]

    operations = [
        migrations.AlterField("product", "name", models.CharField(max_length=300)),
    ]
"#;

/// A data migration on a table whose foreign key points at products (none
/// in the snapshot): `--rows` fills both, and the UPDATE counts its rows.
const BUMP: &str = r#"from django.db import migrations, models


def bump(apps, schema_editor):
    Order = apps.get_model("orders", "Order")
    Order.objects.update(quantity=models.F("quantity") + 1)


class Migration(migrations.Migration):
    dependencies = [("orders", "0004_lower_status_index")]

    operations = [
        # No SQL; it names the model, so --rows fills its table (a
        # RunPython names none that can be known).
        migrations.AlterModelOptions("order", {"verbose_name": "order"}),
        migrations.RunPython(bump, migrations.RunPython.noop),
    ]
"#;

fn scratch_clones() -> String {
    psql(
        "postgres",
        "SELECT string_agg(datname, ',') FROM pg_database WHERE datname LIKE 'migsnap\\_plan\\_%'",
    )
}

fn migration<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["migrations"]
        .as_array()
        .expect("migrations")
        .iter()
        .find(|m| m["migration"] == name)
        .unwrap_or_else(|| panic!("no {name} in {v}"))
}

fn table<'a>(m: &'a Value, name: &str) -> &'a Value {
    m["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["table"] == name)
        .unwrap_or_else(|| panic!("no table {name} in {m}"))
}

fn rewritten(m: &Value) -> Vec<String> {
    m["statements"]
        .as_array()
        .expect("statements")
        .iter()
        .flat_map(|s| s["rewritten"].as_array().expect("rewritten").clone())
        .map(|t| t.as_str().expect("name").to_string())
        .collect()
}

#[test]
fn trace_measures_the_lock_and_rewrite_of_a_type_change_and_none_for_a_longer_varchar() {
    // It checks that no scratch clone is left on the server, which any
    // other test's `plan`, `schema` or `trace` would have.
    let _alone = alone();
    let p = Project::example("trace");
    let before = p.db("before");
    p.prepare(&before);
    p.write("catalog/migrations/0005_price_float.py", RETYPE);
    p.write("catalog/migrations/0006_longer_name.py", WIDEN);
    p.write("orders/migrations/0005_bump.py", BUMP);

    let out = p.run(&["trace", "--json", "--rows", "300"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["base"]["kind"], "snapshot");
    assert_eq!(v["base"]["current"], false);
    assert_eq!(v["rows"], 300);
    let mut names: Vec<&str> = v["migrations"]
        .as_array()
        .expect("migrations")
        .iter()
        .map(|m| m["migration"].as_str().expect("migration"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "catalog.0005_price_float",
            "catalog.0006_longer_name",
            "orders.0005_bump"
        ]
    );
    // The tables the migrations name were filled first, and the products
    // before the orders that point at them.
    let seeded: Vec<(String, Value)> = v["seeded"]
        .as_array()
        .expect("seeded")
        .iter()
        .map(|s| {
            (
                s["table"].as_str().expect("table").to_string(),
                s["rows"].clone(),
            )
        })
        .collect();
    let filled = |t: &str| seeded.iter().position(|(n, rows)| n == t && *rows == 300);
    let product = filled("catalog_product").unwrap_or_else(|| panic!("{v}"));
    let order = filled("orders_order").unwrap_or_else(|| panic!("{v}"));
    assert!(product < order, "{v}");
    // The RunPython's UPDATE: its rows, at its operation.
    let bump = migration(&v, "orders.0005_bump");
    let update = bump["statements"]
        .as_array()
        .expect("statements")
        .iter()
        .find(|s| {
            s["sql"]
                .as_str()
                .is_some_and(|q| q.starts_with("UPDATE \"orders_order\""))
        })
        .unwrap_or_else(|| panic!("{bump}"));
    assert_eq!(update["rows"], 300, "{update}");
    assert_eq!(update["operation"], 1, "{update}");
    assert_eq!(
        table(bump, "orders_order")["strongest_lock"],
        "ROW EXCLUSIVE",
        "{bump}"
    );

    // The type change: ACCESS EXCLUSIVE on the table, taken by the
    // AlterField's ALTER TABLE, and the table got a new file.
    let retype = migration(&v, "catalog.0005_price_float");
    assert_eq!(retype["path"], "catalog/migrations/0005_price_float.py");
    assert_eq!(retype["atomic"], true);
    assert_eq!(retype["operations"][0]["type"], "AlterField");
    assert_eq!(retype["operations"][0]["line"], 8);
    let product = table(retype, "catalog_product");
    assert_eq!(product["strongest_lock"], "ACCESS EXCLUSIVE", "{retype}");
    assert_eq!(product["rewritten"], true, "{retype}");
    assert_eq!(product["existed"], true);
    assert!(product["held_ms"].as_f64().is_some(), "{product}");
    let statement =
        &retype["statements"][product["statement"].as_u64().expect("statement") as usize];
    assert_eq!(statement["operation"], 0);
    assert!(
        statement["sql"]
            .as_str()
            .is_some_and(|s| s.contains("ALTER COLUMN \"price\" TYPE double precision")),
        "{statement}"
    );
    assert!(
        statement["locks"]
            .as_array()
            .expect("locks")
            .iter()
            .any(|l| l["relation"] == "catalog_product"
                && l["kind"] == "table"
                && l["mode"] == "ACCESS EXCLUSIVE"),
        "{statement}"
    );
    assert_eq!(rewritten(retype), ["catalog_product"]);
    for field in ["at_ms", "duration_ms", "rows"] {
        assert!(statement.get(field).is_some(), "{field}: {statement}");
    }

    // The longer varchar: the same lock, no new file.
    let widen = migration(&v, "catalog.0006_longer_name");
    assert_eq!(rewritten(widen), Vec::<String>::new(), "{widen}");
    let product = table(widen, "catalog_product");
    assert_eq!(product["rewritten"], false, "{widen}");

    // The human view: per migration, the table, its strongest lock, held.
    let text = p.run(&["trace"]);
    assert!(text.status.success(), "{}", stderr(&text));
    let text = String::from_utf8_lossy(&text.stdout);
    let lines: Vec<&str> = text.split('\n').collect();
    let at = lines
        .iter()
        .position(|l| {
            l.starts_with(
                "catalog.0005_price_float  catalog/migrations/0005_price_float.py  (atomic, ",
            )
        })
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        lines[at + 1].contains("ACCESS EXCLUSIVE  catalog_product  held ")
            && lines[at + 1].ends_with("(rewritten)"),
        "{text}"
    );
    let at = lines
        .iter()
        .position(|l| l.starts_with("catalog.0006_longer_name"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        lines[at + 1].contains("catalog_product  held ") && !lines[at + 1].contains("rewritten"),
        "{text}"
    );

    // The scratch clones are gone, and the snapshot is as it was: back at
    // its migrations, a database made from it is the one made before.
    assert_eq!(scratch_clones(), "");
    std::fs::remove_file(p.path().join("catalog/migrations/0005_price_float.py")).expect("rm");
    std::fs::remove_file(p.path().join("catalog/migrations/0006_longer_name.py")).expect("rm");
    std::fs::remove_file(p.path().join("orders/migrations/0005_bump.py")).expect("rm");
    let after = p.db("after");
    let made = p.prepare(&after);
    assert_eq!(made["source"], "template", "{made}");
    assert_eq!(schema(&after), schema(&before));
    assert_eq!(data(&after), data(&before));
}

#[test]
fn trace_drops_its_scratch_clone_when_a_migration_fails_and_refuses_an_applied_one() {
    // It checks that no scratch clone is left on the server, which any
    // other test's `plan`, `schema` or `trace` would have.
    let _alone = alone();
    let p = Project::example("tracefail");
    p.prepare(&p.db("a"));
    // Already in the snapshot: nothing to apply, a usage error.
    let out = p.run(&["trace", "catalog.0004_product_is_active"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("`catalog.0004_product_is_active` is already applied"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("hint: name migrations added since the nearest snapshot"),
        "{}",
        stderr(&out)
    );
    p.write(
        "catalog/migrations/0005_broken.py",
        "from django.db import migrations\n\n\nclass Migration(migrations.Migration):\n    dependencies = [(\"catalog\", \"0004_product_is_active\")]\n    operations = [migrations.RunSQL(\"ALTER TABLE catalog_product ADD COLUMN x no_such_type\", migrations.RunSQL.noop)]\n",
    );
    let out = p.run(&["trace", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "Django failed: {}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty(), "no document on failure");
    assert!(stderr(&out).contains("no_such_type"), "{}", stderr(&out));
    assert_eq!(scratch_clones(), "");
}

/// A table made in the range and retyped at once: rewritten, but nobody
/// else can be using it yet.
const NEW_TABLE: &str = r#"from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("catalog", "0006_longer_name")]

    operations = [
        migrations.CreateModel("Tag", fields=[("id", models.BigAutoField(primary_key=True)), ("weight", models.IntegerField())]),
        migrations.AlterField("tag", "weight", models.CharField(max_length=10)),
    ]
"#;

#[test]
fn lint_trace_reports_a_measured_rewrite_of_an_existing_table_under_access_exclusive() {
    // It checks that no scratch clone is left on the server, which any
    // other test's `plan`, `schema` or `trace` would have.
    let _alone = alone();
    let p = Project::example("linttrace");
    p.prepare(&p.db("a"));
    p.write("catalog/migrations/0005_price_float.py", RETYPE);
    p.write("catalog/migrations/0006_longer_name.py", WIDEN);
    p.write("catalog/migrations/0007_tag.py", NEW_TABLE);
    let rule = "rewrite-under-exclusive-lock";
    let of_rule = |v: &Value| findings_of_rule(v, rule);
    // Without --trace nothing is measured, and lint says so.
    let out = p.run(&["lint", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(of_rule(&v), Vec::<Value>::new());
    assert!(
        stderr(&out).contains(&format!("rule {rule} skipped")),
        "{}",
        stderr(&out)
    );

    let out = p.run(&["lint", "--json", "--trace", "--rows", "100"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let found = of_rule(&v);
    // The type change of the existing table only: not the longer varchar
    // (no rewrite), not the table the range made.
    assert_eq!(found.len(), 1, "{v}");
    let f = &found[0];
    assert_eq!(f["migration"], "catalog.0005_price_float");
    assert_eq!(f["path"], "catalog/migrations/0005_price_float.py");
    assert_eq!(f["line"], 8);
    assert_eq!(f["operation"], 0);
    assert_eq!(f["table"], "catalog_product");
    assert_eq!(f["severity"], "error");
    assert!(
        f["message"].as_str().is_some_and(
            |m| m.contains("`catalog_product` was rewritten under an ACCESS EXCLUSIVE lock")
        ),
        "{f}"
    );
    // The made-and-retyped table was rewritten all the same: trace says
    // so, and that it is new.
    let t = p.run(&["trace", "--json", "catalog.0007_tag"]);
    assert!(t.status.success(), "{}", stderr(&t));
    let t: Value = serde_json::from_slice(&t.stdout).expect("json");
    let names: Vec<&str> = t["migrations"]
        .as_array()
        .expect("migrations")
        .iter()
        .map(|m| m["migration"].as_str().expect("migration"))
        .collect();
    assert_eq!(names, ["catalog.0007_tag"], "named: only it is reported");
    let tag = migration(&t, "catalog.0007_tag");
    assert_eq!(rewritten(tag), ["catalog_tag"]);
    assert_eq!(table(tag, "catalog_tag")["existed"], false);
    assert_eq!(strings_of(&tag["new_tables"]), ["catalog_tag"]);
    assert_eq!(scratch_clones(), "");
}

fn strings_of(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("str").to_string())
        .collect()
}
