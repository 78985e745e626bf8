//! The invariant check: what each terminal was told against the issuer's books. Every transaction told
//! "approved" must be debited exactly once; every other must be net zero.

use std::collections::HashSet;

use serde::Serialize;

use crate::ledger::Ledger;
use crate::terminals::{Outcome, Told};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    pub rrn: String,
    /// What the terminal was told; `None` for a debit no terminal transaction accounts for.
    pub told: Option<Told>,
    pub expected: i64,
    pub net: i64,
    /// Approvals the issuer recorded (2 or more: charged twice).
    pub approvals: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Reconciliation {
    pub checked: usize,
    pub mismatches: Vec<Mismatch>,
    /// Transactions the issuer approved more than once.
    pub double_debits: usize,
}

impl Reconciliation {
    pub fn holds(&self) -> bool {
        self.mismatches.is_empty()
    }
}

pub fn reconcile(outcomes: &[Outcome], ledger: &Ledger) -> Reconciliation {
    let mut r = Reconciliation {
        checked: outcomes.len(),
        ..Reconciliation::default()
    };
    let approvals = |rrn: &str| ledger.accounts.get(rrn).map_or(0, |a| a.approvals.len());
    for o in outcomes {
        let (expected, net) = (o.expected_net(), ledger.net(&o.rrn));
        if expected != net {
            r.mismatches.push(Mismatch {
                rrn: o.rrn.clone(),
                told: Some(o.told),
                expected,
                net,
                approvals: approvals(&o.rrn),
            });
        }
    }
    let known: HashSet<&str> = outcomes.iter().map(|o| o.rrn.as_str()).collect();
    for (rrn, account) in &ledger.accounts {
        if !known.contains(rrn.as_str()) && account.net() != 0 {
            r.mismatches.push(Mismatch {
                rrn: rrn.clone(),
                told: None,
                expected: 0,
                net: account.net(),
                approvals: account.approvals.len(),
            });
        }
    }
    r.double_debits = ledger
        .accounts
        .values()
        .filter(|a| a.approvals.len() > 1)
        .count();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(rrn: &str, told: Told, amount: u64) -> Outcome {
        Outcome {
            terminal: "T0000001".into(),
            stan: 1,
            rrn: rrn.into(),
            mti: "0200".into(),
            amount,
            told,
            rc: None,
            retransmits: 0,
            processing: "000000".into(),
            advised: false,
            financial_stan: None,
        }
    }

    #[test]
    fn every_way_the_books_can_disagree_is_a_mismatch() {
        let mut ledger = Ledger::default();
        ledger.approve("ok-approved", 100);
        ledger.approve("ok-reversed", 100);
        ledger.reverse("ok-reversed", None);
        ledger.approve("twice", 100);
        ledger.approve("twice", 100);
        ledger.approve("not-reversed", 100);
        ledger.approve("stray", 100);
        let outcomes = [
            outcome("ok-approved", Told::Approved, 100),
            outcome("ok-reversed", Told::Reversed, 100),
            outcome("ok-declined", Told::Declined, 100),
            outcome("twice", Told::Approved, 100),
            outcome("not-reversed", Told::Declined, 100),
            outcome("never-debited", Told::Approved, 100),
        ];
        let r = reconcile(&outcomes, &ledger);
        let bad: Vec<&str> = r.mismatches.iter().map(|m| m.rrn.as_str()).collect();
        assert_eq!(bad, ["twice", "not-reversed", "never-debited", "stray"]);
        assert_eq!(r.double_debits, 1);
        assert!(!r.holds());
        assert!(
            reconcile(&outcomes[..3], &Ledger::default())
                .mismatches
                .len()
                == 1
        );
    }
}
