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
    let (_, again) = one_sent(&restarted.fire(TimerId::Saf(TxnId(1))));
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

/// A terminal's financial advice (an offline sale, or with DE90 a completion), with its own RRN.
fn advice(h: &Harness, stan: u32, amount: u64) -> Message {
    let mut m = h.purchase("TERM0001", stan, amount);
    m.set_mti(Mti::new(*b"0220").unwrap());
    m.set(37, "000000000777").unwrap();
    m.set(35, "4761739001010010=28122011234").unwrap();
    m
}

fn position(out: &[engine::Action], f: impl Fn(&engine::Action) -> bool) -> usize {
    out.iter().position(f).expect("action present")
}

#[test]
fn an_advice_is_answered_once_queued_and_repeated_upstream_until_the_issuer_acknowledges_it() {
    let mut h = Harness::new();
    let out = h.request(1, advice(&h, 1, 4_200));
    let (_, told) = one_answer(&out);
    assert_eq!(
        (told.mti().as_str(), rc(&told)),
        ("0230", ResponseCode::APPROVED)
    );
    let queued = position(
        &out,
        |a| matches!(a, engine::Action::Journal(r) if matches!(r.step, Step::AdviceQueued { .. })),
    );
    let answered = position(&out, |a| matches!(a, engine::Action::Answer { .. }));
    assert!(queued < answered, "told only once queued");
    let (link, first) = one_sent(&out);
    assert_eq!(first.mti().as_str(), "0220");
    assert_eq!(
        (text(&first, 32), text(&first, 37)),
        ("12345".into(), "000000000777".into())
    );
    assert_eq!(first.amount(), Some(4_200));
    assert!(
        !first.has(35) && !first.has(52),
        "no track or PIN block in an advice"
    );
    assert_eq!(h.engine.pending_advices(), 1);
    // Unanswered: repeated as 0221 under a new STAN, the same RRN.
    let out = h.fire(TimerId::Saf(TxnId(1)));
    let (_, repeat) = one_sent(&out);
    assert_eq!(repeat.mti().as_str(), "0221");
    assert_ne!(repeat.stan(), first.stan());
    assert_eq!(text(&repeat, 37), "000000000777");
    // The terminal's own repeat is answered from memory, and nothing more goes upstream.
    let mut again = advice(&h, 1, 4_200);
    again.set_mti(Mti::new(*b"0221").unwrap());
    let out = h.request(1, again);
    assert_eq!(sent(&out).count(), 0);
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::APPROVED);
    // A 96 is "try again" by the default policy; the issuer's 0231 to a repeat ends it.
    let out = h.step(Event::Response {
        link,
        msg: answer(&repeat, "96"),
    });
    assert!(matches!(steps(&out)[..], [Step::AdviceRefused { .. }]));
    assert_eq!(h.engine.pending_advices(), 1);
    let (link, third) = one_sent(&h.fire(TimerId::Saf(TxnId(1))));
    let mut ack = answer(&third, "00");
    ack.set_mti(Mti::new(*b"0231").unwrap());
    let out = h.step(Event::Response { link, msg: ack });
    assert!(matches!(steps(&out)[..], [Step::AdviceAcknowledged { .. }]));
    assert_eq!(h.engine.pending_advices(), 0);
    assert_eq!(h.engine.timer(TimerId::Saf(TxnId(1))), None);
    let advices = &h.engine.stats().advices;
    assert_eq!(
        (
            advices.queued,
            advices.sent,
            advices.repeated,
            advices.acknowledged
        ),
        (1, 1, 2, 1)
    );
}

#[test]
fn a_completion_names_its_preauthorization_as_the_issuer_saw_it() {
    let mut h = Harness::new();
    let mut preauth = h.purchase("TERM0001", 1, 10_000);
    preauth.set_mti(Mti::AUTHORIZATION);
    let (link, up) = one_sent(&h.request(1, preauth));
    h.step(Event::Response {
        link,
        msg: answer(&up, "00"),
    });
    let mut completion = advice(&h, 2, 8_000);
    let named = OriginalData {
        mti: Mti::AUTHORIZATION,
        stan: 1,
        transmission: 1121093000,
        acquirer: 0,
        forwarding: 0,
    };
    completion.set(90, named.to_digits()).unwrap();
    let (_, sent_up) = one_sent(&h.request(1, completion));
    assert_eq!(
        sent_up.original_data().unwrap(),
        OriginalData {
            mti: Mti::AUTHORIZATION,
            stan: up.stan().unwrap(),
            transmission: up.transmission_time().unwrap(),
            acquirer: 12345,
            forwarding: 0,
        }
    );
    // One naming a pre-authorization the switch does not know goes without DE90: the issuer matches
    // it by the DE37 and DE38 it repeats.
    let mut unknown = advice(&h, 3, 500);
    unknown
        .set(90, OriginalData { stan: 99, ..named }.to_digits())
        .unwrap();
    let (_, sent_up) = one_sent(&h.request(1, unknown));
    assert!(!sent_up.has(90));
}

#[test]
fn an_advice_still_owed_when_the_switch_stops_is_repeated_after_a_restart() {
    let mut h = Harness::new();
    one_sent(&h.request(1, advice(&h, 1, 4_200)));
    let (mut restarted, found, _) = h.restart(h.journal.len());
    assert_eq!(found.advices, 1);
    assert_eq!(restarted.engine.pending_advices(), 1);
    let (_, repeat) = one_sent(&restarted.fire(TimerId::Saf(TxnId(1))));
    assert_eq!(repeat.mti().as_str(), "0221");
    assert_eq!(
        (text(&repeat, 37), repeat.amount()),
        ("000000000777".into(), Some(4_200))
    );
    assert!(!repeat.has(2), "the journal never kept the card number");
    // The terminal's repeat is still answered as accepted, and not queued a second time.
    let out = restarted.request(1, advice(&restarted, 1, 4_200));
    assert_eq!(sent(&out).count(), 0);
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::APPROVED);
    assert_eq!(restarted.engine.pending_advices(), 1);
}

#[test]
fn an_advice_never_acknowledged_expires_and_is_reported() {
    let mut h = Harness::new();
    one_sent(&h.request(1, advice(&h, 1, 4_200)));
    for _ in 0..10 {
        h.fire(TimerId::Saf(TxnId(1)));
    }
    assert!(
        h.journal
            .iter()
            .any(|r| r.step == Step::AdviceExpired { attempts: 5 })
    );
    assert_eq!(h.engine.pending_advices(), 0);
    assert_eq!(h.engine.stats().advices.expired, 1);
}

/// The terminal's settlement request (0500) with DE3 `processing` and its totals: credits, debits,
/// credit amount, debit amount.
fn settlement(h: &Harness, stan: u32, processing: &str, totals: [u64; 4]) -> Message {
    let mut m = Message::new(h.terminal, Mti::new(*b"0500").unwrap());
    m.set(3, processing)
        .unwrap()
        .set(7, "1121093000")
        .unwrap()
        .set_number(11, u64::from(stan))
        .unwrap()
        .set(13, "1121")
        .unwrap()
        .set(41, "TERM0001")
        .unwrap()
        .set(42, "MERCHANT0000001")
        .unwrap();
    for (n, value) in [74, 76, 86, 88].into_iter().zip(totals) {
        m.set_number(n, value).unwrap();
    }
    m
}

/// The terminal's upload (0320) of its transaction `stan` for `amount`.
fn upload(h: &Harness, own_stan: u32, stan: u32, amount: u64) -> Message {
    let mut m = with_code(h, own_stan, "000000", amount);
    m.set_mti(Mti::new(*b"0320").unwrap());
    let named = OriginalData {
        mti: Mti::FINANCIAL,
        stan,
        transmission: 1121093000,
        acquirer: 0,
        forwarding: 0,
    };
    m.set(90, named.to_digits()).unwrap();
    m
}

/// A financial request approved by the issuer, told to its terminal.
fn approved(h: &mut Harness, stan: u32, processing: &str, amount: u64, rc: &str) {
    let (link, up) = one_sent(&h.request(1, with_code(h, stan, processing, amount)));
    h.step(Event::Response {
        link,
        msg: answer(&up, rc),
    });
}

/// A batch of one purchase (1 000), one refund (700), one reversed purchase, one declined purchase, an
/// inquiry and an authorization: one debit of 1 000 and one credit of 700 stand.
fn batch(h: &mut Harness) {
    approved(h, 1, "000000", 1_000, "00");
    approved(h, 2, "200000", 700, "00");
    approved(h, 3, "000000", 5_000, "00");
    one_sent(&h.request(1, reversal_of(h, 3, "000000", 5_000)));
    approved(h, 4, "000000", 9_000, "51");
    approved(h, 5, "310000", 0, "00");
    let mut auth = with_code(h, 6, "000000", 3_000);
    auth.set_mti(Mti::AUTHORIZATION);
    let (link, up) = one_sent(&h.request(1, auth));
    h.step(Event::Response {
        link,
        msg: answer(&up, "00"),
    });
}

#[test]
fn a_settlement_in_balance_closes_the_batch() {
    let mut h = Harness::new();
    batch(&mut h);
    let out = h.request(1, settlement(&h, 10, "920000", [1, 1, 700, 1_000]));
    let (_, told) = one_answer(&out);
    assert_eq!(
        (told.mti().as_str(), rc(&told)),
        ("0510", ResponseCode::APPROVED)
    );
    assert!(steps(&out).iter().any(|s| matches!(
        s,
        Step::BatchClosed {
            uploaded: false,
            discrepancies: 0,
            totals,
            ..
        } if totals.debit_amount == 1_000 && totals.credit_amount == 700
    )));
    // A repeat is replayed; a new settlement finds the batch closed and empty.
    let out = h.request(1, settlement(&h, 10, "920000", [1, 1, 700, 1_000]));
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::APPROVED);
    let out = h.request(1, settlement(&h, 11, "920000", [1, 1, 700, 1_000]));
    assert_eq!(rc(&one_answer(&out).1).as_str(), "95");
    let out = h.request(1, settlement(&h, 12, "920000", [0, 0, 0, 0]));
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::APPROVED);
}

#[test]
fn out_of_balance_then_an_upload_closes_the_batch_with_its_discrepancies_recorded() {
    let mut h = Harness::new();
    batch(&mut h);
    // The terminal counts the reversed purchase as well.
    let out = h.request(1, settlement(&h, 10, "920000", [1, 2, 700, 6_000]));
    assert_eq!(rc(&one_answer(&out).1).as_str(), "95");
    let mut found = Vec::new();
    for (own, stan, amount) in [(11, 1, 1_000), (12, 3, 5_000)] {
        let out = h.request(1, upload(&h, own, stan, amount));
        let (_, told) = one_answer(&out);
        assert_eq!(
            (told.mti().as_str(), rc(&told)),
            ("0330", ResponseCode::APPROVED)
        );
        found.extend(steps(&out).into_iter().filter_map(|s| match s {
            Step::BatchUploaded { found, .. } => Some(*found),
            _ => None,
        }));
    }
    assert_eq!(found, [true, false], "the reversed purchase does not stand");
    let out = h.request(1, settlement(&h, 13, "960000", [0, 0, 0, 0]));
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::APPROVED);
    // The unknown upload, and the refund the terminal did not upload.
    assert!(steps(&out).iter().any(|s| matches!(
        s,
        Step::BatchClosed {
            uploaded: true,
            discrepancies: 2,
            ..
        }
    )));
}

#[test]
fn the_open_batch_survives_a_restart() {
    let mut h = Harness::new();
    batch(&mut h);
    let (mut restarted, _, _) = h.restart(h.journal.len());
    let out = restarted.request(1, settlement(&restarted, 10, "920000", [1, 1, 700, 1_000]));
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::APPROVED);
    // And a batch closed before the restart stays closed after it.
    let (mut again, _, _) = restarted.restart(restarted.journal.len());
    let out = again.request(1, settlement(&again, 11, "920000", [0, 0, 0, 0]));
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::APPROVED);
}

#[test]
fn every_forwarded_request_and_advice_carries_its_business_date() {
    let (mut config, terminal) = config("iso87ascii", "iso87ascii");
    config.cutover = "00:00".parse().unwrap();
    let mut h = Harness::with((config, terminal));
    let (_, up) = one_sent(&h.request(1, with_code(&h, 1, "000000", 100)));
    let wall = time::OffsetDateTime::from(h.now.wall);
    let today = format!("{:02}{:02}", u8::from(wall.month()), wall.day());
    assert_eq!(text(&up, 15), today);
    let (_, up) = one_sent(&h.request(1, advice(&h, 2, 100)));
    assert_eq!(text(&up, 15), today);
    // A terminal's own DE15 is kept.
    let mut own = with_code(&h, 3, "000000", 100);
    own.set(15, "1231").unwrap();
    assert_eq!(text(&one_sent(&h.request(1, own)).1, 15), "1231");
}

#[test]
fn the_processing_code_is_read_in_every_dialect() {
    // BCD on both sides: DE3 has no text form on the wire, yet an inquiry is still one.
    let mut h = Harness::with(config("iso87bcd", "iso87bcd"));
    one_sent(&h.request(1, with_code(&h, 1, "310000", 0)));
    let out = h.fire(TimerId::Response(TxnId(1)));
    assert_eq!(sent(&out).count(), 0, "no reversal of an inquiry");
    let out = h.request(1, settlement(&h, 2, "920000", [0, 0, 0, 0]));
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::APPROVED);
}

#[test]
fn a_settlement_whose_answer_was_lost_in_a_crash_is_replayed_not_compared_again() {
    let mut h = Harness::new();
    batch(&mut h);
    h.request(1, settlement(&h, 10, "920000", [1, 1, 700, 1_000]));
    // The batch's close was durable; the record that the terminal was told was not.
    let closed = (h.journal.iter())
        .position(|r| matches!(r.step, Step::BatchClosed { .. }))
        .unwrap();
    let (mut restarted, _, _) = h.restart(closed + 1);
    let out = restarted.request(1, settlement(&restarted, 10, "920000", [1, 1, 700, 1_000]));
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::APPROVED);
    assert!(
        !steps(&out)
            .iter()
            .any(|s| matches!(s, Step::BatchClosed { .. })),
        "{out:?}"
    );
}

#[test]
fn a_dialect_can_carry_the_settlement_totals_in_a_private_field() {
    // Debits count and amount, then credits count and amount, in DE63: no code, only the dialect file.
    let text = format!(
        "{}\n[settlement_totals]\nfield = 63\ndebits = [0, 3]\ndebit_amount = [3, 12]\ncredits = [15, 3]\ncredit_amount = [18, 12]\n",
        include_str!("../../../specs/iso87ascii.toml")
    );
    let terminal = dialects::leak(dialects::parse("de63", &text).unwrap());
    let (config, _) = config("iso87ascii", "iso87ascii");
    let mut h = Harness::with((config, terminal));
    batch(&mut h);
    let mut request = settlement(&h, 10, "920000", [9, 9, 9, 9]);
    for n in [74, 76, 86, 88] {
        request.remove(n);
    }
    request.set(63, "001000000001000001000000000700").unwrap();
    let out = h.request(1, request.clone());
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::APPROVED, "{out:?}");
    // Totals the layout cannot read are a format error.
    let mut unreadable = settlement(&h, 11, "920000", [0, 0, 0, 0]);
    unreadable.set(63, "12").unwrap();
    assert_eq!(
        rc(&one_answer(&h.request(1, unreadable)).1),
        ResponseCode::FORMAT_ERROR
    );
    // And the dialect file must name a field it describes.
    let wrong = text.replace("field = 63", "field = 129");
    assert!(dialects::parse("wrong", &wrong).is_err());
}

#[test]
fn a_late_partial_approval_is_reversed_for_the_amount_approved() {
    let mut h = Harness::new();
    let (link, up) = one_sent(&h.request(1, with_code(&h, 1, "000000", 10_000)));
    let out = h.fire(TimerId::Response(TxnId(1)));
    assert_eq!(
        one_sent(&out).1.amount(),
        Some(10_000),
        "the first attempt names what was asked"
    );
    let out = h.step(Event::Response {
        link,
        msg: partial(&up, 4_000),
    });
    assert!(steps(&out).contains(&&Step::ApprovedAmount { amount: 4_000 }));
    let (_, repeat) = one_sent(&h.fire(TimerId::Saf(TxnId(1))));
    assert_eq!(
        (repeat.mti(), repeat.amount()),
        (Mti::REVERSAL_REPEAT, Some(4_000))
    );
    // After a restart too.
    let (mut restarted, _, _) = h.restart(h.journal.len());
    let (_, again) = one_sent(&restarted.fire(TimerId::Saf(TxnId(1))));
    assert_eq!(again.amount(), Some(4_000));
}
