//! The simulated disk under the journal: one segment of real journal bytes (tranlog's record encoding),
//! of which only what a group commit synced is sure to survive a crash. A crash keeps the synced bytes
//! and any prefix of the rest, cut at any byte; recovery reads it back with tranlog's own scan, which cuts
//! a torn tail off, exactly as at a real restart.

use std::path::PathBuf;

use engine::{Record, Recovery};
use fastrand::Rng;
use tempfile::TempDir;

pub(crate) struct Disk {
    bytes: Vec<u8>,
    /// Bytes a sync made durable.
    synced: usize,
    next_seq: u64,
    last_crc: u32,
    dir: TempDir,
    path: PathBuf,
}

impl Disk {
    pub(crate) fn new() -> Disk {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = tranlog::format::segment_path(dir.path(), 1);
        let header = tranlog::format::segment_header(1).to_vec();
        Disk {
            // The writer syncs a segment's header when it creates the segment.
            synced: header.len(),
            bytes: header,
            next_seq: 1,
            last_crc: 0,
            dir,
            path,
        }
    }

    /// Appends a record; returns its sequence number.
    pub(crate) fn append(&mut self, record: &Record) -> u64 {
        let seq = self.next_seq;
        self.last_crc = tranlog::format::encode(record, seq, self.last_crc, &mut self.bytes)
            .expect("a record encodes");
        self.next_seq += 1;
        seq
    }

    pub(crate) fn unsynced(&self) -> bool {
        self.bytes.len() > self.synced
    }

    /// The group commit: every record appended is durable. Returns the last one's number.
    pub(crate) fn sync(&mut self) -> u64 {
        self.synced = self.bytes.len();
        self.next_seq - 1
    }

    /// The process dies: what was synced stays, and of the rest any prefix, torn at any byte.
    pub(crate) fn crash(&mut self, rng: &mut Rng) {
        let kept = self.synced + rng.usize(0..=self.bytes.len() - self.synced);
        self.bytes.truncate(kept);
    }

    /// Reads the journal back as a restart does (cutting a torn tail), and goes on writing after it.
    pub(crate) fn recover(&mut self) -> Recovery {
        let mut recovery = Recovery::default();
        let scanned = self.scan(|record| recovery.add(record));
        self.bytes = std::fs::read(&self.path).expect("the repaired segment");
        self.synced = self.bytes.len();
        self.next_seq = scanned.last_seq + 1;
        self.last_crc = scanned.last_crc();
        recovery
    }

    /// Every record on the disk, after a last scan.
    pub(crate) fn records(&self) -> Vec<Record> {
        let mut records = Vec::new();
        self.scan(|record| records.push(record));
        records
    }

    fn scan(&self, mut each: impl FnMut(Record)) -> tranlog::Scanned {
        std::fs::write(&self.path, &self.bytes).expect("the segment written");
        let mode = tranlog::Mode {
            repair: true,
            on_corrupt: tranlog::OnCorrupt::Stop,
        };
        let scanned = tranlog::scan(self.dir.path(), mode, |_, record| each(record))
            .expect("the journal scans");
        assert!(
            scanned.problems.is_empty(),
            "a crash can only tear the tail: {:?}",
            scanned.problems
        );
        scanned
    }
}
