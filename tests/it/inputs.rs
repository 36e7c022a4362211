//! Stale snapshots: a snapshot is served only while everything its build
//! read still holds, including what the key's globs do not cover (migrations
//! moved by MIGRATION_MODULES, apps outside the project, settings, links),
//! and nothing is saved when files change while Django runs. Every test
//! compares the result with a plain `migrate` of the project as it is now.

use crate::common::*;
use serde_json::Value;
use std::path::Path;

const SETTINGS: &str = "exampleproj/settings.py";

fn append(p: &Project, rel: &str, text: &str) {
    let path = p.path().join(rel);
    let mut s = std::fs::read_to_string(&path).expect("read");
    s.push_str(text);
    std::fs::write(path, s).expect("write");
}

/// `prepare --json` of `db`, asserting success; returns (result, stderr).
fn prepare(p: &Project, db: &str, args: &[&str]) -> (Value, String) {
    let mut all = vec!["prepare", "--database", db, "--json"];
    all.extend_from_slice(args);
    let out = p.run(&all);
    let err = stderr(&out);
    assert!(out.status.success(), "prepare failed:\n{err}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    p.track(&template_of(&v));
    (v, err)
}

fn index_migration(app: &str, dep: &str, index: &str) -> String {
    format!(
        "from django.db import migrations\n\n\nclass Migration(migrations.Migration):\n    \
         dependencies = [(\"{app}\", \"{dep}\")]\n    operations = [\n        \
         migrations.RunSQL(\"CREATE INDEX {index} ON audit_auditevent (id)\", \"DROP INDEX {index}\"),\n    ]\n"
    )
}

/// Moves audit's migrations to `audit/db_migrations`, mapped there by
/// `settings_line` (appended to the settings module).
fn move_audit_migrations(p: &Project, settings_line: &str) {
    std::fs::rename(
        p.path().join("audit/migrations"),
        p.path().join("audit/db_migrations"),
    )
    .expect("move");
    append(p, SETTINGS, settings_line);
}

#[test]
fn migrations_moved_by_a_literal_migration_modules_are_in_the_key() {
    let p = Project::example("modules");
    move_audit_migrations(
        &p,
        "\nMIGRATION_MODULES = {\"audit\": \"audit.db_migrations\"}\n",
    );
    let key = p.key();
    let db = p.db("a");
    let (first, err) = prepare(&p, &db, &[]);
    assert_eq!(first["source"], "cold");
    assert_eq!(first["key"], key.as_str(), "the key is the snapshot's");
    assert!(
        !err.contains("not covered by the `migrations` globs"),
        "the settings' text names the package: no glob to add: {err}"
    );

    // A new migration there changes the key (the CI cache key with it),
    // read from the settings' text, before and after any build.
    p.write(
        "audit/db_migrations/0003_extra.py",
        &index_migration("audit", "0002_payload_gin_index", "audit_extra_idx"),
    );
    let added = p.key();
    assert_ne!(added, key, "a new migration in the moved package");
    let (v, _) = prepare(&p, &db, &[]);
    assert_eq!(v["key"], added.as_str());
    assert_eq!(v["source"], "incremental", "built on the old snapshot");
    assert_eq!(v["applied"], serde_json::json!(["audit.0003_extra"]));
    Reference::of(&p).check(&db, "after adding a migration outside the globs");

    // Editing it: another key, built on the first snapshot, which never had it.
    p.write(
        "audit/db_migrations/0003_extra.py",
        &index_migration("audit", "0002_payload_gin_index", "audit_other_idx"),
    );
    let edited = p.key();
    assert!(edited != added && edited != key);
    let (v, err) = prepare(&p, &db, &[]);
    assert_eq!(v["source"], "incremental", "{err}");
    assert_eq!(v["base_key"], key.as_str());
    Reference::of(&p).check(&db, "after editing a migration outside the globs");

    // And unchanged, the snapshot is served again.
    let (v, _) = prepare(&p, &db, &[]);
    assert_eq!(v["source"], "template");
}

#[test]
fn migrations_moved_by_a_computed_migration_modules_are_recorded_checked_and_keyed() {
    let p = Project::example("modules_dyn");
    // Built at run time: the settings' text does not show it.
    move_audit_migrations(
        &p,
        "\nMIGRATION_MODULES = dict(audit=\"audit.\" + \"db_migrations\")\n",
    );
    let before = p.key();
    let db = p.db("a");
    let (first, err) = prepare(&p, &db, &[]);
    assert_eq!(first["source"], "cold");
    assert_eq!(first["key"], before.as_str());
    assert!(
        err.contains("add `audit/db_migrations/*.py` to `migrations`"),
        "the warning names the glob to add: {err}"
    );
    // After that build, `key` covers what it recorded (and says so).
    let out = p.run(&["key"]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("add `audit/db_migrations/*.py` to `migrations`"),
        "{}",
        stderr(&out)
    );
    let key = p.key();
    assert_eq!(p.key(), key, "the same tree, the same key");

    // A new migration there: the CI cache key changes; the snapshot key
    // cannot see it, the snapshot's record does.
    p.write(
        "audit/db_migrations/0003_extra.py",
        &index_migration("audit", "0002_payload_gin_index", "audit_extra_idx"),
    );
    assert_ne!(p.key(), key, "`migsnap key` follows the recorded package");
    let (v, _) = prepare(&p, &db, &[]);
    assert_eq!(
        v["key"],
        before.as_str(),
        "outside the snapshot key's globs"
    );
    assert_eq!(v["source"], "incremental", "built on the old snapshot");
    assert_eq!(v["applied"], serde_json::json!(["audit.0003_extra"]));
    Reference::of(&p).check(&db, "after adding a migration outside the globs");

    // Editing that applied migration: the old snapshot no longer fits.
    let added = p.key();
    p.write(
        "audit/db_migrations/0003_extra.py",
        &index_migration("audit", "0002_payload_gin_index", "audit_other_idx"),
    );
    assert_ne!(p.key(), added);
    let (v, err) = prepare(&p, &db, &[]);
    assert_eq!(v["source"], "cold", "{err}");
    assert!(err.contains("migration audit.0003_extra changed"), "{err}");
    Reference::of(&p).check(&db, "after editing a migration outside the globs");

    // And unchanged, the snapshot is served again.
    let (v, _) = prepare(&p, &db, &[]);
    assert_eq!(v["source"], "template");
}

#[test]
fn only_the_dependency_tables_of_pyproject_are_in_the_key() {
    let p = Project::example("pyproject");
    let base = "[project]\nname = \"example\"\ndependencies = [\"django>=4.2\"]\n";
    p.write("pyproject.toml", base);
    let key = p.key();
    // Enabling the pytest plugin, configuring a linter: the same key.
    p.write(
        "pyproject.toml",
        &format!(
            "{base}\n[tool.pytest.ini_options]\nmigsnap = true\n\n[tool.ruff]\nline-length = 100\n"
        ),
    );
    assert_eq!(p.key(), key, "tables that cannot change what migrate does");
    // A dependency, a dependency group: another key.
    p.write(
        "pyproject.toml",
        &base.replace("\"django>=4.2\"", "\"django>=4.2\", \"django-extensions\""),
    );
    let dep = p.key();
    assert_ne!(dep, key, "a new dependency");
    p.write(
        "pyproject.toml",
        &format!("{base}\n[dependency-groups]\ntest = [\"pytest-django\"]\n"),
    );
    assert!(![key, dep].contains(&p.key()), "a dependency group");
}

#[test]
fn an_app_enabled_or_removed_in_settings_is_never_served_from_an_old_snapshot() {
    let p = Project::example("apps");
    let db = p.db("a");
    let original = std::fs::read_to_string(p.path().join(SETTINGS)).expect("read");
    prepare(&p, &db, &[]);

    append(
        &p,
        SETTINGS,
        "\nINSTALLED_APPS += [\"django.contrib.sites\"]\n",
    );
    let (v, _) = prepare(&p, &db, &[]);
    assert_eq!(v["source"], "incremental");
    assert_eq!(
        psql(&db, "SELECT domain FROM django_site"),
        "example.com",
        "the sites app's table and its post_migrate row are there"
    );
    Reference::of(&p).check(&db, "after enabling an app");

    // Removed again: building on the snapshot that has it would keep its table.
    std::fs::write(p.path().join(SETTINGS), original).expect("write");
    let (v, err) = prepare(&p, &db, &[]);
    assert_eq!(v["source"], "cold", "{err}");
    assert!(
        err.contains("app `django.contrib.sites` is no longer installed"),
        "{err}"
    );
    Reference::of(&p).check(&db, "after removing an app");
}

#[test]
fn another_settings_module_is_another_snapshot() {
    let p = Project::example("settings_module");
    p.write(
        "exampleproj/settings_sites.py",
        "from .settings import *  # noqa\n\nINSTALLED_APPS = INSTALLED_APPS + [\"django.contrib.sites\"]\n",
    );
    let (a, b) = (p.db("a"), p.db("b"));
    let (plain, _) = prepare(&p, &a, &[]);
    let (sites, _) = prepare(&p, &b, &["--settings", "exampleproj.settings_sites"]);
    assert_ne!(plain["key"], sites["key"]);
    assert!(psql(&b, "SELECT count(*) FROM django_site") == "1");
    assert!(!psql(&a, "SELECT to_regclass('django_site') IS NULL").contains('f'));
    // Switching back and forth serves each from its own template.
    let (again, _) = prepare(&p, &a, &[]);
    assert_eq!(again["source"], "template");
    let (again, _) = prepare(&p, &b, &["--settings", "exampleproj.settings_sites"]);
    assert_eq!(again["source"], "template");
    // Naming the module manage.py sets by default is the same snapshot as
    // naming none: what pytest-django does (it exports the module from
    // pytest.ini) after a `migsnap prepare` from the shell.
    let (named, _) = prepare(&p, &a, &["--settings", "exampleproj.settings"]);
    assert_eq!(
        (&named["key"], &named["source"]),
        (&plain["key"], &"template".into())
    );
    let out = p
        .cmd(&["prepare", "--database", &a, "--json"])
        .env("DJANGO_SETTINGS_MODULE", "exampleproj.settings")
        .output()
        .expect("run migsnap");
    assert!(out.status.success(), "{}", stderr(&out));
    let from_env: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (&from_env["key"], &from_env["source"]),
        (&plain["key"], &"template".into())
    );
}

#[test]
fn two_projects_with_the_same_files_on_one_server_keep_their_own_schema() {
    let a = Project::example("twins");
    let b = Project::copy_of(a.path(), "twins_b");
    // Same salt, so the same key: only the settings differ.
    std::fs::copy(a.path().join("migsnap.toml"), b.path().join("migsnap.toml")).expect("copy");
    append(
        &b,
        SETTINGS,
        "\nINSTALLED_APPS += [\"django.contrib.sites\"]\n",
    );
    assert_eq!(a.key(), b.key());
    let (da, db) = (a.db("a"), b.db("b"));
    prepare(&a, &da, &[]);
    prepare(&b, &db, &[]);
    let (v, _) = prepare(&a, &da, &[]);
    assert_ne!(v["source"], "template", "b's template is not a's");
    Reference::of(&a).check(&da, "project a after b");
    Reference::of(&b).check(&db, "project b");
}

#[test]
fn an_app_outside_the_project_is_checked_file_by_file() {
    let p = Project::example("external");
    let ext = tempfile::tempdir().expect("tempdir");
    let app = ext.path().join("extapp");
    std::fs::create_dir_all(app.join("migrations")).expect("mkdir");
    std::fs::write(app.join("__init__.py"), "").expect("write");
    std::fs::write(app.join("migrations/__init__.py"), "").expect("write");
    let initial = |field: &str| {
        format!(
            "from django.db import migrations, models\n\n\nclass Migration(migrations.Migration):\n    \
             initial = True\n    dependencies = []\n    operations = [\n        \
             migrations.CreateModel(\"Thing\", [(\"id\", models.AutoField(primary_key=True)), (\"{field}\", models.TextField())]),\n    ]\n"
        )
    };
    std::fs::write(app.join("migrations/0001_initial.py"), initial("name")).expect("write");
    append(
        &p,
        SETTINGS,
        &format!(
            "\nimport sys\nsys.path.insert(0, {:?})\nINSTALLED_APPS += [\"extapp\"]\n",
            ext.path().display().to_string()
        ),
    );
    let db = p.db("a");
    prepare(&p, &db, &[]);
    let key = p.key();

    // An "upgrade" of the package edits its migration in place.
    std::fs::write(app.join("migrations/0001_initial.py"), initial("title")).expect("write");
    assert_eq!(p.key(), key);
    let (v, err) = prepare(&p, &db, &[]);
    assert_eq!(v["source"], "cold", "{err}");
    Reference::of(&p).check(&db, "after an external migration changed");
    assert_eq!(
        psql(&db, "SELECT column_name FROM information_schema.columns WHERE table_name = 'extapp_thing' ORDER BY 1"),
        "id\ntitle"
    );

    // A new one there is applied on top.
    std::fs::write(
        app.join("migrations/0002_more.py"),
        "from django.db import migrations, models\n\n\nclass Migration(migrations.Migration):\n    \
         dependencies = [(\"extapp\", \"0001_initial\")]\n    operations = [migrations.AddField(\"thing\", \"more\", models.IntegerField(default=0))]\n",
    )
    .expect("write");
    let (v, _) = prepare(&p, &db, &[]);
    assert_eq!(v["source"], "incremental");
    Reference::of(&p).check(&db, "after an external migration was added");
}

#[test]
fn linked_migration_files_are_hashed_and_link_loops_do_not_hang() {
    let p = Project::example("links");
    let outside = tempfile::tempdir().expect("tempdir");
    let rel = "catalog/migrations/0004_product_is_active.py";
    let target = outside.path().join("0004.py");
    std::fs::rename(p.path().join(rel), &target).expect("move");
    std::os::unix::fs::symlink(&target, p.path().join(rel)).expect("link");
    let key = p.key();

    let text = std::fs::read_to_string(&target).expect("read");
    std::fs::write(&target, format!("{text}\n# edited\n")).expect("write");
    let edited = p.key();
    assert_ne!(edited, key, "the link's target is hashed");

    // A link back to an ancestor is a loop: detected, skipped, same key.
    std::os::unix::fs::symlink("..", p.path().join("catalog/loop")).expect("link");
    assert_eq!(p.key(), edited);
    let out = p.run(&["key", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["migrations"], 10, "{v}");
}

#[test]
fn an_unreadable_directory_is_an_error_not_a_smaller_key() {
    let p = Project::example("unreadable");
    std::fs::create_dir(p.path().join("catalog/locked")).expect("mkdir");
    p.write("catalog/locked/migrations/0001_x.py", "");
    let locked = p.path().join("catalog/locked");
    let out = key_with_locked(&p, &locked, 0o000);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot read") && err.contains("catalog/locked"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
}

/// An ignore file nobody may read would leave its rules out without a
/// word (`ignore` walks on as if it were empty): the key would depend on
/// who runs it. An error instead, naming the file.
#[test]
fn an_unreadable_gitignore_is_an_error_not_another_key() {
    let p = Project::example("unreadable_ignore");
    p.write(".gitignore", "orders/\n");
    let out = key_with_locked(&p, &p.path().join(".gitignore"), 0o600);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot read") && err.contains(".gitignore"),
        "{err}"
    );
}

/// `key` run while `locked` has `mode`, as an unprivileged user when this
/// runs as root (who reads everything), who can read the rest of the
/// project; `locked` is opened again afterwards.
fn key_with_locked(p: &Project, locked: &Path, mode: u32) -> std::process::Output {
    let open = |path: &Path, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    let was = std::fs::metadata(locked).expect("stat").permissions();
    open(locked, mode);
    let mut cmd = p.cmd(&["key"]);
    if nix_is_root() {
        // Root reads everything: run as an unprivileged user instead, who
        // can read the project but not the locked directory.
        for dir in [p.path().parent().expect("parent"), p.path()] {
            open(dir, 0o755);
        }
        let mut runuser = std::process::Command::new("runuser");
        runuser
            .args(["-u", "nobody", "--"])
            .arg(bin())
            .args(["key"])
            .current_dir(p.path())
            .env("MIGSNAP_CACHE_DIR", "/tmp");
        cmd = runuser;
    }
    let out = cmd.output().expect("run");
    std::fs::set_permissions(locked, was).expect("chmod back");
    out
}

fn nix_is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[test]
fn files_that_change_while_migrate_runs_are_not_saved() {
    let p = Project::example("racing");
    // A migration that edits another migration file while Django runs, as a
    // `git checkout` during the build would; once only (a marker file).
    let marker = p.path().join("touch-once");
    std::fs::write(&marker, "").expect("write");
    p.write(
        "catalog/migrations/0005_touch.py",
        &format!(
            "import os\nfrom django.db import migrations\n\nMARKER = {m:?}\nVICTIM = {v:?}\n\n\n\
             def touch(apps, schema_editor):\n    if os.path.exists(MARKER):\n        os.remove(MARKER)\n        \
             with open(VICTIM, \"a\") as f:\n            f.write(\"# changed during the build\\n\")\n\n\n\
             class Migration(migrations.Migration):\n    dependencies = [(\"catalog\", \"0004_product_is_active\")]\n    \
             operations = [migrations.RunPython(touch, migrations.RunPython.noop)]\n",
            m = marker.display().to_string(),
            v = p
                .path()
                .join("orders/migrations/0004_lower_status_index.py")
                .display()
                .to_string()
        ),
    );
    let db = p.db("a");
    let out = p.run(&["prepare", "--database", &db, "--json"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("orders/migrations/0004_lower_status_index.py` changed while migrate ran"),
        "{err}"
    );
    assert!(err.contains("nothing was saved"), "{err}");
    let saved: Vec<_> = std::fs::read_dir(p.cache.path())
        .expect("cache dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .collect();
    assert!(saved.is_empty(), "no manifest was written: {saved:?}");
    assert!(!database_exists(&db));

    // Settled, the next run builds and saves.
    let (v, _) = prepare(&p, &db, &[]);
    assert_eq!(v["source"], "cold");
    Reference::of(&p).check(&db, "after the files settled");
}

#[test]
fn the_key_follows_every_common_way_to_declare_dependencies() {
    let p = Project::example("dependency_files");
    let mut last = p.key();
    for (rel, text) in [
        (
            "pyproject.toml",
            "[project]\nname = \"x\"\ndependencies = [\"django-foo==1\"]\n",
        ),
        ("setup.cfg", "[options]\ninstall_requires = django-foo==1\n"),
        ("requirements.txt", "django-foo==1\n"),
        ("requirements-dev.in", "django-foo\n"),
        ("requirements/base.txt", "django-foo==1\n"),
        ("requirements/prod/extra.in", "django-foo\n"),
        ("poetry.lock", "x"),
        ("uv.lock", "x"),
        ("Pipfile.lock", "{}"),
        ("pdm.lock", "x"),
    ] {
        p.write(rel, text);
        let now = p.key();
        assert_ne!(now, last, "`{rel}` is a key input");
        last = now;
    }
}

#[test]
fn settings_read_before_migsnap_looks_and_from_outside_the_project_are_recorded() {
    let p = Project::example("settings_reach");
    // manage.py touches the settings before handing over to Django, and the
    // settings take their app list from a module outside the project.
    let shared = tempfile::tempdir().expect("tempdir");
    std::fs::write(shared.path().join("common_apps.py"), "EXTRA_APPS = []\n").expect("write");
    let manage = std::fs::read_to_string(p.path().join("manage.py")).expect("read");
    let touched = manage.replacen(
        "    execute_from_command_line(sys.argv)",
        "    from django.conf import settings\n    settings.DEBUG\n    execute_from_command_line(sys.argv)",
        1,
    );
    assert_ne!(manage, touched, "fixture changed: manage.py");
    std::fs::write(p.path().join("manage.py"), touched).expect("write");
    append(
        &p,
        SETTINGS,
        &format!(
            "\nimport sys\nsys.path.insert(0, {:?})\nfrom common_apps import EXTRA_APPS\nINSTALLED_APPS += EXTRA_APPS\n",
            shared.path().display().to_string()
        ),
    );
    let db = p.db("a");
    prepare(&p, &db, &[]);
    std::fs::write(
        shared.path().join("common_apps.py"),
        "EXTRA_APPS = [\"django.contrib.sites\"]\n",
    )
    .expect("write");
    let (v, _) = prepare(&p, &db, &[]);
    assert_eq!(v["source"], "incremental");
    assert_eq!(psql(&db, "SELECT count(*) FROM django_site"), "1");
    Reference::of(&p).check(&db, "after the shared settings module changed");
}

#[test]
fn project_code_that_migrations_import_is_recorded() {
    let p = Project::example("migration_imports");
    let field = |n: u32| {
        format!(
            "from django.db import models\n\n\nclass Code(models.CharField):\n    \
             def __init__(self, *args, **kwargs):\n        kwargs[\"max_length\"] = {n}\n        \
             super().__init__(*args, **kwargs)\n\n    def deconstruct(self):\n        \
             name, path, args, kwargs = super().deconstruct()\n        kwargs.pop(\"max_length\", None)\n        \
             return name, path, args, kwargs\n"
        )
    };
    p.write("catalog/fields.py", &field(10));
    p.write("catalog/seed.py", "NAMES = [\"alpha\"]\n");
    p.write(
        "catalog/migrations/0005_code.py",
        "from django.db import migrations\n\nimport catalog.fields\nfrom catalog import seed\n\n\n\
         def fill(apps, schema_editor):\n    Category = apps.get_model(\"catalog\", \"Category\")\n    \
         for name in seed.NAMES:\n        Category.objects.create(name=name, slug=name)\n\n\n\
         class Migration(migrations.Migration):\n    dependencies = [(\"catalog\", \"0004_product_is_active\")]\n    \
         operations = [\n        migrations.AddField(\"product\", \"code\", catalog.fields.Code(default=\"\")),\n        \
         migrations.RunPython(fill, migrations.RunPython.noop),\n    ]\n",
    );
    let db = p.db("a");
    prepare(&p, &db, &[]);
    Reference::of(&p).check(&db, "with the custom field");

    // The field class and the helper change; no migration file does.
    p.write("catalog/fields.py", &field(40));
    p.write("catalog/seed.py", "NAMES = [\"alpha\", \"beta\"]\n");
    let (v, err) = prepare(&p, &db, &[]);
    assert_eq!(v["source"], "cold", "{err}");
    assert!(
        err.contains("which its migrations import, changed"),
        "{err}"
    );
    Reference::of(&p).check(&db, "after the field class and the helper changed");
    assert_eq!(
        psql(&db, "SELECT character_maximum_length FROM information_schema.columns WHERE table_name = 'catalog_product' AND column_name = 'code'"),
        "40"
    );
}

#[test]
fn options_that_point_django_elsewhere_cannot_divert_the_build() {
    let p = Project::example("options_elsewhere");
    let reference = Reference::of(&p);
    let other = p.db("other");
    psql("postgres", &format!("CREATE DATABASE \"{other}\""));
    append(
        &p,
        SETTINGS,
        &format!("\nDATABASES[\"default\"][\"OPTIONS\"] = {{\"dbname\": {other:?}}}\n"),
    );
    let db = p.db("a");
    let (v, _) = prepare(&p, &db, &[]);
    assert_eq!(v["source"], "cold");
    reference.check(&db, "with OPTIONS naming another database");
    assert_eq!(
        psql(&other, "SELECT to_regclass('django_migrations') IS NULL"),
        "t",
        "nothing migrated the other database"
    );
}

#[test]
fn a_migrations_package_init_and_sourceless_migrations_are_in_the_key() {
    let p = Project::example("package_parts");
    let base = p.key();
    // A sourceless migration module: Django loads it.
    p.write(
        "catalog/migrations/0009_compiled.pyc",
        "not really bytecode",
    );
    let with_pyc = p.key();
    assert_ne!(with_pyc, base, "a .pyc migration is in the key");
    std::fs::remove_file(p.path().join("catalog/migrations/0009_compiled.pyc")).expect("rm");
    assert_eq!(p.key(), base);
    // Without __init__.py the package is a namespace package and Django
    // treats the app as unmigrated.
    std::fs::remove_file(p.path().join("audit/migrations/__init__.py")).expect("rm");
    assert_ne!(p.key(), base, "the package's __init__.py is in the key");
}

#[test]
fn a_link_to_nothing_is_none_of_the_keys_business_unless_a_glob_matches_it() {
    let p = Project::example("dangling");
    let key = p.key();
    let run_key = |p: &Project| {
        let out = p.run(&["key"]);
        let err = stderr(&out);
        assert!(
            out.status.success(),
            "a link to nothing stops no key:\n{err}"
        );
        (String::from_utf8_lossy(&out.stdout).trim().to_string(), err)
    };

    // As in a real checkout's templates dir (#22): silent, same key.
    std::fs::create_dir_all(p.path().join("catalog/templates")).expect("mkdir");
    std::os::unix::fs::symlink(
        "no/such/base.html",
        p.path().join("catalog/templates/base.html"),
    )
    .expect("link");
    let (k, err) = run_key(&p);
    assert_eq!(k, key);
    assert!(!err.contains("base.html"), "not the key's business: {err}");

    // Where a migration would be: named in a warning, left out of the key.
    std::os::unix::fs::symlink(
        "0099_moved.py",
        p.path().join("catalog/migrations/0005_moved.py"),
    )
    .expect("link");
    let (k, err) = run_key(&p);
    assert_eq!(k, key, "left out of the key");
    assert!(
        err.lines()
            .any(|l| l.contains("warning: ") && l.contains("catalog/migrations/0005_moved.py")),
        "{err}"
    );
}

/// The audit app's two migrations as one: a squash, or the first migration
/// of an app renamed with `replaces` (`app`, `replaces`, the table name).
fn audit_initial(replaces: &str, db_table: &str) -> String {
    format!(
        r#"import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    replaces = {replaces}
    dependencies = [("orders", "0004_lower_status_index")]
    operations = [
        migrations.CreateModel(
            name="AuditEvent",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("action", models.CharField(max_length=64)),
                ("payload", models.JSONField(blank=True, default=dict)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "order",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="audit_events",
                        to="orders.order",
                    ),
                ),
            ],
            options={{"db_table": "{db_table}"}},
        ),
        migrations.RunSQL(
            "CREATE INDEX audit_auditevent_payload_gin ON audit_auditevent USING gin (payload)",
            "DROP INDEX audit_auditevent_payload_gin",
        ),
    ]
"#
    )
}

/// A squash whose replaced files are deleted (issue #22): Django records
/// both the replaced names and the squash, and loads only the squash. The
/// snapshot that applied the replaced files is still the ancestor.
#[test]
fn a_squash_whose_replaced_files_are_deleted_is_built_on() {
    let p = Project::example("squash");
    let db = p.db("a");
    let (first, _) = prepare(&p, &db, &[]);
    assert_eq!(first["source"], "cold");
    let first_key = p.key();

    for gone in ["0001_initial", "0002_payload_gin_index"] {
        std::fs::remove_file(p.path().join(format!("audit/migrations/{gone}.py"))).expect("rm");
    }
    let squash = "0001_squashed_0002_payload_gin_index";
    p.write(
        &format!("audit/migrations/{squash}.py"),
        &audit_initial(
            r#"[("audit", "0001_initial"), ("audit", "0002_payload_gin_index")]"#,
            "audit_auditevent",
        ),
    );
    p.write(
        "audit/migrations/0003_extra.py",
        &index_migration("audit", squash, "audit_extra_idx"),
    );
    let (v, err) = prepare(&p, &db, &[]);
    assert_eq!(v["source"], "incremental", "{err}");
    assert_eq!(v["base_key"], first_key.as_str(), "{err}");
    assert_eq!(v["applied"], serde_json::json!(["audit.0003_extra"]));
    assert!(!err.contains("no longer exists"), "{err}");
    assert!(!err.contains("cannot build on"), "{err}");
    assert!(
        django_migrations(&db).contains(&format!("audit.{squash}")),
        "Django recorded the squash as applied"
    );
    Reference::of(&p).check(&db, "after squashing and deleting the replaced files");
}

/// An app renamed with `replaces` (issue #22): every `journal` migration
/// replaces the `audit` one of the same name, and `audit` is no longer
/// installed. Its rows are covered, so the old snapshot is built on.
#[test]
fn an_app_renamed_with_replaces_is_built_on() {
    let p = Project::example("rename");
    let db = p.db("a");
    prepare(&p, &db, &[]);
    let first_key = p.key();

    std::fs::remove_dir_all(p.path().join("audit")).expect("rm");
    let settings = std::fs::read_to_string(p.path().join(SETTINGS)).expect("read");
    let renamed = settings.replacen("    \"audit\",\n", "    \"journal\",\n", 1);
    assert_ne!(settings, renamed, "fixture changed: INSTALLED_APPS");
    std::fs::write(p.path().join(SETTINGS), renamed).expect("write");
    p.write("journal/__init__.py", "");
    p.write(
        "journal/models.py",
        "from django.db import models\n\n\nclass AuditEvent(models.Model):\n    \
         order = models.ForeignKey(\"orders.Order\", on_delete=models.CASCADE, related_name=\"audit_events\")\n    \
         action = models.CharField(max_length=64)\n    \
         payload = models.JSONField(default=dict, blank=True)\n    \
         created_at = models.DateTimeField(auto_now_add=True)\n\n    \
         class Meta:\n        db_table = \"audit_auditevent\"\n",
    );
    p.write("journal/migrations/__init__.py", "");
    // One migration for the old app's first, one that only stands for its
    // second (the GIN index is already in the first): names as before.
    p.write(
        "journal/migrations/0001_initial.py",
        &audit_initial(r#"[("audit", "0001_initial")]"#, "audit_auditevent").replace(
            "        migrations.RunSQL(\n            \"CREATE INDEX audit_auditevent_payload_gin ON audit_auditevent USING gin (payload)\",\n            \"DROP INDEX audit_auditevent_payload_gin\",\n        ),\n",
            "",
        ),
    );
    p.write(
        "journal/migrations/0002_payload_gin_index.py",
        "from django.db import migrations\n\n\nclass Migration(migrations.Migration):\n    \
         replaces = [(\"audit\", \"0002_payload_gin_index\")]\n    \
         dependencies = [(\"journal\", \"0001_initial\")]\n    operations = [\n        \
         migrations.RunSQL(\n            \
         \"CREATE INDEX audit_auditevent_payload_gin ON audit_auditevent USING gin (payload)\",\n            \
         \"DROP INDEX audit_auditevent_payload_gin\",\n        ),\n    ]\n",
    );
    p.write(
        "journal/migrations/0003_extra.py",
        &index_migration("journal", "0002_payload_gin_index", "audit_extra_idx"),
    );
    let (v, err) = prepare(&p, &db, &[]);
    assert_eq!(v["source"], "incremental", "{err}");
    assert_eq!(v["base_key"], first_key.as_str(), "{err}");
    assert_eq!(v["applied"], serde_json::json!(["journal.0003_extra"]));
    assert!(!err.contains("no longer"), "{err}");
    assert!(!err.contains("cannot build on"), "{err}");

    // What a plain migrate builds, but for the old app's content type (and
    // its permissions), which Django leaves in any database that had the
    // app, this snapshot's base among them (`remove_stale_contenttypes`).
    let reference = p.db("ref");
    p.plain_migrate(&reference);
    assert_eq!(schema(&db), schema(&reference), "schema");
    assert_eq!(django_migrations(&db), django_migrations(&reference));
    let types = "SELECT app_label || '.' || model FROM django_content_type \
                 WHERE app_label <> 'audit' ORDER BY 1";
    assert_eq!(psql(&db, types), psql(&reference, types));
}

/// A migration file deleted without a replacement (a branch switch): the
/// snapshot that applied it is no ancestor, so the one before it is built
/// on, silently, as before squashes could stand in for deleted files.
#[test]
fn a_deleted_migration_nothing_replaces_rules_its_snapshot_out() {
    let p = Project::example("deleted");
    let db = p.db("a");
    prepare(&p, &db, &[]);
    let first_key = p.key();
    p.write("catalog/migrations/0005_product_note.py", NEW_MIGRATION);
    let (v, _) = prepare(&p, &db, &[]);
    assert_eq!(v["source"], "incremental");

    std::fs::remove_file(p.path().join("catalog/migrations/0005_product_note.py")).expect("rm");
    p.write(
        "audit/migrations/0003_extra.py",
        &index_migration("audit", "0002_payload_gin_index", "audit_extra_idx"),
    );
    let (v, err) = prepare(&p, &db, &[]);
    assert_eq!(v["source"], "incremental", "{err}");
    assert_eq!(v["base_key"], first_key.as_str(), "{err}");
    assert!(!err.contains("cannot build on"), "{err}");
    Reference::of(&p).check(&db, "after deleting an applied migration");
}
