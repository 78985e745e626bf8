//! What the issuer simulator does with a 0100/0200: the first rule that matches decides. With no rule
//! matching, it approves at once.
//!
//! ```toml
//! [[rules]]
//! bin = "476173"          # PAN prefix
//! amount = [5100, 5199]   # inclusive range, minor units
//! mti = "0200"
//! fields = { 22 = "051" } # field values, as text
//! share = 0.1             # the share of matching requests it takes (default 1)
//! action = "decline"      # approve, partial, decline, drop, close
//! rc = "51"               # for decline
//! delay = "20ms"          # before answering; or ["1ms", "20ms"] for a uniform draw
//! ```
//!
//! A top-level `refuse_share = 0.05` answers that share of reversals and advices with RC 96 (system
//! error) without applying them: the switch must repeat them.

use std::collections::BTreeMap;
use std::time::Duration;

use iso8583::Message;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// The share of reversals and advices answered 96 and not applied.
    #[serde(default)]
    pub refuse_share: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub bin: Option<String>,
    pub amount: Option<[u64; 2]>,
    pub mti: Option<String>,
    #[serde(default)]
    pub fields: BTreeMap<u8, String>,
    pub share: Option<f64>,
    pub action: Action,
    pub rc: Option<String>,
    pub delay: Option<Delay>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Debit and answer RC 00 with an auth code (after `delay`: past the switch's timeout, a late answer).
    Approve,
    /// Debit half the amount and answer RC 10 (partial approval) with that amount in DE4.
    Partial,
    /// Answer with `rc` (51 unless given); nothing is debited.
    Decline,
    /// Debit and never answer: the lost answer a reversal must repair.
    Drop,
    /// Close the connection without answering; nothing is debited.
    Close,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub enum Delay {
    Fixed(#[serde(with = "humantime_serde")] Duration),
    Uniform(
        #[serde(with = "humantime_serde")] Duration,
        #[serde(with = "humantime_serde")] Duration,
    ),
}

impl Delay {
    pub fn draw(self) -> Duration {
        match self {
            Delay::Fixed(d) => d,
            Delay::Uniform(lo, hi) if hi > lo => {
                let span = (hi - lo).as_micros() as u64;
                lo + Duration::from_micros(fastrand::u64(0..=span))
            }
            Delay::Uniform(lo, _) => lo,
        }
    }
}

/// What to do with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub rc: String,
    pub delay: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("rules: {0}")]
pub struct RulesError(String);

impl Rules {
    pub fn parse(text: &str) -> Result<Rules, RulesError> {
        let rules: Rules = toml::from_str(text).map_err(|e| RulesError(e.to_string()))?;
        if !(0.0..=1.0).contains(&rules.refuse_share) {
            return Err(RulesError(format!(
                "refuse_share: {} is not within 0..1",
                rules.refuse_share
            )));
        }
        for (i, r) in rules.rules.iter().enumerate() {
            if let Some(s) = r.share
                && !(0.0..=1.0).contains(&s)
            {
                return Err(RulesError(format!(
                    "rules[{i}].share: {s} is not within 0..1"
                )));
            }
            if r.rc.as_ref().is_some_and(|rc| rc.len() != 2) {
                return Err(RulesError(format!("rules[{i}].rc: two characters")));
            }
        }
        Ok(rules)
    }

    /// The decision for `msg`: the first rule that matches it (and wins its share draw).
    pub fn decide(&self, msg: &Message) -> Decision {
        let rule = self
            .rules
            .iter()
            .find(|r| r.matches(msg) && r.share.is_none_or(|s| fastrand::f64() < s));
        match rule {
            None => Decision {
                action: Action::Approve,
                rc: "00".into(),
                delay: Duration::ZERO,
            },
            Some(r) => Decision {
                action: r.action,
                rc: match r.action {
                    Action::Decline => r.rc.clone().unwrap_or_else(|| "51".into()),
                    Action::Partial => "10".into(),
                    _ => "00".into(),
                },
                delay: r.delay.map_or(Duration::ZERO, Delay::draw),
            },
        }
    }
}

impl Rule {
    fn matches(&self, msg: &Message) -> bool {
        let pan = msg.pan();
        let bin_ok = self.bin.as_ref().is_none_or(|bin| {
            pan.as_ref()
                .is_some_and(|p| p.expose().starts_with(bin.as_bytes()))
        });
        let amount_ok = self
            .amount
            .is_none_or(|[lo, hi]| msg.amount().is_some_and(|a| (lo..=hi).contains(&a)));
        let mti_ok = self.mti.as_ref().is_none_or(|m| msg.mti().as_str() == m);
        let fields_ok = self.fields.iter().all(|(n, want)| {
            msg.get(*n)
                .is_some_and(|f| f.unmasked().to_string() == *want)
        });
        bin_ok && amount_ok && mti_ok && fields_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::purchase::Purchase;

    fn request(pan: &str, amount: u64) -> Message {
        Purchase {
            pan: pan.into(),
            amount,
            ..Purchase::example()
        }
        .message(dialects::builtin("iso87ascii").unwrap())
        .unwrap()
    }

    #[test]
    fn the_first_matching_rule_decides_and_the_default_approves() {
        let rules = Rules::parse(
            r#"
            [[rules]]
            bin = "5"
            action = "close"
            [[rules]]
            amount = [5100, 5199]
            action = "decline"
            rc = "05"
            delay = ["1ms", "2ms"]
            [[rules]]
            fields = { 22 = "051" }
            mti = "0200"
            action = "drop"
            "#,
        )
        .unwrap();
        let d = rules.decide(&request("5413330000000019", 5150));
        assert_eq!(d.action, Action::Close);
        let d = rules.decide(&request("4761739001010010", 5150));
        assert_eq!((d.action, d.rc.as_str()), (Action::Decline, "05"));
        assert!(d.delay >= Duration::from_millis(1) && d.delay <= Duration::from_millis(2));
        let d = rules.decide(&request("4761739001010010", 100));
        assert_eq!(d.action, Action::Drop, "DE22 is 051 in the example");
        let d = Rules::default().decide(&request("4761739001010010", 100));
        assert_eq!((d.action, d.rc.as_str()), (Action::Approve, "00"));
    }

    #[test]
    fn a_share_takes_about_that_share() {
        let rules = Rules::parse("[[rules]]\nshare = 0.25\naction = \"drop\"\n").unwrap();
        let m = request("4761739001010010", 100);
        let dropped = (0..4000)
            .filter(|_| rules.decide(&m).action == Action::Drop)
            .count();
        assert!((800..1200).contains(&dropped), "{dropped} of 4000");
    }

    #[test]
    fn bad_rules_are_named() {
        let e = Rules::parse("[[rules]]\nshare = 2.0\naction = \"drop\"\n").unwrap_err();
        assert!(e.to_string().contains("rules[0].share"), "{e}");
        assert!(Rules::parse("[[rules]]\naction = \"explode\"\n").is_err());
    }
}
