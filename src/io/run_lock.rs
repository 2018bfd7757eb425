//! One writer per run folder: a lock file holding the writer's process id, created with
//! `create_new` (O_EXCL) before anything else is written and removed when the run ends.
//!
//! A second run on the same folder fails at once with [`Error::RunFolderLocked`] naming the
//! holder. A lock left by a process that is gone (killed: no destructor ran) is taken over
//! where that can be told (Linux: `/proc/<pid>`); elsewhere the error says which file to
//! remove.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The lock file's name inside a run folder.
pub const LOCK_FILE: &str = "burn_lora.lock";

/// A held run-folder lock; dropping it releases the folder.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

impl RunLock {
    /// Take `dir`'s lock (creating `dir` if needed).
    pub fn acquire(dir: impl AsRef<Path>) -> Result<RunLock> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Self::take(dir, dir.join(LOCK_FILE))
    }

    /// Take the lock of an output folder that is written whole and swapped in (a merged
    /// export): the lock file sits beside it, `PARENT/.NAME.burn_lora.lock`, since a file
    /// inside would go with the old folder.
    pub fn acquire_beside(dir: impl AsRef<Path>) -> Result<RunLock> {
        let dir = dir.as_ref();
        let name = dir.file_name().ok_or_else(|| Error::InvalidSetting {
            name: "out",
            message: format!("{} names no folder", dir.display()),
        })?;
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        let file = format!(".{}.{LOCK_FILE}", name.to_string_lossy());
        Self::take(dir, parent.join(file))
    }

    /// Create `path` exclusively with this process's id; `dir` is what it guards.
    fn take(dir: &Path, path: PathBuf) -> Result<RunLock> {
        // Two tries: the second after taking over a stale lock (another process may win
        // that race; then its lock stands and this run is refused).
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    write!(file, "{}", std::process::id()).map_err(|e| Error::io(&path, e))?;
                    return Ok(RunLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|t| t.trim().parse::<u32>().ok());
                    match holder {
                        Some(pid) if process_is_gone(pid) => {
                            let _ = std::fs::remove_file(&path);
                        }
                        _ => {
                            return Err(Error::RunFolderLocked {
                                dir: dir.to_path_buf(),
                                pid: holder,
                                lock: path,
                            });
                        }
                    }
                }
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Err(Error::RunFolderLocked {
            dir: dir.to_path_buf(),
            pid: None,
            lock: path,
        })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether process `pid` has certainly exited. Only Linux can tell here (`/proc`); elsewhere
/// a lock is never taken over.
fn process_is_gone(pid: u32) -> bool {
    cfg!(target_os = "linux")
        && pid != std::process::id()
        && Path::new("/proc/self").exists()
        && !Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("burn-lora-lock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_second_writer_is_refused_and_the_lock_goes_with_the_first() {
        let dir = scratch("second");
        let first = RunLock::acquire(&dir).unwrap();
        let err = RunLock::acquire(&dir).unwrap_err();
        assert!(
            matches!(err, Error::RunFolderLocked { pid: Some(p), .. } if p == std::process::id()),
            "{err}"
        );
        drop(first);
        assert!(!dir.join(LOCK_FILE).exists());
        assert!(RunLock::acquire(&dir).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_lock_beside_survives_the_folder_being_swapped() {
        let parent = scratch("beside");
        let out = parent.join("merged");
        let first = RunLock::acquire_beside(&out).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        std::fs::remove_dir_all(&out).unwrap();
        assert!(matches!(
            RunLock::acquire_beside(&out),
            Err(Error::RunFolderLocked { .. })
        ));
        drop(first);
        assert!(RunLock::acquire_beside(&out).is_ok());
        std::fs::remove_dir_all(&parent).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_lock_of_a_dead_process_is_taken_over() {
        let dir = scratch("stale");
        std::fs::create_dir_all(&dir).unwrap();
        // A process that has exited: its pid is free (reuse within the test is unlikely).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        std::fs::write(dir.join(LOCK_FILE), pid.to_string()).unwrap();
        let lock = RunLock::acquire(&dir).unwrap();
        let holder = std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap();
        assert_eq!(holder, std::process::id().to_string());
        drop(lock);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
