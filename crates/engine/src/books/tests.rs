//! The books' folds: the switch's own open batches, and an upload round acted on by two nodes.

use std::time::UNIX_EPOCH;

use iso8583::{Mti, ResponseCode};

use super::*;
use crate::journal::Received;

fn records(txn: u64, rc: &str) -> Vec<Record> {
    let received = Received {
        mti: Mti::FINANCIAL,
        card: None,
        amount: Some(100),
        currency: Some(978),
        terminal: "T1".into(),
        merchant: "M1".into(),
        stan: txn as u32,
        date: 1121,
        fingerprint: 0,
    };
    let told = Step::Told {
        rc: ResponseCode(rc.as_bytes().try_into().unwrap()),
    };
    [Step::Received(received), told]
        .into_iter()
        .map(|step| Record {
            txn: TxnId(txn),
            at: UNIX_EPOCH,
            step,
        })
        .collect()
}

/// One approval that stays open (its terminal does not settle), then a stream of declines: the
/// eviction queue keeps no trail of them.
#[test]
fn declines_behind_an_open_approval_leave_no_trail_in_the_eviction_queue() {
    let mut books = Books::open_batches();
    books.limit(1_000_000);
    for (txn, rc) in std::iter::once((1, "00")).chain((2..100_000).map(|t| (t, "51"))) {
        records(txn, rc).iter().for_each(|r| books.add("", r));
    }
    assert!(
        books.places.len() < 3_000,
        "{} places queued for one transaction kept",
        books.places.len()
    );
    let stans: Vec<u32> = books.batch("T1", "M1").iter().map(|s| s.stan).collect();
    assert_eq!(stans, [1]);
}

#[test]
fn the_switchs_books_keep_approvals_only_and_at_most_their_limit_oldest_out_first() {
    let mut books = Books::open_batches();
    books.limit(2);
    for (txn, rc) in [(1, "00"), (2, "51"), (3, "00"), (4, "00")] {
        records(txn, rc).iter().for_each(|r| books.add("", r));
    }
    let stans: Vec<u32> = books.batch("T1", "M1").iter().map(|s| s.stan).collect();
    assert_eq!(
        stans,
        [3, 4],
        "the decline was never kept; the oldest approval was dropped"
    );
    assert_eq!(books.evicted(), 1);
    books.close("T1", "M1");
    assert!(books.batch("T1", "M1").is_empty());
}

/// In a cluster one settlement message can be acted on by two nodes: a 0500 found out of balance
/// by both, the second answer recorded after uploads that followed the first; a 0320 recorded by
/// both. The round of uploads is the terminal's, each transaction once; a 0500 that claims other
/// totals starts a new one.
#[test]
fn an_upload_round_acted_on_by_two_nodes_holds_each_upload_once() {
    let mut books = Books::open_batches();
    let step = |step| Record {
        txn: TxnId(1),
        at: UNIX_EPOCH,
        step,
    };
    let (terminal, merchant) = (CompactString::from("T1"), CompactString::from("M1"));
    let out_of_balance = |debits| {
        step(Step::BatchOutOfBalance {
            terminal: terminal.clone(),
            merchant: merchant.clone(),
            ours: Totals::default(),
            theirs: Totals {
                debits,
                ..Totals::default()
            },
        })
    };
    let uploaded = |stan| {
        step(Step::BatchUploaded {
            terminal: terminal.clone(),
            merchant: merchant.clone(),
            stan,
            amount: 100,
            found: true,
        })
    };
    for (node, record) in [
        ("a", out_of_balance(2)),
        ("a", uploaded(7)),
        ("b", uploaded(7)),
        ("b", out_of_balance(2)),
        ("a", uploaded(8)),
    ] {
        books.add(node, &record);
    }
    assert_eq!(books.uploads("T1", "M1"), [(7, 100, true), (8, 100, true)]);
    books.add("a", &out_of_balance(3));
    assert!(books.uploads("T1", "M1").is_empty(), "a new round");
}
