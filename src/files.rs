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

#[cfg(test)]
mod tests {
    use super::*;

    /// A FIFO planted where a file of ours should be: an error at once,
    /// not a wait for a writer that never comes.
    #[test]
    fn a_planted_fifo_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("statcache");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(read_no_follow(&fifo).map(|b| b.len()));
        });
        let read = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the read waits on the FIFO instead of returning");
        assert!(read.is_err() || read.is_ok_and(|n| n == 0), "nothing read");
    }
}
