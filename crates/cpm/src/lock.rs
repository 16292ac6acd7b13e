//! One `cpm serve` per data directory: an exclusive lock on `DIR/cpm.lock`, held for the
//! life of the process.
//!
//! Two nodes on one directory would share the SQLite store (which survives that) but also
//! the restored registrations, the deferred queues and the nonce secret, and each would
//! deliver the other's deferred messages: the second one must not start. The lock is an OS
//! file lock (`flock` on Unix, through `std::fs::File::try_lock`), so it goes away with the
//! process however it ends (SIGKILL and crashes included) and a stale file never blocks a
//! restart. The file holds the PID of the holder, for the error message; its content is not
//! what locks. `cpm admin` does not take the lock: it works while the node runs.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

/// The lock file's name in the data directory.
pub(crate) const LOCK_FILE: &str = "cpm.lock";

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub(crate) struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock of `data_dir` (which must exist), or says who holds it.
    pub(crate) fn acquire(data_dir: &Path) -> Result<Self, String> {
        let path: PathBuf = data_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let pid = holder.trim();
                let who = if pid.is_empty() {
                    "another cpm serve".to_owned()
                } else {
                    format!("another cpm serve (pid {pid})")
                };
                return Err(format!(
                    "data directory {} is in use by {who}: {} is locked; \
                     stop that node or give this one another --data-dir",
                    data_dir.display(),
                    path.display()
                ));
            }
            Err(TryLockError::Error(e)) => {
                return Err(format!("cannot lock {}: {e}", path.display()));
            }
        }
        // Best effort: the PID is only for the message above.
        let _ = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.flush());
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_one_directory_is_refused_until_the_first_is_dropped() {
        let dir = std::env::temp_dir().join(format!("cpm-lock-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = DataDirLock::acquire(&dir).expect("first lock");
        let err = DataDirLock::acquire(&dir).expect_err("second lock");
        assert!(err.contains("in use by another cpm serve (pid "), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        drop(first);
        DataDirLock::acquire(&dir).expect("lock again after release");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
