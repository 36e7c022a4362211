//! Migration insight against a real server and a real Django: what each
//! migration of a build cost (time, statements, round trips), and `plan`.

use crate::common::*;
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

/// The per-migration figures the snapshot's manifest keeps.
fn recorded_costs(p: &Project, key: &str) -> Value {
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(p.cache.path().join(format!("{key}.json"))).expect("manifest"),
    )
    .expect("manifest");
    manifest["build"]["migrations"].clone()
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
    let recorded = &recorded_costs(&p, &key);
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
    let recorded = &recorded_costs(&p, next["key"].as_str().expect("key"));
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

fn labels(v: &Value) -> Vec<String> {
    v["migrations"]
        .as_array()
        .expect("migrations")
        .iter()
        .map(|m| {
            format!(
                "{}.{}",
                m["app"].as_str().expect("app"),
                m["name"].as_str().expect("name")
            )
        })
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("str").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// An empty database on the test server (no migrations applied).
fn empty_db(p: &Project, suffix: &str) -> String {
    let db = p.db(suffix);
    psql("postgres", &format!("DROP DATABASE IF EXISTS \"{db}\""));
    psql("postgres", &format!("CREATE DATABASE \"{db}\""));
    db
}

fn manage(p: &Project, db: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(python())
        .arg("manage.py")
        .args(args)
        .current_dir(p.path())
        .envs(libpq_env(db))
        .output()
        .expect("run manage.py");
    assert!(out.status.success(), "manage.py {args:?}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn sql_is_what_sqlmigrate_prints_for_every_migration_of_the_range() {
    // It counts the scratch clones in use on the server: any other test's
    // `plan`, `schema` or `trace` would have one.
    let _alone = alone();
    let p = Project::example("sql");
    // No snapshot yet: every migration of the project is in the range.
    let v = json_of(&p, &["sql", "--json"]);
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["base"]["kind"], "empty");
    let migrations = v["migrations"].as_array().expect("migrations");
    assert!(migrations.len() >= 20, "{}", migrations.len());
    assert_eq!(strings(&v["pending"]), labels(&v));
    // sqlmigrate against an empty database too, as the plan's base.
    let db = empty_db(&p, "ref");
    for m in migrations {
        let (app, name) = (
            m["app"].as_str().expect("app"),
            m["name"].as_str().expect("name"),
        );
        let sql = strings(&m["sql"]);
        let mut ours = sql.join("\n");
        // sqlmigrate prints nothing at all for an empty migration.
        if m["output_transaction"] == true && !sql.is_empty() {
            ours = format!("BEGIN;\n{ours}\nCOMMIT;");
        }
        let theirs = manage(&p, &db, &["sqlmigrate", app, name]);
        assert_eq!(ours.trim_end(), theirs.trim_end(), "{app}.{name}");
        // Split per operation: the operations' statements, then the
        // deferred ones, are everything sqlmigrate printed but comments.
        let mut split: Vec<String> = vec![];
        for op in m["operations"].as_array().expect("operations") {
            split.extend(strings(&op["sql"]));
            if op["type"] == "RunPython" {
                assert_eq!(op["sql"], Value::Null, "{app}.{name}: RunPython is not SQL");
            }
        }
        split.extend(strings(&m["deferred_sql"]));
        let statements: Vec<&String> = sql.iter().filter(|s| !s.starts_with("--")).collect();
        assert_eq!(split.iter().collect::<Vec<_>>(), statements, "{app}.{name}");
    }
    // Nothing was written anywhere: the scratch clone is gone.
    assert_eq!(
        psql("postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE 'migsnap_plan_%' AND datname IN (SELECT datname FROM pg_stat_activity)"),
        "0"
    );
    // The text view has the same statements.
    let text = p.run(&["sql"]);
    assert!(text.status.success(), "{}", stderr(&text));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("CREATE INDEX orders_order_open_created_idx"),
        "{text}"
    );
    assert!(text.contains("-- migration catalog.0004_product_is_active (catalog/migrations/0004_product_is_active.py)"), "{text}");
}

#[test]
fn plan_against_a_database_migrated_to_an_older_point() {
    let p = Project::example("against");
    let db = empty_db(&p, "old");
    manage(
        &p,
        &db,
        &["migrate", "catalog", "0002_trigram_name_index", "-v", "0"],
    );
    let before = (django_migrations(&db), schema(&db));
    let url = db_url(&db);
    let v = json_of(&p, &["plan", "--json", "--against", &url]);
    assert_eq!(v["base"]["kind"], "database");
    let planned = labels(&v);
    // What Django itself would run there, in its order.
    let django_plan: Vec<String> = manage(&p, &db, &["migrate", "--plan"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|l| l.contains('.') && !l.ends_with(':'))
        .map(String::from)
        .collect();
    assert_eq!(planned, django_plan);
    assert!(planned.contains(&"catalog.0003_default_categories".to_string()));
    assert!(!planned
        .iter()
        .any(|m| m == "catalog.0002_trigram_name_index"));
    assert_eq!(v["database_applied"].as_u64(), Some(before.0.len() as u64));
    // Each migration: file, atomic, dependencies, operations with their line.
    let m = &v["migrations"][planned
        .iter()
        .position(|m| m == "catalog.0004_product_is_active")
        .expect("0004")];
    assert_eq!(m["path"], "catalog/migrations/0004_product_is_active.py");
    assert_eq!(m["atomic"], true);
    assert_eq!(
        strings(&m["dependencies"]),
        ["catalog.0003_default_categories"]
    );
    let op = &m["operations"][0];
    assert_eq!(op["type"], "AddField");
    assert_eq!(op["line"], 11);
    assert_eq!(op["arguments"]["name"], "'is_active'");
    assert_eq!(
        op["arguments"]["field"],
        "models.BooleanField(default=True)"
    );
    assert!(
        strings(&op["sql"])[0]
            .starts_with("ALTER TABLE \"catalog_product\" ADD COLUMN \"is_active\""),
        "{op}"
    );
    // Read only: the database is as it was.
    assert_eq!((django_migrations(&db), schema(&db)), before);
}

#[test]
fn plan_names_migrations_by_path_and_leaves_out_operation_types() {
    let p = Project::example("named");
    // After a build, nothing would run relative to the current snapshot.
    p.prepare(&p.db("a"));
    let v = json_of(&p, &["plan", "--json"]);
    assert_eq!(v["base"]["kind"], "snapshot");
    assert_eq!(v["base"]["current"], true);
    assert_eq!(labels(&v), Vec::<String>::new());
    // A new file: relative to that snapshot, it alone would run.
    p.write(
        "catalog/migrations/0005_product_note.py",
        "from django.db import migrations, models\n\n\nclass Migration(migrations.Migration):\n    dependencies = [(\"catalog\", \"0004_product_is_active\")]\n    operations = [\n        migrations.AddField(\"product\", \"note\", models.TextField(default=\"\")),\n        migrations.AddIndex(\"product\", models.Index(fields=[\"note\"], name=\"catalog_note_idx\")),\n    ]\n",
    );
    let v = json_of(&p, &["plan", "--json"]);
    assert_eq!(v["base"]["current"], false);
    assert_eq!(labels(&v), ["catalog.0005_product_note"]);
    assert_eq!(v["migrations"][0]["applied"], false);
    // Named by path (as `git diff --name-only` prints them) and by label,
    // already applied or not; reported in migrate's order.
    let v = json_of(
        &p,
        &[
            "plan",
            "--json",
            "--exclude-op",
            "AddIndex,RunSQL",
            "catalog/migrations/0005_product_note.py",
            "orders.0002_open_orders_partial_index",
        ],
    );
    assert_eq!(
        labels(&v),
        [
            "orders.0002_open_orders_partial_index",
            "catalog.0005_product_note"
        ]
    );
    assert_eq!(v["migrations"][0]["applied"], true);
    assert_eq!(v["migrations"][0]["operations"], Value::Array(vec![]));
    let ops = v["migrations"][1]["operations"].as_array().expect("ops");
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0]["type"], "AddField");
    assert_eq!(ops[0]["line"], 7);
    // A name that is no migration: a usage error with a hint.
    let out = p.run(&["plan", "catalog/models.py"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("`") && err.contains("is not a migration file Django loaded"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
}

/// One operation per lint rule, on tables that exist before it.
const RISKY: &str = r#"from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


def noop(apps, schema_editor):
    pass


class Migration(migrations.Migration):
    dependencies = [("catalog", "0004_product_is_active")]

    operations = [
        migrations.AddField("product", "stock", models.IntegerField(null=True)),
        migrations.AddIndex("product", models.Index(fields=["stock"], name="catalog_stock_idx")),
        migrations.AlterField("product", "sku", models.TextField(unique=True)),
        migrations.AddField("product", "parent", models.ForeignKey("catalog.Product", null=True, on_delete=models.CASCADE)),
        migrations.RunPython(noop),
        migrations.RunSQL("ALTER TABLE catalog_product ADD COLUMN token uuid DEFAULT gen_random_uuid()"),
        AddIndexConcurrently("product", models.Index(fields=["price"], name="catalog_price_idx")),
        migrations.RunSQL("ALTER TABLE catalog_category ADD COLUMN rank integer NOT NULL", migrations.RunSQL.noop),
    ]
"#;

/// The major version of the Django the tests run (MIGSNAP_TEST_PYTHON's).
fn django_major() -> u32 {
    let out = std::process::Command::new(python())
        .args(["-c", "import django; print(django.VERSION[0])"])
        .output()
        .expect("run python");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a Django major version")
}

fn rule_lines(v: &Value) -> Vec<(String, u64)> {
    let mut found: Vec<(String, u64)> = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().expect("rule").to_string(),
                f["line"].as_u64().expect("line"),
            )
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

#[test]
fn lint_reports_each_rule_at_the_operation_line() {
    let p = Project::example("lint");
    p.prepare(&p.db("a"));
    // The project as built lints clean: nothing would run.
    let clean = p.run(&["lint"]);
    assert_eq!(clean.status.code(), Some(0), "{}", stderr(&clean));
    p.write("catalog/migrations/0005_risky.py", RISKY);
    let out = p.run(&["lint", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "errors exit 1: {}",
        stderr(&out)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(strings(&v["migrations"]), ["catalog.0005_risky"]);
    let expected: Vec<(String, u64)> = [
        ("alter-column-type", 15),
        ("concurrent-in-atomic", 19),
        ("constraint-not-valid", 16),
        ("index-not-concurrent", 14),
        // The index Django adds for the new text column's LIKE lookups
        // (Django 4.2 drops the varchar one and makes none: its SQL has no
        // CREATE INDEX there), and the foreign key's index (deferred to the
        // migration's end).
        ("index-not-concurrent", 15),
        ("index-not-concurrent", 16),
        ("not-null-without-default", 20),
        ("run-python-no-reverse", 17),
        ("run-sql-no-reverse", 18),
        ("volatile-default", 18),
    ]
    .iter()
    .filter(|(r, l)| django_major() >= 5 || (*r, *l) != ("index-not-concurrent", 15))
    .map(|(r, l)| (r.to_string(), *l))
    .collect();
    assert_eq!(rule_lines(&v), expected);
    let f = &v["findings"][0];
    assert_eq!(f["path"], "catalog/migrations/0005_risky.py");
    assert!(f["hint"].as_str().is_some_and(|h| !h.is_empty()), "{f}");
    assert!(["error", "warning"].contains(&f["severity"].as_str().expect("severity")));

    let gh = p.run(&["lint", "--format", "github"]);
    let gh = String::from_utf8_lossy(&gh.stdout);
    assert!(
        gh.contains("::error file=catalog/migrations/0005_risky.py,line=14,title=migsnap lint%3A index-not-concurrent::"),
        "{gh}"
    );

    // A baseline accepts what is there.
    let baseline = p.path().join("lint-baseline.json");
    let b = baseline.to_str().expect("utf-8");
    let w = p.run(&["lint", "--write-baseline", b]);
    assert!(w.status.success(), "{}", stderr(&w));
    let accepted = p.run(&["lint", "--json", "--baseline", b]);
    assert_eq!(accepted.status.code(), Some(0), "{}", stderr(&accepted));
    let accepted: Value = serde_json::from_slice(&accepted.stdout).expect("json");
    assert_eq!(accepted["summary"]["baselined"], expected.len());

    // Levels from [tool.migsnap]: off drops a rule, error raises one.
    let config = p.path().join("migsnap.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str("lint-rules = { index-not-concurrent = \"off\", concurrent-in-atomic = \"off\", volatile-default = \"off\", not-null-without-default = \"off\", run-sql-no-reverse = \"error\" }\n");
    std::fs::write(&config, text).expect("write config");
    let out = p.run(&["lint", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let rules: Vec<String> = rule_lines(&v).into_iter().map(|(r, _)| r).collect();
    assert_eq!(
        rules,
        [
            "alter-column-type",
            "constraint-not-valid",
            "run-python-no-reverse",
            "run-sql-no-reverse"
        ]
    );
    let raised = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["rule"] == "run-sql-no-reverse")
        .expect("raised");
    assert_eq!(raised["severity"], "error");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text = text.replace(
        "index-not-concurrent = \"off\"",
        "index-not-concurent = \"off\"",
    );
    std::fs::write(&config, text).expect("write config");
    let bad = p.run(&["lint"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("unknown lint rule `index-not-concurent`"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn lint_reports_a_runsql_index_the_model_state_lacks_once_check_has_run() {
    let p = Project::example("lintcheck");
    let file = "catalog/migrations/0005_product_note.py";
    p.write(file, NEW_MIGRATION);
    let rule = "runsql-index-not-in-model-state";
    let of_rule = |v: &Value| findings_of_rule(v, rule);
    // No check results for this key: the rule is left out, and lint says so
    // (it builds no model-state database itself).
    let out = p.run(&["lint", "--json", file]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(of_rule(&v), Vec::<Value>::new());
    assert!(
        stderr(&out).contains(&format!("rule {rule} skipped: no `migsnap check` results")),
        "{}",
        stderr(&out)
    );

    let check = p.run(&["check", "--json"]);
    assert_eq!(check.status.code(), Some(1), "{}", stderr(&check));
    let checked: Value = serde_json::from_slice(&check.stdout).expect("json");
    p.track(&template_name(checked["key"].as_str().expect("key")));

    // Now it reports the new migration's RunSQL index at the operation, and
    // only that one: the example's own undeclared indexes are in migrations
    // outside the range.
    let out = p.run(&["lint", "--json", file]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    // (The measured rule is skipped without --trace: not this one.)
    assert!(
        !stderr(&out).contains(&format!("rule {rule} skipped")),
        "{}",
        stderr(&out)
    );
    let found = of_rule(&v);
    assert_eq!(found.len(), 1, "{v}");
    let f = &found[0];
    assert_eq!(f["path"], file);
    assert_eq!(f["line"], 8);
    assert_eq!(f["migration"], "catalog.0005_product_note");
    assert_eq!(f["severity"], "warning");
    assert!(
        f["message"]
            .as_str()
            .is_some_and(|m| m.contains("`catalog_product_note_idx`") && m.contains("RunSQL")),
        "{f}"
    );
    // `off` turns it off.
    let config = p.path().join("migsnap.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&format!("lint-rules = {{ {rule} = \"off\" }}\n"));
    std::fs::write(&config, text).expect("write config");
    let out = p.run(&["lint", "--json", file]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(of_rule(&v), Vec::<Value>::new());
}

/// Issue #25: what PostgreSQL rewrites or scans, read from the SQL Django
/// writes for each operation (with PostgreSQL's own grammar), and what it
/// does not: a stable `db_default` is stored once, a nullable column costs
/// nothing.
#[test]
fn lint_knows_what_rewrites_or_scans_an_existing_table() {
    let p = Project::example("lintscan");
    let modern = django_major() >= 5;
    let mut text = String::from(
        r#"from django.db import migrations, models
from django.db.models.functions import Now


class Migration(migrations.Migration):
    dependencies = [("catalog", "0004_product_is_active")]

    operations = [
        migrations.AddField("product", "label", models.CharField(max_length=20, null=True)),
        migrations.AlterField("product", "label", models.CharField(max_length=20, default="")),
        migrations.AddConstraint("category", models.UniqueConstraint(fields=["name"], name="catalog_category_name_uniq")),
"#,
    );
    if modern {
        // Lines 12 and 13: GeneratedField and db_default came in Django 5.0.
        text.push_str(
            r#"        migrations.AddField("product", "doubled", models.GeneratedField(expression=models.F("price") * 2, output_field=models.DecimalField(max_digits=12, decimal_places=2), db_persist=True)),
        migrations.AddField("product", "seen", models.DateTimeField(db_default=Now())),
"#,
        );
    }
    text.push_str("    ]\n");
    let file = "catalog/migrations/0005_scans.py";
    p.write(file, &text);
    let out = p.run(&["lint", "--json", file]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let mut expected = vec![
        ("set-not-null".to_string(), 10),
        ("unique-not-concurrent".to_string(), 11),
    ];
    if modern {
        expected.push(("stored-generated-column".to_string(), 12));
    }
    expected.sort();
    assert_eq!(rule_lines(&v), expected, "{v}");
    let scan = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["rule"] == "set-not-null")
        .expect("set-not-null");
    assert!(
        scan["message"]
            .as_str()
            .is_some_and(|m| m.contains("`catalog_product`.`label`")),
        "{scan}"
    );
    assert!(
        scan["statement"]
            .as_str()
            .is_some_and(|s| s.contains("SET NOT NULL")),
        "{scan}"
    );

    // `--stats-from`: weighed against a database where catalog_category
    // is big (analyzed) and catalog_product small, only the big table's
    // finding still fails the run.
    let db = p.db("stats");
    p.prepare(&db);
    psql(
        &db,
        "INSERT INTO catalog_category (name, slug) SELECT 'c' || i, 's' || i FROM generate_series(1, 20000) i; ANALYZE catalog_category;",
    );
    let out = p.run(&["lint", "--json", "--stats-from", &db_url(&db), file]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let severity_of = |rule: &str| -> (String, String) {
        let f = v["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .find(|f| f["rule"] == rule)
            .unwrap_or_else(|| panic!("{rule}: {v}"));
        (
            f["severity"].as_str().expect("severity").to_string(),
            f["message"].as_str().expect("message").to_string(),
        )
    };
    let (severity, message) = severity_of("unique-not-concurrent");
    assert_eq!(severity, "error", "{message}");
    assert!(message.contains("about 2000"), "{message}");
    let (severity, message) = severity_of("set-not-null");
    assert_eq!(severity, "note", "{message}");
    assert!(message.contains("a small table"), "{message}");
    assert_eq!(v["summary"]["errors"], 1, "{v}");
    // The big table's finding gone (a baseline), only notes are left: exit 0.
    psql(
        &db,
        "TRUNCATE catalog_category CASCADE; ANALYZE catalog_category;",
    );
    let out = p.run(&["lint", "--stats-from", &db_url(&db), file]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("note[unique-not-concurrent]"), "{text}");
}
