//! The private PostgreSQL cluster migsnap uses when no server URL is given.
//!
//! It lives in one directory (data dir, log, Unix socket), listens on no TCP
//! port unless `server-port` asks for 127.0.0.1, runs with durability off (fsync, synchronous_commit,
//! full_page_writes: test data is disposable, the snapshots are in the cache
//! dir), is started on first use and left running for the next call.
//! initdb and postgres refuse to run as root, so as root the cluster runs as
//! an unprivileged user (`postgres`, or MIGSNAP_SERVER_USER) and lives under
//! the system temp dir, because root's home is not reachable by that user.
//!
//! Everything it keeps on disk is private, because as root a shared temp
//! dir is hostile ground (issue #10): any local user can compute the server
//! dir's path and plant a symlink or a directory of their own there first.
//! So the server dir (and the socket dir) are created with one `mkdir`, mode
//! 0700, and an existing one is used only if it is a real directory, owned by
//! the user the server runs as, that no one else can write to; migsnap never
//! chowns or chmods a directory it did not create. Locks live in a per-user
//! directory only we can write (`runtime_dir`), are opened without following
//! links, and a wait for one ends after `MIGSNAP_SERVER_LOCK_TIMEOUT` seconds
//! with the holder's pid.

use crate::error::{Error, Kind, Result};
use crate::pg::tools::{Programs, ToolError};
use crate::pg::ConnInfo;
use crate::report::Events;
use nix::libc;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Port number in the socket's file name; with no TCP listener, clusters in
/// different directories never collide on it.
pub const DEFAULT_PORT: u16 = 5432;
pub const SUPERUSER: &str = "postgres";
/// Unix socket paths are limited to 107 bytes on Linux.
const MAX_SOCKET_PATH: usize = 100;
/// How long `start` waits for another migsnap starting the same server
/// (initdb plus a start take seconds; pg_ctl itself gives up after 60 s).
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the embedded server lives when no `server-dir` is set: one per
/// cache dir (so two cache dirs never share a cluster), never inside it (a
/// CI cache of the cache dir would save a live cluster, issue #15). As
/// root, under `runtime_dir`, which the server user can reach; otherwise in
/// the user's state dir (`~/.local/state/migsnap`), which, unlike the temp
/// dir, no tmp cleaner empties under a running server.
pub fn default_server_dir(cache_dir: &Path) -> PathBuf {
    server_home().join(format!("{SERVER_DIR_PREFIX}{}", tag(cache_dir)))
}

/// Default server dirs are named `server-<12 hex of the cache dir>`.
const SERVER_DIR_PREFIX: &str = "server-";

/// The directory that holds this user's default server dirs.
fn server_home() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return runtime_dir();
    }
    directories::ProjectDirs::from("", "", "migsnap")
        .map(|d| {
            d.state_dir()
                .unwrap_or_else(|| d.data_local_dir())
                .to_path_buf()
        })
        .unwrap_or_else(runtime_dir)
}

/// Every default server dir this user has (`migsnap server ls`), plus
/// those in `also` that exist (the configured one, which may live
/// anywhere, and where older versions put it), sorted.
pub fn known_server_dirs(also: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = [server_home(), runtime_dir()]
        .iter()
        .filter_map(|home| std::fs::read_dir(home).ok())
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(SERVER_DIR_PREFIX) && !n.ends_with(".lock"))
                && e.file_type().is_ok_and(|t| t.is_dir())
        })
        .map(|e| e.path())
        .collect();
    dirs.extend(also.iter().filter(|d| d.join("data").is_dir()).cloned());
    dirs.sort();
    dirs.dedup();
    dirs
}

/// `<temp dir>/migsnap-<uid>`: this user's private directory for locks, the
/// socket dir when the server dir's path is too long for a socket, and (as
/// root) the default server dirs. Mode 0700; 0711 as root, so that the
/// server user can reach the server dirs inside but not list or write it.
pub fn runtime_dir() -> PathBuf {
    std::env::temp_dir().join(format!("migsnap-{}", nix::unistd::geteuid()))
}

/// 12 hex of the path: a short, stable file name for it.
fn tag(path: &Path) -> String {
    let hash = crate::hash::hash_normalized(path.as_os_str().as_encoded_bytes());
    hash[..12].to_string()
}

#[derive(Debug, Clone)]
pub struct Embedded {
    pub dir: PathBuf,
    /// Also listen on 127.0.0.1 at this port (`server-port`); None = Unix
    /// socket only.
    pub tcp_port: Option<u16>,
    pub host: Host,
}

/// How this machine runs an embedded server, as the caller resolved it
/// (the library reads no environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Where initdb and pg_ctl are found.
    pub programs: Programs,
    /// How long `start` waits for another migsnap starting the same
    /// server (`MIGSNAP_SERVER_LOCK_TIMEOUT`).
    pub lock_timeout: Duration,
    /// As root, the unprivileged user that runs it (`MIGSNAP_SERVER_USER`).
    pub user: String,
}

impl Default for Host {
    fn default() -> Host {
        Host {
            programs: Programs::default(),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            user: "postgres".to_string(),
        }
    }
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
    /// The lock `start` takes (in `runtime_dir`).
    pub lock: PathBuf,
}

impl Embedded {
    pub fn new(dir: &Path, tcp_port: Option<u16>, host: Host) -> Embedded {
        Embedded {
            dir: dir.to_path_buf(),
            tcp_port,
            host,
        }
    }

    /// The server in `dir` as it was started: with the port its
    /// postmaster.pid records (the socket's name), for `server ls`.
    pub fn found(dir: &Path, host: Host) -> Embedded {
        let mut server = Embedded::new(dir, None, host);
        server.tcp_port = read_nofollow(&server.data().join("postmaster.pid"))
            .ok()
            .and_then(|t| t.split('\n').nth(3)?.trim().parse::<u16>().ok())
            .filter(|p| *p != DEFAULT_PORT);
        server
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
    /// a Unix socket; then in a short, deterministic dir in `runtime_dir`.
    pub fn socket_dir(&self) -> PathBuf {
        let own = self.dir.join(format!(".s.PGSQL.{}", self.port()));
        if own.as_os_str().len() <= MAX_SOCKET_PATH {
            return self.dir.clone();
        }
        runtime_dir().join(format!("sock-{}", tag(&self.dir)))
    }

    /// The lock `start` takes: in `runtime_dir`, which only we can write,
    /// never beside the server dir (in /tmp anyone could create or lock it).
    pub fn lock_path(&self) -> PathBuf {
        runtime_dir().join(format!("server-{}.lock", tag(&self.dir)))
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

    /// Cheap check for the warm path: the server and socket dirs are ours
    /// (a planted directory could hold a fake server's socket) and the
    /// socket file exists. A stale socket is handled by the caller retrying
    /// after `start` when connecting fails; a foreign dir makes `start` say
    /// why it refuses.
    pub fn probably_running(&self) -> bool {
        let owner = match self.server_user() {
            Ok(user) => user.map_or(nix::unistd::geteuid(), |u| u.uid),
            Err(_) => return false,
        };
        let trusted = |dir: &Path| check_existing_dir(dir, owner).is_ok();
        trusted(&self.dir) && trusted(&self.socket_dir()) && self.socket_file().exists()
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
                    password: read_nofollow(&self.password_file()).ok(),
                    ..self.conn_info()
                }
                .url("postgres")
            }),
            log: self.log(),
            lock: self.lock_path(),
        }
    }

    fn pg_ctl_status(&self) -> Result<bool> {
        let out = self.run_as_server(
            self.host.programs.find("pg_ctl", self.cluster_major())?,
            &["status", "-D"],
            &[self.data().as_os_str()],
        )?;
        Ok(out.status.success())
    }

    /// Initialise the cluster if needed and start it if it is not running.
    /// Serialised with a lock file in `runtime_dir`, so sixteen `prepare`
    /// runs arriving together start it once.
    pub fn start(&self, ui: &Events) -> Result<()> {
        let _lock = self.lock(ui)?;
        let user = self.server_user()?;
        if let Some(user) = &user {
            check_reachable(&self.dir, user)?;
        }
        let parent = self.dir.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(parent).map_err(|source| EmbeddedError::CreateDir {
            dir: parent.to_path_buf(),
            source,
        })?;
        private_dir(&self.dir, 0o700, user.as_ref())?;
        let socket_dir = self.socket_dir();
        if socket_dir != self.dir {
            private_dir(&socket_dir, 0o700, user.as_ref())?;
        }
        if !self.data().join("PG_VERSION").is_file() {
            self.init(ui)?;
        }
        if self.pg_ctl_status()? {
            if self.clear_dead_postmaster()? {
                ui.warn(format!(
                    "the embedded server in {} was killed; restarting it",
                    self.dir.display()
                ));
            } else if !self.socket_file().exists() {
                return Err(EmbeddedError::OtherPort {
                    dir: self.dir.clone(),
                }
                .into());
            } else {
                return Ok(());
            }
        }
        ui.info(format!(
            "starting the embedded PostgreSQL server in {}",
            self.dir.display()
        ));
        let pg_ctl = self.host.programs.find("pg_ctl", self.cluster_major())?;
        // Port and listener are start options, not config, so changing
        // `server-port` needs only a restart.
        let listen = if self.tcp_port.is_some() {
            "127.0.0.1"
        } else {
            ""
        };
        let mut options = format!("-c port={} -c listen_addresses='{listen}'", self.port());
        // PostgreSQL 18 can clone the files a FILE_COPY clone (the strategy
        // here) copies: with reflinks a 1 GiB template clones in ~60 ms
        // instead of ~0.8 s and takes no space. Only there: elsewhere Linux's
        // copy_file_range copies the bytes, no clear gain on wide schemas,
        // and PostgreSQL has no fallback when it fails (BENCHMARKS.md,
        // "Clones on PostgreSQL 18 with reflink"). A start option: no round
        // trip.
        if self.cluster_major().is_some_and(|m| m >= 18) && reflink_supported(&self.data()) {
            options.push_str(" -c file_copy_method=clone");
        }
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
            let log = read_nofollow(&self.log()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            let failed = EmbeddedError::DidNotStart {
                dir: self.dir.clone(),
                log: self.log(),
            };
            return Err(Error::from(failed).detail(format!(
                "{}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )));
        }
        Ok(())
    }

    /// initdb into `data.tmp`, configure, then rename to `data`: a crash
    /// mid-way leaves no half-made cluster that a later run would trust.
    fn init(&self, ui: &Events) -> Result<()> {
        ui.info(format!(
            "creating the embedded PostgreSQL cluster in {}",
            self.dir.display()
        ));
        let tmp = self.dir.join("data.tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|source| EmbeddedError::RemoveHalfMade {
                path: tmp.clone(),
                source,
            })?;
        }
        // The socket lives in a directory only the server user (and root) can
        // enter, so it may trust; TCP, when `server-port` turns it on, is
        // reachable by every local user and needs the generated password.
        // A new file (O_EXCL, no links followed), so whatever stood at the
        // path before cannot receive the password or an ownership change.
        let pwfile = self.password_file();
        let password = crate::hash::random_hex(16)?;
        remove_if_present(&pwfile)?;
        let mut file = std::fs::File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&pwfile)
            .map_err(|source| EmbeddedError::CreateFile {
                path: pwfile.clone(),
                source,
            })?;
        if let Some(user) = self.server_user()? {
            std::os::unix::fs::fchown(&file, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .map_err(|source| EmbeddedError::HandOver {
                    path: pwfile.clone(),
                    user: user.name.clone(),
                    source,
                })?;
        }
        file.write_all(password.as_bytes())
            .map_err(|source| EmbeddedError::WriteFile {
                path: pwfile.clone(),
                source,
            })?;
        drop(file);
        let pwfile_arg = format!("--pwfile={}", pwfile.display());
        let initdb = self.host.programs.find("initdb", None)?;
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
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            let failed = EmbeddedError::Initdb {
                dir: self.dir.clone(),
                disk_full: disk_full(&stderr),
            };
            return Err(Error::from(failed).detail(stderr));
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
        // initdb made this file as the server user: append without
        // following a link, as root must not write through one.
        let conf_path = tmp.join("postgresql.conf");
        std::fs::File::options()
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&conf_path)
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .map_err(|source| EmbeddedError::WriteFile {
                path: conf_path.clone(),
                source,
            })?;
        std::fs::rename(&tmp, self.data()).map_err(|source| {
            EmbeddedError::MoveIntoPlace {
                path: tmp.clone(),
                source,
            }
            .into()
        })
    }

    pub fn stop(&self) -> Result<bool> {
        if !self.dir.exists() {
            return Ok(false);
        }
        // pg_ctl signals the pid a postmaster.pid names: only trust ours.
        let owner = self
            .server_user()?
            .map_or(nix::unistd::geteuid(), |u| u.uid);
        check_existing_dir(&self.dir, owner)?;
        if !self.data().join("PG_VERSION").is_file() || !self.pg_ctl_status()? {
            return Ok(false);
        }
        let out = self.run_as_server(
            self.host.programs.find("pg_ctl", self.cluster_major())?,
            &["stop", "-m", "fast", "-w", "-D"],
            &[self.data().as_os_str()],
        )?;
        if !out.status.success() {
            return Err(Error::from(EmbeddedError::DidNotStop {
                dir: self.dir.clone(),
            })
            .detail(String::from_utf8_lossy(&out.stderr).into_owned()));
        }
        Ok(true)
    }

    /// Take the start lock, waiting at most MIGSNAP_SERVER_LOCK_TIMEOUT
    /// seconds. The holder writes its pid into the file, so a wait that
    /// times out can say who holds it.
    fn lock(&self, ui: &Events) -> Result<std::fs::File> {
        let runtime = runtime_dir();
        let mode = if nix::unistd::geteuid().is_root() {
            0o711
        } else {
            0o700
        };
        // Another local user can create this name first in a shared temp
        // dir; migsnap never uses it then, and only TMPDIR moves it.
        private_dir(&runtime, mode, None).map_err(|e| RuntimeDir {
            dir: runtime.clone(),
            source: e,
        })?;
        let path = self.lock_path();
        let mut file = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|source| EmbeddedError::LockFile {
                path: path.clone(),
                source,
            })?;
        if file.try_lock().is_err() {
            let timeout = self.host.lock_timeout;
            ui.waiting(format!(
                "waiting for another migsnap starting the embedded server{}…",
                holder(&path)
            ));
            let deadline = Instant::now() + timeout;
            while file.try_lock().is_err() {
                if Instant::now() >= deadline {
                    return Err(EmbeddedError::LockTimeout {
                        secs: timeout.as_secs(),
                        path: path.clone(),
                        holder: holder(&path),
                        dir: self.dir.clone(),
                    }
                    .into());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // Best effort: the pid only makes a later timeout message clearer.
        let _ = file
            .set_len(0)
            .and_then(|_| file.write_all(std::process::id().to_string().as_bytes()));
        Ok(file)
    }

    /// A postmaster that was SIGKILLed but not yet reaped (a zombie, whose
    /// pid still answers `kill -0`) makes pg_ctl report the server running
    /// and postgres refuse to start. If that is what postmaster.pid names,
    /// remove its lock files so the server starts afresh. Returns whether
    /// it did.
    fn clear_dead_postmaster(&self) -> Result<bool> {
        let pidfile = self.data().join("postmaster.pid");
        let Some(pid) = read_nofollow(&pidfile)
            .ok()
            .and_then(|t| t.split('\n').next()?.trim().parse::<i32>().ok())
        else {
            return Ok(false);
        };
        if process_alive(pid) {
            return Ok(false);
        }
        let socket_lock = self
            .socket_dir()
            .join(format!(".s.PGSQL.{}.lock", self.port()));
        for file in [pidfile, socket_lock, self.socket_file()] {
            remove_if_present(&file)?;
        }
        Ok(true)
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
        // initdb and pg_ctl read PGDATA, PGPORT, PGOPTIONS…: only our
        // arguments may decide what they do.
        crate::pg::scrub_pg_env(&mut cmd);
        if let Some(user) = self.server_user()? {
            cmd.uid(user.uid.as_raw())
                .gid(user.gid.as_raw())
                .env("HOME", &self.dir)
                .env("USER", &user.name);
        }
        cmd.output().map_err(|source| {
            ToolError::Run {
                path: program,
                source,
            }
            .into()
        })
    }
}

/// As root, the server user must be able to traverse every ancestor of the
/// server dir (root's home usually is not): say so plainly instead of
/// letting initdb fail with a permission error.
fn check_reachable(dir: &Path, user: &nix::unistd::User) -> Result<()> {
    for ancestor in dir.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(ancestor) else {
            continue;
        };
        let others_x = meta.mode() & 0o001 != 0;
        let group_x = meta.mode() & 0o010 != 0 && meta.gid() == user.gid.as_raw();
        if !(others_x || group_x || meta.uid() == user.uid.as_raw()) {
            return Err(EmbeddedError::Unreachable {
                user: user.name.clone(),
                dir: dir.to_path_buf(),
                closed: ancestor.to_path_buf(),
            }
            .into());
        }
    }
    Ok(())
}

/// Make `dir` a private directory: create it with one `mkdir` (so a link
/// or directory planted at the path is never followed or adopted), set
/// `mode` on it and, as root, hand it to the server `user`. If it exists
/// already, use it only if `check_existing_dir` accepts it; a directory
/// migsnap did not create is never chowned or chmodded.
fn private_dir(dir: &Path, mode: u32, user: Option<&nix::unistd::User>) -> Result<()> {
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let owner = user.map_or(nix::unistd::geteuid(), |u| u.uid);
            return check_existing_dir(dir, owner);
        }
        Err(source) => {
            return Err(EmbeddedError::CreateDir {
                dir: dir.to_path_buf(),
                source,
            }
            .into())
        }
    }
    // Through a handle on the directory just made, never the path again.
    let fix = || -> std::io::Result<()> {
        let handle = std::fs::File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
            .open(dir)?;
        // The umask may have taken bits `mode` asks for (0711's x for others).
        handle.set_permissions(std::fs::Permissions::from_mode(mode))?;
        if let Some(u) = user {
            std::os::unix::fs::fchown(&handle, Some(u.uid.as_raw()), Some(u.gid.as_raw()))?;
        }
        Ok(())
    };
    fix().map_err(|source| {
        EmbeddedError::SetUpDir {
            dir: dir.to_path_buf(),
            source,
        }
        .into()
    })
}

/// An existing directory migsnap keeps private files in must be a real
/// directory (not a link), owned by `owner`, that no other user can write.
pub fn check_existing_dir(dir: &Path, owner: nix::unistd::Uid) -> Result<()> {
    let meta = std::fs::symlink_metadata(dir).map_err(|source| EmbeddedError::Inspect {
        dir: dir.to_path_buf(),
        source,
    })?;
    let name = |uid: u32| {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or(format!("uid {uid}"), |u| format!("`{}`", u.name))
    };
    let problem = if meta.file_type().is_symlink() {
        Some("is a symbolic link".to_string())
    } else if !meta.is_dir() {
        Some("is not a directory".to_string())
    } else if meta.mode() & 0o022 != 0 {
        Some(format!(
            "can be written by other users (mode {:o})",
            meta.mode() & 0o7777
        ))
    } else if meta.uid() != owner.as_raw() {
        Some(format!(
            "belongs to {}, not {}",
            name(meta.uid()),
            name(owner.as_raw())
        ))
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(why) => Err(EmbeddedError::UnsafeDir {
            dir: dir.to_path_buf(),
            why,
        }
        .into()),
    }
}

/// Whether files in `dir` can share blocks (FICLONE: XFS with reflink=1,
/// btrfs, bcachefs), tried on two unnamed temp files so nothing is left
/// behind.
#[cfg(target_os = "linux")]
fn reflink_supported(dir: &Path) -> bool {
    let (Ok(mut src), Ok(dst)) = (tempfile::tempfile_in(dir), tempfile::tempfile_in(dir)) else {
        return false;
    };
    src.write_all(&[0; 4096]).is_ok() && rustix::fs::ioctl_ficlone(&dst, &src).is_ok()
}

#[cfg(not(target_os = "linux"))]
fn reflink_supported(_dir: &Path) -> bool {
    false
}

/// Read a file without following a link at its last component.
fn read_nofollow(path: &Path) -> std::io::Result<String> {
    let mut text = String::new();
    std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?
        .read_to_string(&mut text)?;
    Ok(text)
}

/// Unlink `path` (a link itself, never its target) if it exists.
fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(EmbeddedError::Remove {
            path: path.to_path_buf(),
            source,
        }
        .into()),
    }
}

/// Whether `pid` is a live process: not gone, and not a zombie (killed but
/// not reaped yet, which `kill -0` still finds).
fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and
        // may itself contain spaces or parentheses.
        Ok(stat) => stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok(),
    }
}

/// ` (held by pid N)` from a lock file's contents, when it names one.
fn holder(lock: &Path) -> String {
    read_nofollow(lock)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .map_or(String::new(), |pid| format!(" (held by pid {pid})"))
}

/// The hint for a failed initdb: a full disk says so in its stderr.
/// Whether initdb failed for want of disk space.
fn disk_full(stderr: &str) -> bool {
    stderr.contains("No space left on device")
}

/// Why the embedded server could not be used, as data: its directory, the
/// lock, the user it runs as (the binary says how to fix each).
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("the embedded server in {} is running with another port", .dir.display())]
    OtherPort { dir: PathBuf },
    /// pg_ctl's output and the log's tail go in the error's detail.
    #[error("the embedded PostgreSQL server did not start")]
    DidNotStart { dir: PathBuf, log: PathBuf },
    /// pg_ctl's stderr goes in the error's detail.
    #[error("could not stop the embedded server")]
    DidNotStop { dir: PathBuf },
    #[error("cannot create `{}`", .dir.display())]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// initdb's stderr goes in the error's detail.
    #[error("initdb failed for the embedded server")]
    Initdb { dir: PathBuf, disk_full: bool },
    #[error("cannot open the lock file `{}`", .path.display())]
    LockFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `holder` says who holds it, when the file says (or is empty).
    #[error("gave up after {secs} s waiting for the lock `{}`{holder}", .path.display())]
    LockTimeout {
        secs: u64,
        path: PathBuf,
        holder: String,
        dir: PathBuf,
    },
    /// As root: the server's user cannot get through `closed` to `dir`.
    #[error(
        "the embedded server runs as `{user}`, which cannot reach `{}`: `{}` is closed to it",
        .dir.display(),
        .closed.display()
    )]
    Unreachable {
        user: String,
        dir: PathBuf,
        closed: PathBuf,
    },
    /// An existing directory that is a link, not a directory, writable by
    /// others or someone else's: `why` says which.
    #[error("refusing to use `{}` for the embedded server: it {why}", .dir.display())]
    UnsafeDir { dir: PathBuf, why: String },
    #[error(
        "running as root, but there is no unprivileged user `{name}` to run the embedded PostgreSQL server"
    )]
    NoServerUser { name: String },
    #[error("cannot inspect `{}`", .dir.display())]
    Inspect {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// Setting the mode or owner of a directory just made.
    #[error("cannot set up the new directory `{}`", .dir.display())]
    SetUpDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// A cluster left half-made by a crashed initdb, in the way of a new one.
    #[error("cannot remove `{}`", .path.display())]
    RemoveHalfMade {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file of the server dir to be made anew (the password file).
    #[error("cannot remove `{}`", .path.display())]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create `{}`", .path.display())]
    CreateFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// As root: giving the server `user` a file it must read.
    #[error("cannot hand `{}` to `{user}`", .path.display())]
    HandOver {
        path: PathBuf,
        user: String,
        source: std::io::Error,
    },
    #[error("cannot write `{}`", .path.display())]
    WriteFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The new cluster's directory renamed to where the server runs it.
    #[error("cannot move `{}` into place", .path.display())]
    MoveIntoPlace {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl crate::error::Typed for EmbeddedError {
    fn kind(&self) -> Kind {
        match self {
            EmbeddedError::DidNotStart { .. }
            | EmbeddedError::DidNotStop { .. }
            | EmbeddedError::Initdb { .. }
            | EmbeddedError::LockTimeout { .. } => Kind::Server,
            // Files of a directory migsnap made itself: the system failed.
            EmbeddedError::SetUpDir { .. }
            | EmbeddedError::Remove { .. }
            | EmbeddedError::CreateFile { .. }
            | EmbeddedError::HandOver { .. }
            | EmbeddedError::WriteFile { .. }
            | EmbeddedError::MoveIntoPlace { .. } => Kind::Internal,
            _ => Kind::Usage,
        }
    }
}

/// The runtime dir that holds migsnap's locks could not be used: the
/// directory's own error, and which directory it is, for the hint.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct RuntimeDir {
    pub dir: PathBuf,
    source: Error,
}

impl crate::error::Typed for RuntimeDir {
    fn kind(&self) -> Kind {
        self.source.kind
    }
}

impl Embedded {
    /// As root: the unprivileged user that runs the server. Otherwise None.
    fn server_user(&self) -> Result<Option<nix::unistd::User>> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(None);
        }
        let name = &self.host.user;
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) if !u.uid.is_root() => Ok(Some(u)),
            _ => Err(EmbeddedError::NoServerUser { name: name.clone() }.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_told_from_other_initdb_failures() {
        let full = "initdb: error: could not create directory \"/tmp/s/data.tmp/base\": No space left on device\n";
        assert!(disk_full(full));
        let other = "initdb: error: invalid locale settings\n";
        assert!(!disk_full(other));
    }

    #[test]
    fn reflink_probe_says_no_on_tmpfs_and_leaves_nothing() {
        // tmpfs has no reflinks (ext4 neither; XFS needs a loop device:
        // scripts/bench_reflink.sh).
        let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
            return;
        };
        assert!(!reflink_supported(dir.path()));
        assert!(!reflink_supported(&dir.path().join("absent")));
        assert_eq!(std::fs::read_dir(dir.path()).expect("read_dir").count(), 0);
    }

    #[test]
    fn zombies_and_missing_processes_are_not_alive() {
        assert!(process_alive(std::process::id() as i32));
        let mut child = Command::new("true").spawn().expect("spawn true");
        let pid = child.id() as i32;
        // Exited, not reaped yet: a zombie.
        while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z"))
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!process_alive(pid), "a zombie is not alive");
        child.wait().expect("reap");
        assert!(!process_alive(pid), "a reaped process is not alive");
    }
}
