//! Writing a small file so that it survives a power cut whole or not at all.

use std::io::Write as _;
use std::path::Path;

/// Writes `contents` to `path` atomically and durably: a temporary file beside it, fsync'd,
/// renamed into place, then the directory fsync'd (a rename is durable only once its directory
/// is). A crash leaves the old file or the new one, never a torn one.
///
/// # Errors
///
/// The first I/O error.
pub fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_with_mode(path, contents, 0o666)
}

/// [`write_atomically`] for a secret: the file is readable and writable by its owner only, from
/// the moment it is created.
///
/// # Errors
///
/// The first I/O error.
pub fn write_secret_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_with_mode(path, contents, 0o600)
}

fn write_with_mode(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let directory = path.parent().unwrap_or(Path::new("."));
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = Path::new(&temporary);
    // A temporary left by a crash keeps its mode when reopened: start from a new file.
    match std::fs::remove_file(temporary) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    // The mode of a new file, less the process's umask (0o666 is what `File::create` asks for).
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(temporary, path)?;
    std::fs::File::open(directory)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_replaced_whole_and_no_temporary_is_left() {
        let directory = std::env::temp_dir().join(format!("distsync-durable-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("node-id");
        write_atomically(&path, b"1\n").unwrap();
        write_atomically(&path, b"22\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"22\n");
        assert_eq!(std::fs::read_dir(&directory).unwrap().count(), 1, "only the file itself");
        use std::os::unix::fs::PermissionsExt as _;
        let secret = directory.join("secret");
        write_secret_atomically(&secret, b"key").unwrap();
        assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::remove_file(&secret).unwrap();
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
