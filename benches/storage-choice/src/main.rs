//! Records/s made durable in groups of 100 and 1000 (a 1 ms window at 100k and 1M records/s): the
//! journal (`tranlog`) against redb (B-tree, one write transaction per group) and fjall (LSM tree, one
//! batch and one `SyncData` persist per group), each record keyed by its sequence number. Run on the
//! same disk as the target directory.

use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use engine::Record;

#[path = "../../support/purchase.rs"]
mod purchase;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap()
}

fn journal(records: &[Record], group: usize) -> f64 {
    let dir = tmp();
    let mode = tranlog::Mode {
        repair: true,
        on_corrupt: tranlog::OnCorrupt::Stop,
    };
    let scanned = tranlog::scan(dir.path(), mode, |_, _| {}).unwrap();
    let (tx, rx) = mpsc::channel();
    // No window: each group is synced as soon as it is queued, as the other stores do.
    let options = tranlog::Options {
        batch_window: Duration::ZERO,
        ..Default::default()
    };
    let mut writer = tranlog::Writer::start(dir.path(), options, &scanned, move |b| {
        let _ = tx.send(b.unwrap().last_seq);
    })
    .unwrap();
    let start = Instant::now();
    for chunk in records.chunks(group) {
        let last = chunk.iter().map(|r| writer.append(r.clone())).last().unwrap();
        while rx.recv().unwrap() < last {}
    }
    let took = start.elapsed();
    writer.close();
    records.len() as f64 / took.as_secs_f64()
}

fn redb(records: &[Record], group: usize) -> f64 {
    let dir = tmp();
    let db = redb::Database::create(dir.path().join("db")).unwrap();
    let table: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("journal");
    let start = Instant::now();
    for (i, chunk) in records.chunks(group).enumerate() {
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(table).unwrap();
            for (j, r) in chunk.iter().enumerate() {
                let value = postcard::to_stdvec(r).unwrap();
                t.insert((i * group + j) as u64, value.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    records.len() as f64 / start.elapsed().as_secs_f64()
}

fn fjall(records: &[Record], group: usize) -> f64 {
    let dir = tmp();
    let keyspace = fjall::Config::new(dir.path()).open().unwrap();
    let journal = keyspace
        .open_partition("journal", Default::default())
        .unwrap();
    let start = Instant::now();
    for (i, chunk) in records.chunks(group).enumerate() {
        let mut batch = keyspace.batch();
        for (j, r) in chunk.iter().enumerate() {
            let key = ((i * group + j) as u64).to_be_bytes();
            batch.insert(&journal, key, postcard::to_stdvec(r).unwrap());
        }
        batch.commit().unwrap();
        keyspace.persist(fjall::PersistMode::SyncData).unwrap();
    }
    records.len() as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let at = SystemTime::now();
    let records: Vec<Record> = (1..=50_000)
        .flat_map(|n| purchase::purchase(n, at))
        .collect();
    println!("{} records, durable in groups:", records.len());
    for group in [100, 1000] {
        let j = journal(&records, group);
        let r = redb(&records, group);
        let f = fjall(&records, group);
        println!(
            "  {group:>5}: tranlog {j:>8.0}  redb {r:>8.0} ({:.2}×)  fjall {f:>8.0} ({:.2}×) records/s",
            r / j,
            f / j
        );
    }
}
