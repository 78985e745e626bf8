//! Dispute lookups through the segment indexes: every record of the named transactions, wherever its
//! records are, and indexes that are rebuilt when missing or stale and checked by verification.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use engine::{Card, LinkId, Original, Received, Record, Step, TxnId};
use iso8583::{Mti, Pan, ResponseCode};
use tranlog::{Key, Mode, OnCorrupt, Options, Query, Sync, Writer};

/// Purchase `n` happened at second `n` of a fixed day.
fn at(n: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_000_000 + n)
}

fn card(n: u64) -> Card {
    let digits = format!("476173900101{:04}", n % 10_000);
    Card::new(&Pan::new(digits.as_bytes()).unwrap(), &[7; 16])
}

fn purchase(n: u64) -> Vec<Record> {
    let (txn, at) = (TxnId(n), at(n));
    let step = |step| Record { txn, at, step };
    vec![
        step(Step::Received(Received {
            mti: Mti::FINANCIAL,
            card: Some(card(n)),
            amount: Some(1000 + n),
            currency: Some(978),
            terminal: format!("T{:07}", n % 10).into(),
            merchant: "MERCHANT0000001".into(),
            stan: n as u32,
            date: 1121,
            fingerprint: n,
        })),
        step(Step::Forwarded {
            issuer: "visa".into(),
            link: LinkId(0),
            upstream_stan: n as u32,
            original: Original {
                mti: Mti::FINANCIAL,
                fields: vec![(37, format!("{n:012}").into())],
            },
        }),
        step(Step::TimedOut),
    ]
}

/// A reversal of purchase `n`, acknowledged later.
fn reversal(n: u64) -> Record {
    Record {
        txn: TxnId(n),
        at: at(n + 1000),
        step: Step::ReversalAcknowledged {
            rc: ResponseCode::APPROVED,
        },
    }
}

/// Writes `records` after what is in `dir`, in segments of about 2 KiB.
fn write(dir: &Path, records: impl IntoIterator<Item = Record>) {
    let mode = Mode {
        repair: true,
        on_corrupt: OnCorrupt::Stop,
    };
    let scanned = tranlog::scan(dir, mode, |_, _| {}).unwrap();
    // One record per batch, so that segments close at about their size.
    let options = Options {
        sync: Sync::Always,
        segment_bytes: 2048,
        ..Options::default()
    };
    let mut writer = Writer::start(dir, options, &scanned, |b| assert!(b.is_ok())).unwrap();
    for r in records {
        writer.append(r);
    }
    writer.close();
}

/// Purchases 1..=200, then a reversal of purchase 7 in a later segment.
fn journal() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), (1..=200).flat_map(purchase));
    write(dir.path(), [reversal(7)]);
    dir
}

fn lookup(dir: &Path, keys: Vec<Key>) -> Vec<Record> {
    let query = Query {
        keys,
        ..Query::default()
    };
    tranlog::lookup(dir, &query).unwrap()
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    found.sort();
    found
}

fn txns(records: &[Record]) -> Vec<u64> {
    let mut txns: Vec<u64> = records.iter().map(|r| r.txn.0).collect();
    txns.dedup();
    txns
}

#[test]
fn every_closed_segment_is_indexed_by_the_writer() {
    let dir = journal();
    let segments = files(dir.path(), "seg");
    assert!(segments.len() > 10, "{} segments", segments.len());
    let indexes = files(dir.path(), "idx");
    let closed: Vec<_> = segments[..segments.len() - 1]
        .iter()
        .map(|s| s.with_extension("idx"))
        .collect();
    assert_eq!(
        indexes, closed,
        "the segment being written has no index file"
    );
    assert!(tranlog::verify_indexes(dir.path()).unwrap().is_empty());
}

/// The writer gathers a segment's index entries as it writes whole batches (many records to one
/// `write`): the index it leaves is the one read back from the segment's bytes.
#[test]
fn an_index_gathered_while_writing_batches_is_the_one_the_segment_gives() {
    let dir = tempfile::tempdir().unwrap();
    let mode = Mode {
        repair: true,
        on_corrupt: OnCorrupt::Stop,
    };
    let scanned = tranlog::scan(dir.path(), mode, |_, _| {}).unwrap();
    let options = Options {
        sync: Sync::None,
        segment_bytes: 4096,
        ..Options::default()
    };
    let (done, written) = std::sync::mpsc::channel();
    let mut writer = Writer::start(dir.path(), options, &scanned, move |b| {
        let _ = done.send(b.map(|b| b.records).map_err(|e| e.to_string()));
    })
    .unwrap();
    // Each hand-over written before the next, so that each is one write.
    for n in (1..=300).step_by(30) {
        writer.append_all((n..n + 30).flat_map(purchase).collect());
        assert_eq!(written.recv().unwrap(), Ok(90));
    }
    writer.close();
    let segments = files(dir.path(), "seg");
    assert!(segments.len() > 5, "{} segments", segments.len());
    assert_eq!(files(dir.path(), "idx").len(), segments.len() - 1);
    assert_eq!(tranlog::verify_indexes(dir.path()).unwrap(), vec![]);
}

#[test]
fn a_transaction_is_found_by_rrn_and_by_terminal_and_stan_with_every_record() {
    let dir = journal();
    let mut expected = purchase(7);
    expected.push(reversal(7));
    assert_eq!(
        lookup(dir.path(), vec![Key::Rrn("000000000007".into())]),
        expected
    );
    let by_terminal = Key::Terminal {
        terminal: "T0000007".into(),
        stan: 7,
    };
    assert_eq!(lookup(dir.path(), vec![by_terminal]), expected);
    // The last segment (indexed in memory) is searched too.
    assert_eq!(
        lookup(dir.path(), vec![Key::Rrn("000000000200".into())]),
        purchase(200)
    );
    assert!(lookup(dir.path(), vec![Key::Rrn("000000000999".into())]).is_empty());
}

#[test]
fn last4_skips_segments_outside_the_time_range() {
    let dir = journal();
    let last4 = || vec![Key::Last4("0042".into())];
    assert_eq!(txns(&lookup(dir.path(), last4())), vec![42]);
    let query = |from: u64, to: u64| Query {
        keys: last4(),
        from: Some(at(from)),
        to: Some(at(to)),
    };
    let found = tranlog::lookup(dir.path(), &query(30, 50)).unwrap();
    assert_eq!(txns(&found), vec![42]);
    let found = tranlog::lookup(dir.path(), &query(100, 150)).unwrap();
    assert!(found.is_empty(), "{:?}", txns(&found));
}

#[test]
fn a_missing_or_damaged_index_is_rebuilt_and_a_wrong_one_is_reported() {
    let dir = journal();
    let indexes = files(dir.path(), "idx");
    let (first, second) = (&indexes[0], &indexes[1]);
    std::fs::remove_file(first).unwrap();
    // Damaged: its header fails its checksum.
    let mut stale = std::fs::read(second).unwrap();
    stale[8] ^= 1;
    std::fs::write(second, &stale).unwrap();
    assert_eq!(
        txns(&lookup(dir.path(), vec![Key::Rrn("000000000001".into())])),
        vec![1]
    );
    assert!(first.exists(), "the query wrote the missing index");
    assert_ne!(
        std::fs::read(second).unwrap(),
        stale,
        "and rebuilt the damaged one"
    );
    assert!(tranlog::verify_indexes(dir.path()).unwrap().is_empty());

    // A wrong entry with a whole header is found only by verification.
    let mut wrong = std::fs::read(first).unwrap();
    let last = wrong.len() - 1;
    wrong[last] ^= 1;
    std::fs::write(first, &wrong).unwrap();
    let problems = tranlog::verify_indexes(dir.path()).unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].at.segment, *first);
}
