//! Takeovers on a real PostgreSQL (a throw-away server from Debian's binaries; SKIPPED without one,
//! required in CI): a takeover its taker left unfinished, then the node joining again.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cluster::Store;
use cluster::throwaway::Server;
use engine::{Received, Record, Step, TxnId};
use iso8583::Mti;

const KEY: [u8; 16] = [7; 16];
const LEASE: Duration = Duration::from_secs(5);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn received(txn: u64, stan: u32) -> Record {
    let us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros();
    Record {
        txn: TxnId(txn),
        at: UNIX_EPOCH + Duration::from_micros(us as u64),
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

/// b takes a's work over, then stops (paused) past its own lease before its records of that work
/// commit; a, started again meanwhile, joins (no live node is taking it over) and does the work
/// itself. b's records then commit late: they retire none of a's work, so a's records stay a's, for
/// a's own recovery and for whoever takes a over next, and no takeover of a shows as under way.
#[test]
fn a_takeover_whose_taker_lapsed_is_abandoned_when_the_node_joins_again() {
    let Some(pg) = Server::start("takeovers::abandoned") else {
        return;
    };
    rt().block_on(async {
        let a = Store::join(&pg.url(), "a", Duration::ZERO, &KEY).await;
        (a.unwrap()
            .store
            .commit(&[(1, received(1, 61))], &[], &[])
            .await)
            .unwrap();
        let joined = Store::join(&pg.url(), "b", LEASE, &KEY).await.unwrap();
        let mut b = joined.store;
        let taken = b.take_over(LEASE).await.unwrap().expect("a's work");
        assert_eq!((taken.node.as_str(), taken.through), ("a", 1));

        let client = cluster::connect(&pg.url()).await.unwrap();
        let lapse = "UPDATE nodes SET lease_until = now() - interval '1 second' WHERE node = 'b'";
        client.batch_execute(lapse).await.unwrap();
        let again = Store::join(&pg.url(), "a", LEASE, &KEY).await.unwrap();
        assert_eq!(again.records.len(), 1, "a does its work itself");

        let adopted = [(1, received(1, 70))];
        b.commit(&adopted, &[], &[("a".into(), taken.through)])
            .await
            .unwrap();
        let nodes = cluster::status(&client).await.unwrap();
        let a = nodes.iter().find(|n| n.node == "a").unwrap();
        assert_eq!(
            (a.retired_seq, a.taking_over, a.taken_by.as_deref()),
            (0, false, None),
            "b's late commit retired a's work"
        );
    });
}
