//! The journal on disk ([`tranlog`]): single-node mode.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use engine::{Record, Recovery};
use tokio::sync::mpsc;

use super::{Fault, Journal, Progress, Report};
use crate::config::JournalSettings;

/// The journal on disk ([`tranlog`]).
#[derive(Debug)]
pub(super) struct DiskJournal {
    writer: tranlog::Writer,
    /// Appended since the last flush.
    pending: Vec<Record>,
    reports: Option<mpsc::UnboundedReceiver<Report>>,
}

/// What opening the journal found.
#[derive(Debug)]
pub(super) struct Opened {
    pub(super) journal: DiskJournal,
    /// The records read back, for [`engine::Engine::recover`].
    pub(super) recovery: Recovery,
    pub(super) scanned: tranlog::Scanned,
    /// The card key: configured, or kept in the journal directory.
    pub(super) card_key: engine::CardKey,
}

impl DiskJournal {
    /// Reads the journal in `settings.dir` back (cutting off a torn tail) and starts writing after it.
    pub(super) fn open(settings: &JournalSettings, dir: &Path) -> Result<Opened, tranlog::Error> {
        let mut recovery = Recovery::default();
        let mode = tranlog::Mode {
            repair: true,
            on_corrupt: settings.on_corrupt,
        };
        // The scan that repairs holds the directory (made if absent) against a second switch while it
        // reads and cuts, and the writer from its start; the card key kept there is read between them
        // (made at most once: a racing second switch fails to make it again, and is refused).
        let scanned = tranlog::scan(dir, mode, |_, record| recovery.add(record))?;
        let card_key = match settings.card_key {
            Some(key) => key,
            None => engine::CardKey(stored_key(dir)?),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = tranlog::Writer::start(dir, settings.options.clone(), &scanned, move |r| {
            let report = match r {
                Ok(batch) => Report::Durable(batch),
                Err(error) => Report::Failed(Fault::Disk(Arc::new(error))),
            };
            let _ = tx.send(report);
        })?;
        Ok(Opened {
            journal: DiskJournal {
                writer,
                pending: Vec::new(),
                reports: Some(rx),
            },
            recovery,
            scanned,
            card_key,
        })
    }
}

impl Journal for DiskJournal {
    fn append(&mut self, record: Record) -> u64 {
        self.pending.push(record);
        self.writer.next_seq() + self.pending.len() as u64 - 1
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            self.writer.append_all(std::mem::take(&mut self.pending));
        }
    }

    fn reports(&mut self) -> Option<mpsc::UnboundedReceiver<Report>> {
        self.reports.take()
    }

    fn progress(&mut self, progress: Progress) {
        self.writer.keep_from(progress.oldest_needed);
    }

    fn close(mut self: Box<Self>) {
        self.flush();
        self.writer.close();
    }
}

/// The card key kept in `card.key` in the journal directory, made (from the OS's randomness, readable by
/// the owner only) the first time.
fn stored_key(dir: &Path) -> std::io::Result<[u8; 16]> {
    let path = dir.join("card.key");
    match std::fs::read_to_string(&path) {
        Ok(hex) => {
            let mut key = [0u8; 16];
            hex::decode_to_slice(hex.trim(), &mut key).map_err(|e| {
                std::io::Error::other(format!("{}: not a 32-hex-digit key: {e}", path.display()))
            })?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 16];
            std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut key)?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&path)?;
            file.write_all(hex::encode(key).as_bytes())?;
            file.sync_all()?;
            tracing::warn!(path = %path.display(), "card key made and kept beside the journal; configure journal.card_key or ACQUIRO_CARD_KEY to keep it elsewhere");
            Ok(key)
        }
        Err(e) => Err(e),
    }
}
