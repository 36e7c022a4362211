//! `migsnap schema`: the current key's end-state schema
//! (`migsnap::schema`), as SQL-like text or one versioned JSON document.

use crate::cli::SchemaArgs;
use crate::settings::Settings;
use migsnap::error::{exit, Result};
use migsnap::key::Key;
use migsnap::report::Events;
use migsnap::schema::{Schema, SCHEMA_VERSION};

#[derive(serde::Serialize)]
struct Output<'a> {
    schema_version: u32,
    key: &'a Key,
    server_version_num: u32,
    #[serde(flatten)]
    schema: &'a Schema,
}

pub async fn run(settings: &Settings, args: &SchemaArgs, ui: &Events) -> Result<u8> {
    let described = migsnap::schema::current(&settings.session(), ui).await?;
    if args.json {
        super::print_json(&Output {
            schema_version: SCHEMA_VERSION,
            key: &described.key,
            server_version_num: described.server_version_num,
            schema: &described.schema,
        })?;
    } else {
        ui.info(format!(
            "the schema of snapshot {} ({} table(s))",
            described.key.short(),
            described.schema.tables.len()
        ));
        super::print_stdout(&migsnap::schema::to_sql(&described.schema));
    }
    Ok(exit::OK)
}
