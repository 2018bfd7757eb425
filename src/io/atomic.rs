//! Atomic file writes: a temp file in the same folder, fsync, then rename.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Write `bytes` to `path` so that readers see either the old file or the whole new one.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let tmp = hidden_sibling(path, &format!("{}.tmp", std::process::id()))?;
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// `.NAME.SUFFIX` beside `path` (same folder, so a rename onto `path` stays atomic).
fn hidden_sibling(path: &Path, suffix: &str) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::io(path, std::io::Error::other("path has no file name")))?;
    Ok(path.with_file_name(format!(".{}.{suffix}", name.to_string_lossy())))
}

/// `dir`'s stand-in while [`replace_dir`] swaps it: the previous complete folder.
fn previous_of(dir: &Path) -> Result<PathBuf> {
    hidden_sibling(dir, "previous")
}

/// Replace the folder `dir` as one unit: `fill` writes the new contents into a fresh
/// temp folder beside it, then two renames swap it in. A crash while `fill` runs leaves
/// `dir` as it was; a crash between the renames leaves the previous folder under a
/// name [`existing_dir`] finds. So several files that only make sense together (an
/// adapter, the optimizer moments and the loop state of one checkpoint) never mix.
pub fn replace_dir(dir: impl AsRef<Path>, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = dir.as_ref();
    let tmp = hidden_sibling(dir, &format!("{}.tmp", std::process::id()))?;
    let previous = previous_of(dir)?;
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        if previous.exists() {
            std::fs::remove_dir_all(&previous).map_err(|e| Error::io(&previous, e))?;
        }
        std::fs::rename(dir, &previous).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
    // The renames reach the disk with their folder's own fsync (best effort: not every
    // platform can open a folder for it).
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty())
        && let Ok(folder) = std::fs::File::open(parent)
    {
        let _ = folder.sync_all();
    }
    if previous.exists() {
        std::fs::remove_dir_all(&previous).map_err(|e| Error::io(&previous, e))?;
    }
    Ok(())
}

/// The folder [`replace_dir`] last completed at `dir`: `dir` itself, or, after a crash
/// between its two renames, the previous complete folder. `None` when neither exists.
pub fn existing_dir(dir: impl AsRef<Path>) -> Option<PathBuf> {
    let dir = dir.as_ref();
    if dir.is_dir() {
        return Some(dir.to_path_buf());
    }
    previous_of(dir).ok().filter(|p| p.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_fill_leaves_the_folder_and_a_crash_between_renames_is_recoverable() {
        let root = std::env::temp_dir().join(format!("burn-lora-replace-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("last");
        let fill = |text: &'static str| {
            move |d: &Path| {
                write_atomic(d.join("a"), text.as_bytes())?;
                write_atomic(d.join("b"), text.as_bytes())
            }
        };
        let read = |d: &Path| {
            (
                std::fs::read_to_string(d.join("a")).unwrap(),
                std::fs::read_to_string(d.join("b")).unwrap(),
            )
        };
        replace_dir(&dir, fill("one")).unwrap();
        assert_eq!(read(&dir), ("one".into(), "one".into()));

        // The writer fails after its first file: the old unit stays, nothing half-new.
        let err = replace_dir(&dir, |d: &Path| {
            write_atomic(d.join("a"), b"two")?;
            Err(Error::InvalidState("disk full".into()))
        });
        assert!(err.is_err());
        assert_eq!(read(&dir), ("one".into(), "one".into()));
        assert_eq!(
            std::fs::read_dir(&root).unwrap().count(),
            1,
            "temp folder left"
        );

        // As after a crash between the renames: only the previous folder exists.
        std::fs::rename(&dir, previous_of(&dir).unwrap()).unwrap();
        let found = existing_dir(&dir).unwrap();
        assert_eq!(read(&found), ("one".into(), "one".into()));
        replace_dir(&dir, fill("three")).unwrap();
        assert_eq!(existing_dir(&dir).unwrap(), dir);
        assert_eq!(read(&dir), ("three".into(), "three".into()));
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 1);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
