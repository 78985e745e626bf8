//! A simulated POS terminal: one transaction at a time; on no answer it retransmits the same request
//! (same STAN) some of the time, else sends its own reversal and repeats it until acknowledged; after a
//! dropped connection it reconnects and carries on where it was.

use std::time::Duration;

use engine::ConnId;
use fastrand::Rng;
use iso8583::{Message, Mti, ResponseCode, Spec};
use sim::{Outcome, Purchase, Told};

/// Retransmits of one request before the terminal reverses it instead.
const MAX_RETRANSMITS: u32 = 2;

#[derive(Debug)]
enum State {
    Idle,
    /// Waiting for the answer to `purchase`.
    Waiting {
        purchase: Purchase,
        retransmits: u32,
    },
    /// Waiting for the acknowledgement of its reversal of `purchase`.
    Reversing {
        purchase: Purchase,
        stan: u32,
        retransmits: u32,
    },
    Done,
}

#[derive(Debug)]
pub(crate) struct Terminal {
    tid: String,
    spec: &'static Spec,
    pub conn: Option<ConnId>,
    state: State,
    /// Transactions still to start.
    remaining: u32,
    next_stan: u32,
    next_rrn: u64,
    /// How long it waits for an answer: on either side of the switch's own timeout.
    timeout: Duration,
    retransmit_share: f64,
    pub outcomes: Vec<Outcome>,
}

/// What a terminal asks of the world.
#[derive(Debug)]
pub(crate) enum Out {
    Send(Message),
    /// Wake it after this long (replacing any earlier wake).
    Wake(Duration),
}

impl Terminal {
    pub(crate) fn new(
        rng: &mut Rng,
        index: usize,
        spec: &'static Spec,
        transactions: u32,
    ) -> Terminal {
        Terminal {
            tid: format!("TERM{index:04}"),
            spec,
            conn: None,
            state: State::Idle,
            remaining: transactions,
            next_stan: rng.u32(1..999_000),
            next_rrn: index as u64 * 1_000_000,
            timeout: Duration::from_millis(rng.u64(3_000..9_000)),
            retransmit_share: rng.f64(),
            outcomes: Vec::new(),
        }
    }

    pub(crate) fn done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Its own timer: start the next transaction, or act on a missing answer.
    pub(crate) fn on_wake(&mut self, rng: &mut Rng) -> Vec<Out> {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle if self.remaining == 0 => {
                self.state = State::Done;
                Vec::new()
            }
            State::Idle => {
                self.remaining -= 1;
                let purchase = self.purchase(rng);
                let msg = purchase.message(self.spec).expect("purchase");
                self.state = State::Waiting {
                    purchase,
                    retransmits: 0,
                };
                self.send(msg)
            }
            State::Waiting {
                purchase,
                retransmits,
            } => self.no_answer(rng, purchase, retransmits),
            State::Reversing {
                purchase,
                stan,
                retransmits,
            } => {
                self.state = State::Reversing {
                    purchase,
                    stan,
                    retransmits: retransmits + 1,
                };
                self.resend()
            }
            State::Done => {
                self.state = State::Done;
                Vec::new()
            }
        }
    }

    /// Retransmits, or gives up and reverses.
    fn no_answer(&mut self, rng: &mut Rng, purchase: Purchase, retransmits: u32) -> Vec<Out> {
        if retransmits < MAX_RETRANSMITS && rng.f64() < self.retransmit_share {
            self.state = State::Waiting {
                purchase,
                retransmits: retransmits + 1,
            };
            return self.resend();
        }
        let stan = self.stan();
        self.state = State::Reversing {
            purchase,
            stan,
            retransmits: 0,
        };
        self.resend()
    }

    /// What it is waiting on, sent again (a reversal after the first as a repeat, 0401).
    fn resend(&mut self) -> Vec<Out> {
        let msg = match &self.state {
            State::Waiting { purchase, .. } => purchase.message(self.spec),
            State::Reversing {
                purchase,
                stan,
                retransmits,
            } => purchase.reversal(self.spec, *stan, *retransmits > 0),
            State::Idle | State::Done => return Vec::new(),
        };
        self.send(msg.expect("terminal request"))
    }

    fn send(&self, msg: Message) -> Vec<Out> {
        let mut out = vec![Out::Wake(self.timeout)];
        if self.conn.is_some() {
            out.push(Out::Send(msg));
        }
        out
    }

    pub(crate) fn on_connected(&mut self, rng: &mut Rng, conn: ConnId) -> Vec<Out> {
        self.conn = Some(conn);
        match std::mem::replace(&mut self.state, State::Idle) {
            // It does not know what became of the request: it asks again or reverses.
            State::Waiting {
                purchase,
                retransmits,
            } => self.no_answer(rng, purchase, retransmits),
            state => {
                self.state = state;
                self.resend()
            }
        }
    }

    /// An answer on its connection; one for anything but what it waits on is stale and ignored.
    pub(crate) fn on_answer(&mut self, rng: &mut Rng, msg: &Message) -> Vec<Out> {
        let (class, stan) = (msg.mti().class(), msg.stan());
        let rc = msg.response_code();
        let (purchase, told, retransmits) = match &self.state {
            State::Waiting {
                purchase,
                retransmits,
            } if class == purchase.mti.class() && stan == Some(purchase.stan) => {
                let told = if rc == Some(ResponseCode::APPROVED) {
                    Told::Approved
                } else {
                    Told::Declined
                };
                (purchase, told, *retransmits)
            }
            State::Reversing {
                purchase,
                stan: reversal,
                retransmits,
            } if class == iso8583::Class::REVERSAL && stan == Some(*reversal) => {
                (purchase, Told::Reversed, *retransmits)
            }
            _ => return Vec::new(),
        };
        self.outcomes.push(Outcome {
            terminal: self.tid.clone(),
            stan: purchase.stan,
            rrn: purchase.rrn.clone(),
            mti: purchase.mti.as_str().to_string(),
            amount: purchase.amount,
            told,
            rc: rc.map(|rc| rc.to_string()),
            retransmits,
        });
        self.state = State::Idle;
        vec![Out::Wake(Duration::from_millis(rng.u64(0..500)))]
    }

    fn stan(&mut self) -> u32 {
        self.next_stan = self.next_stan % 999_999 + 1;
        self.next_stan
    }

    fn purchase(&mut self, rng: &mut Rng) -> Purchase {
        self.next_rrn += 1;
        let pan = if rng.bool() {
            "4761739001010010"
        } else {
            "5413330089020011"
        };
        Purchase {
            mti: if rng.u32(0..5) == 0 {
                Mti::AUTHORIZATION
            } else {
                Mti::FINANCIAL
            },
            pan: pan.into(),
            amount: rng.u64(100..100_000),
            stan: self.stan(),
            rrn: format!("{:012}", self.next_rrn),
            terminal: self.tid.clone(),
            ..Purchase::example()
        }
    }
}
