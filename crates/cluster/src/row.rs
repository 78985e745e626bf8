//! A batch of records and claims as the columns `acquiro_commit` takes: one array per column, so that a
//! batch of any size is one statement and one round trip.
//!
//! A row holds every record one transaction has in one batch (schema version 3): a purchase is two
//! rows (received and forwarded, then answered and told), not four, which halves the rows and index
//! entries a commit inserts, the database's main cost per purchase. The row is keyed by its last
//! record's number (`seq`) and names its first (`first`); its body is [`MARK`], then each record's
//! number and the record, in order. A row written before version 3 has no `first` and its body is one
//! record, numbered `seq`.

use std::collections::HashMap;
use std::time::SystemTime;

use engine::{Claim, Record, Step};

/// Opens the body of every row of version 3. It is a varint no decoder takes (ten bytes, each saying
/// another follows), so that a node of an earlier release, which decodes a body as one record, fails
/// on such a row (a corrupt record, named) rather than read a record number as a transaction.
pub(crate) const MARK: [u8; 10] = [0xff; 10];

/// The columns of one batch.
#[derive(Debug, Default)]
pub(crate) struct Rows {
    pub(crate) seqs: Vec<i64>,
    pub(crate) firsts: Vec<i64>,
    pub(crate) txns: Vec<i64>,
    pub(crate) ats: Vec<SystemTime>,
    pub(crate) bodies: Vec<Vec<u8>>,
    /// What is kept in a row's place if its transaction's claim in the same batch is lost (with a
    /// provisional forward; see `engine::withdrawn`); `None` for a row that stands whatever the claims.
    pub(crate) alts: Vec<Option<Vec<u8>>>,
    pub(crate) terminals: Vec<Option<String>>,
    pub(crate) stans: Vec<Option<i32>>,
    pub(crate) days: Vec<Option<i16>>,
    pub(crate) last4s: Vec<Option<String>>,
    pub(crate) rrns: Vec<Option<String>>,
    pub(crate) claims: ClaimRows,
    /// The row of each transaction in this batch.
    rows: HashMap<u64, usize>,
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
    /// Record number `seq`, committed with `claims`, in its transaction's row; records come in the
    /// order of their numbers. A record's body is what the file journal writes (postcard, see
    /// `engine::Step`).
    pub(crate) fn push(&mut self, seq: u64, record: &Record, claims: &[Claim]) {
        let i = *self.rows.entry(record.txn.0).or_insert_with(|| {
            self.seqs.push(0);
            self.firsts.push(seq as i64);
            self.txns.push(record.txn.0 as i64);
            self.ats.push(record.at);
            self.bodies.push(MARK.to_vec());
            self.alts.push(None);
            self.terminals.push(None);
            self.stans.push(None);
            self.days.push(None);
            self.last4s.push(None);
            self.rrns.push(None);
            self.seqs.len() - 1
        });
        self.seqs[i] = seq as i64;
        let start = self.bodies[i].len();
        append(&mut self.bodies[i], seq, record);
        if let Some(alt) = engine::withdrawn(record, claims) {
            // The row's stand-in: its records so far, then this one's.
            let mut kept = self.alts[i]
                .take()
                .unwrap_or_else(|| self.bodies[i][..start].to_vec());
            append(&mut kept, seq, &alt);
            self.alts[i] = Some(kept);
        } else if let Some(kept) = &mut self.alts[i] {
            append(kept, seq, record);
        }
        match &record.step {
            Step::Received(r) => {
                self.terminals[i] = Some(r.terminal.to_string());
                self.stans[i] = Some(r.stan as i32);
                self.days[i] = Some(r.date as i16);
                self.last4s[i] = r.card.as_ref().map(|c| c.last4.to_string());
            }
            Step::Forwarded { original, .. }
            | Step::AdviceQueued {
                advice: original, ..
            } => {
                if let Some(rrn) = original.rrn() {
                    self.rrns[i] = Some(rrn.to_owned());
                }
            }
            _ => {}
        }
    }

    /// The batch's claims, in the order of the claims table's key: every node inserts the keys two
    /// batches share in the same order, so that two commits can wait for each other only one way
    /// round, never in the cycle PostgreSQL breaks after `deadlock_timeout` by failing one of them.
    pub(crate) fn claims(&mut self, claims: &[Claim]) {
        let mut ordered: Vec<&Claim> = claims.iter().collect();
        ordered.sort_by(|a, b| key(a).cmp(&key(b)));
        for claim in ordered {
            self.claim(claim);
        }
    }

    fn claim(&mut self, claim: &Claim) {
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

/// A claim's key, in the claims table's order (its text columns compare as bytes there, as here).
fn key(c: &Claim) -> (u16, u32, &str, &str, bool) {
    (c.date, c.stan, &c.terminal, &c.merchant, c.reversal)
}

/// Record `seq` at the end of a row's body.
fn append(body: &mut Vec<u8>, seq: u64, record: &Record) {
    let grown = postcard::to_extend(&seq, std::mem::take(body))
        .and_then(|b| postcard::to_extend(record, b));
    // Serialising into a Vec fails only on allocation failure, which aborts first.
    *body = grown.unwrap_or_default();
}

/// The records of the row keyed `seq` of `node` as stored, with their numbers, in order.
pub(crate) fn decode(
    node: &str,
    seq: i64,
    first: Option<i64>,
    body: &[u8],
) -> Result<Vec<(u64, Record)>, crate::Error> {
    let corrupt = |why: String| crate::Error::Corrupt {
        node: node.to_owned(),
        seq,
        why,
    };
    if first.is_none() {
        let record = postcard::from_bytes(body).map_err(|e| corrupt(e.to_string()))?;
        return Ok(vec![(seq as u64, record)]);
    }
    let mut rest = body
        .strip_prefix(&MARK[..])
        .ok_or_else(|| corrupt("a row of several records without its mark".into()))?;
    let mut records = Vec::new();
    while !rest.is_empty() {
        let (n, after) =
            postcard::take_from_bytes::<u64>(rest).map_err(|e| corrupt(e.to_string()))?;
        let (record, after) =
            postcard::take_from_bytes::<Record>(after).map_err(|e| corrupt(e.to_string()))?;
        records.push((n, record));
        rest = after;
    }
    let numbers: Vec<u64> = records.iter().map(|(n, _)| *n).collect();
    if records.is_empty()
        || numbers.first() != first.map(|f| f as u64).as_ref()
        || numbers.last() != Some(&(seq as u64))
        || numbers.windows(2).any(|w| w[0] >= w[1])
    {
        return Err(corrupt(format!(
            "its records are numbered {numbers:?}, not from {first:?} up to {seq}"
        )));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use engine::TxnId;

    use super::*;

    fn record(txn: u64, step: Step) -> Record {
        Record {
            txn: TxnId(txn),
            at: UNIX_EPOCH + Duration::from_secs(1_795_000_000),
            step,
        }
    }

    #[test]
    fn a_batch_is_one_row_per_transaction_and_each_row_reads_back_numbered() {
        let batch = [
            (7, record(1, Step::Withdrawn)),
            (8, record(2, Step::Withdrawn)),
            (
                9,
                record(
                    1,
                    Step::Told {
                        rc: iso8583::ResponseCode::APPROVED,
                    },
                ),
            ),
        ];
        let mut rows = Rows::default();
        for (seq, r) in &batch {
            rows.push(*seq, r, &[]);
        }
        assert_eq!(
            (rows.seqs.as_slice(), rows.firsts.as_slice()),
            (&[9, 8][..], &[7, 8][..])
        );
        assert_eq!(rows.txns, [1, 2]);
        let one = decode("a", 9, Some(7), &rows.bodies[0]).unwrap();
        assert_eq!(one, [batch[0].clone(), batch[2].clone()]);
        let two = decode("a", 8, Some(8), &rows.bodies[1]).unwrap();
        assert_eq!(two, [batch[1].clone()]);
        // A row's key and first must be what its body numbers.
        assert!(decode("a", 10, Some(7), &rows.bodies[0]).is_err());
        assert!(decode("a", 9, Some(6), &rows.bodies[0]).is_err());
    }

    #[test]
    fn a_batch_s_claims_go_in_the_order_of_their_key_whatever_order_they_came_in() {
        let claim = |txn, terminal: &str, stan, date| Claim {
            txn: TxnId(txn),
            terminal: terminal.into(),
            merchant: "M1".into(),
            stan,
            date,
            reversal: false,
            fingerprint: 0,
            replacing: None,
        };
        let came = [
            claim(1, "T2", 7, 1206),
            claim(2, "T1", 9, 1206),
            claim(3, "T1", 7, 1206),
            claim(4, "T9", 1, 1205),
        ];
        let mut rows = Rows::default();
        rows.claims(&came);
        // Day, then STAN, then terminal: the claims table's key (day, stan, terminal, ...).
        assert_eq!(rows.claims.txns, [4, 3, 1, 2]);
        assert_eq!(rows.claims.terminals, ["T9", "T1", "T2", "T1"]);
    }

    #[test]
    fn a_row_of_several_records_is_refused_by_a_reader_of_one_record_bodies() {
        let mut rows = Rows::default();
        rows.push(1, &record(1, Step::Withdrawn), &[]);
        assert!(postcard::from_bytes::<Record>(&rows.bodies[0]).is_err());
    }
}
