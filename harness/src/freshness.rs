//! A stale binary is refused: the cluster tests and the fault suite run the `distsync` binary
//! in `target/`, which `cargo test` does not rebuild (a test crate cannot depend on another
//! package's binary). A binary older than any source file it was built from would test old code
//! and pass; it is an error instead. The sources are the ones cargo itself lists for the binary
//! in its dep-info file (`target/<profile>/distsync.d`), so the check agrees with cargo on what
//! needs a rebuild.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context as _;

/// Fails when a source file that cargo's dep-info lists for `binary` changed after `binary` was
/// written. A binary without dep-info beside it (installed, or named by the caller) passes.
///
/// # Errors
///
/// Naming the newer source and the command that rebuilds the binary.
pub(crate) fn ensure_built_from_current_sources(binary: &Path) -> anyhow::Result<()> {
    let dep_info = binary.with_extension("d");
    let Ok(listing) = fs::read_to_string(&dep_info) else { return Ok(()) };
    let built = fs::metadata(binary)
        .and_then(|metadata| metadata.modified())
        .with_context(|| format!("cannot read the time of {}", binary.display()))?;
    if let Some((changed, path)) = newest_source(&listing) {
        if changed > built {
            let after = changed.duration_since(built).unwrap_or_default();
            anyhow::bail!(
                "the distsync binary {} is older than its source {} (changed {after:?} after the build): it would \
                 test old code; rebuild it with `cargo build -p distsync-cli` (with the profile of this run), or name \
                 a binary in DISTSYNC_BIN",
                binary.display(),
                path.display()
            );
        }
    }
    Ok(())
}

/// The most recently modified of the sources a dep-info file lists (`target: source source …`,
/// spaces in paths escaped with a backslash); a listed file that is gone counts as changed now.
fn newest_source(listing: &str) -> Option<(SystemTime, PathBuf)> {
    let first_line = listing.lines().next()?;
    let (_, sources) = first_line.split_once(": ")?;
    let mut paths = Vec::new();
    let mut current = String::new();
    let mut characters = sources.chars();
    while let Some(character) = characters.next() {
        match character {
            '\\' => current.extend(characters.next()),
            ' ' => paths.push(std::mem::take(&mut current)),
            other => current.push(other),
        }
    }
    paths.push(current);
    paths
        .into_iter()
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
        .map(|path| {
            let changed =
                fs::metadata(&path).and_then(|metadata| metadata.modified()).unwrap_or_else(|_| SystemTime::now());
            (changed, path)
        })
        .max_by_key(|(changed, _)| *changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_older_than_a_listed_source_is_refused_and_a_newer_one_passes() {
        let root = std::env::temp_dir().join(format!("distsync-freshness-{}", std::process::id()));
        fs::create_dir_all(root.join("src dir")).unwrap();
        let (old, new, binary) = (root.join("src dir/old.rs"), root.join("new.rs"), root.join("distsync"));
        fs::write(&old, "").unwrap();
        fs::write(&binary, "").unwrap();
        let listing =
            format!("{}: {} {}\n", binary.display(), old.display().to_string().replace(' ', "\\ "), new.display());
        fs::write(root.join("distsync.d"), listing).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&new, "").unwrap();
        let stale = ensure_built_from_current_sources(&binary);
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&binary, "rebuilt").unwrap();
        let fresh = ensure_built_from_current_sources(&binary);
        fs::remove_dir_all(&root).unwrap();
        let message = format!("{:#}", stale.expect_err("a source changed after the build"));
        assert!(message.contains("new.rs") && message.contains("cargo build -p distsync-cli"), "{message}");
        fresh.expect("rebuilt after the change");
    }
}
