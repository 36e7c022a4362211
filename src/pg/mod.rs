//! Talking to PostgreSQL: connection parameters, admin operations on
//! databases, pg_dump to the cache and restore from it.

pub mod admin;
pub mod dump;
pub mod dump_reader;
pub mod extension;
pub mod lock;
pub mod mark;
pub mod restore;
pub mod tools;

use crate::error::{Error, Kind, Result};
use std::time::Duration;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

/// Where the server URL comes from, as the connection hints name it.
/// Which URL a connection was made from: the binary's hints name the
/// setting that holds it, the library does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlOrigin {
    /// migsnap's own server (the embedded one's, or the configured URL).
    Server,
    /// `diff --against`: a database migsnap only looks at.
    Against,
    /// `lint --stats-from`: a database whose table sizes are read.
    StatsFrom,
}

/// Why connecting failed, as far as the client can tell: what the binary's
/// hint is chosen by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    /// 28P01.
    PasswordRefused,
    /// 28000: no such role, or pg_hba.conf rejects it.
    RoleRefused,
    /// 3D000: the database in the URL's path does not exist.
    NoDatabase,
    /// The server asked for a password the URL does not carry; the
    /// client gives up before the server can say 28P01.
    PasswordMissing,
    /// Nothing answered (refused, no such socket, unreachable, timed out).
    NoAnswer,
    Other,
}

/// What went wrong talking to PostgreSQL, as data (the binary says how to
/// fix each: `commands::hints`).
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// `why` is the URL parser's words.
    #[error("invalid server URL: {why}")]
    BadUrl { why: String },
    #[error("sslmode=require is not supported yet")]
    SslRequire,
    /// `at` is `host:port` or the socket path.
    #[error("cannot connect to PostgreSQL at {at} (database `{database}`, user `{user}`)")]
    Connect {
        at: String,
        database: String,
        user: String,
        url: UrlOrigin,
        why: ConnectFailure,
        source: tokio_postgres::Error,
    },
    /// A pooler dropped the `options` startup parameter.
    #[error("the connection to `{database}` is not read only, so migsnap will not use it")]
    NotReadOnly { database: String, url: UrlOrigin },
    /// A statement failed: `what` says what it was for; `database` names
    /// the database it was about, when that is the point (dropping or
    /// renaming one that someone else is connected to).
    #[error("{what}")]
    Query {
        what: String,
        database: Option<String>,
        source: tokio_postgres::Error,
    },
    /// Asked to force-drop a database that is not a build database: a bug,
    /// caught before it could end someone's sessions.
    #[error("refusing to force-drop `{name}`: not a build database")]
    NotABuild { name: String },
    /// A database just made was gone when it was to be renamed into place.
    #[error("the new database `{name}` vanished before it was put in place")]
    Vanished { name: String },
    /// The version query answered without a row (a proxy in between).
    #[error("the server answered the version query with no row")]
    NoVersion,
}

impl crate::error::Typed for PgError {
    fn kind(&self) -> Kind {
        match self {
            PgError::BadUrl { .. } | PgError::SslRequire => Kind::Usage,
            PgError::NotABuild { .. } | PgError::Vanished { .. } => Kind::Internal,
            _ => Kind::Server,
        }
    }
}

/// Where and as whom to connect; the database varies per call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// Host name, IP, or (starting with `/`) a Unix socket directory.
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    /// Database used for administration (CREATE/DROP DATABASE).
    pub admin_db: String,
}

impl ConnInfo {
    pub fn from_url(url: &str) -> Result<ConnInfo> {
        let bad = |why: &str| -> Error {
            PgError::BadUrl {
                why: why.to_string(),
            }
            .into()
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(bad("it must start with postgres:// or postgresql://"));
        }
        let cfg: tokio_postgres::Config = url.parse().map_err(|e| bad(&format!("{e}")))?;
        if cfg.get_ssl_mode() == SslMode::Require {
            return Err(PgError::SslRequire.into());
        }
        let host = match cfg.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.to_string_lossy().into_owned(),
            None => "localhost".to_string(),
        };
        let user = match cfg.get_user() {
            Some(u) => u.to_string(),
            None => current_user(),
        };
        let password = cfg
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        Ok(ConnInfo {
            host,
            port: cfg.get_ports().first().copied().unwrap_or(5432),
            admin_db: cfg.get_dbname().unwrap_or("postgres").to_string(),
            user,
            password,
        })
    }

    pub fn config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(dbname)
            .application_name("migsnap")
            .connect_timeout(Duration::from_secs(10));
        if let Some(p) = &self.password {
            c.password(p);
        }
        c
    }

    pub async fn connect(&self, dbname: &str) -> Result<Client> {
        self.connect_with(self.config(dbname), dbname, UrlOrigin::Server)
            .await
    }

    /// A connection to `dbname` in which every transaction is read only
    /// (`default_transaction_read_only=on`), for a database migsnap only
    /// looks at (`diff --against`). `origin` says where the URL came from,
    /// for the hints.
    pub async fn connect_read_only(&self, dbname: &str, origin: UrlOrigin) -> Result<Client> {
        let mut config = self.config(dbname);
        config.options("-c default_transaction_read_only=on");
        let client = self.connect_with(config, dbname, origin).await?;
        // A connection pooler may drop the startup options: make sure
        // before anything runs.
        let row = client
            .query_one("SHOW transaction_read_only", &[])
            .await
            .map_err(|e| db_error(format!("cannot query `{dbname}`"), e))?;
        if row.get::<_, String>(0) != "on" {
            return Err(PgError::NotReadOnly {
                database: dbname.to_string(),
                url: origin,
            }
            .into());
        }
        Ok(client)
    }

    async fn connect_with(
        &self,
        config: tokio_postgres::Config,
        dbname: &str,
        origin: UrlOrigin,
    ) -> Result<Client> {
        let (client, conn) = config
            .connect(NoTls)
            .await
            .map_err(|e| self.connect_error(dbname, e, origin))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    fn connect_error(&self, dbname: &str, e: tokio_postgres::Error, origin: UrlOrigin) -> Error {
        let why = match e.code() {
            Some(c) if *c == SqlState::INVALID_PASSWORD => ConnectFailure::PasswordRefused,
            Some(c) if *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => {
                ConnectFailure::RoleRefused
            }
            Some(c) if *c == SqlState::INVALID_CATALOG_NAME => ConnectFailure::NoDatabase,
            _ if self.password.is_none()
                && chain(&e).any(|c| c.to_string() == "password missing") =>
            {
                ConnectFailure::PasswordMissing
            }
            _ if refused(&e) => ConnectFailure::NoAnswer,
            _ => ConnectFailure::Other,
        };
        PgError::Connect {
            at: self.display_host(),
            database: dbname.to_string(),
            user: self.user.clone(),
            url: origin,
            why,
            source: e,
        }
        .into()
    }

    pub fn display_host(&self) -> String {
        if self.host.starts_with('/') {
            format!("socket {}/.s.PGSQL.{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// A URL that libpq, psycopg and tokio-postgres all accept.
    pub fn url(&self, dbname: &str) -> String {
        let auth = match &self.password {
            Some(p) => format!("{}:{}@", pct(&self.user), pct(p)),
            None => format!("{}@", pct(&self.user)),
        };
        if self.host.starts_with('/') {
            format!(
                "postgresql://{auth}/{}?host={}&port={}",
                pct(dbname),
                pct(&self.host),
                self.port
            )
        } else {
            let host = if self.host.contains(':') {
                format!("[{}]", self.host)
            } else {
                self.host.clone()
            };
            format!("postgresql://{auth}{host}:{}/{}", self.port, pct(dbname))
        }
    }

    /// `url` without the password: for reports and messages.
    pub fn shown_url(&self, dbname: &str) -> String {
        ConnInfo {
            password: None,
            ..self.clone()
        }
        .url(dbname)
    }

    /// libpq environment for child processes (pg_dump, psql, Django). Use
    /// it after `scrub_pg_env`: alone it would leave a stale PGSERVICE or
    /// PGOPTIONS of the user's free to redirect the child.
    pub fn libpq_env(&self, dbname: &str) -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("PGHOST", self.host.clone()),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", self.user.clone()),
            ("PGDATABASE", dbname.to_string()),
        ];
        if let Some(p) = &self.password {
            v.push(("PGPASSWORD", p.clone()));
        }
        v
    }
}

impl ConnInfo {
    /// The full environment for a child that connects (pg_dump, Django),
    /// after `scrub_pg_env`: the connection, and no service or password
    /// file but ours (none).
    pub fn child_env(&self, dbname: &str) -> Vec<(&'static str, String)> {
        let mut v = self.libpq_env(dbname);
        for name in ["PGSERVICEFILE", "PGSYSCONFDIR", "PGPASSFILE"] {
            v.push((name, NOWHERE.to_string()));
        }
        v
    }

    /// A complete libpq connection string for `dbname` (`--dbname=…`), so
    /// nothing is left for the environment to fill in. The password stays
    /// out of it (and out of `ps`): `child_env` carries it.
    pub fn conninfo(&self, dbname: &str) -> String {
        let q = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
        format!(
            "host={} port={} user={} dbname={}",
            q(&self.host),
            self.port,
            q(&self.user),
            q(dbname)
        )
    }
}

/// A path that cannot exist (`/dev/null` is no directory): libpq reading a
/// service or password file from here finds nothing, silently.
pub const NOWHERE: &str = "/dev/null/migsnap-none";

/// Remove every `PG*` variable from a child's environment. libpq reads
/// dozens of them (PGSERVICE, PGSERVICEFILE, PGHOSTADDR, PGOPTIONS,
/// PGSSLMODE, PGPASSFILE, PGTARGETSESSIONATTRS, …), and initdb and pg_ctl
/// more (PGDATA, PGCTLTIMEOUT): inherited, one of them made pg_dump dump
/// another database into the cache (issue #10). Callers then set exactly
/// what they mean, e.g. `ConnInfo::libpq_env`.
pub fn scrub_pg_env(cmd: &mut std::process::Command) -> &mut std::process::Command {
    for (name, _) in std::env::vars_os() {
        if name.as_encoded_bytes().starts_with(b"PG") {
            cmd.env_remove(name);
        }
    }
    cmd
}

fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "postgres".to_string())
}

/// Percent-encode everything but unreserved characters (RFC 3986).
fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `"name"` with embedded quotes doubled: the only safe way to put a
/// database name into SQL that does not take parameters (CREATE DATABASE).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` for statements that take no parameters (COMMENT ON).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Turn a server error into a user-facing one; the binary gives the hint
/// where its SQLSTATE is a known misconfiguration.
pub fn db_error(what: impl Into<String>, e: tokio_postgres::Error) -> Error {
    PgError::Query {
        what: what.into(),
        database: None,
        source: e,
    }
    .into()
}

/// `db_error` about database `name` itself (dropping, renaming it), so the
/// hint for a busy one can name it.
pub fn db_error_on(what: impl Into<String>, name: &str, e: tokio_postgres::Error) -> Error {
    PgError::Query {
        what: what.into(),
        database: Some(name.to_string()),
        source: e,
    }
    .into()
}

/// Whether connecting failed because nothing answered (refused, no such
/// socket, unreachable, timed out): the server is not there at all.
fn refused(e: &tokio_postgres::Error) -> bool {
    use std::io::ErrorKind as K;
    chain(e)
        .find_map(|c| c.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                K::ConnectionRefused
                    | K::NotFound
                    | K::HostUnreachable
                    | K::NetworkUnreachable
                    | K::TimedOut
                    | K::AddrNotAvailable
            )
        })
}

/// `e`'s causes, outermost first.
fn chain(e: &tokio_postgres::Error) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(std::error::Error::source(e), |c| c.source())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_round_trips_through_tokio_postgres() {
        for host in ["/tmp/some dir", "localhost", "::1"] {
            let info = ConnInfo {
                host: host.into(),
                port: 5433,
                user: "u s".into(),
                password: Some("p@ss:/w".into()),
                admin_db: "postgres".into(),
            };
            let parsed = ConnInfo::from_url(&info.url("postgres")).expect("parses");
            assert_eq!(parsed, info, "{}", info.url("postgres"));
        }
    }

    #[test]
    fn shown_urls_carry_no_password() {
        let info = ConnInfo::from_url("postgres://app:s3cret@db.internal:5433/app").expect("url");
        assert_eq!(
            info.shown_url("app"),
            "postgresql://app@db.internal:5433/app"
        );
        assert!(info.url("app").contains("s3cret"));
    }

    #[test]
    fn conninfo_quotes_every_value() {
        let info = ConnInfo {
            host: "/tmp/it's here".into(),
            port: 5433,
            user: r"a\b".into(),
            password: None,
            admin_db: "postgres".into(),
        };
        assert_eq!(
            info.conninfo("db x"),
            r"host='/tmp/it\'s here' port=5433 user='a\\b' dbname='db x'"
        );
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_ident(r#"a"b"#), r#""a""b""#);
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
