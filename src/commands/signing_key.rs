//! `migsnap signing-key`: the public key that signs snapshots here, as the
//! line to paste into `trusted-keys`; `signing-key generate PATH` makes a
//! private key for a CI job's `signing-key-file`.

use crate::cli::{SigningKeyAction, SigningKeyArgs};
use crate::settings::Settings;
use migsnap::error::{exit, Error, Result};
use migsnap::report::Events;
use migsnap::sign;

#[derive(serde::Serialize)]
struct KeyOutput {
    /// 16 hex of the public key's sha256, as signatures name it.
    id: String,
    /// `ed25519:<base64>`: the `trusted-keys` entry.
    public_key: String,
    /// The private key file.
    file: std::path::PathBuf,
    /// Made by this command (the per-user key, on first use).
    created: bool,
}

pub fn run(settings: &Settings, args: &SigningKeyArgs, ui: &Events) -> Result<u8> {
    if let Some(SigningKeyAction::Generate { path }) = &args.action {
        let public = sign::generate(path)?;
        ui.info(format!(
            "wrote a new signing key to {} (key {}); trust it with the line on stdout in `trusted-keys`",
            path.display(),
            public.id()
        ));
        super::print_stdout(&format!("{public}\n"));
        return Ok(exit::OK);
    }
    let signer = settings
        .ctx
        .cache
        .trust
        .signer
        .as_ref()
        .ok_or_else(|| Error::internal("no signing key is configured"))?;
    let file = signer.source().path();
    let existed = file.exists();
    let public = sign::public_of(signer.pair()?.as_ref());
    if args.json {
        super::print_json(&KeyOutput {
            id: public.id(),
            public_key: public.to_string(),
            file,
            created: !existed,
        })?;
    } else {
        if !existed {
            ui.info(format!("made a new signing key in {}", file.display()));
        }
        super::print_stdout(&format!("{public}\n"));
    }
    Ok(exit::OK)
}
