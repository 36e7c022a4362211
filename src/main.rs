//! The `migsnap` binary: parse, run, map the outcome to an exit code.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = migsnap::cli::Cli::parse();
    match migsnap::commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprint!("{}", e.report());
            ExitCode::from(e.exit_code())
        }
    }
}
