//! One writer to a journal directory. A process that repairs or writes a journal holds an exclusive lock
//! on the directory's `lock` file for as long as it does: a second one (a second `serve` started on the
//! same directory) would cut the first one's newest records off as a torn tail and interleave its own
//! with them, so it is refused instead, naming the process that holds the directory. The kernel drops
//! the lock with the process however it ends, so a crash leaves no stale lock behind. Readers (`verify`,
//! `export`, `show`) take no lock: they read what is durable beside a running writer.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use crate::Error;

/// The lock's file in the journal directory; segment listing passes it by, as any file not named as a
/// segment (so an earlier release reads a directory a later one locked).
const FILE: &str = "lock";

/// The directory held: released when dropped.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

/// Locks `dir` (made if absent) for this process, or [`Error::InUse`] if another holds it.
pub(crate) fn acquire(dir: &Path) -> Result<DirLock, Error> {
    std::fs::create_dir_all(dir)?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(FILE))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            file.read_to_string(&mut holder)?;
            return Err(Error::InUse {
                dir: dir.to_path_buf(),
                holder: holder.trim().to_owned(),
            });
        }
        Err(TryLockError::Error(e)) => return Err(e.into()),
    }
    // Who holds it, for the refusal of the next one.
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(DirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_held_by_one_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let held = acquire(dir.path()).unwrap();
        let refused = acquire(dir.path()).unwrap_err();
        let said = refused.to_string();
        assert!(matches!(refused, Error::InUse { .. }), "{said}");
        assert!(
            said.contains(&format!("pid {}", std::process::id())),
            "{said}"
        );
        drop(held);
        // A writer holds it until it is closed, its threads joined.
        let writer = crate::Writer::start(
            dir.path(),
            crate::Options::default(),
            &crate::Scanned::default(),
            |_| {},
        )
        .unwrap();
        assert!(acquire(dir.path()).is_err(), "the writer still holds it");
        writer.close();
        acquire(dir.path()).unwrap();
    }
}
