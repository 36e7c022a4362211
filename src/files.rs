//! Opening files that live in directories others might plant links in (the
//! cache dir, the server dir): never through a symlink in the last path
//! component. A leaf module, shared by the store and the restore.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Open `path` for reading without following a symlink in its last
/// component: the directory is ours, but a link planted in it could point
/// anywhere. Nor does it wait on a FIFO planted there (O_NONBLOCK: the
/// open returns at once, and a read finds nothing to read, an error),
/// which would hang the command; on a regular file the flag changes
/// nothing.
pub fn open_no_follow(path: &Path) -> std::io::Result<File> {
    File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// The whole of `path`, read as `open_no_follow` opens it.
pub fn read_no_follow(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open_no_follow(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The whole of `path`, a plain file of at most `max` bytes (through links:
/// it is the user's own, as `manage.py` is), opened without waiting on a
/// FIFO put there and refused when it is none (a FIFO, a device such as
/// `/dev/zero`, a directory) or larger: an error, never a hang or a read
/// without end.
pub fn read_plain(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let invalid = |why: &str| std::io::Error::other(why.to_string());
    if !file.metadata()?.is_file() {
        return Err(invalid("not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(invalid("larger than expected"));
    }
    Ok(bytes)
}

/// Test helpers for what may hang: a FIFO, and a call given a deadline.
#[cfg(test)]
pub(crate) mod hang {
    use std::path::Path;

    /// A FIFO at `path` (`mkfifo`: no unsafe code for mknod).
    pub fn mkfifo(path: &Path) {
        let made = std::process::Command::new("mkfifo").arg(path).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo {}", path.display());
    }

    /// `f`'s result, or a failed test naming `what` when it has not
    /// returned within 20 s (its thread is left waiting).
    pub fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{what}: waits instead of returning"))
    }
}

#[cfg(test)]
mod tests {
    use super::hang::{mkfifo, within};
    use super::*;

    /// A FIFO planted where a file of ours should be: an error at once,
    /// not a wait for a writer that never comes.
    #[test]
    fn a_planted_fifo_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("statcache");
        mkfifo(&fifo);
        let read = within("the read of a FIFO", move || {
            read_no_follow(&fifo).map(|b| b.len())
        });
        assert!(read.is_err() || read.is_ok_and(|n| n == 0), "nothing read");
    }

    /// What `read_plain` refuses at once: a FIFO, a device that never
    /// ends, a directory, a file over the limit.
    #[test]
    fn only_a_plain_file_within_the_limit_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("manage.py");
        mkfifo(&fifo);
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).expect("link");
        let paths = [fifo, zero, dir.path().to_path_buf()];
        let refused = within("a read", move || {
            paths.map(|p| read_plain(&p, 1 << 20).is_err())
        });
        assert_eq!(refused, [true; 3]);
        let big = dir.path().join("big");
        std::fs::write(&big, [b'x'; 11]).expect("write");
        assert!(read_plain(&big, 10).is_err());
        assert_eq!(read_plain(&big, 11).expect("read").len(), 11);
    }
}
