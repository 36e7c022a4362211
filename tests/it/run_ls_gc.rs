//! `migsnap run`, `ls` and `gc` against a real server and a real Django.

use crate::common::*;
use serde_json::Value;
use std::process::Output;

fn migration(app: &str, dep: &str, name: &str) -> String {
    format!(
        "from django.db import migrations, models\n\n\nclass Migration(migrations.Migration):\n    \
         dependencies = [(\"{app}\", \"{dep}\")]\n    operations = [\n        \
         migrations.AddField(\"product\", \"{name}\", models.TextField(default=\"\")),\n    ]\n"
    )
}

fn json(out: &Output) -> Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).expect("json on stdout")
}

/// Three snapshots of one project: cold, then two incremental ones.
fn three_snapshots(p: &Project, db: &str) -> Vec<String> {
    let mut keys = vec![];
    keys.push(p.prepare(db)["key"].as_str().expect("key").to_string());
    p.write(
        "catalog/migrations/0005_a.py",
        &migration("catalog", "0004_product_is_active", "a"),
    );
    keys.push(p.prepare(db)["key"].as_str().expect("key").to_string());
    p.write(
        "catalog/migrations/0006_b.py",
        &migration("catalog", "0005_a", "b"),
    );
    keys.push(p.prepare(db)["key"].as_str().expect("key").to_string());
    keys
}

fn template(key: &str) -> String {
    template_name(key)
}

#[test]
fn run_prepares_then_runs_the_command_with_the_connection() {
    let p = Project::example("run");
    let db = p.db("a");
    let python = python();
    let python = python.to_str().expect("utf-8 path");

    // Django itself, pointed at the database through PG* only: nothing
    // left to migrate.
    let out = p
        .cmd(&[
            "run",
            "--database",
            &db,
            "--",
            python,
            "manage.py",
            "migrate",
            "--check",
        ])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{db} ready from cold")),
        "{}",
        stderr(&out)
    );
    let key = p.key();
    p.track(&template(&key));

    // DATABASE_URL works on its own, and the exit code comes through.
    let script = "test \"$PGDATABASE\" = \"$1\" || exit 90; \
                  unset PGHOST PGPORT PGUSER PGDATABASE; \
                  psql -X -At \"$DATABASE_URL\" -c \"SELECT count(*) FROM pg_indexes WHERE indexname = 'catalog_product_name_trgm'\"; \
                  exit 7";
    let out = p
        .cmd(&[
            "run",
            "-q",
            "--database",
            &db,
            "--",
            "sh",
            "-c",
            script,
            "sh",
            &db,
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");

    // --rebuild and the prepare options are shared.
    let out = p
        .cmd(&["run", "--rebuild", "--database", &db, "--", "true"])
        .output()
        .expect("run");
    assert!(out.status.success());
    assert!(stderr(&out).contains("ready from cold"), "{}", stderr(&out));

    // A command that does not exist: a clear error, exit code 2.
    let out = p
        .cmd(&["run", "--database", &db, "--", "/nonexistent/cmd"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot run `/nonexistent/cmd`"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("hint:"));
}

#[test]
fn ls_lists_snapshots_and_templates_and_marks_the_current_key() {
    let p = Project::example("ls");
    let db = p.db("a");
    let keys = three_snapshots(&p, &db);
    for k in &keys {
        p.track(&template(k));
    }
    let v = json(&p.run(&["ls", "--json"]));
    assert_eq!(v["current_key"], keys[2].as_str());
    let snaps = v["snapshots"].as_array().expect("snapshots");
    let listed: Vec<&str> = snaps
        .iter()
        .map(|s| s["key"].as_str().expect("key"))
        .collect();
    // Newest first. Same-second builds may tie; compare as sets, then the
    // current one's details.
    let mut sorted = listed.clone();
    sorted.sort();
    let mut want: Vec<&str> = keys.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(sorted, want);
    for s in snaps {
        let k = s["key"].as_str().expect("key");
        assert_eq!(s["current"], k == keys[2]);
        assert_eq!(s["template"], true, "{s}");
        assert!(s["size"].as_u64().expect("size") > 0);
    }
    let current = snaps
        .iter()
        .find(|s| s["current"] == true)
        .expect("current");
    assert_eq!(current["source"], "incremental");
    assert_eq!(current["base_key"], keys[1].as_str());
    assert_eq!(current["migrations"], 12);

    // Templates are listed by the server, whatever this cache knows; ours
    // are recognised by their key.
    let templates = v["templates"].as_array().expect("templates");
    for (i, k) in keys.iter().enumerate() {
        let t = templates
            .iter()
            .find(|t| t["key"] == k.as_str())
            .unwrap_or_else(|| panic!("template for {k} listed: {templates:?}"));
        assert_eq!(t["name"], template(k).as_str());
        assert_eq!(t["cached"], true);
        assert_eq!(t["current"], i == 2);
    }

    let text = String::from_utf8_lossy(&p.run(&["ls"]).stdout).into_owned();
    assert!(text.contains(&format!("{}*", short(&keys[2]))), "{text}");
    assert!(text.contains(&template(&keys[0])), "{text}");

    // A database named like a template that migsnap did not make (no
    // comment of ours) is not migsnap's: not listed, not "unfinished".
    let foreign = migsnap::names::DbName::Template("0".repeat(16)).to_string();
    let foreign = foreign.as_str();
    if !database_exists(foreign) {
        p.track(foreign);
        psql("postgres", &format!("CREATE DATABASE \"{foreign}\""));
    }
    let v = json(&p.run(&["ls", "--json"]));
    let names: Vec<&str> = v["templates"]
        .as_array()
        .expect("templates")
        .iter()
        .map(|t| t["name"].as_str().expect("name"))
        .collect();
    assert!(!names.contains(&foreign), "{names:?}");
    let text = String::from_utf8_lossy(&p.run(&["ls"]).stdout).into_owned();
    assert!(
        !text.contains(foreign) && !text.contains("unfinished"),
        "{text}"
    );
}

#[test]
fn gc_removes_old_snapshots_and_leftovers_but_nothing_in_use() {
    // gc sweeps the whole server.
    let _alone = alone();
    let p = Project::example("gc");
    let db = p.db("a");
    let keys = three_snapshots(&p, &db);
    for k in &keys {
        p.track(&template(k));
    }
    let cache = p.cache.path();
    let files = |k: &str| {
        [format!("{k}.json"), format!("{k}.sql.zst")]
            .iter()
            .all(|f| cache.join(f).is_file())
    };

    // Leftovers of killed runs: an old temp file, a build database nobody
    // holds the lock for. And what a live run owns: a fresh temp file, and
    // a build database whose build lock is held.
    let stale = cache.join(format!(".tmp-{}.dead", keys[0]));
    let fresh = cache.join(format!(".tmp-{}.live", keys[1]));
    std::fs::write(&stale, "x").expect("write");
    std::fs::write(&fresh, "x").expect("write");
    let touched = std::process::Command::new("touch")
        .args(["-d", "1 hour ago"])
        .arg(&stale)
        .status()
        .expect("touch");
    assert!(touched.success());
    let dead_build = build_name(&keys[0]);
    let live_build = build_name(&keys[1]);
    for b in [&dead_build, &live_build] {
        p.track(b);
        psql("postgres", &format!("CREATE DATABASE \"{b}\""));
    }
    // A psql session holding the build lock, as a building prepare would.
    let mut holder = hold_lock(lock_id(&keys[1]));

    // 1. Dry run: reports, touches nothing.
    let v = json(&p.run(&["gc", "--keep", "0", "--dry-run", "--json"]));
    assert_eq!(v["dry_run"], true);
    let removed = |v: &Value, kind: &str| -> Vec<String> {
        v["removed"]
            .as_array()
            .expect("removed")
            .iter()
            .filter(|i| i["kind"] == kind)
            .map(|i| i["name"].as_str().expect("name").to_string())
            .collect()
    };
    let mut snaps = removed(&v, "snapshot");
    snaps.sort();
    let mut want = vec![keys[0].clone(), keys[1].clone()];
    want.sort();
    assert_eq!(snaps, want);
    assert!(keys
        .iter()
        .all(|k| files(k) && database_exists(&template(k))));
    assert!(stale.exists() && database_exists(&dead_build));

    // `check`'s catalogs of the oldest key go with its snapshot; those of
    // a key with no snapshot, a signature without its manifest (a crash
    // between the two), and a lock file nothing uses, go too.
    let gone = "e".repeat(64);
    let leftovers = [
        cache.join(format!("{}.check.json", keys[0])),
        cache.join(format!("{gone}.check.json")),
        cache.join(format!("{gone}.sig")),
        cache.join(format!("{gone}.lock")),
    ];
    for f in &leftovers[..3] {
        std::fs::write(f, "{}").expect("write");
    }
    std::fs::write(&leftovers[3], "").expect("write");

    // 2. For real, while a prepare holds the cache lock of the middle key.
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(cache.join(format!("{}.lock", keys[1])))
        .expect("lock file");
    lock.try_lock().expect("lock");
    let v = json(&p.run(&["gc", "--keep", "0", "--json"]));
    assert_eq!(removed(&v, "snapshot"), vec![keys[0].clone()]);
    assert_eq!(removed(&v, "template"), vec![template(&keys[0])]);
    assert_eq!(removed(&v, "build_database"), vec![dead_build.clone()]);
    assert_eq!(removed(&v, "temp_file"), vec![stale.display().to_string()]);
    assert_eq!(
        removed(&v, "orphan_signature"),
        vec![leftovers[2].display().to_string()]
    );
    let skipped: Vec<&str> = v["skipped"]
        .as_array()
        .expect("skipped")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    assert!(skipped.contains(&keys[1].as_str()), "{v}");
    assert!(skipped.contains(&live_build.as_str()), "{v}");
    assert!(!files(&keys[0]) && !database_exists(&template(&keys[0])));
    assert!(files(&keys[1]) && database_exists(&template(&keys[1])));
    assert!(files(&keys[2]) && database_exists(&template(&keys[2])));
    assert!(!stale.exists() && fresh.exists());
    assert!(!database_exists(&dead_build) && database_exists(&live_build));
    assert!(
        !cache.join(format!("{}.lock", keys[0])).exists(),
        "the removed snapshot's lock file goes with it"
    );
    assert!(
        cache.join(format!("{}.lock", keys[1])).exists(),
        "held: kept"
    );
    for f in &leftovers {
        assert!(!f.exists(), "{} left behind", f.display());
    }
    drop(lock);
    drop(holder.stdin.take());
    assert!(holder.wait().expect("psql").success());

    // 3. A size limit below the current snapshot: everything else goes, the
    // current key's snapshot stays.
    let v = json(&p.run(&["gc", "--max-size", "1K", "--json"]));
    assert_eq!(removed(&v, "snapshot"), vec![keys[1].clone()]);
    assert_eq!(v["kept"], serde_json::json!([keys[2]]));
    assert!(files(&keys[2]));
    assert_eq!(p.prepare(&db)["source"], "template");

    let out = p.run(&["gc", "--max-size", "lots"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// A psql session holding advisory lock `id`, as a live migsnap would;
/// killing it ends the session and releases the lock.
fn hold_lock(id: i64) -> std::process::Child {
    let mut holder = std::process::Command::new("psql")
        .args(["-X", "-q", "-d"])
        .arg(db_url("postgres"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("psql");
    {
        use std::io::Write;
        let stdin = holder.stdin.as_mut().expect("stdin");
        writeln!(stdin, "SELECT pg_advisory_lock({id});").expect("write");
        stdin.flush().expect("flush");
    }
    while psql("postgres", &format!("SELECT pg_try_advisory_lock({id})")) == "t" {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    holder
}

/// gc sweeps leftovers of every scratch shape migsnap creates (the clone
/// `prepare` renames into place, `check`'s two databases), not only builds,
/// and leaves alone the ones whose lock a live migsnap holds.
#[test]
fn gc_sweeps_every_scratch_shape_but_not_live_ones() {
    // gc sweeps the whole server.
    let _alone = alone();
    use migsnap::names::DbName;
    let p = Project::example("gcshapes");
    p.prepare(&p.db("a"));
    // Keys of their own, so no other test's lock or database is involved.
    let fake = |tag: &str| {
        parse_key(&migsnap::hash::hash_normalized(
            format!("{}{tag}", p.name).as_bytes(),
        ))
    };
    let dead = [
        DbName::clone_for(&format!("{}_gone", p.name)),
        DbName::check(&fake("check")),
        DbName::state(&fake("state")),
    ];
    let live = DbName::clone_for(&format!("{}_live", p.name));
    for name in dead.iter().chain([&live]) {
        let n = name.to_string();
        p.track(&n);
        psql("postgres", &format!("CREATE DATABASE \"{n}\""));
    }
    let mut holder = hold_lock(live.lock_id().0);

    let v = json(&p.run(&["gc", "--json"]));
    let names = |list: &str| -> Vec<String> {
        v[list]
            .as_array()
            .expect("list")
            .iter()
            .filter(|i| i["kind"] == "scratch_database")
            .map(|i| i["name"].as_str().expect("name").to_string())
            .collect()
    };
    let removed = names("removed");
    for name in &dead {
        let n = name.to_string();
        assert!(removed.contains(&n), "{n} swept: {v}");
        assert!(!database_exists(&n), "{n} is gone");
    }
    assert!(names("skipped").contains(&live.to_string()), "{v}");
    assert!(database_exists(&live.to_string()), "a live clone stays");
    let _ = holder.kill();
    let _ = holder.wait();
}

/// A restore killed mid-way leaves its login role (`migsnap_restore_<hex>`);
/// gc drops it once no live migsnap holds that key's lock.
#[test]
fn gc_drops_restore_roles_a_killed_restore_left() {
    // gc sweeps the whole server.
    let _alone = alone();
    let p = Project::example("gcroles");
    p.prepare(&p.db("a"));
    // Keys of their own, so no other test's lock or role is involved.
    let fake = |tag: &str| migsnap::hash::hash_normalized(format!("{}{tag}", p.name).as_bytes());
    let (dead, live) = (
        restore_role_name(&fake("dead")),
        restore_role_name(&fake("live")),
    );
    for role in [&dead, &live] {
        psql("postgres", &format!("CREATE ROLE \"{role}\" LOGIN"));
    }
    let mut holder = hold_lock(lock_id(&fake("live")));
    let v = json(&p.run(&["gc", "--json"]));
    let role_exists = |r: &str| {
        psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{r}'"),
        ) == "1"
    };
    assert!(!role_exists(&dead), "the leftover role is dropped: {v}");
    assert!(
        role_exists(&live),
        "a role whose restore is live stays: {v}"
    );
    let _ = holder.kill();
    let _ = holder.wait();
    psql("postgres", &format!("DROP ROLE \"{live}\""));
}

#[test]
fn ls_and_gc_act_on_the_current_project_in_a_shared_cache_dir() {
    // gc sweeps the whole server.
    let _alone = alone();
    let a = Project::example("proj_a");
    let b = Project::example("proj_b");
    // Both use a's cache dir, as two projects on one machine share the
    // default one, and the user's one signing key.
    let shared = |p: &Project, args: &[&str]| {
        let out = p
            .cmd(args)
            .env("MIGSNAP_CACHE_DIR", a.cache.path())
            .env("XDG_DATA_HOME", a.data_home.path())
            .output()
            .expect("run migsnap");
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        out
    };
    let mut keys = Vec::new();
    for p in [&a, &b] {
        let db = p.db("x");
        let v = json(&shared(p, &["prepare", "--database", &db, "--json"]));
        p.track(&template_of(&v));
        keys.push(v["key"].as_str().expect("key").to_string());
    }
    let listed = |v: &Value| -> Vec<(String, String)> {
        v["snapshots"]
            .as_array()
            .expect("snapshots")
            .iter()
            .map(|s| {
                (
                    s["key"].as_str().expect("key").to_string(),
                    s["project_dir"].as_str().expect("project").to_string(),
                )
            })
            .collect()
    };
    let dir = |p: &Project| {
        p.path()
            .canonicalize()
            .expect("canonical")
            .display()
            .to_string()
    };

    let v = json(&shared(&a, &["ls", "--json"]));
    assert_eq!(listed(&v), vec![(keys[0].clone(), dir(&a))]);
    assert_eq!(v["other_projects"], 1);
    assert!(
        v["templates"]
            .as_array()
            .expect("templates")
            .iter()
            .all(|t| t["key"] != keys[1].as_str()),
        "b's template is b's: {v}"
    );
    let v = json(&shared(&a, &["ls", "--json", "--all-projects"]));
    let mut all = listed(&v);
    all.sort();
    let mut want = vec![(keys[0].clone(), dir(&a)), (keys[1].clone(), dir(&b))];
    want.sort();
    assert_eq!(all, want);

    // gc in b never removes a's snapshot, however little it keeps.
    // Only what belongs to a project counts: the sweep also reports what
    // the tests before this one left on the server (replaced databases).
    let owned = |v: &Value| -> Vec<String> {
        v["removed"]
            .as_array()
            .expect("removed")
            .iter()
            .filter(|i| {
                ["snapshot", "template", "pool_member"].contains(&i["kind"].as_str().unwrap_or(""))
            })
            .map(|i| i.to_string())
            .collect()
    };
    let v = json(&shared(&b, &["gc", "--keep", "0", "--json"]));
    assert_eq!(owned(&v), Vec::<String>::new(), "{v}");
    assert_eq!(v["other_projects"], 1);
    let text = String::from_utf8_lossy(&shared(&b, &["gc", "--keep", "0"]).stdout).into_owned();
    assert!(
        text.contains("left 1 snapshot(s) of other projects alone"),
        "{text}"
    );
    // With --all-projects it does (a's key is not b's current one).
    let v = json(&shared(
        &b,
        &["gc", "--keep", "0", "--all-projects", "--json"],
    ));
    let removed: Vec<&str> = v["removed"]
        .as_array()
        .expect("removed")
        .iter()
        .filter(|i| i["kind"] == "snapshot")
        .map(|i| i["name"].as_str().expect("name"))
        .collect();
    assert_eq!(removed, vec![keys[0].as_str()]);
}

/// `migsnap drop` (what the pytest plugin's teardown calls) drops what
/// migsnap marked, the clone `prepare` made, and refuses anything else,
/// leaving it as it was: a database of the user's, one whose comment only
/// looks like migsnap's mark, a system database.
#[test]
fn drop_takes_only_what_carries_migsnaps_mark() {
    let p = Project::example("drop");
    let db = p.db("a");
    p.prepare(&db);
    let v = json(&p.run(&["drop", "--database", &db, "--json"]));
    assert_eq!(v["dropped"], true, "{v}");
    assert_eq!(v["was"], "clone", "{v}");
    assert!(!database_exists(&db));
    // Gone already (teardown after a cleanup): nothing to do, no error.
    let v = json(&p.run(&["drop", "--database", &db, "--json"]));
    assert_eq!(v["dropped"], false, "{v}");

    let theirs = p.db("theirs");
    psql("postgres", &format!("CREATE DATABASE \"{theirs}\""));
    for comment in [
        None,
        Some("my own test data"),
        // The start of the clone mark, typed by hand: not a mark.
        Some("migsnap clone of my own data"),
    ] {
        if let Some(c) = comment {
            psql(
                "postgres",
                &format!("COMMENT ON DATABASE \"{theirs}\" IS '{c}'"),
            );
        }
        let out = p.run(&["drop", "--database", &theirs, "--json"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{comment:?}: {err}");
        assert!(
            err.starts_with(&format!(
                "error: refusing to drop database `{theirs}`: it does not carry migsnap's mark\n"
            )),
            "{err}"
        );
        assert!(err.contains("\nhint: "), "{err}");
        assert!(out.stdout.is_empty(), "stdout is data only");
        assert!(
            database_exists(&theirs),
            "{comment:?}: {theirs} was dropped"
        );
    }

    let out = p.run(&["drop", "--database", "postgres"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(database_exists("postgres"));
}

/// A clone that a `prepare` of the same target is working on is not
/// dropped under it: `drop` takes that prepare's lock first, never waits,
/// and refuses with exit code 5.
#[test]
fn drop_refuses_a_clone_a_running_prepare_holds() {
    require_failpoints();
    let p = Project::example("drop_busy");
    let db = p.db("a");
    p.prepare(&db);
    let paused = p.spawn_paused(
        p.cmd(&["prepare", "--database", &db, "--json"]),
        "clone.before",
    );
    let out = p.run(&["drop", "--database", &db]);
    paused.go_on();
    let rest = paused.child.wait_with_output().expect("wait");
    let said = paused.rest.join().expect("stderr reader");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.starts_with(&format!(
            "error: database `{db}` is in use by another migsnap run\n"
        )),
        "{err}"
    );
    assert!(rest.status.success(), "{said}");
    assert!(database_exists(&db));
}
