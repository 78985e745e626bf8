//! Terminal input through the engine's request path: a control byte picks the terminal dialect, then
//! frames (each after a length byte) that decode are handed to an engine whose links are signed on, and
//! every message it sends upstream is approved or declined. Nothing may panic, every message the engine
//! sends or answers must encode, no request may be forwarded twice, and every message handed to the
//! engine gets exactly one answer or one explicit no-answer (the answer contract).
#![no_main]

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use engine::{
    Action, Config, ConnId, Engine, Event, Idempotency, Issuer, LinkId, Now, Policy, Reversal,
};
use iso8583::Message;
use libfuzzer_sys::fuzz_target;

const DIALECTS: [&str; 4] = ["iso87ascii", "iso87ascii-hexbitmap", "iso87bcd", "iso87ebcdic"];

fn config() -> Config {
    let issuer = |name: &str| Issuer {
        name: name.into(),
        spec: dialects::builtin("iso87ascii").expect("built-in"),
        links: 1,
        response_timeout: Duration::from_secs(5),
        policy: Policy::default(),
    };
    Config {
        issuers: vec![issuer("visa"), issuer("other")],
        routes: vec![("4".into(), 0), ("5".into(), 1)],
        default_route: None,
        idempotency: Idempotency::default(),
        reversal: Reversal::default(),
        acquirer_id: "12345".into(),
        echo_interval: Duration::from_secs(60),
        card_key: engine::CardKey([7; 16]),
        shared_store: false,
        terminal_patience: Duration::ZERO,
        cutover: Default::default(),
        stans: engine::Stans::ALL,
    }
}

/// Carries out `out`: upstream requests are answered (approved when `approve`), and fed back. Returns
/// how many answers and no-answers terminals got.
fn carry(engine: &mut Engine, now: Now, out: Vec<Action>, approve: bool) -> usize {
    let (mut replies, mut told) = (Vec::new(), 0);
    for action in out {
        match action {
            Action::Send { link, msg, .. } => {
                let _ = msg.to_bytes();
                let class = msg.mti().class().digit();
                if let Ok(mut answer) = msg.response(&[2, 3, 4, 7, 11, 32, 37, 41, 42, 49, 70]) {
                    let rc = if approve || class == 8 || class == 4 { "00" } else { "05" };
                    if answer.set(39, rc).is_ok() {
                        replies.push(Event::Response { link, msg: answer });
                    }
                }
            }
            Action::Answer { msg, .. } | Action::AnswerNow { msg, .. } => {
                let _ = msg.to_bytes();
                told += 1;
            }
            Action::NoAnswer { .. } => told += 1,
            _ => {}
        }
    }
    for reply in replies {
        let mut out = Vec::new();
        engine.handle(now, reply, &mut out);
        told += carry(engine, now, out, approve);
    }
    told
}

/// What the idempotency key of a terminal request is made of (DE7 stands in for a missing DE13).
fn key(msg: &Message) -> [String; 5] {
    [41, 42, 11, 13, 7].map(|n| msg.get(n).map(|f| f.to_string()).unwrap_or_default())
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, mut rest)) = data.split_first() else { return };
    let spec = dialects::builtin(DIALECTS[usize::from(control) % DIALECTS.len()]).expect("built-in");
    let mut engine = Engine::new(config());
    let mut now = Now { mono: Instant::now(), wall: SystemTime::now() };
    for link in [LinkId(0), LinkId(1)] {
        let mut out = Vec::new();
        engine.handle(now, Event::LinkUp(link), &mut out);
        carry(&mut engine, now, out, true);
    }
    let mut forwarded = HashSet::new();
    let (mut n, mut handed, mut told) = (0u64, 0, 0);
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (frame, tail) = tail.split_at(len);
        rest = tail;
        n += 1;
        let Ok(msg) = Message::decode(&spec, Bytes::copy_from_slice(frame)) else { continue };
        let key = key(&msg);
        let mut out = Vec::new();
        engine.handle(now, Event::Request { conn: ConnId(n % 3), msg }, &mut out);
        handed += 1;
        let purchases = out.iter().filter(|a| matches!(a, Action::Send { msg, .. } if matches!(msg.mti().class().digit(), 1 | 2)));
        if purchases.count() > 0 {
            assert!(forwarded.insert(key), "a request forwarded twice");
        }
        // Answered at once, some approved and some declined.
        told += carry(&mut engine, now, out, n % 2 == 0);
        now = now.after(Duration::from_millis(u64::from(control)));
    }
    assert_eq!(engine.in_flight(), 0, "every forwarded request was answered");
    assert_eq!(told, handed, "one answer or no-answer per message");
});
