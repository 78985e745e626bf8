//! Upstream links: their state, their STANs, and what is outstanding on each.

use std::time::Instant;

use crate::event::{LinkId, TxnId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkState {
    Down,
    /// Connected; the sign-on (0800, DE70=001) is out.
    SigningOn,
    /// Signed on: carries traffic.
    Ready,
}

/// A network-management probe awaiting its 0810.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    SignOn,
    Echo,
}

#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) issuer: usize,
    pub(crate) state: LinkState,
    next_stan: u32,
    /// Requests forwarded and not yet answered or timed out: the load used to pick a link.
    pub(crate) in_flight: u32,
    pub(crate) last_traffic: Option<Instant>,
    pub(crate) probe: Option<(Probe, u32)>,
}

impl Link {
    pub(crate) fn new(issuer: usize) -> Link {
        Link {
            issuer,
            state: LinkState::Down,
            next_stan: 0,
            in_flight: 0,
            last_traffic: None,
            probe: None,
        }
    }

    /// The next STAN of this link, 000001–999999, skipping any still awaiting an answer (bounded: with a
    /// million outstanding, which per-link in-flight caps rule out, the next one is reused).
    pub(crate) fn next_stan(&mut self, in_use: impl Fn(u32) -> bool) -> u32 {
        for _ in 0..999_999 {
            self.next_stan = self.next_stan % 999_999 + 1;
            if !in_use(self.next_stan) {
                break;
            }
        }
        self.next_stan
    }
}

/// What an upstream message answers, keyed by (link, MTI class, upstream STAN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pending {
    Request(TxnId),
    /// A request that timed out: its answer, if it comes, is late.
    Late(TxnId),
    Reversal(TxnId),
    Probe,
}

pub(crate) type PendingKey = (LinkId, u8, u32);
