//! Drop one database migsnap made, on request (`migsnap drop`): what a test
//! harness calls at teardown for the clones `prepare` gave it, so that only
//! migsnap decides, from its own mark (`pg::mark`), what is its to drop.
//!
//! The Python plugin used to read the comment itself and compare it with a
//! copy of the clone format; a change of format on one side would have
//! made teardown refuse every clone, or drop what it must not.

use crate::error::{Kind, Result};
use crate::key::LockId;
use crate::names::DbName;
use crate::pg::admin::{self, DbInfo};
use crate::pg::mark::Mark;
use crate::report::Events;
use crate::session::Session;
use std::time::{Duration, Instant};

/// What `drop` did.
#[derive(Debug, serde::Serialize)]
pub struct Dropped {
    pub database: String,
    /// False: there was no such database (already gone), nothing to do.
    pub dropped: bool,
    /// What migsnap's mark said it was: `clone`, `pool member`, `template`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub was: Option<&'static str>,
}

/// Why a database is not migsnap's to drop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("refusing to drop `{name}`: it is a system database")]
    System { name: String },
    #[error("refusing to drop database `{name}`: it does not carry migsnap's mark")]
    NotMarked { name: String },
    #[error(
        "refusing to drop database `{name}`: it carries migsnap's mark but belongs to another role"
    )]
    NotOwned { name: String },
    #[error("database `{name}` is in use by another migsnap run")]
    Busy { name: String },
}

impl crate::error::Typed for Refused {
    fn kind(&self) -> Kind {
        match self {
            Refused::Busy { .. } => Kind::Server,
            _ => Kind::Usage,
        }
    }
}

/// The lock whose holder is using `info` now, if migsnap may drop it: a
/// clone's is the one `prepare` of that target holds, a pool member's or a
/// template's their name's (as `gc` takes them).
fn lock_of(info: &DbInfo, admin_db: &str) -> std::result::Result<(LockId, &'static str), Refused> {
    let name = &info.name;
    if ["postgres", "template0", "template1", admin_db].contains(&name.as_str()) {
        return Err(Refused::System { name: name.clone() });
    }
    let not_marked = || Refused::NotMarked { name: name.clone() };
    let shape = DbName::parse(name);
    let found = match (info.mark(), &shape) {
        // A target `prepare` named: never one of migsnap's own names.
        (Some(Mark::Clone { .. }), None) => (DbName::clone_for(name).lock_id(), "clone"),
        (Some(Mark::Pool { .. }), Some(n @ DbName::Pool(_))) => (n.lock_id(), "pool member"),
        (Some(Mark::Template { key, .. }), Some(n @ DbName::Template(_)))
            if *n == DbName::template(&key) && info.is_template =>
        {
            (key.lock_id(), "template")
        }
        _ => return Err(not_marked()),
    };
    // Everything migsnap makes belongs to the role it connects as; another
    // role's database with a copied mark is that role's.
    if !info.owned {
        return Err(Refused::NotOwned { name: name.clone() });
    }
    Ok(found)
}

/// How long `drop` waits for a database's lock before calling it in use.
const BUSY_PATIENCE: Duration = Duration::from_secs(3);

/// Drop `name` if it is migsnap's (see `lock_of`) and nobody uses it; a
/// database that does not exist is not an error (teardown after a cleanup).
pub async fn drop_database(session: &Session<'_>, name: &str, ui: &Events) -> Result<Dropped> {
    admin::validate_name(name)?;
    let admin = session.admin(ui).await?;
    let Some(info) = admin.database(name).await? else {
        return Ok(Dropped {
            database: name.into(),
            dropped: false,
            was: None,
        });
    };
    let (lock, was) = lock_of(&info, &admin.conn.admin_db)?;
    // A run that just ended may still hold the lock for a moment: its
    // session ends on the server only after the process has gone (the
    // pytest teardown right after a `prepare`). A run still at work holds
    // it longer than this, and is refused.
    let patience = Instant::now();
    loop {
        match admin
            .if_free(lock, async || admin.drop(&info).await)
            .await?
        {
            Some(dropped) => {
                dropped?;
                break;
            }
            None if patience.elapsed() < BUSY_PATIENCE => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            None => return Err(Refused::Busy { name: name.into() }.into()),
        }
    }
    Ok(Dropped {
        database: name.into(),
        dropped: true,
        was: Some(was),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;

    const K: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const I: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

    fn db(name: &str, mark: Option<Mark>) -> DbInfo {
        DbInfo {
            name: name.into(),
            is_template: false,
            allow_conn: true,
            comment: mark.map(|m| m.encode()).unwrap_or_default(),
            oid: 1,
            owned: true,
        }
    }

    fn was(info: &DbInfo) -> std::result::Result<&'static str, Refused> {
        lock_of(info, "admin").map(|(_, was)| was)
    }

    #[test]
    fn only_what_migsnap_marked_under_its_own_shape_of_name_may_go() {
        let key = Key::parse(K).expect("key");
        let clone = Some(Mark::Clone {
            short: key.short().into(),
        });
        let pool = Some(Mark::Pool {
            key: key.clone(),
            inputs: I.into(),
            template: 1,
            project: "00ff00ff00ff00ff".into(),
        });
        let template = Some(Mark::Template {
            key: key.clone(),
            inputs: I.into(),
            foreign: false,
        });
        let template_db = |name: &str| DbInfo {
            is_template: true,
            ..db(name, template.clone())
        };
        assert_eq!(was(&db("test_app", clone.clone())), Ok("clone"));
        assert_eq!(
            was(&db("migsnap_pool_00000000000000aa", pool.clone())),
            Ok("pool member")
        );
        assert_eq!(
            was(&template_db("migsnap_0123456789abcdef")),
            Ok("template")
        );

        let not_marked = |name: &str| Err(Refused::NotMarked { name: name.into() });
        assert_eq!(was(&db("test_app", None)), not_marked("test_app"));
        assert_eq!(
            was(&db("test_app", Some(Mark::Clone { short: "x".into() }))),
            not_marked("test_app")
        );
        // A mark on a name of the wrong shape.
        assert_eq!(was(&db("test_app", pool)), not_marked("test_app"));
        assert_eq!(
            was(&db("migsnap_pool_00000000000000aa", clone.clone())),
            not_marked("migsnap_pool_00000000000000aa")
        );
        assert_eq!(
            was(&template_db("migsnap_ffffffffffffffff")),
            not_marked("migsnap_ffffffffffffffff")
        );
        // Another role's, with a copied mark; a system database, whatever it says.
        let planted = DbInfo {
            owned: false,
            ..db("test_app", clone.clone())
        };
        assert_eq!(
            was(&planted),
            Err(Refused::NotOwned {
                name: "test_app".into()
            })
        );
        for system in ["postgres", "template1", "admin"] {
            assert_eq!(
                was(&db(system, clone.clone())),
                Err(Refused::System {
                    name: system.into()
                })
            );
        }
    }
}
