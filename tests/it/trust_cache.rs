//! Trust (issues #10, #21): whoever can write the cache dir must not get to
//! run SQL as the server's superuser. A dump planted with a recomputed
//! manifest checksum is refused for its signature (no trusted key signed
//! it), discarded and rebuilt; with `trust-unsigned`, the allow-list
//! refuses it whole before any of it runs; a cache dir others can write to
//! is refused; a cache secret is a second authenticator beside the keys.

use crate::common::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

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
fn refused_dumps_are_rebuilt(test: &str, cases: &[Planted]) {
    let (p, reference, db, key) = built_example(test);
    for Planted {
        what,
        sql: bad,
        effect,
    } in cases
    {
        drop_template(&key);
        plant(
            p.cache.path(),
            &key,
            &format!("CREATE TABLE public.planted_before (x integer);\n{bad}\n"),
        );
        // Past the signature layer (the planted dump is unsigned): what
        // is tested here is the restore's own allow-list.
        let out = p
            .cmd(&["prepare", "--database", &db, "--json"])
            .env("MIGSNAP_CRASH_AT", "restore.batch")
            .env("MIGSNAP_TRUST_UNSIGNED", "1")
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

/// A statement planted in front of a dump, and whether its own effect is
/// visible (outside the build database, which goes with a refused restore).
struct Planted<'a> {
    what: &'a str,
    sql: String,
    effect: Box<dyn Fn() -> bool + 'a>,
}

fn planted<'a>(
    what: &'a str,
    sql: impl Into<String>,
    effect: impl Fn() -> bool + 'a,
) -> Planted<'a> {
    Planted {
        what,
        sql: sql.into(),
        effect: Box::new(effect),
    }
}

/// A planted statement whose effect, had it run, would be gone with the
/// build database: the reference check is what sees it.
fn planted_unseen<'a>(what: &'a str, sql: impl Into<String>) -> Planted<'a> {
    planted(what, sql, || false)
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
    let cases = [
        planted(
            "COPY … TO PROGRAM",
            format!("COPY (SELECT 1) TO PROGRAM 'touch {}';", program.display()),
            || program.exists(),
        ),
        planted(
            "COPY … TO a file",
            format!("COPY (SELECT 'x') TO '{}';", file.display()),
            || file.exists(),
        ),
        planted_unseen(
            "COPY … FROM a file",
            "COPY public.django_migrations (app) FROM '/etc/hostname';",
        ),
        planted(
            "CREATE ROLE",
            format!("CREATE ROLE \"{role}\" SUPERUSER LOGIN;"),
            || role_exists(&role),
        ),
        planted(
            "DROP DATABASE",
            format!("DROP DATABASE \"{victim}\" WITH (FORCE);"),
            || !database_exists(&victim),
        ),
        planted(
            "\\! shell escape",
            format!("\\! touch {}", shell.display()),
            || shell.exists(),
        ),
        planted(
            // Found by an adversarial review: rows into a system catalog
            // made a superuser with no statement the allow-list refused.
            "COPY into pg_catalog.pg_authid",
            format!(
                "COPY \"pg_catalog\".\"pg_authid\" (\"oid\", \"rolname\", \"rolsuper\", \"rolinherit\", \
                 \"rolcreaterole\", \"rolcreatedb\", \"rolcanlogin\", \"rolreplication\", \"rolbypassrls\", \
                 \"rolconnlimit\", \"rolpassword\", \"rolvaliduntil\") FROM stdin;\n\
                 99999\t{role}_copied\tt\tt\tt\tt\tt\tt\tt\t-1\t\\N\t\\N\n\\."
            ),
            || role_exists(&format!("{role}_copied")),
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
    let cases = [
        planted(
            "ALTER SYSTEM",
            "ALTER SYSTEM SET migsnap_planted.x = 'yes';",
            setting,
        ),
        planted_unseen("\\connect", "\\connect postgres"),
        planted_unseen("SET ROLE", "SET ROLE postgres;"),
        planted_unseen("GRANT", "GRANT ALL ON SCHEMA public TO PUBLIC;"),
        planted_unseen(
            "standard_conforming_strings off through set_config",
            "SELECT pg_catalog.set_config('standard_conforming_strings', 'off', false);",
        ),
    ];
    refused_dumps_are_rebuilt("refuse_session", &cases);
}

#[test]
fn planted_code_is_refused() {
    let cases = [
        planted_unseen(
            "LANGUAGE c function",
            "CREATE FUNCTION public.planted_c() RETURNS integer\n    LANGUAGE c\n    AS 'libc.so.6', 'getpid';",
        ),
        planted_unseen("DO block", "DO $$BEGIN RAISE NOTICE 'planted'; END$$;"),
        planted_unseen(
            "a SELECT calling a function",
            "SELECT pg_catalog.pg_reload_conf();",
        ),
    ];
    refused_dumps_are_rebuilt("refuse_code", &cases);
}

/// Issue #21, findings 1 and 2: statements a hand-written lexer missed. A
/// `\r` ends a `--` comment for PostgreSQL (the statements after it ran
/// as the superuser), and a `BEGIN ATOMIC` body's `CASE` made the old
/// checker think the body never ended (the DO block after it ran). With
/// `trust-unsigned` (the signature layer is tested below) PostgreSQL's own
/// parser sees each statement the server would, and the allow-list
/// refuses the dump before any of it runs.
#[test]
fn statements_hidden_from_a_hand_written_lexer_are_refused() {
    let role = format!("planted_cr_{}", std::process::id());
    let role2 = format!("planted_atomic_{}", std::process::id());
    let program = marker("cr-program");
    let cases = [
        planted(
            "\\r ends a comment",
            format!(
                "COMMENT ON TABLE \"public\".\"planted_before\" IS 'x' --x\r; COPY (SELECT 1) TO PROGRAM 'touch {}'; CREATE ROLE \"{role}\" SUPERUSER LOGIN; --\n;",
                program.display()
            ),
            || program.exists() || role_exists(&role),
        ),
        planted(
            "a DO block after a BEGIN ATOMIC body",
            format!(
                "CREATE FUNCTION \"public\".\"planted_f\"() RETURNS integer LANGUAGE \"sql\" BEGIN ATOMIC SELECT 1 AS \"case\"; END; DO $$ BEGIN EXECUTE 'CREATE ROLE \"{role2}\" SUPERUSER'; END $$;"
            ),
            || role_exists(&role2),
        ),
    ];
    refused_dumps_are_rebuilt("hidden_stmts", &cases);

    // Without trust-unsigned the signature layer stops the same dump
    // first: nobody trusted signed it.
    let (p, _, db, key) = built_elsewhere("hidden_signed");
    plant(p.cache.path(), &key, &cases[0].sql);
    let (v, err) = prepare_json(&mut p.cmd(&["prepare", "--database", &db, "--json"]));
    assert_eq!(v["source"], "cold", "{err}");
    // The old signature stays beside the changed manifest.
    assert!(
        err.contains("refused snapshot") && err.contains("does not verify"),
        "{err}"
    );
    assert!(!(cases[0].effect)(), "the planted statements ran");
}

/// Issue #21, finding 7: memory followed the longest statement (a 13 KB
/// compressed dump holding one 256 MiB statement took migsnap to 800 MB).
/// A statement over the cap marks the dump damaged: discarded, rebuilt.
#[test]
fn a_statement_over_the_cap_marks_the_dump_damaged() {
    let (p, reference, db, key) = built_elsewhere("huge_stmt");
    let huge = format!(
        "COMMENT ON TABLE \"public\".\"django_migrations\" IS '{}';\n",
        "x".repeat(migsnap::pg::dump_reader::MAX_STATEMENT + 1)
    );
    plant(p.cache.path(), &key, &huge);
    let mut cmd = p.cmd(&["prepare", "--database", &db, "--json"]);
    cmd.env("MIGSNAP_TRUST_UNSIGNED", "1");
    let (v, err) = prepare_json(&mut cmd);
    assert_eq!(v["source"], "cold", "{err}");
    assert!(
        err.contains("is unreadable") && err.contains("discarding it"),
        "{err}"
    );
    reference.check(&db, "after a dump with a huge statement");
}

/// A `<key>.sig` holding only the HMAC with `secret`, as migsnap writes
/// it: what someone who knows the format but maybe not the secret writes.
fn sign(secret: &[u8], key: &str, manifest: &[u8]) -> String {
    let trust = migsnap::sign::Trust {
        secret: migsnap::store::CacheSecret::new(secret.to_vec()),
        ..Default::default()
    };
    trust
        .sign(&parse_key(key), manifest)
        .expect("sign")
        .expect("a signature")
}

/// Replace the signature of `key` with one holding only the HMAC with
/// `secret` over the manifest as it is now.
fn sign_in_place(cache: &Path, key: &str, secret: &[u8]) {
    let manifest = std::fs::read(cache.join(format!("{key}.json"))).expect("manifest");
    std::fs::write(
        cache.join(format!("{key}.sig")),
        sign(secret, key, &manifest),
    )
    .expect("write sig");
}

/// `prepare` with `secret` as MIGSNAP_CACHE_SECRET (or none), signing with
/// a key of its own (`other_key`: a machine whose Ed25519 key this cache
/// dir's snapshots were not signed with, so only the secret can vouch).
fn prepare_with(p: &Project, db: &str, secret: Option<&str>) -> (Value, String) {
    let mut cmd = p.cmd(&["prepare", "--database", db, "--json"]);
    match secret {
        Some(s) => cmd.env("MIGSNAP_CACHE_SECRET", s),
        None => cmd.env_remove("MIGSNAP_CACHE_SECRET"),
    };
    cmd.env("MIGSNAP_SIGNING_KEY_FILE", other_key(p));
    prepare_json(&mut cmd)
}

/// A key file of another machine (made once per project): its signatures
/// are not trusted where the per-user key is the signer.
fn other_key(p: &Project) -> std::path::PathBuf {
    let path = p.data_home.path().join("other.key");
    if !path.exists() {
        migsnap::sign::generate(&path).expect("generate");
    }
    path
}

#[test]
fn a_cache_secret_vouches_for_snapshots_besides_the_keys() {
    let p = Project::example("signed");
    let reference = Reference::of(&p);
    let db = p.db("t");
    let cache = p.cache.path().to_path_buf();

    // Built with the secret: signed with both (the key and the HMAC).
    let (v, _) = prepare_with(&p, &db, Some("s3cret"));
    let key = key_of(&v);
    p.track(&template_of(&v));
    let sig = cache.join(format!("{key}.sig"));
    let text = std::fs::read_to_string(&sig).expect("signed");
    assert!(
        text.starts_with("migsnap-signature v2\ned25519 ") && text.contains("\nhmac-sha256 "),
        "{text}"
    );

    // Another machine's key (the per-user one, which did not sign it) and
    // the same secret: the HMAC vouches for it.
    drop_template(&key);
    let (v, err) = prepare_json(
        p.cmd(&["prepare", "--database", &db, "--json"])
            .env("MIGSNAP_CACHE_SECRET", "s3cret"),
    );
    assert_eq!(v["source"], "cache", "{err}");
    reference.check(&db, "signed, right secret");
    // Overwrite with an HMAC-only signature: still accepted.
    sign_in_place(&cache, &key, b"s3cret");
    drop_template(&key);
    let (v, err) = prepare_with(&p, &db, Some("s3cret"));
    assert_eq!(v["source"], "cache", "{err}");

    // Another secret: refused.
    drop_template(&key);
    let (v, err) = prepare_with(&p, &db, Some("other"));
    assert_eq!(v["source"], "cold", "{err}");
    assert!(
        err.contains("refused snapshot") && err.contains("does not verify"),
        "{err}"
    );

    // A planted statement the allow-list lets through (a plain table), with
    // the manifest checksum recomputed and the manifest signed with a
    // guessed secret: only the signature stops it.
    let planted = "CREATE TABLE public.planted_signed (x integer);\n";
    drop_template(&key);
    plant(&cache, &key, planted);
    sign_in_place(&cache, &key, b"guess");
    let (v, err) = prepare_with(&p, &db, Some("other"));
    assert_eq!(v["source"], "cold", "{err}");
    assert!(err.contains("refused snapshot"), "{err}");
    reference.check(&db, "tampered dump");
    // Signed with the real secret, the same change is accepted: it is the
    // signature, not the content, that refused it above.
    drop_template(&key);
    plant(&cache, &key, planted);
    sign_in_place(&cache, &key, b"other");
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
    assert!(err.contains("does not verify"), "{err}");
    reference.check(&db, "tampered manifest");
}

#[test]
fn a_cache_secret_file_must_be_private() {
    let p = Project::example("secret_file");
    let secret = p.path().join("cache.secret");
    std::fs::write(&secret, "s3cret\n").expect("write");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    p.add_config("cache-secret-file = \"cache.secret\"\n");
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
    let key = &key_of(&v);
    let manifest = std::fs::read(p.cache.path().join(format!("{key}.json"))).expect("manifest");
    let hmac_line = sign(b"s3cret", key, &manifest)
        .lines()
        .nth(1)
        .expect("the HMAC line")
        .to_string();
    let written = std::fs::read_to_string(p.cache.path().join(format!("{key}.sig"))).expect("sig");
    assert!(
        written.lines().any(|l| l == hmac_line),
        "signed with the file's secret, without its trailing newline: {written}"
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
    let (v, _) = succeeded_json(run(&["prepare", "--database", &db, "--json"]), "prepare");
    p.track(&template_of(&v));
    let mode = |d: &Path| std::fs::metadata(d).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);

    // The check comes before a snapshot is read or written (the warm path
    // touches no cache file): drop the template so the cache is read.
    let key = key_of(&v);
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
    let (p, reference, db, key) = built_example("symlinks");
    // The manifest replaced by a link to an identical copy elsewhere.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let manifest = p.cache.path().join(format!("{key}.json"));
    let copy = elsewhere.path().join("manifest.json");
    std::fs::copy(&manifest, &copy).expect("copy");
    std::fs::remove_file(&manifest).expect("rm");
    std::os::unix::fs::symlink(&copy, &manifest).expect("symlink");
    drop_template(&key);
    let (v, err) = prepare_json(&mut p.cmd(&["prepare", "--database", &db, "--json"]));
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
    let (p, reference, db, key) = built_elsewhere("planted_fn");
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
    // Past the signature layer: the restore role is what is tested.
    let (v, err) = prepare_json(
        p.cmd(&["prepare", "--database", &db, "--json"])
            .env("MIGSNAP_TRUST_UNSIGNED", "1"),
    );
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
        !role_exists(&restore_role_name(&key)),
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

// ---- signatures by default (issue #21) ----

fn has_table(db: &str, table: &str) -> bool {
    psql(
        db,
        &format!("SELECT count(*) FROM pg_tables WHERE tablename = '{table}'"),
    ) == "1"
}

#[test]
fn an_unsigned_planted_dump_is_refused_and_rebuilt_by_default() {
    let (p, reference, db, key) = built_example("unsigned");
    let sig = p.cache.path().join(format!("{key}.sig"));
    assert!(
        std::fs::read_to_string(&sig)
            .expect("signed by default")
            .starts_with("migsnap-signature v2\ned25519 "),
        "every snapshot is signed"
    );
    // An allowed statement, the checksum recomputed, the signature gone: a
    // dump someone else wrote.
    for (what, keep_sig, said) in [
        ("unsigned", false, "not signed by a trusted key"),
        ("stale signature", true, "does not verify"),
    ] {
        drop_template(&key);
        plant(
            p.cache.path(),
            &key,
            "CREATE TABLE public.planted_unsigned (x integer);\n",
        );
        if !keep_sig {
            std::fs::remove_file(&sig).expect("rm sig");
        }
        let (v, err) = prepare_json(&mut p.cmd(&["prepare", "--database", &db, "--json"]));
        assert_eq!(v["source"], "cold", "{what}: {err}");
        assert!(
            err.contains("refused snapshot") && err.contains(said) && err.contains("discarding it"),
            "{what}: {err}"
        );
        assert!(!has_table(&db, "planted_unsigned"), "{what}: it ran");
        reference.check(&db, what);
        // The rebuilt snapshot is ours again: signed, restored.
        drop_template(&key);
        assert_eq!(p.prepare(&db)["source"], "cache", "{what}");
    }
}

#[test]
fn a_dump_signed_by_an_untrusted_key_is_refused_unless_trusted() {
    let (p, reference, db, key) = built_example("untrusted");
    // Someone else's key, made with the command a CI job would use.
    let theirs = p.data_home.path().join("theirs.key");
    let out = p.run(&["signing-key", "generate", theirs.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let public = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string();
    assert!(public.starts_with("ed25519:"), "{public}");
    let sign_with_theirs = || {
        plant(
            p.cache.path(),
            &key,
            "CREATE TABLE public.planted_theirs (x integer);\n",
        );
        let trust = migsnap::sign::Trust {
            signer: Some(std::sync::Arc::new(migsnap::sign::Signer::new(
                migsnap::sign::KeySource::File(theirs.clone()),
            ))),
            ..Default::default()
        };
        let manifest = std::fs::read(p.cache.path().join(format!("{key}.json"))).expect("read");
        let sig = trust.sign(&parse_key(&key), &manifest).expect("sign");
        std::fs::write(
            p.cache.path().join(format!("{key}.sig")),
            sig.expect("signed"),
        )
        .expect("write sig");
    };

    drop_template(&key);
    sign_with_theirs();
    let (v, err) = prepare_json(&mut p.cmd(&["prepare", "--database", &db, "--json"]));
    assert_eq!(v["source"], "cold", "{err}");
    assert!(err.contains("which is not in trusted-keys"), "{err}");
    assert!(!has_table(&db, "planted_theirs"));
    reference.check(&db, "untrusted key");

    // Their public key in trusted-keys: accepted.
    drop_template(&key);
    sign_with_theirs();
    let (v, err) = prepare_json(
        p.cmd(&["prepare", "--database", &db, "--json"])
            .env("MIGSNAP_TRUSTED_KEYS", &public),
    );
    assert_eq!(v["source"], "cache", "{err}");
    assert!(has_table(&db, "planted_theirs"), "trusted, so restored");
}

#[test]
fn with_trust_unsigned_a_foreign_snapshot_serves_its_key_but_is_never_built_on() {
    let (p, _, db, key) = built_elsewhere("foreign");
    // A dump someone else wrote: planted, and with no signature.
    let plant_foreign = || {
        plant(
            p.cache.path(),
            &key,
            "CREATE TABLE public.planted_foreign (x integer);\n",
        );
        std::fs::remove_file(p.cache.path().join(format!("{key}.sig"))).expect("rm sig");
    };
    plant_foreign();
    let trusting = |args: &[&str]| {
        let mut c = p.cmd(args);
        c.env("MIGSNAP_TRUST_UNSIGNED", "1");
        c
    };
    // Its own key: served, with a warning.
    let (v, err) = prepare_json(&mut trusting(&["prepare", "--database", &db, "--json"]));
    assert_eq!(v["source"], "cache", "{err}");
    assert!(
        err.contains("is not signed by a trusted key") && err.contains("trust-unsigned"),
        "{err}"
    );
    assert!(has_table(&db, "planted_foreign"), "the foreign dump served");
    // Trust turned off again: the template that foreign dump made (marked
    // foreign on the server) is no longer served either.
    let (v, err) = prepare_json(&mut p.cmd(&["prepare", "--database", &db, "--json"]));
    assert_eq!(v["source"], "cold", "{err}");
    assert!(
        !has_table(&db, "planted_foreign"),
        "a foreign template served without trust-unsigned: {err}"
    );
    drop_template(&key);
    plant_foreign();
    let (v, err) = prepare_json(&mut trusting(&["prepare", "--database", &db, "--json"]));
    assert_eq!(v["source"], "cache", "{err}");
    // A new migration: neither its template (on the server now) nor its
    // dump is built on; the build goes cold.
    p.write("catalog/migrations/0005_product_note.py", NEW_MIGRATION);
    let reference = Reference::of(&p);
    let (v, err) = prepare_json(&mut trusting(&["prepare", "--database", &db, "--json"]));
    assert_eq!(v["source"], "cold", "{err}");
    assert_eq!(v["base_key"], Value::Null, "{err}");
    assert!(
        !has_table(&db, "planted_foreign"),
        "built on the foreign one"
    );
    reference.check(&db, "cold beside a foreign snapshot");
    p.track(&template_of(&v));
    // The foreign snapshot is not signed into trust by being used.
    assert!(!p.cache.path().join(format!("{key}.sig")).exists());
}

/// `ls --json` with `secret` as MIGSNAP_CACHE_SECRET (or none): the keys
/// it lists as snapshots, and those it lists as refused (with why).
fn ls_keys(p: &Project, secret: Option<&str>) -> (Vec<String>, Vec<(String, String)>) {
    let mut cmd = p.cmd(&["ls", "--json"]);
    match secret {
        Some(s) => cmd.env("MIGSNAP_CACHE_SECRET", s),
        None => cmd.env_remove("MIGSNAP_CACHE_SECRET"),
    };
    let v = json_out(&succeeded(cmd.output().expect("run migsnap"), "ls"));
    let keys = |field: &str| -> Vec<Value> { v[field].as_array().expect(field).clone() };
    (
        keys("snapshots")
            .iter()
            .map(|s| s["key"].as_str().expect("key").to_string())
            .collect(),
        keys("refused")
            .iter()
            .map(|r| {
                let key = r["key"].as_str().expect("key").to_string();
                (key, r["reason"].as_str().expect("reason").to_string())
            })
            .collect(),
    )
}

/// `ls` judges each snapshot as `prepare` does (the keys, the cache
/// secret): what `prepare` would refuse and rebuild is listed as refused,
/// never as a snapshot it serves (issue #23).
#[test]
fn ls_lists_as_snapshots_only_what_prepare_would_use() {
    let p = Project::example("ls_trust");
    let db = p.db("t");
    let key = key_of(&p.prepare(&db));
    p.track(&template_name(&key));
    assert_eq!(ls_keys(&p, None), (vec![key.clone()], vec![]));

    // Its signature gone: refused by prepare, so by ls.
    std::fs::remove_file(p.cache.path().join(format!("{key}.sig"))).expect("rm sig");
    let (listed, refused) = ls_keys(&p, None);
    assert!(listed.is_empty(), "an unsigned snapshot listed: {listed:?}");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, key);
    assert!(
        refused[0].1.contains("not signed by a trusted key"),
        "{refused:?}"
    );
    let text = String::from_utf8_lossy(&p.run(&["ls"]).stdout).into_owned();
    assert!(text.contains("!  refused: "), "{text}");

    // Rebuilt by another machine's key with a cache secret: only that
    // secret vouches for it here, as it does for prepare.
    drop_template(&key);
    let (v, err) = prepare_with(&p, &db, Some("s3cret"));
    assert_eq!(v["source"], "cold", "{err}");
    assert_eq!(ls_keys(&p, Some("s3cret")), (vec![key.clone()], vec![]));
    let (listed, refused) = ls_keys(&p, Some("other"));
    assert!(
        listed.is_empty(),
        "listed with the wrong secret: {listed:?}"
    );
    assert!(
        refused.len() == 1 && refused[0].1.contains("does not verify"),
        "{refused:?}"
    );
    let (listed, _) = ls_keys(&p, None);
    assert!(listed.is_empty(), "listed without the secret: {listed:?}");
}

#[test]
fn a_signing_key_others_can_read_is_refused_with_a_hint() {
    let p = Project::example("key_mode");
    let db = p.db("t");
    // `signing-key --json` makes the per-user key on first use.
    let out = p.run(&["signing-key", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown: Value = serde_json::from_slice(&out.stdout).expect("json");
    let file = p.user_key_file();
    assert_eq!(shown["file"], file.display().to_string());
    assert_eq!(shown["created"], true);
    assert!(shown["public_key"]
        .as_str()
        .expect("public key")
        .starts_with("ed25519:"));
    let mode = |f: &Path| std::fs::metadata(f).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().expect("dir")), 0o700);
    let again = p.run(&["signing-key"]);
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        shown["public_key"].as_str().expect("key"),
        "the same key each time"
    );

    let v = p.prepare(&db);
    p.track(&template_of(&v));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    // The warm path reads no key: a template clone still works.
    assert_eq!(p.prepare(&db)["source"], "template");
    // Anything that signs does not.
    let out = p.run(&["prepare", "--database", &db, "--rebuild"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("error: refusing the signing key file") && err.contains("0644"),
        "{err}"
    );
    assert!(err.contains("hint: `chmod 600"), "{err}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");

    // A configured key file that is a symbolic link, or missing.
    let link = p.data_home.path().join("ci.key");
    std::os::unix::fs::symlink(&file, &link).expect("symlink");
    let out = p
        .cmd(&["prepare", "--database", &db, "--rebuild"])
        .env("MIGSNAP_SIGNING_KEY_FILE", &link)
        .output()
        .expect("run");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("it is a symbolic link") && err.contains("hint:"),
        "{err}"
    );
    let out = p
        .cmd(&["prepare", "--database", &db, "--rebuild"])
        .env(
            "MIGSNAP_SIGNING_KEY_FILE",
            p.data_home.path().join("none.key"),
        )
        .output()
        .expect("run");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("does not exist")
            && err.contains("hint: make one with `migsnap signing-key generate"),
        "{err}"
    );
    // Someone else's (the suite runs as root).
    if std::os::unix::fs::chown(&file, Some(4242), None).is_ok() {
        let out = p.run(&["prepare", "--database", &db, "--rebuild"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("owned by uid 4242") && err.contains("hint:"),
            "{err}"
        );
    }
}

#[test]
fn bad_trust_settings_are_configuration_errors() {
    let p = Project::example("trust_settings");
    for (var, value, said) in [
        (
            "MIGSNAP_TRUSTED_KEYS",
            "ed25519:nope",
            "is not an Ed25519 public key",
        ),
        (
            "MIGSNAP_TRUSTED_KEYS",
            "ssh-ed25519 AAAA",
            "is not an Ed25519 public key",
        ),
        ("MIGSNAP_TRUST_UNSIGNED", "maybe", "must be true or false"),
    ] {
        let out = p.cmd(&["key"]).env(var, value).output().expect("run");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {err}");
        assert!(
            err.contains(said) && err.contains("hint:"),
            "{var}={value}: {err}"
        );
    }
    p.add_config("trusted-keys = [\"rsa:abc\"]\n");
    let out = p.run(&["key"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("trusted-keys: `rsa:abc`"),
        "{}",
        stderr(&out)
    );
}
