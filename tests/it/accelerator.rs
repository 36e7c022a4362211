//! `build-accelerator` and `verify-build` (issue #24) against a real server
//! and a real Django: an accelerated build (django-fastmig, installed in
//! the test venv by tests/requirements.txt) equals a plain `migrate`, has a
//! key of its own, records how it was made, and is a stock build's base only
//! when verified; without fastmig the build is stock and says so once.

use crate::common::*;
use serde_json::Value;
use std::process::{Command, Output};

/// `prepare --json` into `db` with `vars` set, asserting success.
fn prepare_with(p: &Project, db: &str, vars: &[(&str, &str)]) -> (Value, String) {
    p.track(db);
    let out = with_vars(p.cmd(&["prepare", "--database", db, "--json"]), vars);
    let out = succeeded(out, "prepare");
    let v = json_out(&out);
    p.track(&template_of(&v));
    (v, stderr(&out))
}

/// `c` with only `vars` of the two settings' variables: each test says
/// what it means, whatever the environment running the suite exports.
fn with_vars(mut c: Command, vars: &[(&str, &str)]) -> Output {
    c.env_remove("MIGSNAP_BUILD_ACCELERATOR")
        .env_remove("MIGSNAP_VERIFY_BUILD")
        .envs(vars.iter().copied())
        .output()
        .expect("run migsnap")
}

/// The `build` record of `key`'s manifest in `p`'s cache dir.
fn build_record(p: &Project, key: &str) -> Value {
    let bytes = std::fs::read(p.cache.path().join(format!("{key}.json"))).expect("manifest");
    let m: Value = serde_json::from_slice(&bytes).expect("manifest JSON");
    m["build"].clone()
}

/// The example project with `build-accelerator` on, and `verify-build`
/// too when `verify`.
fn accelerated(test: &str, verify: bool) -> Project {
    let p = Project::example(test);
    p.add_config(if verify {
        "build-accelerator = true\nverify-build = true\n"
    } else {
        "build-accelerator = true\n"
    });
    p
}

const STOCK: &[(&str, &str)] = &[("MIGSNAP_BUILD_ACCELERATOR", "0")];

/// `prepare_with` where `import fastmig` finds `module` (its source) first
/// on sys.path, before the package the test venv installs: a fastmig
/// migsnap must not use, so the build is cold and stock.
#[track_caller]
fn prepare_shadowed(p: &Project, db: &str, module: &str) -> (Value, String) {
    let shadow = tempfile::tempdir().expect("tempdir");
    std::fs::write(shadow.path().join("fastmig.py"), module).expect("write shadow");
    let path = shadow.path().to_str().expect("utf-8 path");
    let (v, err) = prepare_with(p, db, &[("PYTHONPATH", path)]);
    assert_eq!(v["source"], "cold", "{err}");
    assert_eq!(v["accelerated"], false, "{err}");
    (v, err)
}

#[test]
fn a_verified_accelerated_build_equals_a_plain_migrate_and_may_be_a_stock_builds_base() {
    let p = accelerated("accel_verified", true);
    let db = p.db("a");
    let (v, err) = prepare_with(&p, &db, &[]);
    assert_eq!(v["source"], "cold", "{err}");
    assert_eq!(v["accelerated"], true, "{err}");
    assert!(err.contains("migrating with django-fastmig"), "{err}");
    assert!(
        err.contains("verify-build: migrating a scratch database"),
        "{err}"
    );
    let key = key_of(&v);
    let build = build_record(&p, &key);
    assert_eq!(build["accelerated"], true);
    assert_eq!(build["verified"], true);
    Reference::of(&p).check(&db, "an accelerated, verified build");

    // Served again from its template: still known to be accelerated.
    let (again, _) = prepare_with(&p, &p.db("b"), &[]);
    assert_eq!(again["source"], "template");
    assert_eq!(again["accelerated"], true);

    // A stock run has another key, and may start from the verified one.
    let (stock, err) = prepare_with(&p, &p.db("c"), STOCK);
    assert_ne!(stock["key"], key.as_str());
    assert_eq!(stock["source"], "incremental", "{err}");
    assert_eq!(stock["base_key"], key.as_str());
    assert_eq!(stock["accelerated"], false);
    Reference::of(&p).check(&p.db("c"), "a stock build on a verified accelerated one");
}

#[test]
fn an_unverified_accelerated_snapshot_is_never_a_stock_builds_base() {
    let p = accelerated("accel_unverified", false);
    let db = p.db("a");
    let (v, err) = prepare_with(&p, &db, &[]);
    assert_eq!(v["accelerated"], true, "{err}");
    assert!(!err.contains("verify-build"), "{err}");
    let key = key_of(&v);
    let build = build_record(&p, &key);
    assert_eq!(build["accelerated"], true);
    assert_eq!(build.get("verified"), None, "not verified: not said");
    Reference::of(&p).check(&db, "an accelerated build");

    let (stock, err) = prepare_with(&p, &p.db("b"), STOCK);
    assert_eq!(stock["source"], "cold", "{err}");
    assert_eq!(stock["accelerated"], false);
    assert_eq!(
        build_record(&p, stock["key"].as_str().expect("key")).get("accelerated"),
        None
    );
}

#[test]
fn without_fastmig_the_build_is_stock_and_says_so_once() {
    let p = accelerated("accel_missing", true);
    // The installed package hidden from the project's interpreter: a module
    // of that name earlier on sys.path that fails to import, as a missing
    // one does.
    let db = p.db("a");
    let (v, err) = prepare_shadowed(
        &p,
        &db,
        "raise ModuleNotFoundError(\"No module named 'fastmig'\", name='fastmig')\n",
    );
    let warning =
        "build-accelerator is on but django-fastmig is not installed in the project's environment";
    assert_eq!(err.matches(warning).count(), 1, "{err}");
    assert!(
        err.contains("pip install django-fastmig"),
        "the hint: {err}"
    );
    assert!(!err.contains("verify-build"), "nothing to verify: {err}");
    let build = build_record(&p, v["key"].as_str().expect("key"));
    assert_eq!(build.get("accelerated"), None);
    Reference::of(&p).check(&db, "a stock build under the accelerated key");
}

#[test]
fn the_key_follows_the_setting_and_bad_values_exit_2() {
    let p = Project::example("accel_key");
    let key = |vars: &[(&str, &str)]| {
        let out = succeeded(with_vars(p.cmd(&["key"]), vars), "key");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let stock = key(&[]);
    let fast = key(&[("MIGSNAP_BUILD_ACCELERATOR", "1")]);
    assert_ne!(fast, stock);
    assert_eq!(key(&[("MIGSNAP_BUILD_ACCELERATOR", "0")]), stock);
    assert_eq!(
        key(&[("MIGSNAP_VERIFY_BUILD", "1")]),
        stock,
        "verifying is no other build"
    );
    p.add_config("build-accelerator = true\n");
    assert_eq!(key(&[]), fast, "the config and the variable agree");
    assert_eq!(key(STOCK), stock, "the variable overrides the config");

    for var in ["MIGSNAP_BUILD_ACCELERATOR", "MIGSNAP_VERIFY_BUILD"] {
        let out = with_vars(p.cmd(&["key"]), &[(var, "maybe")]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.starts_with(&format!("error: {var} must be true or false, not `maybe`")),
            "{err}"
        );
        assert!(err.contains("hint: "), "{err}");
    }
}

/// A difference from stock Django fails the build, named, and nothing is
/// saved: a table more (the schema), and one value changed with the same
/// schema and row counts (the rows' values are compared, not only counted).
#[test]
fn a_build_that_fails_verification_saves_nothing() {
    require_failpoints();
    let skews = [
        ("accel_skew", "1", "migsnap_verify_skew"),
        (
            "accel_skew_rows",
            "rows",
            "the rows of table public.django_content_type differ from stock Django's",
        ),
    ];
    for (name, skew, named) in skews {
        let p = accelerated(name, true);
        let db = p.db("a");
        let key = p.key();
        let out = with_vars(
            p.cmd(&["prepare", "--database", &db, "--json"]),
            &[("MIGSNAP_TEST_VERIFY_SKEW", skew)],
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(4), "{err}");
        assert!(
            err.contains("error: verify-build: the accelerated build of snapshot")
                && err.contains(named),
            "names the first difference: {err}"
        );
        assert!(err.contains("hint: set build-accelerator = false"), "{err}");
        assert!(out.stdout.is_empty(), "no JSON for a failed build");
        assert!(
            !p.cache.path().join(format!("{key}.json")).exists(),
            "no manifest"
        );
        assert!(
            !p.cache.path().join(format!("{key}.sql.zst")).exists(),
            "no dump"
        );
        assert!(!database_exists(&db));
        assert!(!database_exists(&template_name(&key)));
        assert!(!database_exists(&build_name(&key)));
    }
}

// ---- tests/accelproj: every shape django-fastmig re-implements ----

/// The project whose migrations take the shapes the accelerator changes
/// how Django handles (tests/accelproj/accelproj/settings.py): renames,
/// foreign key and primary key type changes, multi-table inheritance,
/// proxies, explicit through models, RunPython reading historical models;
/// and two migrations with a package's things (`THIRD_PARTY`), which must
/// run with stock Django.
fn accelproj(test: &str) -> Project {
    Project::copy_of(&repo().join("tests/accelproj"), test)
}

/// The migrations with a package's things (tests/accelproj/extops), in
/// the order applied, and what django-fastmig does not know in each: an
/// operation it gets wrong (django-fastmig alone leaves
/// authors_country.name at varchar(50) where stock Django widens it to
/// varchar(80)), and relation fields that are not Django's own. The last
/// leaves a class pointing at a stale target, which django-fastmig cannot
/// re-link in the next migration unless the hand-over drops the rendered
/// classes (netbox's taggit fields; stores/migrations/0010_labels.py).
const THIRD_PARTY: [(&str, &str); 3] = [
    (
        "authors.0010_widen_names",
        "operation extops.AlterFieldsReloadingOne",
    ),
    (
        "stores.0009_outlet_manager",
        "relation field extops.LabelledForeignKey",
    ),
    ("stores.0010_labels", "relation field extops.LabelsRelation"),
];

fn third_party() -> Value {
    THIRD_PARTY.iter().map(|(m, _)| *m).collect()
}

/// `prepare`'s stderr and JSON say the `THIRD_PARTY` migrations ran with
/// stock Django.
fn assert_stock_for_third_party(v: &Value, err: &str) {
    assert_eq!(v["stock_migrations"], third_party(), "{err}");
    for (migration, what) in THIRD_PARTY {
        assert!(
            err.contains(&format!(
                "django-fastmig does not know the {what} in {migration}: stock Django applies it"
            )),
            "{err}"
        );
    }
}

/// The migrations an incremental build applies on top of a snapshot of
/// the others: every rename, type change and probe is in this half.
const SECOND_HALF: &[&str] = &[
    "authors/migrations/0005_rename_writer_author.py",
    "authors/migrations/0006_rename_name_full_name.py",
    "authors/migrations/0007_country_code_3.py",
    "authors/migrations/0008_author_bigautofield.py",
    "authors/migrations/0009_probe.py",
    "authors/migrations/0010_widen_names.py",
    "books/migrations/0004_publication_fields.py",
    "books/migrations/0005_proxies.py",
    "books/migrations/0006_renames.py",
    "books/migrations/0007_alter_credit_and_origin.py",
    "books/migrations/0008_publication_bigautofield.py",
    "books/migrations/0009_probe.py",
    "stores/migrations/0003_rename_stock_inventory.py",
    "stores/migrations/0004_alter_inventory.py",
    "stores/migrations/0005_rename_shop_store.py",
    "stores/migrations/0006_store_options_proxy.py",
    "stores/migrations/0007_outlet.py",
    "stores/migrations/0008_probe.py",
    "stores/migrations/0009_outlet_manager.py",
    "stores/migrations/0010_labels.py",
    "stores/migrations/0011_store_crates.py",
];

fn remove_second_half(p: &Project) {
    for rel in SECOND_HALF {
        std::fs::remove_file(p.path().join(rel)).expect("remove a migration");
    }
}

fn restore_second_half(p: &Project) {
    for rel in SECOND_HALF {
        let text = std::fs::read_to_string(repo().join("tests/accelproj").join(rel)).expect("read");
        p.write(rel, &text);
    }
}

#[test]
fn every_shape_built_accelerated_and_stock_equals_a_plain_migrate() {
    let p = accelproj("accel_shapes");
    p.add_config("build-accelerator = true\nverify-build = true\n");
    let reference = Reference::of(&p);

    let db = p.db("fast");
    let (v, err) = prepare_with(&p, &db, &[]);
    assert_eq!(v["source"], "cold", "{err}");
    assert_eq!(v["accelerated"], true, "{err}");
    assert_stock_for_third_party(&v, &err);
    let build = build_record(&p, v["key"].as_str().expect("key"));
    assert_eq!(build["verified"], true, "{err}");
    assert_eq!(build["stock_migrations"], third_party());
    reference.check_exact(&db, "accelerated");
    // Served from its template: the manifest still says so.
    let (again, _) = prepare_with(&p, &p.db("again"), &[]);
    assert_eq!(again["source"], "template");
    assert_eq!(again["stock_migrations"], third_party());

    // Stock, from empty: a cache dir of its own, so that it cannot start
    // from the accelerated snapshot.
    let stock_cache = tempfile::tempdir().expect("tempdir");
    let cache = stock_cache.path().to_str().expect("utf-8 path");
    let db = p.db("stock");
    let (v, err) = prepare_with(
        &p,
        &db,
        &[
            ("MIGSNAP_BUILD_ACCELERATOR", "0"),
            ("MIGSNAP_CACHE_DIR", cache),
        ],
    );
    assert_eq!(v["source"], "cold", "{err}");
    assert_eq!(v["accelerated"], false, "{err}");
    assert_eq!(v["stock_migrations"], serde_json::json!([]), "{err}");
    reference.check_exact(&db, "stock");
}

#[test]
fn every_shape_built_incrementally_with_the_accelerator_equals_a_plain_migrate_in_two_steps() {
    let p = accelproj("accel_shapes_incr");
    p.add_config("build-accelerator = true\nverify-build = true\n");
    remove_second_half(&p);
    let first = p.db("first");
    let (v, err) = prepare_with(&p, &first, &[]);
    assert_eq!(v["source"], "cold", "{err}");
    assert_eq!(v["accelerated"], true, "{err}");
    let base = v["key"].as_str().expect("key").to_string();
    // For the stock build on the same base: a cache dir with only it, so
    // that it cannot start from the accelerated build of the rest.
    let stock_cache = tempfile::tempdir().expect("tempdir");
    copy_dir(p.cache.path(), stock_cache.path());
    let cache = stock_cache.path().to_str().expect("utf-8 path");
    // The reference: a plain migrate of the first half, then of the rest.
    let plain = p.db("plain");
    p.plain_migrate(&plain);
    Reference::read(&plain).check_exact(&first, "the first half, accelerated");
    restore_second_half(&p);
    p.migrate_on(&plain);
    let reference = Reference::read(&plain);

    let db = p.db("fast");
    let (v, err) = prepare_with(&p, &db, &[]);
    assert_eq!(v["source"], "incremental", "{err}");
    assert_eq!(v["base_key"], base.as_str(), "{err}");
    assert_eq!(v["accelerated"], true, "{err}");
    assert_stock_for_third_party(&v, &err);
    let build = build_record(&p, v["key"].as_str().expect("key"));
    assert_eq!(build["verified"], true, "{err}");
    reference.check_exact(&db, "the rest, accelerated, on the accelerated first half");

    // Stock on the same (verified) base.
    let db = p.db("stock");
    let (v, err) = prepare_with(
        &p,
        &db,
        &[
            ("MIGSNAP_BUILD_ACCELERATOR", "0"),
            ("MIGSNAP_CACHE_DIR", cache),
        ],
    );
    assert_eq!(v["source"], "incremental", "{err}");
    assert_eq!(v["base_key"], base.as_str(), "{err}");
    assert_eq!(v["accelerated"], false, "{err}");
    reference.check_exact(&db, "the rest, stock, on the accelerated first half");
}

#[test]
fn a_verified_increment_on_an_unverified_base_stays_unverified() {
    let p = accelerated("accel_unverified_base", false);
    let (first, err) = prepare_with(&p, &p.db("a"), &[]);
    assert_eq!(first["accelerated"], true, "{err}");
    p.write("catalog/migrations/0005_product_note.py", NEW_MIGRATION);
    // The base from its dump (the other test builds on its template):
    // restored into the build database, which verify-build then copies.
    drop_template(first["key"].as_str().expect("key"));
    let db = p.db("b");
    let (v, err) = prepare_with(&p, &db, &[("MIGSNAP_VERIFY_BUILD", "1")]);
    assert_eq!(v["source"], "incremental", "{err}");
    assert_eq!(v["base_key"], first["key"], "{err}");
    // Stock Django applied the one new migration to the copy of the base.
    assert!(err.contains("verify-build: migrating"), "checked: {err}");
    assert_eq!(err.matches("applied 1 migration(s)").count(), 2, "{err}");
    let build = build_record(&p, v["key"].as_str().expect("key"));
    assert_eq!(build["accelerated"], true);
    assert_eq!(
        build.get("verified"),
        None,
        "its base is not known to be stock Django's"
    );
    Reference::of(&p).check(&db, "an increment on an unverified base");

    // So a stock build does not start from it (nor from its base).
    let (stock, err) = prepare_with(&p, &p.db("c"), STOCK);
    assert_eq!(stock["source"], "cold", "{err}");
}

/// A django-fastmig release migsnap was not checked against is never
/// installed: the shim reaches into its internals around the migrations it
/// runs stock, and a renamed internal would go unseen. The build is stock
/// and says which version it found and which it wants.
#[test]
fn a_fastmig_release_migsnap_does_not_know_is_not_used() {
    let p = accelerated("accel_unknown", false);
    // A later release on sys.path before the installed one; installing it
    // fails the build, so a build that succeeds never called it.
    let db = p.db("a");
    let (_, err) = prepare_shadowed(
        &p,
        &db,
        "__version__ = '0.2.0'\n\
         def install():\n    raise RuntimeError('an unknown release was installed')\n\
         def uninstall():\n    pass\n\
         def installed():\n    return True\n",
    );
    assert!(
        err.contains("django-fastmig 0.2.0")
            && err.contains("is not a release migsnap was checked against (0.1.1)"),
        "{err}"
    );
    assert!(err.contains("django-fastmig==0.1.1"), "the hint: {err}");
    Reference::of(&p).check(&db, "a stock build beside an unknown release");
}
