//! The wheel that scripts/build_wheel.sh makes (stripped: the binary and
//! the pytest plugin in one file), installed into a fresh venv
//! with no Rust anywhere on PATH, runs the plugin end to end against the
//! example project: what a CI job that installs a published wheel does.
//!
//! scripts/test.sh builds the wheel (from the debug profile: the packaging
//! is what is tested) and passes it as MIGSNAP_TEST_WHEEL; without it, this
//! test builds the release wheel itself (minutes).

use crate::common::*;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn wheel() -> PathBuf {
    if let Some(w) = std::env::var_os("MIGSNAP_TEST_WHEEL") {
        return w.into();
    }
    let out = Command::new("bash")
        .arg(repo().join("scripts/build_wheel.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/build_wheel.sh");
    assert!(out.status.success(), "scripts/build_wheel.sh failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// PATH without the directories that hold cargo or rustc.
fn path_without_rust() -> OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let kept: Vec<PathBuf> = std::env::split_paths(&path)
        .filter(|d| !d.join("cargo").exists() && !d.join("rustc").exists())
        .collect();
    std::env::join_paths(kept).expect("join PATH")
}

fn check(out: Output, what: &str) -> String {
    let text = format!(
        "{what}: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

/// A command that sees only PATH (no Rust on it) and what the test adds:
/// no MIGSNAP_BIN, no PYTHONPATH, no CARGO_* or RUSTUP_* variables.
fn bare(program: &Path, path: &OsString) -> Command {
    let mut c = Command::new(program);
    c.env_clear().env("PATH", path);
    if let Some(tmp) = std::env::var_os("TMPDIR") {
        c.env("TMPDIR", tmp);
    }
    c
}

fn site_packages(python: &Path) -> String {
    let out = Command::new(python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('purelib'))",
        ])
        .output()
        .expect("run python");
    check(out.clone(), "site-packages");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_wheel_installs_without_rust_and_runs_the_plugin_end_to_end() {
    let wheel = wheel();
    let file = wheel
        .file_name()
        .expect("wheel file name")
        .to_string_lossy()
        .into_owned();
    assert!(
        file.starts_with("migsnap-") && file.contains("-py3-none-manylinux_"),
        "one wheel for every Python 3, tagged manylinux: {file}"
    );
    let path = path_without_rust();
    let probe = bare(Path::new("/bin/sh"), &path)
        .args(["-c", "command -v cargo || command -v rustc"])
        .output()
        .expect("sh");
    assert!(!probe.status.success(), "Rust still on PATH: {probe:?}");

    // A fresh venv; pip installs the wheel from the file alone: no index,
    // no dependencies, nothing to compile.
    let dir = tempfile::tempdir().expect("tempdir");
    let venv = dir.path().join("venv");
    check(
        Command::new(python())
            .args(["-m", "venv"])
            .arg(&venv)
            .output()
            .expect("venv"),
        "python -m venv",
    );
    let vpython = venv.join("bin/python");
    check(
        bare(&vpython, &path)
            .args([
                "-m",
                "pip",
                "install",
                "--no-index",
                "--no-deps",
                "--disable-pip-version-check",
                "--quiet",
            ])
            .arg(&wheel)
            .output()
            .expect("pip install"),
        "pip install the wheel",
    );
    let installed = venv.join("bin/migsnap");
    let found = check(
        bare(&vpython, &path)
            .args(["-c", "import migsnap; print(migsnap.find_binary())"])
            .output()
            .expect("find_binary"),
        "find_binary",
    );
    assert!(
        found.contains(&format!("stdout\n{}\n", installed.display())),
        "the plugin runs the binary from the wheel: {found}"
    );
    // The suite's own dependencies (Django, pytest, pytest-django) come from
    // the project's venv through a .pth file: the wheel needs none of them
    // to install, and fetching them is pip's business, not ours.
    std::fs::write(
        Path::new(&site_packages(&vpython)).join("migsnap_suite_deps.pth"),
        site_packages(&python()) + "\n",
    )
    .expect("write .pth");

    // The plugin loads through the wheel's pytest11 entry point (no -p),
    // enabled by the flag.
    let p = Project::example("wheel");
    copy_dir(&repo().join("tests/pytest_suite"), p.path());
    p.write(
        "pyproject.toml",
        "[tool.pytest.ini_options]\nDJANGO_SETTINGS_MODULE = \"exampleproj.settings\"\n",
    );
    let db = format!("test_{}", p.name);
    p.track(&db);
    p.track(&template_name(&p.key_with_settings("exampleproj.settings")));
    let records = tempfile::tempdir().expect("tempdir");
    let text = check(
        bare(&vpython, &path)
            .args(["-m", "pytest", "--migsnap", "-p", "no:cacheprovider"])
            .current_dir(p.path())
            .env("MIGSNAP_SERVER_URL", server_url())
            .env("MIGSNAP_CACHE_DIR", p.cache.path())
            .env("XDG_DATA_HOME", p.data_home.path())
            .env("MIGSNAP_SUITE_RECORDS", records.path())
            .envs(libpq_env(&p.name))
            .output()
            .expect("pytest"),
        "pytest --migsnap",
    );
    assert!(
        text.contains(&format!("migsnap: {db} from cold in ")),
        "{text}"
    );
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(records.path().join("master.json")).expect("the suite's record"),
    )
    .expect("json");
    assert_eq!(record["database"], db.as_str(), "{record}");
    assert_eq!(record["applied"], serde_json::json!([]), "{record}");
}
