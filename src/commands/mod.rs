//! One module per subcommand; `run` dispatches and owns the runtime.

mod key;
mod prepare;
mod server;

use crate::cli::{Cli, Command};
use crate::error::{exit, Error, Kind, Result};
use crate::settings::Settings;
use crate::ui::Ui;
use std::io::Write;

/// Run the parsed command line; returns the exit code on success.
pub fn run(cli: Cli) -> Result<u8> {
    let settings = Settings::resolve(&cli.global)?;
    let ui = Ui::new(settings.quiet);
    // `key` needs no runtime at all: keep it a pure, instant function of files.
    if let Command::Key(args) = &cli.command {
        return key::run(&settings, args);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal("cannot start the async runtime").source(e))?;
    runtime.block_on(async {
        // Ctrl-C drops the command's future: the Python child is killed
        // (kill_on_drop) and connections close (releasing advisory locks).
        // Then the unfinished build database is dropped, under both locks
        // taken again (else the next run removes it under its own).
        tokio::select! {
            res = dispatch(&cli.command, &settings, &ui) => res,
            _ = tokio::signal::ctrl_c() => {
                ui.clear_progress();
                // Bounded: a second Ctrl-C is swallowed by the handler, so
                // a hung server must not keep us here.
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    crate::engine::clean_up_interrupted(&ui),
                )
                .await;
                Err(Error::new(Kind::Interrupted, "interrupted")
                    .hint("nothing was saved; run the command again"))
                .map(|()| exit::OK)
            }
        }
    })
}

async fn dispatch(command: &Command, settings: &Settings, ui: &Ui) -> Result<u8> {
    match command {
        Command::Prepare(args) => prepare::run(settings, args, ui).await,
        Command::Server { action } => server::run(settings, action, ui).await,
        Command::Key(args) => key::run(settings, args),
    }
}

/// Write to stdout; a closed pipe (`migsnap key | head -c1`) is not an error.
pub fn print_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

pub fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::internal("cannot serialise the result").source(e))?;
    print_stdout(&format!("{text}\n"));
    Ok(())
}
