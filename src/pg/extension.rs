//! An extension a snapshot needs, as the build's database had it: recorded
//! in the manifest at build time, created by migsnap itself with fixed text
//! (never with a dump's own statement) before a restore, and the only
//! extensions a dump may name (issue #21).
//!
//! `CREATE EXTENSION` runs the extension's install script as the superuser,
//! and some extensions hand out more than one database: `dblink` and
//! `postgres_fdw` open connections as the server, `file_fdw` reads the
//! server's files, `adminpack` writes them. So a snapshot's list of
//! extensions is input like its dump: only the names in `trusted-extensions`
//! are created, and a snapshot needing any other is refused.

use super::{db_error, quote_ident, quote_literal};
use crate::error::Result;
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

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
    pub fn new(name: &str, schema: &str, version: &str) -> Extension {
        Extension {
            name: name.into(),
            schema: schema.into(),
            version: version.into(),
        }
    }
}

/// `trusted-extensions` unless the config says otherwise: what Django's
/// `django.contrib.postgres.operations` creates (btree_gin, btree_gist,
/// citext, hstore, pg_trgm, unaccent, bloom, pgcrypto) and the usual
/// contrib and third-party ones that only add types, operators, index
/// methods and functions over the database's own data (`plpgsql` comes with
/// every database). None of them reaches outside the database: no network
/// (dblink, postgres_fdw), no server files (file_fdw, adminpack), no views of
/// server internals (pageinspect, pg_buffercache, pg_stat_statements), no
/// untrusted languages (plpython3u, plperlu).
pub const DEFAULT_TRUSTED: &[&str] = &[
    "plpgsql",
    "btree_gin",
    "btree_gist",
    "citext",
    "hstore",
    "pg_trgm",
    "unaccent",
    "bloom",
    "pgcrypto",
    "uuid-ossp",
    "fuzzystrmatch",
    "intarray",
    "ltree",
    "cube",
    "earthdistance",
    "tablefunc",
    "isn",
    "seg",
    "postgis",
    "vector",
];

/// Schemas every database has: an extension living there needs none made.
const BUILT_IN_SCHEMAS: &[&str] = &["public", "pg_catalog"];

/// The extensions of `client`'s database that pg_dump dumps, in the order
/// they were created (oid order), so that one an extension requires comes
/// before it. Like pg_dump, it leaves out those initdb made (an oid below
/// FirstNormalObjectId, 16384: `plpgsql`), which every new database has.
pub async fn installed(client: &Client, db: &str) -> Result<Vec<Extension>> {
    let rows = client
        .query(
            "SELECT e.extname::text, n.nspname::text, e.extversion \
             FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace \
             WHERE e.oid >= 16384 ORDER BY e.oid",
            &[],
        )
        .await
        .map_err(|e| db_error(format!("cannot list the extensions of `{db}`"), e))?;
    Ok(rows
        .iter()
        .map(|r| Extension {
            name: r.get(0),
            schema: r.get(1),
            version: r.get(2),
        })
        .collect())
}

/// The extensions of `wanted` that `trusted` does not name.
pub fn untrusted<'a>(wanted: &'a [Extension], trusted: &[String]) -> Vec<&'a Extension> {
    wanted
        .iter()
        .filter(|e| !is_trusted(&e.name, trusted))
        .collect()
}

/// Whether `trusted` (`trusted-extensions`) names the extension `name`.
pub fn is_trusted(name: &str, trusted: &[String]) -> bool {
    trusted.iter().any(|t| t == name)
}

/// The schemas migsnap makes before a restore (owned by the restore role,
/// as if the dump had made them) because an extension lives there: every
/// extension schema but `public` and `pg_catalog`, once each, in order.
/// The dump's own `CREATE SCHEMA` for these is skipped (it would fail).
pub fn pre_created_schemas(extensions: &[Extension]) -> Vec<String> {
    let mut schemas: Vec<String> = Vec::new();
    for e in extensions {
        if !BUILT_IN_SCHEMAS.contains(&e.schema.as_str()) && !schemas.contains(&e.schema) {
            schemas.push(e.schema.clone());
        }
    }
    schemas
}

/// The fixed statements that create `extensions` (and the schemas they
/// live in, owned by `schema_owner`) in an empty database: nothing in them
/// comes from a dump but quoted names and a quoted version.
pub fn create_statements(extensions: &[Extension], schema_owner: &str) -> Vec<String> {
    let schemas = pre_created_schemas(extensions).into_iter().map(|s| {
        format!(
            "CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}",
            quote_ident(&s),
            quote_ident(schema_owner)
        )
    });
    let extensions = extensions.iter().map(|e| {
        format!(
            "CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA {} VERSION {}",
            quote_ident(&e.name),
            quote_ident(&e.schema),
            quote_literal(&e.version)
        )
    });
    schemas.chain(extensions).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(name: &str, schema: &str) -> Extension {
        Extension::new(name, schema, "1.0")
    }

    #[test]
    fn only_schemas_beyond_the_built_in_ones_are_made_once_each() {
        let exts = [
            ext("plpgsql", "pg_catalog"),
            ext("pg_trgm", "public"),
            ext("hstore", "extensions"),
            ext("citext", "extensions"),
            ext("cube", "other \"one\""),
        ];
        assert_eq!(
            pre_created_schemas(&exts),
            vec!["extensions".to_string(), "other \"one\"".to_string()]
        );
    }

    #[test]
    fn creation_text_quotes_every_name_and_the_version() {
        let exts = [Extension {
            name: "uuid-ossp\"; DROP".into(),
            schema: "ext'".into(),
            version: "1.1'; x".into(),
        }];
        assert_eq!(
            create_statements(&exts, "migsnap_restore_ab"),
            vec![
                "CREATE SCHEMA IF NOT EXISTS \"ext'\" AUTHORIZATION \"migsnap_restore_ab\""
                    .to_string(),
                "CREATE EXTENSION IF NOT EXISTS \"uuid-ossp\"\"; DROP\" WITH SCHEMA \"ext'\" VERSION '1.1''; x'"
                    .to_string(),
            ]
        );
    }

    #[test]
    fn the_default_list_holds_nothing_that_reaches_outside_the_database() {
        let trusted: Vec<String> = DEFAULT_TRUSTED.iter().map(|s| s.to_string()).collect();
        for outside in [
            "dblink",
            "file_fdw",
            "postgres_fdw",
            "adminpack",
            "pageinspect",
            "pg_buffercache",
            "pg_stat_statements",
            "plpython3u",
            "lo",
        ] {
            let wanted = [ext(outside, "public")];
            assert_eq!(untrusted(&wanted, &trusted).len(), 1, "{outside}");
        }
        let wanted = [ext("pg_trgm", "public"), ext("btree_gin", "public")];
        assert!(untrusted(&wanted, &trusted).is_empty());
    }
}
