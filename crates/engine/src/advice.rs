//! Advices from terminals: 0120 (authorization advice: a stand-in or offline EMV approval) and 0220
//! (financial advice: a pre-authorization's completion, an offline sale). The terminal is answered
//! (0130/0230, RC 00) as soon as the advice is durably queued; from then on the switch owes it to the
//! issuer, through the same store-and-forward queue as reversals, until the issuer acknowledges it.

use iso8583::{Message, Mti, OriginalData, ResponseCode};

use crate::engine::{Engine, Request};
use crate::event::{Action, Now, TxnId};
use crate::fields;
use crate::idempotency::{Key, State};
use crate::journal::{Original, Step};
use crate::saf::Kind;

/// What the journal keeps of an advice for its repeats after a restart: all but the card data (and
/// the STAN and DE7, which each attempt sets).
const ADVICE_FIELDS: &[u8] = &[3, 4, 12, 13, 15, 22, 25, 32, 37, 38, 41, 42, 49, 54, 90, 95];
/// What an advice never carries upstream: the card's track and PIN block are for the authorization,
/// and the queue must not keep them for the hours an advice may wait.
const NOT_FORWARDED: &[u8] = &[35, 45, 52];

impl Engine {
    /// Queues a new advice for its issuer and tells its waiters it was accepted.
    pub(crate) fn accept_advice(
        &mut self,
        now: Now,
        txn: TxnId,
        req: Request,
        out: &mut Vec<Action>,
    ) {
        let Request { key, msg, waiters } = req;
        let issuer = msg.pan().and_then(|pan| self.routes.issuer(pan.expose()));
        let Some(issuer) = issuer else {
            self.stats.unavailable += 1;
            self.idempotency.forget(&key);
            return self.refuse(now, txn, &waiters, &msg, crate::terminal::NO_ROUTE, out);
        };
        let upstream = match self.upstream_advice(now, txn, &key, &msg, issuer) {
            Ok(up) => up,
            Err(error) => {
                tracing::warn!(%error, "advice cannot be put into the issuer's dialect");
                self.idempotency.forget(&key);
                let rc = ResponseCode::SYSTEM_ERROR;
                return self.refuse(now, txn, &waiters, &msg, rc, out);
            }
        };
        self.stats.advices.queued += 1;
        let queued = Step::AdviceQueued {
            issuer: self.config.issuers[issuer].name.as_str().into(),
            advice: Original::of(&upstream, ADVICE_FIELDS),
        };
        Self::journal(now, txn, queued, out);
        // The terminal learns the RRN the issuer gets. Without an answer its dialect can carry, the
        // advice is queued all the same.
        let mut answer = self.local_answer(&msg, iso8583::ECHO_FIELDS, ResponseCode::APPROVED);
        if let Some(answer) = answer.as_mut().filter(|a| !a.has(37)) {
            let _ = fields::copy(answer, &upstream, 37);
        }
        self.answer_kept(now, txn, key, &waiters, answer, out);
        self.owe(now, txn, Kind::Advice, (upstream, issuer), None, out);
    }

    /// The advice in the issuer's dialect: the switch's DE32, an RRN that every repeat keeps, and for a
    /// completion DE90 as the issuer saw its pre-authorization (its upstream STAN and DE7), when this
    /// node knows it; otherwise the completion is named by the DE37 and DE38 the terminal repeats.
    fn upstream_advice(
        &self,
        now: Now,
        txn: TxnId,
        key: &Key,
        msg: &Message,
        issuer: usize,
    ) -> Result<Message, iso8583::Error> {
        let mut up = msg.translate(self.config.issuers[issuer].spec)?;
        for &n in NOT_FORWARDED {
            up.remove(n);
        }
        up.set(32, &self.config.acquirer_id)?;
        if !up.has(37) {
            up.set(37, fields::rrn(now.wall, (txn.0 % 1_000_000) as u32))?;
        }
        up.remove(90);
        if let Some(original) = self.preauthorization(key, msg) {
            up.set(90, original.to_digits())?;
        }
        self.set_settlement_date(now, &mut up)?;
        Ok(up)
    }

    /// DE90 of the pre-authorization a completion names, as its issuer got it, if this node holds it.
    fn preauthorization(&self, key: &Key, msg: &Message) -> Option<OriginalData> {
        let named = msg.original_data()?;
        let candidates = [
            key.original(named.stan, (named.transmission / 1_000_000) as u16),
            key.original(named.stan, key.date),
        ];
        candidates.iter().find_map(|original| {
            self.idempotency
                .with(original, |state, _| match state {
                    State::Done(done) => done
                        .approved
                        .as_ref()
                        .map(|(source, _)| source.named(&self.config.acquirer_id)),
                    State::InFlight(_) => None,
                })
                .flatten()
        })
    }
}

/// Attempt `attempt` (0 = the first, then repeats: 0121, 0221) of `advice`, with its own STAN and DE7.
pub(crate) fn attempt(
    advice: &Message,
    attempt: u32,
    stan: u32,
    now: Now,
) -> Result<Message, iso8583::Error> {
    let mut msg = advice.clone();
    let [version, class, function, _] = advice.mti().digits();
    let origin = if attempt == 0 { b'0' } else { b'1' };
    msg.set_mti(Mti::new([version, class, function, origin])?);
    msg.set_number(11, u64::from(stan))?
        .set_number(7, fields::transmission_time(now.wall))?;
    Ok(msg)
}
