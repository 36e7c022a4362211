//! `migsnap drop`: drop one database migsnap made, refuse any other (the
//! pytest plugin's and the Django runner's teardown).

use crate::cli::DropArgs;
use crate::settings::Settings;
use migsnap::error::{exit, Result};
use migsnap::report::Events;

pub async fn run(settings: &Settings, args: &DropArgs, ui: &Events) -> Result<u8> {
    let done = migsnap::drop::drop_database(&settings.session(), &args.database, ui).await?;
    if args.json {
        super::print_json(&done)?;
    } else if let Some(was) = done.was {
        ui.info(format!("dropped {was} `{}`", done.database));
    } else {
        ui.info(format!("there is no database `{}`", done.database));
    }
    Ok(exit::OK)
}
