//! Bad input: each mistake gets one `error:` line saying what is wrong, a
//! `hint:` saying how to fix it, the documented exit code, no panic, nothing
//! on stdout, and nothing of the user's dropped. ("When things go
//! wrong" in docs/exit-codes.md lists the same cases.)

use crate::common::*;
use std::process::{Output, Stdio};

/// Asserts the failure contract; returns stderr for further checks.
fn fails(out: &Output, code: i32, says: &str) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "wrong exit code:\n{err}");
    let first = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no `error:` line:\n{err}"));
    assert!(
        first.contains(says),
        "expected `{says}` in `{first}`:\n{err}"
    );
    assert!(
        err.lines().any(|l| l.starts_with("hint: ")),
        "no hint:\n{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "stdout is for results only");
    err
}

#[test]
fn project_dir_and_manage_py() {
    let p = Project::example("badproj");
    let db = p.db("a");
    fails(
        &p.run(&["-C", "no/such/dir", "prepare", "--database", &db]),
        2,
        "project directory",
    );
    std::fs::remove_file(p.path().join("manage.py")).expect("rm");
    let err = fails(&p.run(&["prepare", "--database", &db]), 2, "no manage.py");
    assert!(err.contains("-C DIR"), "{err}");
}

/// From an app's subdirectory the globs still match that app's migrations:
/// its key would be a plausible, wrong CI cache key (#22). `key` stops where
/// every other command does, and says where to run it.
#[test]
fn key_outside_the_project_root_says_where_to_run_it() {
    let p = Project::example("keysubdir");
    let root = p.path().canonicalize().expect("canonical");
    let app = p.path().join("catalog");
    let mut from_app = p.cmd(&["key"]);
    from_app.current_dir(&app);
    let err = fails(&from_app.output().expect("run"), 2, "no manage.py");
    assert!(err.contains(&format!("-C {}", root.display())), "{err}");
    fails(&p.run(&["-C", "catalog", "key"]), 2, "no manage.py");

    // Told where the project is, it prints the project's key.
    let mut told = p.cmd(&["-C", "..", "key"]);
    told.current_dir(&app);
    let out = told.output().expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), p.key());
}

#[test]
fn configuration_mistakes() {
    let p = Project::example("badconf");
    let db = p.db("a");
    // A misspelt key is an error, never silently a default.
    let config = p.path().join("migsnap.toml");
    let good = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, format!("{good}cache_dir = \"x\"\n")).expect("write");
    let err = fails(
        &p.run(&["prepare", "--database", &db]),
        2,
        "unknown key `cache_dir`",
    );
    assert!(
        err.contains("hint: did you mean `cache-dir`?"),
        "the right spelling is suggested: {err}"
    );
    // Where, as file:line:col, and the type in words, not Rust's.
    let lines = good.lines().count();
    std::fs::write(&config, format!("{good}server-port = \"abc\"\n")).expect("write");
    let err = fails(
        &p.run(&["prepare", "--database", &db]),
        2,
        &format!("migsnap.toml:{}:15`", lines + 1),
    );
    assert!(err.contains("expected a port number"), "{err}");
    assert!(!err.contains("u16"), "{err}");
    std::fs::write(&config, format!("{good}key-salt = \"unclosed\n")).expect("write");
    let err = fails(
        &p.run(&["prepare", "--database", &db]),
        2,
        &format!("migsnap.toml:{}:", lines + 1),
    );
    assert!(err.contains("not valid TOML"), "{err}");
    std::fs::write(&config, format!("{good}restore-jobs = 0\n")).expect("write");
    let err = fails(
        &p.run(&["prepare", "--database", &db]),
        2,
        "restore-jobs = 0 is out of range",
    );
    assert!(err.contains("use 1 (one connection) to 16"), "{err}");
    std::fs::write(&config, &good).expect("write");
    p.write("pyproject.toml", "[tool.migsnap]\npyhton = \"x\"\n");
    std::fs::remove_file(&config).expect("rm");
    let err = fails(
        &p.run(&["prepare", "--database", &db]),
        2,
        "pyproject.toml:2:1` in [tool.migsnap]: unknown key `pyhton`",
    );
    assert!(err.contains("did you mean `python`?"), "{err}");
    std::fs::remove_file(p.path().join("pyproject.toml")).expect("rm");
    std::fs::write(&config, &good).expect("write");

    let err = fails(
        &p.cmd(&["prepare", "--database", &db])
            .env("MIGSNAP_CACHE_DIR", "/no/such/parent/cache")
            .output()
            .expect("run"),
        2,
        "does not exist",
    );
    assert!(err.contains("mkdir -p"), "{err}");
    fails(
        &p.cmd(&["prepare", "--database", &db])
            .env("MIGSNAP_SERVER_URL", "mysql://localhost/x")
            .output()
            .expect("run"),
        2,
        "invalid server URL",
    );
}

#[test]
fn django_mistakes() {
    let p = Project::example("baddjango");
    let db = p.db("a");
    let err = fails(
        &p.run(&[
            "--settings",
            "nosuch.settings",
            "prepare",
            "--database",
            &db,
        ]),
        4,
        "the Django settings failed to load: ModuleNotFoundError: no module named 'nosuch' (the settings module is `nosuch.settings`",
    );
    // What the user can act on, not a traceback through migsnap's shim,
    // runpy, Django and importlib.
    assert!(!err.contains("Traceback"), "{err}");
    assert!(!err.contains("migrate failed"), "{err}");
    assert!(err.contains("check the settings module"), "{err}");
    fails(
        &p.run(&["--python", "/no/such/python", "prepare", "--database", &db]),
        2,
        "cannot run the Python interpreter",
    );
    // An interpreter that runs but has no Django (the machine's python3
    // instead of the project's venv): a fresh, empty venv stands in for it.
    let bare = tempfile::tempdir().expect("tempdir");
    let made = std::process::Command::new(python())
        .args(["-m", "venv", "--without-pip"])
        .arg(bare.path())
        .status()
        .expect("make an empty venv");
    assert!(made.success());
    let bare_python = bare.path().join("bin/python");
    let err = fails(
        &p.run(&[
            "--python",
            bare_python.to_str().expect("utf8"),
            "prepare",
            "--database",
            &db,
        ]),
        4,
        "cannot import Django",
    );
    assert!(
        err.contains("MIGSNAP_PYTHON"),
        "the hint names the setting: {err}"
    );
    assert!(
        !err.contains("Django output"),
        "no empty output block: {err}"
    );
    assert!(!database_exists(&db));
}

#[test]
fn server_mistakes() {
    let p = Project::example("badserver");
    let db = p.db("a");
    let unreachable = p
        .cmd(&["prepare", "--database", &db])
        .env(
            "MIGSNAP_SERVER_URL",
            "postgres://nobody@127.0.0.1:1/postgres",
        )
        .output()
        .expect("run");
    let err = fails(
        &unreachable,
        5,
        "cannot connect to PostgreSQL at 127.0.0.1:1",
    );
    assert!(err.contains("is the server running"), "{err}");

    // The test server trusts local connections, so a wrong password cannot
    // be provoked here; a role that does not exist goes through the same
    // authentication error path.
    let role = format!("nosuch_{}", p.name);
    let out = p
        .cmd(&["prepare", "--database", &db])
        .env("MIGSNAP_SERVER_URL", with_user(server_url(), &role))
        .output()
        .expect("run");
    let err = fails(&out, 5, "cannot connect to PostgreSQL");
    assert!(
        err.contains(&format!("role \"{role}\" does not exist")),
        "{err}"
    );

    // A role without CREATEDB can connect but not build.
    let weak = format!("weak_{}", p.name);
    psql(
        "postgres",
        &format!("CREATE ROLE \"{weak}\" LOGIN NOCREATEDB"),
    );
    let out = p
        .cmd(&["prepare", "--database", &db])
        .env("MIGSNAP_SERVER_URL", with_user(server_url(), &weak))
        .output()
        .expect("run");
    psql("postgres", &format!("DROP ROLE \"{weak}\""));
    let err = fails(&out, 5, "cannot create database");
    assert!(err.contains("CREATEDB"), "{err}");
}

/// The test server's URL with another user name.
fn with_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("url");
    let rest = rest.split_once('@').map(|(_, r)| r).unwrap_or(rest);
    format!("{scheme}://{user}@{rest}")
}

#[test]
fn database_names() {
    let p = Project::example("names");
    // Quotes, spaces and non-ASCII are fine: always quoted as identifiers.
    let odd = format!("test_{}_it's \"odd\" ü", p.name);
    let v = p.prepare(&odd);
    assert_eq!(v["database"], odd.as_str());
    assert!(v["url"].as_str().expect("url").contains("%22odd%22"), "{v}");
    let quoted = format!("\"{}\"", odd.replace('"', "\"\""));
    assert_eq!(
        psql(
            "postgres",
            &format!(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database \
                 WHERE datname = $n${odd}$n$"
            )
        ),
        clone_mark(v["key"].as_str().expect("key")),
    );
    psql("postgres", &format!("DROP DATABASE {quoted}"));
    // Over PostgreSQL's 63 bytes: refused before anything happens.
    let long = format!("test_{}", "x".repeat(59));
    fails(
        &p.run(&["prepare", "--database", &long]),
        2,
        "64 bytes long",
    );
    // Reserved and migsnap-internal names.
    for name in ["postgres", "template0", &template_of(&v)] {
        fails(
            &p.run(&["prepare", "--database", name, "--force"]),
            2,
            "refusing to use",
        );
    }
}

#[test]
fn a_target_in_use_is_not_dropped() {
    let p = Project::example("inuse");
    let db = p.db("a");
    p.prepare(&db);
    psql(&db, "CREATE TABLE work_in_progress (x int)");
    // Another session (a test run, psql, an IDE) holds the database open.
    let mut session = std::process::Command::new("psql")
        .args(["-X", "-q", "-d"])
        .arg(db_url(&db))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("psql");
    wait_until(|| {
        psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}'"),
        ) != "0"
    });
    let out = p.run(&["prepare", "--database", &db]);
    drop(session.stdin.take());
    let _ = session.wait();
    let err = fails(&out, 5, &format!("cannot replace database `{db}`"));
    assert!(err.contains("another session is connected"), "{err}");
    assert_eq!(
        psql(
            &db,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'work_in_progress'"
        ),
        "1",
        "nothing was dropped"
    );
}

/// Poll a condition about the outside world (a session appearing); bounded
/// so a broken setup fails instead of hanging.
fn wait_until(cond: impl Fn() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("condition never became true");
}

/// A small tmpfs mounted over a fresh directory; unmounted on drop. None
/// when mounting is not possible (not root, no CAP_SYS_ADMIN).
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    /// A tmpfs root is mode 1777 unless told otherwise, and migsnap refuses
    /// a cache dir others can write to: mount it 0700.
    fn mount(options: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("{options},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[test]
fn an_unusable_cache_dir_is_reported_before_anything_runs() {
    let p = Project::example("cachefile");
    let db = p.db("a");
    let file = p.cache.path().join("not-a-dir");
    std::fs::write(&file, "").expect("write");
    for cmd in ["prepare", "run"] {
        let mut args = vec![cmd, "--database", &db];
        if cmd == "run" {
            args.extend(["--", "true"]);
        }
        // Before Django: its interpreter does not exist.
        let out = p
            .cmd(&args)
            .env("MIGSNAP_CACHE_DIR", &file)
            .env("MIGSNAP_PYTHON", "/no/such/python")
            .output()
            .expect("run");
        fails(&out, 2, "cannot create the cache directory");
    }
}

#[test]
fn read_only_or_full_cache_dir() {
    let p = Project::example("cachefs");
    let db = p.db("a");
    let Some(ro) = Tmpfs::mount("size=64k,ro") else {
        eprintln!("skipped: cannot mount a tmpfs (needs root)");
        return;
    };
    // Checked first: before Django runs (with an interpreter that does
    // not exist, that would be the error).
    let out = p
        .cmd(&["prepare", "--database", &db])
        .env("MIGSNAP_CACHE_DIR", ro.0.path())
        .env("MIGSNAP_PYTHON", "/no/such/python")
        .output()
        .expect("run");
    let err = fails(&out, 2, "cannot write to the cache dir");
    assert!(err.contains("read-only"), "{err}");
    drop(ro);

    let full = Tmpfs::mount("size=64k").expect("mount");
    // Fill it up, leaving room for the lock file (an inode, no data).
    let filler = std::fs::File::create(full.0.path().join("filler")).expect("create");
    let _ = std::io::Write::write_all(&mut &filler, &vec![0u8; 128 * 1024]);
    drop(filler);
    let out = p
        .cmd(&["prepare", "--database", &db])
        .env("MIGSNAP_CACHE_DIR", full.0.path())
        .output()
        .expect("run");
    let err = fails(&out, 2, "cannot write to the cache dir");
    assert!(err.contains("full"), "{err}");
    let key = p.key();
    assert!(
        !database_exists(&build_name(&key)),
        "the build database was dropped"
    );
    assert!(!database_exists(&template_name(&key)));
    assert!(!database_exists(&db));
    let mut left: Vec<String> = std::fs::read_dir(full.0.path())
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "filler" && !n.ends_with(".lock"))
        .collect();
    left.sort();
    assert!(left.is_empty(), "no temp files left: {left:?}");
}

/// A throwaway cluster that checks passwords (the shared test server trusts
/// local connections), run as the `postgres` user; stopped on drop.
struct PasswordCluster {
    dir: tempfile::TempDir,
}

impl PasswordCluster {
    const PORT: &str = "5499";

    fn start() -> Option<PasswordCluster> {
        let user = nix::unistd::User::from_name("postgres").ok()??;
        if !nix::unistd::geteuid().is_root() {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("pw"), "right-password\n").expect("pwfile");
        for p in [dir.path().to_path_buf(), dir.path().join("pw")] {
            std::os::unix::fs::chown(&p, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .expect("chown");
        }
        let as_postgres = |args: &[&str]| {
            let status = std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .args(args)
                .stdout(Stdio::null())
                .status()
                .expect("runuser");
            assert!(status.success(), "{args:?}");
        };
        let d = dir.path().to_str().expect("utf-8 path");
        as_postgres(&[
            "initdb",
            "--no-sync",
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            &format!("--pwfile={d}/pw"),
            "-D",
            &format!("{d}/data"),
        ]);
        as_postgres(&[
            "pg_ctl",
            "start",
            "-w",
            "-D",
            &format!("{d}/data"),
            "-l",
            &format!("{d}/log"),
            "-o",
            &format!(
                "-c listen_addresses='' -c unix_socket_directories='{d}' -c port={}",
                Self::PORT
            ),
        ]);
        Some(PasswordCluster { dir })
    }

    fn url(&self, password: &str) -> String {
        format!(
            "postgresql://postgres:{password}@/postgres?host={}&port={}",
            self.dir.path().display(),
            Self::PORT
        )
    }
}

impl Drop for PasswordCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                "pg_ctl",
                "stop",
                "-m",
                "immediate",
                "-D",
            ])
            .arg(self.dir.path().join("data"))
            .stdout(Stdio::null())
            .status();
    }
}

#[test]
fn wrong_password() {
    let Some(cluster) = PasswordCluster::start() else {
        eprintln!("skipped: needs root and a `postgres` user to run a second cluster");
        return;
    };
    let p = Project::example("password");
    let out = p
        .cmd(&["prepare", "--database", "test_never_made"])
        .env("MIGSNAP_SERVER_URL", cluster.url("wrong-password"))
        .output()
        .expect("run");
    let err = fails(&out, 5, "cannot connect to PostgreSQL");
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(err.contains("hint: the password was refused"), "{err}");
    // A URL with no password: the server is running, so asking whether it
    // is would send the user the wrong way.
    let out = p
        .cmd(&["prepare", "--database", "test_never_made"])
        .env(
            "MIGSNAP_SERVER_URL",
            cluster.url("").replace("postgres:@", "postgres@"),
        )
        .output()
        .expect("run");
    let err = fails(&out, 5, "cannot connect to PostgreSQL");
    assert!(
        err.contains("hint: the server wants a password for `postgres` and the URL has none"),
        "{err}"
    );
    assert!(!err.contains("is the server running"), "{err}");
    // The same cluster with the right password is usable: the test above
    // failed for the password, not for the setup.
    let ok = std::process::Command::new("psql")
        .args(["-X", "-At", "-c", "SELECT 1", "-d"])
        .arg(cluster.url("right-password"))
        .output()
        .expect("psql");
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "1");
}

/// The shim says what kind of failure it saw (settings before Django was
/// set up, a migration, a history that does not fit), and each kind gets
/// its own hint: the same Python exception type means different things in
/// the settings and in a migration.
#[test]
fn each_kind_of_django_failure_gets_its_own_hint() {
    let p = Project::example("failkinds");
    let db = p.db("a");
    // A settings module that raises while it loads.
    let settings = p.path().join("exampleproj/settings.py");
    let original = std::fs::read_to_string(&settings).expect("read settings");
    p.write(
        "exampleproj/settings.py",
        &format!("{original}\nraise ValueError('broken settings')\n"),
    );
    let err = fails(
        &p.run(&["prepare", "--database", &db]),
        4,
        "ValueError: broken settings",
    );
    assert!(err.contains("check the settings module"), "{err}");
    assert!(!err.contains("fix the migration"), "{err}");

    // The same exception type raised by a migration.
    p.write("exampleproj/settings.py", &original);
    p.write(
        "catalog/migrations/0005_raises.py",
        r#"from django.db import migrations


def boom(apps, schema_editor):
    raise ValueError("broken migration")


class Migration(migrations.Migration):
    dependencies = [("catalog", "0004_product_is_active")]
    operations = [migrations.RunPython(boom)]
"#,
    );
    let err = fails(
        &p.run(&["prepare", "--database", &db]),
        4,
        "ValueError: broken migration",
    );
    assert!(err.contains("fix the migration"), "{err}");
    assert!(!err.contains("check the settings module"), "{err}");
    assert!(!err.contains("server ended the connection"), "{err}");
}

/// Settings that import something missing: the settings error, with the
/// traceback of the project's own frames (manage.py, the settings line),
/// none of the shim's or Django's.
#[test]
fn settings_that_fail_to_import_show_only_the_projects_frames() {
    let p = Project::example("badimport");
    let db = p.db("a");
    let settings = p.path().join("exampleproj/settings.py");
    let original = std::fs::read_to_string(&settings).expect("read settings");
    p.write(
        "exampleproj/settings.py",
        &format!("{original}\nimport nosuchdependency  # noqa\n"),
    );
    let err = fails(
        &p.run(&["prepare", "--database", &db]),
        4,
        "the Django settings failed to load: ModuleNotFoundError: No module named 'nosuchdependency'",
    );
    assert!(
        err.contains("exampleproj/settings.py\", line") && err.contains("import nosuchdependency"),
        "the line to fix: {err}"
    );
    for theirs in ["File \"<string>\"", "<frozen", "django/conf", "importlib"] {
        assert!(!err.contains(theirs), "`{theirs}` in the traceback:\n{err}");
    }
}

#[test]
fn a_syntax_error_in_a_migration_names_its_path() {
    let p = Project::example("badsyntax");
    let db = p.db("a");
    p.write(
        "catalog/migrations/0005_broken.py",
        "from django.db import migrations\n\nclass Migration(migrations.Migration:\n    pass\n",
    );
    let err = fails(
        &p.run(&["prepare", "--database", &db]),
        4,
        "migrate failed: SyntaxError: invalid syntax (catalog/migrations/0005_broken.py, line 3)",
    );
    assert!(!err.contains("File \"<string>\""), "{err}");
}

/// `error:` and `hint:` are coloured only where colour is wanted: not on
/// a pipe (as here), with CLICOLOR_FORCE (as on a terminal), never with
/// NO_COLOR.
#[test]
fn prefixes_are_coloured_only_where_colour_is_wanted() {
    let run = |env: &[(&str, &str)]| {
        let mut c = std::process::Command::new(bin());
        c.args(["-C", "/no/such/dir", "key"])
            .env_remove("NO_COLOR")
            .env_remove("CLICOLOR")
            .env_remove("CLICOLOR_FORCE")
            .env("TERM", "xterm-256color");
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().expect("run");
        assert_eq!(out.status.code(), Some(2));
        stderr(&out)
    };
    let plain = run(&[]);
    assert!(
        plain.starts_with("error: ") && !plain.contains('\x1b'),
        "{plain:?}"
    );
    let coloured = run(&[("CLICOLOR_FORCE", "1")]);
    assert!(
        coloured.starts_with("\x1b[1m\x1b[31merror:\x1b[0m ")
            && coloured.contains("\x1b[1m\x1b[36mhint:\x1b[0m "),
        "{coloured:?}"
    );
    let no_color = run(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]);
    assert!(!no_color.contains('\x1b'), "{no_color:?}");
}

#[test]
fn run_without_double_dash_is_told_to_add_it() {
    let p = Project::example("nodashes");
    let err = fails(
        &p.run(&["run", "--database", "test_x", "psql", "-c", "SELECT 1"]),
        2,
        "unexpected argument 'psql'",
    );
    assert!(
        err.contains("hint: put `--` before the command") && err.contains("-- psql …"),
        "{err}"
    );
    let err = fails(&p.run(&["run", "--database", "test_x"]), 2, "required");
    assert!(err.contains("after `--`"), "{err}");
}

#[test]
fn key_outside_a_django_project_is_an_error_unless_allowed() {
    let empty = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let key = |extra: &[&str]| {
        std::process::Command::new(bin())
            .arg("key")
            .args(extra)
            .current_dir(empty.path())
            .env("MIGSNAP_CACHE_DIR", cache.path())
            .output()
            .expect("run")
    };
    let err = fails(&key(&[]), 2, "is not a Django project");
    assert!(
        err.contains("-C DIR") && err.contains("--allow-empty"),
        "{err}"
    );
    let out = key(&["--allow-empty"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim().len(), 64);
}

#[test]
fn help_lists_only_the_global_options_a_command_uses() {
    let help = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .args(args)
            .arg("--help")
            .output()
            .expect("run");
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let key = help(&["key"]);
    for ignored in ["--python", "--server-url", "--verbose", "--remote-url"] {
        assert!(!key.contains(ignored), "key --help lists {ignored}:\n{key}");
    }
    // The cache dir holds what the last build recorded (MIGRATION_MODULES).
    assert!(
        key.contains("--settings") && key.contains("--project-dir") && key.contains("--cache-dir"),
        "{key}"
    );
    let stop = help(&["server", "stop"]);
    for ignored in ["--python", "--settings", "--remote-url"] {
        assert!(
            !stop.contains(ignored),
            "server stop --help lists {ignored}:\n{stop}"
        );
    }
    let signing = help(&["signing-key"]);
    for ignored in [
        "--python",
        "--settings",
        "--server-url",
        "--cache-dir",
        "--remote-url",
    ] {
        assert!(
            !signing.contains(ignored),
            "signing-key --help lists {ignored}:\n{signing}"
        );
    }
    let push = help(&["push"]);
    assert!(
        !push.contains("--server-url") && push.contains("--remote-url"),
        "{push}"
    );
    let prepare = help(&["prepare"]);
    for used in [
        "--python",
        "--server-url",
        "--verbose",
        "--settings",
        "--cache-dir",
    ] {
        assert!(
            prepare.contains(used),
            "prepare --help lacks {used}:\n{prepare}"
        );
    }
    // Hidden, still accepted, before or after the command: scripts pass
    // the same options to every command.
    let p = Project::example("globalopts");
    for args in [
        vec!["-C", ".", "--python", "x", "key"],
        vec!["key", "-C", ".", "--python", "x"],
    ] {
        let out = p.run(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
}

/// Every variable migsnap reads (src/env.rs): a value it cannot use exits 2
/// naming the variable, instead of being taken as unset (issue #21); a path
/// need not be UTF-8 and is taken as the bytes it is.
#[test]
fn bad_environment_values_exit_2_naming_the_variable() {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    let p = Project::example("badenv");
    let raw = |bytes: &[u8]| OsString::from_vec(bytes.to_vec());
    let not_utf8 = raw(b"x\xffy");
    let run = |args: &[&str], env: &[(&str, OsString)]| {
        let mut c = p.cmd(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("run")
    };
    let store = || ("MIGSNAP_REMOTE", OsString::from("s3://bucket/prefix"));
    // Text that is not UTF-8: URLs, names, numbers, flags, the backend's.
    for (name, extra) in [
        ("MIGSNAP_SERVER_URL", None),
        ("MIGSNAP_REMOTE", None),
        ("MIGSNAP_REMOTE_PUSH", Some(store())),
        ("MIGSNAP_POOL", None),
        ("MIGSNAP_SERVER_USER", None),
        ("DJANGO_SETTINGS_MODULE", None),
        ("AWS_SECRET_ACCESS_KEY", Some(store())),
    ] {
        let mut env = vec![(name, not_utf8.clone())];
        env.extend(extra);
        let err = fails(&run(&["key"], &env), 2, name);
        assert!(err.contains("not valid UTF-8"), "{name}: {err}");
    }
    // Numbers: negative, zero, not numbers; checked with or without a store.
    for (name, value) in [
        ("MIGSNAP_SERVER_LOCK_TIMEOUT", "-5"),
        ("MIGSNAP_SERVER_LOCK_TIMEOUT", "0"),
        ("MIGSNAP_SERVER_LOCK_TIMEOUT", "soon"),
        ("MIGSNAP_REMOTE_TIMEOUT", "-5"),
        ("MIGSNAP_REMOTE_TIMEOUT", "0"),
        ("MIGSNAP_REMOTE_TIMEOUT", "NaN"),
        ("MIGSNAP_REMOTE_MIN_RATE", "0"),
        ("MIGSNAP_REMOTE_MIN_RATE", "-1"),
        ("MIGSNAP_SERVER_PORT", "0"),
        ("MIGSNAP_POOL", "-1"),
    ] {
        fails(&run(&["key"], &[(name, value.into())]), 2, name);
        let out = run(&["key"], &[(name, value.into()), store()]);
        fails(&out, 2, name);
    }
    // A PostgreSQL directory that is not there is not "use another one".
    let err = fails(
        &run(&["key"], &[("MIGSNAP_PG_BINDIR", "/no/such/bin".into())]),
        2,
        "MIGSNAP_PG_BINDIR",
    );
    assert!(err.contains("/no/such/bin"), "{err}");

    // Paths are bytes: a cache dir whose name is not UTF-8 is used, not
    // ignored (its parent missing, it is reported, so it was read).
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut dir = tmp.path().as_os_str().to_os_string();
    dir.push("/");
    dir.push(raw(b"caf\xe9"));
    let out = run(&["key"], &[("MIGSNAP_CACHE_DIR", dir.clone())]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut missing = dir.clone();
    missing.push("/deeper/still");
    fails(
        &run(&["key"], &[("MIGSNAP_CACHE_DIR", missing)]),
        2,
        "cache directory",
    );
    // An interpreter's path likewise: this one does not exist, and is the
    // one named (not `python3` found instead).
    let err = fails(
        &run(
            &["prepare", "--database", &p.db("env")],
            &[("MIGSNAP_PYTHON", raw(b"/no/such/py\xe9"))],
        ),
        2,
        "Python interpreter",
    );
    assert!(err.contains("/no/such/py"), "{err}");
}
