//! What the tests on a real PostgreSQL share: the runtime, the card key and lease of their nodes, and a
//! purchase's first record.

// Each test binary uses some of these; a test module's items are reached only from its own crate.
#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cluster::Store;
use cluster::throwaway::Server;
use engine::{Received, Record, Step, TxnId};
use iso8583::Mti;

pub const KEY: [u8; 16] = [7; 16];
pub const LEASE: Duration = Duration::from_secs(5);

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Now, to the microsecond a record keeps.
pub fn now() -> SystemTime {
    let us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros();
    UNIX_EPOCH + Duration::from_micros(us as u64)
}

/// A purchase's first record: transaction `txn`, STAN `stan`, received now.
pub fn received(txn: u64, stan: u32) -> Record {
    Record {
        txn: TxnId(txn),
        at: now(),
        step: Step::Received(Received {
            mti: Mti::new(*b"0200").unwrap(),
            card: None,
            amount: Some(1000),
            currency: Some(978),
            terminal: "T0000001".into(),
            merchant: "M00000000000001".into(),
            stan,
            date: 1202,
            fingerprint: 42,
        }),
    }
}

/// Node `node`'s store, joined with `lease`.
pub async fn joined(pg: &Server, node: &str, lease: Duration) -> Store {
    Store::join(&pg.url(), node, lease, &KEY)
        .await
        .unwrap()
        .store
}
