//! The writer thread: appends records to the current segment with group commit, rotates segments by
//! size and applies retention.
//!
//! Records arrive through a channel, in the bursts the caller hands over together. `batch` syncs at most once per batch window: it takes the first
//! record, gathers more until a window has passed since the previous sync began, writes them all with
//! one `write` and covers them with one `fdatasync`; then it reports the batch as durable. While it
//! syncs, the next batch gathers in the channel. A record that arrives after a quiet spell is synced at
//! once, and under load each window's records share one sync: the window bounds the syncs per second
//! without adding a window of latency to every record. The writer gathers the index entries of the
//! segment as it writes it; a closed segment's index is sorted and written on a second thread, so the
//! writer never waits for it.
//!
//! The file is written ahead of the records with zeros ([`ZERO_AHEAD`] at a time, not synced on their
//! own): a sync of records inside bytes the file already has changes no file size, so it commits no
//! metadata to the filesystem's journal. On this machine's disk that took a sync from 63-68 to 38-46 µs
//! of CPU and from about 6 000 to 8 500-9 500 a second. The zeros after the last record are where the
//! segment ends for the scan; a segment is cut to its records when it is closed.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use engine::{Record, TxnId};

use crate::scan::Scanned;
use crate::segment::{self, Segment};
use crate::{frame, index};

/// How far ahead of the records the file is written with zeros: a few hundred records' worth, so that
/// the one sync that carries the new size comes seldom, and its zeros are few to flush.
const ZERO_AHEAD: u64 = 256 << 10;
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// When records are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sync {
    /// One `fdatasync` per record.
    Always,
    /// At most one `fdatasync` per batch window, covering every record that arrived during it.
    #[default]
    Batch,
    /// Written to the OS, never synced: survives a crash of the process, not of the machine.
    None,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub sync: Sync,
    pub batch_window: Duration,
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// Closed segments older than this (by their last record) are deleted...
    pub retain_age: Option<Duration>,
    /// ...and the oldest while all together exceed this, but never one recovery still needs.
    pub retain_bytes: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sync: Sync::Batch,
            // Sync as soon as the previous sync is done: records that arrive during a sync share the
            // next one (group commit), so the sync rate limits itself to what the disk can do.
            // Measured at 20 000/s: p50 1.44 ms instead of 2.23 ms with a 1 ms window, same throughput.
            batch_window: Duration::ZERO,
            segment_bytes: 16 << 20,
            retain_age: None,
            retain_bytes: None,
        }
    }
}

/// A batch made durable.
#[derive(Debug, Clone, Copy)]
pub struct Batch {
    /// Every record up to this one is durable.
    pub last_seq: u64,
    pub records: usize,
    pub bytes: usize,
    /// How long the sync took (`None` when not synced).
    pub sync: Option<Duration>,
}

/// The handle on the writer thread.
#[derive(Debug)]
pub struct Writer {
    tx: Option<mpsc::Sender<Vec<Record>>>,
    thread: Option<JoinHandle<()>>,
    indexer: Option<JoinHandle<()>>,
    next_seq: u64,
    keep_from: Arc<AtomicU64>,
    /// The directory, held until both threads are joined (`stop`, then the fields drop).
    _lock: crate::lock::DirLock,
}

impl Writer {
    /// Starts writing after what `scanned` found in `dir`. `on_batch` is called on the writer thread
    /// after each batch is durable, or once with the error that stopped the writer.
    pub fn start(
        dir: &Path,
        options: Options,
        scanned: &Scanned,
        on_batch: impl FnMut(Result<Batch, std::io::Error>) + Send + 'static,
    ) -> std::io::Result<Writer> {
        let lock = crate::lock::acquire(dir).map_err(std::io::Error::other)?;
        let mut segments = scanned.segments.clone();
        let next_seq = scanned.last_seq + 1;
        let file = match segments.last() {
            Some(last) => OpenOptions::new().write(true).open(&last.path)?,
            None => {
                let (file, seg) = create(dir, next_seq, options.sync)?;
                segments.push(seg);
                file
            }
        };
        let keep_from = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel();
        let (index_tx, index_rx) = mpsc::channel();
        // Closed segments from before (a crash can come between a rotation and its index).
        for closed in &segments[..segments.len() - 1] {
            let _ = index_tx.send((closed.path.clone(), None));
        }
        let indexer = std::thread::Builder::new()
            .name("tranlog-index".into())
            .spawn(move || index_closed(index_rx))?;
        let mut thread = Thread {
            dir: dir.to_path_buf(),
            options,
            zeroed: file.metadata()?.len(),
            file,
            segments,
            next_seq,
            last_crc: scanned.last_crc,
            keep_from: keep_from.clone(),
            buf: Vec::with_capacity(1 << 20),
            last_sync: None,
            // A segment written before has records this thread has not seen: indexed from its bytes.
            entries: scanned.segments.is_empty().then(index::Entries::default),
            indexer: index_tx,
        };
        let handle = std::thread::Builder::new()
            .name("tranlog".into())
            .spawn(move || thread.run(rx, on_batch))?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(handle),
            indexer: Some(indexer),
            next_seq,
            keep_from,
            _lock: lock,
        })
    }

    /// Queues a record; returns its sequence number.
    pub fn append(&mut self, record: Record) -> u64 {
        self.append_all(vec![record])
    }

    /// The sequence number the next record appended will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Queues records in one hand-over to the writer thread (one wake-up for all of them); returns the
    /// sequence number of the last (of the last record before, when `records` is empty).
    pub fn append_all(&mut self, records: Vec<Record>) -> u64 {
        self.next_seq += records.len() as u64;
        if let Some(tx) = &self.tx
            && !records.is_empty()
        {
            // A stopped writer has reported its error through `on_batch`; the records are never durable.
            let _ = tx.send(records);
        }
        self.next_seq - 1
    }

    /// Transactions from `txn` on may still be needed by recovery: retention keeps every segment with
    /// one of them.
    pub fn keep_from(&self, txn: TxnId) {
        self.keep_from.store(txn.0, Ordering::Relaxed);
    }

    /// Writes and syncs what is queued, then stops the thread (after it has indexed the segments it
    /// closed).
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.tx = None;
        // The writer thread holds the indexer's channel: the indexer ends after it.
        for thread in [self.thread.take(), self.indexer.take()]
            .into_iter()
            .flatten()
        {
            if thread.join().is_err() {
                tracing::error!("journal writer panicked");
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Thread {
    dir: PathBuf,
    options: Options,
    file: File,
    /// The current file's length: its records, then zeros.
    zeroed: u64,
    segments: Vec<Segment>,
    next_seq: u64,
    last_crc: u32,
    keep_from: Arc<AtomicU64>,
    buf: Vec<u8>,
    /// When the last sync began.
    last_sync: Option<Instant>,
    /// The current segment's index entries, when this thread wrote all of its records.
    entries: Option<index::Entries>,
    /// Closed segments to index, with their entries when gathered while writing.
    indexer: mpsc::Sender<(PathBuf, Option<index::Entries>)>,
}

impl Thread {
    fn run(
        &mut self,
        rx: mpsc::Receiver<Vec<Record>>,
        mut on_batch: impl FnMut(Result<Batch, std::io::Error>),
    ) {
        while let Ok(mut records) = rx.recv() {
            self.gather(&rx, &mut records);
            // `always` syncs each record on its own.
            let per_sync = match self.options.sync {
                Sync::Always => 1,
                Sync::None | Sync::Batch => records.len().max(1),
            };
            for chunk in records.chunks(per_sync) {
                match self.write(chunk) {
                    Ok(batch) => on_batch(Ok(batch)),
                    Err(error) => {
                        tracing::error!(%error, "journal write failed; nothing more is durable");
                        on_batch(Err(error));
                        return;
                    }
                }
            }
        }
        // Stopped: the segment is cut to its records (a crash leaves the zeros, which the scan reads as
        // the end).
        if let Err(error) = self.cut_zeros() {
            tracing::warn!(%error, "journal segment left with zeros after its records");
        }
    }

    /// Cuts the current file to its records.
    fn cut_zeros(&mut self) -> std::io::Result<()> {
        let records = self.segments.last().map_or(0, |seg| seg.bytes);
        if self.zeroed > records {
            self.file.set_len(records)?;
            self.zeroed = records;
        }
        Ok(())
    }

    /// Writes zeros from the file's end to [`ZERO_AHEAD`] past `end`.
    fn zero_ahead(&mut self, end: u64) -> std::io::Result<()> {
        let to = end + ZERO_AHEAD;
        while self.zeroed < to {
            let n = (to - self.zeroed).min(ZEROS.len() as u64);
            self.file.write_all_at(&ZEROS[..n as usize], self.zeroed)?;
            self.zeroed += n;
        }
        Ok(())
    }

    /// The rest of a batch: what is queued or arrives until a window has passed since the previous
    /// sync began (`batch`), nothing more (`always`), or what is already queued (`none`).
    fn gather(&self, rx: &mpsc::Receiver<Vec<Record>>, records: &mut Vec<Record>) {
        match self.options.sync {
            Sync::Always => {}
            Sync::None => {
                for more in rx.try_iter() {
                    records.extend(more);
                    if records.len() >= 65_536 {
                        break;
                    }
                }
            }
            Sync::Batch => {
                let deadline = self
                    .last_sync
                    .map_or_else(Instant::now, |t| t + self.options.batch_window);
                while records.len() < 65_536 {
                    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                        Ok(more) => records.extend(more),
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            }
        }
    }

    fn write(&mut self, records: &[Record]) -> std::io::Result<Batch> {
        self.buf.clear();
        let start = self.segments.last().map_or(0, |seg| seg.bytes);
        for record in records {
            if let Some(entries) = &mut self.entries {
                entries.add(record, start + self.buf.len() as u64);
            }
            self.last_crc = frame::encode(record, self.next_seq, self.last_crc, &mut self.buf)
                .map_err(std::io::Error::other)?;
            self.next_seq += 1;
        }
        let end = start + self.buf.len() as u64;
        if end > self.zeroed && self.options.sync != Sync::None {
            self.zero_ahead(end)?;
        }
        self.file.write_all_at(&self.buf, start)?;
        self.zeroed = self.zeroed.max(end);
        let sync = match self.options.sync {
            Sync::None => None,
            Sync::Always | Sync::Batch => {
                let start = Instant::now();
                self.last_sync = Some(start);
                self.file.sync_data()?;
                Some(start.elapsed())
            }
        };
        let seg = self.segments.last_mut().expect("a current segment");
        seg.bytes += self.buf.len() as u64;
        if let Some(r) = records.last() {
            seg.last_at = Some(r.at);
        }
        seg.max_txn = records.iter().fold(seg.max_txn, |m, r| m.max(r.txn.0));
        let batch = Batch {
            last_seq: self.next_seq - 1,
            records: records.len(),
            bytes: self.buf.len(),
            sync,
        };
        if seg.bytes >= self.options.segment_bytes {
            self.rotate()?;
        }
        Ok(batch)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        // The closed segment is not flushed: with `batch` and `always` its records are synced already,
        // and `none` promises no sync (flushing 16 MiB of written pages at a rotation cost p99.9 at
        // 20 000/s tens of milliseconds).
        self.cut_zeros()?;
        if let Some(closed) = self.segments.last() {
            let _ = self
                .indexer
                .send((closed.path.clone(), self.entries.take()));
        }
        let (file, seg) = create(&self.dir, self.next_seq, self.options.sync)?;
        self.entries = Some(index::Entries::default());
        self.file = file;
        self.zeroed = seg.bytes;
        self.segments.push(seg);
        self.retain()
    }

    /// Deletes closed segments past the retention limits, oldest first, stopping at the first one that
    /// holds a transaction recovery may still need.
    fn retain(&mut self) -> std::io::Result<()> {
        let (age, bytes) = (self.options.retain_age, self.options.retain_bytes);
        if age.is_none() && bytes.is_none() {
            return Ok(());
        }
        let keep_from = self.keep_from.load(Ordering::Relaxed);
        let now = SystemTime::now();
        let mut total: u64 = self.segments.iter().map(|s| s.bytes).sum();
        let mut deleted = false;
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            let too_old = age.is_some_and(|age| {
                oldest
                    .last_at
                    .is_some_and(|at| now.duration_since(at).unwrap_or_default() > age)
            });
            let too_big = bytes.is_some_and(|b| total > b);
            if !(too_old || too_big) || oldest.max_txn >= keep_from {
                break;
            }
            std::fs::remove_file(&oldest.path)?;
            if let Err(e) = std::fs::remove_file(index::path(&oldest.path))
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(e);
            }
            tracing::info!(segment = %oldest.path.display(), "journal segment deleted by retention");
            total -= oldest.bytes;
            self.segments.remove(0);
            deleted = true;
        }
        if deleted {
            segment::sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

/// Writes the index of each closed segment it is sent: from the entries gathered while writing it, or,
/// for a segment written before this start, from its bytes when it has no current index. A failure
/// costs only speed: a query builds the index itself.
fn index_closed(segments: mpsc::Receiver<(PathBuf, Option<index::Entries>)>) {
    // Sorting a closed segment's entries (and, for one written before, reading all of it) takes
    // milliseconds of CPU that, at normal priority, take a core from the threads answering terminals
    // (at 20 000/s on 2 cores, p99 went from 2.6 to 6.0 ms with a segment closing every second or so).
    // At the lowest priority it uses what they leave; an index that comes late only slows a dispute
    // lookup.
    if let Err(error) =
        thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min)
    {
        tracing::warn!(?error, "journal indexing runs at normal priority");
    }
    for (segment, entries) in segments {
        let len = match std::fs::metadata(&segment) {
            Ok(meta) => meta.len(),
            Err(_) => continue, // deleted by retention
        };
        let indexed = match entries {
            Some(entries) => index::write(&segment, &entries.finish(len)).map_err(Into::into),
            None => index::Index::load(&segment, len).map(drop),
        };
        if let Err(error) = indexed {
            tracing::warn!(segment = %segment.display(), %error, "journal segment not indexed");
        }
    }
}

/// A new segment starting at `first_seq`. Its header and directory entry are made durable, except
/// with `none`, which syncs nothing (a sync at every rotation cost `none` p99 at 20 000/s).
fn create(dir: &Path, first_seq: u64, sync: Sync) -> std::io::Result<(File, Segment)> {
    let path = segment::path(dir, first_seq);
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)?;
    file.write_all(&frame::segment_header(first_seq))?;
    if sync != Sync::None {
        file.sync_all()?;
        segment::sync_dir(dir)?;
    }
    let seg = Segment {
        path,
        first_seq,
        bytes: frame::SEGMENT_HEADER as u64,
        max_txn: 0,
        last_at: None,
    };
    Ok((file, seg))
}
