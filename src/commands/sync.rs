//! `migsnap push` and `migsnap pull`: move one snapshot between the cache
//! dir and the shared snapshot store.

use crate::cli::SyncArgs;
use crate::settings::Settings;
use migsnap::error::{exit, Error, Result};
use migsnap::key::Key;
use migsnap::remote::Pushed;
use migsnap::report::Events;
use migsnap::shared::{self, Pulled};
use migsnap::units;
use std::time::Instant;

#[derive(serde::Serialize)]
struct SyncOutput<'a> {
    key: &'a Key,
    remote: String,
    /// push: `uploaded` or `already_there`; pull: `downloaded` or
    /// `already_cached`.
    result: &'static str,
    /// The dump's size when it was moved, else null.
    bytes: Option<u64>,
    elapsed_ms: u64,
}

pub async fn push(settings: &Settings, args: &SyncArgs, ui: &Events) -> Result<u8> {
    let key = key_of(settings, args).await?;
    let started = Instant::now();
    let remote = shared::configured(&settings.ctx)?;
    ui.info(format!(
        "pushing snapshot {} to {}…",
        key.short(),
        remote.url()
    ));
    let (result, bytes) = match shared::push(&settings.ctx, &key).await? {
        Pushed::Uploaded { bytes } => ("uploaded", Some(bytes)),
        Pushed::AlreadyThere => ("already_there", None),
    };
    report(args, &key, remote.url(), result, bytes, started)
}

pub async fn pull(settings: &Settings, args: &SyncArgs, ui: &Events) -> Result<u8> {
    let key = key_of(settings, args).await?;
    let started = Instant::now();
    let remote = shared::configured(&settings.ctx)?;
    let (result, bytes) = match shared::pull(&settings.ctx, &key, ui).await? {
        Pulled::Downloaded { bytes } => ("downloaded", Some(bytes)),
        Pulled::AlreadyCached => ("already_cached", None),
    };
    report(args, &key, remote.url(), result, bytes, started)
}

fn report(
    args: &SyncArgs,
    key: &Key,
    remote: &str,
    result: &'static str,
    bytes: Option<u64>,
    started: Instant,
) -> Result<u8> {
    let out = SyncOutput {
        key,
        remote: remote.to_string(),
        result,
        bytes,
        elapsed_ms: started.elapsed().as_millis() as u64,
    };
    if args.json {
        super::print_json(&out)?;
    } else {
        let size = bytes
            .map(|b| format!(" ({})", units::size(b)))
            .unwrap_or_default();
        super::print_stdout(&format!(
            "{} {}{size} in {}\n",
            key.short(),
            result.replace('_', " "),
            units::duration(started.elapsed())
        ));
    }
    Ok(exit::OK)
}

/// `--key`, else the current migration files' key.
async fn key_of(settings: &Settings, args: &SyncArgs) -> Result<Key> {
    match &args.key {
        Some(k) => Key::parse(k).map_err(|e| {
            Error::usage(e.to_string()).hint("pass the full key, as `migsnap key` prints it")
        }),
        None => Ok(settings.session().fingerprint().await?.key.clone()),
    }
}
