//! Cluster mode: how long a node may still write to issuers, by its own clock.
//!
//! The fence (an epoch checked in every commit) stops a node that lost its lease from committing, but
//! not from writing a message it had already released: a forward let out of the write-ahead gate just
//! before the process was paused would reach the issuer when it resumes, after the node that took its
//! work over had reversed it, and the late debit would stand. So a node writes upstream only while its
//! lease holds by its own clock, counted from when it *sent* its last renewal that went through (the
//! database starts the lease no earlier), and stops a margin before it would lapse. After a pause it
//! writes nothing until a renewal goes through again, or the fence stops it.
//!
//! Reversals and network messages go without it. A reversal only ever takes back what the node
//! decided to take back, and the node taking its work over decides the same of every request whose
//! answer it does not have: a late one is a repeat, which the issuer acknowledges as it does every
//! repeat of a reversal that was not acknowledged in time. So a database outage longer than the lease
//! holds up the node's requests and advices, which it could not commit new ones of anyway, but not
//! its reversals.

use std::time::{Duration, Instant};

use iso8583::{Class, Mti};

/// Until when writes to issuers may go. The switch's link tasks and the simulation's links both ask it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Licence {
    until: Instant,
}

impl Licence {
    /// A licence from a lease of `lease` whose renewal (or the join that started it) was sent at
    /// `sent`. It ends a fifth of the lease early: time for a message written at its last moment to
    /// reach the issuer before a reversal from the node taking the work over can, which the taker
    /// sends only after the lease lapsed in the database and it committed the takeover.
    pub fn from_renewal(sent: Instant, lease: Duration) -> Licence {
        Licence {
            until: sent + lease - lease / 5,
        }
    }

    /// Whether a message of this type waits for the licence: everything that can add to what the
    /// issuer holds (requests, advices, refunds), not reversals or network messages.
    pub fn needed_for(mti: Mti) -> bool {
        !matches!(mti.class(), Class::REVERSAL | Class::NETWORK)
    }

    /// Whether a write may go at `now`.
    pub fn allows(&self, now: Instant) -> bool {
        now < self.until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_advices_need_the_licence_and_reversals_do_not() {
        let needed = |mti: &[u8; 4]| Licence::needed_for(Mti::new(*mti).expect("an MTI"));
        assert!(needed(b"0100") && needed(b"0200") && needed(b"0220"));
        assert!(!needed(b"0400") && !needed(b"0401") && !needed(b"0420") && !needed(b"0800"));
    }
}
