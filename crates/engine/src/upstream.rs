//! What issuers send, and the life of links: answers, timeouts, late answers, sign-on and echo.

use iso8583::{Class, ECHO_FIELDS, Message, Mti, ResponseCode};

use crate::engine::{Engine, span};
use crate::event::{Action, LinkId, Now, TimerId, TxnId};
use crate::fields::{self, copy, set_rc};
use crate::idempotency::{Answer, Done};
use crate::journal::Step;
use crate::links::{LinkState, Pending, PendingKey, Probe};
use crate::reversal::{Forwarded, Source};

/// DE70 network management codes.
const SIGN_ON: &str = "001";
const ECHO: &str = "301";

/// Fields of the issuer's answer a terminal gets, besides what its own request echoes.
const FROM_ISSUER: &[u8] = &[38, 39, 54, 55];

impl Engine {
    pub(crate) fn on_upstream(
        &mut self,
        now: Now,
        link: LinkId,
        msg: Message,
        out: &mut Vec<Action>,
    ) {
        if !self.links.exists(link) {
            return;
        }
        self.links.traffic(link, now.mono);
        let mti = msg.mti();
        if mti.is_request() {
            return self.answer_issuer_request(link, &msg, out);
        }
        let Some(stan) = msg.stan() else {
            self.stats.unmatched += 1;
            tracing::warn!(%mti, ?link, "issuer answer without DE11; dropped");
            return;
        };
        let rc = msg.response_code().unwrap_or(ResponseCode::SYSTEM_ERROR);
        let pending = self.links.take(PendingKey {
            link,
            class: mti.class(),
            stan,
        });
        let _txn = match pending {
            Some(Pending::Request(txn) | Pending::Late(txn) | Pending::Saf(txn)) => Some(span(txn)),
            Some(Pending::Probe) | None => None,
        };
        match pending {
            Some(Pending::Request(txn)) => self.on_answer(now, txn, rc, &msg, out),
            Some(Pending::Late(txn)) => {
                self.stats.late_answers += 1;
                tracing::warn!(%rc, "late issuer answer; the reversal stands");
                Self::journal(now, txn, Step::LateAnswer { rc }, out);
                // A late partial approval: the reversal names the amount that stands at the issuer.
                if let Some(amount) = msg.amount().filter(|_| rc == ResponseCode::PARTIAL)
                    && self
                        .saf
                        .amend(txn, |original| original.set_number(4, amount).map(drop))
                {
                    Self::journal(now, txn, Step::ApprovedAmount { amount }, out);
                }
            }
            Some(Pending::Saf(txn)) => self.owed_answered(now, txn, rc, out),
            Some(Pending::Probe) => self.on_probe_answer(now, link, stan, rc, out),
            None => {
                self.stats.unmatched += 1;
                tracing::warn!(%mti, stan, ?link, "issuer answer matches nothing in flight; dropped");
            }
        }
    }

    /// The issuer answered a forwarded request in time.
    fn on_answer(
        &mut self,
        now: Now,
        txn: TxnId,
        rc: ResponseCode,
        msg: &Message,
        out: &mut Vec<Action>,
    ) {
        let Some(t) = self.txns.remove(&txn) else {
            return;
        };
        self.stats.answered += 1;
        self.cancel(TimerId::Response(txn));
        self.links.request_answered(t.pending);
        let auth_code = msg.get(38).map(fields::text);
        Self::journal(now, txn, Step::Answered { rc, auth_code }, out);
        let mut forwarded = t.forwarded;
        let partial = msg.amount().filter(|_| rc == ResponseCode::PARTIAL);
        if let Some(amount) = partial {
            Self::journal(now, txn, Step::ApprovedAmount { amount }, out);
            // What stands at the issuer, and so what a reversal of it names.
            if let Err(error) = forwarded.set_number(4, amount) {
                tracing::warn!(%error, "approved amount cannot be kept for a reversal");
            }
        }
        let answer = self.terminal_answer(&t.req.msg, &forwarded, msg, rc);
        let told = self.tell(now, txn, &t.req.waiters, &answer, out);
        // An approval of what moves no money (an inquiry) leaves nothing to reverse.
        let approved = rc.is_approval() && self.moves_money(t.issuer, &forwarded);
        // A retransmit must learn what stands at the issuer: an approval the terminal never learned of, or
        // reversed itself, is undone at the issuer and replays as 91.
        let (answer, approved) = if approved && (!told || t.reverse_on_answer) {
            // Answered: the original is at the issuer already.
            self.queue_reversal(now, txn, (forwarded, t.issuer), None, out);
            (self.unavailable_answer(&t.req.msg), None)
        } else {
            (
                answer,
                approved.then_some((Source::Forwarded(Forwarded::of(&forwarded)), t.issuer)),
            )
        };
        self.idempotency.complete(
            &t.req.key,
            Done {
                txn,
                answer: Answer::of(&answer),
                approved,
            },
        );
    }

    /// The terminal's answer: its own request's fields, with the issuer's decision (and, for a partial
    /// approval, the amount approved).
    fn terminal_answer(
        &self,
        request: &Message,
        forwarded: &Message,
        issuer: &Message,
        rc: ResponseCode,
    ) -> Message {
        let built = request.response(ECHO_FIELDS).and_then(|mut answer| {
            for &n in FROM_ISSUER {
                if answer.spec().field(n).is_some() {
                    copy(&mut answer, issuer, n)?;
                }
            }
            if !answer.has(37) {
                copy(&mut answer, forwarded, 37)?;
            }
            if rc == ResponseCode::PARTIAL {
                copy(&mut answer, issuer, 4)?;
            }
            set_rc(&mut answer, rc)?;
            Ok(answer)
        });
        built.unwrap_or_else(|error| {
            tracing::warn!(%error, "issuer answer cannot be put into the terminal's dialect");
            self.local_answer(request, ECHO_FIELDS, ResponseCode::SYSTEM_ERROR)
                .unwrap_or_else(|| request.clone())
        })
    }

    fn unavailable_answer(&self, request: &Message) -> Message {
        self.local_answer(request, ECHO_FIELDS, ResponseCode::ISSUER_UNAVAILABLE)
            .unwrap_or_else(|| request.clone())
    }

    /// The issuer did not answer in time: RC 91 to the terminal and, unless the request moves no money,
    /// a reversal upstream.
    pub(crate) fn on_timeout(&mut self, now: Now, txn: TxnId, out: &mut Vec<Action>) {
        let Some(t) = self.txns.get(&txn) else {
            return;
        };
        // Cluster mode: a provisional forward has not left (the gate holds it until its claim's commit
        // is durable), so its issuer cannot be late yet, and the claim may be another node's whose
        // answer the terminal must get, not a 91. It is timed again from now; the claim's answer
        // comes first and settles it (taken back when lost).
        if t.claim.is_some() {
            let timeout = self.config.issuers[t.issuer].response_timeout;
            return self.arm(TimerId::Response(txn), now.mono + timeout);
        }
        let Some(t) = self.txns.remove(&txn) else {
            return;
        };
        self.stats.timeouts += 1;
        self.links.request_timed_out(t.pending, txn, now.mono);
        Self::journal(now, txn, Step::TimedOut, out);
        let answer = self.unavailable_answer(&t.req.msg);
        self.tell(now, txn, &t.req.waiters, &answer, out);
        if self.moves_money(t.issuer, &t.forwarded) {
            let behind = Some(t.pending.link);
            self.queue_reversal(now, txn, (t.forwarded, t.issuer), behind, out);
        }
        self.idempotency.complete(
            &t.req.key,
            Done {
                txn,
                answer: Answer::of(&answer),
                approved: None,
            },
        );
    }

    /// Times out every request in flight, oldest first, as if each one's timer had fired: its terminals
    /// are told 91 and its issuer gets a reversal before the switch stops, instead of keeping a debit the
    /// terminal never learned of until a restart.
    pub(crate) fn on_grace_over(&mut self, now: Now, out: &mut Vec<Action>) {
        let mut txns: Vec<TxnId> = self.txns.keys().copied().collect();
        txns.sort_unstable();
        for txn in txns {
            let _txn = span(txn);
            self.cancel(TimerId::Response(txn));
            self.on_timeout(now, txn, out);
        }
    }

    /// An issuer's own request (usually its echo test): answered on the spot.
    fn answer_issuer_request(&mut self, link: LinkId, msg: &Message, out: &mut Vec<Action>) {
        let mut answer = match msg.response(&[7, 11, 33, 70]) {
            Ok(a) => a,
            Err(_) => return,
        };
        if set_rc(&mut answer, ResponseCode::APPROVED).is_ok() {
            out.push(Action::Send {
                link,
                txn: None,
                msg: answer,
            });
        }
    }

    pub(crate) fn on_link_up(&mut self, now: Now, link: LinkId, out: &mut Vec<Action>) {
        if !self.links.exists(link) {
            return;
        }
        self.links.connected(link, now.mono);
        self.send_probe(now, link, Probe::SignOn, out);
    }

    pub(crate) fn on_link_down(&mut self, link: LinkId) {
        if !self.links.exists(link) {
            return;
        }
        self.links.dropped(link);
        // Requests in flight on the link may have reached the issuer: their timeouts reverse them.
        self.cancel(TimerId::Link(link));
    }

    /// A sign-on or echo went unanswered for a response timeout, or the link has been idle.
    pub(crate) fn on_link_timer(&mut self, now: Now, link: LinkId, out: &mut Vec<Action>) {
        if self.links.state(link) == LinkState::Down {
            return;
        }
        if let Some(probe) = self.links.probe(link) {
            tracing::warn!(?link, ?probe, "no answer to network management");
            return self.probe_failed(link, probe, out);
        }
        let idle_since = self.links.last_traffic(link).unwrap_or(now.mono);
        let due = idle_since + self.config.echo_interval;
        if now.mono >= due {
            self.send_probe(now, link, Probe::Echo, out);
        } else {
            self.arm(TimerId::Link(link), due);
        }
    }

    fn send_probe(&mut self, now: Now, link: LinkId, probe: Probe, out: &mut Vec<Action>) {
        let Some(issuer) = self.links.issuer(link) else {
            return;
        };
        let issuer = &self.config.issuers[issuer];
        let (spec, timeout) = (issuer.spec, issuer.response_timeout);
        let key = self.links.claim(link, Class::NETWORK, Pending::Probe);
        let code = match probe {
            Probe::SignOn => SIGN_ON,
            Probe::Echo => ECHO,
        };
        let mut msg = Message::new(spec, Mti::NETWORK);
        let built = msg
            .set_number(7, fields::transmission_time(now.wall))
            .and_then(|m| m.set_number(11, u64::from(key.stan)))
            .and_then(|m| m.set(70, code));
        if let Err(error) = built {
            self.links.release(key);
            tracing::error!(%error, "the issuer dialect cannot carry network management");
            return;
        }
        self.links.probe_sent(probe, key);
        out.push(Action::Send {
            link,
            txn: None,
            msg,
        });
        self.arm(TimerId::Link(link), now.mono + timeout);
    }

    fn on_probe_answer(
        &mut self,
        now: Now,
        link: LinkId,
        stan: u32,
        rc: ResponseCode,
        out: &mut Vec<Action>,
    ) {
        let Some(probe) = self.links.probe_answered(link, stan) else {
            return;
        };
        if rc != ResponseCode::APPROVED {
            tracing::warn!(?link, ?probe, %rc, "issuer refused network management");
            return self.probe_failed(link, probe, out);
        }
        if probe == Probe::SignOn {
            self.links.signed_on(link);
            tracing::info!(?link, "link signed on");
            if let Some(issuer) = self.links.issuer(link) {
                self.resume_owed(now, issuer);
            }
        }
        self.arm(TimerId::Link(link), now.mono + self.config.echo_interval);
    }

    /// A sign-on or echo failed: the link is taken down and closed, and the shell reconnects it.
    fn probe_failed(&mut self, link: LinkId, probe: Probe, out: &mut Vec<Action>) {
        match probe {
            Probe::SignOn => self.stats.sign_on_failures += 1,
            Probe::Echo => self.stats.echo_failures += 1,
        }
        self.on_link_down(link);
        out.push(Action::CloseLink(link));
    }
}
