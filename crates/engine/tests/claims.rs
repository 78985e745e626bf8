//! Cluster mode's rules: a new key is claimed with its request's first record, a request that can be
//! routed is forwarded provisionally in the same commit, and a claim lost to another node's transaction
//! is answered from that transaction's records. The other node is a second engine; the shared store's
//! answers are given by hand, and the write-ahead gate (which holds a provisional forward until its
//! claim's commit, and withdraws it when the claim is lost) is not in the picture: the tests see the
//! engine's actions as it emits them.

mod support;

use engine::{Action, Claim, ConnId, Event, Holder, Record, Step, TimerId, TxnId};
use iso8583::ResponseCode;
use support::*;

/// A node in cluster mode.
/// How long a terminal may still ask again after a 91, in these tests.
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

fn node() -> Harness {
    let (mut config, terminal) = config("iso87ascii", "iso87ascii");
    config.shared_store = true;
    config.terminal_patience = PATIENCE;
    Harness::with((config, terminal))
}

fn claims(out: &[Action]) -> Vec<Claim> {
    out.iter()
        .filter_map(|a| match a {
            Action::Claim(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

fn one_claim(out: &[Action]) -> Claim {
    let all = claims(out);
    assert_eq!(all.len(), 1, "expected one claim, got {out:#?}");
    all[0].clone()
}

/// The store's answers to a terminal's reversal's lookups: `first` for the first, nothing for the
/// candidates after it, until the reversal is answered.
fn lookups_answered(h: &mut Harness, lookup: &Claim, first: Option<Holder>) -> Vec<Action> {
    let mut out = claimed(h, lookup.txn, first);
    while answers(&out).count() == 0 {
        out = claimed(h, one_lookup(&out).txn, None);
    }
    out
}

/// A terminal's reversal acknowledged, after sending `reversals` reversals to issuers.
fn assert_acknowledged(out: &[Action], reversals: usize) {
    let mtis: Vec<_> = sent(out).map(|(_, m)| m.mti()).collect();
    assert_eq!(mtis, vec![iso8583::Mti::REVERSAL; reversals], "{out:#?}");
    assert_eq!(
        rc(&one_answer(out).1),
        ResponseCode::APPROVED,
        "acknowledged"
    );
}

/// Node `name`'s transaction `txn`, as the store would show it to another node.
fn holder(h: &Harness, name: &str, txn: TxnId, fenced: bool) -> Holder {
    let records: Vec<Record> = h.journal.iter().filter(|r| r.txn == txn).cloned().collect();
    let fingerprint = records
        .iter()
        .find_map(|r| match &r.step {
            Step::Received(r) => Some(r.fingerprint),
            _ => None,
        })
        .expect("the holder's request was received");
    Holder {
        node: name.into(),
        txn,
        fingerprint,
        records,
        fenced,
        others: Vec::new(),
    }
}

fn claimed(h: &mut Harness, txn: TxnId, holder: Option<Holder>) -> Vec<Action> {
    h.step(Event::Claimed { txn, holder })
}

/// A purchase approved on `a`, start to end: its transaction id there.
fn approved_on(a: &mut Harness, tid: &str, stan: u32, amount: u64) -> TxnId {
    let out = a.request(1, a.purchase(tid, stan, amount));
    let txn = one_claim(&out).txn;
    let (link, up) = one_sent(&out);
    assert!(claimed(a, txn, None).is_empty());
    let out = a.step(Event::Response {
        link,
        msg: answer(&up, "00"),
    });
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::APPROVED);
    txn
}

/// A purchase approved on node a, then a request on node b under its key (TERM0001, STAN 7) for
/// `amount`: both nodes, a's transaction and b's, and what b did with its request.
fn approved_on_a_then_asked_on_b(amount: u64) -> (Harness, Harness, TxnId, TxnId, Vec<Action>) {
    let (mut a, mut b) = (node(), node());
    let original = approved_on(&mut a, "TERM0001", 7, 2500);
    let out = b.request(5, b.purchase("TERM0001", 7, amount));
    let txn = one_claim(&out).txn;
    (a, b, original, txn, out)
}

/// A purchase claimed and forwarded on `a`, unanswered, and its retransmit on `b` waiting for its
/// claim: both transactions' ids, and the issuer's approval for `a` to get later.
fn in_flight_on_a_then_retransmitted_on_b(
    a: &mut Harness,
    b: &mut Harness,
) -> (TxnId, TxnId, Event) {
    let out = a.request(1, a.purchase("TERM0001", 3, 100));
    let original = one_claim(&out).txn;
    let (link, up) = one_sent(&out);
    claimed(a, original, None);
    let out = b.request(5, b.purchase("TERM0001", 3, 100));
    let txn = one_claim(&out).txn;
    claimed(b, txn, Some(holder(a, "a", original, false)));
    let approval = Event::Response {
        link,
        msg: answer(&up, "00"),
    };
    (original, txn, approval)
}

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

/// The one message `out` sends upstream: a reversal of `a`'s recorded forward, named by its RRN.
fn one_reversal_of(a: &Harness, out: &[Action]) {
    let (_, rev) = one_sent(out);
    assert_eq!(rev.mti(), iso8583::Mti::REVERSAL);
    let forwarded = a.journal.iter().find_map(|r| match &r.step {
        Step::Forwarded { original, .. } => original.rrn().map(str::to_owned),
        _ => None,
    });
    assert_eq!(Some(text(&rev, 37)), forwarded, "the RRN of a's forward");
}

/// The keys (STAN, reversal) the engine asked the store about.
fn looked_up(out: &[Action]) -> Vec<(u32, bool)> {
    (out.iter())
        .filter_map(|a| match a {
            Action::Lookup(k) => Some((k.stan, k.reversal)),
            _ => None,
        })
        .collect()
}

/// The STANs of the reversals `out` admitted in terminals' names.
fn pleaded(out: &[Action]) -> Vec<u32> {
    (out.iter())
        .filter_map(|a| match a {
            Action::Plead(plea) => Some(plea.stan),
            _ => None,
        })
        .collect()
}

/// The one reversal in a terminal's name `out` admitted: its plea and its transaction.
fn admitted(out: &[Action]) -> (engine::Plea, TxnId) {
    let plea = out.iter().find_map(|a| match a {
        Action::Plead(plea) => Some(plea.clone()),
        _ => None,
    });
    let txn = out.iter().find_map(|a| match a {
        Action::Journal(Record {
            txn,
            step: Step::Received(r),
            ..
        }) if r.mti.class() == iso8583::Class::REVERSAL => Some(*txn),
        _ => None,
    });
    (plea.expect("a plea"), txn.expect("the reversal's record"))
}

/// The reversal in a terminal's name that `out` admitted asks the store nothing while its terminal
/// may still ask again ([`PATIENCE`] after the 91), and then asks it: that lookup.
fn asked_once_patience_is_over(h: &mut Harness, out: &[Action]) -> Claim {
    assert!(looked_up(out).is_empty(), "asked at once: {out:#?}");
    let (plea, txn) = admitted(out);
    let asked = h.fire(TimerId::Claim(txn));
    assert!(h.now.wall >= plea.refused_at + PATIENCE, "asked too soon");
    one_lookup(&asked)
}

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

/// A purchase no issuer is routed for: it waits for its claim before anything is decided.
fn unrouted(h: &Harness, tid: &str, stan: u32) -> iso8583::Message {
    let mut m = h.purchase(tid, stan, 100);
    m.set(2, "9999990000000001").unwrap();
    m
}

/// Fires `txn`'s claim timer until what it emits satisfies `done`; that output.
fn fire_until(h: &mut Harness, txn: TxnId, done: impl Fn(&[Action]) -> bool) -> Vec<Action> {
    loop {
        let out = h.fire(TimerId::Claim(txn));
        if done(&out) {
            return out;
        }
    }
}

/// The key the engine asked the store about.
fn one_lookup(out: &[Action]) -> Claim {
    out.iter()
        .find_map(|a| match a {
            Action::Lookup(k) => Some(k.clone()),
            _ => None,
        })
        .expect("a key looked up")
}

/// What a terminal's reversal of a request not yet forwarded did: that request (`what`) told 91, and
/// the key looked up; the lookup.
fn refused_91_and_looked_up(out: &[Action], what: &str) -> Claim {
    let told: Vec<ResponseCode> = answers(out).map(|(_, m)| rc(m)).collect();
    assert_eq!(told, [ResponseCode::ISSUER_UNAVAILABLE], "{what}");
    one_lookup(out)
}

fn terminal_reversal(h: &Harness, tid: &str, stan: u32) -> iso8583::Message {
    let mut m = h.purchase(tid, stan, 100);
    m.set_mti(iso8583::Mti::REVERSAL);
    m
}

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

/// A plea another node left: the key, and when its terminal was told 91 (`ago` before `h`'s clock).
fn plea(h: &Harness, stan: u32, ago: std::time::Duration) -> engine::Plea {
    engine::Plea {
        terminal: "TERM0001".into(),
        merchant: "MERCHANT0000001".into(),
        stan,
        // DE13 of `Harness::purchase`.
        date: 1121,
        refused_at: h.now.wall - ago,
    }
}

fn settled(out: &[Action]) -> bool {
    out.iter().any(|a| matches!(a, Action::PleaSettled(_)))
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
