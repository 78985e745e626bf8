//! The journal alone: records/s appended and made durable in each sync mode; the latency write-ahead
//! alone adds to a purchase at a fixed rate; and the time to read a million records back and rebuild
//! the engine from them (what a restart does).
//!
//! `cargo bench -p tranlog --bench journal` (ACQUIRO_BENCH_RECORDS changes the million,
//! ACQUIRO_BENCH_RATE the 20 000 purchases/s). Records are those of real purchases (received,
//! forwarded, answered, told), in a temporary directory on the same disk as the target directory.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use engine::{Config, Engine, Record, Recovery};
use tempfile::TempDir;
use tranlog::{Batch, Mode, OnCorrupt, Options, Sync, Writer};

#[path = "support/purchase.rs"]
mod purchase;
use purchase::purchase;

/// A writer with `sync` on a new journal in a temporary directory, and its reports (`None`: it failed).
fn writer(sync: Sync) -> (TempDir, Writer, mpsc::Receiver<Option<Batch>>) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let options = Options {
        sync,
        ..Options::default()
    };
    let (tx, rx) = mpsc::channel();
    let scanned = tranlog::scan(dir.path(), recover_mode(), |_, _| {}).unwrap();
    let writer = Writer::start(dir.path(), options, &scanned, move |b| {
        let _ = tx.send(b.ok());
    })
    .unwrap();
    (dir, writer, rx)
}

/// Appends `records` records and waits until all are durable: records/s and syncs done.
fn append(sync: Sync, records: u64) -> (f64, u64) {
    let (_dir, mut writer, rx) = writer(sync);
    let at = SystemTime::now();
    let start = Instant::now();
    let mut last = 0;
    for n in 0..records.div_ceil(4) {
        for r in purchase(n + 1, at) {
            last = writer.append(r);
        }
    }
    let mut syncs = 0;
    while let Ok(Some(batch)) = rx.recv() {
        syncs += u64::from(batch.sync.is_some());
        if batch.last_seq >= last {
            break;
        }
    }
    let took = start.elapsed();
    writer.close();
    (last as f64 / took.as_secs_f64(), syncs)
}

/// Purchases arrive at `rate` a second for `seconds`; each waits, as in the switch, for its received
/// and forwarded records to be durable (before the forward may leave), then for its answered and told
/// records (before the terminal may be told). Returns the sorted times from each purchase's scheduled
/// arrival to its second durable point: the floor write-ahead puts under the switch's added latency.
fn write_ahead(sync: Sync, rate: u32, seconds: u32) -> Vec<Duration> {
    let (_dir, mut writer, rx) = writer(sync);
    let (at, start, every) = (
        SystemTime::now(),
        Instant::now(),
        Duration::from_secs(1) / rate,
    );
    let count = rate * seconds;
    // In sequence order: the last record a purchase waits for, when it arrived, and the records it
    // appends once that one is durable (none: it is done).
    let mut waiting: VecDeque<(u64, Instant, Option<[Record; 2]>)> = VecDeque::new();
    let (mut arrived, mut durable) = (0, 0);
    let mut latencies = Vec::with_capacity(count as usize);
    while arrived < count || !waiting.is_empty() {
        let next = start + every * arrived;
        if arrived < count && Instant::now() >= next {
            let [received, forwarded, answered, told] = purchase(u64::from(arrived) + 1, at);
            let seq = writer.append_all(vec![received, forwarded]);
            waiting.push_back((seq, next, Some([answered, told])));
            arrived += 1;
            continue;
        }
        match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Ok(Some(batch)) => durable = batch.last_seq,
            Ok(None) => panic!("the journal failed"),
            Err(_) => {}
        }
        while let Some((seq, arrival, rest)) = waiting.pop_front() {
            if seq > durable {
                waiting.push_front((seq, arrival, rest));
                break;
            }
            match rest {
                Some(rest) => waiting.push_back((writer.append_all(rest.into()), arrival, None)),
                None => latencies.push(arrival.elapsed()),
            }
        }
    }
    writer.close();
    latencies.sort_unstable();
    latencies
}

fn recover_mode() -> Mode {
    Mode {
        repair: true,
        on_corrupt: OnCorrupt::Stop,
    }
}

fn config() -> Config {
    Config {
        issuers: vec![engine::Issuer {
            name: "visa".into(),
            spec: dialects::builtin("iso87ascii").unwrap(),
            links: 1,
            response_timeout: Duration::from_secs(5),
            policy: engine::Policy::default(),
        }],
        routes: Vec::new(),
        default_route: Some(0),
        idempotency: engine::Idempotency::default(),
        reversal: engine::Reversal::default(),
        acquirer_id: "12345".into(),
        echo_interval: Duration::from_secs(60),
        card_key: engine::CardKey([7; 16]),
        shared_store: false,
        terminal_patience: Duration::ZERO,
        cutover: Default::default(),
        stans: engine::Stans::ALL,
    }
}

fn main() {
    let records: u64 = std::env::var("ACQUIRO_BENCH_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let rate = std::env::var("ACQUIRO_BENCH_RATE")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    println!(
        "write-ahead: from arrival to the second durable point, {rate} purchases/s for 10 s (ms)"
    );
    // First `batch`, before any run leaves the page cache full of pages to write back behind its syncs.
    for (name, sync) in [("batch", Sync::Batch), ("none", Sync::None)] {
        let l = write_ahead(sync, rate, 10);
        let ms = |q: f64| l[((l.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
        println!(
            "  {name:<6}  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            ms(1.0)
        );
    }

    println!("journal: records/s until every record is durable (one purchase = 4 records)");
    let (none, _) = append(Sync::None, records);
    println!("  none    {none:>10.0} records/s");
    let (batch, syncs) = append(Sync::Batch, records);
    println!("  batch   {batch:>10.0} records/s  ({syncs} fdatasyncs for {records} records)");
    let few = records.min(4000);
    let (always, _) = append(Sync::Always, few);
    println!("  always  {always:>10.0} records/s  ({few} records, one fdatasync each)");
    println!(
        "  batch/none {:.2}, always/batch {:.4}",
        batch / none,
        always / batch
    );

    // A restart: read the journal back and rebuild the engine from it.
    let (dir, mut writer, _reports) = writer(Sync::None);
    let at = SystemTime::now();
    for n in 0..records.div_ceil(4) {
        purchase(n + 1, at).into_iter().for_each(|r| {
            writer.append(r);
        });
    }
    writer.close();
    let start = Instant::now();
    let mut recovery = Recovery::default();
    let scanned = tranlog::scan(dir.path(), recover_mode(), |_, r| recovery.add(r)).unwrap();
    let read = start.elapsed();
    let mut engine = Engine::new(config());
    let found = engine.recover(
        engine::Now {
            mono: std::time::Instant::now(),
            wall: std::time::SystemTime::now(),
        },
        recovery,
        &mut Vec::new(),
    );
    let total = start.elapsed();
    println!(
        "recovery: {} records in {} segments read in {read:.2?}, engine rebuilt in {:.2?} ({} idempotency entries); {total:.2?} in all",
        scanned.records,
        scanned.segments.len(),
        total - read,
        found.idempotency_entries
    );
}
