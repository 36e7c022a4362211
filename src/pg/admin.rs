//! Database-level operations on the admin connection: inspect, create,
//! clone, drop, and promote a build database to a template.
//!
//! Naming is the ownership rule (the shapes are in `crate::names`): migsnap
//! drops only databases it named, and marks what it makes with a comment
//! (`super::mark`). Beyond
//! those it drops only a target the user named that looks like a test
//! database (see `target_check`).

use super::mark::Mark;
use super::{db_error, quote_ident, quote_literal, ConnInfo, PgError};
use crate::error::{Error, Result};
use crate::key::{Key, LockId};
use crate::names::DbName;
use std::sync::Arc;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

pub use super::lock::AdvisoryLock;

pub use crate::names::PREFIX as TEMPLATE_PREFIX;
/// PostgreSQL truncates identifiers at NAMEDATALEN-1 bytes.
pub const MAX_NAME_BYTES: usize = 63;

pub fn template_name(key: &Key) -> String {
    DbName::template(key).to_string()
}

pub fn build_name(key: &Key) -> String {
    DbName::build(key).to_string()
}

/// Where `prepare` clones before renaming to the target (`DbName::Clone`).
pub fn clone_scratch_name(target: &str) -> String {
    DbName::clone_for(target).to_string()
}

/// How `CREATE DATABASE … TEMPLATE` copies files (PostgreSQL 15+).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CloneStrategy {
    /// FILE_COPY on the embedded server, the server's own default (WAL_LOG
    /// on 15+) elsewhere; see `Ctx::clone_strategy`.
    #[default]
    Default,
    WalLog,
    FileCopy,
}

const DB_INFO_COLUMNS: &str =
    "datname, datistemplate, datallowconn, coalesce(shobj_description(oid, 'pg_database'), ''), oid, \
     datdba = (SELECT oid FROM pg_roles WHERE rolname = current_user)";

#[derive(Debug, Clone)]
pub struct DbInfo {
    pub name: String,
    pub is_template: bool,
    pub allow_conn: bool,
    pub comment: String,
    /// Tells two databases apart that had the same name at different times
    /// (a template rebuilt under its key gets a new one).
    pub oid: u32,
    /// Owned by the role migsnap connects as (everything migsnap creates is).
    pub owned: bool,
}

impl DbInfo {
    /// From a row of `DB_INFO_COLUMNS`.
    fn from_row(r: &tokio_postgres::Row) -> DbInfo {
        DbInfo {
            name: r.get(0),
            is_template: r.get(1),
            allow_conn: r.get(2),
            comment: r.get(3),
            oid: r.get(4),
            owned: r.get(5),
        }
    }

    /// What its comment says it is to migsnap (`None`: no mark of ours).
    pub fn mark(&self) -> Option<Mark> {
        Mark::parse(&self.comment)
    }

    /// The full key a finished template was made for (from its mark).
    pub fn template_key(&self) -> Option<Key> {
        match self.mark() {
            Some(Mark::Template { key, .. }) if self.is_template => Some(key),
            _ => None,
        }
    }

    /// Carries a mark of migsnap's, of this version's formats or an older
    /// one's (see `mark::by_migsnap`).
    pub fn made_by_migsnap(&self) -> bool {
        super::mark::by_migsnap(&self.comment)
    }
}

/// What the database under a key's template name is, for the key and the
/// inputs its snapshot records now: every "is the template ready?" asks
/// this (`template_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateState {
    /// No database has the name.
    Missing,
    /// One migsnap did not make (no mark of its own): never replaced.
    NotOurs,
    /// migsnap's, but not the finished template of this key built from these
    /// inputs (another key with the same short form, other inputs, none
    /// recorded now, an older format, another role's): built again.
    Stale,
    /// The finished template for this key and these inputs. `foreign`:
    /// restored from a snapshot no trusted key signed.
    Ready { foreign: bool },
}

impl TemplateState {
    /// Whether it may be cloned: ready, and not made from a foreign
    /// snapshot unless such snapshots are trusted now (`trust-unsigned`
    /// turned off again must not leave the foreign schema served).
    pub fn serves(self, trust_unsigned: bool) -> bool {
        matches!(self, TemplateState::Ready { foreign } if trust_unsigned || !foreign)
    }

    /// Whether an incremental build may start from it: never from a
    /// foreign snapshot's template (issue #21), whatever is trusted.
    pub fn builds_on(self) -> bool {
        self == TemplateState::Ready { foreign: false }
    }

    pub fn is_ready(self) -> bool {
        matches!(self, TemplateState::Ready { .. })
    }
}

/// What `found` (the database under `key`'s template name, if any) is for
/// `key` built from `inputs` (the digest of its recorded `Depends`; `None`:
/// no snapshot records any now, so no template can be current).
///
/// Ready takes the mark, the template flags and the owner together. The
/// rename that creates the name is the last step of a transaction that also
/// sets the mark and the flags (`promote`), so all agree or the name does not
/// exist. It must also belong to the role migsnap connects as, as everything
/// migsnap makes does: on a shared server another role with CREATEDB could
/// otherwise plant a template under the name with a copied mark.
pub fn template_state(found: Option<&DbInfo>, key: &Key, inputs: Option<&str>) -> TemplateState {
    let Some(info) = found else {
        return TemplateState::Missing;
    };
    if !info.made_by_migsnap() {
        return TemplateState::NotOurs;
    }
    let finished = info.is_template && !info.allow_conn && info.owned;
    match (info.mark(), inputs) {
        (
            Some(Mark::Template {
                key: k,
                inputs: i,
                foreign,
            }),
            Some(inputs),
        ) if finished && k == *key && i == inputs => TemplateState::Ready { foreign },
        _ => TemplateState::Stale,
    }
}

pub struct Admin {
    /// Shared with the `AdvisoryLock`s taken on it, which release
    /// themselves on this connection when dropped.
    pub client: Arc<Client>,
    pub conn: ConnInfo,
    pub version_num: u32,
    /// The server process of `client`: an interrupted run names it to stop
    /// what it left running (see `settle`).
    pub pid: i32,
}

impl Admin {
    pub async fn connect(conn: &ConnInfo) -> Result<Admin> {
        let client = conn.connect(&conn.admin_db).await?;
        // `query_typed`: one round trip, not a prepare first (every
        // command connects; a pool hand-out is a few milliseconds).
        let rows = client
            .query_typed(
                "SELECT current_setting('server_version_num')::int4, pg_backend_pid()",
                &[],
            )
            .await
            .map_err(|e| db_error("cannot read the server version", e))?;
        let Some(row) = rows.first() else {
            return Err(PgError::NoVersion.into());
        };
        let version_num: i32 = row.get(0);
        Ok(Admin {
            client: Arc::new(client),
            conn: conn.clone(),
            version_num: version_num.max(0) as u32,
            pid: row.get(1),
        })
    }

    pub fn major(&self) -> u32 {
        self.version_num / 10000
    }

    /// Look up several databases in one round trip: `query_typed` (here
    /// and in the warm path's other look-ups) gives the parameter types, so
    /// the query is not first prepared in a round trip of its own (issue
    /// #24: the two were a tenth of a pool hand-out).
    pub async fn databases(&self, names: &[&str]) -> Result<Vec<DbInfo>> {
        let rows = self
            .client
            .query_typed(
                &format!("SELECT {DB_INFO_COLUMNS} FROM pg_database WHERE datname = ANY($1)"),
                &[(&names, Type::TEXT_ARRAY)],
            )
            .await
            .map_err(|e| db_error("cannot list databases", e))?;
        Ok(rows.iter().map(DbInfo::from_row).collect())
    }

    pub async fn database(&self, name: &str) -> Result<Option<DbInfo>> {
        Ok(self.databases(&[name]).await?.into_iter().next())
    }

    /// `template_state` of what is under `key`'s template name now.
    pub async fn template_state(&self, key: &Key, inputs: Option<&str>) -> Result<TemplateState> {
        let found = self.database(&template_name(key)).await?;
        Ok(template_state(found.as_ref(), key, inputs))
    }

    /// Every database whose name starts with `prefix`.
    pub async fn databases_like(&self, prefix: &str) -> Result<Vec<DbInfo>> {
        let rows = self
            .client
            .query_typed(
                &format!(
                    "SELECT {DB_INFO_COLUMNS} FROM pg_database \
                     WHERE starts_with(datname, $1) ORDER BY datname"
                ),
                &[(&prefix, Type::TEXT)],
            )
            .await
            .map_err(|e| db_error("cannot list databases", e))?;
        Ok(rows.iter().map(DbInfo::from_row).collect())
    }

    pub async fn create(
        &self,
        name: &str,
        template: Option<&str>,
        strategy: CloneStrategy,
    ) -> Result<()> {
        self.create_with(name, template, strategy, true).await
    }

    /// `create`, optionally closed to connections (a pool member: nobody
    /// may use it before it is handed out).
    pub async fn create_with(
        &self,
        name: &str,
        template: Option<&str>,
        strategy: CloneStrategy,
        allow_connections: bool,
    ) -> Result<()> {
        let mut sql = format!("CREATE DATABASE {}", quote_ident(name));
        if let Some(t) = template {
            sql.push_str(" TEMPLATE ");
            sql.push_str(&quote_ident(t));
        }
        // STRATEGY exists from PostgreSQL 15 on; without a TEMPLATE it
        // applies to the copy of template1.
        if self.major() >= 15 {
            match strategy {
                CloneStrategy::Default => {}
                CloneStrategy::WalLog => sql.push_str(" STRATEGY = WAL_LOG"),
                CloneStrategy::FileCopy => sql.push_str(" STRATEGY = FILE_COPY"),
            }
        }
        if !allow_connections {
            sql.push_str(" ALLOW_CONNECTIONS false");
        }
        self.client.batch_execute(&sql).await.map_err(|e| {
            let what = match template {
                Some(t) => format!("cannot create database `{name}` from template `{t}`"),
                None => format!("cannot create database `{name}`"),
            };
            db_error(what, e)
        })
    }

    /// Put `mark` on `name` as its comment: how migsnap claims a database.
    pub async fn mark(&self, name: &str, mark: &Mark) -> Result<()> {
        let sql = format!(
            "COMMENT ON DATABASE {} IS {}",
            quote_ident(name),
            quote_literal(&mark.encode())
        );
        self.client
            .batch_execute(&sql)
            .await
            .map_err(|e| db_error(format!("cannot comment on database `{name}`"), e))
    }

    /// Drop a database migsnap may drop (callers check ownership first).
    /// Templates must be unflagged before PostgreSQL lets them go.
    pub async fn drop(&self, info: &DbInfo) -> Result<()> {
        let q = quote_ident(&info.name);
        // Two round trips: several statements in one simple query form an
        // implicit transaction, and DROP DATABASE refuses to run in one.
        if info.is_template {
            self.client
                .batch_execute(&format!("ALTER DATABASE {q} IS_TEMPLATE false"))
                .await
                .map_err(|e| db_error(format!("cannot unflag template `{}`", info.name), e))?;
        }
        let sql = format!("DROP DATABASE IF EXISTS {q}");
        self.client.batch_execute(&sql).await.map_err(|e| {
            super::db_error_on(
                format!("cannot drop database `{}`", info.name),
                &info.name,
                e,
            )
        })
    }

    /// Stop the statement the session `pid` (an interrupted run's own
    /// admin session) is running, and wait until it has ended. Dropping the
    /// client does not stop a statement the server already has: a `CREATE
    /// DATABASE` of the build still running when the interrupted run dropped
    /// the build database found nothing to drop, then committed (issue #21).
    /// Once the session is idle or gone, what exists is what stays.
    pub async fn settle(&self, pid: i32) -> Result<()> {
        let active = "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
                      WHERE pid = $1 AND state = 'active'";
        loop {
            let rows = self
                .client
                .query(active, &[&pid])
                .await
                .map_err(|e| db_error("cannot stop the interrupted statement", e))?;
            if rows.is_empty() {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Drop a `migsnap_build_*` database even if sessions are still connected
    /// to it. Only called under both build locks, so any such session
    /// belongs to a run that died (a Django or pg_dump child orphaned by a
    /// SIGKILL), never to a live build.
    pub async fn drop_build(&self, name: &str) -> Result<()> {
        if !matches!(DbName::parse(name), Some(DbName::Build(_))) {
            return Err(PgError::NotABuild { name: name.into() }.into());
        }
        let q = quote_ident(name);
        let sql = if self.major() >= 13 {
            format!("DROP DATABASE IF EXISTS {q} WITH (FORCE)")
        } else {
            // Before 13 there is no FORCE: end the sessions first (new ones
            // cannot appear, nobody else builds under our locks).
            self.client
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid()",
                    &[&name],
                )
                .await
                .map_err(|e| db_error(format!("cannot end the sessions on `{name}`"), e))?;
            format!("DROP DATABASE IF EXISTS {q}")
        };
        self.client
            .batch_execute(&sql)
            .await
            .map_err(|e| db_error(format!("cannot drop database `{name}`"), e))
    }

    /// Turn the finished build database into the template for `key`, in
    /// one transaction: comment, template flags, and the rename that makes
    /// the name visible. Readers never see a half-made template.
    /// `foreign`: restored from a snapshot no trusted key signed.
    pub async fn promote(&self, build: &str, key: &Key, inputs: &str, foreign: bool) -> Result<()> {
        self.wait_for_sessions_to_end(build).await?;
        let b = quote_ident(build);
        let t = quote_ident(&template_name(key));
        let sql = format!(
            "BEGIN; \
             COMMENT ON DATABASE {b} IS {c}; \
             ALTER DATABASE {b} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false; \
             ALTER DATABASE {b} RENAME TO {t}; \
             COMMIT",
            c = quote_literal(
                &Mark::Template {
                    key: key.clone(),
                    inputs: inputs.into(),
                    foreign
                }
                .encode()
            )
        );
        let res = self.client.batch_execute(&sql).await;
        if res.is_err() {
            let _ = self.client.batch_execute("ROLLBACK").await;
        }
        res.map_err(|e| db_error(format!("cannot turn `{build}` into a template"), e))
    }

    /// Wait (briefly) until no other session is connected to `db`.
    ///
    /// A backend leaves a moment after its client hangs up, and `ALTER
    /// DATABASE … RENAME` finding one still there sleeps in 100 ms steps
    /// (CountOtherDBBackends) before it tries again: measured, that was a
    /// third of every cache restore that lost the race with the restore
    /// connection's exit. Polling the catalog every millisecond instead
    /// costs one or two round trips. Whatever is still connected after the
    /// deadline is left to the server's own wait and error.
    pub async fn wait_for_sessions_to_end(&self, db: &str) -> Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        loop {
            let row = self
                .client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid()",
                    &[&db],
                )
                .await
                .map_err(|e| db_error("cannot list the sessions on a build database", e))?;
            let others: i64 = row.get(0);
            if others == 0 || std::time::Instant::now() >= deadline {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Put a ready clone (`new`: prepare's scratch clone or a pool member)
    /// in place as `target`, in one transaction: mark it as migsnap's, let
    /// it be connected to, rename the old target (if any) aside to `aside`,
    /// and give the clone the target's name. Either all of it happens or
    /// none: the target never exists without the mark, never goes missing,
    /// and no DROP (which forces a checkpoint of the whole cluster) is on
    /// the critical path; the caller drops `aside` afterwards.
    /// Ok(false): `new` does not exist (a pool member another run took).
    pub async fn swap_in(
        &self,
        new: &str,
        target: &str,
        mark: &Mark,
        aside: Option<&str>,
    ) -> Result<bool> {
        let (n, t) = (quote_ident(new), quote_ident(target));
        let set_aside = aside
            .map(|a| format!("ALTER DATABASE {t} RENAME TO {}; ", quote_ident(a)))
            .unwrap_or_default();
        let sql = format!(
            "BEGIN; {set_aside}COMMENT ON DATABASE {n} IS {c}; \
             ALTER DATABASE {n} ALLOW_CONNECTIONS true; ALTER DATABASE {n} RENAME TO {t}; COMMIT",
            c = quote_literal(&mark.encode()),
        );
        let res = self.client.batch_execute(&sql).await;
        if res.is_err() {
            let _ = self.client.batch_execute("ROLLBACK").await;
        }
        if let Err(e) = &res {
            if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME) {
                return Ok(false);
            }
        }
        res.map(|()| true).map_err(|e| {
            let what = match aside {
                Some(_) => format!("cannot replace database `{target}`"),
                None => format!("cannot rename the new clone to `{target}`"),
            };
            super::db_error_on(what, target, e)
        })
    }

    /// Create `name` (a clone of `template`, or an empty database), run
    /// `work` on it, and drop it afterwards whether `work` succeeded or not.
    /// The caller holds whatever lock makes `name` its own.
    ///
    /// A failed create wins over a failed drop, which wins over a failed
    /// `work`: the first is why there was nothing to work on, the second
    /// leaves a database behind the user should know about.
    pub async fn with_database<T>(
        &self,
        name: &str,
        template: Option<&str>,
        work: impl AsyncFnOnce(&str) -> Result<T>,
    ) -> Result<T> {
        // Outer error: the create's; inner: `work`'s.
        let worked = async {
            self.create(name, template, CloneStrategy::Default).await?;
            Ok::<_, Error>(work(name).await)
        }
        .await;
        let dropped = match self.database(name).await {
            Ok(Some(info)) => self.drop(&info).await,
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        let worked = worked?;
        dropped?;
        worked
    }

    /// `with_database` on a throwaway clone of `template` under a fresh
    /// `migsnap_plan_*` name, for reading a snapshot (or, `trace`, writing
    /// to a copy of it): templates do not accept connections, a reader must
    /// not hold a template open while `prepare` clones it, and nothing may
    /// write to a template. The name's lock is held while the clone exists,
    /// so `gc` takes an unlocked one for a killed run's leftover.
    pub async fn with_scratch<T>(
        &self,
        template: Option<&str>,
        work: impl AsyncFnOnce(&str) -> Result<T>,
    ) -> Result<T> {
        let name = DbName::plan()?;
        let lock = self.lock_key(name.lock_id(), || {}).await?;
        let worked = self.with_database(&name.to_string(), template, work).await;
        lock.release().await;
        worked
    }

    /// The advisory lock `id` (`Key::lock_id`, `DbName::lock_id`), waiting
    /// for it if another session holds it (`on_wait` says so first).
    /// Session-level: a killed process never leaves it held.
    pub async fn lock_key(&self, id: LockId, on_wait: impl FnOnce()) -> Result<AdvisoryLock> {
        if let Some(lock) = self.try_lock_key(id).await? {
            return Ok(lock);
        }
        on_wait();
        self.client
            .execute("SELECT pg_advisory_lock($1)", &[&id.0])
            .await
            .map_err(|e| db_error("cannot take the build lock", e))?;
        Ok(AdvisoryLock::held(&self.client, id, false))
    }

    /// The advisory lock `id` if nobody holds it.
    pub async fn try_lock_key(&self, id: LockId) -> Result<Option<AdvisoryLock>> {
        let rows = self
            .client
            .query_typed("SELECT pg_try_advisory_lock($1)", &[(&id.0, Type::INT8)])
            .await
            .map_err(|e| db_error("cannot take the build lock", e))?;
        let locked = rows.first().is_some_and(|r| r.get::<_, bool>(0));
        Ok(locked.then(|| AdvisoryLock::held(&self.client, id, false)))
    }

    /// Run `work` under the lock `id` if nobody holds it (the maker of a
    /// database holds its name's lock while it works), releasing it after.
    /// `None`: somebody does, and `work` did not run.
    pub async fn if_free<T>(&self, id: LockId, work: impl AsyncFnOnce() -> T) -> Result<Option<T>> {
        let Some(lock) = self.try_lock_key(id).await? else {
            return Ok(None);
        };
        let done = work().await;
        lock.release().await;
        Ok(Some(done))
    }

    /// A login role that owns `build` and nothing else, for restoring a
    /// cached dump into it: whatever the dump's functions do while it is
    /// restored (an index expression, a materialized view) runs with that
    /// role's rights, not the superuser's. None when this connection is not
    /// a superuser's (then there is no more to drop to) or cannot make roles.
    /// Its name comes from the build's, so a run killed mid-restore leaves
    /// one the next build of the key replaces.
    pub async fn restore_role(&self, build: &str) -> Result<Option<ConnInfo>> {
        let row = self
            .client
            .query_one(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .map_err(|e| db_error("cannot read the connecting role", e))?;
        if !row.get::<_, bool>(0) {
            return Ok(None);
        }
        let role = restore_role_name(build);
        let password = crate::hash::random_hex(24)?;
        let (r, b) = (quote_ident(&role), quote_ident(build));
        // A leftover of a killed run owns nothing any more: its build
        // database was dropped before this one was made.
        let sql = format!(
            "DROP ROLE IF EXISTS {r}; \
             CREATE ROLE {r} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION \
               NOBYPASSRLS PASSWORD {p}; \
             ALTER DATABASE {b} OWNER TO {r}",
            p = quote_literal(&password)
        );
        self.client
            .batch_execute(&sql)
            .await
            .map_err(|e| db_error(format!("cannot make the restore role for `{build}`"), e))?;
        if self.major() < 15 {
            // Before 15 the public schema belongs to the bootstrap
            // superuser, not to the database's owner, and a pg_dump of such
            // a server comments on it: the restore role must own it too.
            // `end_restore_role` gives it back.
            let client = self.conn.connect(build).await?;
            client
                .batch_execute(&format!("ALTER SCHEMA public OWNER TO {r}"))
                .await
                .map_err(|e| db_error(format!("cannot make the restore role for `{build}`"), e))?;
        }
        Ok(Some(ConnInfo {
            user: role,
            password: Some(password),
            ..self.conn.clone()
        }))
    }

    /// Give everything the restore role made in `build` (and `build`
    /// itself) back to this connection's role, as a plain migrate would have
    /// left it, and drop the role.
    pub async fn end_restore_role(&self, build: &str) -> Result<()> {
        let role = restore_role_name(build);
        let r = quote_ident(&role);
        let what = || format!("cannot hand `{build}` back from its restore role");
        if self.database(build).await?.is_some() {
            let client = self.connect_sealed(build).await?;
            client
                .batch_execute(&format!("REASSIGN OWNED BY {r} TO CURRENT_USER"))
                .await
                .map_err(|e| db_error(what(), e))?;
            if self.major() < 15 {
                // As initdb left it (and a plain migrate keeps it): the
                // bootstrap superuser's.
                client
                    .batch_execute(
                        "DO $$ BEGIN EXECUTE format('ALTER SCHEMA public OWNER TO %I', \
                         (SELECT rolname FROM pg_roles WHERE oid = 10)); END $$",
                    )
                    .await
                    .map_err(|e| db_error(what(), e))?;
            }
            drop(client);
            self.client
                .batch_execute(&format!(
                    "ALTER DATABASE {} OWNER TO CURRENT_USER",
                    quote_ident(build)
                ))
                .await
                .map_err(|e| db_error(what(), e))?;
        }
        self.drop_role(&role).await
    }

    /// What in `build`, as the restore role `role` left it, would run
    /// with (or lend out) the rights of the role it is handed back to by
    /// `end_restore_role`, a superuser: one line per finding, empty when
    /// there is none. For a snapshot that is not authenticated (issue #21),
    /// checked in the catalogs, whatever the dump's text looked like:
    ///
    /// - a `SECURITY DEFINER` function or procedure: anyone may call it
    ///   (EXECUTE is PUBLIC's by default) and it runs as its owner;
    /// - any privilege granted on its objects (tables, views, columns,
    ///   functions, types, schemas, large objects) or default privileges:
    ///   `pg_dump --no-privileges` writes none, and a view or a rule lends
    ///   its owner's rights to whoever may use it;
    /// - settings on the database or the role (`ALTER DATABASE … SET`), which
    ///   a function run during the restore could make: they would follow
    ///   the database to whoever connects.
    ///
    /// Event triggers, languages and untrusted-language functions need a
    /// superuser to make, so the restore role cannot have made any.
    pub async fn borrowed_rights(&self, build: &str, role: &str) -> Result<Vec<String>> {
        // Settings live in a shared catalog: read them on this connection,
        // before any session of this role enters `build`, where they would
        // apply (a `search_path` set during the restore once pointed this
        // very check at a planted `public.pg_roles`).
        let settings: i64 = self
            .client
            .query_one(
                "SELECT count(*) FROM pg_catalog.pg_db_role_setting s \
                 WHERE s.setrole = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1) \
                 OR s.setdatabase = (SELECT oid FROM pg_catalog.pg_database WHERE datname = $2)",
                &[&role, &build],
            )
            .await
            .map_err(|e| db_error(format!("cannot read the settings of `{build}`"), e))?
            .get(0);
        let client = self.connect_sealed(build).await?;
        let rows = client
            .query(
                "WITH r AS (SELECT oid FROM pg_roles WHERE rolname = $1) \
                 SELECT format('function %s is SECURITY DEFINER', p.oid::regprocedure) \
                   FROM pg_proc p, r WHERE p.proowner = r.oid AND p.prosecdef \
                 UNION ALL \
                 SELECT format('function %s has privileges granted', p.oid::regprocedure) \
                   FROM pg_proc p, r WHERE p.proowner = r.oid AND p.proacl IS NOT NULL \
                 UNION ALL \
                 SELECT format('relation %s has privileges granted', c.oid::regclass) \
                   FROM pg_class c, r WHERE c.relowner = r.oid AND c.relacl IS NOT NULL \
                 UNION ALL \
                 SELECT format('column %s.%I has privileges granted', c.oid::regclass, a.attname) \
                   FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid, r \
                   WHERE c.relowner = r.oid AND a.attacl IS NOT NULL \
                 UNION ALL \
                 SELECT format('type %s has privileges granted', t.oid::regtype) \
                   FROM pg_type t, r WHERE t.typowner = r.oid AND t.typacl IS NOT NULL \
                 UNION ALL \
                 SELECT format('schema %I has privileges granted', n.nspname) \
                   FROM pg_namespace n, r WHERE n.nspowner = r.oid AND n.nspacl IS NOT NULL \
                   AND n.nspname <> 'public' \
                 UNION ALL \
                 SELECT format('large object %s has privileges granted', l.oid) \
                   FROM pg_largeobject_metadata l, r WHERE l.lomowner = r.oid AND l.lomacl IS NOT NULL \
                 UNION ALL \
                 SELECT 'default privileges are set' FROM pg_default_acl d, r WHERE d.defaclrole = r.oid \
                 UNION ALL \
                 SELECT 'schema public lets every role create objects in it' \
                   FROM pg_namespace n, aclexplode(n.nspacl) a \
                   WHERE n.nspname = 'public' AND a.grantee = 0 AND a.privilege_type = 'CREATE' \
                 LIMIT 20",
                &[&role],
            )
            .await
            .map_err(|e| db_error(format!("cannot read the catalogs of `{build}`"), e))?;
        let mut found: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        if settings > 0 {
            found.push("settings are attached to the database or the role".into());
        }
        Ok(found)
    }

    /// A session of this connection's role in `build` after a restore, safe
    /// from what the restore could have left for it: the database's own
    /// settings (which the restore role, its owner, may set, and which
    /// would apply to this session: `search_path`, `local_preload_libraries`)
    /// are reset from the maintenance connection first, and names resolve in
    /// pg_catalog before anything the dump made.
    async fn connect_sealed(&self, build: &str) -> Result<Client> {
        self.client
            .batch_execute(&format!("ALTER DATABASE {} RESET ALL", quote_ident(build)))
            .await
            .map_err(|e| db_error(format!("cannot reset the settings of `{build}`"), e))?;
        let client = self.conn.connect(build).await?;
        client
            .batch_execute("SET search_path = pg_catalog, pg_temp")
            .await
            .map_err(|e| db_error(format!("cannot prepare a session in `{build}`"), e))?;
        Ok(client)
    }

    /// Every restore role on the server, with the lock its build holds.
    pub async fn restore_roles(&self) -> Result<Vec<(String, LockId)>> {
        let prefix = RESTORE_ROLE_PREFIX;
        let rows = self
            .client
            .query(
                "SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)",
                &[&prefix],
            )
            .await
            .map_err(|e| db_error("cannot list roles", e))?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let name: String = r.get(0);
                let hex = name.strip_prefix(prefix)?;
                let id = crate::key::is_hex16(hex).then(|| LockId::from_hex16(hex))?;
                Some((name, id))
            })
            .collect())
    }

    /// Drop a role migsnap made (a restore role a killed run left).
    pub async fn drop_role(&self, role: &str) -> Result<()> {
        self.client
            .batch_execute(&format!("DROP ROLE IF EXISTS {}", quote_ident(role)))
            .await
            .map_err(|e| db_error(format!("cannot drop role `{role}`"), e))
    }

    /// Say that this session waits for something under `id` (a key's
    /// template): a shared advisory lock, which nobody ever takes
    /// exclusively, so it never blocks and others can count it
    /// (`others_holding`). Released with the guard or when the session
    /// ends, so a killed process stops counting at once.
    pub async fn hold_shared(&self, id: LockId) -> Result<AdvisoryLock> {
        self.client
            .execute("SELECT pg_advisory_lock_shared($1)", &[&id.0])
            .await
            .map_err(|e| db_error("cannot take a shared advisory lock", e))?;
        Ok(AdvisoryLock::held(&self.client, id, true))
    }

    /// How many other sessions hold `hold_shared(id)`. A bigint advisory
    /// lock shows in pg_locks as its high and low 32 bits (classid, objid)
    /// with objsubid 1, in the database the session is connected to, which
    /// for migsnap's sessions is always the admin database.
    pub async fn others_holding(&self, id: LockId) -> Result<i64> {
        let row = self
            .client
            .query_one(
                "SELECT count(*) FROM pg_locks \
                 WHERE locktype = 'advisory' AND granted AND mode = 'ShareLock' \
                 AND objsubid = 1 AND pid <> pg_backend_pid() \
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                 AND ((classid::bigint << 32) | objid::bigint) = $1",
                &[&id.0],
            )
            .await
            .map_err(|e| db_error("cannot read the server's advisory locks", e))?;
        Ok(row.get(0))
    }

    /// Put the finished database `new` in place as `target` (`swap_in`):
    /// `existing` is what was found under the target's name just before;
    /// it is checked again for whether it may be replaced, and set aside
    /// under a trash name the caller's maintenance drops. Returns that name.
    pub async fn put_in_place(
        &self,
        new: &str,
        target: &str,
        mark: &Mark,
        existing: Option<&DbInfo>,
        force: bool,
    ) -> Result<Option<String>> {
        let aside = match existing {
            Some(info) => {
                target_check(target, Some(info), &self.conn.admin_db, force)?;
                Some(DbName::trash()?.to_string())
            }
            None => None,
        };
        if !self.swap_in(new, target, mark, aside.as_deref()).await? {
            return Err(PgError::Vanished { name: new.into() }.into());
        }
        Ok(aside)
    }
}

const RESTORE_ROLE_PREFIX: &str = "migsnap_restore_";

/// `migsnap_restore_<16 hex>`, from the build database's name.
pub fn restore_role_name(build: &str) -> String {
    let hex = build.rsplit('_').next().unwrap_or(build);
    format!("{RESTORE_ROLE_PREFIX}{hex}")
}

/// A name `prepare` will not use as its target, as data: the command
/// layer says how to fix each (`commands::hints`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadTarget {
    #[error("the database name is empty")]
    Empty,
    #[error(
        "database name `{name}` is {len} bytes long; PostgreSQL allows at most {MAX_NAME_BYTES}"
    )]
    TooLong { name: String, len: usize },
    #[error("the database name contains a NUL byte")]
    Nul,
    #[error("refusing to use `{name}` as the test database: it is a system or migsnap-internal database")]
    Reserved { name: String },
    #[error("refusing to replace database `{name}`: it exists, was not created by migsnap and its name does not start with `test_`")]
    NotOurs { name: String },
}

impl crate::error::Typed for BadTarget {
    fn kind(&self) -> crate::error::Kind {
        crate::error::Kind::Usage
    }
}

/// Whether `prepare` may (re)create `name`, given what exists now.
pub fn target_check(
    name: &str,
    existing: Option<&DbInfo>,
    admin_db: &str,
    force: bool,
) -> std::result::Result<(), BadTarget> {
    validate_name(name)?;
    let reserved = ["postgres", "template0", "template1"];
    if reserved.contains(&name) || name == admin_db || name.starts_with(TEMPLATE_PREFIX) {
        return Err(BadTarget::Reserved { name: name.into() });
    }
    let Some(info) = existing else { return Ok(()) };
    let clone = matches!(info.mark(), Some(Mark::Clone { .. }));
    if clone || name.starts_with("test_") || force {
        return Ok(());
    }
    Err(BadTarget::NotOurs { name: name.into() })
}

pub fn validate_name(name: &str) -> std::result::Result<(), BadTarget> {
    if name.is_empty() {
        return Err(BadTarget::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(BadTarget::TooLong {
            name: name.into(),
            len: name.len(),
        });
    }
    if name.contains('\0') {
        return Err(BadTarget::Nul);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(name: &str, comment: &str) -> DbInfo {
        DbInfo {
            name: name.into(),
            is_template: false,
            allow_conn: true,
            comment: comment.into(),
            oid: 1,
            owned: true,
        }
    }

    #[test]
    fn only_test_names_or_migsnap_clones_are_replaced() {
        assert!(target_check("test_app", Some(&db("test_app", "")), "postgres", false).is_ok());
        assert!(target_check(
            "ci_app",
            Some(&db("ci_app", "migsnap clone of 0123456789abcdef")),
            "postgres",
            false
        )
        .is_ok());
        assert!(target_check("ci_app", None, "postgres", false).is_ok());
        let refused =
            target_check("prod", Some(&db("prod", "")), "postgres", false).expect_err("refused");
        assert_eq!(
            refused,
            BadTarget::NotOurs {
                name: "prod".into()
            }
        );
        assert!(target_check("prod", Some(&db("prod", "")), "postgres", true).is_ok());
        for reserved in ["postgres", "template1", "migsnap_0123456789abcdef", "admin"] {
            assert!(
                target_check(reserved, None, "admin", true).is_err(),
                "{reserved}"
            );
        }
        assert!(target_check(&"x".repeat(64), None, "postgres", false).is_err());
    }

    #[test]
    fn a_template_is_ready_only_as_promote_leaves_it() {
        const K: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        const I: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
        let key = Key::parse(K).expect("key");
        let other = Key::parse(&"f".repeat(64)).expect("key");
        let mark = |key: &Key, foreign| {
            Mark::Template {
                key: key.clone(),
                inputs: I.into(),
                foreign,
            }
            .encode()
        };
        let finished = |comment: &str| DbInfo {
            is_template: true,
            allow_conn: false,
            ..db("migsnap_0123456789abcdef", comment)
        };
        let state = |info: &DbInfo| template_state(Some(info), &key, Some(I));
        use TemplateState::*;

        assert_eq!(template_state(None, &key, Some(I)), Missing);
        assert_eq!(
            state(&finished(&mark(&key, false))),
            Ready { foreign: false }
        );
        assert_eq!(state(&finished(&mark(&key, true))), Ready { foreign: true });
        // Someone else's database under the name.
        assert_eq!(state(&finished("")), NotOurs);
        assert_eq!(state(&finished("my template")), NotOurs);
        // migsnap's, but not this key's template from these inputs.
        assert_eq!(state(&finished(&mark(&other, false))), Stale);
        assert_eq!(
            template_state(
                Some(&finished(&mark(&key, false))),
                &key,
                Some(&"0".repeat(64))
            ),
            Stale
        );
        assert_eq!(
            template_state(Some(&finished(&mark(&key, false))), &key, None),
            Stale
        );
        assert_eq!(
            state(&finished(&format!("migsnap template v1 key={K}"))),
            Stale
        );
        assert_eq!(state(&finished("migsnap clone of 0123456789abcdef")), Stale);
        // The mark without the flags promote sets with it, or another role's.
        let unflagged = DbInfo {
            is_template: false,
            ..finished(&mark(&key, false))
        };
        let open = DbInfo {
            allow_conn: true,
            ..finished(&mark(&key, false))
        };
        let planted = DbInfo {
            owned: false,
            ..finished(&mark(&key, false))
        };
        for info in [unflagged, open, planted] {
            assert_eq!(state(&info), Stale, "{info:?}");
        }

        // Served, and built on.
        assert!(Ready { foreign: false }.serves(false));
        assert!(Ready { foreign: true }.serves(true));
        assert!(!Ready { foreign: true }.serves(false));
        assert!(!Stale.serves(true) && !Missing.serves(true) && !NotOurs.serves(true));
        assert!(Ready { foreign: false }.builds_on());
        assert!(!Ready { foreign: true }.builds_on());
    }
}
