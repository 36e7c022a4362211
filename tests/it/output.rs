//! What people read, pinned: `check`'s and `diff`'s text and GitHub formats, `trace`, `ls`, `gc`,
//! and the error report, from the real binary against the example project.
//! Keys, sizes, ages, timings and temp paths are filtered; everything else
//! must match the committed snapshot (tests/it/snapshots/), so a change of
//! wording shows up in review. `INSTA_UPDATE=always` rewrites them.

use crate::common::*;

/// Filters for what differs between runs: temp dirs, keys and their short
/// forms, sizes, ages and durations.
fn settings(p: &Project) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.add_filter(&regex_escape(&p.path().display().to_string()), "[PROJECT]");
    s.add_filter(
        &regex_escape(&p.cache.path().display().to_string()),
        "[CACHE]",
    );
    s.add_filter(r"\b[0-9a-f]{64}\b", "[KEY]");
    s.add_filter(r"migsnap_([a-z]+_)?[0-9a-f]{16}", "migsnap_$1[SHORT]");
    s.add_filter(r"\b[0-9a-f]{16}\b", "[SHORT]");
    s.add_filter(r"\b\d+(\.\d+)? ?(B|KiB|MiB|GiB)\b", "[SIZE]");
    s.add_filter(r"\b\d+(\.\d+)?(ms|s|m|h|d)\b", "[TIME]");
    s.add_filter(&regex_escape(&p.name), "[NAME]");
    s
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '/' || c == '-' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn check_reports_in_text_and_for_github() {
    let p = Project::example("out_check");
    p.track(&template_name(&p.key()));
    let text = p.run(&["check"]);
    assert_eq!(text.status.code(), Some(1), "{}", stderr(&text));
    let github = p.run(&["check", "--format", "github"]);
    assert_eq!(github.status.code(), Some(1), "{}", stderr(&github));
    settings(&p).bind(|| {
        insta::assert_snapshot!("check_text", stdout(&text));
        insta::assert_snapshot!("check_github", stdout(&github));
    });
}

#[test]
fn diff_reports_in_text_and_for_github() {
    let p = Project::example("out_diff");
    let db = p.db("live");
    p.prepare(&db);
    psql(
        &db,
        "DROP INDEX catalog_product_name_trgm; \
         ALTER TABLE catalog_product ALTER COLUMN price TYPE numeric(12,2), \
           ALTER COLUMN brand DROP NOT NULL, ADD COLUMN note text DEFAULT ''; \
         ALTER INDEX catalog_product_cat_price_idx RENAME TO renamed_by_hand; \
         CREATE SEQUENCE by_hand_seq",
    );
    let url = db_url(&db);
    let text = p.run(&["diff", "--against", &url]);
    assert_eq!(text.status.code(), Some(1), "{}", stderr(&text));
    let github = p.run(&["diff", "--against", &url, "--format", "github"]);
    assert_eq!(github.status.code(), Some(1), "{}", stderr(&github));
    settings(&p).bind(|| {
        insta::assert_snapshot!("diff_text", stdout(&text));
        insta::assert_snapshot!("diff_github", stdout(&github));
    });
}

#[test]
fn ls_and_gc_render_what_there_is() {
    let p = Project::example("out_ls_gc");
    let db = p.db("t");
    p.prepare(&db);
    let ls = p.run(&["ls"]);
    assert!(ls.status.success(), "{}", stderr(&ls));
    let gc = p.run(&["gc", "--keep", "0", "--dry-run"]);
    assert!(gc.status.success(), "{}", stderr(&gc));
    // The shared test server holds other tests' templates: keep the lines
    // about this project's own snapshot, and the totals.
    let short = short(&p.key());
    let own = |s: String| {
        s.lines()
            .filter(|l| l.contains(&short) || !l.contains("migsnap_"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    settings(&p).bind(|| {
        insta::assert_snapshot!("ls", own(stdout(&ls)));
        insta::assert_snapshot!("gc_dry_run", own(stdout(&gc)));
    });
}

#[test]
fn errors_say_what_and_how_to_fix_it() {
    let p = Project::example("out_errors");
    std::fs::remove_file(p.path().join("manage.py")).expect("rm");
    let no_manage = p.run(&["prepare", "--database", "test_x"]);
    assert_eq!(no_manage.status.code(), Some(2));
    std::fs::write(p.path().join("migsnap.toml"), "cache_dir = \"x\"\n").expect("write");
    let bad_config = p.run(&["key"]);
    assert_eq!(bad_config.status.code(), Some(2));
    settings(&p).bind(|| {
        insta::assert_snapshot!("error_no_manage_py", stderr(&no_manage));
        insta::assert_snapshot!("error_unknown_config_key", stderr(&bad_config));
    });
}

#[test]
fn the_shared_store_renders_what_it_holds() {
    let p = Project::example("out_remote");
    let url = s3_url("out");
    let with_store = |args: &[&str], push: bool, env: &[(String, String)]| {
        let mut c = p.cmd(args);
        c.env("MIGSNAP_REMOTE", &url)
            .env("MIGSNAP_REMOTE_PUSH", if push { "true" } else { "false" });
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("run")
    };
    let db = p.db("t");
    p.track(&template_name(&p.key()));
    let built = with_store(&["prepare", "--database", &db], true, &s3_env());
    assert!(built.status.success(), "{}", stderr(&built));
    let ls = with_store(&["ls", "--remote"], false, &s3_env());
    let push = with_store(&["push"], false, &s3_env());
    let pull = with_store(&["pull"], false, &s3_env());
    let gc = with_store(
        &["gc", "--remote", "--keep", "0", "--dry-run"],
        false,
        &s3_env(),
    );
    for o in [&ls, &push, &pull, &gc] {
        assert!(o.status.success(), "{}", stderr(o));
    }
    // The store down: the one warning and its hint.
    // (Another machine: an empty cache dir, no template.)
    let mut down = s3_env_down();
    let empty = tempfile::tempdir().expect("tempdir");
    down.push((
        "MIGSNAP_CACHE_DIR".into(),
        empty.path().display().to_string(),
    ));
    drop_template(&p.key());
    let warned = with_store(&["prepare", "--database", &db], false, &down);
    assert!(warned.status.success(), "{}", stderr(&warned));
    let warning = stderr(&warned)
        .lines()
        .filter(|l| l.contains("warning") || l.contains("hint"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut settings = settings(&p);
    settings.add_filter(&regex_escape(&url), "[STORE]");
    settings.bind(|| {
        insta::assert_snapshot!("ls_remote", stdout(&ls));
        insta::assert_snapshot!("push_already_there", stdout(&push));
        insta::assert_snapshot!("pull_already_cached", stdout(&pull));
        insta::assert_snapshot!("gc_remote_dry_run", stdout(&gc));
        insta::assert_snapshot!("prepare_store_down", warning);
    });
}

/// `--progress json`: what programs read (the pytest plugin, Django's
/// runner). Every line of stderr is an event; a cold build says each
/// migration as it starts, in order, out of the plan's total; the text
/// each event carries is what a person would read.
#[test]
fn progress_json_is_one_event_a_line() {
    let p = Project::example("out_progress");
    let db = p.db("a");
    let out = p.run(&["prepare", "--json", "--progress", "json", "--database", &db]);
    assert!(out.status.success(), "{}", stderr(&out));
    let events: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let kind = |e: &serde_json::Value| e["event"].as_str().unwrap_or("").to_string();
    let applying: Vec<&serde_json::Value> =
        events.iter().filter(|e| kind(e) == "applying").collect();
    assert!(
        applying.len() > 3,
        "a cold build applies migrations: {events:?}"
    );
    for (i, e) in applying.iter().enumerate() {
        assert_eq!(e["index"].as_u64(), Some(i as u64 + 1), "{e}");
        assert_eq!(e["total"].as_u64(), Some(applying.len() as u64), "{e}");
        let migration = e["migration"].as_str().expect("migration");
        assert_eq!(
            e["text"].as_str(),
            Some(format!("[{}/{}] applying {migration}", i + 1, applying.len()).as_str())
        );
    }
    assert!(
        events.iter().any(|e| kind(e) == "status"),
        "status lines are events too: {events:?}"
    );

    // --quiet keeps warnings only: nothing here.
    let db2 = p.db("b");
    let quiet = p.run(&["prepare", "-q", "--progress", "json", "--database", &db2]);
    assert!(quiet.status.success(), "{}", stderr(&quiet));
    assert_eq!(stderr(&quiet), "", "quiet says nothing");

    // A mistake is still the error report, in text.
    let bad = p.run(&["prepare", "--progress", "json", "--database", ""]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).starts_with("error: "), "{}", stderr(&bad));
}

#[test]
fn trace_reports_the_strongest_lock_per_table() {
    let p = Project::example("out_trace");
    p.prepare(&p.db("a"));
    p.write(
        "catalog/migrations/0005_price_float.py",
        "from django.db import migrations, models\n\n\nclass Migration(migrations.Migration):\n    dependencies = [(\"catalog\", \"0004_product_is_active\")]\n    operations = [migrations.AlterField(\"product\", \"price\", models.FloatField())]\n",
    );
    p.write(
        "catalog/migrations/0006_tag.py",
        "from django.db import migrations, models\n\n\nclass Migration(migrations.Migration):\n    dependencies = [(\"catalog\", \"0005_price_float\")]\n    operations = [\n        migrations.CreateModel(\"Tag\", fields=[(\"id\", models.BigAutoField(primary_key=True)), (\"product\", models.ForeignKey(\"catalog.Product\", on_delete=models.CASCADE))]),\n    ]\n",
    );
    let text = p.run(&["trace"]);
    assert_eq!(text.status.code(), Some(0), "{}", stderr(&text));
    settings(&p).bind(|| insta::assert_snapshot!("trace_text", stdout(&text)));
}
