//! `migsnap server start|stop|status|url`: the embedded PostgreSQL server.

use crate::cli::ServerAction;
use crate::error::{exit, Error, Result};
use crate::settings::{ServerChoice, Settings};
use crate::ui::Ui;

pub async fn run(settings: &Settings, action: &ServerAction, ui: &Ui) -> Result<u8> {
    let ServerChoice::Embedded(server) = &settings.server else {
        return Err(Error::usage(
            "`migsnap server` manages the embedded server, but a server URL is configured",
        )
        .hint(
            "unset MIGSNAP_SERVER_URL (or server-url in the config) to use the embedded server",
        ));
    };
    let server = server.clone();
    let blocking = |f: Box<dyn FnOnce() -> Result<()> + Send>| async move {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| Error::internal("server task failed").source(e))?
    };
    let json = match action {
        ServerAction::Start(a)
        | ServerAction::Stop(a)
        | ServerAction::Status(a)
        | ServerAction::Url(a) => a.json,
    };
    match action {
        ServerAction::Start(_) | ServerAction::Url(_) => {
            let (s, u) = (server.clone(), *ui);
            blocking(Box::new(move || s.start(&u))).await?;
        }
        ServerAction::Stop(_) => {
            let s = server.clone();
            let stopped = tokio::task::spawn_blocking(move || s.stop())
                .await
                .map_err(|e| Error::internal("server task failed").source(e))??;
            ui.info(if stopped {
                "stopped the embedded server"
            } else {
                "the embedded server was not running"
            });
        }
        ServerAction::Status(_) => {}
    }
    let status = tokio::task::spawn_blocking(move || server.status())
        .await
        .map_err(|e| Error::internal("server task failed").source(e))?;
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
