//! The journal on a real directory: what is written reads back, torn tails are cut, corruption is named.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use engine::{Record, Step, TxnId};
use iso8583::ResponseCode;
use tranlog::{Batch, Error, Mode, OnCorrupt, Options, Scanned, Sync, Writer};

fn record(txn: u64) -> Record {
    Record {
        txn: TxnId(txn),
        at: UNIX_EPOCH + Duration::from_secs(1_795_000_000 + txn),
        step: Step::Told {
            rc: ResponseCode::APPROVED,
        },
    }
}

const RECOVER: Mode = Mode {
    repair: true,
    on_corrupt: OnCorrupt::Stop,
};

fn read(dir: &Path, mode: Mode) -> Result<(Scanned, Vec<Record>), Error> {
    let mut records = Vec::new();
    let scanned = tranlog::scan(dir, mode, |_, r| records.push(r))?;
    Ok((scanned, records))
}

/// Writes records `txns` after what is in `dir`; returns the batches reported.
fn write(dir: &Path, options: Options, txns: std::ops::Range<u64>) -> Vec<Batch> {
    let (scanned, _) = read(dir, RECOVER).unwrap();
    let batches = Arc::new(Mutex::new(Vec::new()));
    let b = batches.clone();
    let mut writer = Writer::start(dir, options, &scanned, move |batch| {
        b.lock().unwrap().push(batch.expect("write ok"))
    })
    .unwrap();
    for txn in txns {
        writer.append(record(txn));
    }
    writer.close();
    Arc::try_unwrap(batches).unwrap().into_inner().unwrap()
}

fn small_segments() -> Options {
    Options {
        segment_bytes: 1024,
        ..Options::default()
    }
}

#[test]
fn records_read_back_in_order_across_segments_and_restarts_in_every_sync_mode() {
    for sync in [Sync::Always, Sync::Batch, Sync::None] {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            sync,
            ..small_segments()
        };
        write(dir.path(), options.clone(), 1..200);
        write(dir.path(), options, 200..400);
        let (scanned, records) = read(dir.path(), RECOVER).unwrap();
        assert_eq!(
            records,
            (1..400).map(record).collect::<Vec<_>>(),
            "{sync:?}"
        );
        assert_eq!(scanned.last_seq, 399);
        // Segments rotate after a batch that fills them: always (a record per batch) makes the most.
        let least = if sync == Sync::Always { 10 } else { 2 };
        assert!(
            scanned.segments.len() >= least,
            "{} segments",
            scanned.segments.len()
        );
        assert!(scanned.problems.is_empty(), "{:?}", scanned.problems);
        assert_eq!(scanned.torn, None);
    }
}

#[test]
fn batch_mode_covers_many_records_with_one_sync_and_always_syncs_each() {
    let dir = tempfile::tempdir().unwrap();
    let batches = write(dir.path(), Options::default(), 1..1001);
    assert_eq!(batches.iter().map(|b| b.records).sum::<usize>(), 1000);
    assert!(
        batches.len() < 100,
        "{} batches for 1000 records",
        batches.len()
    );
    assert!(batches.iter().all(|b| b.sync.is_some()));
    assert_eq!(batches.last().unwrap().last_seq, 1000);

    let dir = tempfile::tempdir().unwrap();
    let always = Options {
        sync: Sync::Always,
        ..Options::default()
    };
    assert_eq!(write(dir.path(), always, 1..51).len(), 50);
}

/// The segment files in `dir`, in order (the directory also holds their indexes and its lock).
fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    paths.sort();
    paths
}

fn last_segment(dir: &Path) -> std::path::PathBuf {
    segments(dir).pop().unwrap()
}

#[test]
fn a_torn_tail_is_cut_off_and_writing_goes_on_after_it() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), Options::default(), 1..11);
    let seg = last_segment(dir.path());
    let full = std::fs::read(&seg).unwrap();
    // A crash in the middle of writing record 11: its first 15 bytes reached the disk.
    let mut torn = full.clone();
    torn.extend_from_slice(&[0x2a, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 0, 0]);
    std::fs::write(&seg, &torn).unwrap();

    let verify = Mode {
        repair: false,
        ..RECOVER
    };
    let (scanned, records) = read(dir.path(), verify).unwrap();
    assert_eq!(records.len(), 10);
    let at = scanned.torn.expect("torn tail reported");
    assert_eq!((at.segment, at.offset), (seg.clone(), full.len() as u64));
    assert_eq!(
        std::fs::read(&seg).unwrap().len(),
        torn.len(),
        "verify changes nothing"
    );

    let (scanned, _) = read(dir.path(), RECOVER).unwrap();
    assert!(scanned.torn.is_some());
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        full,
        "recovery cut the torn record off"
    );
    write(dir.path(), Options::default(), 11..21);
    let (scanned, records) = read(dir.path(), RECOVER).unwrap();
    assert_eq!(records, (1..21).map(record).collect::<Vec<_>>());
    assert!(scanned.problems.is_empty() && scanned.torn.is_none());
}

#[test]
fn a_corrupt_record_in_the_middle_stops_recovery_with_its_position_or_is_skipped_on_request() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), Options::default(), 1..11);
    let seg = last_segment(dir.path());
    // Where record 5 starts: the positions the scan reports.
    let mut starts = Vec::new();
    tranlog::scan(dir.path(), RECOVER, |at, r| starts.push((r.txn, at.offset))).unwrap();
    let fifth = starts[4].1;
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[fifth as usize + 22] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();

    match read(dir.path(), RECOVER) {
        Err(Error::Corrupt { at, what }) => {
            assert_eq!((at.segment, at.offset), (seg.clone(), fifth));
            assert_eq!(what, "checksum mismatch");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    let skip = Mode {
        on_corrupt: OnCorrupt::Skip,
        ..RECOVER
    };
    let (scanned, records) = read(dir.path(), skip).unwrap();
    let txns: Vec<u64> = records.iter().map(|r| r.txn.0).collect();
    assert_eq!(txns, [1, 2, 3, 4, 6, 7, 8, 9, 10]);
    assert_eq!(scanned.problems[0].at.offset, fifth);
    assert!(
        scanned
            .problems
            .iter()
            .any(|p| p.what.contains("sequence jumps from 4 to 6")),
        "{:?}",
        scanned.problems
    );
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        bytes,
        "corruption is left for an operator"
    );
}

#[test]
fn retention_deletes_old_segments_but_never_one_recovery_still_needs() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        sync: Sync::Always,
        retain_bytes: Some(4096),
        ..small_segments()
    };
    // Nothing is finished yet (keep_from 0): every segment stays.
    write(dir.path(), options.clone(), 1..200);
    let before = read(dir.path(), RECOVER).unwrap().0.segments.len();
    assert!(before >= 5, "{before} segments");

    let (scanned, _) = read(dir.path(), RECOVER).unwrap();
    let writer = Writer::start(dir.path(), options, &scanned, |_| {}).unwrap();
    writer.keep_from(TxnId(150));
    let mut writer = writer;
    for txn in 200..260 {
        writer.append(record(txn));
    }
    writer.close();
    let (scanned, records) = read(dir.path(), RECOVER).unwrap();
    let total: u64 = scanned.segments.iter().map(|s| s.bytes).sum();
    assert!(scanned.segments.len() < before, "old segments deleted");
    assert!(records.iter().any(|r| r.txn.0 == 150), "txn 150 on is kept");
    assert!(records.first().unwrap().txn.0 <= 150);
    assert!(
        total > 4096,
        "over the limit only because of what must be kept: {total} bytes"
    );
}

#[test]
fn the_writer_writes_zeros_ahead_of_its_records_and_cuts_them_off_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let (scanned, _) = read(dir.path(), RECOVER).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut writer = Writer::start(dir.path(), Options::default(), &scanned, move |batch| {
        let _ = tx.send(batch.expect("write ok"));
    })
    .unwrap();
    writer.append_all((1..11).map(record).collect());
    let (mut written, mut records) = (0, 16); // a segment's header, then the records
    while written < 10 {
        let batch = rx.recv().unwrap();
        (written, records) = (written + batch.records, records + batch.bytes);
    }
    let seg = last_segment(dir.path());
    let len = std::fs::metadata(&seg).unwrap().len() as usize;
    assert!(
        len >= records + (256 << 10),
        "{len} bytes for {records} of records"
    );
    writer.close();
    assert_eq!(std::fs::metadata(&seg).unwrap().len() as usize, records);
}

#[test]
fn zeros_after_the_records_end_a_segment_cleanly_and_a_partial_record_before_them_is_torn() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), small_segments(), 1..100);
    let segments = segments(dir.path());
    let (first, last) = (segments[0].clone(), segments[segments.len() - 1].clone());
    let full = std::fs::read(&last).unwrap();
    // A crash left the zeros written ahead: after the last segment's records, and after a closed
    // segment's (its cut to size was not yet on disk).
    for seg in [&first, &last] {
        let mut ahead = std::fs::read(seg).unwrap();
        ahead.resize(ahead.len() + 5000, 0);
        std::fs::write(seg, &ahead).unwrap();
    }
    let verify = Mode {
        repair: false,
        ..RECOVER
    };
    let (scanned, records) = read(dir.path(), verify).unwrap();
    assert_eq!(records, (1..100).map(record).collect::<Vec<_>>());
    assert!(scanned.problems.is_empty(), "{:?}", scanned.problems);
    assert_eq!(scanned.torn, None);
    let (_, _) = read(dir.path(), RECOVER).unwrap();
    assert_eq!(
        std::fs::read(&last).unwrap(),
        full,
        "recovery cut the zeros off"
    );
    write(dir.path(), small_segments(), 100..120);
    let (scanned, records) = read(dir.path(), RECOVER).unwrap();
    assert_eq!(records, (1..120).map(record).collect::<Vec<_>>());
    assert!(scanned.problems.is_empty() && scanned.torn.is_none());

    // A record whose first bytes reached the disk, in the zeros: a torn tail, as without them.
    let last = last_segment(dir.path());
    let mut torn = std::fs::read(&last).unwrap();
    let end = torn.len() as u64;
    torn.extend_from_slice(&[0x2a, 0, 0, 0, 1, 2, 3, 4]);
    torn.resize(torn.len() + 5000, 0);
    std::fs::write(&last, &torn).unwrap();
    let (scanned, _) = read(dir.path(), verify).unwrap();
    assert_eq!(scanned.torn.map(|at| at.offset), Some(end));
}
