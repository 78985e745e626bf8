//! Cluster mode's terminal reversals of originals this node does not hold: the store says which
//! node's transaction holds the original's key, and its records say what is reversed. The other node
//! is a second engine; the store's answers are given by hand.

mod support;

use engine::{Action, ConnId, Event, Step, TimerId};
use iso8583::ResponseCode;
use support::cluster::*;
use support::*;

#[test]
fn a_terminal_reversal_of_another_nodes_approval_reverses_it_from_its_records() {
    let (mut a, mut b) = (node(), node());
    let original = approved_on(&mut a, "TERM0001", 5, 100);
    let out = b.request(9, terminal_reversal(&b, "TERM0001", 5));
    assert!(
        answers(&out).count() == 0 && sent(&out).count() == 0,
        "{out:#?}"
    );
    let lookup = one_lookup(&out);
    assert_eq!((lookup.stan, lookup.reversal), (5, false));

    let out = claimed(&mut b, lookup.txn, Some(holder(&a, "a", original, false)));
    one_reversal_of(&a, &out);
    let (conn, told) = one_answer(&out);
    assert_eq!(
        (conn, told.mti().as_str(), rc(&told)),
        (ConnId(9), "0410", ResponseCode::APPROVED)
    );
    assert!(matches!(
        steps(&out)[..],
        [
            Step::Adopted { .. },
            Step::Forwarded { .. },
            Step::ReversalQueued,
            ..
        ]
    ));
    // b's restart resumes the reversal from b's own records.
    let (_, found, _) = b.restart(b.journal.len() - 1);
    assert_eq!(found.reversals, 1, "{found:?}");
}

#[test]
fn a_terminal_reversal_is_not_refused_for_a_slow_store() {
    let (mut a, mut b) = (node(), node());
    let original = approved_on(&mut a, "TERM0001", 5, 100);
    let started = b.now.mono;
    let lookup = one_lookup(&b.request(9, terminal_reversal(&b, "TERM0001", 5)));
    // The store does not answer for twice the deadline: b asks again, and refuses nothing.
    while b.now.mono - started < 2 * TIMEOUT {
        let asked = b.fire(TimerId::Claim(lookup.txn));
        assert_eq!(answers(&asked).count(), 0, "{asked:#?}");
        assert_eq!(one_lookup(&asked).txn, lookup.txn, "asked again");
    }
    let out = claimed(&mut b, lookup.txn, Some(holder(&a, "a", original, false)));
    assert_acknowledged(&out, 1);
}

#[test]
fn a_terminal_reversal_of_nothing_any_node_holds_is_answered_without_reversing() {
    let mut b = node();
    let out = b.request(9, terminal_reversal(&b, "TERM0001", 5));
    let txn = one_lookup(&out).txn;
    // DE90 absent: one candidate key, looked up once.
    let out = claimed(&mut b, txn, None);
    assert_eq!(sent(&out).count(), 0);
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::APPROVED);
}

#[test]
fn a_terminal_reversal_whose_connection_closed_while_looked_up_is_still_acted_on() {
    let (mut a, mut b) = (node(), node());
    let original = approved_on(&mut a, "TERM0001", 5, 100);
    let out = b.request(9, terminal_reversal(&b, "TERM0001", 5));
    let txn = one_lookup(&out).txn;
    let out = b.step(Event::ConnClosed(ConnId(9)));
    assert!(matches!(steps(&out)[..], [Step::Disconnected]));
    let out = claimed(&mut b, txn, Some(holder(&a, "a", original, false)));
    assert_eq!(sent(&out).count(), 1, "reversed all the same");
    assert_eq!(answers(&out).count(), 0);
    assert!(
        steps(&out)
            .iter()
            .any(|s| matches!(s, Step::Undeliverable { .. }))
    );
}

#[test]
fn a_repeat_of_a_terminal_reversal_still_looked_up_waits_for_it_and_shares_its_answer() {
    let (mut a, mut b) = (node(), node());
    let original = approved_on(&mut a, "TERM0001", 5, 100);
    let txn = one_lookup(&b.request(9, terminal_reversal(&b, "TERM0001", 5))).txn;
    let mut repeat = terminal_reversal(&b, "TERM0001", 5);
    repeat.set_mti(iso8583::Mti::REVERSAL_REPEAT);
    let out = b.request(10, repeat);
    assert_eq!(
        answers(&out).count(),
        0,
        "not told reversed before it is: {out:#?}"
    );
    let out = claimed(&mut b, txn, Some(holder(&a, "a", original, false)));
    assert_eq!(sent(&out).count(), 1);
    let told: Vec<ConnId> = answers(&out).map(|(c, _)| c).collect();
    assert_eq!(told, [ConnId(9), ConnId(10)]);
}

/// A terminal that reverses its purchase while the purchase still waits for its claim (a node that was
/// paused sees both at once) is answered only once the purchase can never be forwarded: the purchase
/// is refused, and winning its claim afterwards forwards nothing. (A purchase with no route waits for
/// its claim; one with a route is forwarded provisionally, below.)
#[test]
fn a_reversal_of_a_purchase_still_waiting_for_its_claim_withdraws_it() {
    let mut a = node();
    let out = a.request(1, unrouted(&a, "TERM0001", 5));
    let original = one_claim(&out).txn;
    let mut reversal = terminal_reversal(&a, "TERM0001", 5);
    reversal.set(2, "9999990000000001").unwrap();
    let out = a.request(1, reversal);
    let told: Vec<(ConnId, ResponseCode)> = answers(&out).map(|(c, m)| (c, rc(m))).collect();
    assert_eq!(
        told,
        [(ConnId(1), ResponseCode::ISSUER_UNAVAILABLE)],
        "the purchase refused at once: {out:#?}"
    );
    // Its key may be another node's: the reversal asks the store, which says it is this purchase's.
    let lookup = one_lookup(&out);
    let out = claimed(&mut a, original, None);
    assert_eq!(
        sent(&out).count(),
        0,
        "forwarded after its reversal: {out:#?}"
    );
    let own = holder(&a, "a", original, false);
    assert_acknowledged(&lookups_answered(&mut a, &lookup, Some(own)), 0);
}

#[test]
fn a_reversal_of_a_retransmit_waiting_for_another_nodes_answer_reverses_that_answer() {
    let (mut a, mut b) = (node(), node());
    // a approves, but its commit of the answer is slow: b's retransmit finds the key in flight there.
    let (original, _, approval) = in_flight_on_a_then_retransmitted_on_b(&mut a, &mut b);
    // The terminal gives up and reverses, on b.
    let out = b.request(5, terminal_reversal(&b, "TERM0001", 3));
    let lookup = refused_91_and_looked_up(&out, "the retransmit refused");
    // a's approval is durable now.
    a.step(approval);
    let out = claimed(&mut b, lookup.txn, Some(holder(&a, "a", original, false)));
    assert_acknowledged(&out, 1);
}

/// A terminal's reversal of a purchase forwarded provisionally withdraws it (it has not left: the gate
/// holds it behind its claim's commit) and is acted on as a reversal of whatever holds the key: nothing,
/// when the claim is won; another node's approval, reversed, when it is lost.
#[test]
fn a_reversal_of_a_provisional_forward_withdraws_it_whether_its_claim_is_won_or_lost() {
    let (mut a, mut b) = (node(), node());
    let out = b.request(1, b.purchase("TERM0001", 5, 100));
    let txn = one_claim(&out).txn;
    let out = b.request(1, terminal_reversal(&b, "TERM0001", 5));
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Withdraw(w) if *w == txn)),
        "{out:#?}"
    );
    let lookup = refused_91_and_looked_up(&out, "the purchase refused");
    // Won: the key is the withdrawn purchase's, and nothing stands at the issuer.
    assert!(claimed(&mut b, txn, None).is_empty());
    let own = holder(&b, "b", txn, false);
    assert_acknowledged(&lookups_answered(&mut b, &lookup, Some(own)), 0);
    assert_eq!(b.engine.in_flight(), 0);

    // Lost to a's approval: that approval is reversed.
    let mut c = node();
    let original = approved_on(&mut a, "TERM0002", 6, 100);
    let out = c.request(1, c.purchase("TERM0002", 6, 100));
    let txn = one_claim(&out).txn;
    let lookup = one_lookup(&c.request(1, terminal_reversal(&c, "TERM0002", 6)));
    let out = claimed(&mut c, txn, Some(holder(&a, "a", original, false)));
    assert!(
        answers(&out).count() == 0 && sent(&out).count() == 0,
        "{out:#?}"
    );
    let out = claimed(&mut c, lookup.txn, Some(holder(&a, "a", original, false)));
    assert_acknowledged(&out, 1);
    assert_eq!(c.engine.in_flight(), 0);
}

/// A terminal's reversal on the node that replayed another node's approval to its retransmit reverses
/// it: the replay left no entry saying nothing stands.
#[test]
fn a_reversal_on_the_node_that_replayed_an_approval_held_elsewhere_reverses_it() {
    let (mut a, mut b) = (node(), node());
    let original = approved_on(&mut a, "TERM0001", 3, 100);
    let txn = one_claim(&b.request(5, b.purchase("TERM0001", 3, 100))).txn;
    let out = claimed(&mut b, txn, Some(holder(&a, "a", original, false)));
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::APPROVED);

    let out = b.request(5, terminal_reversal(&b, "TERM0001", 3));
    let lookup = one_lookup(&out);
    let out = claimed(&mut b, lookup.txn, Some(holder(&a, "a", original, false)));
    let (_, rev) = one_sent(&out);
    assert_eq!(rev.mti(), iso8583::Mti::REVERSAL, "{out:#?}");
}

/// A 91 this node told without the store's word (the store was away) says nothing of what another
/// node did under the key: the terminal's reversal of that request, under a STAN of its own, asks the
/// store and reverses the approval another node holds. Answered from the 91 alone, it was told
/// "reversed" with the debit standing.
#[test]
fn a_terminals_reversal_of_a_request_this_node_refused_91_unknowing_asks_the_store() {
    let (mut a, mut b) = (node(), node());
    let original = approved_on(&mut a, "TERM0001", 7, 2500);
    // Forwarded provisionally, then withdrawn as the store goes away.
    one_claim(&b.request(5, b.purchase("TERM0001", 7, 2500)));
    let out = b.step(Event::JournalWritable(false));
    admitted(&out);
    b.step(Event::JournalWritable(true));
    let mut reversal = terminal_reversal(&b, "TERM0001", 8);
    let named = iso8583::OriginalData {
        mti: iso8583::Mti::FINANCIAL,
        stan: 7,
        transmission: 1121093000,
        acquirer: 0,
        forwarding: 0,
    };
    reversal.set(90, named.to_digits()).unwrap();
    let out = b.request(9, reversal);
    let answered = |a: &Action| matches!(a, Action::Answer { .. } | Action::AnswerNow { .. });
    assert!(!out.iter().any(answered), "not answered at once: {out:#?}");
    let lookup = one_lookup(&out);
    assert_eq!((lookup.stan, lookup.reversal), (7, false));
    let out = claimed(&mut b, lookup.txn, Some(holder(&a, "a", original, false)));
    one_reversal_of(&a, &out);
    let told: Vec<_> = answers(&out).map(|(conn, m)| (conn, rc(m))).collect();
    assert_eq!(told, [(ConnId(9), ResponseCode::APPROVED)]);
}
