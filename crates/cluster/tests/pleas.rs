//! Pleas on a real PostgreSQL (a throw-away server from Debian's binaries; SKIPPED without one,
//! required in CI): reversals a node admitted in terminals' names, left for the other nodes when it
//! ends before their outcome is committed, each taken on by one live node at a time.

use std::time::{Duration, UNIX_EPOCH};

use cluster::throwaway::Server;
use engine::Plea;

mod support;
use support::{LEASE, joined, rt};

fn plea(stan: u32) -> Plea {
    Plea {
        terminal: "T0000001".into(),
        merchant: "M00000000000001".into(),
        stan,
        date: 1207,
        // To the microsecond the database keeps.
        refused_at: UNIX_EPOCH + Duration::from_secs(1_796_000_000 + u64::from(stan)),
    }
}

#[test]
fn a_plea_left_by_one_node_is_taken_on_by_one_live_node_at_a_time_until_settled() {
    let Some(pg) = Server::start("pleas::taken") else {
        return;
    };
    rt().block_on(async {
        // a is fenced (another node took its work over): its pleas still go in.
        let a = joined(&pg, "a", Duration::ZERO).await;
        let client = cluster::connect(&pg.url()).await.unwrap();
        let fence = "UPDATE nodes SET epoch = epoch + 1 WHERE node = 'a'";
        client.batch_execute(fence).await.unwrap();
        a.plead(&[plea(1), plea(2)]).await.unwrap();
        // Left again (a second end of the same node): nothing changes.
        a.plead(&[plea(2)]).await.unwrap();
        assert_eq!(cluster::database(&client).await.unwrap().pleas, 2);

        // A node whose own lease lapsed takes nothing on.
        let lapsed = joined(&pg, "l", Duration::ZERO).await;
        assert_eq!(lapsed.take_pleas(64).await.unwrap(), []);
        let (b, c) = (joined(&pg, "b", LEASE).await, joined(&pg, "c", LEASE).await);
        assert_eq!(b.take_pleas(64).await.unwrap(), [plea(1), plea(2)]);
        assert_eq!(
            c.take_pleas(64).await.unwrap(),
            [],
            "b has them, and is live"
        );

        // b stops (its lease lapses) before it settles them: c takes them on.
        let lapse = "UPDATE nodes SET lease_until = now() - interval '1 second' WHERE node = 'b'";
        client.batch_execute(lapse).await.unwrap();
        let mut taken = c.take_pleas(64).await.unwrap();
        taken.sort();
        assert_eq!(taken, [plea(1), plea(2)]);
        c.settle_pleas(&[plea(1)]).await.unwrap();
        let left: Vec<i32> = (client.query("SELECT stan FROM pleas", &[]).await.unwrap())
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(left, [2]);
    });
}

/// A node holds its own pleas while it waits out its terminals' patience: no other node takes them on
/// while it is live, and any may once it lapses (killed, or its machine lost).
#[test]
fn a_plea_held_by_its_node_is_free_for_the_others_once_it_lapses() {
    let Some(pg) = Server::start("pleas::held") else {
        return;
    };
    rt().block_on(async {
        let (a, b) = (joined(&pg, "a", LEASE).await, joined(&pg, "b", LEASE).await);
        a.hold_pleas(&[plea(3)]).await.unwrap();
        // Held again at the next turn of a's upkeep: nothing changes.
        a.hold_pleas(&[plea(3)]).await.unwrap();
        let client = cluster::connect(&pg.url()).await.unwrap();
        let waiting = async || cluster::database(&client).await.unwrap().pleas;
        assert_eq!(waiting().await, 0, "held by a live node: not waiting");
        assert_eq!(
            b.take_pleas(64).await.unwrap(),
            [],
            "a holds it, and is live"
        );
        assert_eq!(a.take_pleas(64).await.unwrap(), [], "a has it already");

        let lapse = "UPDATE nodes SET lease_until = now() - interval '1 second' WHERE node = 'a'";
        client.batch_execute(lapse).await.unwrap();
        assert_eq!(waiting().await, 1);
        assert_eq!(b.take_pleas(64).await.unwrap(), [plea(3)]);
    });
}

/// A node that ends leaves the pleas it holds: free for the others at once, its lease still live.
#[test]
fn a_plea_held_then_left_is_free_at_once() {
    let Some(pg) = Server::start("pleas::held_left") else {
        return;
    };
    rt().block_on(async {
        let (a, b) = (joined(&pg, "a", LEASE).await, joined(&pg, "b", LEASE).await);
        a.hold_pleas(&[plea(4)]).await.unwrap();
        a.plead(&[plea(4)]).await.unwrap();
        assert_eq!(b.take_pleas(64).await.unwrap(), [plea(4)]);
        // b's hold is not a's to end.
        a.plead(&[plea(4)]).await.unwrap();
        let (_, c) = (a, joined(&pg, "c", LEASE).await);
        assert_eq!(c.take_pleas(64).await.unwrap(), [], "b has it, and is live");
    });
}

/// Two 91s under one key (a retransmit refused too): the plea keeps the later, the terminal's last
/// word, and settling the earlier leaves it.
#[test]
fn a_plea_keeps_the_later_91_under_its_key() {
    let Some(pg) = Server::start("pleas::later") else {
        return;
    };
    rt().block_on(async {
        let (a, b) = (joined(&pg, "a", LEASE).await, joined(&pg, "b", LEASE).await);
        let earlier = plea(6);
        let later = Plea {
            refused_at: earlier.refused_at + Duration::from_secs(2),
            ..earlier.clone()
        };
        a.hold_pleas(std::slice::from_ref(&earlier)).await.unwrap();
        b.plead(std::slice::from_ref(&later)).await.unwrap();
        a.plead(std::slice::from_ref(&earlier)).await.unwrap();
        a.settle_pleas(std::slice::from_ref(&earlier))
            .await
            .unwrap();
        assert_eq!(
            b.take_pleas(64).await.unwrap(),
            std::slice::from_ref(&later)
        );
        b.settle_pleas(&[later]).await.unwrap();
        assert_eq!(b.take_pleas(64).await.unwrap(), []);
        let client = cluster::connect(&pg.url()).await.unwrap();
        assert_eq!(cluster::database(&client).await.unwrap().pleas, 0);
    });
}
