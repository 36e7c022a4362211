//! Reliability: `prepare` killed at every interesting point (SIGKILL through
//! MIGSNAP_CRASH_AT, and Ctrl-C), damaged cache files and templates, and
//! awkward database content through migsnap's own dump restorer. After each
//! mishap the next `prepare` must succeed and give exactly what a plain
//! `manage.py migrate` gives, and must have cleaned up what was left.

use crate::common::*;
use serde_json::Value;

/// Names in the cache dir, sorted, without lock files and what is derived
/// from the rest and checked against it on every read (the key's stat
/// cache, the warm path's copy of a manifest's record: issue #24), nor
/// the background maintenance's log.
fn cache_files(p: &Project) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p.cache.path())
        .expect("cache dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !n.ends_with(".lock")
                && !n.starts_with("statcache-")
                && !n.ends_with(".warm.json")
                && n != "maintain.log"
        })
        .collect();
    v.sort();
    v
}

fn clear_cache(p: &Project) {
    for name in cache_files(p) {
        std::fs::remove_file(p.cache.path().join(name)).expect("rm");
    }
}

/// The state the server and cache dir are put in before a crash.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Start {
    /// No template, no cache: a cold build.
    Nothing,
    /// A cached dump, no template: a restore.
    Cache,
    /// A template: a clone.
    Template,
}

/// The three files of `key`'s complete, signed snapshot in the cache dir,
/// in the order `cache_files` lists them.
fn snapshot_files(key: &str) -> [String; 3] {
    [
        format!("{key}.json"),
        format!("{key}.sig"),
        format!("{key}.sql.zst"),
    ]
}

/// Crash points that start from the same state and end the same way: from
/// `Start`, the run after the crash must come from the source named.
type CrashGroup<'a> = (Start, &'a str, &'a [&'a str]);

/// For each point, in order: put the project in its group's start, run
/// `prepare` with MIGSNAP_CRASH_AT (it must die by SIGKILL there), then run
/// `prepare` again: it must succeed from the group's source, match the
/// plain-migrate reference, and have removed the build database and temp
/// files the crash left.
fn crash_at_each(test: &str, groups: &[CrashGroup]) {
    require_failpoints();
    let p = Project::example(test);
    // Two tables with rows enough for COPY (small blocks are restored as
    // INSERTs inside statement batches), so the COPY points are reached.
    p.write("orders/migrations/0005_bulk_rows.py", BULK_MIGRATION);
    let reference = Reference::of(&p);
    let db = p.db("t");
    let key = p.key();
    p.track(&template_name(&key));
    p.track(&build_name(&key));
    let points = groups
        .iter()
        .flat_map(|&(start, then, points)| points.iter().map(move |&point| (point, start, then)));
    for (point, start, then) in points {
        match start {
            Start::Nothing => {
                drop_template(&key);
                clear_cache(&p);
            }
            Start::Cache | Start::Template => {
                if !p.cache.path().join(format!("{key}.json")).exists() {
                    p.prepare(&db);
                }
                if start == Start::Cache {
                    drop_template(&key);
                }
            }
        }
        killed_at(p.cmd(&["prepare", "--database", &db, "--json"]), point);
        let again = p.prepare(&db);
        assert_eq!(again["source"], then, "{point} from {start:?}");
        reference.check(&db, point);
        assert_eq!(
            cache_files(&p),
            snapshot_files(&key),
            "{point}: the cache holds exactly one complete, signed snapshot"
        );
        assert!(
            !database_exists(&build_name(&key)),
            "{point}: the build database was not removed"
        );
    }
}

/// Rows enough that pg_dump's COPY blocks for these two tables exceed what
/// the restorer sends as INSERTs (~800 KiB each).
const BULK_MIGRATION: &str = r#"from django.db import migrations

SQL = """
CREATE TABLE bulk_a (id int PRIMARY KEY, t text);
CREATE TABLE bulk_b (id int PRIMARY KEY, t text);
INSERT INTO bulk_a SELECT i, 'row ' || i || ' of the first bulk table' FROM generate_series(1, 20000) i;
INSERT INTO bulk_b SELECT i, 'row ' || i || ' of the second bulk table' FROM generate_series(1, 20000) i;
"""


class Migration(migrations.Migration):
    dependencies = [("orders", "0004_lower_status_index")]
    operations = [migrations.RunSQL(SQL, "DROP TABLE bulk_a, bulk_b")]
"#;

#[test]
fn killed_during_migrate_the_next_run_starts_over() {
    crash_at_each(
        "crash_migrate",
        &[(
            Start::Nothing,
            "cold",
            &[
                "build.locked",
                "build.created",
                "migrate.applied:1",
                "migrate.applied:6",
                "migrate.applied:12",
                "migrate.applied:25",
            ],
        )],
    );
}

#[test]
fn killed_while_saving_the_snapshot_nothing_half_made_is_trusted() {
    crash_at_each(
        "crash_save",
        &[
            (
                Start::Nothing,
                "cold",
                &[
                    "dump.chunk:1",
                    "dump.written",
                    // A dump without its manifest is never used.
                    "dump.renamed",
                    "manifest.written",
                ],
            ),
            // Dump and manifest complete: the next run restores them.
            (
                Start::Nothing,
                "cache",
                &["manifest.renamed", "promote.before"],
            ),
            (Start::Nothing, "template", &["promote.after"]),
        ],
    );
}

#[test]
fn killed_while_restoring_or_cloning_the_next_run_starts_over() {
    crash_at_each(
        "crash_restore",
        &[
            (
                Start::Cache,
                "cache",
                &[
                    "build.locked",
                    "build.created",
                    "restore.batch:1",
                    "restore.batch:2",
                    "restore.batch:4",
                    // BULK_MIGRATION's two big COPY blocks (about 4 chunks
                    // each, on the two connections): points in and after
                    // each of them.
                    "restore.copy_data:1",
                    "restore.copy_data:3",
                    "restore.copy_data:6",
                    "restore.copy:1",
                    "restore.copy:2",
                    "promote.before",
                ],
            ),
            (Start::Cache, "template", &["promote.after"]),
            (
                Start::Template,
                "template",
                &["clone.created", "clone.commented"],
            ),
        ],
    );
}

#[test]
fn killed_during_an_incremental_build_the_next_run_starts_over() {
    require_failpoints();
    let p = Project::example("crash_incremental");
    let db = p.db("t");
    let base = key_of(&p.prepare(&db));
    p.write("catalog/migrations/0005_product_note.py", NEW_MIGRATION);
    let reference = Reference::of(&p);
    let key = p.key();
    p.track(&template_name(&key));
    p.track(&build_name(&key));
    let points = [
        ("build.created", "incremental"),
        ("migrate.applied:1", "incremental"),
        ("dump.written", "incremental"),
        ("manifest.renamed", "cache"),
        // Last: with the base template gone, the base dump is restored first.
        ("restore.batch:2", "incremental"),
    ];
    for (point, then) in points {
        drop_template(&key);
        for f in snapshot_files(&key) {
            let _ = std::fs::remove_file(p.cache.path().join(f));
        }
        if point.starts_with("restore.") {
            drop_template(&base);
        }
        killed_at(p.cmd(&["prepare", "--database", &db, "--json"]), point);
        let again = p.prepare(&db);
        assert_eq!(again["source"], then, "{point}");
        if then == "incremental" {
            assert_eq!(again["base_key"], base.as_str(), "{point}");
        }
        reference.check(&db, point);
        let mut want = [snapshot_files(&base), snapshot_files(&key)].concat();
        want.sort();
        assert_eq!(cache_files(&p), want, "{point}");
        assert!(!database_exists(&build_name(&key)), "{point}");
    }
}

/// A migration that waits (up to 120 s) while `slow-marker` exists in the
/// project dir, so the same key is slow once and fast once the test removes
/// the marker. (A PGOPTIONS setting used to do this; migsnap no longer passes
/// PG* variables to Django.)
fn slow_migration(p: &Project) -> String {
    let marker = p.path().join("slow-marker");
    std::fs::write(&marker, "").expect("write marker");
    format!(
        "import os\nimport time\n\nfrom django.db import migrations\n\nMARKER = {:?}\n\n\n\
         def wait(apps, schema_editor):\n    deadline = time.time() + 120\n    \
         while os.path.exists(MARKER) and time.time() < deadline:\n        time.sleep(0.05)\n\n\n\
         class Migration(migrations.Migration):\n    dependencies = [(\"orders\", \"0004_lower_status_index\")]\n    \
         operations = [migrations.RunPython(wait, migrations.RunPython.noop)]\n",
        marker.display().to_string()
    )
}

/// Add the slow migration; returns the key it makes (its template and
/// build database are tracked for cleanup).
fn add_slow_migration(p: &Project) -> String {
    p.write("orders/migrations/0005_slow.py", &slow_migration(p));
    let key = p.key();
    p.track(&template_name(&key));
    p.track(&build_name(&key));
    key
}

/// `prepare` of `db`, returned once it is applying the slow migration,
/// with what it printed so far and the reader of the rest.
fn start_slow_build(
    p: &Project,
    db: &str,
) -> (std::process::Child, String, std::thread::JoinHandle<String>) {
    spawn_until(
        p.cmd(&["prepare", "--database", db]),
        "applying orders.0005_slow",
    )
}

fn sigint(child: &std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
}

#[test]
fn ctrl_c_during_migrate_stops_cleanly_and_saves_nothing() {
    let p = Project::example("sigint");
    let (db, key) = (p.db("t"), add_slow_migration(&p));
    let (mut child, mut seen, rest) = start_slow_build(&p, &db);
    assert!(database_exists(&build_name(&key)), "the build is under way");

    // A second run waits for the first; Ctrl-C ends the wait at once and
    // touches nothing, since the build belongs to the first run.
    let waiter_db = p.db("w");
    let (mut waiter, mut waiter_seen, waiter_rest) = spawn_until(
        p.cmd(&["prepare", "--database", &waiter_db]),
        "waiting for another migsnap",
    );
    sigint(&waiter);
    waiter_seen.push_str(&waiter_rest.join().expect("stderr reader"));
    let status = waiter.wait().expect("wait");
    assert_eq!(status.code(), Some(130), "{waiter_seen}");
    assert!(
        database_exists(&build_name(&key)),
        "the first run's build is untouched"
    );

    sigint(&child);
    let rest = rest.join().expect("stderr reader");
    let status = child.wait().expect("wait");
    seen.push_str(&rest);
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(rest.contains("error: interrupted"), "{seen}");
    assert!(rest.contains("hint:"), "{seen}");
    assert!(!seen.contains("panicked"), "{seen}");
    // Cleaned up at once, not only by the next run.
    assert!(!database_exists(&build_name(&key)), "{seen}");
    assert!(!database_exists(&template_name(&key)));
    assert!(!database_exists(&db));
    assert!(cache_files(&p).is_empty(), "{:?}", cache_files(&p));

    std::fs::remove_file(p.path().join("slow-marker")).expect("fast from now on");
    let v = p.prepare(&db);
    assert_eq!(v["source"], "cold");
    assert!(django_migrations(&db).contains(&"orders.0005_slow".to_string()));
}

/// Damage the cache files of a built snapshot in each way below, then
/// `prepare` with the template gone: it must warn, discard, rebuild from
/// empty and give the reference result.
/// A way to damage the snapshot of `key` in the cache dir.
type Damage<'a> = &'a dyn Fn(&std::path::Path, &str);

fn damaged_cache_is_rebuilt(test: &str, cases: &[(&str, Damage)]) {
    let (p, reference, db, key) = built_example(test);
    for (what, damage) in cases {
        drop_template(&key);
        damage(p.cache.path(), &key);
        // Past the signature layer (a manifest changed in step with the
        // dump is no longer signed): what is tested is what catches damage
        // after it.
        let out = p
            .cmd(&["prepare", "--database", &db, "--json"])
            .env("MIGSNAP_TRUST_UNSIGNED", "1")
            .output()
            .expect("run migsnap");
        let (v, err) = succeeded_json(out, what);
        assert_eq!(v["source"], "cold", "{what}: {err}");
        assert!(
            err.contains("warning:") && err.contains("discarding it"),
            "{what}: the damage is reported: {err}"
        );
        reference.check(&db, what);
        // The rebuilt snapshot is sound again: the next restore uses it.
        drop_template(&key);
        assert_eq!(p.prepare(&db)["source"], "cache", "{what}");
    }
}

fn rewrite(path: std::path::PathBuf, f: impl FnOnce(Vec<u8>) -> Vec<u8>) {
    let bytes = std::fs::read(&path).expect("read");
    std::fs::write(&path, f(bytes)).expect("write");
}

#[test]
fn damaged_dumps_are_discarded_and_rebuilt() {
    let dump = |dir: &std::path::Path, key: &str| dir.join(format!("{key}.sql.zst"));
    damaged_cache_is_rebuilt(
        "damaged_dump",
        &[
            ("truncated dump", &|d, k| {
                rewrite(dump(d, k), |b| b[..b.len() / 2].to_vec())
            }),
            ("bit-flipped dump", &|d, k| {
                rewrite(dump(d, k), |mut b| {
                    let i = b.len() / 2;
                    b[i] ^= 0x10;
                    b
                })
            }),
            ("empty dump", &|d, k| rewrite(dump(d, k), |_| Vec::new())),
            ("missing dump", &|d, k| {
                std::fs::remove_file(dump(d, k)).expect("rm")
            }),
            // Damage the manifest cannot see, because it was updated to
            // match: the zstd frame checksum catches it during the restore,
            // before anything is promoted.
            ("bit-flipped dump with a matching manifest", &|d, k| {
                let mut b = std::fs::read(dump(d, k)).expect("read");
                let i = b.len() / 2;
                b[i] ^= 0x01;
                replace_dump_keeping_manifest_in_step(d, k, &b);
            }),
            // Worse: the damage decodes into SQL the server rejects, and zstd
            // only notices at the frame's end, after that SQL ran. It must
            // still count as damage (discard and rebuild), not as a server
            // error that stops the run.
            ("garbage SQL before a bad frame checksum", &|d, k| {
                let sql = zstd::decode_all(&std::fs::read(dump(d, k)).expect("read")[..])
                    .expect("decode");
                let mut text = b"SELECT no_such_function_damaged_dump();\n".to_vec();
                // Enough after it that the reader is still busy, far from the
                // checksum, when the server rejects the first batch.
                text.extend_from_slice(&b"SELECT 1;\n".repeat(100_000));
                text.extend_from_slice(&sql);
                let b = zstd_frame_with_bad_checksum(&text);
                replace_dump_keeping_manifest_in_step(d, k, &b);
            }),
        ],
    );
}

/// A zstd frame holding `content` in raw (stored) blocks, with a content
/// checksum that is wrong: a decoder hands out all of `content` and only
/// then reports the damage.
fn zstd_frame_with_bad_checksum(content: &[u8]) -> Vec<u8> {
    const MAX_BLOCK: usize = 128 * 1024;
    // Magic; descriptor: checksum flag, no content size, not single-segment;
    // window descriptor 2^(10 + 7) = 128 KiB.
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd, 0x04, 7 << 3];
    let chunks: Vec<&[u8]> = content.chunks(MAX_BLOCK).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = u32::from(i + 1 == chunks.len());
        // Block header: last-block bit, type 0 (raw), size.
        let header = last | ((chunk.len() as u32) << 3);
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    out
}

#[test]
fn damaged_or_foreign_manifests_are_discarded_and_rebuilt() {
    let manifest = |dir: &std::path::Path, key: &str| dir.join(format!("{key}.json"));
    damaged_cache_is_rebuilt(
        "damaged_manifest",
        &[
            ("truncated manifest", &|d, k| {
                rewrite(manifest(d, k), |b| b[..b.len() / 2].to_vec())
            }),
            ("empty manifest", &|d, k| {
                rewrite(manifest(d, k), |_| Vec::new())
            }),
            ("foreign file as manifest", &|d, k| {
                rewrite(manifest(d, k), |_| b"{\"hello\": \"world\"}\n".to_vec())
            }),
            ("manifest of another key", &|d, k| {
                rewrite(manifest(d, k), |b| {
                    let mut m: Value = serde_json::from_slice(&b).expect("json");
                    m["key"] = "0".repeat(64).into();
                    serde_json::to_vec(&m).expect("json")
                })
            }),
        ],
    );
}

#[test]
fn a_template_that_does_not_match_its_key_is_never_cloned() {
    let (p, reference, db, key) = built_example("bad_template");
    let t = template_name(&key);

    // A migsnap template under the right name, but for another key and with
    // other content: rebuilt from the cache, with a warning.
    drop_template(&key);
    psql("postgres", &format!("CREATE DATABASE \"{t}\""));
    psql(&t, "CREATE TABLE impostor (x int)");
    psql(
        "postgres",
        &format!(
            "COMMENT ON DATABASE \"{t}\" IS 'migsnap template v1 key={}'",
            "f".repeat(64)
        ),
    );
    psql(
        "postgres",
        &format!("ALTER DATABASE \"{t}\" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"),
    );
    let (v, err) = succeeded_json(p.run(&["prepare", "--database", &db, "--json"]), "prepare");
    assert!(err.contains("does not match key"), "{err}");
    assert_eq!(v["source"], "cache");
    reference.check(&db, "after a mismatched template");

    // Right comment but still connectable (never promoted): not trusted either.
    psql(
        "postgres",
        &format!("ALTER DATABASE \"{t}\" WITH IS_TEMPLATE false ALLOW_CONNECTIONS true"),
    );
    psql(&t, "CREATE TABLE impostor (x int)");
    let v = p.prepare(&db);
    assert_eq!(v["source"], "cache");
    reference.check(&db, "after an unpromoted template");

    // A database under that name that migsnap did not make: refused, kept.
    drop_template(&key);
    psql("postgres", &format!("CREATE DATABASE \"{t}\""));
    psql(
        &t,
        "CREATE TABLE precious (x int); INSERT INTO precious VALUES (7)",
    );
    let out = p.run(&["prepare", "--database", &db]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("was not created by migsnap"), "{err}");
    assert!(err.contains("hint:"), "{err}");
    assert_eq!(psql(&t, "SELECT x FROM precious"), "7");

    // --rebuild replaces a sound template (unflagging it first).
    psql("postgres", &format!("DROP DATABASE \"{t}\""));
    assert_eq!(p.prepare(&db)["source"], "cache");
    let (v, _) = succeeded_json(
        p.run(&["prepare", "--database", &db, "--rebuild", "--json"]),
        "prepare --rebuild",
    );
    assert_eq!(v["source"], "cold");
    reference.check(&db, "after --rebuild");
}

/// Content that trips naive SQL splitters and COPY handling, in a RunSQL
/// migration: the restored snapshot must equal a plain migrate exactly.
const AWKWARD_MIGRATION: &str = r#"from django.db import migrations

SQL = r'''
CREATE FUNCTION awkward_fn(t text) RETURNS text LANGUAGE plpgsql AS $body$
DECLARE s text := 'semi;colon ''quoted'' $notdollar$ \. end';
BEGIN
  -- a comment; with a semicolon
  RETURN s || $inner$;$inner$ || t;
END
$body$;
CREATE TABLE awkward (
  id serial PRIMARY KEY,
  j json, jb jsonb, u uuid, ip inet, net cidr, mac macaddr, iv interval,
  n numeric(30, 10), arr int[], tarr text[], b bytea, ts timestamptz,
  d date, tm time, f double precision, bo boolean, t text,
  r int4range, big bigint, sm smallint, ch varchar(20)
);
COMMENT ON TABLE awkward IS 'semi;colon and ''quotes'' and \. and $$dollars$$';
INSERT INTO awkward (j, jb, u, ip, net, mac, iv, n, arr, tarr, b, ts, d, tm, f, bo, t, r, big, sm, ch) VALUES
 ('{"a": [1, "x;y", null]}', '{"k": "v\\n", "e": "\u00e9"}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', '1 year 2 mons 3 days 04:05:06.789',
  12345678901234567890.0123456789, '{1,2,NULL,4}', '{"a,b","c\"d",NULL,"e\\f"}',
  '\x00ff5c2e0a0d09', '2024-02-29 23:59:59.999999+05:30', '2000-01-01', '12:34:56',
  'NaN', true, E'tab\there\nnewline\r\nback\\slash\n\\.\n', '[1,10)', -9223372036854775808, -32768, 'ünïcödé'),
 (NULL, NULL, NULL, '::1', '2001:db8::/32', NULL, '-1 day', 'NaN', '{}', '{}', '', '-infinity', 'infinity',
  '00:00', '-Infinity', false, E'\\.', 'empty', 9223372036854775807, 32767, ''),
 (NULL, 'null', NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL, '\.', NULL, 0, 0, NULL);
-- Large rows: several MB in single COPY lines.
INSERT INTO awkward (t, b) SELECT repeat(E'x\t;\\.\n', 700000), decode(repeat('00ff5c0a', 300000), 'hex');
INSERT INTO awkward (t) SELECT string_agg(md5(i::text), ';') FROM generate_series(1, 60000) i;
CREATE VIEW awkward_view AS SELECT id, awkward_fn(t) AS v FROM awkward WHERE t <> ';';
-- The same awkward values in a table small enough that migsnap restores it
-- with an INSERT instead of COPY; plus identity and generated columns.
CREATE TABLE awkward_small AS SELECT * FROM awkward WHERE length(t) < 1000 OR t IS NULL;
ALTER TABLE awkward_small ADD COLUMN g int GENERATED ALWAYS AS IDENTITY;
ALTER TABLE awkward_small ADD COLUMN gs text GENERATED ALWAYS AS (upper(t)) STORED;
INSERT INTO awkward_small (t, ch) VALUES (E'\\x41\\101 \\u0041 \\v', E'\x0b\x01\x7f');
'''


class Migration(migrations.Migration):
    dependencies = [("orders", "0004_lower_status_index")]
    operations = [migrations.RunSQL(SQL, "DROP TABLE awkward, awkward_small CASCADE; DROP FUNCTION awkward_fn(text)")]
"#;

#[test]
fn awkward_content_survives_the_dump_and_migsnaps_own_restore() {
    let p = Project::example("awkward");
    p.write("orders/migrations/0005_awkward.py", AWKWARD_MIGRATION);
    let reference = Reference::of(&p);
    let db = p.db("t");
    let cold = p.prepare(&db);
    assert_eq!(cold["source"], "cold");
    let key = key_of(&cold);
    drop_template(&key);
    let restored = p.prepare(&db);
    assert_eq!(
        restored["source"], "cache",
        "restored by migsnap's restorer"
    );
    reference.check(&db, "restored");
    assert_eq!(
        psql(
            &db,
            "SELECT length(t) FROM awkward ORDER BY length(t) DESC LIMIT 1"
        ),
        "4200000"
    );
    assert_eq!(
        psql(&db, "SELECT awkward_fn('!')"),
        "semi;colon 'quoted' $notdollar$ \\. end;!"
    );
}

#[test]
fn killed_between_clone_and_rename_the_target_needs_no_force() {
    require_failpoints();
    let p = Project::example("crash_clone");
    // Not a test_ name: only migsnap's mark allows replacing it without --force.
    let db = format!("ci_{}", p.name);
    p.track(&db);
    let scratch = migsnap::pg::admin::clone_scratch_name(&db);
    p.track(&scratch);
    p.prepare(&db);
    psql(
        &db,
        "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)",
    );

    // Killed before and after the clone: the old target is still there,
    // untouched (it goes only once its replacement exists).
    for point in ["clone.before", "clone.created"] {
        killed_at(p.cmd(&["prepare", "--database", &db]), point);
        assert_eq!(psql(&db, "SELECT x FROM kept"), "42", "killed at {point}");
    }
    assert!(
        database_exists(&scratch),
        "the killed run left its scratch clone"
    );

    // No --force: nothing unmarked ever carried the target's name.
    let again = p.prepare(&db);
    assert_eq!(again["source"], "template");
    assert!(
        !database_exists(&scratch),
        "the leftover scratch clone was removed"
    );
    assert_eq!(
        psql("postgres", &format!("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '{db}'")),
        clone_mark(again["key"].as_str().expect("key"))
    );
}

#[test]
fn a_template_dropped_between_look_and_clone_is_rebuilt() {
    require_failpoints();
    // The warm path looks for the template without a lock, so a concurrent
    // --rebuild or gc may drop it before the clone. Pause prepare exactly
    // there, drop the template, let it go on: it must rebuild and succeed.
    let p = Project::example("vanish");
    let db = p.db("t");
    let key = key_of(&p.prepare(&db));
    let paused = p.spawn_paused(
        p.cmd(&["prepare", "--database", &db, "--json"]),
        "clone.before",
    );
    assert!(
        database_exists(&db),
        "the old target stays until the clone is made"
    );
    drop_template(&key);
    paused.go_on();
    let out = paused.child.wait_with_output().expect("wait");
    let err = paused.said + &paused.rest.join().expect("stderr reader");
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("disappeared before it could be cloned"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["source"], "cache", "rebuilt from the cached dump: {v}");
    assert!(database_exists(&template_name(&key)));
    Reference::of(&p).check(&db, "after the vanished template");
}

#[test]
fn django_stops_when_migsnap_is_killed_during_migrate() {
    let p = Project::example("orphan");
    let db = p.db("t");
    add_slow_migration(&p);
    let (mut child, _, _) = start_slow_build(&p, &db);
    let manage = p.path().join("manage.py").display().to_string();
    let running = || {
        std::process::Command::new("pgrep")
            .args(["-f", &manage])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    assert!(running(), "the shim runs while migrate does");
    child.kill().expect("SIGKILL migsnap");
    let _ = child.wait();
    // Without its parent, the shim stops instead of migrating on.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while running() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!running(), "the orphaned shim is still running");
    std::fs::remove_file(p.path().join("slow-marker")).expect("fast from now on");
    let v = p.prepare(&db);
    assert_eq!(v["source"], "cold");
}
