//! Reversals: queued when the issuer may hold money the terminal was not told of (or that the terminal
//! reverses itself), and built from what was kept of the original. Repeating them until the issuer
//! acknowledges is the store-and-forward queue's (`owed.rs`).

use compact_str::CompactString;
use iso8583::{Message, Mti, OriginalData};

use crate::engine::Engine;
use crate::event::{Action, LinkId, Now, TxnId};
use crate::idempotency::{FINGERPRINT_FIELDS, fingerprint_as};
use crate::journal::{Original, Step};
use crate::saf::Kind;

/// Fields of the original a reversal repeats, and the replacement amounts (DE95) of a partial one,
/// which are set on the original when it is queued.
const REVERSAL_FIELDS: &[u8] = &[2, 3, 4, 7, 12, 13, 22, 25, 32, 37, 41, 42, 49, 95];
/// Fields of the original a reversal is built from: those it repeats and those its DE90 names.
/// DE15 (the settlement date) is kept too, for the settlement report.
const NEEDED_FIELDS: &[u8] = &[2, 3, 4, 7, 11, 12, 13, 15, 22, 25, 32, 33, 37, 41, 42, 49];

/// What the idempotency table keeps of an approval for a terminal's later reversal of it: how to
/// rebuild the original, and its issuer's index.
pub(crate) type Reversible = (Source, usize);

impl Engine {
    /// Queues the reversal of `txn` (once: queuing it again does nothing) and sends its first attempt,
    /// `behind` its original on that link while it is up (see `saf::Entry::behind`).
    pub(crate) fn queue_reversal(
        &mut self,
        now: Now,
        txn: TxnId,
        (original, issuer): (Message, usize),
        behind: Option<LinkId>,
        out: &mut Vec<Action>,
    ) {
        if self.saf.contains(txn) {
            return;
        }
        self.stats.reversals.queued += 1;
        Self::journal(now, txn, Step::ReversalQueued, out);
        self.owe(now, txn, Kind::Reversal, (original, issuer), behind, out);
    }

    /// Queues the reversal of `txn` that a terminal's `reversal` asks for: for part of the amount when
    /// it carries replacement amounts (DE95), which every attempt then carries with the original DE4.
    pub(crate) fn queue_terminal_reversal(
        &mut self,
        now: Now,
        txn: TxnId,
        mut original: Message,
        issuer: usize,
        reversal: &Message,
        out: &mut Vec<Action>,
    ) {
        if let Some(amounts) = replacement(reversal).filter(|_| !self.saf.contains(txn)) {
            if let Err(error) = original.set(95, amounts.as_str()) {
                tracing::warn!(%error, "the issuer dialect cannot carry replacement amounts");
            }
            Self::journal(now, txn, Step::ReversalReplaces { amounts }, out);
        }
        self.queue_reversal(now, txn, (original, issuer), None, out);
    }
}

/// What a reversal of an approved request is built from, kept while a terminal's reversal of it may
/// still come, and turned into a message only if one does.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// What the switch set on the forward; the rest comes from the terminal's reversal.
    Forwarded(Forwarded),
    /// After a restart: the forward as the journal recorded it (all but the card number).
    Recorded(Box<Original>),
}

/// The fields the switch set on a forward that its reversal repeats or names in DE90 (the RRN is kept
/// with the answer). 12 bytes instead of the fields a reversal needs, encoded (about 145 bytes), for
/// every approval in the idempotency window: the card, amount and terminal fields come from the
/// terminal's reversal, which repeats them, checked against the original's fingerprint.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Forwarded {
    mti: Mti,
    stan: u32,
    /// DE7, MMDDhhmmss.
    transmission: u32,
}

impl Source {
    /// DE90 naming the original as its issuer got it (`acquirer`: the switch's DE32).
    pub(crate) fn named(&self, acquirer: &str) -> OriginalData {
        let number = |text: Option<&str>| text.and_then(|t| t.parse().ok()).unwrap_or(0);
        match self {
            Source::Forwarded(f) => OriginalData {
                mti: f.mti,
                stan: f.stan,
                transmission: u64::from(f.transmission),
                acquirer: number(Some(acquirer)),
                forwarding: 0,
            },
            Source::Recorded(o) => OriginalData {
                mti: o.mti,
                stan: number(o.field(11)) as u32,
                transmission: number(o.field(7)),
                acquirer: number(o.field(32)),
                forwarding: number(o.field(33)),
            },
        }
    }
}

impl Forwarded {
    pub(crate) fn of(forwarded: &Message) -> Forwarded {
        Forwarded {
            mti: forwarded.mti(),
            stan: forwarded.stan().unwrap_or(0),
            transmission: forwarded
                .transmission_time()
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(0),
        }
    }
}

impl Engine {
    /// The original request of a reversal to `issuer`, as the journal recorded it.
    pub(crate) fn recorded_original(
        &self,
        original: &Original,
        issuer: usize,
    ) -> Result<Message, iso8583::Error> {
        let mut msg = Message::new(self.config.issuers[issuer].spec, original.mti);
        for (n, value) in &original.fields {
            msg.set(*n, value)?;
        }
        Ok(msg)
    }

    /// The original request, as `issuer` got it, of an approval a terminal's `reversal` reverses:
    /// from what was kept of it (`source`), what its terminal was told (RRN, and the amount of a
    /// partial approval) and its fingerprint.
    pub(crate) fn reversed_original(
        &self,
        source: Source,
        issuer: usize,
        reversal: &Message,
        (rrn, partial): (Option<&str>, Option<u64>),
        fingerprint: u64,
    ) -> Result<Message, iso8583::Error> {
        let forwarded = match source {
            Source::Recorded(original) => return self.recorded_original(&original, issuer),
            Source::Forwarded(forwarded) => forwarded,
        };
        // What the switch set on the forward, with the rest from the terminal's reversal. Unless that
        // has the original's card, processing code, amount and currency, those are left out: the
        // reversal names its original by DE90, DE37 and DE11 alone.
        let same =
            fingerprint_as(forwarded.mti.class(), reversal, &self.config.card_key) == fingerprint;
        let mut msg = reversal.translate(self.config.issuers[issuer].spec)?;
        msg.set_mti(forwarded.mti);
        if !same {
            tracing::warn!(
                "a terminal's reversal differs from its original in card, processing code, amount \
                 or currency; reversed by the original's identifiers"
            );
            for &n in FINGERPRINT_FIELDS {
                msg.remove(n);
            }
        }
        msg.set_number(11, u64::from(forwarded.stan))?
            .set_number(7, u64::from(forwarded.transmission))?
            .set(32, &self.config.acquirer_id)?;
        if let Some(rrn) = rrn {
            msg.set(37, rrn)?;
        }
        // The amount that stands at the issuer, whatever amount the terminal's reversal names.
        if let Some(amount) = partial {
            msg.set_number(4, amount)?;
        }
        Ok(msg)
    }
}

/// What the journal keeps of a forwarded request for its reversal: everything a reversal repeats but the
/// card number, and the fields DE90 names.
pub(crate) fn recorded(forwarded: &Message) -> Original {
    Original::of(forwarded, NEEDED_FIELDS)
}

/// The replacement amounts (DE95) of a terminal's partial reversal, as text. `None` without them;
/// [`replacement_unreadable`] tells the ones that do not start with the 12 digits of an amount.
pub(crate) fn replacement(reversal: &Message) -> Option<CompactString> {
    let amounts = reversal.get(95)?.as_str()?;
    let amount = amounts.as_bytes().get(..12)?;
    amount
        .iter()
        .all(u8::is_ascii_digit)
        .then(|| CompactString::from(amounts))
}

/// Whether `reversal` carries replacement amounts that cannot be read: a format error.
pub(crate) fn replacement_unreadable(reversal: &Message) -> bool {
    reversal.has(95) && replacement(reversal).is_none()
}

/// Attempt `attempt` (0 = the 0400, then 0401 repeats) of the reversal of `original`.
pub(crate) fn reversal(
    original: &Message,
    attempt: u32,
    stan: u32,
) -> Result<Message, iso8583::Error> {
    let mti = if attempt == 0 {
        Mti::REVERSAL
    } else {
        Mti::REVERSAL_REPEAT
    };
    let mut msg = original.response(REVERSAL_FIELDS)?;
    msg.set_mti(mti);
    msg.set_number(11, u64::from(stan))?;
    let data = OriginalData {
        mti: original.mti(),
        stan: original.stan().unwrap_or(0),
        transmission: original.transmission_time().unwrap_or(0),
        acquirer: original.number(32).unwrap_or(0),
        forwarding: original.number(33).unwrap_or(0),
    };
    msg.set(90, data.to_digits())?;
    Ok(msg)
}
