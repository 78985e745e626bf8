//! Where journal records go. The engine emits them; the driver appends each one before carrying out the
//! actions that follow it, so a record of a forward is written before the forward leaves.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use engine::Record;
use tokio::sync::watch;

pub trait Journal: Send + 'static {
    fn append(&mut self, record: &Record);
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
    fn append(&mut self, record: &Record) {
        let mut records = self.lock();
        if records.len() == self.capacity {
            records.pop_front();
        }
        records.push_back(record.clone());
        drop(records);
        self.appended.send_modify(|n| *n += 1);
    }
}
