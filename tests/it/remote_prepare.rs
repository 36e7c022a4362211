//! `prepare`, `push`, `pull`, `ls --remote` and `gc --remote` with a shared
//! snapshot store: a real S3-compatible server (s3s-fs on loopback, started
//! by scripts/test.sh), a real PostgreSQL and a real Django. "A fresh
//! machine" is an empty cache dir and a server without the key's template.

use crate::common::*;
use serde_json::Value;
use std::path::Path;

/// [`store_prepare`] with `remote-push` on, as on a trusted CI job.
fn prepare_pushing(p: &Project, cache: &Path, url: &str, db: &str) -> (Value, String) {
    let mut env = s3_env();
    env.push(("MIGSNAP_REMOTE_PUSH".into(), "true".into()));
    store_prepare(p, cache, url, &env, db)
}

/// Another machine: nothing of this key on the server (its template and
/// the target go), and the caller brings an empty cache dir.
fn fresh_server(db: &str, results: &[&Value]) {
    for v in results {
        drop_template(v["key"].as_str().expect("key"));
    }
    psql("postgres", &format!("DROP DATABASE IF EXISTS \"{db}\""));
}

/// `ls --remote --json` from the cache dir `cache`.
fn ls_remote(p: &Project, cache: &Path, url: &str) -> Value {
    let out = store_cmd(p, cache, url, &s3_env(), &["ls", "--remote", "--json"])
        .output()
        .expect("run");
    json_out(&succeeded(out, "ls --remote"))
}

fn empty_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Where most stories start: a trusted job built the project's snapshot in
/// its cache dir and pushed it to a store of the test's own.
struct Pushed {
    p: Project,
    url: String,
    db: String,
    ci: tempfile::TempDir,
    built: Value,
    stderr: String,
}

fn pushed(test: &str) -> Pushed {
    let p = Project::example(&format!("remote_{test}"));
    let url = s3_url(test);
    let db = p.db(test);
    let ci = empty_dir();
    let (built, stderr) = prepare_pushing(&p, ci.path(), &url, &db);
    Pushed {
        p,
        url,
        db,
        ci,
        built,
        stderr,
    }
}

#[test]
fn push_then_prepare_on_a_fresh_machine_restores_from_the_store() {
    // The trusted job builds and pushes.
    let Pushed {
        p,
        url,
        db,
        built,
        stderr: err,
        ..
    } = pushed("fresh");
    let reference = Reference::of(&p);
    assert_eq!(built["source"], "cold");
    assert_eq!(built["origin"], Value::Null);
    assert!(err.contains("pushed snapshot"), "{err}");

    // A new machine: empty cache dir, no template. No Django runs.
    fresh_server(&db, &[&built]);
    let laptop = empty_dir();
    let (got, err) = store_prepare(&p, laptop.path(), &url, &s3_env(), &db);
    assert_eq!(got["source"], "cache", "{err}");
    assert_eq!(got["origin"], "remote");
    assert_eq!(got["applied"], serde_json::json!([]));
    assert!(err.contains("downloading snapshot"), "{err}");
    reference.check(&db, "restored from the store");
    let key = got["key"].as_str().expect("key");
    assert!(
        laptop.path().join(format!("{key}.json")).is_file(),
        "now in the cache dir"
    );

    // The downloaded snapshot is this project's in the cache dir: ls and gc
    // act on it (the builder's project dir was another machine's).
    let local = succeeded(
        store_cmd(&p, laptop.path(), &url, &s3_env(), &["ls", "--json"])
            .output()
            .expect("run"),
        "ls",
    );
    let local = json_out(&local);
    assert_eq!(local["snapshots"][0]["key"], key, "{local}");
    assert_eq!(
        local["snapshots"][0]["project_dir"],
        p.path().canonicalize().expect("dir").display().to_string()
    );

    // ls --remote: the same columns as ls, and whether this cache has it.
    let ls = ls_remote(&p, laptop.path(), &url);
    assert_eq!(ls["remote"], url.as_str());
    let rows = ls["snapshots"].as_array().expect("snapshots");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["key"], key);
    assert_eq!(rows[0]["current"], true);
    assert_eq!(rows[0]["cached"], true);
    assert_eq!(rows[0]["source"], "cold");
    assert!(rows[0]["migrations"].as_u64().expect("count") > 0);
}

#[test]
fn an_ancestor_from_the_store_is_built_on() {
    let Pushed {
        p,
        url,
        db,
        built: main,
        ..
    } = pushed("ancestor");

    // A branch adds a migration; its machine has nothing.
    p.write("catalog/migrations/0005_product_note.py", NEW_MIGRATION);
    let reference = Reference::of(&p);
    fresh_server(&db, &[&main]);
    let laptop = empty_dir();
    let (got, err) = store_prepare(&p, laptop.path(), &url, &s3_env(), &db);
    assert_eq!(got["source"], "incremental", "{err}");
    assert_eq!(got["base_key"], main["key"]);
    assert_eq!(got["origin"], "remote");
    assert_eq!(
        got["applied"],
        serde_json::json!(["catalog.0005_product_note"])
    );
    reference.check(&db, "incremental on the store's snapshot");
    // remote-push is off here: the branch's snapshot stays local.
    let ls = ls_remote(&p, laptop.path(), &url);
    assert_eq!(ls["snapshots"].as_array().expect("rows").len(), 1);
}

#[test]
fn push_and_pull_move_one_snapshot() {
    let p = Project::example("remote_pushpull");
    let url = s3_url("pushpull");
    let db = p.db("pp");
    let ci = empty_dir();
    let (built, _) = store_prepare(&p, ci.path(), &url, &s3_env(), &db);
    let key = built["key"].as_str().expect("key").to_string();

    let push = |cache: &Path| {
        json_out(&succeeded(
            store_cmd(&p, cache, &url, &s3_env(), &["push", "--json"])
                .output()
                .expect("run"),
            "push",
        ))
    };
    let first = push(ci.path());
    assert_eq!(first["result"], "uploaded");
    assert_eq!(first["key"], key.as_str());
    assert!(first["bytes"].as_u64().expect("bytes") > 0);
    assert_eq!(push(ci.path())["result"], "already_there");

    let laptop = empty_dir();
    let pull = |args: &[&str]| {
        store_cmd(&p, laptop.path(), &url, &s3_env(), args)
            .output()
            .expect("run")
    };
    let got = json_out(&succeeded(pull(&["pull", "--json", "--key", &key]), "pull"));
    assert_eq!(got["result"], "downloaded");
    assert_eq!(
        std::fs::read(laptop.path().join(format!("{key}.sql.zst"))).expect("dump"),
        std::fs::read(ci.path().join(format!("{key}.sql.zst"))).expect("dump"),
    );
    assert_eq!(
        json_out(&succeeded(pull(&["pull", "--json"]), "pull"))["result"],
        "already_cached"
    );

    // A key the store lacks, and one that is not a key.
    let missing = "0".repeat(64);
    let out = pull(&["pull", "--key", &missing]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("has no snapshot 0000000000000000"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("hint:"), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let out = pull(&["pull", "--key", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // Without a store configured.
    let out = p
        .cmd(&["push"])
        .env("MIGSNAP_CACHE_DIR", ci.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no snapshot store is configured"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_damaged_snapshot_in_the_store_is_skipped_and_built_locally() {
    let Pushed {
        p,
        url,
        db,
        ci,
        built,
        ..
    } = pushed("damaged");
    let reference = Reference::of(&p);
    let key = built["key"].as_str().expect("key");

    // Truncate the dump in the store, as a broken upload or disk would.
    let dump = std::fs::read(ci.path().join(format!("{key}.sql.zst"))).expect("dump");
    let name = store_dump_name(key, &dump);
    raw_put(&url, &name, dump[..dump.len() / 2].to_vec());

    fresh_server(&db, &[&built]);
    let laptop = empty_dir();
    let (got, err) = store_prepare(&p, laptop.path(), &url, &s3_env(), &db);
    assert_eq!(got["source"], "cold", "{err}");
    assert!(err.contains("is damaged"), "{err}");
    assert!(err.contains("skipping it"), "{err}");
    reference.check(&db, "built locally after a damaged store snapshot");
}

#[test]
fn a_store_that_is_down_warns_once_and_the_run_builds_locally() {
    let p = Project::example("remote_down");
    let reference = Reference::of(&p);
    let db = p.db("down");
    let mut env = s3_env_down();
    env.push(("MIGSNAP_REMOTE_PUSH".into(), "true".into()));
    let cache = empty_dir();
    let (got, err) = store_prepare(&p, cache.path(), "s3://migsnap-test/down", &env, &db);
    assert_eq!(got["source"], "cold");
    reference.check(&db, "built locally with the store down");
    // Own key, ancestors and the push all would have asked: one warning.
    assert_eq!(
        err.matches("cannot reach the snapshot store").count(),
        1,
        "{err}"
    );
    assert!(err.contains("going on without it"), "{err}");
    assert!(err.contains("hint: check the URL, the endpoint"), "{err}");

    // A command that needs the store fails with its own exit code.
    let out = store_cmd(&p, cache.path(), "s3://migsnap-test/down", &env, &["push"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("hint:"), "{}", stderr(&out));
}

#[test]
fn a_store_that_never_answers_times_out_and_the_run_goes_on() {
    let p = Project::example("remote_hung");
    let db = p.db("hung");
    // Accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(16).collect();
        std::thread::sleep(std::time::Duration::from_secs(120));
        drop(held);
    });
    let s = s3();
    let mut env = s3_env_with(
        &format!("http://127.0.0.1:{port}"),
        &s.access_key,
        &s.secret_key,
    );
    env.push(("MIGSNAP_REMOTE_TIMEOUT".into(), "1".into()));
    let cache = empty_dir();
    let (got, err) = store_prepare(&p, cache.path(), "s3://migsnap-test/hung", &env, &db);
    assert_eq!(got["source"], "cold");
    assert_eq!(err.matches("warning:").count(), 1, "{err}");
    assert!(err.contains("snapshot store"), "{err}");
}

#[test]
fn a_wrong_credential_is_denied_and_the_run_builds_locally() {
    let p = Project::example("remote_denied");
    let url = s3_url("denied");
    let db = p.db("den");
    let s = s3();
    let env = s3_env_with(&s.endpoint, &s.access_key, "wrong-secret");
    let cache = empty_dir();
    let (got, err) = store_prepare(&p, cache.path(), &url, &env, &db);
    assert_eq!(got["source"], "cold");
    assert_eq!(err.matches("denied access").count(), 1, "{err}");
    assert!(err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");

    let out = store_cmd(&p, cache.path(), &url, &env, &["push"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("denied access"), "{}", stderr(&out));
    let out = store_cmd(&p, cache.path(), &url, &env, &["ls", "--remote"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
}

#[test]
fn two_machines_pushing_one_key_at_once_leave_one_whole_snapshot() {
    let p = Project::example("remote_race");
    let reference = Reference::of(&p);
    let db = p.db("race");
    // Two machines built the same key, each its own dump.
    let (a, b) = (empty_dir(), empty_dir());
    let (first, _) = store_prepare(&p, a.path(), "off", &[], &db);
    fresh_server(&db, &[&first]);
    let (second, _) = store_prepare(&p, b.path(), "off", &[], &db);
    let key = first["key"].as_str().expect("key");
    assert_eq!(second["key"], key);
    for round in 0..3 {
        let url = s3_url("race");
        let spawn = |cache: &Path| {
            store_cmd(&p, cache, &url, &s3_env(), &["push", "--json"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn push")
        };
        let (pa, pb) = (spawn(a.path()), spawn(b.path()));
        let (ra, rb) = (
            pa.wait_with_output().expect("push a"),
            pb.wait_with_output().expect("push b"),
        );
        let results: Vec<Value> = [ra, rb]
            .into_iter()
            .map(|o| json_out(&succeeded(o, "push")))
            .collect();
        assert!(
            results.iter().any(|r| r["result"] == "uploaded"),
            "round {round}: {results:?}"
        );
        // Whatever stands is whole: a fresh machine restores it.
        fresh_server(&db, &[&first]);
        let c = empty_dir();
        let (got, err) = store_prepare(&p, c.path(), &url, &s3_env(), &db);
        assert_eq!(got["source"], "cache", "round {round}: {err}");
        assert_eq!(got["origin"], "remote");
        reference.check(&db, "restored after two concurrent pushes");
    }
}

#[test]
fn gc_remote_keeps_the_newest_and_the_current() {
    let Pushed {
        p,
        url,
        db,
        ci,
        built: old,
        ..
    } = pushed("gc");
    p.write("catalog/migrations/0005_product_note.py", NEW_MIGRATION);
    let (new, _) = prepare_pushing(&p, ci.path(), &url, &db);
    assert_ne!(old["key"], new["key"]);
    let gc = |args: &[&str]| {
        json_out(&succeeded(
            store_cmd(&p, ci.path(), &url, &s3_env(), args)
                .output()
                .expect("run"),
            "gc --remote",
        ))
    };
    let dry = gc(&["gc", "--remote", "--keep", "0", "--dry-run", "--json"]);
    assert_eq!(dry["removed"].as_array().expect("removed").len(), 1);
    let ls = |cache: &Path| {
        ls_remote(&p, cache, &url)["snapshots"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| r["key"].as_str().expect("key").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ls(ci.path()).len(), 2, "a dry run removes nothing");

    let done = gc(&["gc", "--remote", "--keep", "0", "--json"]);
    assert_eq!(done["kept"], serde_json::json!([new["key"]]));
    assert_eq!(done["removed"][0]["kind"], "snapshot");
    assert_eq!(done["removed"][0]["name"], old["key"]);
    // Seen from another cache dir too (no stale copy of its manifest).
    assert_eq!(
        ls(empty_dir().path()),
        vec![new["key"].as_str().expect("key")]
    );
    assert_eq!(ls(ci.path()), vec![new["key"].as_str().expect("key")]);
}

#[test]
fn a_bad_store_url_is_a_configuration_error() {
    let p = Project::example("remote_badurl");
    let cache = empty_dir();
    for url in ["bucket/prefix", "ftp://x/y", "file://relative"] {
        let out = store_cmd(
            &p,
            cache.path(),
            url,
            &[],
            &["prepare", "--database", "test_x"],
        )
        .output()
        .expect("run");
        assert_eq!(out.status.code(), Some(2), "{url}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("invalid snapshot store URL"), "{err}");
        assert!(err.contains("hint: use s3://BUCKET/PREFIX"), "{err}");
        assert!(out.stdout.is_empty());
    }
}

/// Overwrite an object in the store behind migsnap's back.
fn raw_put(url: &str, name: &str, bytes: Vec<u8>) {
    use object_store::{ObjectStoreExt, PutPayload};
    let (store, prefix) = s3_raw(url);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime
        .block_on(store.put(&prefix.join(name), PutPayload::from(bytes)))
        .expect("raw put");
}

/// Issue #21: a store is verifiable without sharing a secret. The default
/// branch's CI signs what it pushes with its own key
/// (`signing-key-file`); a machine that has only the public key in
/// `trusted-keys` restores it, one that does not refuses it and builds.
#[test]
fn a_snapshot_pushed_with_a_ci_key_is_accepted_where_its_public_key_is_trusted() {
    let p = Project::example("remote_cikey");
    let reference = Reference::of(&p);
    let url = s3_url("cikey");
    let db = p.db("ck");
    // The CI key, made as docs/ci.md says.
    let secrets = empty_dir();
    let ci_key = secrets.path().join("ci.key");
    let out = succeeded(
        p.cmd(&["signing-key", "generate", ci_key.to_str().expect("utf-8")])
            .output()
            .expect("run"),
        "signing-key generate",
    );
    let public = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string();

    // CI builds and pushes, signing with the CI key.
    let ci = empty_dir();
    let mut env = s3_env();
    env.push(("MIGSNAP_REMOTE_PUSH".into(), "true".into()));
    env.push((
        "MIGSNAP_SIGNING_KEY_FILE".into(),
        ci_key.display().to_string(),
    ));
    let (built, err) = store_prepare(&p, ci.path(), &url, &env, &db);
    assert!(err.contains("pushed snapshot"), "{err}");
    assert!(
        !p.user_key_file().exists(),
        "the per-user key is never made where a key file is configured"
    );

    // A fork's machine: its own per-user key (another data dir), an empty
    // cache dir, the CI's public key only.
    let fork = |trusted: Option<&str>| {
        fresh_server(&db, &[&built]);
        let laptop = empty_dir();
        let home = empty_dir();
        let mut env = s3_env();
        env.push(("XDG_DATA_HOME".into(), home.path().display().to_string()));
        if let Some(k) = trusted {
            env.push(("MIGSNAP_TRUSTED_KEYS".into(), k.to_string()));
        }
        let (got, err) = store_prepare(&p, laptop.path(), &url, &env, &db);
        reference.check(&db, "a fork's machine");
        (got, err)
    };
    let (got, err) = fork(Some(&public));
    assert_eq!(got["source"], "cache", "{err}");
    assert_eq!(got["origin"], "remote", "{err}");

    let (got, err) = fork(None);
    assert_eq!(got["source"], "cold", "{err}");
    assert!(
        err.contains("which is not in trusted-keys") && err.contains("skipping it"),
        "{err}"
    );
    // The hint for a refused manifest, from the typed cause the warning
    // is about (the binary's reporter words it).
    assert!(
        err.contains("hint: snapshots in the store must be signed by a key in `trusted-keys`"),
        "{err}"
    );
    assert!(
        !err.contains("downloading snapshot"),
        "refused before the download: {err}"
    );
}

/// Issue #21, finding 3: with `trust-unsigned`, a snapshot in the store that
/// no trusted key signed serves its own key, but an incremental build never
/// starts from it (a trigger planted on django_migrations would fire as
/// `migrate` inserts its rows): the build goes cold.
#[test]
fn with_trust_unsigned_a_foreign_snapshot_in_the_store_is_never_built_on() {
    let Pushed {
        p, url, db, built, ..
    } = pushed("foreign_base");
    // A machine that does not trust the pusher's key, but lets foreign
    // snapshots through.
    let home = empty_dir();
    let mut env = s3_env();
    env.push(("XDG_DATA_HOME".into(), home.path().display().to_string()));
    env.push(("MIGSNAP_TRUST_UNSIGNED".into(), "1".into()));

    fresh_server(&db, &[&built]);
    let laptop = empty_dir();
    let (got, err) = store_prepare(&p, laptop.path(), &url, &env, &db);
    assert_eq!(got["source"], "cache", "its own key is served: {err}");
    assert_eq!(got["origin"], "remote", "{err}");
    assert!(err.contains("is not signed by a trusted key"), "{err}");
    // Never pushed on: a push would sign it into trust.
    let out = store_cmd(&p, laptop.path(), &url, &env, &["push"])
        .output()
        .expect("run");
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot push snapshot")
            && stderr(&out).contains("not signed by a trusted key"),
        "{}",
        stderr(&out)
    );

    // A new migration: neither the store's copy, nor the downloaded one,
    // nor its template is built on.
    p.write("catalog/migrations/0005_product_note.py", NEW_MIGRATION);
    let reference = Reference::of(&p);
    let (got, err) = store_prepare(&p, laptop.path(), &url, &env, &db);
    assert_eq!(got["source"], "cold", "{err}");
    reference.check(&db, "cold beside a foreign base");
    fresh_server(&db, &[&built, &got]);
    let elsewhere = empty_dir();
    let (got, err) = store_prepare(&p, elsewhere.path(), &url, &env, &db);
    assert_eq!(got["source"], "cold", "not from the store either: {err}");
    assert!(!err.contains("downloading snapshot"), "{err}");
}
