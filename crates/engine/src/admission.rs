//! The way in of every terminal message that has an idempotency key: its key, its duplicate check
//! (joined to the transaction in flight, replayed its stored answer, RC 94 when it differs), and RC 91
//! at once while nothing can be made durable. Requests, advices, reversals and settlement messages all
//! come through here; what each kind does next is its own module's.

use bytes::Bytes;
use iso8583::{Class, ECHO_FIELDS, Message, ResponseCode};

use crate::engine::Engine;
use crate::event::{Action, ConnId, Now, TxnId};
use crate::fields;
use crate::idempotency::{Answer, Conflict, Key, Lookup, fingerprint};
use crate::journal::{Card, Received, Step};

impl Engine {
    /// The idempotency key of a terminal request; `None` when a key field is missing or malformed.
    pub(crate) fn key(&self, now: Now, msg: &Message) -> Option<Key> {
        let ids = (msg.terminal_id()?.bytes(), msg.merchant_id()?.bytes());
        let stan = msg.stan()?;
        // The transaction date: the terminal's local date, else its transmission date, else today.
        let date = msg
            .local_date()
            .or_else(|| msg.transmission_time().map(|t| (t / 1_000_000) as u16))
            .unwrap_or_else(|| fields::day(now.wall));
        let reversal = msg.mti().class() == Class::REVERSAL;
        Key::new(ids, stan, date, reversal, &self.config.card_key)
    }

    /// The way in of every terminal message that has an idempotency key: RC 30 without one (or when
    /// it lacks what its kind needs: `complete`), its duplicates answered (joined, replayed, RC 94),
    /// RC 91 while nothing can be made durable. `Some` only for a new one: its key and fingerprint.
    pub(crate) fn admit(
        &mut self,
        now: Now,
        txn: TxnId,
        conn: ConnId,
        msg: &Message,
        complete: bool,
        out: &mut Vec<Action>,
    ) -> Option<(Key, u64)> {
        let (Some(key), true) = (self.key(now, msg), complete) else {
            self.reject(now, Some(txn), conn, msg, ResponseCode::FORMAT_ERROR, out);
            return None;
        };
        let (lookup, fingerprint) = self.lookup(now, txn, key, conn, msg, out)?;
        match lookup {
            Lookup::Joined(original) => self.join(now, original, conn, msg, out),
            Lookup::Replay(original, answer) => {
                self.answer_replay(now, original, conn, answer, msg, out)
            }
            Lookup::New if !self.journal_writable => {
                self.unavailable_now(conn, &key, msg, out);
                self.reverse_unknowing(now, [msg.clone()], out);
            }
            Lookup::New => return Some((key, fingerprint)),
        }
        None
    }

    /// A retransmit of `original`, still in flight: answered with it.
    fn join(
        &mut self,
        now: Now,
        original: TxnId,
        conn: ConnId,
        msg: &Message,
        out: &mut Vec<Action>,
    ) {
        self.stats.duplicates_joined += 1;
        // One answer per request: a retransmit on the same connection is answered too.
        match self.txns.get_mut(&original) {
            Some(t) => t.req.waiters.push(conn),
            None if self.claims.join(original, conn) => {}
            None if self.reads.join(original, conn) => {}
            None => {
                // An entry in flight always has its transaction; if that ever broke, the terminal is
                // still answered.
                let rc = ResponseCode::SYSTEM_ERROR;
                return self.answer_locally(conn, None, msg, ECHO_FIELDS, rc, out);
            }
        }
        Self::journal(now, original, Step::Joined, out);
    }

    /// A retransmit of `original`, completed: replayed its stored answer.
    fn answer_replay(
        &mut self,
        now: Now,
        original: TxnId,
        conn: ConnId,
        answer: Answer,
        msg: &Message,
        out: &mut Vec<Action>,
    ) {
        self.stats.duplicates_replayed += 1;
        let answer = self.replay(answer, msg);
        let rc = answer.response_code().unwrap_or(ResponseCode::SYSTEM_ERROR);
        if self.journal_writable {
            Self::journal(now, original, Step::Replayed { rc }, out);
            return out.push(Action::Answer {
                conn,
                txn: Some(original),
                msg: answer,
            });
        }
        // The journal cannot write: a replay of an answer already durable goes out at once, ahead of
        // its own record. One whose record the outage still holds waits for it (the gate knows):
        // told now, it could be contradicted by the reversal a restart or a takeover makes of a
        // forward with no durable answer.
        out.push(Action::AnswerNow {
            conn,
            msg: answer,
            repeats: Some(original),
        });
        Self::journal(now, original, Step::Replayed { rc }, out);
    }

    /// A new request while nothing it leads to could be made durable: refused at once, unrecorded.
    fn unavailable_now(&mut self, conn: ConnId, key: &Key, msg: &Message, out: &mut Vec<Action>) {
        self.stats.unavailable += 1;
        self.idempotency.forget(key);
        self.answer_now(conn, msg, ResponseCode::ISSUER_UNAVAILABLE, out);
    }

    /// The stored answer for a retransmit of `request`.
    pub(crate) fn replay(&self, answer: Answer, request: &Message) -> Message {
        let (rc, auth_code, rrn, amount) = match answer {
            Answer::Sent(wire) => match Message::decode(request.spec(), Bytes::from(wire)) {
                Ok(msg) => return msg,
                // Its own encoding: it decodes unless the code that wrote it is wrong.
                Err(error) => {
                    tracing::error!(%error, "stored answer does not decode; replayed as 96");
                    (ResponseCode::SYSTEM_ERROR, None, None, None)
                }
            },
            Answer::Rebuilt {
                rc,
                auth_code,
                rrn,
                amount,
            } => (rc, auth_code, rrn, amount),
        };
        let mut msg = self
            .local_answer(request, ECHO_FIELDS, rc)
            .unwrap_or_else(|| request.clone());
        let spec = msg.spec();
        let auth_code = auth_code.as_ref().map(|c| c.as_str());
        let rrn = rrn.as_ref().map(|r| r.as_str());
        for (n, value) in [(38, auth_code), (37, rrn)] {
            if let Some(value) = value
                && spec.field(n).is_some()
                && !msg.has(n)
                && let Err(error) = msg.set(n, value)
            {
                tracing::warn!(%error, field = n, "recorded value cannot be replayed");
            }
        }
        if let Some(amount) = amount
            && let Err(error) = msg.set_number(4, amount)
        {
            tracing::warn!(%error, "approved amount cannot be replayed");
        }
        msg
    }

    /// Looks a request's key up (with the request's fingerprint); a conflicting duplicate is answered
    /// RC 94 here and gives `None`.
    pub(crate) fn lookup(
        &mut self,
        now: Now,
        txn: TxnId,
        key: Key,
        conn: ConnId,
        msg: &Message,
        out: &mut Vec<Action>,
    ) -> Option<(Lookup, u64)> {
        let fingerprint = fingerprint(msg, &self.config.card_key);
        match self.idempotency.check(key, fingerprint, txn, now.mono) {
            Ok(lookup) => Some((lookup, fingerprint)),
            Err(Conflict) => {
                self.stats.duplicates_rejected += 1;
                self.reject(now, Some(txn), conn, msg, ResponseCode::DUPLICATE, out);
                None
            }
        }
    }

    pub(crate) fn received(&self, msg: &Message, key: &Key, fingerprint: u64) -> Received {
        let text = |n| msg.get(n).map(fields::text).unwrap_or_default();
        Received {
            mti: msg.mti(),
            card: msg.pan().map(|pan| Card::new(&pan, &self.config.card_key)),
            amount: msg.amount(),
            currency: msg.currency(),
            terminal: text(41),
            merchant: text(42),
            stan: key.stan,
            date: key.date,
            fingerprint,
        }
    }
}
