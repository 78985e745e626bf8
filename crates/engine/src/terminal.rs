//! What terminals send, by kind: purchases and authorizations (forwarded), advices and settlement
//! messages (handed to their modules), their own reversals, network management. The way in they share
//! (key, duplicates) is `admission.rs`.

use iso8583::{Class, ECHO_FIELDS, Message, ResponseCode};

use crate::engine::{Engine, Request, Txn};
use crate::event::{Action, ConnId, LinkId, Now, TimerId, TxnId, Unanswered};
use crate::fields::{self, set_rc};
use crate::idempotency::{Answer, Done, Key, Lookup, State};
use crate::journal::Step;
use crate::links::Pending;
use crate::reversal::replacement_unreadable;

/// RC 92: no route to the card's issuer.
pub(crate) const NO_ROUTE: ResponseCode = ResponseCode(*b"92");

/// Fields a terminal's network-management request gets back.
const NETWORK_ECHO: &[u8] = &[7, 11, 12, 13, 41, 42, 70];

impl Engine {
    pub(crate) fn on_request(
        &mut self,
        now: Now,
        conn: ConnId,
        msg: Message,
        out: &mut Vec<Action>,
    ) {
        self.stats.requests += 1;
        self.stats.idempotency_evictions += self.idempotency.sweep(now.mono);
        self.links.sweep_late(now.mono);
        let mti = msg.mti();
        if !mti.is_request() {
            // An answer from a terminal answers nothing the switch asked: it gets nothing back.
            tracing::warn!(%mti, "terminal sent a response message; ignored");
            return out.push(Action::NoAnswer {
                conn,
                why: Unanswered::Response,
            });
        }
        match (mti.class(), mti.function()) {
            (Class::NETWORK, _) => {
                self.answer_locally(conn, None, &msg, NETWORK_ECHO, ResponseCode::APPROVED, out)
            }
            (Class::REVERSAL, _) => self.terminal_reversal(now, conn, msg, out),
            // Requests and advices (0120, 0220): checked and deduplicated alike.
            (Class::AUTHORIZATION | Class::FINANCIAL, 0 | 2) => self.purchase(now, conn, msg, out),
            (Class::RECONCILIATION, 0) => self.settlement(now, conn, msg, out),
            (Class::FILE_ACTION, 2) => self.upload(now, conn, msg, out),
            _ => self.reject(now, None, conn, &msg, ResponseCode::FORMAT_ERROR, out),
        }
    }

    fn purchase(&mut self, now: Now, conn: ConnId, msg: Message, out: &mut Vec<Action>) {
        let txn = self.new_txn();
        let _txn = crate::engine::span(txn);
        let complete = msg.pan().is_some() && msg.has(3) && msg.has(4);
        let Some((key, fingerprint)) = self.admit(now, txn, conn, &msg, complete, out) else {
            return;
        };
        let received = self.received(&msg, &key, fingerprint);
        let req = Request {
            key,
            msg,
            waiters: vec![conn],
        };
        if self.config.shared_store {
            return self.claim_first(now, txn, req, received, out);
        }
        Self::journal(now, txn, Step::Received(received), out);
        self.proceed(now, txn, req, out);
    }

    /// A new request or advice whose key is this transaction's: a request is forwarded, an advice
    /// queued for its issuer.
    pub(crate) fn proceed(&mut self, now: Now, txn: TxnId, req: Request, out: &mut Vec<Action>) {
        if req.msg.mti().function() == 2 {
            return self.accept_advice(now, txn, req, out);
        }
        // It had a card number when it was checked.
        let Some(pan) = req.msg.pan() else {
            let rc = ResponseCode::FORMAT_ERROR;
            return self.refuse(now, txn, &req.waiters, &req.msg, rc, out);
        };
        match self.route(pan.expose()) {
            Ok(route) => self.forward(now, txn, req, route, out),
            Err(rc) => {
                self.stats.unavailable += 1;
                self.keep_refusal(txn, &req.key, rc);
                self.refuse(now, txn, &req.waiters, &req.msg, rc, out)
            }
        }
    }

    /// Where a request for card `pan` goes now: its issuer and the link to it, or what its terminal is
    /// told instead (92: no issuer for the card; 91: no link up to it).
    pub(crate) fn route(&self, pan: &[u8]) -> Result<(usize, LinkId), ResponseCode> {
        let issuer = self.routes.issuer(pan).ok_or(NO_ROUTE)?;
        let link = self.links.pick(issuer);
        Ok((issuer, link.ok_or(ResponseCode::ISSUER_UNAVAILABLE)?))
    }

    /// Renumbers and sends a new request upstream on `route` (see [`Engine::route`]), journaling it
    /// first.
    pub(crate) fn forward(
        &mut self,
        now: Now,
        txn: TxnId,
        req: Request,
        (issuer, link): (usize, LinkId),
        out: &mut Vec<Action>,
    ) {
        let pending = self
            .links
            .claim(link, req.msg.mti().class(), Pending::Request(txn));
        let stan = pending.stan;
        let forwarded = match self.upstream_request(now, &req.msg, issuer, stan) {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(%error, "request cannot be put into the issuer's dialect");
                self.links.release(pending);
                self.idempotency.forget(&req.key);
                let rc = ResponseCode::SYSTEM_ERROR;
                return self.refuse(now, txn, &req.waiters, &req.msg, rc, out);
            }
        };
        let issuer_cfg = &self.config.issuers[issuer];
        Self::journal(
            now,
            txn,
            Step::Forwarded {
                issuer: issuer_cfg.name.as_str().into(),
                link,
                upstream_stan: stan,
                original: crate::reversal::recorded(&forwarded),
            },
            out,
        );
        out.push(Action::Send {
            link,
            txn: Some(txn),
            msg: forwarded.clone(),
        });
        let timeout = issuer_cfg.response_timeout;
        self.arm(TimerId::Response(txn), now.mono + timeout);
        self.links.request_sent(link, now.mono);
        self.stats.forwarded += 1;
        self.txns.insert(
            txn,
            Txn {
                req,
                forwarded,
                issuer,
                pending,
                reverse_on_answer: false,
                claim: None,
            },
        );
    }

    /// The request in the issuer's dialect with the switch's STAN, DE7, DE32 and (if absent) RRN.
    fn upstream_request(
        &self,
        now: Now,
        msg: &Message,
        issuer: usize,
        stan: u32,
    ) -> Result<Message, iso8583::Error> {
        let mut up = msg.translate(self.config.issuers[issuer].spec)?;
        up.set_number(11, u64::from(stan))?
            .set_number(7, fields::transmission_time(now.wall))?
            .set(32, &self.config.acquirer_id)?;
        if !up.has(37) {
            up.set(37, fields::rrn(now.wall, stan))?;
        }
        self.set_settlement_date(now, &mut up)?;
        Ok(up)
    }

    /// DE15, the settlement date, from the business date, when the message lacks one and its dialect
    /// has the field.
    pub(crate) fn set_settlement_date(
        &self,
        now: Now,
        msg: &mut Message,
    ) -> Result<(), iso8583::Error> {
        if msg.spec().field(15).is_some() && !msg.has(15) {
            msg.set_number(15, fields::settlement_date(now.wall, self.config.cutover))?;
        }
        Ok(())
    }

    /// A terminal's 0400/0401/0420 for one of its own earlier requests.
    fn terminal_reversal(&mut self, now: Now, conn: ConnId, msg: Message, out: &mut Vec<Action>) {
        let txn = self.new_txn();
        let _txn = crate::engine::span(txn);
        let (Some(key), false) = (self.key(now, &msg), replacement_unreadable(&msg)) else {
            return self.reject(now, Some(txn), conn, &msg, ResponseCode::FORMAT_ERROR, out);
        };
        if self.plea_overtaken(now, &key, conn, out) {
            return;
        }
        let fingerprint = match self.lookup(now, txn, key, conn, &msg, out) {
            None => return,
            // A repeat of one whose original is still being looked up (cluster mode): answered with
            // it, once it is acted on.
            Some((Lookup::Joined(original), _)) if self.claims.join(original, conn) => {
                self.stats.duplicates_joined += 1;
                return Self::journal(now, original, Step::Joined, out);
            }
            // A repeat: the first one was already acted on and answered.
            Some((Lookup::Joined(original) | Lookup::Replay(original, _), _)) => {
                self.stats.duplicates_replayed += 1;
                Self::journal(
                    now,
                    original,
                    Step::Replayed {
                        rc: ResponseCode::APPROVED,
                    },
                    out,
                );
                let original = Some(original);
                return self.answer_locally(
                    conn,
                    original,
                    &msg,
                    ECHO_FIELDS,
                    ResponseCode::APPROVED,
                    out,
                );
            }
            Some((Lookup::New, _)) if !self.journal_writable => {
                self.stats.unavailable += 1;
                self.idempotency.forget(&key);
                return self.answer_now(conn, &msg, ResponseCode::ISSUER_UNAVAILABLE, out);
            }
            Some((Lookup::New, fingerprint)) => fingerprint,
        };
        let req = Request {
            key,
            msg,
            waiters: vec![conn],
        };
        self.act_on_reversal(now, txn, req, fingerprint, out);
    }

    /// A reversal admitted as `txn`: whatever stands at the issuer for the original it names is
    /// reversed (looked up in the store first when this node does not know it), then each of
    /// its waiters is answered.
    pub(crate) fn act_on_reversal(
        &mut self,
        now: Now,
        txn: TxnId,
        req: Request,
        fingerprint: u64,
        out: &mut Vec<Action>,
    ) {
        let (key, msg) = (&req.key, &req.msg);
        let received = self.received(msg, key, fingerprint);
        Self::journal(now, txn, Step::Received(received), out);
        // The original is named by DE90 when present (its DE7 date, or the reversal's date when the
        // original was keyed on a local date), else by the reversal's own STAN and date.
        let candidates = match msg.original_data() {
            Some(o) => [
                key.original(o.stan, (o.transmission / 1_000_000) as u16),
                key.original(o.stan, key.date),
            ],
            None => [key.original(key.stan, key.date); 2],
        };
        let shared = self.config.shared_store;
        let to_reverse = candidates.iter().find_map(|original| {
            self.idempotency
                .with(original, |state, fingerprint| match state {
                    State::InFlight(t) => Some(Err(*t)),
                    // Cluster mode: a 91 this node told without the store's word (the store was
                    // away, see `give_up_claim`) says nothing of what another node did under the
                    // key; the store says, as for an original this node does not know.
                    State::Done(done) if shared && done.answer.is_unavailable() => None,
                    State::Done(done) => Some(Ok(done.approved.take().map(|approved| {
                        let rrn = done.answer.rrn(msg.spec());
                        let amount = done.answer.partial_amount(msg.spec());
                        (done.txn, approved, (rrn, amount), fingerprint)
                    }))),
                })
                .flatten()
        });
        match to_reverse {
            Some(Err(in_flight)) => match self.txns.get_mut(&in_flight) {
                Some(t) if t.claim.is_none() => t.reverse_on_answer = true,
                // Cluster mode: forwarded provisionally (the gate holds it behind its claim's commit)
                // or still waiting for its claim, so not forwarded yet; it never will be. The key may
                // be held by another node's transaction, still making its answer durable: the store
                // says, as for any original of another node.
                _ => {
                    // This reversal is the one that acts on whatever holds the key.
                    let _refused = self.withdraw(now, in_flight, out);
                    let originals = candidates.map(|c| (c.stan, c.date));
                    return self.look_up_original(now, txn, req, originals, out);
                }
            },
            Some(Ok(Some((original_txn, (source, issuer), (rrn, amount), fingerprint)))) => {
                let rrn = rrn.as_ref().map(|r| r.as_str());
                let told = (rrn, amount);
                match self.reversed_original(source, issuer, msg, told, fingerprint) {
                    Ok(forwarded) => {
                        self.queue_terminal_reversal(now, original_txn, forwarded, issuer, msg, out)
                    }
                    Err(error) => tracing::error!(
                        ?original_txn,
                        %error,
                        "recorded request cannot be rebuilt for its reversal; needs manual action"
                    ),
                }
            }
            // Cluster mode: the original may be another node's; its records say.
            None if self.config.shared_store => {
                let originals = candidates.map(|c| (c.stan, c.date));
                return self.look_up_original(now, txn, req, originals, out);
            }
            // Never forwarded, declined, or already reversed: nothing stands at the issuer.
            Some(Ok(None)) | None => {}
        }
        self.reversal_acted_on(now, txn, req, out);
    }

    /// A terminal's reversal, acted on: answered approved to each of its waiters (recorded undeliverable
    /// when none is left), and its answer kept for its repeats.
    pub(crate) fn reversal_acted_on(
        &mut self,
        now: Now,
        txn: TxnId,
        req: Request,
        out: &mut Vec<Action>,
    ) {
        let answer = self.local_answer(&req.msg, ECHO_FIELDS, ResponseCode::APPROVED);
        self.answer_kept(now, txn, req.key, &req.waiters, answer, out);
        // The switch's own reversal in a terminal's name: settled once these records are durable.
        if let Some(plea) = self.pleas.remove(&txn) {
            out.push(Action::PleaSettled(plea));
        }
    }

    /// Ends a transaction the switch answers itself (a terminal's reversal, an advice, a settlement
    /// message): `answer` is kept for its repeats and told to each of `waiters`; without one (the
    /// dialect cannot carry it), each gets an explicit no-answer.
    pub(crate) fn answer_kept(
        &mut self,
        now: Now,
        txn: TxnId,
        key: Key,
        waiters: &[ConnId],
        answer: Option<Message>,
        out: &mut Vec<Action>,
    ) {
        let Some(answer) = answer else {
            let why = Unanswered::Unbuildable;
            return out.extend(waiters.iter().map(|&conn| Action::NoAnswer { conn, why }));
        };
        let done = Done {
            txn,
            answer: Answer::of(&answer),
            approved: None,
        };
        self.idempotency.complete(&key, done);
        self.tell(now, txn, waiters, &answer, out);
    }

    /// Refuses a request with `rc` (nothing goes upstream), journaling it when it has a transaction.
    pub(crate) fn reject(
        &mut self,
        now: Now,
        txn: Option<TxnId>,
        conn: ConnId,
        msg: &Message,
        rc: ResponseCode,
        out: &mut Vec<Action>,
    ) {
        if rc == ResponseCode::FORMAT_ERROR {
            self.stats.format_errors += 1;
        }
        match txn {
            Some(txn) => self.refuse(now, txn, &[conn], msg, rc, out),
            None => self.answer_locally(conn, txn, msg, ECHO_FIELDS, rc, out),
        }
    }

    /// Refuses transaction `txn` with `rc` (nothing goes upstream): recorded once, answered to each of
    /// `waiters`.
    pub(crate) fn refuse(
        &mut self,
        now: Now,
        txn: TxnId,
        waiters: &[ConnId],
        msg: &Message,
        rc: ResponseCode,
        out: &mut Vec<Action>,
    ) {
        Self::journal(now, txn, Step::Rejected { rc }, out);
        for &conn in waiters {
            // Nothing was forwarded: with the journal down, the refusal need not wait for its record.
            match self.journal_writable {
                true => self.answer_locally(conn, Some(txn), msg, ECHO_FIELDS, rc, out),
                false => self.answer_now(conn, msg, rc, out),
            }
        }
    }

    /// Keeps `rc`, the refusal of `txn`'s request, as its key's answer: a retransmit sent before the
    /// refusal reached the terminal (it waits behind its record) is told the same, never forwarded and
    /// approved after the terminal took the refusal as its answer. A new attempt comes under a STAN of
    /// its own.
    pub(crate) fn keep_refusal(&mut self, txn: TxnId, key: &Key, rc: ResponseCode) {
        let answer = Answer::Rebuilt {
            rc,
            auth_code: None,
            rrn: None,
            amount: None,
        };
        let done = Done {
            txn,
            answer,
            approved: None,
        };
        self.idempotency.complete(key, done);
    }

    /// Answers `msg` with `rc` at once, unrecorded (see [`Action::AnswerNow`]).
    pub(crate) fn answer_now(
        &mut self,
        conn: ConnId,
        msg: &Message,
        rc: ResponseCode,
        out: &mut Vec<Action>,
    ) {
        out.push(match self.local_answer(msg, ECHO_FIELDS, rc) {
            Some(msg) => Action::AnswerNow {
                conn,
                msg,
                repeats: None,
            },
            None => Action::NoAnswer {
                conn,
                why: Unanswered::Unbuildable,
            },
        });
    }

    /// Answers `msg` on the spot with `rc`, or says that no answer can be built.
    pub(crate) fn answer_locally(
        &mut self,
        conn: ConnId,
        txn: Option<TxnId>,
        msg: &Message,
        echo: &[u8],
        rc: ResponseCode,
        out: &mut Vec<Action>,
    ) {
        out.push(match self.local_answer(msg, echo, rc) {
            Some(answer) => Action::Answer {
                conn,
                txn,
                msg: answer,
            },
            None => Action::NoAnswer {
                conn,
                why: Unanswered::Unbuildable,
            },
        });
    }

    /// The answer to `msg` with `echo` fields copied and DE39 = `rc`.
    pub(crate) fn local_answer(
        &self,
        msg: &Message,
        echo: &[u8],
        rc: ResponseCode,
    ) -> Option<Message> {
        let mut answer = msg.response(echo).ok()?;
        match set_rc(&mut answer, rc) {
            Ok(()) => Some(answer),
            Err(error) => {
                tracing::warn!(%error, "the terminal dialect cannot carry a response code");
                None
            }
        }
    }
}
