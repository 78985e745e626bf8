//! The duplicate detector: which requests were seen, and what they were answered.
//!
//! Keyed on what a terminal repeats when it retransmits — terminal id, merchant id, STAN and transaction
//! date — with a fingerprint of what must not change between the original and a retransmit (MTI class,
//! PAN, processing code, amount, currency). The PAN only enters the fingerprint, a keyed hash stable across
//! restarts (the journal keeps it, and recovery rebuilds the table from it), never the table.

use std::hash::Hasher;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry as MapEntry;
use iso8583::{Class, Field, Message, ResponseCode, Spec};
use siphasher::sip::SipHasher13;
use tinystr::TinyAsciiStr;

use crate::event::TxnId;
use crate::fifo::Fifo;
use crate::journal::Received;

/// Room for the usual 8-character DE41 and 15-character DE42 (and a little more).
const ID_LEN: usize = 16;

/// Shards of the map (a power of two).
const SHARDS: usize = 256;

/// 16 bytes, held twice per entry (map and eviction queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    /// Keyed hash of the terminal and merchant ids (see [`ids`]).
    ids: u64,
    pub(crate) stan: u32,
    /// MMDD.
    pub(crate) date: u16,
    /// Reversals live beside the requests they reverse: a terminal often reverses with the original STAN.
    reversal: bool,
}

impl Key {
    /// `None` when an id is longer than any dialect's DE41/DE42. `secret` keys the hash of the ids, given
    /// as bytes: from a request's fields, no copy of the ids is made on the way.
    pub(crate) fn new(
        (terminal, merchant): (impl Iterator<Item = u8>, impl Iterator<Item = u8>),
        stan: u32,
        date: u16,
        reversal: bool,
        secret: &[u8; 16],
    ) -> Option<Key> {
        Some(Key {
            ids: ids(&pad(terminal)?, &pad(merchant)?, secret),
            stan,
            date,
            reversal,
        })
    }

    /// The key of a request as the journal recorded it.
    pub(crate) fn recorded(r: &Received, secret: &[u8; 16]) -> Option<Key> {
        let ids = (r.terminal.bytes(), r.merchant.bytes());
        Key::new(
            ids,
            r.stan,
            r.date,
            r.mti.class() == Class::REVERSAL,
            secret,
        )
    }

    /// The key of the request a reversal with this key refers to, given the original's STAN and date.
    pub(crate) fn original(&self, stan: u32, date: u16) -> Key {
        Key {
            stan,
            date,
            reversal: false,
            ..*self
        }
    }
}

/// An id zero-padded to [`ID_LEN`] bytes; `None` when it is longer.
fn pad(mut id: impl Iterator<Item = u8>) -> Option<[u8; ID_LEN]> {
    let mut out = [0u8; ID_LEN];
    out.iter_mut().zip(id.by_ref()).for_each(|(o, b)| *o = b);
    id.next().is_none().then_some(out)
}

/// A keyed hash (SipHash-1-3) of a terminal id and a merchant id, each zero-padded to 16 bytes: 8 bytes
/// in the key instead of 32. Two pairs of ids share a hash with probability 2⁻⁶⁴, and even then only
/// requests with the same STAN and date inside the window are taken for each other. The key is the
/// card key, stable across restarts, so that recovery rebuilds the same keys from the journal.
fn ids(terminal: &[u8; ID_LEN], merchant: &[u8; ID_LEN], secret: &[u8; 16]) -> u64 {
    let mut h = SipHasher13::new_with_key(secret);
    h.write(terminal);
    h.write(merchant);
    h.finish()
}

/// What a retransmit repeats unchanged, besides its MTI class: card, processing code, amount, currency.
pub(crate) const FINGERPRINT_FIELDS: &[u8] = &[2, 3, 4, 49];

/// A keyed hash of the fields a retransmit repeats unchanged.
pub(crate) fn fingerprint(msg: &Message, key: &[u8; 16]) -> u64 {
    fingerprint_as(msg.mti().class(), msg, key)
}

/// The fingerprint `msg` would have with MTI class `class`: a terminal's reversal repeats its original's
/// card, processing code, amount and currency.
///
/// The hash reads one byte stream: the class digit, then each field's logical bytes (or `FF` when absent)
/// and a `00`. It is recorded, so that stream is a format; an ASCII field's bytes go in as one slice
/// (SipHash reads a stream however it is cut), others a byte at a time.
pub(crate) fn fingerprint_as(class: Class, msg: &Message, key: &[u8; 16]) -> u64 {
    let mut h = SipHasher13::new_with_key(key);
    h.write_u8(class.digit());
    for &n in FINGERPRINT_FIELDS {
        match msg.get(n) {
            Some(f) => match f.as_str() {
                Some(text) => h.write(text.as_bytes()),
                None => f.bytes().for_each(|b| h.write_u8(b)),
            },
            None => h.write_u8(0xFF),
        }
        h.write_u8(0);
    }
    h.finish()
}

/// An entry's state. `R` is what the engine keeps of an approval for a terminal's later reversal of it:
/// opaque to the table, which only hands it out once.
#[derive(Debug)]
pub(crate) enum State<R> {
    InFlight(TxnId),
    /// Boxed: most entries are done, and an in-flight one should not pay for two messages.
    Done(Box<Done<R>>),
}

/// 56 bytes (a 64-byte allocation) with the engine's reversal token, most of what an entry costs.
#[derive(Debug, Clone)]
pub(crate) struct Done<R> {
    pub(crate) txn: TxnId,
    /// What the terminal was told, replayed to retransmits.
    pub(crate) answer: Answer,
    /// What a reversal of the approved request needs, while it may still need one; `None` when nothing
    /// stands at the issuer.
    pub(crate) approved: Option<R>,
}

/// An auth code (DE38): ASCII, inline; `None` takes no room.
pub(crate) type AuthCode = TinyAsciiStr<6>;
/// A retrieval reference number (DE37).
pub(crate) type Rrn = TinyAsciiStr<12>;

/// A completed request's answer, as kept for replay.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// What a replay rebuilds the answer from: the retransmit's echoed fields with these. The usual
    /// form (20 inline bytes), and the only one after a restart.
    Rebuilt {
        rc: ResponseCode,
        auth_code: Option<AuthCode>,
        rrn: Option<Rrn>,
        /// The amount of a partial approval (RC 10): the terminal is told it, not the one it asked.
        amount: Option<u64>,
    },
    /// As sent (terminal dialect), encoded, when it carries issuer data a replay could not rebuild
    /// (DE54 amounts, DE55 issuer EMV data) or codes that do not fit the inline ones. Encoded: a
    /// message would keep the request's whole frame alive, its PIN block, track and EMV data included,
    /// for the length of the window.
    Sent(Box<[u8]>),
}

impl Answer {
    /// How to replay `answer`, the answer a terminal was sent.
    pub(crate) fn of(answer: &Message) -> Answer {
        match (inline(answer.get(38)), inline(answer.get(37))) {
            (Ok(auth_code), Ok(rrn)) if !ISSUER_DATA.iter().any(|&n| answer.has(n)) => {
                let rc = answer.response_code().unwrap_or(ResponseCode::SYSTEM_ERROR);
                Answer::Rebuilt {
                    rc,
                    auth_code,
                    rrn,
                    amount: answer.amount().filter(|_| rc == ResponseCode::PARTIAL),
                }
            }
            _ => Answer::Sent(Box::from(&answer.to_bytes()[..])),
        }
    }

    /// Whether it is a 91: what the switch tells when it cannot reach the issuer or the store (an
    /// issuer's own 91 looks the same).
    pub(crate) fn is_unavailable(&self) -> bool {
        matches!(self, Answer::Rebuilt { rc, .. } if *rc == ResponseCode::ISSUER_UNAVAILABLE)
    }

    /// The amount of a partial approval the terminal was told (`spec`: its dialect).
    pub(crate) fn partial_amount(&self, spec: &'static Spec) -> Option<u64> {
        match self {
            Answer::Rebuilt { amount, .. } => *amount,
            Answer::Sent(wire) => {
                let answer = Message::decode(spec, Bytes::copy_from_slice(wire)).ok()?;
                let partial = answer.response_code() == Some(ResponseCode::PARTIAL);
                answer.amount().filter(|_| partial)
            }
        }
    }

    /// The RRN the terminal was told (`spec`: its dialect).
    pub(crate) fn rrn(&self, spec: &'static Spec) -> Option<Rrn> {
        match self {
            Answer::Rebuilt { rrn, .. } => *rrn,
            Answer::Sent(wire) => {
                let answer = Message::decode(spec, Bytes::copy_from_slice(wire)).ok()?;
                inline(answer.get(37)).ok().flatten()
            }
        }
    }
}

/// `field`'s logical value inline (`Ok(None)` when absent); `Err` when it is longer than `N` or not
/// ASCII.
fn inline<const N: usize>(field: Option<Field<'_>>) -> Result<Option<TinyAsciiStr<N>>, ()> {
    let Some(field) = field else {
        return Ok(None);
    };
    let mut buf = [0u8; N];
    let mut len = 0;
    for b in field.bytes() {
        *buf.get_mut(len).ok_or(())? = b;
        len += 1;
    }
    TinyAsciiStr::try_from_utf8(&buf[..len])
        .map(Some)
        .map_err(|_| ())
}

/// Fields of an issuer's answer that are passed on to the terminal and cannot be rebuilt.
const ISSUER_DATA: &[u8] = &[54, 55];

#[derive(Debug)]
struct Entry<R> {
    fingerprint: u64,
    state: State<R>,
}

impl<R> Entry<R> {
    /// The entry's transaction: also what tells a queued eviction whether the entry was replaced since
    /// (every entry is made for a new transaction).
    fn txn(&self) -> TxnId {
        match &self.state {
            State::InFlight(txn) => *txn,
            State::Done(done) => done.txn,
        }
    }
}

/// A key in the eviction queue: 32 bytes.
#[derive(Debug, Clone, Copy)]
struct Queued {
    key: Key,
    txn: TxnId,
    /// When the entry was made, in nanoseconds after the table's epoch.
    since: u64,
}

/// What a request's key found.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// Never seen: now recorded in flight for the given transaction.
    New,
    Joined(TxnId),
    /// Completed: the transaction and what its terminal was told.
    Replay(TxnId, Answer),
}

/// The same key with different content: refused, never forwarded.
#[derive(Debug)]
pub(crate) struct Conflict;

/// The engine is the map's only writer today. It is a [`DashMap`] so that a task beside the engine (cluster
/// mode's notifications of keys claimed by other nodes) can read and claim keys without a message to it;
/// uncontended, a shard lock is one atomic operation per access.
#[derive(Debug)]
pub(crate) struct Table<R> {
    map: DashMap<Key, Entry<R>>,
    /// Entries in `map`, counted here: the map's own count reads every shard.
    len: usize,
    /// Keys in insertion order, for eviction by age and by count.
    order: Fifo<Queued>,
    /// The first entry's time: entries come oldest first (recovery's, then new ones).
    epoch: Option<Instant>,
    window: Duration,
    max_entries: usize,
}

impl<R> Table<R> {
    pub(crate) fn new(window: Duration, max_entries: usize) -> Table<R> {
        let max_entries = max_entries.max(1);
        Table {
            // Many small shards: a shard that fills moves its entries to a larger table all at once,
            // and with 256 of them each move is a 256th of the table (`benches/engine_tail.rs`).
            map: DashMap::with_shard_amount(SHARDS),
            len: 0,
            order: Fifo::default(),
            epoch: None,
            window,
            max_entries,
        }
    }

    /// Queues `key`'s entry, made for `txn` at `at`.
    fn queue(&mut self, key: Key, txn: TxnId, at: Instant) {
        let epoch = *self.epoch.get_or_insert(at);
        let since = at.saturating_duration_since(epoch).as_nanos() as u64;
        self.order.push_back(Queued { key, txn, since });
    }

    fn made(&self, queued: &Queued) -> Instant {
        self.epoch.expect("set by the first queued key") + Duration::from_nanos(queued.since)
    }

    /// The transaction of the oldest entry (skipping queued keys that were forgotten or replaced since).
    pub(crate) fn oldest(&self) -> Option<TxnId> {
        self.order.iter().find_map(|q| {
            let current = self.map.get(&q.key).is_some_and(|e| e.txn() == q.txn);
            current.then_some(q.txn)
        })
    }

    pub(crate) fn len(&self) -> usize {
        debug_assert_eq!(self.len, self.map.len(), "the count kept beside the map");
        self.len
    }

    /// Looks `key` up; a new key is recorded as in flight for `txn`.
    pub(crate) fn check(
        &mut self,
        key: Key,
        fingerprint: u64,
        txn: TxnId,
        now: Instant,
    ) -> Result<Lookup, Conflict> {
        match self.map.entry(key) {
            MapEntry::Occupied(e) => {
                let entry = e.get();
                if entry.fingerprint != fingerprint {
                    return Err(Conflict);
                }
                return Ok(match &entry.state {
                    State::InFlight(txn) => Lookup::Joined(*txn),
                    State::Done(done) => Lookup::Replay(done.txn, done.answer.clone()),
                });
            }
            MapEntry::Vacant(e) => {
                e.insert(Entry {
                    fingerprint,
                    state: State::InFlight(txn),
                });
                self.len += 1;
            }
        }
        self.queue(key, txn, now);
        Ok(Lookup::New)
    }

    /// Puts back an entry found in the journal at recovery, as first seen at `since`. Entries must come
    /// oldest first.
    pub(crate) fn restore(&mut self, key: Key, fingerprint: u64, state: State<R>, since: Instant) {
        let entry = Entry { fingerprint, state };
        let txn = entry.txn();
        if self.map.insert(key, entry).is_none() {
            self.len += 1;
        }
        self.queue(key, txn, since);
    }

    /// Completes the entry of `key` with `done`, if `done`'s transaction still holds it. In cluster
    /// mode a takeover may have put the key back meanwhile for the transaction it adopted (the one the
    /// key's claim names), whose entry stays.
    pub(crate) fn complete(&self, key: &Key, done: Done<R>) {
        if let Some(mut e) = self.map.get_mut(key)
            && e.txn() == done.txn
        {
            e.state = State::Done(Box::new(done));
        }
    }

    /// Forgets a key whose request never reached an issuer, so that a retry may go through.
    pub(crate) fn forget(&mut self, key: &Key) {
        if self.map.remove(key).is_some() {
            self.len -= 1;
        }
    }

    /// Forgets a key if transaction `txn` still holds it (see [`Idempotency::complete`]).
    pub(crate) fn release(&mut self, key: &Key, txn: TxnId) {
        if self.map.remove_if(key, |_, e| e.txn() == txn).is_some() {
            self.len -= 1;
        }
    }

    /// Applies `f` to the entry of `key` and its fingerprint, if any.
    pub(crate) fn with<T>(&self, key: &Key, f: impl FnOnce(&mut State<R>, u64) -> T) -> Option<T> {
        self.map.get_mut(key).map(|mut e| {
            let fingerprint = e.fingerprint;
            f(&mut e.state, fingerprint)
        })
    }

    /// Drops entries older than the window, then the oldest while over the cap. Entries in flight stay:
    /// forgetting one would let a retransmit be forwarded a second time. Returns how many were evicted
    /// before their window ended (the table was full): the sign that `max_entries` is too small.
    pub(crate) fn sweep(&mut self, now: Instant) -> u64 {
        let mut evicted = 0;
        let mut kept = Vec::new();
        while let Some(&queued) = self.order.front() {
            let expired = now.saturating_duration_since(self.made(&queued)) >= self.window;
            let over = self.len > self.max_entries;
            if !expired && !over {
                break;
            }
            self.order.pop_front();
            let removed = self.map.remove_if(&queued.key, |_, e| {
                e.txn() == queued.txn && matches!(e.state, State::Done(_))
            });
            self.len -= usize::from(removed.is_some());
            match removed {
                Some(_) if !expired => evicted += 1,
                Some(_) => {}
                None if self
                    .map
                    .get(&queued.key)
                    .is_some_and(|e| e.txn() == queued.txn) =>
                {
                    kept.push(queued)
                }
                None => {}
            }
        }
        for item in kept.into_iter().rev() {
            self.order.push_front(item);
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recorded fingerprint of every journal so far: a byte a call, as releases up to 0.1 hashed it.
    fn fingerprint_bytewise(class: Class, msg: &Message, key: &[u8; 16]) -> u64 {
        let mut h = SipHasher13::new_with_key(key);
        h.write_u8(class.digit());
        for &n in FINGERPRINT_FIELDS {
            match msg.get(n) {
                Some(f) => f.bytes().for_each(|b| h.write_u8(b)),
                None => h.write_u8(0xFF),
            }
            h.write_u8(0);
        }
        h.finish()
    }

    #[test]
    fn the_fingerprint_is_the_one_earlier_releases_recorded() {
        let key = *b"0123456789abcdef";
        for dialect in ["iso87ascii", "iso87bcd", "iso87ebcdic"] {
            let spec = dialects::builtin(dialect).expect("built-in");
            for (pan, amount) in [
                (Some("4761739001010010"), 2500u64),
                (None, 0),
                (Some("5413330089010012345"), 999_999_999_999),
            ] {
                let mut msg = Message::new(spec, iso8583::Mti::FINANCIAL);
                if let Some(pan) = pan {
                    msg.set(2, pan).expect("PAN");
                }
                msg.set(3, "000000").expect("DE3");
                msg.set_number(4, amount).expect("DE4");
                for class in [Class::FINANCIAL, Class::REVERSAL] {
                    assert_eq!(
                        fingerprint_as(class, &msg, &key),
                        fingerprint_bytewise(class, &msg, &key),
                        "{dialect} {pan:?}"
                    );
                }
            }
        }
    }
}
