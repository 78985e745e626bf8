//! Where journal records go. The engine emits them; the driver appends each one and holds back every
//! message that follows it (to an issuer or a terminal) until the journal reports it durable: a forward
//! is on disk before it leaves, and a terminal is told nothing the journal could forget.

use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use engine::{Record, Recovery, TxnId};
use tokio::sync::{mpsc, watch};

use crate::config::JournalSettings;

/// What a durable journal reports, in order.
#[derive(Debug)]
pub enum Report {
    Durable(tranlog::Batch),
    /// The journal cannot write any more: nothing after this becomes durable.
    Failed(String),
}

pub trait Journal: Send + 'static {
    /// Appends a record; returns its sequence number. It may wait in memory until [`Journal::flush`].
    fn append(&mut self, record: Record) -> u64;
    /// Hands what was appended since the last flush to the disk: once per burst of events, so that
    /// the writer thread is woken once for all of their records.
    fn flush(&mut self) {}
    /// The journal's reports, taken once. `None`: a record is durable as soon as it is appended.
    fn reports(&mut self) -> Option<mpsc::UnboundedReceiver<Report>> {
        None
    }
    /// Transactions from `txn` on may still be needed by recovery (retention keeps them).
    fn keep_from(&mut self, _txn: TxnId) {}
    /// Writes out what is queued and stops.
    fn close(self: Box<Self>) {}
}

/// Keeps the most recent records in memory (for tests and for runs without a journal directory). It is
/// not durable: a crash forgets in-flight requests and queued reversals.
#[derive(Debug, Clone)]
pub struct MemoryJournal {
    records: Arc<Mutex<VecDeque<Record>>>,
    capacity: usize,
    /// Bumped on every append, so that a reader can wait for a record instead of polling.
    appended: Arc<watch::Sender<u64>>,
}

impl MemoryJournal {
    pub fn new(capacity: usize) -> MemoryJournal {
        MemoryJournal {
            records: Arc::default(),
            capacity: capacity.max(1),
            appended: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Waits until the records kept satisfy `done`.
    pub async fn wait_for(&self, mut done: impl FnMut(&[Record]) -> bool) {
        let mut changes = self.appended.subscribe();
        loop {
            let records = self.records();
            if done(&records) {
                return;
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// A copy of the records kept, oldest first.
    pub fn records(&self) -> Vec<Record> {
        self.lock().iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Record>> {
        // A panic while holding the lock cannot leave a VecDeque half-updated in a harmful way.
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Journal for MemoryJournal {
    fn append(&mut self, record: Record) -> u64 {
        let mut records = self.lock();
        if records.len() == self.capacity {
            records.pop_front();
        }
        records.push_back(record);
        drop(records);
        let mut seq = 0;
        self.appended.send_modify(|n| {
            *n += 1;
            seq = *n;
        });
        seq
    }
}

/// The journal on disk ([`tranlog`]).
#[derive(Debug)]
struct DiskJournal {
    writer: tranlog::Writer,
    /// Appended since the last flush.
    pending: Vec<Record>,
    reports: Option<mpsc::UnboundedReceiver<Report>>,
}

/// What opening the journal found.
#[derive(Debug)]
struct Opened {
    journal: DiskJournal,
    /// The records read back, for [`engine::Engine::recover`].
    recovery: Recovery,
    scanned: tranlog::Scanned,
    /// The card key: configured, or kept in the journal directory.
    card_key: [u8; 16],
}

impl DiskJournal {
    /// Reads the journal in `settings.dir` back (cutting off a torn tail) and starts writing after it.
    fn open(settings: &JournalSettings, dir: &Path) -> Result<Opened, tranlog::Error> {
        std::fs::create_dir_all(dir)?;
        let card_key = match settings.card_key {
            Some(key) => key,
            None => stored_key(dir)?,
        };
        let mut recovery = Recovery::default();
        let mode = tranlog::Mode {
            repair: true,
            on_corrupt: settings.on_corrupt,
        };
        let scanned = tranlog::scan(dir, mode, |_, record| recovery.add(record))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = tranlog::Writer::start(dir, settings.options.clone(), &scanned, move |r| {
            let report = match r {
                Ok(batch) => Report::Durable(batch),
                Err(error) => Report::Failed(error.to_string()),
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

    fn keep_from(&mut self, txn: TxnId) {
        self.writer.keep_from(txn);
    }

    fn close(mut self: Box<Self>) {
        self.flush();
        self.writer.close();
    }
}

/// The journal `settings` ask for: on disk in its directory (read back first; the card key it keeps is
/// put into the engine's settings), else in memory.
pub fn open_journal(
    settings: &mut crate::Settings,
) -> Result<(Box<dyn Journal>, Recovery), tranlog::Error> {
    let Some(dir) = settings.journal.dir.clone() else {
        tracing::warn!(
            "no journal directory: the journal is in memory, and a crash forgets in-flight requests and pending reversals"
        );
        return Ok((Box::new(MemoryJournal::new(100_000)), Recovery::default()));
    };
    let started = std::time::Instant::now();
    let opened = DiskJournal::open(&settings.journal, &dir)?;
    let s = &opened.scanned;
    tracing::info!(
        dir = %dir.display(),
        segments = s.segments.len(),
        records = s.records,
        last_seq = s.last_seq,
        took = ?started.elapsed(),
        "journal read back"
    );
    if let Some(at) = &s.torn {
        tracing::warn!(%at, "torn record at the end of the journal cut off (a crash during a write)");
    }
    for p in &s.problems {
        tracing::error!(at = %p.at, what = p.what, "journal problem");
    }
    settings.engine.card_key = opened.card_key;
    Ok((Box::new(opened.journal), opened.recovery))
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
