//! `migsnap maintain`: the work `prepare` leaves for after its answer (drop
//! the targets it set aside, refill the clone pool), and how `prepare`
//! starts it: a detached process, so neither the user's shell nor pytest
//! waits for it.

use crate::cli::MaintainArgs;
use crate::settings::{Settings, POOL_HINT_FILE};
use migsnap::context::ServerChoice;
use migsnap::error::{exit, Result};
use migsnap::key::Key;
use migsnap::report::Events;
use std::io::Write;
use std::process::{Command, Stdio};

pub async fn run(settings: &Settings, args: &MaintainArgs, ui: &Events) -> Result<u8> {
    if args.background {
        // Its stderr is `maintain.log`: one line per run says which run
        // wrote what follows.
        ui.info(format!(
            "background maintenance (pid {}) started {}",
            std::process::id(),
            humantime::format_rfc3339_millis(std::time::SystemTime::now())
        ));
    }
    let done =
        migsnap::pool::maintain(&settings.session(), settings.ctx.pool, !args.background, ui)
            .await?;
    if args.json {
        super::print_json(&done)?;
    } else if done.server_stopped {
        ui.info("the embedded server is not running: nothing to maintain");
    } else {
        let template = if done.template_made {
            "made the template from the cached dump; "
        } else {
            ""
        };
        ui.info(format!(
            "{template}dropped {} replaced database(s) and {} stale pool member(s); made {}; {} ready",
            done.trash_dropped, done.pool_dropped, done.pool_made, done.pool_ready
        ));
        if let Some(why) = done.not_refilled {
            ui.info(format!("the pool was not refilled: {why}"));
        }
    }
    Ok(exit::OK)
}

/// Start `migsnap maintain` for the same project, detached: its own process
/// group (a Ctrl-C meant for the terminal's job does not reach it), no
/// inherited stdio (a caller reading our stdout to EOF does not wait for
/// it). A failure to start is a warning: nothing depends on it but speed,
/// and the next prepare or `gc` does the same work.
pub fn spawn(settings: &Settings, ui: &Events) {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = command(settings, &exe);
    // What it says (what it did, warnings and errors) goes to a
    // log in the cache dir, where `migsnap maintain` run by hand, a bug
    // report or a test can read why a pool stayed short. Without one (the
    // cache dir refused), nowhere, as before.
    if let Some(log) = settings.ctx.store().ok().and_then(|s| open_log(s.dir())) {
        cmd.stderr(log);
    }
    if let Err(e) = cmd.spawn() {
        ui.warn(format!("cannot start the background maintenance: {e}"));
    }
}

/// The background maintenance's log (`MAINTAIN_LOG` in the cache dir),
/// opened for appending: private, never through a link planted there, never
/// waiting on a FIFO put in its place (O_NONBLOCK: no reader, no log), and
/// started afresh once it passes `MAINTAIN_LOG_MAX` so it stays small.
fn open_log(cache_dir: &std::path::Path) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = cache_dir.join(MAINTAIN_LOG);
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.len() > MAINTAIN_LOG_MAX {
        file.set_len(0).ok()?;
    }
    Some(file)
}

/// The background maintenance's log, in the cache dir.
pub const MAINTAIN_LOG: &str = "maintain.log";

/// Past this size the log starts again: it holds recent runs only.
const MAINTAIN_LOG_MAX: u64 = 256 << 10;

/// The background `maintain`'s command line: every setting this run
/// resolved from a flag is passed explicitly, since the child never saw
/// our flags (it re-reads only the environment and the config file, which
/// it shares with us). A `--remote-url` was once lost here, so the child
/// fell back to the config's store, or none.
fn command(settings: &Settings, exe: &std::path::Path) -> Command {
    use std::os::unix::process::CommandExt;
    let ctx = &settings.ctx;
    let mut cmd = Command::new(exe);
    // Not `--quiet`: what it did, and why a pool stayed short, is worth a
    // line in its log (stderr is no terminal there: plain lines).
    cmd.arg("--project-dir")
        .arg(ctx.project_dir())
        .arg("--cache-dir")
        .arg(&ctx.cache.dir)
        .arg("--python")
        .arg(&ctx.django.python);
    // In the environment, not the arguments: a URL may carry a password,
    // and any local user can read another's command line, not its
    // environment.
    match &ctx.server {
        ServerChoice::Url(url) => cmd.env(migsnap::env::SERVER_URL, url),
        ServerChoice::Embedded(_) => cmd.env_remove(migsnap::env::SERVER_URL),
    };
    // The store as this run resolved it (`off`: none, whatever the config
    // says), in the environment like the server's URL.
    let remote = ctx.remote.as_ref().map(|r| r.url.to_string());
    cmd.env(migsnap::env::REMOTE, remote.as_deref().unwrap_or("off"));
    if let Some(module) = &ctx.django.settings_module {
        cmd.arg("--settings").arg(module);
    }
    cmd.arg("maintain")
        .arg("--background")
        .arg("--alias")
        .arg(&ctx.django.alias)
        .env(migsnap::env::POOL, ctx.pool.to_string())
        .env_remove(migsnap::env::CRASH_AT)
        .env_remove(migsnap::env::PAUSE_AT)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    cmd
}

/// Record the pool size the pytest plugin asked for (its worker count), for
/// runs that configure none; `pool` in the config and MIGSNAP_POOL win.
pub fn remember_pool_size(settings: &Settings, key: &Key, n: usize, ui: &Events) {
    let written = settings.ctx.store().and_then(|store| {
        // Named as a temp file of the current key, so a crash mid-write
        // leaves something gc knows how to sweep.
        let mut tmp = store.temp_file(key)?;
        tmp.write_all(format!("{n}\n").as_bytes())
            .map_err(|e| migsnap::store::cache_write_error(store.dir(), e))?;
        store.persist(tmp, &store.dir().join(POOL_HINT_FILE))
    });
    if let Err(e) = written {
        ui.warn(format!("cannot record the pool size: {}", e.message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Overrides;
    use clap::Parser;
    use std::ffi::OsStr;

    fn env_of<'a>(cmd: &'a Command, name: &str) -> Option<Option<&'a OsStr>> {
        cmd.get_envs()
            .find(|(k, _)| *k == OsStr::new(name))
            .map(|(_, v)| v)
    }

    /// What `prepare` resolved from its flags reaches the background
    /// `maintain`, which never saw them: the store above all (it restores
    /// the template from it when the cached dump is gone).
    #[test]
    fn the_background_maintain_gets_the_settings_the_flags_gave() {
        let project = tempfile::tempdir().expect("tempdir");
        let cache = tempfile::tempdir().expect("tempdir");
        let overrides = Overrides {
            project_dir: Some(project.path().to_path_buf()),
            cache_dir: Some(cache.path().to_path_buf()),
            remote: Some("file:///tmp/migsnap-store".into()),
            settings: Some("mysite.settings_test".into()),
            alias: Some("other".into()),
            ..Default::default()
        };
        let settings = Settings::resolve_in(&overrides, &migsnap::env::Environment::default())
            .expect("resolve");
        let cmd = command(&settings, std::path::Path::new("migsnap"));
        assert_eq!(
            env_of(&cmd, migsnap::env::REMOTE),
            Some(Some(OsStr::new("file:///tmp/migsnap-store")))
        );
        let args = std::iter::once(OsStr::new("migsnap")).chain(cmd.get_args());
        let cli = crate::cli::Cli::try_parse_from(args).expect("the child's command line parses");
        let mut child = cli.global.overrides();
        child.alias = cli.command.alias().map(str::to_string);
        assert_eq!(
            child.project_dir.as_deref(),
            Some(settings.ctx.project_dir())
        );
        assert_eq!(child.cache_dir.as_deref(), Some(cache.path()));
        assert_eq!(child.settings.as_deref(), Some("mysite.settings_test"));
        assert_eq!(child.alias.as_deref(), Some("other"));

        // No store for this run: none for the child either, whatever the
        // shared config file says.
        let none = Overrides {
            remote: None,
            ..overrides
        };
        let settings =
            Settings::resolve_in(&none, &migsnap::env::Environment::default()).expect("resolve");
        let cmd = command(&settings, std::path::Path::new("migsnap"));
        assert_eq!(
            env_of(&cmd, migsnap::env::REMOTE),
            Some(Some(OsStr::new("off")))
        );
    }
}
