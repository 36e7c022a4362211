//! Trust (issue #10): whoever can write the cache dir must not get to run
//! SQL as the server's superuser. A dump planted with a recomputed manifest
//! checksum is refused whole before any of it runs, discarded and rebuilt;
//! a cache dir others can write to is refused; with a cache secret, only
//! snapshots signed with it are used.

mod common;

use common::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Put `sql` in front of the cached dump of `key`, recompress it and
/// recompute the manifest's checksum, as someone with write access to the
/// cache dir would.
fn plant(cache: &Path, key: &str, sql: &str) {
    let path = cache.join(format!("{key}.sql.zst"));
    let dump = zstd::decode_all(&std::fs::read(&path).expect("read dump")[..]).expect("decode");
    let mut text = sql.as_bytes().to_vec();
    text.extend_from_slice(&dump);
    let bytes = zstd::encode_all(&text[..], 3).expect("encode");
    replace_dump_keeping_manifest_in_step(cache, key, &bytes);
}

fn role_exists(role: &str) -> bool {
    psql(
        "postgres",
        &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{role}'"),
    ) == "1"
}

/// For each planted statement: a harmless, allowed statement goes first,
/// the refused one after it. `prepare` must warn that it refused the dump
/// (naming the line), rebuild from empty with the plain-migrate result, and
/// run nothing of the planted dump: MIGSNAP_CRASH_AT kills the process at
/// the first batch the restore runs, so a restore that started executing
/// before it found the bad statement fails the test even when the harmless
/// statement's effect vanished with the dropped build database. `effect`
/// says whether the planted statement's own effect is visible.
/// Whether a planted statement's effect is visible.
type Check<'a> = Box<dyn Fn() -> bool + 'a>;

fn refused_dumps_are_rebuilt(test: &str, cases: &[(&str, String, Check)]) {
    let p = Project::example(test);
    let reference = Reference::of(&p);
    let db = p.db("t");
    let key = p.prepare(&db)["key"].as_str().expect("key").to_string();
    for (what, bad, effect) in cases {
        drop_template(&key);
        plant(
            p.cache.path(),
            &key,
            &format!("CREATE TABLE public.planted_before (x integer);\n{bad}\n"),
        );
        let out = p
            .cmd(&["prepare", "--database", &db, "--json"])
            .env("MIGSNAP_CRASH_AT", "restore.batch")
            .output()
            .expect("run migsnap");
        let err = stderr(&out);
        assert!(
            out.status.success(),
            "{what}: prepare failed ({}; killed at the first restore batch means part of the dump ran):\n{err}",
            out.status
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["source"], "cold", "{what}: {err}");
        let warning = err
            .lines()
            .find(|l| l.contains("warning:") && l.contains("refused"))
            .unwrap_or_else(|| panic!("{what}: no refusal warning: {err}"));
        assert!(
            warning.contains("line 2") && warning.contains("discarding it"),
            "{what}: the warning names the statement's line: {warning}"
        );
        assert!(!effect(), "{what}: the planted statement took effect");
        reference.check(&db, what);
        assert_eq!(
            psql(
                &db,
                "SELECT count(*) FROM pg_tables WHERE tablename = 'planted_before'"
            ),
            "0",
            "{what}"
        );
        // The rebuilt dump is honest: it restores again (source: cache).
        drop_template(&key);
        let again = p.prepare(&db);
        assert_eq!(again["source"], "cache", "{what}");
        reference.check(&db, &format!("{what}, restored"));
    }
}

fn marker(name: &str) -> std::path::PathBuf {
    // /tmp: the server's OS user could write there.
    std::env::temp_dir().join(format!("migsnap-planted-{name}-{}", std::process::id()))
}

#[test]
fn planted_commands_reaching_outside_the_database_are_refused() {
    let program = marker("program");
    let file = marker("copy-to");
    let shell = marker("shell");
    let role = format!("planted_{}", std::process::id());
    let victim = format!("test_planted_victim_{}", std::process::id());
    psql("postgres", &format!("CREATE DATABASE \"{victim}\""));
    let none = || false;
    let cases: Vec<(&str, String, Check)> = vec![
        (
            "COPY … TO PROGRAM",
            format!("COPY (SELECT 1) TO PROGRAM 'touch {}';", program.display()),
            Box::new(|| program.exists()),
        ),
        (
            "COPY … TO a file",
            format!("COPY (SELECT 'x') TO '{}';", file.display()),
            Box::new(|| file.exists()),
        ),
        (
            "COPY … FROM a file",
            "COPY public.django_migrations (app) FROM '/etc/hostname';".into(),
            Box::new(none),
        ),
        (
            "CREATE ROLE",
            format!("CREATE ROLE \"{role}\" SUPERUSER LOGIN;"),
            Box::new(|| role_exists(&role)),
        ),
        (
            "DROP DATABASE",
            format!("DROP DATABASE \"{victim}\" WITH (FORCE);"),
            Box::new(|| !database_exists(&victim)),
        ),
        (
            "\\! shell escape",
            format!("\\! touch {}", shell.display()),
            Box::new(|| shell.exists()),
        ),
        (
            // Found by an adversarial review: rows into a system catalog
            // made a superuser with no statement the allow-list refused.
            "COPY into pg_catalog.pg_authid",
            format!(
                "COPY \"pg_catalog\".\"pg_authid\" (\"oid\", \"rolname\", \"rolsuper\", \"rolinherit\", \
                 \"rolcreaterole\", \"rolcreatedb\", \"rolcanlogin\", \"rolreplication\", \"rolbypassrls\", \
                 \"rolconnlimit\", \"rolpassword\", \"rolvaliduntil\") FROM stdin;\n\
                 99999\t{role}_copied\tt\tt\tt\tt\tt\tt\tt\t-1\t\\N\t\\N\n\\."
            ),
            Box::new(|| role_exists(&format!("{role}_copied"))),
        ),
    ];
    refused_dumps_are_rebuilt("refuse_outside", &cases);
    psql("postgres", &format!("DROP DATABASE IF EXISTS \"{victim}\""));
}

#[test]
fn planted_session_and_server_changes_are_refused() {
    let setting = || {
        psql(
            "postgres",
            "SELECT count(*) FROM pg_file_settings WHERE name = 'migsnap_planted.x'",
        ) != "0"
    };
    let none = || false;
    let cases: Vec<(&str, String, Check)> = vec![
        (
            "ALTER SYSTEM",
            "ALTER SYSTEM SET migsnap_planted.x = 'yes';".into(),
            Box::new(setting),
        ),
        ("\\connect", "\\connect postgres".into(), Box::new(none)),
        ("SET ROLE", "SET ROLE postgres;".into(), Box::new(none)),
        (
            "GRANT",
            "GRANT ALL ON SCHEMA public TO PUBLIC;".into(),
            Box::new(none),
        ),
        (
            "standard_conforming_strings off through set_config",
            "SELECT pg_catalog.set_config('standard_conforming_strings', 'off', false);".into(),
            Box::new(none),
        ),
    ];
    refused_dumps_are_rebuilt("refuse_session", &cases);
}

#[test]
fn planted_code_is_refused() {
    let none = || false;
    let cases: Vec<(&str, String, Check)> = vec![
        (
            "LANGUAGE c function",
            "CREATE FUNCTION public.planted_c() RETURNS integer\n    LANGUAGE c\n    AS 'libc.so.6', 'getpid';".into(),
            Box::new(none),
        ),
        (
            "DO block",
            "DO $$BEGIN RAISE NOTICE 'planted'; END$$;".into(),
            Box::new(none),
        ),
        (
            "a SELECT calling a function",
            "SELECT pg_catalog.pg_reload_conf();".into(),
            Box::new(none),
        ),
    ];
    refused_dumps_are_rebuilt("refuse_code", &cases);
}

/// The HMAC a `<key>.sig` holds, computed with `secret` the way migsnap
/// does: what someone who guessed the format but not the secret writes.
fn sign(secret: &[u8], key: &str, manifest: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret).expect("hmac");
    mac.update(b"migsnap-snapshot-sig-v1\0");
    mac.update(key.as_bytes());
    mac.update(b"\0");
    mac.update(manifest);
    let sig: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{sig}\n")
}

/// `prepare` with `secret` as MIGSNAP_CACHE_SECRET (or none).
fn prepare_with(p: &Project, db: &str, secret: Option<&str>) -> (Value, String) {
    let mut cmd = p.cmd(&["prepare", "--database", db, "--json"]);
    match secret {
        Some(s) => cmd.env("MIGSNAP_CACHE_SECRET", s),
        None => cmd.env_remove("MIGSNAP_CACHE_SECRET"),
    };
    let out = cmd.output().expect("run migsnap");
    let err = stderr(&out);
    assert!(out.status.success(), "prepare failed:\n{err}");
    (serde_json::from_slice(&out.stdout).expect("json"), err)
}

#[test]
fn with_a_cache_secret_only_signed_snapshots_are_used() {
    let p = Project::example("signed");
    let reference = Reference::of(&p);
    let db = p.db("t");
    let cache = p.cache.path().to_path_buf();

    // Unsigned (built without a secret), then a secret is set: refused.
    let (v, _) = prepare_with(&p, &db, None);
    let key = v["key"].as_str().expect("key").to_string();
    p.track(&template_of(&v));
    let sig = cache.join(format!("{key}.sig"));
    assert!(!sig.exists(), "no secret, no signature");
    drop_template(&key);
    let (v, err) = prepare_with(&p, &db, Some("s3cret"));
    assert_eq!(v["source"], "cold", "{err}");
    assert!(
        err.contains("refused snapshot") && err.contains("not signed"),
        "{err}"
    );
    reference.check(&db, "unsigned refused");
    assert!(sig.exists(), "the rebuilt snapshot is signed");

    // The right secret: accepted.
    drop_template(&key);
    let (v, err) = prepare_with(&p, &db, Some("s3cret"));
    assert_eq!(v["source"], "cache", "{err}");
    reference.check(&db, "signed, right secret");

    // Another secret: refused.
    drop_template(&key);
    let (v, err) = prepare_with(&p, &db, Some("other"));
    assert_eq!(v["source"], "cold", "{err}");
    assert!(err.contains("does not match the cache secret"), "{err}");

    // A planted statement the allow-list lets through (a plain table), with
    // the manifest checksum recomputed and the manifest signed with a
    // guessed secret: only the signature stops it.
    drop_template(&key);
    plant(
        &cache,
        &key,
        "CREATE TABLE public.planted_signed (x integer);\n",
    );
    let manifest = std::fs::read(cache.join(format!("{key}.json"))).expect("manifest");
    std::fs::write(&sig, sign(b"guess", &key, &manifest)).expect("write sig");
    let (v, err) = prepare_with(&p, &db, Some("other"));
    assert_eq!(v["source"], "cold", "{err}");
    assert!(err.contains("refused snapshot"), "{err}");
    reference.check(&db, "tampered dump");
    // Signed with the real secret, the same change is accepted: it is the
    // signature, not the content, that refused it above.
    drop_template(&key);
    plant(
        &cache,
        &key,
        "CREATE TABLE public.planted_signed (x integer);\n",
    );
    let manifest = std::fs::read(cache.join(format!("{key}.json"))).expect("manifest");
    std::fs::write(&sig, sign(b"other", &key, &manifest)).expect("write sig");
    let (v, err) = prepare_with(&p, &db, Some("other"));
    assert_eq!(v["source"], "cache", "{err}");
    assert_eq!(
        psql(
            &db,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'planted_signed'"
        ),
        "1"
    );

    // The manifest alone changed, its old signature kept: refused.
    drop_template(&key);
    let mpath = cache.join(format!("{key}.json"));
    let mut m: Value = serde_json::from_slice(&std::fs::read(&mpath).expect("read")).expect("json");
    m["created_unix"] = 1.into();
    std::fs::write(&mpath, serde_json::to_vec_pretty(&m).expect("json")).expect("write");
    let (v, err) = prepare_with(&p, &db, Some("other"));
    assert_eq!(v["source"], "cold", "{err}");
    assert!(err.contains("does not match the cache secret"), "{err}");
    reference.check(&db, "tampered manifest");
}

#[test]
fn a_cache_secret_file_must_be_private() {
    let p = Project::example("secret_file");
    let secret = p.path().join("cache.secret");
    std::fs::write(&secret, "s3cret\n").expect("write");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let config = p.path().join("migsnap.toml");
    let salted = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        format!("{salted}cache-secret-file = \"cache.secret\"\n"),
    )
    .expect("write");
    let db = p.db("t");
    let out = p.run(&["prepare", "--database", &db]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("error: the cache secret file") && err.contains("0644"),
        "{err}"
    );
    assert!(err.contains("hint: `chmod 600"), "{err}");

    std::fs::write(&secret, "").expect("write");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = p.run(&["prepare", "--database", &db]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is empty"), "{}", stderr(&out));

    std::fs::remove_file(&secret).expect("rm");
    let out = p.run(&["prepare", "--database", &db]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot read the cache secret file"));

    // A private, non-empty file: snapshots get signed with it.
    std::fs::write(&secret, "s3cret\n").expect("write");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let v = p.prepare(&db);
    let key = v["key"].as_str().expect("key");
    let manifest = std::fs::read(p.cache.path().join(format!("{key}.json"))).expect("manifest");
    assert_eq!(
        std::fs::read_to_string(p.cache.path().join(format!("{key}.sig"))).expect("sig"),
        sign(b"s3cret", key, &manifest),
        "signed with the file's secret, without its trailing newline"
    );
}

#[test]
fn a_cache_dir_others_can_write_is_refused() {
    let p = Project::example("cache_mode");
    // migsnap creates a missing cache dir itself, closed to others.
    let dir = p.cache.path().join("made-by-migsnap");
    let db = p.db("t");
    let run = |args: &[&str]| {
        p.cmd(args)
            .env("MIGSNAP_CACHE_DIR", &dir)
            .output()
            .expect("run migsnap")
    };
    let out = run(&["prepare", "--database", &db, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    p.track(&template_of(&v));
    let mode = |d: &Path| std::fs::metadata(d).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);

    // The check comes before a snapshot is read or written (the warm path
    // touches no cache file): drop the template so the cache is read.
    let key = v["key"].as_str().expect("key").to_string();
    drop_template(&key);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let out = run(&["prepare", "--database", &db]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "error: refusing the cache dir `{}`",
            dir.display()
        )) && err.contains("0777"),
        "{err}"
    );
    assert!(
        err.contains("hint: whoever can write the cache dir") && err.contains("chmod go-w"),
        "{err}"
    );
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    assert!(
        run(&["prepare", "--database", &db]).status.success(),
        "0755 is fine"
    );

    // Owned by someone else (needs root to arrange; the suite runs as root).
    match std::os::unix::fs::chown(&dir, Some(4242), None) {
        Ok(()) => {
            drop_template(&key);
            let out = run(&["prepare", "--database", &db]);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{err}");
            assert!(err.contains("owned by uid 4242"), "{err}");
            assert!(err.contains("hint:"), "{err}");
            let me = std::fs::metadata(p.cache.path()).expect("stat");
            std::os::unix::fs::chown(&dir, Some(std::os::unix::fs::MetadataExt::uid(&me)), None)
                .expect("chown back");
        }
        Err(e) => eprintln!("skipping the foreign-owner case: cannot chown ({e})"),
    }
}

#[test]
fn symlinks_planted_in_the_cache_dir_are_not_followed() {
    let p = Project::example("symlinks");
    let reference = Reference::of(&p);
    let db = p.db("t");
    let key = p.prepare(&db)["key"].as_str().expect("key").to_string();
    // The manifest replaced by a link to an identical copy elsewhere.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let manifest = p.cache.path().join(format!("{key}.json"));
    let copy = elsewhere.path().join("manifest.json");
    std::fs::copy(&manifest, &copy).expect("copy");
    std::fs::remove_file(&manifest).expect("rm");
    std::os::unix::fs::symlink(&copy, &manifest).expect("symlink");
    drop_template(&key);
    let out = p.run(&["prepare", "--database", &db, "--json"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        v["source"], "cold",
        "the linked manifest is not used: {err}"
    );
    assert!(err.contains("discarding it"), "{err}");
    reference.check(&db, "after a planted symlink");
    assert!(copy.exists(), "the link's target is left alone");
}

#[test]
fn planted_code_runs_without_the_superusers_rights() {
    // Found by an adversarial review: every statement here is one pg_dump
    // writes, yet REFRESH runs the function, which ran as the superuser.
    // The restore now runs as a role that owns the build database and
    // nothing else, so the function is denied and the dump discarded.
    let p = Project::example("planted_fn");
    let reference = Reference::of(&p);
    let db = p.db("t");
    let key = p.prepare(&db)["key"].as_str().expect("key").to_string();
    drop_template(&key);
    let role = format!("planted_fn_{}", std::process::id());
    plant(
        p.cache.path(),
        &key,
        &format!(
            "CREATE FUNCTION public.evil() RETURNS boolean LANGUAGE plpgsql AS \
             $f$BEGIN EXECUTE 'CREATE ROLE {role} SUPERUSER LOGIN'; RETURN true; END$f$;\n\
             CREATE MATERIALIZED VIEW public.mv AS SELECT public.evil() AS x WITH NO DATA;\n\
             REFRESH MATERIALIZED VIEW public.mv;\n"
        ),
    );
    let out = p.run(&["prepare", "--database", &db, "--json"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["source"], "cold", "{err}");
    // PostgreSQL 15 says "must be superuser", 16 and later "permission
    // denied to create role".
    let denied = err.contains("must be superuser") || err.contains("permission denied");
    assert!(
        denied && err.contains("discarding it"),
        "the denial is reported and the dump discarded: {err}"
    );
    assert!(!role_exists(&role), "the planted function ran as superuser");
    reference.check(&db, "after a planted function was denied");
    assert!(
        !role_exists(&format!("migsnap_restore_{}", &key[..16])),
        "the restore role is gone"
    );
    // An honest dump restores through the same role, and what it made
    // belongs to the connecting role again, as after a plain migrate.
    drop_template(&key);
    let again = p.prepare(&db);
    assert_eq!(again["source"], "cache");
    reference.check(&db, "restored as the restore role");
    assert_eq!(
        psql(
            &db,
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = current_user)"
        ),
        "0"
    );
}
