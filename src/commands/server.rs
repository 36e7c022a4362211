//! `migsnap server start|stop|status|url|ls`: the embedded PostgreSQL server
//! (`ls` and `stop --everywhere`: every one this user has, one per cache
//! dir; `stop --all`: this project's settings' own).

use crate::cli::ServerAction;
use crate::settings::Settings;
use migsnap::context::ServerChoice;
use migsnap::embedded::{self, Embedded, Status};
use migsnap::error::{blocking, exit, Error, Result};
use migsnap::report::Events;
use std::path::PathBuf;

/// One row of `server ls` / `server stop --all`.
#[derive(serde::Serialize)]
struct Listed {
    #[serde(flatten)]
    status: Status,
    /// The server this project's settings use.
    current: bool,
    /// `stop --all` stopped it.
    stopped: bool,
}

pub async fn run(settings: &Settings, action: &ServerAction, ui: &Events) -> Result<u8> {
    match action {
        ServerAction::Ls(a) => return list(settings, Stop::None, a.json, ui).await,
        ServerAction::Stop(a) if a.everywhere => {
            return list(settings, Stop::Everywhere, a.json, ui).await
        }
        ServerAction::Stop(a) if a.all => return list(settings, Stop::Own, a.json, ui).await,
        _ => {}
    }
    let ServerChoice::Embedded(server) = &settings.ctx.server else {
        return Err(Error::usage(
            "`migsnap server` manages the embedded server, but a server URL is configured",
        )
        .hint(
            "unset MIGSNAP_SERVER_URL (or server-url in the config) to use the embedded server",
        ));
    };
    let server = server.clone();
    let json = match action {
        ServerAction::Start(a)
        | ServerAction::Status(a)
        | ServerAction::Url(a)
        | ServerAction::Ls(a) => a.json,
        ServerAction::Stop(a) => a.json,
    };
    match action {
        ServerAction::Start(_) | ServerAction::Url(_) => {
            let (s, u) = (server.clone(), ui.clone());
            blocking("starting the server", move || s.start(&u)).await??;
        }
        ServerAction::Stop(_) => {
            let s = server.clone();
            let stopped = blocking("stopping the server", move || s.stop()).await??;
            ui.info(if stopped {
                "stopped the embedded server"
            } else {
                "the embedded server was not running"
            });
        }
        ServerAction::Status(_) | ServerAction::Ls(_) => {}
    }
    let status = blocking("reading the server status", move || server.status()).await?;
    if json {
        super::print_json(&status)?;
    } else if matches!(action, ServerAction::Status(_)) {
        super::print_stdout(&format!(
            "{}\ndir: {}\nurl: {}\n",
            if status.running { "running" } else { "stopped" },
            status.dir.display(),
            status.url
        ));
    } else if !matches!(action, ServerAction::Stop(_)) {
        super::print_stdout(&format!("{}\n", status.url));
    }
    // `status` exits 0 either way: it reports, it does not check.
    Ok(exit::OK)
}

/// Which of the listed servers `list` stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// `server ls`: none.
    None,
    /// `server stop --all`: this project's settings' own (its server dir,
    /// and `<cache dir>/server` where earlier versions put it). Another CI
    /// job of the same user on the machine has another cache dir, so
    /// another server dir: its server, in use, is left alone.
    Own,
    /// `server stop --everywhere`: every one of this user's.
    Everywhere,
}

/// `server ls`, and `server stop --all` / `--everywhere`: the default
/// server dirs, this project's configured one, and `<cache dir>/server`
/// where earlier versions put it.
async fn list(settings: &Settings, stop: Stop, json: bool, ui: &Events) -> Result<u8> {
    let current = match &settings.ctx.server {
        ServerChoice::Embedded(s) => Some(s.dir.clone()),
        ServerChoice::Url(_) => None,
    };
    let mut own: Vec<PathBuf> = current.iter().cloned().collect();
    own.push(settings.ctx.cache.dir.join("server"));
    let also = own.clone();
    let host = settings.host.clone();
    let u = ui.clone();
    let rows = blocking("listing the embedded servers", move || {
        let mut rows = Vec::new();
        let mut failed = None;
        let mut others = 0;
        for dir in embedded::known_server_dirs(&also) {
            let server = Embedded::found(&dir, host.clone());
            let mut stopped = false;
            let mine = own.contains(&dir);
            if stop == Stop::Own && !mine {
                // Not listed: `stop --all --json` reports what it acted on.
                others += usize::from(server.probably_running());
                continue;
            }
            if stop != Stop::None {
                match server.stop() {
                    Ok(s) => stopped = s,
                    Err(e) => {
                        u.warn(format!("{}: {}", dir.display(), e.message));
                        failed = Some(e);
                    }
                }
            }
            rows.push(Listed {
                current: current.as_ref() == Some(&dir),
                status: server.status(),
                stopped,
            });
        }
        (rows, failed, others)
    })
    .await?;
    let (rows, failed, others) = rows;
    if json {
        super::print_json(&serde_json::json!({ "servers": rows }))?;
    } else if stop != Stop::None {
        let n = rows.iter().filter(|r| r.stopped).count();
        ui.info(format!("stopped {n} embedded server(s)"));
    } else {
        let mut text = String::new();
        if rows.is_empty() {
            text.push_str("(no embedded servers)\n");
        }
        for r in &rows {
            text.push_str(&format!(
                "{}{}  {}  {}\n",
                if r.current { "*" } else { " " },
                if r.status.running {
                    "running"
                } else {
                    "stopped"
                },
                r.status.dir.display(),
                r.status.url
            ));
        }
        super::print_stdout(&text);
    }
    if others > 0 {
        ui.info(format!(
            "left {others} other embedded server(s) of yours running (other cache dirs: other jobs' or projects'); `migsnap server stop --everywhere` stops them too"
        ));
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(exit::OK),
    }
}
