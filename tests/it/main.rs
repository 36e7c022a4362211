//! migsnap's integration tests: one test binary, one module per area.
//!
//! One binary rather than one per file (issue #23): each test binary links
//! the library, tokio, tokio-postgres and object_store again, about 2.3 s a
//! binary on 2 cores, and cargo runs the binaries one after another, each
//! ending with a tail where one test runs alone. The shared helpers are in
//! `common`. A test that acts on the whole server (`gc` sweeps every
//! leftover on it; some count what is on it) takes its turn on a server of
//! its own: `common::alone`.
//!
//! One area: `cargo test --features failpoints --test it -- pool::`.

mod common;

mod accelerator;
mod architecture;
mod bad_input;
mod check;
mod ci;
mod inputs;
mod insight;
mod interrupted_build;
mod multidb;
mod output;
mod pg_majors;
mod pool;
mod prepare;
mod prepare_at;
mod pytest_plugin;
mod reliability;
mod remote_hostile;
mod remote_prepare;
mod remote_store;
mod run_ls_gc;
mod schema_diff;
mod server;
mod trace;
mod trust_cache;
mod trust_privilege;
mod trust_server;
mod wheel;
