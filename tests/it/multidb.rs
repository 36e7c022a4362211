//! A project with several databases (tests/multidb: a routed `warehouse`
//! alias, `replica` as a TEST["MIRROR"] of `default`, an unmanaged
//! `legacy` alias nothing migrates into) under both runners: pytest with
//! the plugin (`-n 2`) and `manage.py test --parallel 2` with
//! `migsnap.django.DiscoverRunner`. Every alias comes from migsnap, no
//! migration runs in any test process, and each alias's database equals
//! what Django's own test setup builds for it.

use crate::common::*;
use serde_json::Value;
use std::process::{Command, Output};

fn project(test: &str) -> Project {
    Project::copy_of(&repo().join("tests/multidb"), test)
}

/// Python in the project with the plugin and runner from the source tree,
/// the settings' databases on the test server (NAME = the project's name),
/// and migsnap's cache and server this test's.
fn python_cmd(p: &Project, args: &[&str], records: &std::path::Path) -> Command {
    let mut c = p.python_cmd(&bin());
    c.args(args)
        .env("MULTIDB_RECORDS", records)
        .env_remove("MULTIDB_TEST_RUNNER");
    c
}

/// [`python_cmd`] running pytest with migsnap's plugin and `args`.
fn pytest_cmd(p: &Project, args: &[&str], records: &std::path::Path) -> Command {
    let mut c = python_cmd(p, &PYTEST_WITH_PLUGIN, records);
    c.args(args);
    c
}

/// Run, asserting success.
fn run(mut c: Command, what: &str) -> Output {
    let out = c.output().expect("run the suite");
    assert!(
        out.status.success(),
        "{what}: exit {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The records the suite's tests wrote since the last call.
fn records(dir: &std::path::Path) -> Vec<Value> {
    let found: Vec<Value> = std::fs::read_dir(dir)
        .expect("records")
        .flatten()
        .map(|e| serde_json::from_slice(&std::fs::read(e.path()).expect("read")).expect("json"))
        .collect();
    for e in std::fs::read_dir(dir).expect("records").flatten() {
        std::fs::remove_file(e.path()).expect("clear records");
    }
    found
}

/// What a test database of one alias holds that a build decides: its
/// schema and its django_migrations rows.
fn state(db: &str) -> (String, Vec<String>) {
    (schema(db), django_migrations(db))
}

/// The test databases of the three databases of the settings (replica is
/// default's), named as Django names them.
fn test_names(p: &Project) -> [String; 3] {
    [
        format!("test_{}", p.name),
        format!("test_{}_wh", p.name),
        format!("test_{}_legacy", p.name),
    ]
}

fn assert_from_migsnap(records: &[Value], names: &dyn Fn(&str) -> Vec<String>) {
    assert!(!records.is_empty(), "the suite wrote no record");
    for r in records {
        assert_eq!(r["applied"], serde_json::json!([]), "{r}");
        assert_eq!(r["pre_migrate"], serde_json::json!([]), "{r}");
        for alias in ["default", "warehouse", "replica", "legacy"] {
            let (db, comment) = (
                r["databases"][alias][0].as_str().expect("name"),
                r["databases"][alias][1].as_str().expect("comment"),
            );
            assert!(
                comment.starts_with("migsnap clone of "),
                "{alias} is not a migsnap clone: {r}"
            );
            assert!(
                names(alias).iter().any(|n| n == db),
                "{alias} uses {db}, not one of {:?}: {r}",
                names(alias)
            );
        }
        assert_eq!(
            r["databases"]["replica"], r["databases"]["default"],
            "the mirror is default's database: {r}"
        );
    }
}

#[test]
fn every_alias_comes_from_migsnap_under_both_runners_as_django_would_build_it() {
    let p = project("multidb");
    let dir = tempfile::tempdir().expect("tempdir");
    let [default, wh, legacy] = test_names(&p);
    for base in [&default, &wh, &legacy] {
        p.track(base);
        for suffix in ["_1", "_2", "_gw0", "_gw1"] {
            p.track(&format!("{base}{suffix}"));
        }
    }

    // 1. Django's own runner and setup, databases kept: the reference, and
    // the control that the suite sees migrations when they run.
    let mut c = python_cmd(
        &p,
        &["manage.py", "test", "--keepdb", "-v", "0"],
        dir.path(),
    );
    c.env("MULTIDB_TEST_RUNNER", "django.test.runner.DiscoverRunner");
    run(c, "manage.py test with Django's runner");
    let control = records(dir.path());
    assert!(
        control
            .iter()
            .all(|r| !r["applied"].as_array().expect("applied").is_empty()),
        "Django's runner migrates, and the suite sees it: {control:?}"
    );
    let reference: Vec<_> = [&default, &wh, &legacy].iter().map(|d| state(d)).collect();
    assert!(
        reference[1].0.contains("warehouse_stock_lower_sku"),
        "the routed RunSQL index is in the reference"
    );

    // 2. manage.py test --parallel 2 --keepdb with migsnap's runner: one
    // clone per worker per database, nothing migrated, every kept database
    // equal to Django's own.
    let c = python_cmd(
        &p,
        &[
            "manage.py",
            "test",
            "--parallel",
            "2",
            "--keepdb",
            "-v",
            "1",
        ],
        dir.path(),
    );
    let out = run(c, "manage.py test --parallel 2 with migsnap's runner");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("migsnap: {default} from ")),
        "the summary line: {stderr}"
    );
    let workers = |alias: &str| -> Vec<String> {
        let base = match alias {
            "warehouse" => &wh,
            "legacy" => &legacy,
            _ => &default,
        };
        vec![format!("{base}_1"), format!("{base}_2")]
    };
    assert_from_migsnap(&records(dir.path()), &workers);
    for (db, want) in [&default, &wh, &legacy].iter().zip(&reference) {
        assert_eq!(&state(db), want, "{db} differs from Django's own setup");
        for clone in workers(match db.as_str() {
            d if d == wh => "warehouse",
            d if d == legacy => "legacy",
            _ => "default",
        }) {
            assert_eq!(
                &state(&clone),
                want,
                "{clone} differs from Django's own setup"
            );
        }
    }

    // 3. Without --keepdb the runner drops what it made.
    let c = python_cmd(
        &p,
        &["manage.py", "test", "--parallel", "2", "-v", "0"],
        dir.path(),
    );
    run(c, "manage.py test --parallel 2");
    assert_from_migsnap(&records(dir.path()), &workers);
    for base in [&default, &wh, &legacy] {
        for db in [base.clone(), format!("{base}_1"), format!("{base}_2")] {
            assert!(!database_exists(&db), "{db} is dropped without --keepdb");
        }
    }

    // 4. pytest -n 2 with the plugin: each worker's databases from
    // migsnap, kept with --reuse-db and equal to Django's own.
    let c = pytest_cmd(&p, &["-n", "2", "--dist", "each", "--reuse-db"], dir.path());
    let out = run(c, "pytest -n 2");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("{wh}_gw1 from ")), "{stdout}");
    let gw = |alias: &str| -> Vec<String> {
        let base = match alias {
            "warehouse" => &wh,
            "legacy" => &legacy,
            _ => &default,
        };
        vec![format!("{base}_gw0"), format!("{base}_gw1")]
    };
    let seen = records(dir.path());
    assert_from_migsnap(&seen, &gw);
    let used: std::collections::BTreeSet<&str> = seen
        .iter()
        .map(|r| r["databases"]["default"][0].as_str().expect("name"))
        .collect();
    assert_eq!(used.len(), 2, "each worker has its own database: {used:?}");
    for (base, want) in [&default, &wh, &legacy].iter().zip(&reference) {
        for w in ["_gw0", "_gw1"] {
            let db = format!("{base}{w}");
            assert_eq!(&state(&db), want, "{db} differs from Django's own setup");
        }
    }

    // 5. --create-db rebuilds every alias's snapshot (once, in the xdist
    // controller): each template is a new database afterwards.
    let templates: Vec<String> = seen[0]["databases"]
        .as_object()
        .expect("databases")
        .values()
        .map(|v| template_of_clone_mark(v[1].as_str().expect("comment")))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(templates.len(), 3, "{templates:?}");
    for t in &templates {
        p.track(t);
    }
    let oids = || -> Vec<String> {
        templates
            .iter()
            .map(|t| {
                psql(
                    "postgres",
                    &format!("SELECT oid FROM pg_database WHERE datname = '{t}'"),
                )
            })
            .collect()
    };
    let before = oids();
    let c = pytest_cmd(&p, &["-n", "2", "--create-db"], dir.path());
    run(c, "pytest -n 2 --create-db");
    assert_from_migsnap(&records(dir.path()), &gw);
    let after = oids();
    for ((t, b), a) in templates.iter().zip(&before).zip(&after) {
        assert!(!a.is_empty() && a != b, "{t} rebuilt: {b} -> {a}");
    }
}

#[test]
fn prepare_all_aliases_and_ls_and_gc_know_each_alias() {
    // gc sweeps the whole server.
    let _alone = alone();
    let p = project("multidb_cli");
    let [default, wh, legacy] = test_names(&p);
    for db in [&default, &wh, &legacy] {
        p.track(db);
    }
    let migsnap = |args: &[&str]| -> Value {
        let out = p
            .cmd(args)
            .envs(libpq_env(&p.name))
            .output()
            .expect("run migsnap");
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let v = migsnap(&["prepare", "--all-aliases", "--json"]);
    let entries = v["aliases"].as_array().expect("aliases");
    let seen: Vec<(&str, &str, Option<&str>)> = entries
        .iter()
        .map(|e| {
            (
                e["alias"].as_str().expect("alias"),
                e["database"].as_str().expect("database"),
                e["mirror_of"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("default", default.as_str(), None),
            ("warehouse", wh.as_str(), None),
            ("replica", default.as_str(), Some("default")),
            ("legacy", legacy.as_str(), None),
        ]
    );
    for e in entries {
        p.track(&template_of(e));
    }
    // Each alias is its own snapshot, built as `migrate --database ALIAS`.
    let keys: std::collections::BTreeSet<&str> = entries
        .iter()
        .map(|e| e["key"].as_str().expect("key"))
        .collect();
    assert_eq!(keys.len(), 3, "{v}");
    assert!(psql(
        &wh,
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    )
    .contains("warehouse_stock"));
    assert!(!psql(
        &default,
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    )
    .contains("warehouse_stock"));

    // `ls` lists each with its alias, each current; gc keeps every alias's
    // current snapshot however little it keeps.
    let v = migsnap(&["ls", "--json"]);
    let mut listed: Vec<(String, bool)> = v["snapshots"]
        .as_array()
        .expect("snapshots")
        .iter()
        .map(|s| {
            (
                s["alias"].as_str().expect("alias").to_string(),
                s["current"] == true,
            )
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        vec![
            ("default".to_string(), true),
            ("legacy".to_string(), true),
            ("warehouse".to_string(), true)
        ]
    );
    let v = migsnap(&["gc", "--keep", "0", "--json"]);
    assert_eq!(v["kept"].as_array().expect("kept").len(), 3, "{v}");
    // A single alias, by name, is the same snapshot as with --all-aliases.
    let db = p.db("wh_again");
    let v = migsnap(&[
        "prepare",
        "--alias",
        "warehouse",
        "--database",
        &db,
        "--json",
    ]);
    assert!(keys.contains(v["key"].as_str().expect("key")), "{v}");
    assert!(v["source"] == "template" || v["source"] == "pool", "{v}");
}

/// The settings' `default` spelled out (NAME, HOST… not from PG*), as most
/// projects have it: migsnap's build cannot steer it through the
/// environment, so it still names the real database during other
/// aliases' builds.
fn default_spelled_out(p: &Project, real: &str) -> String {
    let env: std::collections::HashMap<String, String> = libpq_env(real).into_iter().collect();
    format!(
        "\nDATABASES['default'].update(NAME={real:?}, HOST={:?}, PORT={:?}, USER={:?})\n",
        env["PGHOST"], env["PGPORT"], env["PGUSER"]
    ) + &format!("# {}\n", p.name)
}

#[test]
fn a_build_never_reaches_the_real_database_of_another_alias() {
    let p = project("multidb_reach");
    // The developer's own database, with a row of theirs.
    let real = format!("{}_real", p.name);
    p.track(&real);
    psql("postgres", &format!("CREATE DATABASE \"{real}\""));
    psql(
        &real,
        "CREATE TABLE shop_product (id bigserial PRIMARY KEY, name varchar(100), sku varchar(40));
         INSERT INTO shop_product (name, sku) VALUES ('a developer''s row', 'DEV-1')",
    );
    let settings = std::fs::read_to_string(p.path().join("multidbproj/settings.py")).expect("read");
    p.write(
        "multidbproj/settings.py",
        &(settings + &default_spelled_out(&p, &real)),
    );
    // A warehouse data migration that reads and writes a model the router
    // sends to default: under Django's test setup, default is its test
    // database by then; in migsnap's build of warehouse it is not.
    p.write(
        "warehouse/migrations/0002_from_products.py",
        r#"from django.db import migrations


def copy(apps, schema_editor):
    if schema_editor.connection.alias != "warehouse":
        return
    Product = apps.get_model("shop", "Product")
    Stock = apps.get_model("warehouse", "Stock")
    for product in Product.objects.all():
        Stock.objects.using("warehouse").create(sku=product.sku)
    Product.objects.create(name="written by the warehouse build", sku="WH")


class Migration(migrations.Migration):
    dependencies = [("warehouse", "0001_initial"), ("shop", "0001_initial")]
    operations = [migrations.RunPython(copy, migrations.RunPython.noop)]
"#,
    );
    let db = p.db("wh");
    let out = p
        .cmd(&["prepare", "--alias", "warehouse", "--database", &db])
        .envs(libpq_env(&p.name))
        .output()
        .expect("run migsnap");
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "a Django failure: {said}");
    assert!(
        said.contains("error: migrate failed: ")
            && said.contains("used alias 'default', which still names the settings' own database"),
        "{said}"
    );
    assert!(
        said.contains("\nhint: have the migration read and write only its own database"),
        "{said}"
    );
    assert_eq!(
        psql(
            &real,
            "SELECT string_agg(sku, ',' ORDER BY id) FROM shop_product"
        ),
        "DEV-1",
        "the real database is untouched"
    );
}

#[test]
fn two_databases_with_one_test_name_are_refused_before_anything_is_prepared() {
    let p = project("multidb_clash");
    let [default, wh, legacy] = test_names(&p);
    for db in [&default, &wh, &legacy] {
        p.track(db);
    }
    let settings = std::fs::read_to_string(p.path().join("multidbproj/settings.py")).expect("read");
    // `default` again, its server spelled with a trailing slash: a
    // different database to Django (test_db_signature), the same test
    // name (test_<NAME>).
    p.write(
        "multidbproj/settings.py",
        &(settings
            + "\nif os.environ.get('MULTIDB_CLASH'):\n    DATABASES['other'] = database('', HOST=os.environ['PGHOST'] + '/')\n"
            + "if os.environ.get('MULTIDB_MIRROR'):\n    DATABASES['replica']['TEST'] = {'MIRROR': 'nope'}\n"),
    );
    p.write(
        "test_every_alias.py",
        "from django.test import TransactionTestCase\n\n\nclass EveryAlias(TransactionTestCase):\n    databases = '__all__'\n\n    def test_nothing(self):\n        pass\n",
    );
    let nothing_made = || {
        for db in [&default, &wh, &legacy] {
            assert!(!database_exists(db), "{db} was prepared");
        }
    };
    for (switch, said) in [
        (
            "MULTIDB_CLASH",
            "the aliases `default` and `other` are different databases in the settings",
        ),
        (
            "MULTIDB_MIRROR",
            "DATABASES['replica']['TEST']['MIRROR'] names the alias `nope`",
        ),
    ] {
        let out = p
            .cmd(&["prepare", "--all-aliases"])
            .envs(libpq_env(&p.name))
            .env(switch, "1")
            .output()
            .expect("run migsnap");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(4), "{switch}: {err}");
        assert!(
            err.starts_with(&format!("error: {said}")),
            "{switch}: {err}"
        );
        assert!(err.contains("\nhint: "), "{err}");
        nothing_made();

        // The runner says the same in one error and hint, no traceback.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = python_cmd(
            &p,
            &["manage.py", "test", "test_every_alias", "-v", "0"],
            dir.path(),
        );
        c.env(switch, "1");
        let out = c.output().expect("run manage.py test");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{switch}: {err}");
        assert!(err.contains(&format!("error: {said}")), "{switch}: {err}");
        assert!(!err.contains("Traceback"), "{err}");
        nothing_made();
    }
}

#[test]
fn manage_py_test_parallel_gives_each_worker_a_copy_of_a_sqlite_alias_too() {
    let p = project("multidb_sqlite");
    let [default, wh, legacy] = test_names(&p);
    for base in [&default, &wh, &legacy] {
        p.track(base);
        for suffix in ["_1", "_2"] {
            p.track(&format!("{base}{suffix}"));
        }
    }
    let settings = std::fs::read_to_string(p.path().join("multidbproj/settings.py")).expect("read");
    // An alias on another backend is Django's to set up; a file-backed
    // SQLite test database is what --parallel workers must get copies of.
    p.write(
        "multidbproj/settings.py",
        &(settings
            + "\nHERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))\n"
            + "DATABASES['cache'] = {'ENGINE': 'django.db.backends.sqlite3', 'NAME': os.path.join(HERE, 'cache.sqlite3'), 'TEST': {'NAME': os.path.join(HERE, 'test_cache.sqlite3')}}\n"),
    );
    let case = |name: &str| {
        format!(
            "\n\nclass {name}(TestCase):\n    databases = {{'default', 'cache'}}\n\n    def test_cache_is_migrated(self):\n        with connections['cache'].cursor() as cursor:\n            cursor.execute('SELECT count(*) FROM django_migrations')\n            self.assertGreater(cursor.fetchone()[0], 0)\n"
        )
    };
    p.write(
        "test_sqlite_alias.py",
        &(String::from("from django.db import connections\nfrom django.test import TestCase")
            + &case("First")
            + &case("Second")),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let c = python_cmd(
        &p,
        &[
            "manage.py",
            "test",
            "test_sqlite_alias",
            "--parallel",
            "2",
            "-v",
            "1",
        ],
        dir.path(),
    );
    let out = run(c, "manage.py test --parallel 2 with a SQLite alias");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Ran 2 tests"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left: Vec<_> = std::fs::read_dir(p.path())
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("test_cache"))
        .collect();
    assert!(
        left.is_empty(),
        "the SQLite test databases are removed: {left:?}"
    );
}
