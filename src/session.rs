//! One command's resolved state: the key (the migration files hashed), the
//! cache dir as a store and the admin connection, each made the first time
//! a use case asks and then handed out again (issue #23, part 5). Before,
//! every use case hashed and connected on its own: `lint --trace` hashed
//! the project three times and connected twice, `prepare --unless-ready`
//! hashed twice.
//!
//! It sits above `context` (which knows no engine and no reporter) and
//! beside the engine, whose `connect` it calls; the use cases take it.
//! A failure is not kept: whoever asks again tries again and reports it.

use crate::context::Ctx;
use crate::engine;
use crate::error::{Error, Result};
use crate::fingerprint::{self, Fingerprint};
use crate::pg::admin::Admin;
use crate::report::Events;
use crate::store::Store;
use tokio::sync::OnceCell;

/// What one command resolves once (see the module docs).
pub struct Session<'a> {
    pub ctx: &'a Ctx,
    fingerprint: OnceCell<Fingerprint>,
    admin: OnceCell<Admin>,
    /// How many times the files were hashed: the test that "once" holds.
    #[cfg(test)]
    hashed: std::sync::atomic::AtomicUsize,
}

/// Why `admin_if_running` has no connection.
enum NotUp {
    Stopped,
    Failed(Error),
}

impl<'a> Session<'a> {
    pub fn new(ctx: &'a Ctx) -> Session<'a> {
        Session {
            ctx,
            fingerprint: OnceCell::new(),
            admin: OnceCell::new(),
            #[cfg(test)]
            hashed: Default::default(),
        }
    }

    /// The current key's fingerprint, hashed on the blocking pool the first
    /// time (`fingerprint::compute_async`): one command, one key, even if
    /// a file changes meanwhile (a build re-hashes on purpose to notice
    /// that: `engine::settled_inputs`).
    pub async fn fingerprint(&self) -> Result<&Fingerprint> {
        self.fingerprint
            .get_or_try_init(|| async {
                #[cfg(test)]
                self.hashed
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                fingerprint::compute_async(&self.ctx.key).await
            })
            .await
    }

    /// The cache dir as a store (`Ctx::store`: opened once per command).
    pub fn store(&self) -> Result<Store> {
        self.ctx.store()
    }

    /// The admin connection to the configured server; the embedded one is
    /// started on demand (`engine::connect`). Connected once: locks a use
    /// case takes "until the connection closes" are held until the
    /// session is dropped.
    pub async fn admin(&self, ui: &Events) -> Result<&Admin> {
        self.admin
            .get_or_try_init(|| engine::connect(self.ctx, ui))
            .await
    }

    /// The admin connection if the server runs: None when the embedded one
    /// is stopped, which stays stopped (`engine::connect_if_running`). A
    /// connection made earlier in the session is handed out.
    pub async fn admin_if_running(&self) -> Result<Option<&Admin>> {
        let up = self
            .admin
            .get_or_try_init(|| async {
                match engine::connect_if_running(self.ctx).await {
                    Ok(Some(admin)) => Ok(admin),
                    Ok(None) => Err(NotUp::Stopped),
                    Err(e) => Err(NotUp::Failed(e)),
                }
            })
            .await;
        match up {
            Ok(admin) => Ok(Some(admin)),
            Err(NotUp::Stopped) => Ok(None),
            Err(NotUp::Failed(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{BuildOptions, CacheDir, DjangoRunner, ServerChoice};
    use crate::fingerprint::KeySpec;
    use std::sync::atomic::Ordering;

    fn ctx(root: &std::path::Path) -> Ctx {
        Ctx {
            key: KeySpec {
                root: root.to_path_buf(),
                migrations: vec!["**/migrations/*.py".into()],
                exclude: vec![],
                inputs: vec![],
                salt: String::new(),
                settings_module: None,
                alias: "default".into(),
                stat_cache: None,
                accelerated: false,
            },
            django: DjangoRunner {
                python: "python".into(),
                manage_py: root.join("manage.py"),
                settings_module: None,
                project_dir: root.to_path_buf(),
                echo_output: false,
                alias: "default".into(),
                accelerate: false,
            },
            // Never reached: the test asks for no connection.
            server: ServerChoice::Url("postgresql://localhost:1/none".into()),
            cache: CacheDir::new(root.join(".cache"), Default::default()),
            build: BuildOptions {
                clone_strategy: Default::default(),
                restore_jobs: 1,
                trusted_extensions: vec![],
                programs: Default::default(),
                verify: false,
            },
            pool: 0,
            remote: None,
        }
    }

    /// The second use case that asks for the key gets the first one's,
    /// without hashing again: an edit in between goes unseen by this
    /// session (a new one sees it).
    #[tokio::test]
    async fn the_key_is_hashed_once_per_session() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let migrations = tmp.path().join("app/migrations");
        std::fs::create_dir_all(&migrations).expect("mkdir");
        std::fs::write(migrations.join("__init__.py"), "").expect("write");
        let file = migrations.join("0001_initial.py");
        std::fs::write(&file, "# one\n").expect("write");
        let ctx = ctx(tmp.path());
        let session = Session::new(&ctx);
        let first = session.fingerprint().await.expect("hashed").key.clone();
        std::fs::write(&file, "# two\n").expect("edit");
        let second = session.fingerprint().await.expect("cached").key.clone();
        assert_eq!(session.hashed.load(Ordering::SeqCst), 1, "hashed once");
        assert_eq!(first, second, "the first answer, not a second hash");
        let fresh = Session::new(&ctx);
        let edited = fresh.fingerprint().await.expect("hashed").key.clone();
        assert_ne!(edited, first, "a new session hashes the edited file");
    }
}
