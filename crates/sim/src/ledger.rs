//! The issuer simulator's books: every approval it debited (or, for a refund, credited), every reversal
//! it applied and every advice it booked, per transaction (keyed by RRN, DE37, which the terminals make
//! unique and the switch carries unchanged; a completion carries its pre-authorization's).

use std::collections::BTreeMap;

use iso8583::Message;
use serde::{Deserialize, Serialize};

/// One transaction at the issuer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The signed amount of each approval (a refund negative; more than one means the same
    /// transaction was booked twice).
    pub approvals: Vec<i64>,
    /// How many of the approvals, oldest first, a reversal undid.
    pub credited: usize,
    /// What partial reversals left standing of the approvals they undid.
    #[serde(default)]
    pub kept: i64,
    /// Reversal messages received, repeats and reversals of nothing included.
    pub reversals: u32,
    /// A completion's amount, which replaces what its pre-authorization held.
    #[serde(default)]
    pub completed: Option<i64>,
    /// Advices booked: a completion or an offline sale (more than one: booked twice).
    #[serde(default)]
    pub advices: u32,
    /// An authorization (0100, 0120): a hold, settled only through its completion.
    #[serde(default)]
    pub hold: bool,
}

impl Account {
    /// What stands, in minor units: approved minus reversed, or what a completion says.
    pub fn net(&self) -> i64 {
        if let Some(amount) = self.completed {
            return amount;
        }
        let booked: i64 = self.approvals.iter().sum();
        let undone: i64 = self.approvals[..self.credited].iter().sum();
        booked - undone + self.kept
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub accounts: BTreeMap<String, Account>,
}

impl Ledger {
    /// Books an approval of `amount` (negative: a credit).
    pub fn approve(&mut self, rrn: &str, amount: i64) {
        self.account(rrn).approvals.push(amount);
    }

    /// Records a reversal and undoes one approval not yet undone, if any, leaving `actual` of it
    /// standing for a partial reversal. Returns whether it undid one: a repeated reversal, or one for
    /// something never approved, changes nothing.
    pub fn reverse(&mut self, rrn: &str, actual: Option<i64>) -> bool {
        let account = self.account(rrn);
        account.reversals += 1;
        if account.credited < account.approvals.len() {
            account.credited += 1;
            account.kept += actual.unwrap_or(0);
            true
        } else {
            false
        }
    }

    /// Books an advice for `amount` the first time it comes (a repeat changes nothing): a completion
    /// when the transaction holds an approval (its pre-authorization), else an offline sale.
    pub fn advise(&mut self, rrn: &str, amount: i64) -> bool {
        let account = self.account(rrn);
        if account.advices > 0 {
            return false;
        }
        account.advices += 1;
        match account.approvals.is_empty() {
            true => account.approvals.push(amount),
            false => account.completed = Some(amount),
        }
        true
    }

    /// Books what the issuer does with `msg`: a request it approved for `amount` (a refund as a
    /// credit, an inquiry not at all), an advice, or a reversal (a partial one keeps DE95's amount).
    pub fn book(&mut self, msg: &Message, amount: u64) {
        let rrn = msg.rrn().map(|f| f.to_string()).unwrap_or_default();
        let processing = msg.get(3).and_then(|f| f.as_str()).unwrap_or("00");
        let signed = |amount: u64| match processing.get(..2) {
            Some("20") => -(amount as i64),
            _ => amount as i64,
        };
        let mti = msg.mti();
        match (mti.class().digit(), mti.function()) {
            (1 | 2, 0) if matches!(processing.get(..2), Some("30" | "31")) => {}
            (class @ (1 | 2), 0) => {
                self.approve(&rrn, signed(amount));
                self.account(&rrn).hold |= class == 1;
            }
            (class @ (1 | 2), 2) => {
                let first = self.account(&rrn).approvals.is_empty();
                self.advise(&rrn, signed(amount));
                self.account(&rrn).hold |= class == 1 && first;
            }
            (4, _) => {
                let actual = (msg.get(95).and_then(|f| f.as_str()))
                    .and_then(|amounts| amounts.get(..12)?.parse().ok());
                self.reverse(&rrn, actual.map(signed));
            }
            _ => {}
        }
    }

    fn account(&mut self, rrn: &str) -> &mut Account {
        self.accounts.entry(rrn.to_string()).or_default()
    }

    /// What the issuer settled, per RRN: every financial transaction (a purchase, a refund, an offline
    /// sale, a completion) that stands; an authorization only through its completion.
    pub fn settlement(&self) -> BTreeMap<String, i64> {
        self.accounts
            .iter()
            .filter(|(_, a)| !a.hold || a.completed.is_some())
            .map(|(rrn, a)| (rrn.clone(), a.net()))
            .filter(|(_, net)| *net != 0)
            .collect()
    }

    /// The settlement as the issuer's file for `acquiro settlement reconcile`: `rrn,amount` lines.
    pub fn settlement_file(&self) -> String {
        let mut file = String::from("rrn,amount\n");
        for (rrn, net) in self.settlement() {
            file.push_str(&format!("{rrn},{net}\n"));
        }
        file
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
        assert!(l.reverse("A", None));
        assert!(!l.reverse("A", None), "a repeat credits nothing");
        assert_eq!(l.net("A"), 0);
        assert!(!l.reverse("B", None), "nothing approved to credit");
        assert_eq!((l.net("B"), l.accounts["B"].reversals), (0, 1));
        l.approve("C", 300);
        l.approve("C", 300);
        assert!(l.reverse("C", None));
        assert_eq!(l.net("C"), 300, "debited twice, reversed once");
    }

    #[test]
    fn refunds_partials_and_advices_book_what_stands() {
        let mut l = Ledger::default();
        l.approve("refund", -700);
        assert_eq!(l.net("refund"), -700);
        assert!(l.reverse("refund", None));
        assert_eq!(l.net("refund"), 0, "a reversed refund");
        l.approve("fuel", 10_000);
        assert!(l.reverse("fuel", Some(6_000)));
        assert_eq!(
            l.net("fuel"),
            6_000,
            "a partial reversal keeps the actual amount"
        );
        l.approve("hotel", 20_000);
        assert!(l.advise("hotel", 18_500));
        assert!(
            !l.advise("hotel", 18_500),
            "a repeated advice is booked once"
        );
        assert_eq!((l.net("hotel"), l.accounts["hotel"].advices), (18_500, 1));
        assert!(l.advise("offline", 900));
        assert_eq!(l.net("offline"), 900);
    }
}
