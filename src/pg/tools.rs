//! Find PostgreSQL client and server programs: MIGSNAP_PG_BINDIR, PATH,
//! `pg_config --bindir`, then /usr/lib/postgresql/*/bin (newest first).

use crate::env;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = env::var(env::PG_BINDIR) {
        dirs.push(PathBuf::from(d));
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            dirs.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
        }
    }
    let mut versioned: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versioned.sort_by_key(|p| std::cmp::Reverse(major_of_dir(p)));
    dirs.extend(versioned);
    dirs
}

fn major_of_dir(bin: &Path) -> u32 {
    bin.parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `pg_dump (PostgreSQL) 15.18 (Debian …)` -> 15.
pub fn version_major(program: &Path) -> Option<u32> {
    let out = Command::new(program).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let ver = text.split(") ").nth(1)?.split_whitespace().next()?;
    ver.split(['.', 'b', 'r']).next()?.parse().ok()
}

/// The first `name` found, optionally of at least major version `min_major`
/// (pg_dump refuses servers newer than itself). Prefers an exact major match.
pub fn find(name: &str, min_major: Option<u32>) -> Result<PathBuf> {
    let found: Vec<PathBuf> = candidate_dirs()
        .into_iter()
        .map(|d| d.join(name))
        .filter(|p| p.is_file())
        .collect();
    let Some(min) = min_major else {
        return found.into_iter().next().ok_or_else(|| missing(name));
    };
    let with_versions: Vec<(PathBuf, u32)> = found
        .into_iter()
        .filter_map(|p| version_major(&p).map(|v| (p, v)))
        .collect();
    if let Some((p, _)) = with_versions.iter().find(|(_, v)| *v == min) {
        return Ok(p.clone());
    }
    if let Some((p, _)) = with_versions
        .iter()
        .filter(|(_, v)| *v > min)
        .min_by_key(|(_, v)| *v)
    {
        return Ok(p.clone());
    }
    match with_versions.first() {
        Some((p, v)) => Err(Error::usage(format!(
            "`{}` is PostgreSQL {v} but the server is {min}: pg_dump cannot dump a newer server",
            p.display()
        ))
        .hint(format!(
            "install the PostgreSQL {min} client tools, or set MIGSNAP_PG_BINDIR to their bin directory"
        ))),
        None => Err(missing(name)),
    }
}

fn missing(name: &str) -> Error {
    Error::usage(format!("cannot find the PostgreSQL program `{name}`"))
        .hint("install PostgreSQL (e.g. `apt-get install postgresql`) or set MIGSNAP_PG_BINDIR to its bin directory")
}
