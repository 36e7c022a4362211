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
    let done =
        migsnap::pool::maintain(&settings.ctx, settings.ctx.pool, !args.background, ui).await?;
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
    }
    Ok(exit::OK)
}

/// Start `migsnap maintain` for the same project, detached: its own process
/// group (a Ctrl-C meant for the terminal's job does not reach it), no
/// inherited stdio (a caller reading our stdout to EOF does not wait for
/// it), and every setting passed explicitly rather than re-read from
/// flags it never saw (secrets through the environment only). A failure to start is a warning: nothing depends on
/// it but speed, and the next prepare or `gc` does the same work.
pub fn spawn(settings: &Settings, ui: &Events) {
    use std::os::unix::process::CommandExt;
    let ctx = &settings.ctx;
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = Command::new(exe);
    cmd.arg("--quiet")
        .arg("--project-dir")
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
    if let Err(e) = cmd.spawn() {
        ui.warn(format!("cannot start the background maintenance: {e}"));
    }
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
