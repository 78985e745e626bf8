//! Takeovers on a real PostgreSQL (a throw-away server from Debian's binaries; SKIPPED without one,
//! required in CI): a takeover its taker left unfinished, then the node joining again.

use std::time::Duration;

use cluster::Store;
use cluster::throwaway::Server;

mod support;
use support::{KEY, LEASE, received, rt};

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
        let mut b = support::joined(&pg, "b", LEASE).await;
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
