//! migsnap: Django + PostgreSQL test databases in a fraction of a second.
//!
//! The migration files are hashed into a key (`fingerprint`); for each key
//! the server holds a template database and the cache dir a compressed dump
//! (`store`). `prepare` clones the template, or restores the dump, or builds
//! on an older snapshot, or migrates from empty (`engine`, `django`), then
//! re-snapshots. What a build read beyond the key is recorded and checked
//! on every warm run (`depends`).
//!
//! The binary (`main.rs`, with `cli` and `commands` beside it) parses
//! arguments, resolves settings, calls into this library and renders the
//! results; the library never sees the command line. The module graph has
//! no cycles and keeps its layers apart (`tests/it/architecture.rs` checks
//! both): `hash`, `files`, `env` and `error` are leaves; the key
//! (`fingerprint`, `depends`) and the cache dir (`store`) know no server;
//! `pg` knows neither Django nor the store nor the settings.

pub mod aliases;
pub mod check;
pub mod context;
pub mod depends;
pub mod diff;
pub mod django;
pub mod drop;
pub mod embedded;
pub mod engine;
pub mod env;
pub mod error;
pub mod failpoint;
pub mod files;
pub mod fingerprint;
pub mod hash;
pub mod key;
pub mod keyfiles;
pub mod lint;
pub mod listing;
pub mod names;
pub mod pg;
pub mod plan;
pub mod pool;
pub mod prepare;
pub mod remote;
pub mod report;
pub mod schema;
pub mod session;
pub mod shared;
pub mod sign;
pub mod statcache;
pub mod store;
pub mod trace;
pub mod units;
pub mod walkrecord;
