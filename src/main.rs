//! The `migsnap` binary: parse, run, map the outcome to an exit code.

mod cli;
mod commands;
mod render;
mod settings;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse_args();
    match commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprint!("{}", e.report(render::stderr_color()));
            ExitCode::from(e.exit_code())
        }
    }
}
