//! What a load run reports: each transaction's outcome as its terminal concluded it (what the
//! reconciliation checks against the issuer's books), and the live counters of the run.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// What a terminal finally concluded about a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Told {
    Approved,
    Declined,
    /// It got no answer, sent its own reversal and had it acknowledged.
    Reversed,
    /// Its reversal was never acknowledged.
    Unresolved,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub terminal: String,
    pub stan: u32,
    pub rrn: String,
    pub mti: String,
    /// What the terminal was told stands: the amount approved (a partial approval's, a completion's,
    /// what a partial reversal left), or the amount asked for.
    pub amount: u64,
    pub told: Told,
    /// The response code of the answer it acted on.
    pub rc: Option<String>,
    pub retransmits: u32,
    /// DE3 of the transaction (absent in files written before it was recorded: a purchase).
    #[serde(default = "purchase_code")]
    pub processing: String,
    /// An advice was accepted (a completion or an offline sale): the issuer must have booked it once.
    #[serde(default)]
    pub advised: bool,
    /// The STAN of the financial message when it is not the first one's (a completion's).
    #[serde(default)]
    pub financial_stan: Option<u32>,
}

fn purchase_code() -> String {
    "000000".into()
}

impl Outcome {
    /// The issuer's net debit this outcome requires: the amount if approved (negative for a refund,
    /// nothing for an inquiry), else nothing.
    pub fn expected_net(&self) -> i64 {
        let sign = match &self.processing[..self.processing.len().min(2)] {
            "20" => -1,
            "30" | "31" => 0,
            _ => 1,
        };
        match self.told {
            Told::Approved => sign * self.amount as i64,
            _ => 0,
        }
    }
}

/// Live counters, readable while the load runs.
#[derive(Debug, Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub approved: AtomicU64,
    pub declined: AtomicU64,
    pub timeouts: AtomicU64,
    pub retransmits: AtomicU64,
    pub reversals: AtomicU64,
    /// Advices accepted: completions and offline sales.
    pub advices: AtomicU64,
    /// Partial reversals acknowledged.
    pub adjustments: AtomicU64,
    /// Settlements in balance at once, and closed after a batch upload.
    pub settled: AtomicU64,
    pub uploaded: AtomicU64,
    /// Connections opened (the first of each terminal included).
    pub connects: AtomicU64,
}

impl Progress {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
