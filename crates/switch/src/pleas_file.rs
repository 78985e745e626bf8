//! Cluster mode, `cluster.pleas_file`: the pleas a node holds (see `engine::Plea`), kept on its own
//! disk. A plea is made when a refusal is told before the database said whose the key is, which is
//! mostly while the database is away: then nothing can be left there, and a node killed before its
//! pleas' reversals commit would lose them. Written and synced before the refusals they are for are
//! told, they are taken on again when the node starts (under the same name, on the same disk).
//!
//! The file is a contract, like the journal: one JSON document, `{"version": 1, "pleas": [...]}`,
//! replaced whole (written beside, synced, renamed over, the directory synced) each time the set
//! changes, which is rare: a plea is made only while the database is away or too slow.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use engine::Plea;
use serde::{Deserialize, Serialize};

/// The only version this release writes and reads.
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Contents {
    version: u32,
    pleas: Vec<Plea>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PleasFileError {
    #[error("pleas file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "pleas file {path} cannot be read: {reason}; it names reversals owed to terminals, so it is not ignored (move it aside only once each is settled by hand)"
    )]
    Unreadable { path: PathBuf, reason: String },
}

#[derive(Debug)]
pub(crate) struct PleasFile {
    path: PathBuf,
}

impl PleasFile {
    /// The file at `path`, and the pleas it holds (none when there is no file yet).
    pub(crate) fn open(path: &Path) -> Result<(PleasFile, Vec<Plea>), PleasFileError> {
        let path = path.to_path_buf();
        let pleas = match std::fs::read(&path) {
            Ok(bytes) => {
                let unreadable = |reason: String| PleasFileError::Unreadable {
                    path: path.clone(),
                    reason,
                };
                let contents: Contents =
                    serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?;
                if contents.version != VERSION {
                    let reason =
                        format!("version {}, this release reads {VERSION}", contents.version);
                    return Err(unreadable(reason));
                }
                contents.pleas
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(PleasFileError::Io { path, source }),
        };
        Ok((PleasFile { path }, pleas))
    }

    /// Replaces the file's pleas with `pleas`, durably.
    pub(crate) fn keep(&self, pleas: &HashSet<Plea>) -> Result<(), PleasFileError> {
        let io = |source| PleasFileError::Io {
            path: self.path.clone(),
            source,
        };
        let mut sorted: Vec<Plea> = pleas.iter().cloned().collect();
        sorted.sort();
        let contents = Contents {
            version: VERSION,
            pleas: sorted,
        };
        let bytes = serde_json::to_vec(&contents).expect("pleas serialize");
        let beside = self.path.with_extension("new");
        let mut file = std::fs::File::create(&beside).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&beside, &self.path).map_err(io)?;
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty());
        std::fs::File::open(dir.unwrap_or(Path::new(".")))
            .and_then(|d| d.sync_all())
            .map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn plea(stan: u32) -> Plea {
        Plea {
            terminal: "TERM0001".into(),
            merchant: "MERCHANT0000001".into(),
            stan,
            date: 1207,
            refused_at: UNIX_EPOCH + Duration::from_micros(1_796_000_000_123_456),
        }
    }

    #[test]
    fn the_pleas_kept_are_read_back_and_a_missing_file_holds_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pleas");
        let (file, none) = PleasFile::open(&path).unwrap();
        assert!(none.is_empty());
        file.keep(&HashSet::from([plea(2), plea(1)])).unwrap();
        let (file, read) = PleasFile::open(&path).unwrap();
        assert_eq!(read, [plea(1), plea(2)]);
        file.keep(&HashSet::new()).unwrap();
        assert!(PleasFile::open(&path).unwrap().1.is_empty());
    }

    /// A pleas file of version 1, as this release writes it: every later release reads it back.
    #[test]
    fn a_pleas_file_of_version_1_is_read_back() {
        let written = r#"{"version":1,"pleas":[{"terminal":"TERM0001","merchant":"MERCHANT0000001","stan":1,"date":1207,"refused_at":{"secs_since_epoch":1796000000,"nanos_since_epoch":123456000}}]}"#;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pleas");
        std::fs::write(&path, written).unwrap();
        assert_eq!(PleasFile::open(&path).unwrap().1, [plea(1)]);
    }

    #[test]
    fn a_pleas_file_that_cannot_be_read_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pleas");
        for bad in [&b"{\"version\":2,\"pleas\":[]}"[..], b"not json"] {
            std::fs::write(&path, bad).unwrap();
            let error = PleasFile::open(&path).unwrap_err().to_string();
            assert!(
                error.contains("pleas file") && error.contains("pleas"),
                "{error}"
            );
        }
    }
}
