//! Cluster mode's test helpers: nodes whose shared store's answers are given by hand, and the
//! actions that claims, lookups and reversals in terminals' names leave.

use engine::{Action, Claim, Event, Holder, Record, Step, TimerId, TxnId};

use super::*;

/// A node in cluster mode.
/// How long a terminal may still ask again after a 91, in these tests.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// A node in cluster mode.
pub fn node() -> Harness {
    let (mut config, terminal) = config("iso87ascii", "iso87ascii");
    config.shared_store = true;
    config.terminal_patience = PATIENCE;
    Harness::with((config, terminal))
}

pub fn claims(out: &[Action]) -> Vec<Claim> {
    out.iter()
        .filter_map(|a| match a {
            Action::Claim(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

pub fn one_claim(out: &[Action]) -> Claim {
    let all = claims(out);
    assert_eq!(all.len(), 1, "expected one claim, got {out:#?}");
    all[0].clone()
}

/// The store's answers to a terminal's reversal's lookups: `first` for the first, nothing for the
/// candidates after it, until the reversal is answered.
pub fn lookups_answered(h: &mut Harness, lookup: &Claim, first: Option<Holder>) -> Vec<Action> {
    let mut out = claimed(h, lookup.txn, first);
    while answers(&out).count() == 0 {
        out = claimed(h, one_lookup(&out).txn, None);
    }
    out
}

/// A terminal's reversal acknowledged, after sending `reversals` reversals to issuers.
pub fn assert_acknowledged(out: &[Action], reversals: usize) {
    let mtis: Vec<_> = sent(out).map(|(_, m)| m.mti()).collect();
    assert_eq!(mtis, vec![iso8583::Mti::REVERSAL; reversals], "{out:#?}");
    assert_eq!(
        rc(&one_answer(out).1),
        ResponseCode::APPROVED,
        "acknowledged"
    );
}

/// Node `name`'s transaction `txn`, as the store would show it to another node.
pub fn holder(h: &Harness, name: &str, txn: TxnId, fenced: bool) -> Holder {
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

pub fn claimed(h: &mut Harness, txn: TxnId, holder: Option<Holder>) -> Vec<Action> {
    h.step(Event::Claimed { txn, holder })
}

/// A purchase approved on `a`, start to end: its transaction id there.
pub fn approved_on(a: &mut Harness, tid: &str, stan: u32, amount: u64) -> TxnId {
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
pub fn approved_on_a_then_asked_on_b(amount: u64) -> (Harness, Harness, TxnId, TxnId, Vec<Action>) {
    let (mut a, mut b) = (node(), node());
    let original = approved_on(&mut a, "TERM0001", 7, 2500);
    let out = b.request(5, b.purchase("TERM0001", 7, amount));
    let txn = one_claim(&out).txn;
    (a, b, original, txn, out)
}

/// A purchase claimed and forwarded on `a`, unanswered, and its retransmit on `b` waiting for its
/// claim: both transactions' ids, and the issuer's approval for `a` to get later.
pub fn in_flight_on_a_then_retransmitted_on_b(
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

/// The one message `out` sends upstream: a reversal of `a`'s recorded forward, named by its RRN.
pub fn one_reversal_of(a: &Harness, out: &[Action]) {
    let (_, rev) = one_sent(out);
    assert_eq!(rev.mti(), iso8583::Mti::REVERSAL);
    let forwarded = a.journal.iter().find_map(|r| match &r.step {
        Step::Forwarded { original, .. } => original.rrn().map(str::to_owned),
        _ => None,
    });
    assert_eq!(Some(text(&rev, 37)), forwarded, "the RRN of a's forward");
}

/// The keys (STAN, reversal) the engine asked the store about.
pub fn looked_up(out: &[Action]) -> Vec<(u32, bool)> {
    (out.iter())
        .filter_map(|a| match a {
            Action::Lookup(k) => Some((k.stan, k.reversal)),
            _ => None,
        })
        .collect()
}

/// The STANs of the reversals `out` admitted in terminals' names.
pub fn pleaded(out: &[Action]) -> Vec<u32> {
    (out.iter())
        .filter_map(|a| match a {
            Action::Plead(plea) => Some(plea.stan),
            _ => None,
        })
        .collect()
}

/// The one reversal in a terminal's name `out` admitted: its plea and its transaction.
pub fn admitted(out: &[Action]) -> (engine::Plea, TxnId) {
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
pub fn asked_once_patience_is_over(h: &mut Harness, out: &[Action]) -> Claim {
    assert!(looked_up(out).is_empty(), "asked at once: {out:#?}");
    let (plea, txn) = admitted(out);
    let asked = h.fire(TimerId::Claim(txn));
    assert!(h.now.wall >= plea.refused_at + PATIENCE, "asked too soon");
    one_lookup(&asked)
}

/// A purchase no issuer is routed for: it waits for its claim before anything is decided.
pub fn unrouted(h: &Harness, tid: &str, stan: u32) -> iso8583::Message {
    let mut m = h.purchase(tid, stan, 100);
    m.set(2, "9999990000000001").unwrap();
    m
}

/// Fires `txn`'s claim timer until what it emits satisfies `done`; that output.
pub fn fire_until(h: &mut Harness, txn: TxnId, done: impl Fn(&[Action]) -> bool) -> Vec<Action> {
    loop {
        let out = h.fire(TimerId::Claim(txn));
        if done(&out) {
            return out;
        }
    }
}

/// The key the engine asked the store about.
pub fn one_lookup(out: &[Action]) -> Claim {
    out.iter()
        .find_map(|a| match a {
            Action::Lookup(k) => Some(k.clone()),
            _ => None,
        })
        .expect("a key looked up")
}

/// What a terminal's reversal of a request not yet forwarded did: that request (`what`) told 91, and
/// the key looked up; the lookup.
pub fn refused_91_and_looked_up(out: &[Action], what: &str) -> Claim {
    let told: Vec<ResponseCode> = answers(out).map(|(_, m)| rc(m)).collect();
    assert_eq!(told, [ResponseCode::ISSUER_UNAVAILABLE], "{what}");
    one_lookup(out)
}

pub fn terminal_reversal(h: &Harness, tid: &str, stan: u32) -> iso8583::Message {
    let mut m = h.purchase(tid, stan, 100);
    m.set_mti(iso8583::Mti::REVERSAL);
    m
}

/// A plea another node left: the key, and when its terminal was told 91 (`ago` before `h`'s clock).
pub fn plea(h: &Harness, stan: u32, ago: std::time::Duration) -> engine::Plea {
    engine::Plea {
        terminal: "TERM0001".into(),
        merchant: "MERCHANT0000001".into(),
        stan,
        // DE13 of `Harness::purchase`.
        date: 1121,
        refused_at: h.now.wall - ago,
    }
}

pub fn settled(out: &[Action]) -> bool {
    out.iter().any(|a| matches!(a, Action::PleaSettled(_)))
}
