//! Deterministic crash points, for the tests that kill migsnap mid-build.
//!
//! `MIGSNAP_CRASH_AT=<point>[:<n>]` makes the n-th call (default: the first)
//! of `point("<point>")` kill the process with SIGKILL, the one signal no
//! cleanup code can intercept: exactly what a power cut, an OOM kill or a CI
//! timeout does. The variable is read once; when it is unset (always, outside
//! the tests) a crash point costs one atomic load.
//!
//! The points, in the order a cold build reaches them:
//!
//! | point | where |
//! |---|---|
//! | `build.locked` | both build locks held, nothing touched yet |
//! | `build.created` | the `migsnap_build_*` database was just created |
//! | `migrate.applied` | Django reported the n-th migration applied |
//! | `restore.batch` | the n-th batch of dump statements ran |
//! | `restore.copy_data` | the n-th chunk of COPY data was sent |
//! | `restore.copy` | the n-th COPY finished |
//! | `dump.chunk` | the n-th chunk of pg_dump output went into the temp file |
//! | `dump.written` | the dump's temp file is complete, not yet renamed |
//! | `dump.renamed` | the dump is in place, its manifest is not |
//! | `manifest.written` | the manifest's temp file is complete, not yet renamed |
//! | `manifest.renamed` | the manifest is in place, the template is not |
//! | `handout.before` / `handout.after` | around the rename of a restored build into the target's place (with a pool, nobody else waiting for the template) |
//! | `promote.before` / `promote.after` | around the transaction that makes the template |
//! | `clone.before` | about to clone the template (the warm path looked without a lock) |
//! | `clone.created` | the template was cloned under the scratch name; the old target is still there |
//! | `clone.commented` | the clone is marked and in place as the target (the old one renamed aside in the same transaction), nothing printed yet |
//! | `maintain.spawn` | `prepare` answered and is about to start the background `maintain` (pause only) |
//! | `remote.before_manifest` | a push uploaded the dump (and signature), not the manifest that commits them |
//!
//! All of it exists only with the `failpoints` cargo feature, which the test
//! suite enables (scripts/test.sh): the release binary has no crash or pause
//! points, and `point` compiles to nothing.

#[cfg(feature = "failpoints")]
mod enabled {
    use crate::env;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;

    struct Target {
        point: String,
        nth: u32,
        seen: AtomicU32,
    }

    fn target() -> Option<&'static Target> {
        static TARGET: OnceLock<Option<Target>> = OnceLock::new();
        TARGET
            .get_or_init(|| {
                let spec = env::var(env::CRASH_AT)?;
                let (point, nth) = match spec.rsplit_once(':') {
                    Some((p, n)) if n.parse::<u32>().is_ok() => {
                        (p.to_string(), n.parse().unwrap_or(1))
                    }
                    _ => (spec, 1),
                };
                Some(Target {
                    point,
                    nth,
                    seen: AtomicU32::new(0),
                })
            })
            .as_ref()
    }

    /// A place where the crash tests may kill the process.
    pub fn point(name: &str) {
        let Some(t) = target() else { return };
        if t.point == name && t.seen.fetch_add(1, Ordering::SeqCst) + 1 == t.nth {
            eprintln!(
                "migsnap: crash point `{name}` reached ({}): killing myself",
                t.nth
            );
            let _ =
                nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
            std::process::abort();
        }
    }

    /// `MIGSNAP_PAUSE_AT=<point>:<file>`: wait at `point` until `file`
    /// exists (at most 60 s), without blocking the runtime.
    pub async fn pause(name: &str) {
        static PAUSE: OnceLock<Option<(String, std::path::PathBuf)>> = OnceLock::new();
        let spec = PAUSE.get_or_init(|| {
            let spec = env::var(env::PAUSE_AT)?;
            let (point, file) = spec.split_once(':')?;
            Some((point.to_string(), file.into()))
        });
        let Some((point, file)) = spec else { return };
        if point != name {
            return;
        }
        eprintln!(
            "migsnap: paused at `{name}` until {} exists",
            file.display()
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !file.exists() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

#[cfg(feature = "failpoints")]
pub use enabled::{pause, point};

/// Without the `failpoints` feature: nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn point(_name: &str) {}

/// Without the `failpoints` feature: nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub async fn pause(_name: &str) {}

/// `MIGSNAP_TEST_UNAUTHENTICATED`: treat every restored snapshot as not
/// authenticated, so that the tests reach the checks an unsigned one gets
/// before signatures decide it (issue #21).
#[cfg(feature = "failpoints")]
pub fn unauthenticated() -> bool {
    crate::env::var(crate::env::TEST_UNAUTHENTICATED).is_some()
}

/// Without the `failpoints` feature: never.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn unauthenticated() -> bool {
    false
}

/// `MIGSNAP_TEST_VERIFY_SKEW`: before `verify-build` compares an
/// accelerated build with stock Django's, add a table to the accelerated
/// one, so the tests see a real difference caught (an honest fastmig bug
/// cannot be had on demand).
#[cfg(feature = "failpoints")]
pub fn verify_skew() -> Option<Skew> {
    crate::env::var(crate::env::TEST_VERIFY_SKEW).map(|v| match v.as_str() {
        "rows" => Skew::Rows,
        _ => Skew::Table,
    })
}

/// Without the `failpoints` feature: never.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn verify_skew() -> Option<Skew> {
    None
}

/// How `verify_skew` makes the build differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skew {
    /// A table more: the schema differs.
    Table,
    /// One value changed: same schema, same row counts.
    Rows,
}
