//! Recovery from the journal: an engine rebuilt from the records a crash left behind keeps the invariant.

mod support;

use engine::{Action, Event, Step, TimerId, TxnId};
use iso8583::{Message, Mti, ResponseCode};
use support::*;

/// The reversal sent for `txn` once its timer fires (links are up after a restart).
fn reversal_of(h: &mut Harness, txn: TxnId) -> Message {
    let out = h.fire(TimerId::Saf(txn));
    one_sent(&out).1
}

fn count(h: &Harness, f: impl Fn(&Step) -> bool) -> usize {
    h.journal.iter().filter(|r| f(&r.step)).count()
}

#[test]
fn a_request_forwarded_and_unanswered_at_the_crash_is_reversed_and_its_retransmit_replayed_91() {
    let mut h = Harness::new();
    let purchase = h.purchase("TERM0001", 42, 2500);
    let (_, up) = one_sent(&h.request(1, purchase.clone()));

    let (mut h, found, out) = h.restart(h.journal.len());
    assert_eq!((found.in_doubt, found.transactions), (1, 1));
    assert!(matches!(
        steps(&out)[..],
        [Step::InDoubt, Step::ReversalQueued]
    ));
    let reversal = reversal_of(&mut h, TxnId(1));
    assert_eq!(reversal.mti(), Mti::REVERSAL);
    assert!(!reversal.has(2), "the journal keeps no card number");
    assert_eq!(text(&reversal, 37), text(&up, 37));
    assert_eq!(text(&reversal, 4), "000000002500");
    let original = reversal.original_data().unwrap();
    assert_eq!(original.mti, up.mti());
    assert_eq!(original.stan, up.stan().unwrap());

    let out = h.request(2, purchase);
    assert_eq!(
        sent(&out).count(),
        0,
        "a retransmit is never forwarded again"
    );
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::ISSUER_UNAVAILABLE);
}

#[test]
fn an_approval_told_before_the_crash_is_replayed_with_its_auth_code_and_can_still_be_reversed() {
    let mut h = Harness::new();
    let purchase = h.purchase("TERM0001", 42, 2500);
    let (link, up) = one_sent(&h.request(1, purchase.clone()));
    h.step(Event::Response {
        link,
        msg: answer(&up, "00"),
    });

    let (mut h, found, out) = h.restart(h.journal.len());
    assert_eq!((found.in_doubt, found.reversals), (0, 0));
    assert_eq!(found.idempotency_entries, 1);
    assert!(out.is_empty(), "nothing to do: {out:?}");
    let out = h.request(2, purchase.clone());
    assert_eq!(sent(&out).count(), 0);
    let (_, replayed) = one_answer(&out);
    assert_eq!(rc(&replayed), ResponseCode::APPROVED);
    assert_eq!(text(&replayed, 38), "A1B2C3");
    assert_eq!(text(&replayed, 37), text(&up, 37));
    assert_eq!(replayed.stan(), Some(42));

    // The terminal reverses it after the restart: the issuer gets the reversal, the terminal its 0410.
    let mut reversal = purchase
        .response(&[2, 3, 4, 7, 11, 12, 13, 41, 42, 49])
        .unwrap();
    reversal.set_mti(Mti::REVERSAL);
    let out = h.request(2, reversal);
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::APPROVED);
    let (_, upstream) = one_sent(&out);
    assert_eq!(upstream.mti(), Mti::REVERSAL);
    assert_eq!(text(&upstream, 37), text(&up, 37));
}

#[test]
fn a_decline_is_replayed_and_never_reversed() {
    let mut h = Harness::new();
    let purchase = h.purchase("TERM0001", 42, 2500);
    let (link, up) = one_sent(&h.request(1, purchase.clone()));
    h.step(Event::Response {
        link,
        msg: answer(&up, "51"),
    });
    let (mut h, found, _) = h.restart(h.journal.len());
    assert_eq!((found.in_doubt, found.reversals), (0, 0));
    let out = h.request(2, purchase);
    assert_eq!(rc(&one_answer(&out).1).as_str(), "51");
    assert_eq!(sent(&out).count(), 0);
}

#[test]
fn a_pending_reversal_resumes_with_its_attempt_count() {
    let mut h = Harness::new();
    let (_, _) = one_sent(&h.request(1, h.purchase("TERM0001", 42, 2500)));
    h.fire(TimerId::Response(TxnId(1)));
    assert_eq!(count(&h, |s| matches!(s, Step::ReversalSent { .. })), 1);

    let (mut h, found, out) = h.restart(h.journal.len());
    assert_eq!((found.in_doubt, found.reversals), (0, 1));
    assert_eq!(
        h.engine.timer(TimerId::Saf(TxnId(1))),
        Some(h.now.mono),
        "its next attempt is due at once"
    );
    assert!(
        sent(&out).next().is_none(),
        "but not sent by recovery itself"
    );
    let repeat = reversal_of(&mut h, TxnId(1));
    assert_eq!(repeat.mti(), Mti::REVERSAL_REPEAT, "the second attempt");
    assert_eq!(h.engine.pending_reversals(), 1);
}

#[test]
fn new_transactions_after_a_restart_are_numbered_after_the_recovered_ones() {
    let mut h = Harness::new();
    one_sent(&h.request(1, h.purchase("TERM0001", 1, 100)));
    one_sent(&h.request(1, h.purchase("TERM0001", 2, 100)));
    let (mut h, _, _) = h.restart(h.journal.len());
    let out = h.request(1, h.purchase("TERM0001", 3, 100));
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Journal(r) if r.txn == TxnId(3))),
        "after txns 1 and 2 (their reversals keep their ids): {out:?}"
    );
}

/// A crash may cut the journal after any record. Whatever survived, the restart leaves the issuer with a
/// debit only if the terminal was told "approved": anything forwarded and not known to be declined is
/// reversed (a reversal of a decline the journal lost is harmless: the issuer holds nothing).
#[test]
fn after_a_crash_at_any_record_only_a_purchase_told_approved_stays_debited() {
    for rc_given in ["00", "51"] {
        for timeout in [false, true] {
            let mut h = Harness::new();
            let (link, up) = one_sent(&h.request(1, h.purchase("TERM0001", 42, 2500)));
            if timeout {
                h.fire(TimerId::Response(TxnId(1)));
            } else {
                h.step(Event::Response {
                    link,
                    msg: answer(&up, rc_given),
                });
            }
            for durable in 0..=h.journal.len() {
                let survived = &h.journal[..durable];
                let forwarded = survived
                    .iter()
                    .any(|r| matches!(r.step, Step::Forwarded { .. }));
                let told_approved = survived
                    .iter()
                    .any(|r| matches!(r.step, Step::Told { rc } if rc == ResponseCode::APPROVED));
                let declined = survived
                    .iter()
                    .any(|r| matches!(r.step, Step::Answered { rc, .. } if !rc.is_approval()));
                let (restarted, _, _) = h.restart(durable);
                let reversing = restarted.engine.pending_reversals() == 1;
                let debited = forwarded && !declined;
                assert_eq!(
                    reversing,
                    debited && !told_approved,
                    "rc {rc_given}, timeout {timeout}, crash after record {durable} of {:?}",
                    h.journal.iter().map(|r| &r.step).collect::<Vec<_>>()
                );
            }
        }
    }
}

/// Received, and stopped before its next records were durable: the restart closes it as refused, so
/// that nothing holds its key (in cluster mode, another node's retransmit may then take it over).
#[test]
fn a_request_received_and_never_acted_on_is_closed_at_restart() {
    let mut h = Harness::new();
    one_sent(&h.request(1, h.purchase("TERM0001", 1, 100)));
    assert!(matches!(h.journal[0].step, Step::Received(_)));
    let (first, found, out) = h.restart(1);
    assert_eq!(found.in_doubt, 0, "never forwarded, so nothing to reverse");
    assert_eq!(
        steps(&out),
        [&Step::Rejected {
            rc: ResponseCode::ISSUER_UNAVAILABLE
        }]
    );
    let (mut again, _, out) = first.restart(first.journal.len());
    assert!(steps(&out).is_empty(), "closed once, for good");
    // Its retransmit is a first attempt.
    one_sent(&again.request(1, again.purchase("TERM0001", 1, 100)));
}
