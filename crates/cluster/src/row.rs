//! A batch of records and claims as the columns `acquiro_commit` takes: one array per column, so that a
//! batch of any size is one statement and one round trip.

use std::time::SystemTime;

use engine::{Claim, Record, Step};

/// The columns of one batch.
#[derive(Debug, Default)]
pub(crate) struct Rows {
    pub(crate) seqs: Vec<i64>,
    pub(crate) txns: Vec<i64>,
    pub(crate) ats: Vec<SystemTime>,
    pub(crate) bodies: Vec<Vec<u8>>,
    /// What is kept in a record's place if its transaction's claim in the same batch is lost (a
    /// provisional forward; see `engine::withdrawn`).
    pub(crate) alts: Vec<Option<Vec<u8>>>,
    pub(crate) terminals: Vec<Option<String>>,
    pub(crate) stans: Vec<Option<i32>>,
    pub(crate) days: Vec<Option<i16>>,
    pub(crate) last4s: Vec<Option<String>>,
    pub(crate) rrns: Vec<Option<String>>,
    pub(crate) claims: ClaimRows,
}

#[derive(Debug, Default)]
pub(crate) struct ClaimRows {
    pub(crate) txns: Vec<i64>,
    pub(crate) terminals: Vec<String>,
    pub(crate) merchants: Vec<String>,
    pub(crate) stans: Vec<i32>,
    pub(crate) days: Vec<i16>,
    pub(crate) reversals: Vec<bool>,
    pub(crate) fingerprints: Vec<i64>,
    pub(crate) old_nodes: Vec<Option<String>>,
    pub(crate) old_txns: Vec<Option<i64>>,
}

impl Rows {
    /// Record number `seq`, committed with `claims`: its body is what the file journal writes
    /// (postcard, see `engine::Step`).
    pub(crate) fn push(&mut self, seq: u64, record: &Record, claims: &[Claim]) {
        self.seqs.push(seq as i64);
        self.txns.push(record.txn.0 as i64);
        self.ats.push(record.at);
        self.bodies
            .push(postcard::to_stdvec(record).unwrap_or_default());
        self.alts.push(
            engine::withdrawn(record, claims).map(|r| postcard::to_stdvec(&r).unwrap_or_default()),
        );
        let (mut terminal, mut stan, mut day, mut last4, mut rrn) = (None, None, None, None, None);
        match &record.step {
            Step::Received(r) => {
                terminal = Some(r.terminal.to_string());
                stan = Some(r.stan as i32);
                day = Some(r.date as i16);
                last4 = r.card.as_ref().map(|c| c.last4.to_string());
            }
            Step::Forwarded { original, .. }
            | Step::AdviceQueued {
                advice: original, ..
            } => rrn = original.rrn().map(str::to_owned),
            _ => {}
        }
        self.terminals.push(terminal);
        self.stans.push(stan);
        self.days.push(day);
        self.last4s.push(last4);
        self.rrns.push(rrn);
    }

    pub(crate) fn claim(&mut self, claim: &Claim) {
        let c = &mut self.claims;
        c.txns.push(claim.txn.0 as i64);
        c.terminals.push(claim.terminal.to_string());
        c.merchants.push(claim.merchant.to_string());
        c.stans.push(claim.stan as i32);
        c.days.push(claim.date as i16);
        c.reversals.push(claim.reversal);
        c.fingerprints.push(claim.fingerprint as i64);
        let old = claim.replacing.as_ref();
        c.old_nodes.push(old.map(|(node, _)| node.to_string()));
        c.old_txns.push(old.map(|(_, txn)| txn.0 as i64));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.seqs.is_empty() && self.claims.txns.is_empty()
    }
}

/// Record `seq` of `node` as stored: its body decodes to the record it was written from.
pub(crate) fn decode(node: &str, seq: i64, body: &[u8]) -> Result<Record, crate::Error> {
    postcard::from_bytes(body).map_err(|e| crate::Error::Corrupt {
        node: node.to_owned(),
        seq,
        why: e.to_string(),
    })
}
