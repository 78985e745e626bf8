//! Every rule of the engine, driven directly with simulated time: no sockets, no sleeps.

mod support;

use std::time::Duration;

use engine::{Action, ConnId, Event, LinkId, Step, TimerId, TxnId};
use iso8583::{Class, Message, Mti, OriginalData, ResponseCode};
use support::*;

#[test]
fn approval_reaches_the_terminal_with_its_own_fields_restored() {
    let mut h = Harness::new();
    let out = h.request(1, h.purchase("TERM0001", 123, 2500));
    assert!(matches!(
        steps(&out)[..],
        [Step::Received(_), Step::Forwarded { .. }]
    ));
    let journal_first = out
        .iter()
        .position(|a| matches!(a, Action::Journal(_)))
        .unwrap();
    let send = out
        .iter()
        .position(|a| matches!(a, Action::Send { .. }))
        .unwrap();
    assert!(
        journal_first < send,
        "the forward is journaled before it is sent"
    );
    let (link, up) = one_sent(&out);
    assert_eq!(text(&up, 32), "12345", "acquirer id set");
    assert_eq!(text(&up, 37).len(), 12, "an RRN is assigned");
    let upstream_stan = up.stan().unwrap();

    let out = h.step(Event::Response {
        link,
        msg: answer(&up, "00"),
    });
    let (conn, told) = one_answer(&out);
    assert_eq!(conn, ConnId(1));
    assert_eq!(told.mti().as_str(), "0210");
    assert_eq!(rc(&told), ResponseCode::APPROVED);
    assert_eq!(text(&told, 38), "A1B2C3");
    assert_eq!(
        told.stan(),
        Some(123),
        "the terminal's STAN, not the upstream {upstream_stan}"
    );
    assert_eq!(text(&told, 41), "TERM0001");
    assert_eq!(text(&told, 42), "MERCHANT0000001");
    assert_eq!(
        text(&told, 37),
        text(&up, 37),
        "the terminal learns the RRN"
    );
    assert_eq!(
        h.engine.timer(TimerId::Response(TxnId(1))),
        None,
        "its timeout is cancelled"
    );
}

#[test]
fn a_decline_is_told_and_stored_without_reversal() {
    let mut h = Harness::new();
    let (link, up) = one_sent(&h.request(1, h.purchase("TERM0001", 7, 100)));
    let out = h.step(Event::Response {
        link,
        msg: answer(&up, "51"),
    });
    let (_, told) = one_answer(&out);
    assert_eq!(rc(&told).as_str(), "51");
    assert!(!told.has(38));
    assert_eq!(sent(&out).count(), 0);
    assert_eq!(h.engine.stats().reversals.queued, 0);
}

#[test]
fn two_terminals_with_the_same_stan_get_distinct_upstream_stans_and_their_own_answers() {
    let mut h = Harness::new();
    let (l1, up1) = one_sent(&h.request(1, h.purchase("TERM0001", 42, 100)));
    let (l2, up2) = one_sent(&h.request(2, h.purchase("TERM0002", 42, 200)));
    assert!(
        (l1, up1.stan()) != (l2, up2.stan()),
        "no collision upstream"
    );
    assert_ne!(l1, l2, "the least loaded link takes the second request");
    // Answers in reverse order still reach the right terminal.
    let out = h.step(Event::Response {
        link: l2,
        msg: answer(&up2, "00"),
    });
    let (conn, told) = one_answer(&out);
    assert_eq!(
        (conn, told.amount(), text(&told, 41).as_str()),
        (ConnId(2), Some(200), "TERM0002")
    );
    let out = h.step(Event::Response {
        link: l1,
        msg: answer(&up1, "05"),
    });
    let (conn, told) = one_answer(&out);
    assert_eq!(
        (conn, rc(&told).as_str(), told.stan()),
        (ConnId(1), "05", Some(42))
    );
}

#[test]
fn responses_match_on_link_and_class_as_well_as_stan() {
    let mut h = Harness::new();
    let (link, up) = one_sent(&h.request(1, h.purchase("TERM0001", 1, 100)));
    let other = LinkId(if link.0 == 0 { 1 } else { 0 });
    let out = h.step(Event::Response {
        link: other,
        msg: answer(&up, "00"),
    });
    assert_eq!(
        answers(&out).count(),
        0,
        "an answer on another link matches nothing"
    );
    let mut wrong_class = answer(&up, "00");
    wrong_class.set_mti(Mti::new(*b"0110").unwrap());
    let out = h.step(Event::Response {
        link,
        msg: wrong_class,
    });
    assert_eq!(answers(&out).count(), 0, "an 0110 does not answer an 0200");
    assert_eq!(h.engine.stats().unmatched, 2);
    let out = h.step(Event::Response {
        link,
        msg: answer(&up, "00"),
    });
    assert_eq!(answers(&out).count(), 1);
}

#[test]
fn a_link_signs_on_before_it_carries_traffic_and_rc91_when_no_link_is_up() {
    let mut h = Harness::with(config("iso87ascii", "iso87ascii"));
    for l in 0..2 {
        h.step(Event::LinkDown(LinkId(l)));
    }
    let out = h.request(1, h.purchase("TERM0001", 1, 100));
    let (_, told) = one_answer(&out);
    assert_eq!(rc(&told), ResponseCode::ISSUER_UNAVAILABLE);
    assert_eq!(sent(&out).count(), 0, "nothing upstream");
    // Connected but not yet signed on: still unavailable.
    let out = h.step(Event::LinkUp(LinkId(0)));
    let (_, signon) = one_sent(&out);
    let out = h.request(1, h.purchase("TERM0001", 2, 100));
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::ISSUER_UNAVAILABLE);
    h.step(Event::Response {
        link: LinkId(0),
        msg: answer(&signon, "00"),
    });
    let out = h.request(1, h.purchase("TERM0001", 3, 100));
    assert_eq!(one_sent(&out).0, LinkId(0), "the signed-on link carries it");
    // The 91 is its request's answer: a retransmit, which may have left before the 91 reached the
    // terminal (it waits behind its record), is told it again and never forwarded, for the terminal
    // took the 91 as its answer.
    let out = h.request(1, h.purchase("TERM0001", 1, 100));
    assert_eq!(sent(&out).count(), 0, "{out:#?}");
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::ISSUER_UNAVAILABLE);
}

#[test]
fn an_idle_link_echoes_and_is_closed_when_the_echo_goes_unanswered() {
    let mut h = Harness::new();
    h.advance(ECHO);
    // Every link has been idle as long: each sends its echo.
    let out = h.fire(TimerId::Link(LinkId(0)));
    let echoes: Vec<_> = sent(&out).filter(|(l, _)| *l == LinkId(0)).collect();
    assert_eq!(echoes.len(), 1);
    assert_eq!(sent(&out).count(), 3);
    let echo = echoes[0].1.clone();
    assert_eq!(
        (echo.mti(), text(&echo, 70).as_str()),
        (Mti::NETWORK, "301")
    );
    // The other links' issuers answer theirs.
    for (link, msg) in sent(&out).filter(|(l, _)| *l != LinkId(0)) {
        let msg = answer(msg, "00");
        h.step(Event::Response { link, msg });
    }
    h.advance(TIMEOUT);
    let out = h.fire(TimerId::Link(LinkId(0)));
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::CloseLink(LinkId(0))))
    );
    assert_eq!(h.engine.stats().echo_failures, 1);
    // Traffic goes to the other link now.
    let out = h.request(1, h.purchase("TERM0001", 1, 100));
    assert_eq!(one_sent(&out).0, LinkId(1));
}

#[test]
fn a_refused_sign_on_closes_the_link() {
    let mut h = Harness::new();
    h.step(Event::LinkDown(LinkId(2)));
    let (_, signon) = one_sent(&h.step(Event::LinkUp(LinkId(2))));
    let out = h.step(Event::Response {
        link: LinkId(2),
        msg: answer(&signon, "91"),
    });
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::CloseLink(LinkId(2))))
    );
    assert!(!h.engine.issuer_ready("other"));
    assert!(h.engine.issuer_ready("visa"));
}

#[test]
fn a_retransmit_in_flight_joins_with_one_request_upstream() {
    let mut h = Harness::new();
    let (link, up) = one_sent(&h.request(1, h.purchase("TERM0001", 9, 100)));
    let out = h.request(2, h.purchase("TERM0001", 9, 100));
    assert_eq!(sent(&out).count(), 0, "joined, not forwarded again");
    assert_eq!(answers(&out).count(), 0);
    let out = h.step(Event::Response {
        link,
        msg: answer(&up, "00"),
    });
    let told: Vec<_> = answers(&out).map(|(c, m)| (c, text(m, 38))).collect();
    assert_eq!(
        told,
        [(ConnId(1), "A1B2C3".into()), (ConnId(2), "A1B2C3".into())]
    );
    assert_eq!(h.engine.stats().duplicates_joined, 1);
}

#[test]
fn a_retransmit_after_completion_is_replayed_without_going_upstream() {
    let mut h = Harness::new();
    let (link, up) = one_sent(&h.request(1, h.purchase("TERM0001", 9, 100)));
    let first = one_answer(&h.step(Event::Response {
        link,
        msg: answer(&up, "00"),
    }))
    .1;
    let mut repeat = h.purchase("TERM0001", 9, 100);
    repeat.set_mti(Mti::new(*b"0201").unwrap());
    let out = h.request(1, repeat);
    assert_eq!(sent(&out).count(), 0);
    let replayed = one_answer(&out).1;
    assert_eq!(
        (
            text(&replayed, 37),
            text(&replayed, 38),
            text(&replayed, 39)
        ),
        (text(&first, 37), text(&first, 38), text(&first, 39))
    );
    let numbers = |m: &Message| m.fields().map(|f| f.number()).collect::<Vec<_>>();
    assert_eq!(numbers(&replayed), numbers(&first), "the same fields");
    assert!(matches!(steps(&out)[..], [Step::Replayed { .. }]));
}

#[test]
fn a_replay_carries_the_issuers_emv_data() {
    let mut h = Harness::new();
    let (link, up) = one_sent(&h.request(1, h.purchase("TERM0001", 9, 100)));
    let mut approval = answer(&up, "00");
    approval.set(55, [0x91, 0x02, 0xAB, 0xCD]).unwrap();
    let first = one_answer(&h.step(Event::Response {
        link,
        msg: approval,
    }))
    .1
    .clone();
    assert!(first.has(55), "passed on to the terminal");
    let mut repeat = h.purchase("TERM0001", 9, 100);
    repeat.set_mti(Mti::new(*b"0201").unwrap());
    let out = h.request(1, repeat);
    assert_eq!(one_answer(&out).1.field_bytes(55), first.field_bytes(55));
}

#[test]
fn the_same_key_with_different_content_gets_rc94() {
    let mut h = Harness::new();
    one_sent(&h.request(1, h.purchase("TERM0001", 9, 100)));
    let out = h.request(1, h.purchase("TERM0001", 9, 999));
    assert_eq!(sent(&out).count(), 0);
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::DUPLICATE);
    let mut auth = h.purchase("TERM0001", 9, 100);
    auth.set_mti(Mti::AUTHORIZATION);
    assert_eq!(
        rc(&one_answer(&h.request(1, auth)).1),
        ResponseCode::DUPLICATE,
        "MTI class counts"
    );
    assert_eq!(h.engine.stats().duplicates_rejected, 2);
}

#[test]
fn a_request_missing_a_key_field_gets_rc30() {
    for missing in [11, 41, 42, 2, 3, 4] {
        let mut h = Harness::new();
        let mut m = h.purchase("TERM0001", 9, 100);
        m.remove(missing);
        let out = h.request(1, m);
        assert_eq!(
            rc(&one_answer(&out).1),
            ResponseCode::FORMAT_ERROR,
            "without DE{missing}"
        );
        assert_eq!(sent(&out).count(), 0);
    }
}

#[test]
fn the_oldest_completed_entries_are_evicted_first() {
    let mut cfg = config("iso87ascii", "iso87ascii");
    let c = &mut cfg.0;
    c.idempotency.max_entries = 2;
    let mut h = Harness::with(cfg);
    for stan in 1..=3 {
        let (link, up) = one_sent(&h.request(1, h.purchase("TERM0001", stan, 100)));
        h.step(Event::Response {
            link,
            msg: answer(&up, "00"),
        });
    }
    // The next request sweeps: stan 1 is gone, so its retransmit is forwarded again; stan 3 is kept.
    let out = h.request(1, h.purchase("TERM0001", 3, 100));
    assert_eq!(answers(&out).count(), 1, "replayed");
    assert_eq!(h.engine.stats().idempotency_evictions, 1);
    assert_eq!(h.engine.idempotency_entries(), 2);
    let out = h.request(1, h.purchase("TERM0001", 1, 100));
    assert_eq!(sent(&out).count(), 1, "evicted key is new again");
}

#[test]
fn entries_outlive_neither_the_window_nor_stay_when_in_flight() {
    let mut cfg = config("iso87ascii", "iso87ascii");
    let c = &mut cfg.0;
    c.idempotency.window = Duration::from_secs(60);
    c.idempotency.max_entries = 1;
    let mut h = Harness::with(cfg);
    one_sent(&h.request(1, h.purchase("TERM0001", 1, 100)));
    one_sent(&h.request(1, h.purchase("TERM0001", 2, 100)));
    // Both are in flight: over the cap, yet neither may be forgotten.
    let out = h.request(2, h.purchase("TERM0001", 1, 100));
    assert_eq!(sent(&out).count(), 0, "still joined, never forwarded twice");
    assert_eq!(h.engine.stats().idempotency_evictions, 0);
}

#[test]
fn entries_past_their_window_expire_without_counting_as_evictions() {
    let mut cfg = config("iso87ascii", "iso87ascii");
    cfg.0.idempotency.window = Duration::from_secs(60);
    let mut h = Harness::with(cfg);
    let (link, up) = one_sent(&h.request(1, h.purchase("TERM0001", 1, 100)));
    h.step(Event::Response {
        link,
        msg: answer(&up, "00"),
    });
    h.advance(Duration::from_secs(61));
    let out = h.request(1, h.purchase("TERM0001", 1, 100));
    assert_eq!(
        sent(&out).count(),
        1,
        "a new request once the window is over"
    );
    assert_eq!(h.engine.stats().idempotency_evictions, 0);
}

/// Forwards a purchase and lets it time out. Returns the upstream request and the timeout's actions.
fn timed_out(h: &mut Harness) -> (LinkId, iso8583::Message, Vec<Action>) {
    let (link, up) = one_sent(&h.request(1, h.purchase("TERM0001", 5, 2500)));
    h.advance(TIMEOUT);
    let out = h.fire(TimerId::Response(TxnId(1)));
    (link, up, out)
}

#[test]
fn a_timeout_answers_rc91_and_reverses_with_the_original_data() {
    let mut h = Harness::new();
    let (_, up, out) = timed_out(&mut h);
    let (conn, told) = one_answer(&out);
    assert_eq!(
        (conn, rc(&told)),
        (ConnId(1), ResponseCode::ISSUER_UNAVAILABLE)
    );
    assert_eq!(told.stan(), Some(5));
    let (_, rev) = one_sent(&out);
    assert_eq!(rev.mti(), Mti::REVERSAL);
    for n in [2, 3, 4, 7, 12, 13, 22, 25, 32, 37, 41, 42, 49] {
        assert_eq!(text(&rev, n), text(&up, n), "DE{n} of the original");
    }
    let original = rev.original_data().expect("DE90");
    assert_eq!(
        original,
        OriginalData {
            mti: Mti::FINANCIAL,
            stan: up.stan().unwrap(),
            transmission: up.transmission_time().unwrap(),
            acquirer: 12345,
            forwarding: 0,
        }
    );
    assert_ne!(rev.stan(), up.stan(), "a reversal has its own STAN");
    let order: Vec<_> = steps(&out);
    assert!(matches!(
        order[..],
        [
            Step::TimedOut,
            Step::Told { .. },
            Step::ReversalQueued,
            Step::ReversalSent { attempt: 1, .. }
        ]
    ));
    // A retransmit now replays the 91, nothing upstream.
    let out = h.request(1, h.purchase("TERM0001", 5, 2500));
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::ISSUER_UNAVAILABLE);
    assert_eq!(sent(&out).count(), 0);
}

#[test]
fn unanswered_reversals_repeat_as_0401_with_backoff_until_acknowledged() {
    let mut h = Harness::new();
    let (_, _, out) = timed_out(&mut h);
    assert_eq!(one_sent(&out).1.mti(), Mti::REVERSAL);
    let first_at = h.engine.timer(TimerId::Saf(TxnId(1)));
    assert_eq!(first_at, Some(h.now.mono + Duration::from_secs(10)));
    h.advance(Duration::from_secs(10));
    let out = h.fire(TimerId::Saf(TxnId(1)));
    let (link, repeat) = one_sent(&out);
    assert_eq!(repeat.mti(), Mti::REVERSAL_REPEAT);
    let next_at = h.engine.timer(TimerId::Saf(TxnId(1)));
    assert_eq!(
        next_at,
        Some(h.now.mono + Duration::from_secs(20)),
        "backoff doubles"
    );
    let out = h.step(Event::Response {
        link,
        msg: answer(&repeat, "00"),
    });
    assert!(matches!(
        steps(&out)[..],
        [Step::ReversalAcknowledged { .. }]
    ));
    assert_eq!(h.engine.pending_reversals(), 0);
    // The old timer firing later does nothing.
    assert!(h.fire(TimerId::Saf(TxnId(1))).is_empty());
}

/// The acknowledgement policy: a 0410 with a code the issuer's policy retries (91, 96 by default)
/// leaves the reversal queued, to be repeated at its next attempt; the next 0410 with any other code
/// ends it. An issuer configured without retry codes ends it on any answer.
#[test]
fn a_reversal_answered_with_a_retried_code_stays_queued_and_is_repeated() {
    let mut h = Harness::new();
    let (_, _, out) = timed_out(&mut h);
    let (link, first) = one_sent(&out);
    let out = h.step(Event::Response {
        link,
        msg: answer(&first, "96"),
    });
    assert!(
        matches!(steps(&out)[..], [Step::ReversalRefused { rc }] if *rc == ResponseCode::SYSTEM_ERROR),
        "{out:#?}"
    );
    assert_eq!(
        h.engine.pending_reversals(),
        1,
        "a system error is not an acknowledgement"
    );
    let out = h.fire(TimerId::Saf(TxnId(1)));
    let (link, repeat) = one_sent(&out);
    assert_eq!(repeat.mti(), Mti::REVERSAL_REPEAT);
    let out = h.step(Event::Response {
        link,
        msg: answer(&repeat, "25"),
    });
    assert!(matches!(
        steps(&out)[..],
        [Step::ReversalAcknowledged { .. }]
    ));
    assert_eq!(h.engine.pending_reversals(), 0);

    let (mut config, terminal) = config("iso87ascii", "iso87ascii");
    config
        .issuers
        .iter_mut()
        .for_each(|i| i.policy.retry_codes.clear());
    let mut h = Harness::with((config, terminal));
    let (_, _, out) = timed_out(&mut h);
    let (link, first) = one_sent(&out);
    let out = h.step(Event::Response {
        link,
        msg: answer(&first, "96"),
    });
    assert!(matches!(
        steps(&out)[..],
        [Step::ReversalAcknowledged { .. }]
    ));
}

#[test]
fn a_reversal_expires_and_is_reported_after_max_attempts() {
    let mut h = Harness::new();
    timed_out(&mut h);
    for _ in 1..5 {
        h.advance(Duration::from_secs(60));
        let out = h.fire(TimerId::Saf(TxnId(1)));
        let reversals = sent(&out).filter(|(_, m)| m.mti().class() == Class::REVERSAL);
        assert_eq!(reversals.count(), 1);
    }
    h.advance(Duration::from_secs(60));
    let out = h.fire(TimerId::Saf(TxnId(1)));
    assert!(matches!(
        steps(&out)[..],
        [Step::ReversalExpired { attempts: 5 }]
    ));
    assert_eq!(h.engine.stats().reversals.expired, 1);
    assert_eq!(h.engine.pending_reversals(), 0);
}

#[test]
fn the_end_of_the_grace_period_times_out_and_reverses_everything_in_flight() {
    let mut h = Harness::new();
    let mut forwarded = Vec::new();
    for stan in 1..=2 {
        forwarded.push(one_sent(&h.request(stan.into(), h.purchase("TERM0001", stan, 100))).1);
    }
    // Well before any response timer fires.
    h.advance(TIMEOUT / 4);
    let out = h.step(Event::GraceOver);
    assert_eq!(h.engine.in_flight(), 0);
    let told: Vec<_> = answers(&out).map(|(c, m)| (c, m.stan(), rc(m))).collect();
    let unavailable = ResponseCode::ISSUER_UNAVAILABLE;
    assert_eq!(
        told,
        [
            (ConnId(1), Some(1), unavailable),
            (ConnId(2), Some(2), unavailable)
        ]
    );
    let reversed: Vec<_> = sent(&out)
        .map(|(_, m)| (m.mti(), m.original_data().map(|o| o.stan)))
        .collect();
    let original = |i: usize| Some(forwarded[i].stan().unwrap());
    assert_eq!(
        reversed,
        [(Mti::REVERSAL, original(0)), (Mti::REVERSAL, original(1))]
    );
    let cancelled = |txn| h.engine.timer(TimerId::Response(txn)).is_none();
    assert!(
        cancelled(TxnId(1)) && cancelled(TxnId(2)),
        "their timers are stopped"
    );
    assert_eq!(h.engine.pending_reversals(), 2);
    assert_eq!(h.engine.stats().timeouts, 2);
}

#[test]
fn reversals_run_independently() {
    let mut h = Harness::new();
    let mut reversals = Vec::new();
    for stan in 1..=3 {
        one_sent(&h.request(1, h.purchase("TERM0001", stan, 100)));
    }
    h.advance(TIMEOUT);
    // All three time out at once, each queuing its own reversal.
    let out = h.fire(TimerId::Response(TxnId(1)));
    reversals.extend(sent(&out).map(|(l, m)| (l, m.clone())));
    assert_eq!(reversals.len(), 3);
    // Acknowledge the last one only: the others stay pending, each on its own timer.
    let (link, rev) = &reversals[2];
    h.step(Event::Response {
        link: *link,
        msg: answer(rev, "00"),
    });
    assert_eq!(h.engine.pending_reversals(), 2);
    // A new purchase goes straight through meanwhile.
    assert_eq!(
        sent(&h.request(1, h.purchase("TERM0001", 10, 100))).count(),
        1
    );
}

#[test]
fn the_oldest_pending_reversal_is_known() {
    let mut h = Harness::new();
    for stan in 1..=2 {
        one_sent(&h.request(1, h.purchase("TERM0001", stan, 100)));
        h.advance(Duration::from_secs(1));
    }
    assert_eq!(h.engine.oldest_reversal(), None);
    h.advance(TIMEOUT - Duration::from_secs(2));
    let first = h.now.mono;
    let (l1, r1) = one_sent(&h.fire(TimerId::Response(TxnId(1))));
    h.advance(Duration::from_secs(1));
    let (l2, r2) = one_sent(&h.fire(TimerId::Response(TxnId(2))));
    assert_eq!(h.engine.oldest_reversal(), Some(first));
    h.step(Event::Response {
        link: l1,
        msg: answer(&r1, "00"),
    });
    assert_eq!(
        h.engine.oldest_reversal(),
        Some(first + Duration::from_secs(1))
    );
    h.step(Event::Response {
        link: l2,
        msg: answer(&r2, "00"),
    });
    assert_eq!(h.engine.oldest_reversal(), None);
}

#[test]
fn a_late_answer_is_counted_and_the_reversal_stands() {
    let mut h = Harness::new();
    let (link, up, _) = timed_out(&mut h);
    let out = h.step(Event::Response {
        link,
        msg: answer(&up, "00"),
    });
    assert_eq!(answers(&out).count(), 0, "nothing to the terminal");
    assert!(matches!(steps(&out)[..], [Step::LateAnswer { .. }]));
    assert_eq!(h.engine.stats().late_answers, 1);
    assert_eq!(h.engine.pending_reversals(), 1);
}

#[test]
fn an_approval_for_a_closed_connection_is_reversed() {
    let mut h = Harness::new();
    let (link, up) = one_sent(&h.request(1, h.purchase("TERM0001", 5, 100)));
    let out = h.step(Event::ConnClosed(ConnId(1)));
    assert!(matches!(steps(&out)[..], [Step::Disconnected]));
    let out = h.step(Event::Response {
        link,
        msg: answer(&up, "00"),
    });
    assert_eq!(answers(&out).count(), 0);
    let (_, rev) = one_sent(&out);
    assert_eq!(rev.mti(), Mti::REVERSAL);
    assert_eq!(h.engine.stats().undeliverable, 1);
    // The terminal reconnects and retransmits: it must not be told "approved".
    let out = h.request(3, h.purchase("TERM0001", 5, 100));
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::ISSUER_UNAVAILABLE);
}

fn terminal_reversal(h: &Harness, stan: u32) -> iso8583::Message {
    let mut m = h.purchase("TERM0001", stan, 100);
    m.set_mti(Mti::REVERSAL);
    m
}

#[test]
fn a_terminal_reversal_of_an_approval_goes_upstream_once() {
    let mut h = Harness::new();
    let (link, up) = one_sent(&h.request(1, h.purchase("TERM0001", 5, 100)));
    h.step(Event::Response {
        link,
        msg: answer(&up, "00"),
    });
    let out = h.request(1, terminal_reversal(&h, 5));
    let (_, rev) = one_sent(&out);
    assert_eq!(rev.mti(), Mti::REVERSAL);
    let original = rev.original_data().unwrap();
    assert_eq!(original.stan, up.stan().unwrap());
    assert_eq!(original.transmission, up.transmission_time().unwrap());
    // The card and amount as the issuer approved them, and the RRN the switch forwarded.
    for n in [2, 3, 4, 37, 41, 42, 49] {
        assert_eq!(
            rev.get(n).map(|f| f.to_vec()),
            up.get(n).map(|f| f.to_vec()),
            "DE{n}"
        );
    }
    let (_, told) = one_answer(&out);
    assert_eq!(
        (told.mti().as_str(), rc(&told)),
        ("0410", ResponseCode::APPROVED)
    );
    let queued = out
        .iter()
        .position(|a| matches!(a, Action::Journal(r) if r.step == Step::ReversalQueued));
    let answered = out.iter().position(|a| matches!(a, Action::Answer { .. }));
    assert!(queued < answered, "0410 only once the reversal is queued");
    // Repeats (0400 again, or 0401) are answered, never reversed twice.
    for mti in [Mti::REVERSAL, Mti::REVERSAL_REPEAT] {
        let mut again = terminal_reversal(&h, 5);
        again.set_mti(mti);
        let out = h.request(1, again);
        assert_eq!(sent(&out).count(), 0);
        assert_eq!(one_answer(&out).1.mti().as_str(), "0410");
    }
    assert_eq!(h.engine.stats().reversals.queued, 1);
}

#[test]
fn a_terminal_reversal_naming_an_approval_with_another_amount_reverses_it_by_its_identifiers_only()
{
    let mut h = Harness::new();
    let (link, up) = one_sent(&h.request(1, h.purchase("TERM0001", 5, 100)));
    h.step(Event::Response {
        link,
        msg: answer(&up, "00"),
    });
    let mut reversal = terminal_reversal(&h, 5);
    reversal.set_number(4, 999).unwrap();
    let (_, rev) = one_sent(&h.request(1, reversal));
    assert_eq!(rev.original_data().unwrap().stan, up.stan().unwrap());
    assert_eq!(
        rev.get(37).map(|f| f.to_vec()),
        up.get(37).map(|f| f.to_vec())
    );
    for n in [2, 3, 4, 49] {
        assert!(!rev.has(n), "DE{n} of another purchase is not sent");
    }
}

#[test]
fn a_terminal_reversal_of_a_decline_or_unknown_request_is_answered_locally() {
    let mut h = Harness::new();
    let (link, up) = one_sent(&h.request(1, h.purchase("TERM0001", 5, 100)));
    h.step(Event::Response {
        link,
        msg: answer(&up, "51"),
    });
    for stan in [5, 77] {
        let out = h.request(1, terminal_reversal(&h, stan));
        assert_eq!(sent(&out).count(), 0, "stan {stan}");
        assert_eq!(one_answer(&out).1.mti().as_str(), "0410");
    }
}

#[test]
fn a_terminal_reversal_in_flight_reverses_the_approval_when_it_arrives() {
    let mut h = Harness::new();
    let (link, up) = one_sent(&h.request(1, h.purchase("TERM0001", 5, 100)));
    let out = h.request(1, terminal_reversal(&h, 5));
    assert_eq!(sent(&out).count(), 0);
    assert_eq!(one_answer(&out).1.mti().as_str(), "0410");
    let out = h.step(Event::Response {
        link,
        msg: answer(&up, "00"),
    });
    assert_eq!(one_sent(&out).1.mti(), Mti::REVERSAL);
}

#[test]
fn a_terminal_0800_is_answered_locally() {
    let mut h = Harness::new();
    let mut m = iso8583::Message::new(h.terminal, Mti::NETWORK);
    m.set(11, "000001").unwrap().set(70, "301").unwrap();
    let out = h.request(1, m);
    assert_eq!(sent(&out).count(), 0);
    let (_, told) = one_answer(&out);
    assert_eq!(
        (told.mti().as_str(), text(&told, 70).as_str(), rc(&told)),
        ("0810", "301", ResponseCode::APPROVED)
    );
}

#[test]
fn the_longest_bin_prefix_picks_the_issuer_and_unrouted_cards_get_rc92() {
    let mut cfg = config("iso87ascii", "iso87ascii");
    let c = &mut cfg.0;
    c.routes = vec![("4".into(), 0), ("476173".into(), 1)];
    let mut h = Harness::with(cfg);
    let out = h.request(1, h.purchase("TERM0001", 1, 100));
    assert_eq!(one_sent(&out).0, LinkId(2), "issuer 'other' owns link 2");
    let mut m = h.purchase("TERM0001", 2, 100);
    m.set(2, "6011000000000004").unwrap();
    let out = h.request(1, m);
    assert_eq!(rc(&one_answer(&out).1).as_str(), "92");
}

#[test]
fn terminals_in_bcd_with_an_ascii_issuer() {
    let mut h = Harness::with(config("iso87bcd", "iso87ascii"));
    let out = h.request(1, h.purchase("TERM0001", 5, 2500));
    let (link, up) = one_sent(&out);
    assert_eq!(up.spec().name(), "iso87ascii");
    assert_eq!(
        (up.pan().unwrap().expose(), up.amount()),
        (PAN.as_bytes(), Some(2500))
    );
    let out = h.step(Event::Response {
        link,
        msg: answer(&up, "00"),
    });
    let (_, told) = one_answer(&out);
    assert_eq!(told.spec().name(), "iso87bcd");
    assert_eq!(
        (rc(&told), text(&told, 38).as_str()),
        (ResponseCode::APPROVED, "A1B2C3")
    );
}

#[test]
fn an_answer_long_after_its_timeout_is_no_longer_late_but_unmatched() {
    let mut h = Harness::new();
    let (link, up, _) = timed_out(&mut h);
    h.advance(Duration::from_secs(301));
    // Any request sweeps expired late windows.
    one_sent(&h.request(2, h.purchase("TERM0002", 1, 100)));
    h.step(Event::Response {
        link,
        msg: answer(&up, "00"),
    });
    assert_eq!(
        (h.engine.stats().late_answers, h.engine.stats().unmatched),
        (0, 1)
    );
}

/// The answer contract: whatever a terminal sends, its connection gets exactly one answer or one
/// explicit "no answer" per message, at once or when the transaction ends, so that a shell counting
/// what each connection is owed never leaks.
#[test]
fn every_terminal_message_gets_exactly_one_answer_or_no_answer() {
    let mut h = Harness::new();
    let purchase = h.purchase("TERM0001", 1, 100);
    let mut no_key = purchase.clone();
    no_key.remove(41);
    let mut unknown = purchase.clone();
    unknown.set_mti(Mti::new(*b"0300").unwrap());
    let mut response = purchase.clone();
    response.set_mti(Mti::new(*b"0210").unwrap());
    response.set(39, "00").unwrap();
    let mut network = Message::new(h.terminal, Mti::NETWORK);
    network.set(11, "000001").unwrap().set(70, "301").unwrap();
    let sent_by_conn = [
        purchase.clone(),                        // forwarded
        purchase.clone(),                        // joins it
        h.purchase("TERM0001", 1, 999),          // RC 94
        no_key,                                  // RC 30
        unknown,                                 // RC 30
        response,                                // nothing
        network,                                 // 0810
        h.purchase("TERM0001", 2, 100),          // forwarded, then times out
        terminal_reversal(&h, 3),                // 0410 at once
        h.purchase("TERM0002", 9, 100), // forwarded, then the terminal reverses it in flight
        terminal_reversal_of(&h, "TERM0002", 9), // 0410 at once
    ];
    let mut out = Vec::new();
    for (conn, msg) in sent_by_conn.into_iter().enumerate() {
        out.extend(h.request(conn as u64, msg));
    }
    let forwarded: Vec<(LinkId, Message)> = sent(&out).map(|(l, m)| (l, m.clone())).collect();
    assert_eq!(forwarded.len(), 3, "three forwarded: {forwarded:?}");
    // The issuer answers the first and the third; the second times out.
    for (link, msg) in [&forwarded[0], &forwarded[2]] {
        out.extend(h.step(Event::Response {
            link: *link,
            msg: answer(msg, "00"),
        }));
    }
    out.extend(h.pass(TIMEOUT));
    // A retransmit after completion: replayed.
    out.extend(h.request(20, purchase));
    let mut replies = std::collections::BTreeMap::<ConnId, usize>::new();
    for action in &out {
        if let Action::Answer { conn, .. } | Action::NoAnswer { conn, .. } = action {
            *replies.entry(*conn).or_default() += 1;
        }
    }
    let every: Vec<_> = (0..11).chain([20]).map(|c| (ConnId(c), 1)).collect();
    assert_eq!(replies.into_iter().collect::<Vec<_>>(), every);
    assert!(
        out.iter().any(|a| matches!(
            a,
            Action::NoAnswer {
                conn: ConnId(5),
                ..
            }
        )),
        "the response MTI got an explicit no-answer"
    );
}

fn terminal_reversal_of(h: &Harness, tid: &str, stan: u32) -> Message {
    let mut m = h.purchase(tid, stan, 100);
    m.set_mti(Mti::REVERSAL);
    m
}

/// The engine's one timer table, as a shell sees it: the earliest deadline; an answer cancels its
/// request's timeout and the next deadline is the next one's; nothing fires before its time, what is
/// due fires once; re-arming (a reversal's backoff) moves a timer.
#[test]
fn the_engine_keeps_one_timer_table_in_deadline_order() {
    let mut h = Harness::new();
    let start = h.now.mono;
    let (link, first) = one_sent(&h.request(1, h.purchase("TERM0001", 1, 100)));
    h.advance(Duration::from_secs(1));
    one_sent(&h.request(2, h.purchase("TERM0001", 2, 100)));
    assert_eq!(h.engine.poll_timeout(), Some(start + TIMEOUT));
    h.step(Event::Response {
        link,
        msg: answer(&first, "00"),
    });
    assert_eq!(h.engine.timer(TimerId::Response(TxnId(1))), None);
    let second_due = start + Duration::from_secs(1) + TIMEOUT;
    assert_eq!(h.engine.poll_timeout(), Some(second_due));
    assert!(
        h.pass(TIMEOUT - Duration::from_millis(1)).is_empty(),
        "nothing is due before its time"
    );
    let out = h.pass(Duration::from_millis(1));
    assert_eq!(rc(&one_answer(&out).1), ResponseCode::ISSUER_UNAVAILABLE);
    assert_eq!(one_sent(&out).1.mti(), Mti::REVERSAL);
    assert_eq!(
        h.engine.timer(TimerId::Response(TxnId(2))),
        None,
        "fired once"
    );
    let backoff = h.engine.timer(TimerId::Saf(TxnId(2)));
    assert_eq!(backoff, Some(h.now.mono + Duration::from_secs(10)));
    assert_eq!(h.engine.poll_timeout(), backoff);
    let out = h.pass(Duration::from_secs(10));
    assert_eq!(one_sent(&out).1.mti(), Mti::REVERSAL_REPEAT);
    assert_eq!(
        h.engine.timer(TimerId::Saf(TxnId(2))),
        Some(h.now.mono + Duration::from_secs(20)),
        "re-armed later"
    );
}

/// A reversal for a timeout goes on its original's link, behind it on one connection, even when
/// another link is idler: on another link it could reach the issuer first (a paused process sends both
/// at once when it resumes), and an issuer that finds no original acknowledges the reversal and lets
/// the late original stand.
#[test]
fn a_timeouts_reversal_follows_its_original_on_its_link() {
    let mut h = Harness::new();
    let (first, _) = one_sent(&h.request(1, h.purchase("TERM0001", 1, 2500)));
    let (other, b) = one_sent(&h.request(2, h.purchase("TERM0002", 2, 2500)));
    let (third, _) = one_sent(&h.request(3, h.purchase("TERM0003", 3, 2500)));
    assert_eq!((first, third), (LinkId(0), LinkId(0)));
    assert_eq!(other, LinkId(1));
    h.step(Event::Response {
        link: other,
        msg: answer(&b, "00"),
    });
    h.advance(TIMEOUT);
    let out = h.fire(TimerId::Response(TxnId(1)));
    let reversals: Vec<LinkId> = (sent(&out))
        .filter(|(_, m)| m.mti() == Mti::REVERSAL)
        .map(|(link, _)| link)
        .collect();
    assert_eq!(reversals, [LinkId(0), LinkId(0)], "link 1 is idle");
}
