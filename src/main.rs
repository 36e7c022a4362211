//! The `migsnap` binary: parse, run, map the outcome to an exit code.

mod cli;
mod commands;
mod settings;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse_args();
    match commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprint!("{}", e.report(migsnap::ui::stderr_color()));
            ExitCode::from(e.exit_code())
        }
    }
}
