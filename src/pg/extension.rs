//! An extension a snapshot needs, as the build's database had it: recorded
//! in the manifest at build time, created by migsnap itself with fixed text
//! (never with a dump's own statement) before a restore, and the only
//! extensions a dump may name (issue #21).

use serde::{Deserialize, Serialize};

/// One row of `pg_extension` of a built database.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Extension {
    pub name: String,
    /// The schema its objects live in (`pg_extension.extnamespace`).
    pub schema: String,
    /// `pg_extension.extversion`.
    pub version: String,
}

impl Extension {
    /// The schema migsnap creates before the restore for this extension's
    /// objects, when it is not one that every database has: the dump's own
    /// `CREATE SCHEMA` for it is then skipped (see `restore::allow`).
    pub fn pre_created_schema(&self) -> Option<&str> {
        match self.schema.as_str() {
            "public" | "pg_catalog" => None,
            s => Some(s),
        }
    }
}
