//! `migsnap server start|stop|status|url`: the embedded PostgreSQL server.

use crate::cli::ServerAction;
use crate::settings::Settings;
use migsnap::context::ServerChoice;
use migsnap::error::{blocking, exit, Error, Result};
use migsnap::ui::Ui;

pub async fn run(settings: &Settings, action: &ServerAction, ui: &Ui) -> Result<u8> {
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
        | ServerAction::Stop(a)
        | ServerAction::Status(a)
        | ServerAction::Url(a) => a.json,
    };
    match action {
        ServerAction::Start(_) | ServerAction::Url(_) => {
            let (s, u) = (server.clone(), *ui);
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
        ServerAction::Status(_) => {}
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
