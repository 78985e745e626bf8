//! Cluster mode's rules: a new key is claimed with its request's first record, a request that can be
//! routed is forwarded provisionally in the same commit, and a claim lost to another node's transaction
//! is answered from that transaction's records. The other node is a second engine; the shared store's
//! answers are given by hand, and the write-ahead gate (which holds a provisional forward until its
//! claim's commit, and withdraws it when the claim is lost) is not in the picture: the tests see the
//! engine's actions as it emits them.

mod support;

use engine::{Action, ConnId, Event, Record, Step, TimerId, TxnId};
use iso8583::ResponseCode;
use support::cluster::*;
use support::*;

#[test]
fn a_new_key_is_claimed_with_its_first_record_and_forwarded_provisionally_in_the_same_commit() {
    let mut a = node();
    let out = a.request(1, a.purchase("TERM0001", 1, 100));
    assert!(matches!(
        steps(&out)[..],
        [Step::Received(_), Step::Forwarded { .. }]
    ));
    let claim = one_claim(&out);
    let position = |f: fn(&Action) -> bool| out.iter().position(f).unwrap();
    let record = position(|a| matches!(a, Action::Journal(_)));
    let claim_at = position(|a| matches!(a, Action::Claim(_)));
    let send_at = position(|a| matches!(a, Action::Send { .. }));
    assert!(
        record < claim_at && claim_at < send_at,
        "the claim goes with the record before it, the forward after both: {out:#?}"
    );
    assert_eq!((claim.terminal.as_str(), claim.stan), ("TERM0001", 1));
    let (link, up) = one_sent(&out);
    // A retransmit meanwhile joins it, and is answered with it.
    let out = a.request(2, a.purchase("TERM0001", 1, 100));
    assert!(matches!(steps(&out)[..], [Step::Joined]));
    assert!(claims(&out).is_empty() && answers(&out).count() == 0);

    assert!(
        claimed(&mut a, claim.txn, None).is_empty(),
        "won: the forward went with the commit"
    );
    let out = a.step(Event::Response {
        link,
        msg: answer(&up, "00"),
    });
    let told: Vec<ConnId> = answers(&out).map(|(c, _)| c).collect();
    assert_eq!(told, [ConnId(1), ConnId(2)]);
}

#[test]
fn a_key_another_node_answered_is_replayed_from_its_records_and_never_forwarded() {
    let (a, mut b, original, txn, out) = approved_on_a_then_asked_on_b(2500);
    let rrn = a
        .journal
        .iter()
        .find_map(|r| match &r.step {
            Step::Forwarded { original, .. } => original.rrn().map(str::to_owned),
            _ => None,
        })
        .unwrap();

    assert_eq!(sent(&out).count(), 1, "provisional, held by the gate");
    let out = claimed(&mut b, txn, Some(holder(&a, "a", original, false)));
    assert_eq!(sent(&out).count(), 0);
    // Taken back: nothing of it is left in flight or in the timers.
    assert_eq!(b.engine.in_flight(), 0);
    assert!(b.engine.timer(TimerId::Response(txn)).is_none());
    let (conn, told) = one_answer(&out);
    assert_eq!(conn, ConnId(5));
    assert_eq!(rc(&told), ResponseCode::APPROVED);
    assert_eq!(text(&told, 38), "A1B2C3", "the holder's auth code");
    assert_eq!(text(&told, 37), rrn, "the holder's RRN");
    assert!(matches!(
        steps(&out)[..],
        [Step::HeldElsewhere { txn, .. }, Step::Replayed { .. }] if *txn == original
    ));
    // b keeps no entry for another node's approval: the next retransmit asks the store again, and the
    // terminal's reversal finds the approval in the holder's records.
    let out = b.request(6, b.purchase("TERM0001", 7, 2500));
    assert_eq!(one_claim(&out).stan, 7);
}

#[test]
fn a_provisional_forward_whose_commit_outlasts_the_response_timeout_waits_for_its_claim() {
    // The retransmit on b is forwarded provisionally; b's commit of it is slow (a database under
    // load), and the forward's response timer comes due before the claim's answer.
    let (a, mut b, original, txn, _) = approved_on_a_then_asked_on_b(2500);
    let fired = b.fire(TimerId::Response(txn));
    assert!(
        answers(&fired).count() == 0 && steps(&fired).is_empty(),
        "the forward has not left (the gate holds it behind the claim): nothing timed out, nothing \
         told: {fired:#?}"
    );
    assert!(
        b.engine.timer(TimerId::Response(txn)).is_some(),
        "still timed"
    );
    // The claim was a's: the terminal is told a's approval, and nothing is reversed.
    let out = claimed(&mut b, txn, Some(holder(&a, "a", original, false)));
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::APPROVED);
    assert_eq!(sent(&out).count(), 0);
    assert!(
        !b.journal
            .iter()
            .any(|r| matches!(r.step, Step::TimedOut | Step::ReversalQueued)),
        "{:#?}",
        b.journal
    );
    assert_eq!(b.engine.in_flight(), 0);
    assert!(b.engine.timer(TimerId::Response(txn)).is_none());
}

#[test]
fn at_the_end_of_the_grace_period_a_provisional_forward_is_withdrawn_not_reversed_and_pleaded() {
    let mut a = node();
    // One forward whose claim is won (it left), one still provisional.
    let out = a.request(1, a.purchase("TERM0001", 1, 100));
    let left = one_claim(&out).txn;
    claimed(&mut a, left, None);
    let out = a.request(2, a.purchase("TERM0002", 2, 100));
    let provisional = one_claim(&out).txn;

    let out = a.step(Event::GraceOver);
    assert_eq!(a.engine.in_flight(), 0);
    let withdrawn: Vec<TxnId> = out
        .iter()
        .filter_map(|a| match a {
            Action::Withdraw(txn) => Some(*txn),
            _ => None,
        })
        .collect();
    assert_eq!(
        withdrawn,
        [provisional],
        "the gate drops it: it never leaves"
    );
    let reversed: Vec<_> = sent(&out).map(|(_, m)| m.mti()).collect();
    assert_eq!(
        reversed,
        [iso8583::Mti::REVERSAL],
        "only the one that left: {out:#?}"
    );
    let told: Vec<_> = answers(&out).map(|(c, m)| (c, rc(m))).collect();
    let unavailable = ResponseCode::ISSUER_UNAVAILABLE;
    assert_eq!(told, [(ConnId(2), unavailable), (ConnId(1), unavailable)]);
    // The refused one was told 91 before the store said whose its key is, and this node looks
    // nothing up any more: a plea, for another node to reverse whatever held the key.
    let pleas: Vec<_> = (out.iter())
        .filter_map(|a| match a {
            Action::Plead(p) => Some((p.terminal.as_str(), p.stan)),
            _ => None,
        })
        .collect();
    assert_eq!(pleas, [("TERM0002", 2)]);
    // A restart after its commit lands finds nothing of it in doubt.
    let (_, found, _) = a.restart(a.journal.len());
    assert_eq!((found.in_doubt, found.reversals), (0, 1), "{found:?}");
}

#[test]
fn a_different_request_under_a_key_held_elsewhere_is_refused_94() {
    let (a, mut b, original, txn, _) = approved_on_a_then_asked_on_b(9900);
    let out = claimed(&mut b, txn, Some(holder(&a, "a", original, false)));
    assert_eq!(sent(&out).count(), 0);
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::DUPLICATE);
}

#[test]
fn a_key_in_flight_on_a_live_node_is_asked_about_again_until_it_is_answered() {
    let (mut a, mut b) = (node(), node());
    let out = a.request(1, a.purchase("TERM0001", 3, 100));
    let original = one_claim(&out).txn;
    let (link, up) = one_sent(&out);
    claimed(&mut a, original, None);

    let out = b.request(5, b.purchase("TERM0001", 3, 100));
    let txn = one_claim(&out).txn;
    let out = claimed(&mut b, txn, Some(holder(&a, "a", original, false)));
    assert!(
        answers(&out).count() == 0 && sent(&out).count() == 0,
        "it waits"
    );
    let asked = b.fire(TimerId::Claim(txn));
    assert_eq!(one_claim(&asked).txn, txn, "asked again");

    a.step(Event::Response {
        link,
        msg: answer(&up, "00"),
    });
    let out = claimed(&mut b, txn, Some(holder(&a, "a", original, false)));
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::APPROVED);
    assert_eq!(b.engine.in_flight(), 0);
}

#[test]
fn a_key_held_in_flight_by_a_live_node_is_waited_for_past_the_deadline_until_it_settles() {
    let (mut a, mut b) = (node(), node());
    let started = b.now.mono;
    let (original, txn, approval) = in_flight_on_a_then_retransmitted_on_b(&mut a, &mut b);
    // a's approval is slow to become durable (its commits stall): b keeps asking, past its deadline,
    // and tells its terminal nothing meanwhile.
    while b.now.mono - started < 2 * TIMEOUT {
        let asked = b.fire(TimerId::Claim(txn));
        assert_eq!(answers(&asked).count(), 0, "{asked:#?}");
        assert_eq!(one_claim(&asked).txn, txn, "asked again");
        claimed(&mut b, txn, Some(holder(&a, "a", original, false)));
    }
    a.step(approval);
    let out = claimed(&mut b, txn, Some(holder(&a, "a", original, false)));
    assert_eq!(
        rc(&one_answer(&out).1),
        ResponseCode::APPROVED,
        "a's answer"
    );
    assert_eq!(sent(&out).count(), 0);
    assert_eq!(b.engine.in_flight(), 0);
}

#[test]
fn a_key_held_by_another_nodes_balance_inquiry_is_answered_91_at_the_deadline() {
    let (mut a, mut b) = (node(), node());
    let mut inquiry = a.purchase("TERM0001", 3, 0);
    inquiry.set(3, "310000").unwrap();
    let out = a.request(1, inquiry.clone());
    let original = one_claim(&out).txn;
    claimed(&mut a, original, None);
    // a never settles it (a restart of a leaves nothing to reverse for a request that moves no
    // money): b does not wait for it past the deadline, since a 91 contradicts nothing.
    let started = b.now.mono;
    let txn = one_claim(&b.request(5, inquiry)).txn;
    claimed(&mut b, txn, Some(holder(&a, "a", original, false)));
    let mut last = b.fire(TimerId::Claim(txn));
    while answers(&last).count() == 0 && b.now.mono - started < 3 * TIMEOUT {
        claimed(&mut b, txn, Some(holder(&a, "a", original, false)));
        last = b.fire(TimerId::Claim(txn));
    }
    assert!(b.now.mono - started >= TIMEOUT);
    assert_eq!(rc(&one_answer(&last).1), ResponseCode::ISSUER_UNAVAILABLE);
}

#[test]
fn a_claim_the_store_never_answers_is_answered_91_at_the_deadline() {
    let mut b = node();
    let started = b.now.mono;
    // A request with no route waits for its claim; the store does not answer it (a database that
    // cannot be read): nothing says another node holds the key.
    let txn = one_claim(&b.request(6, unrouted(&b, "TERM0002", 4))).txn;
    let last = fire_until(&mut b, txn, |out| {
        let told = answers(out).count() > 0;
        if !told {
            assert_eq!(one_claim(out).txn, txn, "asked again meanwhile");
        }
        told
    });
    assert!(
        b.now.mono - started >= TIMEOUT,
        "the deadline is the longest issuer timeout"
    );
    assert_eq!(rc(&one_answer(&last).1), ResponseCode::ISSUER_UNAVAILABLE);
    assert_eq!(sent(&last).count(), 0);
}

#[test]
fn a_key_whose_holder_ended_without_forwarding_is_taken_over_from_it_alone() {
    let (mut a, mut b) = (node(), node());
    // Claimed on a, then refused there (no link up for its issuer).
    let links: Vec<_> = a.engine.links().map(|(link, _)| link).collect();
    for link in links {
        a.step(Event::LinkDown(link));
    }
    let out = a.request(1, a.purchase("TERM0001", 4, 100));
    let original = one_claim(&out).txn;
    let out = claimed(&mut a, original, None);
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::ISSUER_UNAVAILABLE);

    let out = b.request(5, b.purchase("TERM0001", 4, 100));
    let txn = one_claim(&out).txn;
    let out = claimed(&mut b, txn, Some(holder(&a, "a", original, false)));
    let retry = one_claim(&out);
    assert_eq!(retry.replacing, Some(("a".into(), original)));
    let out = claimed(&mut b, txn, None);
    assert_eq!(sent(&out).count(), 1, "forwarded once the key is its own");
}

#[test]
fn a_forwarded_request_of_a_node_taken_over_is_replayed_91() {
    let (mut a, mut b) = (node(), node());
    let (original, txn, _) = in_flight_on_a_then_retransmitted_on_b(&mut a, &mut b);
    let out = claimed(&mut b, txn, Some(holder(&a, "a", original, true)));
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::ISSUER_UNAVAILABLE);
    assert_eq!(sent(&out).count(), 0);
}

#[test]
fn while_the_journal_cannot_write_new_requests_are_refused_at_once_and_replays_still_go() {
    let mut a = node();
    approved_on(&mut a, "TERM0001", 1, 100);
    // One forwarded provisionally, and one with no route that waits for its claim.
    let out = a.request(2, a.purchase("TERM0002", 2, 100));
    let provisional = one_claim(&out).txn;
    let out = a.request(6, unrouted(&a, "TERM0006", 6));
    let waiting = one_claim(&out).txn;
    assert_eq!(sent(&out).count(), 0);

    let out = a.step(Event::JournalWritable(false));
    assert!(
        matches!(
            &out[..6],
            [
                Action::Journal(Record { step: Step::Withdrawn, .. }),
                Action::Withdraw(w),
                Action::Journal(_),
                Action::AnswerNow { conn: ConnId(2), msg: first, .. },
                Action::Journal(_),
                Action::AnswerNow { conn: ConnId(6), msg: second, .. },
            ] if *w == provisional
                && rc(first) == ResponseCode::ISSUER_UNAVAILABLE
                && rc(second) == ResponseCode::ISSUER_UNAVAILABLE
        ),
        "the provisional forward is withdrawn (the gate still holds it) and refused at once, as is the \
         request waiting for its claim: {out:#?}"
    );
    assert_eq!(
        pleaded(&out[6..]),
        [2, 6],
        "each 91 was told without the store's word: whatever holds its key is to be reversed"
    );
    assert!(a.engine.timer(TimerId::Response(provisional)).is_none());
    // Its commit may still land (the claim and the forward's record): the records after it say it
    // never left, so a restart finds nothing in doubt.
    let (_, found, _) = a.restart(a.journal.len());
    assert_eq!((found.in_doubt, found.reversals), (0, 0), "{found:?}");
    let out = a.request(3, a.purchase("TERM0003", 3, 100));
    let now: Vec<_> = out
        .iter()
        .filter_map(|a| match a {
            Action::AnswerNow { msg, .. } => Some(rc(msg)),
            _ => None,
        })
        .collect();
    assert_eq!(now, [ResponseCode::ISSUER_UNAVAILABLE]);
    assert!(claims(&out).is_empty(), "nothing claimed");
    assert!(
        matches!(&steps(&out)[..], [Step::Received(r)] if r.mti == iso8583::Mti::REVERSAL),
        "the request is unrecorded; the reversal in its name is: {out:#?}"
    );
    assert_eq!(pleaded(&out), [3]);
    // A retransmit of an answered request is replayed at once, naming the transaction it repeats: the
    // gate holds it only while that transaction has a record not durable yet.
    let out = a.request(4, a.purchase("TERM0001", 1, 100));
    assert!(
        matches!(
            &out[..],
            [Action::AnswerNow { msg, repeats: Some(_), .. }, Action::Journal(_)]
                if rc(msg) == ResponseCode::APPROVED
        ),
        "{out:#?}"
    );
    // The claim's answer after the refusal changes nothing.
    assert!(claimed(&mut a, waiting, None).is_empty());

    a.step(Event::JournalWritable(true));
    let out = a.request(5, a.purchase("TERM0005", 5, 100));
    assert_eq!(claims(&out).len(), 1);
}

/// A request given up with 91 for an unanswered claim keeps that answer for its retransmits: one
/// sent before the 91 reached the terminal (it waits behind its record) is told the same 91 after
/// it, and never claims or forwards anything, so the terminal hears one answer under its STAN.
#[test]
fn a_retransmit_of_a_request_given_up_with_91_is_told_the_same_91() {
    let mut b = node();
    let txn = one_claim(&b.request(6, unrouted(&b, "TERM0002", 4))).txn;
    let last = fire_until(&mut b, txn, |out| answers(out).count() > 0);
    assert_eq!(rc(&one_answer(&last).1), ResponseCode::ISSUER_UNAVAILABLE);
    let out = b.request(6, unrouted(&b, "TERM0002", 4));
    assert!(claims(&out).is_empty(), "{out:#?}");
    assert_eq!(sent(&out).count(), 0);
    let told: Vec<_> = answers(&out).map(|(conn, m)| (conn, rc(m))).collect();
    assert_eq!(told, [(ConnId(6), ResponseCode::ISSUER_UNAVAILABLE)]);
}

/// A node stopped past a claim's deadline (paused) finds the claim's timer late: its connections may
/// have closed meanwhile, their terminals gone elsewhere and told what stands there. It gives the
/// claim up a moment later, once it has read those closes: a 91 told to nobody admits no reversal in
/// a terminal's name. To a terminal still there, the 91 is told as ever.
#[test]
fn a_claim_given_up_by_a_node_stopped_past_its_deadline_waits_for_its_connections_closes() {
    for closed in [true, false] {
        let mut b = node();
        let txn = one_claim(&b.request(6, unrouted(&b, "TERM0002", 4))).txn;
        let deadline = b.engine.timer(TimerId::Claim(txn)).expect("armed");
        b.advance(deadline - b.now.mono + std::time::Duration::from_secs(1));
        let out = b.fire(TimerId::Claim(txn));
        assert_eq!(answers(&out).count(), 0, "not yet: {out:#?}");
        if closed {
            b.step(Event::ConnClosed(ConnId(6)));
        }
        let out = b.fire(TimerId::Claim(txn));
        assert_eq!(answers(&out).count(), usize::from(!closed), "{out:#?}");
        assert_eq!(pleaded(&out).len(), usize::from(!closed));
    }
}
