//! The invariants every simulated run must keep.

use std::collections::BTreeMap;

use engine::{Step, TxnId};

use crate::world::Run;

/// Every invariant a run broke, each as one line (empty when it kept them all).
pub(crate) fn broken(run: &Run) -> Vec<String> {
    let mut broken = Vec::new();
    if !run.settled {
        broken.push("the run never settled: something in flight was never finished".to_string());
    }
    // (1) Every transaction's net debit at the issuer equals what its terminal was told.
    let books = sim::reconcile(&run.outcomes, &run.ledger);
    for m in &books.mismatches {
        broken.push(format!(
            "(1) RRN {}: terminal told {:?}, issuer net {} (expected {}, {} approvals)",
            m.rrn, m.told, m.net, m.expected, m.approvals
        ));
    }
    // (2) No idempotency key is forwarded twice: one request per RRN reaches the issuer, and one
    // first attempt of each advice (its repeats are 0121, 0221).
    for (rrn, n) in run.forwards.iter().filter(|(_, n)| **n > 1) {
        broken.push(format!("(2) RRN {rrn} forwarded {n} times"));
    }
    for (rrn, n) in run.advices.iter().filter(|(_, n)| **n > 1) {
        broken.push(format!(
            "(2) advice of RRN {rrn} sent as a first attempt {n} times"
        ));
    }
    // (5) Every advice a terminal was told was accepted is booked by the issuer exactly once, and
    // the issuer books none that no terminal was told of.
    let advised: BTreeMap<&str, ()> = (run.outcomes.iter())
        .filter(|o| o.advised)
        .map(|o| (o.rrn.as_str(), ()))
        .collect();
    for rrn in advised.keys() {
        let booked = run.ledger.accounts.get(*rrn).map_or(0, |a| a.advices);
        if booked != 1 {
            broken.push(format!(
                "(5) accepted advice of RRN {rrn} booked {booked} times"
            ));
        }
    }
    for (rrn, account) in &run.ledger.accounts {
        if account.advices > 0 && !advised.contains_key(rrn.as_str()) {
            broken.push(format!(
                "(5) RRN {rrn}: an advice booked that no terminal was told of"
            ));
        }
    }
    // (6) The acquirer's settlement, folded from every node's records by the books the report uses,
    // is the issuer's: every financial transaction that stands, by RRN and amount.
    let mut books = engine::Books::default();
    for (node, record) in &run.journal {
        books.add(node, record);
    }
    let ours = engine::net_by_rrn(&books.settled());
    for d in sim::settlement::differences(&ours, &run.ledger.settlement()) {
        broken.push(format!("(6) {d:?}"));
    }
    // (8) No two nodes send the issuer one STAN in one second of DE7: an issuer matching a reversal
    // by DE90 could apply one node's reversal to the other's purchase.
    for clash in &run.stan_clashes {
        broken.push(format!("(8) {clash}"));
    }
    // (7) Every terminal's batch closes. A terminal that counted right is in balance, and one that
    // counted a debit too many is out of balance and closes after its upload with exactly that one
    // discrepancy: on one node, whose records hold the whole batch, and in a cluster, whose nodes read
    // a terminal's batch from the store, wherever its transactions went.
    let mut discrepancies: BTreeMap<&str, u32> = BTreeMap::new();
    for (_, record) in &run.journal {
        if let Step::BatchClosed {
            terminal,
            discrepancies: n,
            ..
        } = &record.step
        {
            discrepancies.insert(terminal.as_str(), *n);
        }
    }
    for (terminal, s) in &run.settlements {
        if !s.closed {
            broken.push(format!("(7) {terminal}: batch never closed"));
        }
        let found = discrepancies.get(terminal.as_str()).copied();
        if s.in_balance != Some(!s.miscounts) || found != Some(u32::from(s.miscounts)) {
            broken.push(format!(
                "(7) {terminal}: miscounted {}, told in balance {:?}, closed with {found:?} discrepancies",
                s.miscounts, s.in_balance
            ));
        }
    }
    // (3) Every reversal and advice is acknowledged, or expired and reported; none is forgotten. A transaction
    // another node adopted (a takeover, or a terminal's reversal of it there) is finished by the
    // adopter's transaction.
    let mut reversals: BTreeMap<(&str, TxnId), bool> = BTreeMap::new();
    let mut adopters: BTreeMap<(&str, TxnId), Vec<(&str, TxnId)>> = BTreeMap::new();
    for (node, record) in &run.journal {
        let at = (node.as_str(), record.txn);
        match &record.step {
            Step::ReversalQueued | Step::AdviceQueued { .. } => {
                reversals.entry(at).or_insert(false);
            }
            Step::ReversalAcknowledged { .. }
            | Step::ReversalExpired { .. }
            | Step::AdviceAcknowledged { .. }
            | Step::AdviceExpired { .. } => {
                reversals.insert(at, true);
            }
            Step::Adopted { node: from, txn } => {
                adopters.entry((from.as_str(), *txn)).or_default().push(at);
            }
            _ => {}
        }
    }
    let finished = |at| finished_by(at, &reversals, &adopters);
    for (node, txn) in reversals.keys().filter(|&&at| !finished(at)) {
        broken.push(format!(
            "(3) reversal or advice of {txn:?} on node {node} neither acknowledged nor expired"
        ));
    }
    if run.pending_reversals + run.pending_advices > 0 {
        broken.push(format!(
            "(3) {} reversals and {} advices still pending",
            run.pending_reversals, run.pending_advices
        ));
    }
    // (4) Every request on a connection that stayed open gets exactly one answer; none gets two.
    for (conn, requests) in &run.requests {
        let answers = run.answers.get(conn);
        let open = !run.closed.contains(conn);
        for (key, &sent) in requests {
            let got = answers.and_then(|a| a.get(key)).copied().unwrap_or(0);
            if got > sent || (open && got != sent) {
                broken.push(format!(
                    "(4) {conn:?} (class, STAN) {key:?}: {sent} requests, {got} answers"
                ));
            }
        }
    }
    for (conn, answers) in &run.answers {
        for key in answers.keys() {
            if !run.requests.get(conn).is_some_and(|r| r.contains_key(key)) {
                broken.push(format!(
                    "(4) {conn:?} answered {key:?}, which it never asked"
                ));
            }
        }
    }
    broken
}

/// Whether the reversal of `at` was finished, there or by a transaction that adopted it.
fn finished_by<'a>(
    at: (&'a str, TxnId),
    reversals: &BTreeMap<(&'a str, TxnId), bool>,
    adopters: &BTreeMap<(&'a str, TxnId), Vec<(&'a str, TxnId)>>,
) -> bool {
    reversals.get(&at).copied().unwrap_or(false)
        || adopters
            .get(&at)
            .is_some_and(|by| by.iter().any(|&a| finished_by(a, reversals, adopters)))
}
