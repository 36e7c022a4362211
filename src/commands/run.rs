//! `migsnap run -- CMD ARGS…`: prepare the database, then become CMD with
//! the connection in its environment.
//!
//! The process is replaced (exec) rather than supervised: CMD gets the
//! terminal's signals directly, and its exit status is ours with nothing in
//! between to translate or lose it.

use super::prepare::Prepared;
use crate::cli::RunArgs;
use migsnap::error::Error;
use migsnap::report::Events;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The variable most frameworks (dj-database-url, Rails, Prisma…) read.
pub const DATABASE_URL: &str = "DATABASE_URL";

/// Replace this process with the command; returns only if exec failed.
pub fn exec(prepared: &Prepared, args: &RunArgs, ui: &Events) -> Error {
    ui.info(prepared.summary());
    let Some((program, rest)) = args.command.split_first() else {
        return Error::usage("no command given").hint("migsnap run --database test_app -- pytest");
    };
    let mut cmd = Command::new(program);
    // Every inherited PG* goes first: a stale PGSERVICE, PGHOSTADDR or
    // PGOPTIONS would otherwise send CMD somewhere else than the database
    // just prepared.
    migsnap::pg::scrub_pg_env(&mut cmd)
        .args(rest)
        .envs(prepared.conn.libpq_env(&prepared.database))
        .env(DATABASE_URL, prepared.conn.url(&prepared.database));
    let e = cmd.exec();
    Error::usage(format!("cannot run `{}`", program.to_string_lossy()))
        .source(e)
        .hint(format!(
            "the database `{}` is ready; check that the command exists and is on PATH",
            prepared.database
        ))
}
