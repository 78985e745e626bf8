//! A simulated POS terminal: one transaction at a time, of every kind a fleet sends — purchases,
//! authorizations, refunds, balance inquiries, pre-authorizations with their completion (0220), fuel
//! purchases adjusted by a partial reversal (DE95), offline sales (0220 advices) and stand-in
//! authorizations (0120 advices). On no answer it
//! retransmits the same request (same STAN) some of the time, else sends its own reversal and repeats it
//! until acknowledged; it repeats an advice or a partial reversal until it is answered; after a dropped
//! connection it reconnects and carries on where it was.

use std::time::Duration;

use engine::ConnId;
use fastrand::Rng;
use iso8583::{Message, Mti, ResponseCode, Spec};
use sim::{Outcome, Purchase, Told};

/// Retransmits of one request before the terminal reverses it instead.
const MAX_RETRANSMITS: u32 = 2;
/// The longest a terminal waits for an answer to one attempt.
const LONGEST_TIMEOUT: Duration = Duration::from_millis(9_000);
/// The longest a terminal may go on asking for one request, and taking an answer to it: each of its
/// attempts ends when its timeout passes or its connection drops, and the next one starts then.
pub(crate) const PATIENCE: Duration = LONGEST_TIMEOUT.saturating_mul(MAX_RETRANSMITS + 1);
/// How much longer after [`PATIENCE`] a terminal's day ends: long enough for the reversals the switch
/// makes in its name once its patience is over to be recorded.
const END_OF_DAY: Duration = Duration::from_secs(5);

/// What a transaction is, beyond its first request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// One request: a purchase, an authorization, a refund or an inquiry.
    Single,
    /// A pre-authorization, then (if approved) its completion for less.
    Completed,
    /// A purchase, then (if approved) a partial reversal to what was delivered.
    Adjusted,
}

#[derive(Debug)]
enum State {
    Idle,
    /// Waiting for the answer to `purchase`.
    Waiting {
        purchase: Purchase,
        plan: Plan,
        retransmits: u32,
    },
    /// Waiting for the answer to an advice for `amount` under `stan`: the completion of `purchase`, or
    /// (when `purchase` is itself an 0220) an offline sale. Repeated (0221) until accepted.
    Advising {
        purchase: Purchase,
        stan: u32,
        amount: u64,
        retransmits: u32,
    },
    /// Waiting for the acknowledgement of its partial reversal of `purchase` to `actual`.
    Adjusting {
        purchase: Purchase,
        stan: u32,
        actual: u64,
        retransmits: u32,
    },
    /// Waiting for the acknowledgement of its reversal of `purchase`.
    Reversing {
        purchase: Purchase,
        stan: u32,
        retransmits: u32,
    },
    /// Its transactions are done; it settles at the end of its day.
    EndOfDay,
    /// Settling its batch with the 0500 under `stan`: its totals (DE3 92), or after its upload (96).
    Settling {
        stan: u32,
        after_upload: bool,
    },
    /// Uploading its batch after an out-of-balance answer: item `next`, under `stan`.
    Uploading {
        next: usize,
        stan: u32,
    },
    Done,
}

/// One transaction of a terminal's batch: its financial message (its STAN among its fields) and the
/// amount that stands.
#[derive(Debug, Clone)]
struct Item {
    purchase: Purchase,
    amount: u64,
}

/// The class of an advice's answer: an offline advice's own (0130, 0230), a completion's 0230.
fn advice_class(purchase: &Purchase) -> iso8583::Class {
    match purchase.mti.function() {
        2 => purchase.mti.class(),
        _ => iso8583::Class::FINANCIAL,
    }
}

/// How a terminal's settlement went.
#[derive(Debug, Clone, Default)]
pub(crate) struct Settlement {
    /// It counted one debit too many on purpose, so that its batch has to be uploaded.
    pub miscounts: bool,
    /// The answer to its totals: in balance (RC 00) or not (RC 95).
    pub in_balance: Option<bool>,
    pub closed: bool,
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
    /// What stands of its financial transactions, for its settlement.
    batch: Vec<Item>,
    pub settlement: Settlement,
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
            timeout: Duration::from_millis(rng.u64(3_000..LONGEST_TIMEOUT.as_millis() as u64)),
            retransmit_share: rng.f64(),
            outcomes: Vec::new(),
            batch: Vec::new(),
            settlement: Settlement {
                miscounts: rng.u32(0..5) == 0,
                ..Settlement::default()
            },
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.tid
    }

    pub(crate) fn done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Its own timer: start the next transaction, or act on a missing answer.
    pub(crate) fn on_wake(&mut self, rng: &mut Rng) -> Vec<Out> {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle if self.remaining == 0 && self.settlement.closed => {
                self.state = State::Done;
                Vec::new()
            }
            // Its day ends some time after its last transaction: its settlement comes once the switch
            // has stopped waiting on it (`engine::Config::terminal_patience`).
            State::Idle if self.remaining == 0 => {
                self.state = State::EndOfDay;
                vec![Out::Wake(PATIENCE + END_OF_DAY)]
            }
            State::EndOfDay => {
                self.state = State::Settling {
                    stan: self.stan(),
                    after_upload: false,
                };
                self.resend()
            }
            state @ (State::Settling { .. } | State::Uploading { .. }) => {
                self.state = state;
                self.resend()
            }
            State::Idle => {
                self.remaining -= 1;
                let (purchase, plan) = self.purchase(rng);
                self.state = match purchase.mti.function() {
                    2 => State::Advising {
                        stan: purchase.stan,
                        amount: purchase.amount,
                        purchase,
                        retransmits: 0,
                    },
                    _ => State::Waiting {
                        purchase,
                        plan,
                        retransmits: 0,
                    },
                };
                self.resend()
            }
            State::Waiting {
                purchase,
                plan,
                retransmits,
            } => self.no_answer(rng, purchase, plan, retransmits),
            State::Advising {
                purchase,
                stan,
                amount,
                retransmits,
            } => {
                self.state = State::Advising {
                    purchase,
                    stan,
                    amount,
                    retransmits: retransmits + 1,
                };
                self.resend()
            }
            State::Adjusting {
                purchase,
                stan,
                actual,
                retransmits,
            } => {
                self.state = State::Adjusting {
                    purchase,
                    stan,
                    actual,
                    retransmits: retransmits + 1,
                };
                self.resend()
            }
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
    fn no_answer(
        &mut self,
        rng: &mut Rng,
        purchase: Purchase,
        plan: Plan,
        retransmits: u32,
    ) -> Vec<Out> {
        if retransmits < MAX_RETRANSMITS && rng.f64() < self.retransmit_share {
            self.state = State::Waiting {
                purchase,
                plan,
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
            // An offline sale: the advice is the transaction itself.
            State::Advising {
                purchase,
                retransmits,
                ..
            } if purchase.mti.function() == 2 => {
                let mut offline = purchase.clone();
                let [v, c, f, _] = purchase.mti.digits();
                let origin = if *retransmits > 0 { b'1' } else { b'0' };
                offline.mti = Mti::new([v, c, f, origin]).expect("MTI");
                offline.message(self.spec)
            }
            State::Advising {
                purchase,
                stan,
                amount,
                retransmits,
            } => purchase.completion(self.spec, *stan, *retransmits > 0, *amount),
            State::Adjusting {
                purchase,
                stan,
                actual,
                retransmits,
            } => purchase.partial_reversal(self.spec, *stan, *retransmits > 0, *actual),
            State::Settling { stan, after_upload } => {
                let processing = if *after_upload { "960000" } else { "920000" };
                let totals = self.totals();
                let like = &self.like();
                sim::settlement(self.spec, like, *stan, processing, totals)
            }
            State::Uploading { next, stan } => {
                let items = self.uploads();
                let item = &items[*next];
                item.purchase.upload(self.spec, *stan, item.amount)
            }
            State::Idle | State::EndOfDay | State::Done => return Vec::new(),
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
                plan,
                retransmits,
            } => self.no_answer(rng, purchase, plan, retransmits),
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
        let approved = rc.is_some_and(|rc| rc.is_approval());
        let accepted = rc == Some(ResponseCode::APPROVED);
        let state = std::mem::replace(&mut self.state, State::Idle);
        let (purchase, told, amount, retransmits, advised, state_stan) = match state {
            State::Waiting {
                purchase,
                plan,
                retransmits,
            } if class == purchase.mti.class() && stan == Some(purchase.stan) => {
                // What was approved: the amount asked, or a partial approval's.
                let amount = msg.amount().unwrap_or(purchase.amount);
                match (approved, plan) {
                    (true, Plan::Completed) => {
                        self.state = State::Advising {
                            stan: self.stan(),
                            amount: amount * 3 / 4,
                            purchase,
                            retransmits: 0,
                        };
                        return self.resend();
                    }
                    (true, Plan::Adjusted) => {
                        self.state = State::Adjusting {
                            stan: self.stan(),
                            actual: amount * 3 / 4,
                            purchase,
                            retransmits: 0,
                        };
                        return self.resend();
                    }
                    (true, _) => (purchase, Told::Approved, amount, retransmits, false, None),
                    (false, _) => (purchase, Told::Declined, amount, retransmits, false, None),
                }
            }
            // A reversal too is the terminal's to deliver: one not acted on (91 while the switch
            // cannot write) is repeated at its timeout.
            State::Reversing {
                purchase,
                stan: reversal,
                retransmits,
            } if class == iso8583::Class::REVERSAL && stan == Some(reversal) && accepted => {
                let amount = purchase.amount;
                (purchase, Told::Reversed, amount, retransmits, false, None)
            }
            // An advice is the terminal's to deliver: anything but "accepted" is asked again later.
            State::Advising {
                purchase,
                stan: advice,
                amount,
                retransmits,
            } if class == advice_class(&purchase) && stan == Some(advice) && accepted => (
                purchase,
                Told::Approved,
                amount,
                retransmits,
                true,
                Some(advice),
            ),
            State::Adjusting {
                purchase,
                stan: reversal,
                actual,
                retransmits,
            } if class == iso8583::Class::REVERSAL && stan == Some(reversal) && accepted => {
                (purchase, Told::Approved, actual, retransmits, false, None)
            }
            State::Settling {
                stan: sent,
                after_upload,
            } if class == iso8583::Class::RECONCILIATION && stan == Some(sent) => {
                match (rc.map(|rc| rc.to_string()).as_deref(), after_upload) {
                    (Some("00"), _) => {
                        self.settlement.in_balance.get_or_insert(true);
                        self.settlement.closed = true;
                        self.state = State::Idle;
                    }
                    (Some("95"), false) => {
                        self.settlement.in_balance = Some(false);
                        self.state = State::Uploading {
                            next: 0,
                            stan: self.stan(),
                        };
                        return self.resend();
                    }
                    // Anything else (91 while the switch cannot write, say): asked again later.
                    _ => {
                        self.state = State::Settling {
                            stan: sent,
                            after_upload,
                        }
                    }
                }
                return vec![Out::Wake(Duration::from_millis(rng.u64(0..500)))];
            }
            // Refused (91: its batch could not be read, say): the same item again later.
            State::Uploading { next, stan: sent }
                if class == iso8583::Class::FILE_ACTION && stan == Some(sent) && !accepted =>
            {
                self.state = State::Uploading { next, stan: sent };
                return vec![Out::Wake(Duration::from_millis(rng.u64(0..500)))];
            }
            State::Uploading { next, stan: sent }
                if class == iso8583::Class::FILE_ACTION && stan == Some(sent) =>
            {
                self.state = match next + 1 < self.uploads().len() {
                    true => State::Uploading {
                        next: next + 1,
                        stan: self.stan(),
                    },
                    false => State::Settling {
                        stan: self.stan(),
                        after_upload: true,
                    },
                };
                return self.resend();
            }
            state => {
                self.state = state;
                return Vec::new();
            }
        };
        // A financial request or advice (0200, 0220), or a pre-authorization's completion; an
        // authorization advice (0120) is a hold, not in the batch.
        let financial = purchase.mti.class() == iso8583::Class::FINANCIAL
            || (advised && purchase.mti.function() == 0);
        if told == Told::Approved && financial && !purchase.is_inquiry() {
            // The financial message is the completion itself for a pre-authorization.
            let stan = match &state_stan {
                Some(stan) => *stan,
                None => purchase.stan,
            };
            let item = Purchase {
                mti: Mti::FINANCIAL,
                stan,
                ..purchase.clone()
            };
            self.batch.push(Item {
                purchase: item,
                amount,
            });
        }
        self.outcomes.push(Outcome {
            terminal: self.tid.clone(),
            stan: purchase.stan,
            rrn: purchase.rrn.clone(),
            mti: purchase.mti.as_str().to_string(),
            amount,
            told,
            rc: rc.map(|rc| rc.to_string()),
            retransmits,
            processing: purchase.processing.clone(),
            advised,
            financial_stan: state_stan,
        });
        self.state = State::Idle;
        vec![Out::Wake(Duration::from_millis(rng.u64(0..500)))]
    }

    /// A purchase of this terminal's, for the fields its settlement repeats.
    fn like(&self) -> Purchase {
        Purchase {
            terminal: self.tid.clone(),
            ..Purchase::example()
        }
    }

    /// Its batch totals — credits, debits, credit amount, debit amount — one debit of 100 too many
    /// when it miscounts.
    fn totals(&self) -> [u64; 4] {
        let mut t = [0; 4];
        for item in &self.batch {
            let (count, amount) = if item.purchase.is_credit() {
                (0, 2)
            } else {
                (1, 3)
            };
            t[count] += 1;
            t[amount] += item.amount;
        }
        if self.settlement.miscounts {
            t[1] += 1;
            t[3] += 100;
        }
        t
    }

    /// What it uploads: its batch, and the item it miscounted (a STAN the switch never saw).
    fn uploads(&self) -> Vec<Item> {
        let mut items = self.batch.clone();
        if self.settlement.miscounts {
            let phantom = Purchase {
                stan: 0,
                ..self.like()
            };
            items.push(Item {
                purchase: phantom,
                amount: 100,
            });
        }
        items
    }

    fn stan(&mut self) -> u32 {
        self.next_stan = self.next_stan % 999_999 + 1;
        self.next_stan
    }

    /// The next transaction: its first request, and what follows it.
    fn purchase(&mut self, rng: &mut Rng) -> (Purchase, Plan) {
        self.next_rrn += 1;
        let pan = if rng.bool() {
            "4761739001010010"
        } else {
            "5413330089020011"
        };
        let (mti, processing, plan) = match rng.u32(0..100) {
            0..12 => (Mti::AUTHORIZATION, "000000", Plan::Single),
            12..20 => (Mti::FINANCIAL, "200000", Plan::Single),
            20..26 => (Mti::FINANCIAL, "310000", Plan::Single),
            26..36 => (Mti::AUTHORIZATION, "000000", Plan::Completed),
            36..44 => (Mti::FINANCIAL, "000000", Plan::Adjusted),
            44..48 => (Mti::new(*b"0220").expect("MTI"), "000000", Plan::Single),
            48..50 => (Mti::new(*b"0120").expect("MTI"), "000000", Plan::Single),
            _ => (Mti::FINANCIAL, "000000", Plan::Single),
        };
        let amount = match processing {
            "310000" => 0,
            _ => rng.u64(100..100_000),
        };
        let purchase = Purchase {
            mti,
            processing: processing.into(),
            pan: pan.into(),
            amount,
            stan: self.stan(),
            rrn: format!("{:012}", self.next_rrn),
            terminal: self.tid.clone(),
            ..Purchase::example()
        };
        (purchase, plan)
    }
}
