//! The simulated issuer host: answers what the switch forwards, well or badly (a reversal sometimes
//! with a system error, 96, and not applied), and keeps the books.

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
}

/// What the issuer does with one financial request while faults are on, in percent.
const APPROVE: u32 = 60;
const DECLINE: u32 = 15;
/// Approved, and the answer never leaves.
const DROP: u32 = 8;
/// Approved, and answered after the switch's timeout.
const LATE: u32 = 7;
// The rest: approved, and answered twice.

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
        match msg.mti().class().digit() {
            1 | 2 => {
                *self.forwards.entry(rrn.clone()).or_default() += 1;
                let roll = if faults {
                    rng.u32(0..100)
                } else {
                    rng.u32(0..APPROVE + DECLINE)
                };
                if (APPROVE..APPROVE + DECLINE).contains(&roll) {
                    return vec![(answer(msg, "51"), quick(rng))];
                }
                self.ledger.approve(&rrn, msg.amount().unwrap_or(0));
                let approval = answer(msg, "00");
                match roll {
                    r if r < APPROVE => vec![(approval, quick(rng))],
                    r if r < APPROVE + DECLINE + DROP => Vec::new(),
                    r if r < APPROVE + DECLINE + DROP + LATE => {
                        vec![(approval, Duration::from_millis(rng.u64(5_500..9_000)))]
                    }
                    _ => vec![(approval.clone(), quick(rng)), (approval, quick(rng))],
                }
            }
            4 => {
                let roll = rng.u32(0..100);
                // A system error: the reversal was not applied, and must be repeated.
                if faults && roll >= 95 {
                    return vec![(answer(msg, "96"), quick(rng))];
                }
                self.ledger.reverse(&rrn);
                let ack = answer(msg, "00");
                match roll {
                    r if faults && r < 10 => Vec::new(),
                    r if faults && r < 15 => vec![(ack.clone(), quick(rng)), (ack, quick(rng))],
                    _ => vec![(ack, quick(rng))],
                }
            }
            // Sign-on and echo.
            _ if faults && rng.u32(0..100) < 3 => Vec::new(),
            _ => vec![(answer(msg, "00"), Duration::from_millis(rng.u64(1..20)))],
        }
    }
}
