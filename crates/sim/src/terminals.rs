//! The terminal load generator: N POS terminals, each one transaction at a time like a real one. On no
//! answer a terminal retransmits the same request (same STAN) a configurable share of the time, then gives
//! up and sends its own 0400, repeated as 0401 until accepted (RC 00); it reconnects when its connection
//! drops. With `lifecycle`, terminals send every kind of message a fleet sends — refunds, balance
//! inquiries, pre-authorizations and their completions (0220), purchases adjusted by a partial reversal
//! (DE95), offline sales (0220) — and each settles its batch at the end (0500), a share of them
//! miscounting on purpose so that their batch is uploaded (0320).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use iso8583::{Message, Mti, Spec};
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio_util::codec::Framed;
use wire::{Frame, FrameCodec};

pub use crate::outcome::{Outcome, Progress, Told};
use crate::purchase::Purchase;
use crate::shared::Shared;

#[derive(Debug, Clone)]
pub struct Load {
    pub addr: SocketAddr,
    pub spec: &'static Spec,
    pub codec: FrameCodec,
    pub terminals: usize,
    /// Transactions per second over all terminals; `None`: each terminal starts the next at once.
    pub rate: Option<f64>,
    /// Stop starting transactions after this long...
    pub duration: Duration,
    /// ...or after this many in all.
    pub count: Option<u64>,
    /// How long a terminal waits for an answer.
    pub timeout: Duration,
    /// The chance that a terminal retransmits after a timeout (else it reverses).
    pub retransmit_share: f64,
    /// Retransmits at most per transaction.
    pub max_retransmits: u32,
    /// The share of authorizations (0100); the rest are purchases (0200).
    pub authorization_share: f64,
    /// Card prefixes to draw PANs from.
    pub bins: Vec<String>,
    /// Amounts are drawn uniformly from this range, in minor units.
    pub amounts: [u64; 2],
    /// A terminal still unanswered on its reversal this long after the end gives up (unresolved).
    pub give_up_after: Duration,
    /// Every message kind of the transaction life cycle, and a settlement per terminal at the end.
    pub lifecycle: bool,
    /// With `lifecycle`: the share of terminals that count one debit too many in their settlement.
    pub miscount_share: f64,
    /// Terminals share this many connections, many requests in flight on each (as behind a terminal
    /// concentrator); `None`: a connection of its own for each terminal.
    pub connections: Option<usize>,
}

impl Load {
    /// Sensible defaults against `addr`: 10 terminals, closed loop, 10 s.
    pub fn new(addr: SocketAddr, spec: &'static Spec, codec: FrameCodec) -> Load {
        Load {
            addr,
            spec,
            codec,
            terminals: 10,
            rate: None,
            duration: Duration::from_secs(10),
            count: None,
            timeout: Duration::from_secs(30),
            retransmit_share: 0.5,
            max_retransmits: 1,
            authorization_share: 0.2,
            bins: vec!["476173".into(), "541333".into()],
            amounts: [100, 20_000],
            give_up_after: Duration::from_secs(30),
            lifecycle: false,
            miscount_share: 0.2,
            connections: None,
        }
    }
}

/// What follows a transaction's first message once it is approved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Single,
    /// A pre-authorization, completed for less by a 0220.
    Completed,
    /// A purchase, reversed in part (DE95) to what was delivered.
    Adjusted,
}

/// Everything the terminals did.
#[derive(Debug)]
pub struct Run {
    pub elapsed: Duration,
    pub outcomes: Vec<Outcome>,
    /// Microseconds from the first send to the answer acted on, for answered transactions.
    pub latency: Histogram<u64>,
}

/// Runs the load to its end (duration or count), reversals included.
pub async fn run(load: Load, progress: Arc<Progress>) -> Run {
    let load = Arc::new(load);
    let started = Instant::now();
    let budget = Arc::new(AtomicU64::new(load.count.unwrap_or(u64::MAX)));
    // Every terminal waits until all are spawned: a terminal spawned first must not use up a shared
    // `count` while the spawning thread is descheduled, leaving the rest without a transaction.
    let start = Arc::new(Barrier::new(load.terminals + 1));
    let links: Vec<_> = (0..load.connections.unwrap_or(0))
        .map(|_| Arc::new(Shared::new(load.addr, load.spec, load.codec)))
        .collect();
    let tasks: Vec<_> = (0..load.terminals)
        .map(|i| {
            let mut term = Terminal::new(i, load.clone(), progress.clone(), started);
            term.shared = (!links.is_empty()).then(|| links[i % links.len()].clone());
            let (budget, start) = (budget.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                term.run(budget).await
            })
        })
        .collect();
    start.wait().await;
    let mut outcomes = Vec::new();
    let mut latency = histogram();
    for task in tasks {
        if let Ok((o, h)) = task.await {
            outcomes.extend(o);
            latency.add(h).expect("same histogram bounds");
        }
    }
    Run {
        elapsed: started.elapsed(),
        outcomes,
        latency,
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// How a wait for an answer ended.
pub(crate) enum Waited {
    Answer(Message),
    TimedOut,
    Closed,
}

struct Terminal {
    index: usize,
    id: String,
    merchant: String,
    load: Arc<Load>,
    progress: Arc<Progress>,
    started: Instant,
    conn: Option<Framed<TcpStream, FrameCodec>>,
    /// The connection this terminal shares with others, if it does (then `conn` stays unused).
    shared: Option<Arc<Shared>>,
    stan: u32,
    outcomes: Vec<Outcome>,
    latency: Histogram<u64>,
}

impl Terminal {
    fn new(index: usize, load: Arc<Load>, progress: Arc<Progress>, started: Instant) -> Terminal {
        Terminal {
            index,
            id: format!("T{index:07}"),
            merchant: format!("MERCHANT{:07}", index / 10),
            load,
            progress,
            started,
            conn: None,
            shared: None,
            // Terminals start at different STANs, as real ones do.
            stan: fastrand::u32(0..999_000),
            outcomes: Vec::new(),
            latency: histogram(),
        }
    }

    async fn run(mut self, budget: Arc<AtomicU64>) -> (Vec<Outcome>, Histogram<u64>) {
        let interval = self
            .load
            .rate
            .map(|r| Duration::from_secs_f64(self.load.terminals as f64 / r));
        // Spread the first requests over one interval so terminals do not fire in step.
        let mut next =
            self.started + interval.map_or(Duration::ZERO, |i| i.mul_f64(fastrand::f64()));
        let end = self.started + self.load.duration;
        let mut seq = 0u64;
        loop {
            if let Some(i) = interval {
                tokio::time::sleep_until(next.into()).await;
                next += i;
            }
            let taken =
                budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1));
            if Instant::now() >= end || taken.is_err() {
                break;
            }
            seq += 1;
            let (purchase, plan) = self.purchase(seq);
            let outcome = self.transact(purchase, plan).await;
            self.outcomes.push(outcome);
        }
        if self.load.lifecycle {
            self.settle().await;
        }
        (self.outcomes, self.latency)
    }

    /// Settles the batch: its totals (one debit too many when it miscounts), then, if the switch finds
    /// it out of balance, every transaction uploaded and the close.
    async fn settle(&mut self) {
        let mut items: Vec<(Purchase, u64)> = (self.outcomes.iter())
            .filter(|o| o.told == Told::Approved && o.expected_net() != 0)
            // Financial (0200, 0220) or a pre-authorization's completion; a 0120 is a hold.
            .filter(|o| o.mti.starts_with("02") || (o.advised && o.mti == "0100"))
            .map(|o| {
                let item = Purchase {
                    stan: o.financial_stan.unwrap_or(o.stan),
                    processing: o.processing.clone(),
                    terminal: self.id.clone(),
                    merchant: self.merchant.clone(),
                    ..Purchase::example()
                };
                (item, o.amount)
            })
            .collect();
        let mut totals = [0u64; 4];
        for (item, amount) in &items {
            let (count, sum) = if item.is_credit() { (0, 2) } else { (1, 3) };
            totals[count] += 1;
            totals[sum] += amount;
        }
        if fastrand::f64() < self.load.miscount_share {
            (totals[1], totals[3]) = (totals[1] + 1, totals[3] + 100);
            let phantom = Purchase {
                stan: 0,
                terminal: self.id.clone(),
                merchant: self.merchant.clone(),
                ..Purchase::example()
            };
            items.push((phantom, 100));
        }
        let like = Purchase {
            terminal: self.id.clone(),
            merchant: self.merchant.clone(),
            ..Purchase::example()
        };
        let spec = self.load.spec;
        let stan = self.next_stan();
        let build = |_| crate::purchase::settlement(spec, &like, stan, "920000", totals);
        match self.deliver(build, stan, &["00", "95"]).await.as_deref() {
            Some("00") => return Progress::bump(&self.progress.settled),
            Some(_) => {}
            None => return,
        }
        for (item, amount) in &items {
            let stan = self.next_stan();
            if self
                .deliver(|_| item.upload(spec, stan, *amount), stan, &["00"])
                .await
                .is_none()
            {
                return;
            }
        }
        let stan = self.next_stan();
        let close = |_| crate::purchase::settlement(spec, &like, stan, "960000", [0; 4]);
        if self.deliver(close, stan, &["00"]).await.is_some() {
            Progress::bump(&self.progress.uploaded);
        }
    }

    /// Sends what `build` makes (its argument: whether it is a repeat) until it is answered with one of
    /// `ends`, as a POS terminal keeps a reversal, an advice or its settlement until it is accepted;
    /// `None` once the terminal gives up, `give_up_after` past the end.
    async fn deliver(
        &mut self,
        build: impl Fn(bool) -> Result<Message, iso8583::Error>,
        stan: u32,
        ends: &[&str],
    ) -> Option<String> {
        let give_up = self.started + self.load.duration + self.load.give_up_after;
        let mut repeat = false;
        while Instant::now() < give_up {
            let msg = build(repeat).expect("every message fits every built-in dialect");
            if let Waited::Answer(answer) = self.exchange(&msg, stan).await {
                let rc = answer.response_code().map(|rc| rc.as_str().to_string());
                if let Some(rc) = rc.filter(|rc| ends.contains(&rc.as_str())) {
                    return Some(rc);
                }
                // Refused (the switch could not act on it: 91, 96): repeated after a pause.
                tokio::time::sleep(self.load.timeout.min(Duration::from_secs(1))).await;
            }
            repeat = true;
        }
        None
    }

    fn next_stan(&mut self) -> u32 {
        self.stan = self.stan % 999_999 + 1;
        self.stan
    }

    /// The next transaction, and what follows its first message.
    fn purchase(&mut self, seq: u64) -> (Purchase, Plan) {
        let load = &self.load;
        let bin = &load.bins[fastrand::usize(0..load.bins.len())];
        let mut pan = bin.clone();
        while pan.len() < 16 {
            pan.push(char::from(b'0' + fastrand::u8(0..10)));
        }
        let now = time::OffsetDateTime::now_utc();
        let (month, day) = (u8::from(now.month()) as u64, u64::from(now.day()));
        let hms = u64::from(now.hour()) * 10_000
            + u64::from(now.minute()) * 100
            + u64::from(now.second());
        let mti = if fastrand::f64() < load.authorization_share {
            Mti::AUTHORIZATION
        } else {
            Mti::FINANCIAL
        };
        let (mti, processing, plan) = match fastrand::u32(0..100) {
            _ if !load.lifecycle => (mti, "000000", Plan::Single),
            0..8 => (Mti::FINANCIAL, "200000", Plan::Single),
            8..14 => (Mti::FINANCIAL, "310000", Plan::Single),
            14..24 => (Mti::AUTHORIZATION, "000000", Plan::Completed),
            24..32 => (Mti::FINANCIAL, "000000", Plan::Adjusted),
            32..36 => (Mti::new(*b"0220").expect("MTI"), "000000", Plan::Single),
            36..38 => (Mti::new(*b"0120").expect("MTI"), "000000", Plan::Single),
            _ => (mti, "000000", Plan::Single),
        };
        let amount = match processing {
            "310000" => 0,
            _ => fastrand::u64(load.amounts[0]..=load.amounts[1]),
        };
        let purchase = Purchase {
            mti,
            processing: processing.into(),
            pan,
            amount,
            currency: 978,
            stan: self.next_stan(),
            transmission: (month * 100 + day) * 1_000_000 + hms,
            local_time: hms as u32,
            local_date: (month * 100 + day) as u16,
            // Unique per transaction across terminals and runs of this process.
            rrn: format!("{:04}{:08}", self.index % 10_000, seq % 100_000_000),
            terminal: self.id.clone(),
            merchant: self.merchant.clone(),
        };
        (purchase, plan)
    }

    async fn transact(&mut self, purchase: Purchase, plan: Plan) -> Outcome {
        let spec = self.load.spec;
        let mut outcome = Outcome {
            terminal: purchase.terminal.clone(),
            stan: purchase.stan,
            rrn: purchase.rrn.clone(),
            mti: purchase.mti.as_str().to_string(),
            amount: purchase.amount,
            told: Told::Unresolved,
            rc: None,
            retransmits: 0,
            processing: purchase.processing.clone(),
            advised: false,
            financial_stan: None,
        };
        // An offline sale: the advice is the transaction, repeated (0221) until it is accepted.
        if purchase.mti.function() == 2 {
            let offline = |repeat| {
                let [v, c, f, _] = purchase.mti.digits();
                let mti = Mti::new([v, c, f, if repeat { b'1' } else { b'0' }])?;
                Purchase {
                    mti,
                    ..purchase.clone()
                }
                .message(spec)
            };
            Progress::bump(&self.progress.sent);
            if let Some(rc) = self.deliver(offline, purchase.stan, &["00"]).await {
                (outcome.told, outcome.rc, outcome.advised) = (Told::Approved, Some(rc), true);
                Progress::bump(&self.progress.advices);
            }
            return outcome;
        }
        let msg = purchase
            .message(spec)
            .expect("a purchase fits every built-in dialect");
        let sent_at = Instant::now();
        let mut retransmits = 0;
        loop {
            Progress::bump(&self.progress.sent);
            if let Waited::Answer(answer) = self.exchange(&msg, purchase.stan).await {
                let rc = answer.response_code().map(|rc| rc.as_str().to_string());
                // A partial approval (10) is an approval, for the amount the answer carries.
                let approved = matches!(rc.as_deref(), Some("00" | "10"));
                Progress::bump(if approved {
                    &self.progress.approved
                } else {
                    &self.progress.declined
                });
                let _ = self.latency.record(sent_at.elapsed().as_micros() as u64);
                outcome.told = if approved {
                    Told::Approved
                } else {
                    Told::Declined
                };
                outcome.rc = rc;
                outcome.retransmits = retransmits;
                outcome.amount = answer.amount().unwrap_or(purchase.amount);
                if approved {
                    self.follow(&purchase, plan, &mut outcome).await;
                }
                return outcome;
            }
            Progress::bump(&self.progress.timeouts);
            if retransmits < self.load.max_retransmits
                && fastrand::f64() < self.load.retransmit_share
            {
                retransmits += 1;
                Progress::bump(&self.progress.retransmits);
                continue;
            }
            break;
        }
        outcome.retransmits = retransmits;
        Progress::bump(&self.progress.reversals);
        let stan = self.next_stan();
        let reversal = |repeat| purchase.reversal(spec, stan, repeat);
        if let Some(rc) = self.deliver(reversal, stan, &["00"]).await {
            (outcome.told, outcome.rc) = (Told::Reversed, Some(rc));
        }
        outcome
    }

    /// What follows an approval: a pre-authorization's completion (0220) for less, or a partial
    /// reversal (DE95) to what was delivered.
    async fn follow(&mut self, purchase: &Purchase, plan: Plan, outcome: &mut Outcome) {
        let (spec, less) = (self.load.spec, outcome.amount * 3 / 4);
        let stan = self.next_stan();
        match plan {
            Plan::Single => {}
            Plan::Completed => {
                let completion = |repeat| purchase.completion(spec, stan, repeat, less);
                // Given up, the pre-authorization stands as the hold it was approved as.
                if self.deliver(completion, stan, &["00"]).await.is_some() {
                    (outcome.amount, outcome.advised) = (less, true);
                    outcome.financial_stan = Some(stan);
                    Progress::bump(&self.progress.advices);
                }
            }
            Plan::Adjusted => {
                let adjustment = |repeat| purchase.partial_reversal(spec, stan, repeat, less);
                match self.deliver(adjustment, stan, &["00"]).await {
                    Some(_) => {
                        outcome.amount = less;
                        Progress::bump(&self.progress.adjustments);
                    }
                    None => outcome.told = Told::Unresolved,
                }
            }
        }
    }

    /// Sends `msg` (connecting first if needed) and waits for the answer with `stan` and its class.
    async fn exchange(&mut self, msg: &Message, stan: u32) -> Waited {
        let load = self.load.clone();
        if let Some(shared) = &self.shared {
            let id = self.id.as_bytes();
            return (shared.exchange(msg, id, stan, load.timeout, &self.progress)).await;
        }
        let Some(conn) = self.connect().await else {
            return Waited::Closed;
        };
        let frame = Frame {
            tpdu: None,
            message: msg.to_bytes(),
        };
        if conn.send(frame).await.is_err() {
            self.conn = None;
            return Waited::Closed;
        }
        let class = msg.mti().class();
        let deadline = tokio::time::Instant::now() + load.timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, conn.next()).await;
            let frame = match next {
                Err(_) => return Waited::TimedOut,
                Ok(Some(Ok(frame))) => frame,
                Ok(_) => {
                    self.conn = None;
                    return Waited::Closed;
                }
            };
            // Anything else is a late or repeated answer to an earlier request: ignored.
            if let Ok(answer) = Message::decode(load.spec, frame.message)
                && !answer.mti().is_request()
                && answer.mti().class() == class
                && answer.stan() == Some(stan)
            {
                return Waited::Answer(answer);
            }
        }
    }

    /// The open connection, or a new one (`None` if the switch cannot be reached: counted as no answer
    /// after a pause, so a terminal never spins).
    async fn connect(&mut self) -> Option<&mut Framed<TcpStream, FrameCodec>> {
        if self.conn.is_none() {
            match TcpStream::connect(self.load.addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    Progress::bump(&self.progress.connects);
                    self.conn = Some(Framed::new(stream, self.load.codec));
                }
                Err(error) => {
                    tracing::debug!(terminal = %self.id, %error, "cannot reach the switch");
                    tokio::time::sleep(self.load.timeout.min(Duration::from_secs(1))).await;
                    return None;
                }
            }
        }
        self.conn.as_mut()
    }
}
