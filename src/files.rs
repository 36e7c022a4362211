//! Opening files that live in directories others might plant links in (the
//! cache dir, the server dir): never through a symlink in the last path
//! component. A leaf module, shared by the store and the restore.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Open `path` for reading without following a symlink in its last
/// component: the directory is ours, but a link planted in it could point
/// anywhere.
pub fn open_no_follow(path: &Path) -> std::io::Result<File> {
    File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// The whole of `path`, read as `open_no_follow` opens it.
pub fn read_no_follow(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open_no_follow(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}
