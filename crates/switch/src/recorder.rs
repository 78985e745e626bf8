//! The driver's view of metrics: transaction metrics as a projection of the journal ([`Recorder::observe`]),
//! so that they count what the journal says happened, timed when the messages leave
//! ([`Recorder::sent`], [`Recorder::answered`]: after their records are durable); gauges of the engine's
//! state set after every burst of events ([`Recorder::sync`]) and when a link changes state.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::Instant;

use engine::{Engine, LinkId, Record, Stats, Step, TxnId, Unanswered};
use iso8583::{Message, Mti, ResponseCode};
use prometheus::IntGauge;

use crate::config::Link;
use crate::metrics::{LOCAL, Metrics};

/// A transaction between its arrival and its answer.
#[derive(Debug)]
struct Open {
    mti: Mti,
    received: Instant,
    /// Index into [`Recorder::issuers`] once forwarded, and when the request left.
    forwarded: Option<(usize, Option<Instant>)>,
    /// Its answer is recorded and counted; the duration ends when it leaves.
    told: bool,
}

/// Turns the driver's journal records and engine state into metrics.
#[derive(Debug)]
pub(crate) struct Recorder {
    metrics: Arc<Metrics>,
    issuers: Vec<String>,
    links: Vec<IntGauge>,
    open: HashMap<TxnId, Open>,
    last: Stats,
    /// The oldest pending reversal and advice last published to [`Metrics`].
    oldest: (Option<Instant>, Option<Instant>),
}

impl Recorder {
    pub(crate) fn new(metrics: Arc<Metrics>, links: &[Link]) -> Recorder {
        let mut issuers: Vec<String> = Vec::new();
        for l in links {
            if !issuers.contains(&l.issuer) {
                issuers.push(l.issuer.clone());
            }
        }
        let links = links
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let labels = Metrics::link_labels(LinkId(i as u32), l);
                let gauge = metrics.link_up.with_label_values(&labels);
                gauge.set(0);
                gauge
            })
            .collect();
        Recorder {
            metrics,
            issuers,
            links,
            open: HashMap::new(),
            last: Stats::default(),
            oldest: (None, None),
        }
    }

    /// Counts one journal record.
    pub(crate) fn observe(&mut self, record: &Record) {
        let m = &self.metrics;
        let now = Instant::now();
        match &record.step {
            Step::Received(r) => {
                m.requests.with_label_values(&[r.mti.as_str()]).inc();
                let open = Open {
                    mti: r.mti,
                    received: now,
                    forwarded: None,
                    told: false,
                };
                self.open.insert(record.txn, open);
            }
            Step::Forwarded { issuer, .. } => {
                let Some(index) = self.issuers.iter().position(|i| i == issuer) else {
                    return;
                };
                if let Some(open) = self.open.get_mut(&record.txn) {
                    m.forwarded
                        .with_label_values(&[open.mti.as_str(), issuer.as_str()])
                        .inc();
                    open.forwarded = Some((index, None));
                }
            }
            Step::Answered { .. } => {
                if let Some((issuer, Some(at))) = self.forwarded(record.txn) {
                    m.upstream_seconds
                        .with_label_values(&[issuer])
                        .observe(now.duration_since(at).as_secs_f64());
                }
            }
            Step::TimedOut => {
                if let Some((issuer, _)) = self.forwarded(record.txn) {
                    m.timeouts.with_label_values(&[issuer]).inc();
                }
            }
            Step::Told { rc } | Step::Rejected { rc } => self.told(record.txn, *rc),
            Step::Undeliverable { .. } => {
                m.undeliverable.inc();
                self.open.remove(&record.txn);
            }
            Step::LateAnswer { .. } => m.late_answers.inc(),
            Step::Joined => m.duplicates.with_label_values(&["joined"]).inc(),
            Step::Replayed { .. } => m.duplicates.with_label_values(&["replayed"]).inc(),
            Step::ReversalQueued => m.reversals.with_label_values(&["queued"]).inc(),
            Step::ReversalSent { attempt, .. } => {
                let outcome = if *attempt == 1 { "sent" } else { "repeated" };
                m.reversals.with_label_values(&[outcome]).inc();
            }
            Step::ReversalAcknowledged { .. } => {
                m.reversals.with_label_values(&["acknowledged"]).inc();
            }
            Step::ReversalExpired { .. } => m.reversals.with_label_values(&["expired"]).inc(),
            Step::ReversalRefused { .. } => m.reversals.with_label_values(&["refused"]).inc(),
            Step::AdviceQueued { .. } => m.advices.with_label_values(&["queued"]).inc(),
            Step::AdviceSent { attempt, .. } => {
                let outcome = if *attempt == 1 { "sent" } else { "repeated" };
                m.advices.with_label_values(&[outcome]).inc();
            }
            Step::AdviceAcknowledged { .. } => m.advices.with_label_values(&["acknowledged"]).inc(),
            Step::AdviceRefused { .. } => m.advices.with_label_values(&["refused"]).inc(),
            Step::AdviceExpired { .. } => m.advices.with_label_values(&["expired"]).inc(),
            Step::BatchOutOfBalance { .. } => {
                m.settlements.with_label_values(&["out_of_balance"]).inc();
            }
            Step::BatchUploaded { found, .. } => {
                let matched = if *found { "true" } else { "false" };
                m.batch_uploads.with_label_values(&[matched]).inc();
            }
            Step::BatchClosed {
                uploaded,
                discrepancies,
                ..
            } => {
                let outcome = if *uploaded {
                    "closed_after_upload"
                } else {
                    "in_balance"
                };
                m.settlements.with_label_values(&[outcome]).inc();
                m.settlement_discrepancies.inc_by(u64::from(*discrepancies));
            }
            Step::InDoubt => m.in_doubt.inc(),
            Step::HeldElsewhere { .. } => m.duplicates.with_label_values(&["elsewhere"]).inc(),
            Step::Adopted { .. } => m.adopted.inc(),
            // The engine's own withdrawal (the journal could not write); the store's comes as a report.
            Step::Withdrawn => self.withdrawn(&[record.txn]),
            // Counted by its response code (10) when told.
            Step::Disconnected | Step::ApprovedAmount { .. } | Step::ReversalReplaces { .. } => {}
        }
    }

    /// An answer that needed no record (a refusal while the journal cannot write, or a replay).
    pub(crate) fn answered_now(&self, answer: &Message) {
        let rc = answer.response_code().unwrap_or(ResponseCode::SYSTEM_ERROR);
        let rc = std::str::from_utf8(&rc.0).unwrap_or("??");
        let mti = answer.mti();
        self.metrics
            .responses
            .with_label_values(&[mti.as_str(), rc, LOCAL])
            .inc();
    }

    fn forwarded(&self, txn: TxnId) -> Option<(&str, Option<Instant>)> {
        let (issuer, at) = self.open.get(&txn)?.forwarded?;
        Some((self.issuers[issuer].as_str(), at))
    }

    /// Cluster mode: the provisional forwards of `txns` were withdrawn before they left (by the store,
    /// which lost their claims, or by the engine, when the journal could not write); the answers these
    /// transactions get are not an issuer's.
    pub(crate) fn withdrawn(&mut self, txns: &[TxnId]) {
        self.metrics.forwards_withdrawn.inc_by(txns.len() as u64);
        for txn in txns {
            if let Some(open) = self.open.get_mut(txn) {
                open.forwarded = None;
            }
        }
    }

    /// A message of `txn` went to an issuer: the first one is its forward.
    pub(crate) fn sent(&mut self, txn: Option<TxnId>) {
        let open = txn.and_then(|txn| self.open.get_mut(&txn));
        if let Some(Open {
            forwarded: Some((_, at @ None)),
            ..
        }) = open
        {
            *at = Some(Instant::now());
        }
    }

    /// An answer ending `txn` went to its terminal: a forwarded request's duration ends.
    pub(crate) fn answered(&mut self, txn: Option<TxnId>) {
        let Some(txn) = txn else {
            return;
        };
        // One lookup per answer: the entry goes once its answer has been counted.
        let Entry::Occupied(entry) = self.open.entry(txn) else {
            return;
        };
        if !entry.get().told {
            return;
        }
        if let Open {
            received,
            forwarded: Some((issuer, _)),
            ..
        } = entry.remove()
        {
            self.metrics
                .request_seconds
                .with_label_values(&[self.issuers[issuer].as_str()])
                .observe(received.elapsed().as_secs_f64());
        }
    }

    /// A terminal's message gets no answer.
    pub(crate) fn unanswered(&self, why: Unanswered) {
        self.metrics
            .unanswered
            .with_label_values(&[why.label()])
            .inc();
    }

    fn told(&mut self, txn: TxnId, rc: ResponseCode) {
        let m = &self.metrics;
        if rc == ResponseCode::DUPLICATE {
            m.duplicates.with_label_values(&["rejected"]).inc();
        }
        let rc = std::str::from_utf8(&rc.0).unwrap_or("??");
        // A request refused before it had a key (RC 30) was never recorded as received.
        let Some(open) = self.open.get_mut(&txn) else {
            m.responses.with_label_values(&["unknown", rc, LOCAL]).inc();
            return;
        };
        let issuer = open
            .forwarded
            .map_or(LOCAL, |(i, _)| self.issuers[i].as_str());
        m.responses
            .with_label_values(&[open.mti.as_str(), rc, issuer])
            .inc();
        // A forwarded request's duration ends when its answer leaves ([`Recorder::answered`]).
        open.told = true;
        if open.forwarded.is_none() {
            self.open.remove(&txn);
        }
    }

    /// Records that link number `index` went up or down.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub(crate) fn link_up(&self, index: usize, up: bool) {
        self.links[index].set(i64::from(up));
    }

    /// Sets the gauges of the engine's state and counts what its totals say happened since last time.
    pub(crate) fn sync(&mut self, engine: &mut Engine) {
        let m = &self.metrics;
        m.in_flight.set(engine.in_flight() as i64);
        m.saf_depth.set(engine.pending_reversals() as i64);
        m.advice_depth.set(engine.pending_advices() as i64);
        m.idempotency_entries
            .set(engine.idempotency_entries() as i64);
        let oldest = (engine.oldest_reversal(), engine.oldest_advice());
        // The locks are shared with scrapes: taken only when the answer changes.
        if oldest.0 != self.oldest.0 {
            m.saf_oldest.set(oldest.0);
        }
        if oldest.1 != self.oldest.1 {
            m.advice_oldest.set(oldest.1);
        }
        self.oldest = oldest;
        let (stats, last) = (engine.stats(), &self.last);
        m.idempotency_evictions
            .inc_by(stats.idempotency_evictions - last.idempotency_evictions);
        m.batch_evictions
            .inc_by(stats.batch_evictions - last.batch_evictions);
        m.format_errors
            .inc_by(stats.format_errors - last.format_errors);
        m.unmatched.inc_by(stats.unmatched - last.unmatched);
        m.refused_unknowing
            .inc_by(stats.refused_unknowing - last.refused_unknowing);
        m.pleas_taken.inc_by(stats.pleas_taken - last.pleas_taken);
        for (probe, now, before) in [
            ("sign_on", stats.sign_on_failures, last.sign_on_failures),
            ("echo", stats.echo_failures, last.echo_failures),
        ] {
            if now > before {
                m.probe_failures
                    .with_label_values(&[probe])
                    .inc_by(now - before);
            }
        }
        self.last = stats.clone();
    }
}
