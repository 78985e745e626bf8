//! Cluster mode's 91 told before the store said whose the key is (the store away, or a claim's
//! deadline passed): the reversal the switch admits in the terminal's name (a plea), which waits out
//! the terminal's patience and then reverses what the store's records say the terminal may be charged
//! for. The other nodes are engines of their own; the store's answers are given by hand.

mod support;

use engine::{Action, ConnId, Event, Step, TimerId, TxnId};
use iso8583::ResponseCode;
use support::cluster::*;
use support::*;

#[test]
fn a_91_told_while_the_store_is_down_reverses_the_approval_another_node_made_under_its_key() {
    // a made the approval durable, but its terminal gave up waiting and retransmitted through b,
    // which cannot reach the store.
    let (mut a, mut b) = (node(), node());
    let original = approved_on(&mut a, "TERM0001", 7, 2500);
    b.step(Event::JournalWritable(false));
    let out = b.request(5, b.purchase("TERM0001", 7, 2500));
    assert!(
        matches!(&out[0], Action::AnswerNow { conn: ConnId(5), msg, .. } if rc(msg) == ResponseCode::ISSUER_UNAVAILABLE),
        "91 at once: {out:#?}"
    );
    assert_eq!(b.engine.stats().refused_unknowing, 1);
    // Its terminal may still ask again: nothing is asked before its patience is over, nor while the
    // journal cannot write (the question would wait in the commit the outage holds).
    let (plea, txn) = admitted(&out);
    assert!(looked_up(&out).is_empty(), "{out:#?}");
    for _ in 0..3 {
        let polled = b.fire(TimerId::Claim(txn));
        assert!(polled.is_empty(), "{polled:#?}");
    }
    assert!(b.now.wall >= plea.refused_at + PATIENCE);

    b.step(Event::JournalWritable(true));
    let lookup = one_lookup(&b.fire(TimerId::Claim(txn)));
    assert_eq!((lookup.stan, lookup.reversal), (7, false));
    let out = claimed(&mut b, lookup.txn, Some(holder(&a, "a", original, false)));
    one_reversal_of(&a, &out);
    assert_eq!(answers(&out).count(), 0, "nobody waits for this reversal");
    // b's restart resumes it from b's own records.
    let (_, found, _) = b.restart(b.journal.len() - 1);
    assert_eq!(found.reversals, 1, "{found:?}");
}

#[test]
fn a_91_told_at_the_deadline_of_an_unanswered_claim_reverses_nothing_when_nothing_stands() {
    let mut b = node();
    let txn = one_claim(&b.request(6, unrouted(&b, "TERM0002", 4))).txn;
    let last = fire_until(&mut b, txn, |out| answers(out).count() > 0);
    let lookup = asked_once_patience_is_over(&mut b, &last);
    assert_eq!((lookup.stan, lookup.reversal), (4, false));
    // The key is b's own refused request: nothing stands at any issuer.
    let own = holder(&b, "b", txn, false);
    let out = claimed(&mut b, lookup.txn, Some(own));
    assert_eq!(sent(&out).count(), 0, "{out:#?}");
    assert_eq!(answers(&out).count(), 0);
}

#[test]
fn a_91_nobody_hears_reverses_nothing() {
    // The request's terminal gave up and closed its connection (it retransmits elsewhere, and its
    // last word is what it gets there): the 91 at the deadline is told to nobody.
    let mut b = node();
    let txn = one_claim(&b.request(6, unrouted(&b, "TERM0002", 4))).txn;
    b.step(Event::ConnClosed(ConnId(6)));
    let last = fire_until(&mut b, txn, |out| {
        (steps(out).iter()).any(|s| matches!(s, Step::Rejected { .. }))
    });
    assert_eq!(answers(&last).count(), 0);
    assert!(looked_up(&last).is_empty(), "nothing to undo: {last:#?}");
    assert_eq!(b.engine.stats().refused_unknowing, 0);
}

#[test]
fn a_plea_taken_on_reverses_what_held_the_key_when_its_terminal_was_told_91() {
    let second = std::time::Duration::from_secs(1);
    let mut a = node();
    let approved = approved_on(&mut a, "TERM0001", 7, 2500);
    a.advance(second);
    let mut c = node();
    c.now = a.now;
    let out = c.step(Event::Plea(plea(&a, 7, second / 2)));
    assert!(matches!(out[0], Action::Plead(_)), "{out:#?}");
    let lookup = asked_once_patience_is_over(&mut c, &out);
    let out = claimed(&mut c, lookup.txn, Some(holder(&a, "a", approved, false)));
    let (_, reversal) = one_sent(&out);
    assert_eq!(reversal.mti().class(), iso8583::Class::REVERSAL);
    assert!(settled(&out));
    assert_eq!(c.engine.stats().pleas_taken, 1);
}

/// What holds the key now was received after the 91 (its terminal never got the 91 and sent the
/// request again): its own answer is what the terminal hears, and nothing is reversed, not even when
/// the node taking the plea on holds that approval in memory.
#[test]
fn a_plea_taken_on_leaves_an_attempt_received_after_the_91_alone() {
    let second = std::time::Duration::from_secs(1);
    let mut c = node();
    let later = approved_on(&mut c, "TERM0001", 7, 2500);
    let left = plea(&c, 7, second);
    let out = c.step(Event::Plea(left));
    assert_eq!(sent(&out).count(), 0, "decided from memory: {out:#?}");
    let lookup = asked_once_patience_is_over(&mut c, &out);
    let held = holder(&c, "c", later, false);
    let out = claimed(&mut c, lookup.txn, Some(held));
    assert_eq!(sent(&out).count(), 0, "{out:#?}");
    assert!(settled(&out));
}

/// The terminal was told 91, asked again elsewhere and heard the approval replayed: that is its last
/// word, and the plea reverses nothing.
#[test]
fn a_plea_taken_on_leaves_an_approval_replayed_after_the_91_alone() {
    let second = std::time::Duration::from_secs(1);
    let mut a = node();
    let approved = approved_on(&mut a, "TERM0001", 7, 2500);
    a.advance(2 * second);
    let out = a.request(3, a.purchase("TERM0001", 7, 2500));
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::APPROVED, "replayed");
    let mut c = node();
    c.now = a.now;
    let out = c.step(Event::Plea(plea(&a, 7, second)));
    let lookup = asked_once_patience_is_over(&mut c, &out);
    let out = claimed(&mut c, lookup.txn, Some(holder(&a, "a", approved, false)));
    assert_eq!(sent(&out).count(), 0, "{out:#?}");
    assert!(settled(&out));
}

/// The terminal, never told the 91, asked again and reached a third node, which replayed the
/// holder's approval from its records: that replay is the third node's, under its own transaction,
/// and still the terminal's last word. The plea reverses nothing.
#[test]
fn a_plea_leaves_an_approval_another_node_replayed_after_the_91_alone() {
    let second = std::time::Duration::from_secs(1);
    let mut a = node();
    let approved = approved_on(&mut a, "TERM0001", 7, 2500);
    let mut d = node();
    d.now = a.now.after(2 * second);
    let out = d.request(3, d.purchase("TERM0001", 7, 2500));
    let asked = one_claim(&out).txn;
    let out = claimed(&mut d, asked, Some(holder(&a, "a", approved, false)));
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::APPROVED, "replayed");
    let mut c = node();
    c.now = d.now;
    let out = c.step(Event::Plea(plea(&c, 7, second)));
    let lookup = asked_once_patience_is_over(&mut c, &out);
    let mut held = holder(&a, "a", approved, false);
    let replay = d.journal.iter().filter(|r| r.txn == asked);
    held.others = replay.map(|r| ("d".into(), r.clone())).collect();
    let out = claimed(&mut c, lookup.txn, Some(held));
    assert_eq!(sent(&out).count(), 0, "{out:#?}");
    assert!(settled(&out));
}

/// The terminal's own reversal under the key of a reversal admitted in its name: the terminal says
/// itself what it wants, so the store is asked at once, the plea is dropped, and the reversal is
/// made and answered.
#[test]
fn a_terminals_own_reversal_overtakes_one_admitted_in_its_name() {
    let (mut a, mut b) = (node(), node());
    let original = approved_on(&mut a, "TERM0001", 7, 2500);
    b.step(Event::JournalWritable(false));
    let out = b.request(5, b.purchase("TERM0001", 7, 2500));
    let (plea, txn) = admitted(&out);
    b.step(Event::JournalWritable(true));
    let out = b.request(9, terminal_reversal(&b, "TERM0001", 7));
    assert!(settled(&out), "the plea is dropped: {out:#?}");
    let asked = b.fire(TimerId::Claim(txn));
    let lookup = one_lookup(&asked);
    assert!(b.now.wall < plea.refused_at + PATIENCE, "asked at once");
    let out = claimed(&mut b, lookup.txn, Some(holder(&a, "a", original, false)));
    one_reversal_of(&a, &out);
    let told: Vec<_> = answers(&out).map(|(conn, m)| (conn, rc(m))).collect();
    assert_eq!(told, [(ConnId(9), ResponseCode::APPROVED)]);
}

/// The holder's approval came after the 91, but to the attempt received before it (its node was
/// paused with the issuer's answer waiting, and the terminal had long gone elsewhere): told to a
/// connection the terminal left, it proves nothing, and the 91 the terminal took stands.
#[test]
fn a_plea_reverses_an_approval_told_after_the_91_to_an_attempt_from_before_it() {
    let second = std::time::Duration::from_secs(1);
    let mut a = node();
    let out = a.request(1, a.purchase("TERM0001", 7, 2500));
    let txn = one_claim(&out).txn;
    let (link, up) = one_sent(&out);
    assert!(claimed(&mut a, txn, None).is_empty());
    a.advance(3 * second);
    let out = a.step(Event::Response {
        link,
        msg: answer(&up, "00"),
    });
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::APPROVED, "told now");
    let mut c = node();
    c.now = a.now;
    let out = c.step(Event::Plea(plea(&c, 7, 2 * second)));
    let lookup = asked_once_patience_is_over(&mut c, &out);
    let out = claimed(&mut c, lookup.txn, Some(holder(&a, "a", txn, false)));
    let (_, reversal) = one_sent(&out);
    assert_eq!(reversal.mti().class(), iso8583::Class::REVERSAL);
}

/// The terminal's retransmit refused 91 too, while the reversal in its name for the first 91 waits:
/// the later 91 is its last word, and the waiting reversal answers for it. An attempt between the two
/// (here on another node) is before the terminal's last word, and the approval is reversed.
#[test]
fn a_later_91_under_the_key_of_a_waiting_plea_is_the_one_it_answers_for() {
    let second = std::time::Duration::from_secs(1);
    let mut a = node();
    let approved = approved_on(&mut a, "TERM0001", 7, 2500);
    let mut b = node();
    b.now = a.now.after(second);
    b.step(Event::JournalWritable(false));
    let (first, txn) = admitted(&b.request(5, b.purchase("TERM0001", 7, 2500)));
    b.advance(2 * second);
    let out = b.request(6, b.purchase("TERM0001", 7, 2500));
    let pleas: Vec<_> = (out.iter())
        .filter_map(|a| match a {
            Action::Plead(p) => Some(("plead", p.refused_at)),
            Action::PleaSettled(p) => Some(("settled", p.refused_at)),
            _ => None,
        })
        .collect();
    let later = b.now.wall;
    assert_eq!(pleas, [("settled", first.refused_at), ("plead", later)]);
    b.step(Event::JournalWritable(true));
    let lookup = one_lookup(&b.fire(TimerId::Claim(txn)));
    assert!(
        b.now.wall >= later + PATIENCE,
        "the patience runs from the later 91"
    );

    let mut held = holder(&a, "a", approved, false);
    let mut between = held.records[0].clone();
    (between.txn, between.at) = (TxnId(99), first.refused_at + second);
    held.others = vec![("d".into(), between)];
    let out = claimed(&mut b, lookup.txn, Some(held));
    one_reversal_of(&a, &out);
}
