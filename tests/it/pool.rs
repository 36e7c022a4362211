//! The warm path's other half, against a real server: a replaced target is
//! renamed aside in the transaction that puts its replacement in place and
//! dropped afterwards by a background `maintain`; a pool of ready clones is
//! handed out by rename and refilled in the background, never past its size,
//! never with a database anyone used, and dropped when the key changes.

use crate::common::*;
use serde_json::Value;

/// Once this project's background maintenance has ended, `done` holds.
/// Waiting for the processes themselves, not polling for the result: a
/// member is marked a moment before its maker lets go of its lock, and a
/// pool that stays short must fail with what the maintenance said.
fn settled(p: &Project, what: &str, done: impl FnOnce() -> bool) {
    p.wait_for_maintenance();
    assert!(
        done(),
        "not so once the maintenance ended: {what}; its log:\n{}\nmigsnap's databases on the server:\n{}",
        p.maintain_log(),
        psql(
            "postgres",
            "SELECT datname, datallowconn, datistemplate, shobj_description(oid, 'pg_database') \
             FROM pg_database WHERE datname LIKE 'migsnap%' ORDER BY oid"
        )
    );
}

fn oid(db: &str) -> String {
    psql(
        "postgres",
        &format!("SELECT oid FROM pg_database WHERE datname = '{db}'"),
    )
}

fn name_of_oid(oid: &str) -> String {
    psql(
        "postgres",
        &format!("SELECT datname FROM pg_database WHERE oid = {oid}"),
    )
}

/// The current key's pool members (name, allows connections).
fn members(key: &str) -> Vec<(String, bool)> {
    psql(
        "postgres",
        &format!(
            "SELECT datname, datallowconn FROM pg_database WHERE datname LIKE 'migsnap\\_pool\\_%' \
             AND shobj_description(oid, 'pg_database') LIKE 'migsnap pool key={key} %' ORDER BY 1"
        ),
    )
    .lines()
    .map(|l| {
        let (name, allow) = l.split_once('|').expect("two columns");
        (name.to_string(), allow == "t")
    })
    .collect()
}

/// `gc` with no pool wanted any more (MIGSNAP_POOL=0), asserting success:
/// it removes every pool member. Its sweep takes the whole server: its
/// callers hold `alone()`.
fn gc_with_no_pool(p: &Project) {
    let gc = p
        .cmd(&["gc", "--json"])
        .env("MIGSNAP_POOL", "0")
        .output()
        .expect("gc");
    assert!(gc.status.success(), "{}", stderr(&gc));
}

fn prepare_with_pool(p: &Project, db: &str, pool: &str) -> Value {
    p.track(db);
    let out = p
        .cmd(&["prepare", "--database", db, "--json"])
        .env("MIGSNAP_POOL", pool)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("json")
}

#[test]
fn a_replaced_target_is_set_aside_then_dropped_off_the_critical_path() {
    // gc sweeps the whole server; another test's `maintain` would drop the
    // trash this one looks for.
    let _alone = alone();
    let p = Project::example("aside");
    let db = p.db("t");
    p.prepare(&db);
    let before = oid(&db);
    let again = p.prepare(&db);
    assert_eq!(again["source"], "template");
    assert_ne!(oid(&db), before, "the target is a new clone");
    // Renamed aside in the swap, then dropped by the background maintenance.
    settled(&p, "the replaced database is dropped", || {
        name_of_oid(&before).is_empty()
    });
    Reference::of(&p).check(&db, "after the swap");

    // Killed right after the swap (before anything else could run): the old
    // database waits under a trash name, the new one is in place, and gc
    // (or the next maintenance) removes the old one.
    require_failpoints();
    let before = oid(&db);
    killed_at(p.cmd(&["prepare", "--database", &db]), "clone.commented");
    let aside = name_of_oid(&before);
    assert!(
        aside.starts_with("migsnap_trash_"),
        "set aside as `{aside}`"
    );
    Reference::of(&p).check(&db, "after a crash right after the swap");
    let gc = p.run(&["gc", "--json"]);
    assert!(gc.status.success(), "{}", stderr(&gc));
    assert!(name_of_oid(&before).is_empty(), "gc dropped `{aside}`");
}

#[test]
fn the_pool_hands_out_ready_clones_by_rename_and_refills_to_its_size() {
    // gc sweeps the whole server.
    let _alone = alone();
    let p = Project::example("pool");
    let db = p.db("t");
    let first = prepare_with_pool(&p, &db, "2");
    let key = key_of(&first);
    settled(&p, "the pool fills to 2", || members(&key).len() == 2);
    let ready = members(&key);
    assert!(
        ready.iter().all(|(_, allow)| !allow),
        "nobody can connect to a waiting member: {ready:?}"
    );

    let ready_oids: Vec<String> = ready.iter().map(|(name, _)| oid(name)).collect();
    let taken = prepare_with_pool(&p, &db, "2");
    assert_eq!(taken["source"], "pool");
    assert!(
        ready_oids.contains(&oid(&db)),
        "one of the members became the target (renamed, not cloned)"
    );
    Reference::of(&p).check(&db, "a clone from the pool");
    // Refilled, and never past its size, however many prepares ask.
    for _ in 0..3 {
        prepare_with_pool(&p, &db, "2");
        assert!(members(&key).len() <= 2, "{:?}", members(&key));
    }
    settled(&p, "the pool refills to 2", || members(&key).len() == 2);
    let ls: Value = serde_json::from_slice(
        &p.cmd(&["ls", "--json"])
            .env("MIGSNAP_POOL", "2")
            .output()
            .expect("ls")
            .stdout,
    )
    .expect("ls --json");
    let shown = ls["pool"].as_array().expect("pool listed");
    assert_eq!(
        shown.iter().filter(|m| m["current"] == true).count(),
        2,
        "{ls}"
    );

    // A member someone could have used (it allows connections) is never
    // handed out, and the maintenance replaces it. (A refill spawned by an
    // earlier prepare may still add a fresh member meanwhile: that one may
    // be handed out, a used one never.)
    let used: Vec<(String, String)> = members(&key)
        .into_iter()
        .map(|(name, _)| {
            psql(
                "postgres",
                &format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"),
            );
            let o = oid(&name);
            (name, o)
        })
        .collect();
    let next = prepare_with_pool(&p, &db, "2");
    assert!(
        !used.iter().any(|(_, o)| *o == oid(&db)),
        "a used member was handed out: {next}"
    );
    settled(&p, "the used members are replaced", || {
        let m = members(&key);
        m.len() == 2
            && m.iter()
                .all(|(name, allow)| !allow && !used.iter().any(|(u, _)| u == name))
    });

    // A key change: the old key's pool goes, the new key's fills.
    p.write("catalog/migrations/0005_product_note.py", NEW_MIGRATION);
    let changed = prepare_with_pool(&p, &db, "2");
    let new_key = key_of(&changed);
    assert_ne!(new_key, key);
    settled(&p, "the old key's pool is dropped", || {
        members(&key).is_empty()
    });
    settled(&p, "the new key's pool fills", || {
        members(&new_key).len() == 2
    });

    // No pool wanted any more: gc removes the members.
    gc_with_no_pool(&p);
    assert!(members(&new_key).is_empty(), "{:?}", members(&new_key));
}

/// On a shared server another role with CREATEDB could plant a database
/// under a pool name with a copied comment: only members owned by the role
/// migsnap connects as are handed out.
#[test]
fn a_member_another_role_owns_is_never_handed_out() {
    let p = Project::example("pool_foreign");
    let db = p.db("t");
    let key = key_of(&prepare_with_pool(&p, &db, "1"));
    settled(&p, "the pool fills", || members(&key).len() == 1);
    let (real, _) = members(&key)[0].clone();
    let comment = psql(
        "postgres",
        &format!("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '{real}'"),
    );
    let role = format!("pool_foreign_{}", std::process::id());
    let planted =
        migsnap::names::DbName::Pool(format!("{:016x}", u64::from(std::process::id()) << 20))
            .to_string();
    psql("postgres", &format!("CREATE ROLE {role}"));
    psql(
        "postgres",
        &format!("CREATE DATABASE {planted} OWNER {role} ALLOW_CONNECTIONS false"),
    );
    psql(
        "postgres",
        &format!("COMMENT ON DATABASE {planted} IS '{comment}'"),
    );
    psql("postgres", &format!("DROP DATABASE \"{real}\""));
    let planted_oid = oid(&planted);

    let v = prepare_with_pool(&p, &db, "1");
    assert_eq!(v["source"], "template", "the planted member was not taken");
    assert_ne!(oid(&db), planted_oid);
    Reference::of(&p).check(&db, "next to a planted pool member");
    let _ = psql_output("postgres", &format!("DROP DATABASE IF EXISTS {planted}"));
    let _ = psql_output("postgres", &format!("DROP ROLE IF EXISTS {role}"));
}

/// The same for the template: one with the right name, flags and comment
/// but another owner is not cloned; the snapshot is made again.
#[test]
fn a_template_another_role_owns_is_never_cloned() {
    let p = Project::example("tpl_foreign");
    let db = p.db("t");
    let key = key_of(&p.prepare(&db));
    let role = format!("tpl_foreign_{}", std::process::id());
    psql("postgres", &format!("CREATE ROLE {role}"));
    let template = template_name(&key);
    psql(
        "postgres",
        &format!("ALTER DATABASE \"{template}\" OWNER TO {role}"),
    );
    let v = p.prepare(&db);
    assert_ne!(v["source"], "template", "the foreign template was cloned");
    Reference::of(&p).check(&db, "next to a foreign template");
    let _ = psql_output("postgres", &format!("REASSIGN OWNED BY {role} TO postgres"));
    let _ = psql_output("postgres", &format!("DROP ROLE IF EXISTS {role}"));
}

/// A fresh server with the cache dir carried over (a CI job restoring its
/// cache): no template, no pool, no target; only the dump and manifest.
/// Its gc sweeps the whole server: its callers hold `alone()`.
fn forget_server_state(p: &Project, key: &str, db: &str) {
    settled(p, "the first maintenance ends", || members(key).len() == 1);
    gc_with_no_pool(p);
    assert!(
        members(key).is_empty(),
        "gc with pool = 0 drops the members"
    );
    drop_template(key);
    psql("postgres", &format!("DROP DATABASE IF EXISTS \"{db}\""));
}

#[test]
fn with_a_pool_a_restore_goes_straight_to_the_target_and_the_template_follows() {
    // gc (`forget_server_state`) sweeps the whole server.
    let _alone = alone();
    let p = Project::example("handout");
    let db = p.db("t");
    let key = key_of(&prepare_with_pool(&p, &db, "1"));
    forget_server_state(&p, &key, &db);

    let v = prepare_with_pool(&p, &db, "1");
    assert_eq!(v["source"], "cache");
    Reference::of(&p).check(&db, "a restore handed out as the target");
    // The target is the restored database itself, not a clone of a template
    // made from it: the template, restored again in the background, is
    // younger than the target (a clone is always younger than its template).
    let template = template_name(&key);
    settled(&p, "the background maintenance makes the template", || {
        database_exists(&template)
    });
    let (target_oid, template_oid): (u32, u32) = (
        oid(&db).parse().expect("oid"),
        oid(&template).parse().expect("oid"),
    );
    assert!(
        target_oid < template_oid,
        "the target ({target_oid}) was cloned from the template ({template_oid})"
    );
    // And the pool is refilled from it, so the next run is a rename.
    settled(&p, "the pool is refilled", || members(&key).len() == 1);
    assert_eq!(prepare_with_pool(&p, &db, "1")["source"], "pool");
    Reference::of(&p).check(&db, "the pool member made after a hand-out");
}

#[test]
fn a_restore_another_process_waits_for_becomes_the_template() {
    require_failpoints();
    // gc (`forget_server_state`) sweeps the whole server.
    let _alone = alone();
    let p = Project::example("handout_wait");
    let (a, b) = (p.db("a"), p.db("b"));
    let key = key_of(&prepare_with_pool(&p, &a, "1"));
    forget_server_state(&p, &key, &a);

    // A restores and stops before deciding where the restore goes.
    let mut cmd = p.cmd(&["prepare", "--database", &a, "--json"]);
    cmd.env("MIGSNAP_POOL", "1");
    let first = p.spawn_paused(cmd, "restore.done");
    // B needs the same template and waits for A's lock.
    p.track(&b);
    let mut cmd = p.cmd(&["prepare", "--database", &b, "--json"]);
    cmd.env("MIGSNAP_POOL", "1");
    let (second, _, drain_second) = spawn_until(cmd, "waiting for another migsnap building");
    first.go_on();

    let json = |child: std::process::Child| -> Value {
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success(), "prepare failed");
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let (va, vb) = (json(first.child), json(second));
    let _ = (first.rest.join(), drain_second.join());
    // With someone waiting, A's restore became the template, which both
    // then cloned: B did not restore the dump a second time.
    assert_eq!(va["source"], "cache", "{va}");
    assert_eq!(vb["source"], "template", "{vb}");
    let template: u32 = oid(&template_name(&key)).parse().expect("oid");
    for db in [&a, &b] {
        let target: u32 = oid(db).parse().expect("oid");
        assert!(target > template, "`{db}` is a clone of the template");
        Reference::of(&p).check(db, "next to a waiting process");
    }
}

#[test]
fn killed_around_a_hand_out_the_next_run_restores_again() {
    require_failpoints();
    // gc (`forget_server_state`) sweeps the whole server.
    let _alone = alone();
    let p = Project::example("handout_kill");
    let db = p.db("t");
    let key = key_of(&prepare_with_pool(&p, &db, "1"));
    p.track(&build_name(&key));
    for point in ["handout.before", "handout.after"] {
        // `forget_server_state` waits for a pool member, which the last
        // round's maintenance made.
        forget_server_state(&p, &key, &db);
        let mut cmd = p.cmd(&["prepare", "--database", &db, "--json"]);
        cmd.env("MIGSNAP_POOL", "1");
        killed_at(cmd, point);
        // Killed before the rename, the build is left (and removed by the
        // next build); after it, the target is in place with no template.
        assert_eq!(database_exists(&db), point == "handout.after", "{point}");
        assert!(!database_exists(&template_name(&key)), "{point}");
        let again = prepare_with_pool(&p, &db, "1");
        assert_eq!(again["source"], "cache", "{point}");
        Reference::of(&p).check(&db, point);
        // The background maintenance restores the template under the build
        // name; what the killed run left is gone once it is done.
        settled(&p, "the template is made and no build is left", || {
            database_exists(&template_name(&key)) && !database_exists(&build_name(&key))
        });
    }
}

/// The background maintenance works with the settings `prepare` had from
/// its command line, not only those it can re-read from the environment
/// and the config: given `--remote-url`, it makes the template from the
/// store when the cached dump is gone by the time it runs (issue #23: the
/// flag was lost, and with it the store).
#[test]
fn the_background_maintenance_uses_the_store_named_on_the_command_line() {
    require_failpoints();
    let p = Project::example("maintain_remote");
    let store = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", store.path().display());
    let (ci_db, db) = (p.db("ci"), p.db("t"));

    // A CI job (its own cache dir) builds and pushes.
    let ci_cache = tempfile::tempdir().expect("tempdir");
    p.track(&ci_db);
    let out = p
        .cmd(&[
            "--remote-url",
            &url,
            "prepare",
            "--database",
            &ci_db,
            "--json",
        ])
        .env("MIGSNAP_CACHE_DIR", ci_cache.path())
        .env("MIGSNAP_REMOTE_PUSH", "true")
        .env("MIGSNAP_POOL", "0")
        .output()
        .expect("run");
    let key = key_of(&json_out(&succeeded(out, "the CI prepare")));
    drop_template(&key);

    // Here: restored from the store straight into the target (a pool is
    // configured), then paused before the maintenance starts.
    let mut cmd = p.cmd(&["--remote-url", &url, "prepare", "--database", &db, "--json"]);
    cmd.env_remove("MIGSNAP_REMOTE").env("MIGSNAP_POOL", "1");
    p.track(&db);
    let here = p.spawn_paused(cmd, "maintain.spawn");
    // The cached dump goes (its manifest stays, and with it what the
    // maintenance needs to know the key's inputs): only the store has the
    // dump now.
    std::fs::remove_file(p.cache.path().join(format!("{key}.sql.zst"))).expect("rm cached dump");
    here.go_on();
    let out = here.child.wait_with_output().expect("wait");
    let _ = here.rest.join();
    assert!(out.status.success(), "prepare failed: {}", here.said);
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["origin"], "remote", "{v}");

    settled(
        &p,
        "the background maintenance makes the template from the store and fills the pool",
        || members(&key).len() == 1,
    );
    assert!(database_exists(&template_name(&key)));
    // Its pool member is handed out next.
    assert_eq!(prepare_with_pool(&p, &db, "1")["source"], "pool");
}

/// `prepare --unless-ready` (the pytest plugin's early start, issue #24):
/// with a ready member it changes nothing and answers `"prepared": false`,
/// so the member waits for the prepare that needs it; with none it
/// prepares as usual.
#[test]
fn unless_ready_leaves_a_ready_member_waiting_and_prepares_otherwise() {
    // gc sweeps the whole server.
    let _alone = alone();
    let p = Project::example("unless_ready");
    let db = p.db("t");
    let first = prepare_with_pool(&p, &db, "1");
    let key = key_of(&first);
    p.track(&template_name(&key));
    settled(&p, "the pool fills to 1", || members(&key).len() == 1);
    let waiting = members(&key);
    psql("postgres", &format!("DROP DATABASE \"{db}\""));
    let unless_ready = |pool: &str| -> Value {
        let out = p
            .cmd(&["prepare", "--database", &db, "--json", "--unless-ready"])
            .env("MIGSNAP_POOL", pool)
            .output()
            .expect("run");
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let v = unless_ready("1");
    assert_eq!(v["prepared"], false, "{v}");
    assert_eq!(v["key"], key.as_str(), "{v}");
    assert!(!database_exists(&db), "nothing prepared");
    assert_eq!(members(&key), waiting, "the member still waits");

    // Without a pool there is no member to wait for: a clone, now.
    let v = unless_ready("0");
    assert_eq!(v["prepared"], true, "{v}");
    assert_eq!(v["source"], "template", "{v}");
    assert!(database_exists(&db));

    // No pool wanted any more: gc removes the member.
    gc_with_no_pool(&p);
    assert!(members(&key).is_empty(), "{:?}", members(&key));
}

/// A pool that stays short says why: `maintain --json` names the reason,
/// and the background run's log has a line for each run with what it did.
#[test]
fn maintain_says_why_a_pool_stays_short_and_the_background_run_logs_what_it_did() {
    // maintain drops other projects' orphaned members: the whole server.
    let _alone = alone();
    let p = Project::example("why_short");
    let maintain = || -> Value {
        let out = p
            .cmd(&["maintain", "--json"])
            .env("MIGSNAP_POOL", "1")
            .output()
            .expect("maintain");
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("json")
    };
    // Nothing built yet: nothing to clone from without a migrate, which
    // maintenance never runs.
    let v = maintain();
    assert_eq!(v["not_refilled"], "no-snapshot", "{v}");
    assert_eq!(v["pool_made"], 0, "{v}");

    let db = p.db("t");
    let key = key_of(&prepare_with_pool(&p, &db, "1"));
    p.track(&template_name(&key));
    settled(&p, "the pool fills to 1", || members(&key).len() == 1);
    let log = p.maintain_log();
    assert!(
        log.contains("background maintenance (pid") && log.contains("made 1; 1 ready"),
        "the background run says what it did: {log}"
    );
    // Full: nothing to say.
    let v = maintain();
    assert_eq!(v["pool_ready"], 1, "{v}");
    assert!(v.get("not_refilled").is_none(), "{v}");
}
