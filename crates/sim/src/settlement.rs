//! The reconciliation of the acquirer's settlement with the issuer's: every difference by RRN. The
//! `acquiro settlement reconcile` command, the demo and the deterministic simulation all use it.

use std::collections::BTreeMap;

use serde::Serialize;

/// One difference between the two sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub rrn: String,
    /// `not_in_settlement` (the issuer settled it: the merchant would not be credited),
    /// `not_at_issuer`, or `amounts_differ`.
    pub kind: &'static str,
    pub ours: Option<i64>,
    pub issuer: Option<i64>,
}

/// Every difference between what the acquirer settles (`ours`) and what the issuer settled, each
/// signed net per RRN.
pub fn differences(
    ours: &BTreeMap<String, i64>,
    issuer: &BTreeMap<String, i64>,
) -> Vec<Difference> {
    let mut differences = Vec::new();
    for (rrn, &theirs) in issuer {
        let kind = match ours.get(rrn) {
            None => "not_in_settlement",
            Some(&mine) if mine != theirs => "amounts_differ",
            Some(_) => continue,
        };
        differences.push(Difference {
            rrn: rrn.clone(),
            kind,
            ours: ours.get(rrn).copied(),
            issuer: Some(theirs),
        });
    }
    for (rrn, &mine) in ours.iter().filter(|(rrn, _)| !issuer.contains_key(*rrn)) {
        differences.push(Difference {
            rrn: rrn.clone(),
            kind: "not_at_issuer",
            ours: Some(mine),
            issuer: None,
        });
    }
    differences
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_difference_is_found() {
        let side = |pairs: &[(&str, i64)]| pairs.iter().map(|(r, n)| (r.to_string(), *n)).collect();
        let ours = side(&[("same", 100), ("other", 50), ("ours-only", 7)]);
        let issuer = side(&[("same", 100), ("other", 60), ("issuer-only", -20)]);
        let kinds: Vec<(String, &str)> = differences(&ours, &issuer)
            .into_iter()
            .map(|d| (d.rrn, d.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("issuer-only".to_string(), "not_in_settlement"),
                ("other".to_string(), "amounts_differ"),
                ("ours-only".to_string(), "not_at_issuer"),
            ]
        );
    }
}
