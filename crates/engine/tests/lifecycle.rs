//! The transaction life cycle beyond the purchase: inquiries, refunds, partial amounts, advices. Driven
//! directly with simulated time, like `rules.rs`.

mod support;

use engine::{ConnId, Event, Step, TimerId, TxnId};
use iso8583::{Message, Mti, OriginalData, ResponseCode};
use support::*;

/// A request of terminal TERM0001 with processing code `processing`.
fn with_code(h: &Harness, stan: u32, processing: &str, amount: u64) -> Message {
    let mut m = h.purchase("TERM0001", stan, amount);
    m.set(3, processing).unwrap();
    m
}

/// The terminal's reversal of its request `stan`, under the same STAN.
fn reversal_of(h: &Harness, stan: u32, processing: &str, amount: u64) -> Message {
    let mut m = with_code(h, stan, processing, amount);
    m.set_mti(Mti::REVERSAL);
    m
}

/// The terminal's reversal of its purchase `stan` under a STAN of its own, naming it by DE90.
fn reversal_naming(h: &Harness, stan: u32, own_stan: u32, amount: u64) -> Message {
    let mut m = reversal_of(h, own_stan, "000000", amount);
    let original = OriginalData {
        mti: Mti::FINANCIAL,
        stan,
        transmission: 1121093000,
        acquirer: 0,
        forwarding: 0,
    };
    m.set(90, original.to_digits()).unwrap();
    m
}

fn reversals_queued(h: &Harness) -> usize {
    h.journal
        .iter()
        .filter(|r| r.step == Step::ReversalQueued)
        .count()
}

#[test]
fn a_balance_inquiry_is_never_reversed() {
    let mut h = Harness::new();
    // Timed out: 91 to the terminal, and nothing more.
    one_sent(&h.request(1, with_code(&h, 1, "310000", 0)));
    let out = h.fire(TimerId::Response(TxnId(1)));
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::ISSUER_UNAVAILABLE);
    assert_eq!(sent(&out).count(), 0, "no reversal of an inquiry");
    // Approved with no terminal left to tell: nothing to undo either.
    let (link, up) = one_sent(&h.request(2, with_code(&h, 2, "300000", 0)));
    h.step(Event::ConnClosed(ConnId(2)));
    let out = h.step(Event::Response {
        link,
        msg: answer(&up, "00"),
    });
    assert_eq!(sent(&out).count(), 0);
    // Approved and told, then reversed by the terminal: answered, and nothing goes upstream.
    let (link, up) = one_sent(&h.request(3, with_code(&h, 3, "310000", 0)));
    h.step(Event::Response {
        link,
        msg: answer(&up, "00"),
    });
    let out = h.request(3, reversal_of(&h, 3, "310000", 0));
    assert_eq!(sent(&out).count(), 0);
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::APPROVED);
    // In flight when the switch stops: a restart finds nothing in doubt.
    one_sent(&h.request(4, with_code(&h, 4, "310000", 0)));
    let (_, found, out) = h.restart(h.journal.len());
    assert_eq!((found.in_doubt, sent(&out).count()), (0, 0));
    assert_eq!(reversals_queued(&h), 0);
    assert_eq!(h.engine.pending_reversals(), 0);
}

#[test]
fn what_moves_money_is_the_issuers_policy() {
    // A refund (20) credits the cardholder: in doubt, it is reversed like a purchase.
    let mut h = Harness::new();
    one_sent(&h.request(1, with_code(&h, 1, "200000", 700)));
    let out = h.fire(TimerId::Response(TxnId(1)));
    assert_eq!(one_sent(&out).1.mti(), Mti::REVERSAL);
    // An issuer whose policy lists no inquiry codes has balance inquiries reversed too.
    let (mut config, terminal) = config("iso87ascii", "iso87ascii");
    config
        .issuers
        .iter_mut()
        .for_each(|i| i.policy.inquiry_codes.clear());
    let mut h = Harness::with((config, terminal));
    one_sent(&h.request(1, with_code(&h, 1, "310000", 0)));
    let out = h.fire(TimerId::Response(TxnId(1)));
    assert_eq!(one_sent(&out).1.mti(), Mti::REVERSAL);
}

/// The issuer's partial approval (RC 10) of `up` for `amount`.
fn partial(up: &Message, amount: u64) -> Message {
    let mut a = answer(up, "10");
    a.set_number(4, amount).unwrap();
    a.set(38, "P12345").unwrap();
    a
}

#[test]
fn a_partial_approval_tells_the_terminal_the_amount_approved_and_a_reversal_names_it() {
    let mut h = Harness::new();
    let (link, up) = one_sent(&h.request(1, with_code(&h, 1, "000000", 10_000)));
    let out = h.step(Event::Response {
        link,
        msg: partial(&up, 6_000),
    });
    let (_, told) = one_answer(&out);
    assert_eq!((rc(&told).as_str(), told.amount()), ("10", Some(6_000)));
    assert!(steps(&out).contains(&&Step::ApprovedAmount { amount: 6_000 }));
    // A retransmit is replayed the same amount, before and after a restart.
    let out = h.request(1, with_code(&h, 1, "000000", 10_000));
    assert_eq!(one_answer(&out).1.amount(), Some(6_000));
    let (mut restarted, _, _) = h.restart(h.journal.len());
    let out = restarted.request(1, with_code(&restarted, 1, "000000", 10_000));
    assert_eq!(one_answer(&out).1.amount(), Some(6_000));
    // The terminal's reversal (naming the amount it asked for) reverses what the issuer approved, on
    // either engine.
    for h in [&mut h, &mut restarted] {
        let out = h.request(1, reversal_naming(h, 1, 9, 10_000));
        let (_, rev) = one_sent(&out);
        assert_eq!((rev.mti(), rev.amount()), (Mti::REVERSAL, Some(6_000)));
    }
}

#[test]
fn a_partial_approval_no_terminal_was_told_is_reversed_for_the_amount_approved() {
    let mut h = Harness::new();
    let (link, up) = one_sent(&h.request(1, with_code(&h, 1, "000000", 10_000)));
    h.step(Event::ConnClosed(ConnId(1)));
    let out = h.step(Event::Response {
        link,
        msg: partial(&up, 2_500),
    });
    let (_, rev) = one_sent(&out);
    assert_eq!((rev.mti(), rev.amount()), (Mti::REVERSAL, Some(2_500)));
}

/// DE95 with `actual` as the amount that stands (settlement amount and fees zero).
fn replacement(actual: u64) -> String {
    format!("{actual:012}{:030}", 0)
}

#[test]
fn a_partial_reversal_carries_the_replacement_amounts_with_the_original_amount_even_after_a_restart()
{
    let mut h = Harness::new();
    let (link, up) = one_sent(&h.request(1, with_code(&h, 1, "000000", 10_000)));
    h.step(Event::Response {
        link,
        msg: answer(&up, "00"),
    });
    let mut reversal = reversal_naming(&h, 1, 2, 10_000);
    reversal.set(95, replacement(4_000)).unwrap();
    let out = h.request(1, reversal.clone());
    let (_, rev) = one_sent(&out);
    assert_eq!(rev.amount(), Some(10_000), "DE4 as the issuer approved it");
    assert_eq!(text(&rev, 95), replacement(4_000));
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::APPROVED);
    let order = steps(&out);
    let replaces = order
        .iter()
        .position(|s| matches!(s, Step::ReversalReplaces { .. }));
    let queued = order.iter().position(|s| **s == Step::ReversalQueued);
    assert!(replaces.is_some() && replaces < queued, "{order:?}");
    // Unacknowledged when the switch stops: the restarted engine's next attempt carries them too.
    let (mut restarted, found, _) = h.restart(h.journal.len());
    assert_eq!(found.reversals, 1);
    let (_, again) = one_sent(&restarted.fire(TimerId::Reversal(TxnId(1))));
    assert_eq!(again.mti(), Mti::REVERSAL_REPEAT);
    assert_eq!(
        (again.amount(), text(&again, 95)),
        (Some(10_000), replacement(4_000))
    );
    // A repeat of the terminal's partial reversal is answered, not sent again.
    let out = h.request(1, reversal);
    assert_eq!(sent(&out).count(), 0);
}

#[test]
fn replacement_amounts_that_do_not_start_with_an_amount_are_a_format_error() {
    let mut h = Harness::new();
    let (link, up) = one_sent(&h.request(1, with_code(&h, 1, "000000", 10_000)));
    h.step(Event::Response {
        link,
        msg: answer(&up, "00"),
    });
    let mut reversal = reversal_naming(&h, 1, 2, 10_000);
    reversal.set(95, "ABC").unwrap();
    let out = h.request(1, reversal);
    assert_eq!(sent(&out).count(), 0);
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::FORMAT_ERROR);
}
