//! The issuer simulator's books: every approval it debited and every reversal it credited, per
//! transaction (keyed by RRN, DE37, which the terminals make unique and the switch carries unchanged).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One transaction at the issuer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The amount of each approval (more than one means the same transaction was debited twice).
    pub approvals: Vec<u64>,
    /// How many of the approvals, oldest first, a reversal credited.
    pub credited: usize,
    /// Reversal messages received, repeats and reversals of nothing included.
    pub reversals: u32,
}

impl Account {
    /// Approved minus reversed, in minor units.
    pub fn net(&self) -> i64 {
        let debited: u64 = self.approvals.iter().sum();
        let credited: u64 = self.approvals[..self.credited].iter().sum();
        (debited - credited) as i64
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub accounts: BTreeMap<String, Account>,
}

impl Ledger {
    pub fn approve(&mut self, rrn: &str, amount: u64) {
        self.accounts
            .entry(rrn.to_string())
            .or_default()
            .approvals
            .push(amount);
    }

    /// Records a reversal and credits one approval not yet credited, if any. Returns whether it
    /// credited: a repeated reversal, or one for something never approved, credits nothing.
    pub fn reverse(&mut self, rrn: &str) -> bool {
        let account = self.accounts.entry(rrn.to_string()).or_default();
        account.reversals += 1;
        if account.credited < account.approvals.len() {
            account.credited += 1;
            true
        } else {
            false
        }
    }

    /// The net debit of a transaction (0 for one never seen).
    pub fn net(&self, rrn: &str) -> i64 {
        self.accounts.get(rrn).map_or(0, Account::net)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reversal_credits_once_and_a_double_debit_shows() {
        let mut l = Ledger::default();
        l.approve("A", 500);
        assert_eq!(l.net("A"), 500);
        assert!(l.reverse("A"));
        assert!(!l.reverse("A"), "a repeat credits nothing");
        assert_eq!(l.net("A"), 0);
        assert!(!l.reverse("B"), "nothing approved to credit");
        assert_eq!((l.net("B"), l.accounts["B"].reversals), (0, 1));
        l.approve("C", 300);
        l.approve("C", 300);
        assert!(l.reverse("C"));
        assert_eq!(l.net("C"), 300, "debited twice, reversed once");
    }
}
