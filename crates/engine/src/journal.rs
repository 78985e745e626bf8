//! Journal records: every step of a transaction, emitted as [`Action::Journal`](crate::Action::Journal).
//!
//! A record never holds a PIN block, track data or EMV data; the card number is a [`Pan`], which prints
//! masked, and a durable sink stores it as a keyed hash plus first six and last four digits.

use std::time::SystemTime;

use iso8583::{Mti, Pan, ResponseCode};

use crate::event::{LinkId, TxnId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub txn: TxnId,
    pub at: SystemTime,
    pub step: Step,
}

/// The identity of a terminal request, recorded once when it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub mti: Mti,
    pub pan: Option<Pan>,
    pub amount: Option<u64>,
    pub currency: Option<u16>,
    pub terminal: String,
    pub merchant: String,
    pub stan: u32,
    /// Transaction date MMDD the idempotency key uses.
    pub date: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Received(Received),
    /// Refused before routing (RC 30, 94...).
    Rejected {
        rc: ResponseCode,
    },
    /// A retransmit joined the transaction in flight.
    Joined,
    /// A terminal connection waiting for the answer closed.
    Disconnected,
    /// A retransmit got the stored answer again.
    Replayed {
        rc: ResponseCode,
    },
    /// Written before the request leaves (write-ahead).
    Forwarded {
        issuer: String,
        link: LinkId,
        upstream_stan: u32,
        rrn: String,
    },
    /// The issuer answered in time.
    Answered {
        rc: ResponseCode,
    },
    TimedOut,
    /// The issuer answered after the timeout; the reversal stands.
    LateAnswer {
        rc: ResponseCode,
    },
    /// The terminal was told `rc`.
    Told {
        rc: ResponseCode,
    },
    /// No terminal connection was left to tell.
    Undeliverable {
        rc: ResponseCode,
    },
    ReversalQueued,
    ReversalSent {
        attempt: u32,
        link: LinkId,
        upstream_stan: u32,
    },
    ReversalAcknowledged {
        rc: ResponseCode,
    },
    /// The reversal was never acknowledged before its expiry: it needs manual action.
    ReversalExpired {
        attempts: u32,
    },
}
