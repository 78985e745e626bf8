//! Dispute lookups in a large journal: `tranlog::lookup` through the segment indexes, against the full
//! scan a query without an index needs, in the same run.
//!
//! `cargo bench -p tranlog --bench lookup` writes ACQUIRO_BENCH_RECORDS records (10 000 000 by default,
//! 4 per purchase, one purchase per millisecond) in a temporary directory on the same disk as the
//! target directory, then times lookups of scattered purchases by RRN, by terminal and STAN, and by
//! card last four digits within one minute. ACQUIRO_BENCH_SEGMENT_MIB sets the segment size.

use std::time::{Duration, Instant, SystemTime};

use engine::Step;
use tranlog::{Key, Mode, OnCorrupt, Options, Query, Sync, Writer};

#[path = "support/purchase.rs"]
mod purchase;
use purchase::purchase;

const LOOKUPS: u64 = 200;

fn at(n: u64, base: SystemTime) -> SystemTime {
    base + Duration::from_millis(n)
}

/// Median, 99th percentile and maximum.
fn summary(mut times: Vec<Duration>) -> (Duration, Duration, Duration) {
    times.sort();
    let p = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    (p(0.5), p(0.99), p(1.0))
}

fn main() {
    let records: u64 = std::env::var("ACQUIRO_BENCH_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000_000);
    let purchases = records.div_ceil(4);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mode = Mode {
        repair: false,
        on_corrupt: OnCorrupt::Stop,
    };
    let scanned = tranlog::scan(dir.path(), mode, |_, _| {}).unwrap();
    let mut options = Options {
        sync: Sync::None,
        ..Options::default()
    };
    if let Some(mib) = std::env::var("ACQUIRO_BENCH_SEGMENT_MIB")
        .ok()
        .and_then(|n| n.parse::<u64>().ok())
    {
        options.segment_bytes = mib << 20;
    }
    let start = Instant::now();
    let mut writer = Writer::start(dir.path(), options, &scanned, |_| {}).unwrap();
    let base = SystemTime::now();
    for n in 1..=purchases {
        purchase(n, at(n, base)).into_iter().for_each(|r| {
            writer.append(r);
        });
    }
    writer.close();
    let scanned = tranlog::scan(dir.path(), mode, |_, _| {}).unwrap();
    let bytes: u64 = scanned.segments.iter().map(|s| s.bytes).sum();
    let last = scanned.segments.last().map_or(0, |s| s.bytes);
    println!(
        "journal: {} records, {} segments, {} MiB (the one being written: {} MiB); written and indexed in {:.1?}",
        scanned.records,
        scanned.segments.len(),
        bytes >> 20,
        last >> 20,
        start.elapsed()
    );

    // Scattered purchases, none at the very start or end.
    let picks: Vec<u64> = (1..=LOOKUPS)
        .map(|i| (i * 0x9E37_79B9) % purchases + 1)
        .collect();
    let rrn = |n: u64| Key::Rrn(format!("{n:012}"));

    let start = Instant::now();
    let mut found = 0;
    let wanted = format!("{:012}", picks[0]);
    tranlog::scan(dir.path(), mode, |_, r| {
        if let Step::Forwarded { original, .. } = &r.step
            && original.rrn() == Some(&wanted)
        {
            found += 1;
        }
    })
    .unwrap();
    let scan = start.elapsed();
    assert_eq!(found, 1);
    println!("full scan for one RRN: {scan:.2?}");

    type Lookup<'a> = (&'a str, Box<dyn Fn(u64) -> Query + 'a>);
    let kinds: [Lookup; 3] = [
        (
            "rrn",
            Box::new(|n| Query {
                keys: vec![rrn(n)],
                ..Query::default()
            }),
        ),
        (
            "terminal+stan",
            Box::new(|n| Query {
                keys: vec![Key::Terminal {
                    terminal: format!("T{:07}", n % 1000),
                    stan: (n % 999_999) as u32,
                }],
                ..Query::default()
            }),
        ),
        (
            "last4 in 1 min",
            Box::new(|n| Query {
                keys: vec![Key::Last4(format!("{:04}", n % 10_000))],
                from: Some(at(n.saturating_sub(30_000), base)),
                to: Some(at(n + 30_000, base)),
            }),
        ),
    ];
    println!(
        "lookups of {LOOKUPS} scattered purchases (every record of each matching transaction):"
    );
    for (name, query) in &kinds {
        let mut times = Vec::new();
        for &n in &picks {
            let start = Instant::now();
            let records = tranlog::lookup(dir.path(), &query(n)).unwrap();
            times.push(start.elapsed());
            assert!(records.iter().any(|r| r.txn.0 == n), "{name} {n}");
        }
        let (p50, p99, max) = summary(times);
        println!(
            "  {name:<15} p50 {p50:>9.2?}  p99 {p99:>9.2?}  max {max:>9.2?}  full scan / p50 = {:.0}",
            scan.as_secs_f64() / p50.as_secs_f64()
        );
    }
}
