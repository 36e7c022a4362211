//! The private PostgreSQL cluster migsnap uses when no server URL is given.
//!
//! It lives in one directory (data dir, log, Unix socket), listens on no TCP
//! port unless `server-port` asks for 127.0.0.1, runs with durability off (fsync, synchronous_commit,
//! full_page_writes: test data is disposable, the snapshots are in the cache
//! dir), is started on first use and left running for the next call.
//! initdb and postgres refuse to run as root, so as root the cluster runs as
//! an unprivileged user (`postgres`, or MIGSNAP_SERVER_USER) and lives under
//! the system temp dir, because root's home is not reachable by that user.

use crate::env;
use crate::error::{Context, Error, Kind, Result};
use crate::pg::{tools, ConnInfo};
use crate::ui::Ui;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Port number in the socket's file name; with no TCP listener, clusters in
/// different directories never collide on it.
pub const DEFAULT_PORT: u16 = 5432;
pub const SUPERUSER: &str = "postgres";
/// Unix socket paths are limited to 107 bytes on Linux.
const MAX_SOCKET_PATH: usize = 100;

pub fn default_server_dir(cache_dir: &Path) -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        let tag = crate::fingerprint::hash_normalized(cache_dir.as_os_str().as_encoded_bytes());
        std::env::temp_dir().join(format!("migsnap-server-{}", &tag[..12]))
    } else {
        cache_dir.join("server")
    }
}

#[derive(Debug, Clone)]
pub struct Embedded {
    pub dir: PathBuf,
    /// Also listen on 127.0.0.1 at this port (`server-port`); None = Unix
    /// socket only.
    pub tcp_port: Option<u16>,
}

#[derive(Debug, serde::Serialize)]
pub struct Status {
    pub running: bool,
    pub initialized: bool,
    pub dir: PathBuf,
    pub url: String,
    /// postgres:// URL over TCP, when `server-port` is set.
    pub tcp_url: Option<String>,
    pub log: PathBuf,
}

impl Embedded {
    pub fn new(dir: &Path, tcp_port: Option<u16>) -> Embedded {
        Embedded {
            dir: dir.to_path_buf(),
            tcp_port,
        }
    }

    pub fn port(&self) -> u16 {
        self.tcp_port.unwrap_or(DEFAULT_PORT)
    }

    fn socket_file(&self) -> PathBuf {
        self.socket_dir().join(format!(".s.PGSQL.{}", self.port()))
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The superuser's password, for TCP connections (0600, server user).
    fn password_file(&self) -> PathBuf {
        self.dir.join("password")
    }

    /// The cluster's major version (data/PG_VERSION), so pg_ctl comes from
    /// the same installation when several are present.
    fn cluster_major(&self) -> Option<u32> {
        std::fs::read_to_string(self.data().join("PG_VERSION"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The socket lives in the server dir unless that path is too long for
    /// a Unix socket; then in a short, deterministic temp dir.
    pub fn socket_dir(&self) -> PathBuf {
        let own = self.dir.join(format!(".s.PGSQL.{}", self.port()));
        if own.as_os_str().len() <= MAX_SOCKET_PATH {
            return self.dir.clone();
        }
        let tag = crate::fingerprint::hash_normalized(self.dir.as_os_str().as_encoded_bytes());
        PathBuf::from("/tmp").join(format!("migsnap-sock-{}", &tag[..12]))
    }

    pub fn conn_info(&self) -> ConnInfo {
        ConnInfo {
            host: self.socket_dir().to_string_lossy().into_owned(),
            port: self.port(),
            user: SUPERUSER.to_string(),
            password: None,
            admin_db: "postgres".to_string(),
        }
    }

    /// Cheap check for the warm path: the socket file exists. A stale socket
    /// is handled by the caller retrying after `start` when connecting fails.
    pub fn probably_running(&self) -> bool {
        self.socket_file().exists()
    }

    pub fn status(&self) -> Status {
        let initialized = self.data().join("PG_VERSION").is_file();
        let running = initialized && self.pg_ctl_status().unwrap_or(false);
        Status {
            running,
            initialized,
            dir: self.dir.clone(),
            url: self.conn_info().url("postgres"),
            tcp_url: self.tcp_port.map(|port| {
                ConnInfo {
                    host: "127.0.0.1".into(),
                    port,
                    password: std::fs::read_to_string(self.password_file()).ok(),
                    ..self.conn_info()
                }
                .url("postgres")
            }),
            log: self.log(),
        }
    }

    fn pg_ctl_status(&self) -> Result<bool> {
        let out = self.run_as_server(
            tools::find("pg_ctl", self.cluster_major())?,
            &["status", "-D"],
            &[self.data().as_os_str()],
        )?;
        Ok(out.status.success())
    }

    /// Initialise the cluster if needed and start it if it is not running.
    /// Serialised with a lock file beside the directory, so sixteen
    /// `prepare` runs arriving together start it once.
    pub fn start(&self, ui: &Ui) -> Result<()> {
        let parent = self.dir.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(parent).with_kind(Kind::Usage, || {
            format!("cannot create `{}`", parent.display())
        })?;
        let lock_path = parent.join(format!(
            ".{}.lock",
            self.dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("server")
        ));
        let lock = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_kind(Kind::Usage, || {
                format!("cannot create `{}`", lock_path.display())
            })?;
        if lock.try_lock().is_err() {
            ui.info("waiting for another migsnap starting the embedded server…");
            lock.lock()
                .with_kind(Kind::Internal, || "cannot lock the server dir".into())?;
        }

        self.ensure_dir(&self.dir)?;
        if !self.data().join("PG_VERSION").is_file() {
            self.init(ui)?;
        }
        if self.pg_ctl_status()? {
            if !self.socket_file().exists() {
                return Err(Error::usage(format!(
                    "the embedded server in {} is running with another port",
                    self.dir.display()
                ))
                .hint(
                    "run `migsnap server stop`, then retry: it restarts with the current settings",
                ));
            }
            return Ok(());
        }
        let socket_dir = self.socket_dir();
        if socket_dir != self.dir {
            self.ensure_dir(&socket_dir)?;
        }
        ui.info(format!(
            "starting the embedded PostgreSQL server in {}",
            self.dir.display()
        ));
        let pg_ctl = tools::find("pg_ctl", self.cluster_major())?;
        // Port and listener are start options, not config, so changing
        // `server-port` needs only a restart.
        let listen = if self.tcp_port.is_some() {
            "127.0.0.1"
        } else {
            ""
        };
        let options = format!("-c port={} -c listen_addresses='{listen}'", self.port());
        let out = self.run_as_server(
            pg_ctl,
            &["start", "-w", "-t", "60", "-o", &options, "-D"],
            &[
                self.data().as_os_str(),
                "-l".as_ref(),
                self.log().as_os_str(),
            ],
        )?;
        if !out.status.success() {
            let log = std::fs::read_to_string(self.log()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            return Err(
                Error::server("the embedded PostgreSQL server did not start")
                    .detail(format!(
                        "{}{}\n{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    ))
                    .hint(format!(
                        "see {}; `migsnap server stop` then retry, or delete {} to start afresh",
                        self.log().display(),
                        self.dir.display()
                    )),
            );
        }
        Ok(())
    }

    /// initdb into `data.tmp`, configure, then rename to `data`: a crash
    /// mid-way leaves no half-made cluster that a later run would trust.
    fn init(&self, ui: &Ui) -> Result<()> {
        ui.info(format!(
            "creating the embedded PostgreSQL cluster in {}",
            self.dir.display()
        ));
        let tmp = self.dir.join("data.tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)
                .with_kind(Kind::Usage, || format!("cannot remove `{}`", tmp.display()))?;
        }
        // The socket lives in a directory only the server user (and root) can
        // enter, so it may trust; TCP, when `server-port` turns it on, is
        // reachable by every local user and needs the generated password.
        let pwfile = self.password_file();
        let password = random_hex(16)?;
        std::fs::write(&pwfile, &password).with_kind(Kind::Internal, || {
            format!("cannot write `{}`", pwfile.display())
        })?;
        std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600))
            .with_kind(Kind::Internal, || {
                format!("cannot protect `{}`", pwfile.display())
            })?;
        if let Some(user) = server_user()? {
            std::os::unix::fs::chown(&pwfile, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .with_kind(Kind::Internal, || {
                    format!("cannot hand `{}` to `{}`", pwfile.display(), user.name)
                })?;
        }
        let pwfile_arg = format!("--pwfile={}", pwfile.display());
        let initdb = tools::find("initdb", None)?;
        let out = self.run_as_server(
            initdb,
            &[
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                &pwfile_arg,
                "--username",
                SUPERUSER,
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
                "-D",
            ],
            &[tmp.as_os_str()],
        )?;
        if !out.status.success() {
            return Err(Error::server("initdb failed for the embedded server")
                .detail(String::from_utf8_lossy(&out.stderr).into_owned())
                .hint("set MIGSNAP_SERVER_URL to use an existing server instead"));
        }
        let socket = self.socket_dir();
        let conf = format!(
            "\n# Added by migsnap: a disposable test server, tuned for speed.\n\
             unix_socket_directories = '{}'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             max_connections = 200\n\
             max_locks_per_transaction = 256\n\
             shared_buffers = 128MB\n\
             log_min_messages = warning\n",
            socket.to_string_lossy().replace('\'', "''")
        );
        let conf_path = tmp.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).with_kind(Kind::Internal, || {
            format!("cannot read `{}`", conf_path.display())
        })?;
        text.push_str(&conf);
        std::fs::write(&conf_path, text).with_kind(Kind::Internal, || {
            format!("cannot write `{}`", conf_path.display())
        })?;
        std::fs::rename(&tmp, self.data()).with_kind(Kind::Internal, || {
            format!("cannot move `{}` into place", tmp.display())
        })
    }

    pub fn stop(&self) -> Result<bool> {
        if !self.data().join("PG_VERSION").is_file() || !self.pg_ctl_status()? {
            return Ok(false);
        }
        let out = self.run_as_server(
            tools::find("pg_ctl", self.cluster_major())?,
            &["stop", "-m", "fast", "-w", "-D"],
            &[self.data().as_os_str()],
        )?;
        if !out.status.success() {
            return Err(Error::server("could not stop the embedded server")
                .detail(String::from_utf8_lossy(&out.stderr).into_owned()));
        }
        Ok(true)
    }

    /// Create `dir` (mode 0700) owned by the user the server runs as.
    fn ensure_dir(&self, dir: &Path) -> Result<()> {
        if let Some(user) = server_user()? {
            check_reachable(dir, &user)?;
        }
        std::fs::create_dir_all(dir)
            .with_kind(Kind::Usage, || format!("cannot create `{}`", dir.display()))?;
        if let Some(user) = server_user()? {
            std::os::unix::fs::chown(dir, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .with_kind(Kind::Internal, || {
                    format!("cannot hand `{}` to user `{}`", dir.display(), user.name)
                })?;
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_kind(Kind::Internal, || {
                format!("cannot set permissions on `{}`", dir.display())
            })
    }

    fn run_as_server(
        &self,
        program: PathBuf,
        args: &[&str],
        more: &[&std::ffi::OsStr],
    ) -> Result<Output> {
        let mut cmd = Command::new(&program);
        cmd.args(args)
            .args(more)
            .current_dir(&self.dir)
            .env("LC_ALL", "C");
        if let Some(user) = server_user()? {
            cmd.uid(user.uid.as_raw())
                .gid(user.gid.as_raw())
                .env("HOME", &self.dir)
                .env("USER", &user.name);
        }
        cmd.output().with_kind(Kind::Usage, || {
            format!("cannot run `{}`", program.display())
        })
    }
}

/// As root, the server user must be able to traverse every ancestor of the
/// server dir (root's home usually is not): say so plainly instead of
/// letting initdb fail with a permission error.
fn check_reachable(dir: &Path, user: &nix::unistd::User) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    for ancestor in dir.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(ancestor) else {
            continue;
        };
        let others_x = meta.mode() & 0o001 != 0;
        let group_x = meta.mode() & 0o010 != 0 && meta.gid() == user.gid.as_raw();
        if !(others_x || group_x || meta.uid() == user.uid.as_raw()) {
            return Err(Error::usage(format!(
                "the embedded server runs as `{}`, which cannot reach `{}`: `{}` is closed to it",
                user.name,
                dir.display(),
                ancestor.display()
            ))
            .hint(
                "set MIGSNAP_SERVER_DIR to a directory under /tmp, or `chmod o+x` that directory",
            ));
        }
    }
    Ok(())
}

fn random_hex(bytes: usize) -> Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .with_kind(Kind::Internal, || "cannot read /dev/urandom".into())?;
    Ok(crate::fingerprint::hex(&buf))
}

/// As root: the unprivileged user that runs the server. Otherwise None.
fn server_user() -> Result<Option<nix::unistd::User>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let name = env::var(env::SERVER_USER).unwrap_or_else(|| "postgres".to_string());
    match nix::unistd::User::from_name(&name) {
        Ok(Some(u)) if !u.uid.is_root() => Ok(Some(u)),
        _ => Err(Error::usage(format!(
            "running as root, but there is no unprivileged user `{name}` to run the embedded PostgreSQL server"
        ))
        .hint("create one (`useradd --system postgres`), set MIGSNAP_SERVER_USER, or run migsnap as a normal user")),
    }
}
