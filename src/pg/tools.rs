//! Find PostgreSQL client and server programs: MIGSNAP_PG_BINDIR, PATH,
//! `pg_config --bindir`, then /usr/lib/postgresql/*/bin (newest first).

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where to look for PostgreSQL's programs first, as the caller resolved
/// it (MIGSNAP_PG_BINDIR, then PATH): the library reads no environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Programs {
    /// Searched before everything else (`MIGSNAP_PG_BINDIR`).
    pub bindir: Option<PathBuf>,
    /// The directories of PATH, in order.
    pub path: Vec<PathBuf>,
}

impl Programs {
    fn candidate_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self.bindir.iter().cloned().collect();
        dirs.extend(self.path.iter().cloned());
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

    /// The first `name` found, optionally of at least major version
    /// `min_major` (pg_dump refuses servers newer than itself). Prefers an
    /// exact major match.
    pub fn find(&self, name: &str, min_major: Option<u32>) -> Result<PathBuf> {
        let found: Vec<PathBuf> = self
            .candidate_dirs()
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
        choose(name, &with_versions, min)
    }
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

/// Among programs found (in search order) with their major versions, the
/// one to use for a server of major version `min`.
fn choose(name: &str, found: &[(PathBuf, u32)], min: u32) -> Result<PathBuf> {
    if let Some((p, _)) = found.iter().find(|(_, v)| *v == min) {
        return Ok(p.clone());
    }
    if let Some((p, _)) = found
        .iter()
        .filter(|(_, v)| *v > min)
        .min_by_key(|(_, v)| *v)
    {
        return Ok(p.clone());
    }
    match found.iter().max_by_key(|(_, v)| *v) {
        Some((p, v)) => Err(ToolError::TooOld {
            program: name.to_string(),
            path: p.clone(),
            version: *v,
            server: min,
        }
        .into()),
        None => Err(missing(name)),
    }
}

fn missing(name: &str) -> Error {
    ToolError::Missing {
        program: name.to_string(),
    }
    .into()
}

/// A PostgreSQL program migsnap needs and cannot use, as data (the binary
/// says how to fix it).
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("cannot find the PostgreSQL program `{program}`")]
    Missing { program: String },
    /// Every one found is older than the server (major versions).
    #[error(
        "the newest {program} found, `{}`, is PostgreSQL {version} but the server is {server}: {program} cannot handle a newer server",
        .path.display()
    )]
    TooOld {
        program: String,
        path: PathBuf,
        version: u32,
        server: u32,
    },
    /// Found but it would not start (not executable, a broken binary).
    #[error("cannot run `{}`", .path.display())]
    Run {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl crate::error::Typed for ToolError {
    fn kind(&self) -> crate::error::Kind {
        crate::error::Kind::Usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An end-to-end test would have to hide /usr/lib/postgresql/*/bin from
    // the search, so the choice itself is tested here.
    #[test]
    fn pg_dump_must_be_at_least_the_server_version() {
        let found = vec![
            (PathBuf::from("/a/pg_dump"), 17),
            (PathBuf::from("/b/pg_dump"), 15),
            (PathBuf::from("/c/pg_dump"), 16),
        ];
        let pick = |min| choose("pg_dump", &found, min).map_err(|e| e.message);
        assert_eq!(
            pick(15),
            Ok(PathBuf::from("/b/pg_dump")),
            "exact major first"
        );
        assert_eq!(
            pick(14),
            Ok(PathBuf::from("/b/pg_dump")),
            "else the oldest newer"
        );
        let err = choose("pg_dump", &found, 18).expect_err("all too old");
        assert_eq!(err.kind, crate::error::Kind::Usage);
        assert!(
            err.message.contains("PostgreSQL 17 but the server is 18"),
            "{}",
            err.message
        );
        assert!(matches!(
            err.find::<ToolError>(),
            Some(ToolError::TooOld {
                version: 17,
                server: 18,
                ..
            })
        ));
        assert!(choose("pg_dump", &[], 15).is_err());
    }
}
