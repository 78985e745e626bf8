//! The simulated issuer host: answers what the switch forwards, well or badly (a partial approval now
//! and then; a reversal or an advice sometimes with a system error, 96, and not applied), and keeps the
//! books.

use std::collections::BTreeMap;
use std::time::Duration;

use fastrand::Rng;
use iso8583::Message;
use sim::Ledger;

use crate::support::answer;

#[derive(Debug, Default)]
pub(crate) struct Issuer {
    /// Approvals debited and reversals credited, per RRN.
    pub ledger: Ledger,
    /// Purchases and authorizations received, per RRN: more than one is a double forward.
    pub forwards: BTreeMap<String, u32>,
    /// First attempts of advices (0120, 0220) received, per RRN: more than one is a double forward
    /// (repeats are 0121, 0221).
    pub advices: BTreeMap<String, u32>,
}

/// What the issuer does with one financial request while faults are on, in percent.
const APPROVE: u32 = 60;
const DECLINE: u32 = 15;
/// Approved, and the answer never leaves.
const DROP: u32 = 8;
/// Approved, and answered after the switch's timeout.
const LATE: u32 = 7;
// The rest: approved, and answered twice.
/// Approvals (with or without faults) that are for half the amount asked (RC 10), in percent.
const PARTIAL: u32 = 10;

impl Issuer {
    /// The answers to `msg`, each with its delay. `faults` turns drops, late and repeated answers on.
    pub(crate) fn on_message(
        &mut self,
        rng: &mut Rng,
        msg: &Message,
        faults: bool,
    ) -> Vec<(Message, Duration)> {
        let rrn = msg.rrn().map(|f| f.to_string()).unwrap_or_default();
        let quick = |rng: &mut Rng| Duration::from_millis(rng.u64(1..300));
        let mti = msg.mti();
        match (mti.class().digit(), mti.function()) {
            (1 | 2, 0) => {
                *self.forwards.entry(rrn.clone()).or_default() += 1;
                let roll = if faults {
                    rng.u32(0..100)
                } else {
                    rng.u32(0..APPROVE + DECLINE)
                };
                if (APPROVE..APPROVE + DECLINE).contains(&roll) {
                    return vec![(answer(msg, "51"), quick(rng))];
                }
                let requested = msg.amount().unwrap_or(0);
                // Some approvals are for part of the amount (RC 10, DE4 the amount approved).
                let approval = match rng.u32(0..100) < PARTIAL {
                    true => {
                        let mut partial = answer(msg, "10");
                        partial.set_number(4, requested / 2).expect("DE4");
                        partial.set(38, "P00001").expect("DE38");
                        partial
                    }
                    false => answer(msg, "00"),
                };
                self.ledger.book(msg, approval.amount().unwrap_or(0));
                match roll {
                    r if r < APPROVE => vec![(approval, quick(rng))],
                    r if r < APPROVE + DECLINE + DROP => Vec::new(),
                    r if r < APPROVE + DECLINE + DROP + LATE => {
                        vec![(approval, Duration::from_millis(rng.u64(5_500..9_000)))]
                    }
                    _ => vec![(approval.clone(), quick(rng)), (approval, quick(rng))],
                }
            }
            // A reversal or an advice: applied (once: the books ignore repeats) and acknowledged,
            // unless it is answered with a system error, 96, and not applied.
            (class, function) => {
                let owed = class == 4 || function == 2;
                if owed && function == 2 && mti.digits()[3] == b'0' {
                    *self.advices.entry(rrn.clone()).or_default() += 1;
                }
                let roll = rng.u32(0..100);
                if owed && faults && roll >= 95 {
                    return vec![(answer(msg, "96"), quick(rng))];
                }
                if owed {
                    self.ledger.book(msg, msg.amount().unwrap_or(0));
                }
                let ack = answer(msg, "00");
                match roll {
                    // Sign-on and echo.
                    _ if !owed && faults && roll < 3 => Vec::new(),
                    _ if !owed => vec![(ack, Duration::from_millis(rng.u64(1..20)))],
                    r if faults && r < 10 => Vec::new(),
                    r if faults && r < 15 => vec![(ack.clone(), quick(rng)), (ack, quick(rng))],
                    _ => vec![(ack, quick(rng))],
                }
            }
        }
    }
}
