//! migsnap: Django + PostgreSQL test databases in a fraction of a second.
//!
//! The migration files are hashed into a key (`fingerprint`); for each key
//! the server holds a template database and the cache dir a compressed dump
//! (`store`). `prepare` clones the template, or restores the dump, or builds
//! on an older snapshot, or migrates from empty (`engine`, `django`), then
//! re-snapshots. `main.rs` only parses arguments and maps errors to exit
//! codes; everything else lives here.

pub mod check;
pub mod cli;
pub mod commands;
pub mod depends;
pub mod django;
pub mod embedded;
pub mod engine;
pub mod env;
pub mod error;
pub mod failpoint;
pub mod fingerprint;
pub mod names;
pub mod pg;
pub mod settings;
pub mod store;
pub mod ui;
