//! Journal records: every step of a transaction, emitted as [`Action::Journal`](crate::Action::Journal).
//!
//! A record is what the durable journal stores and what recovery reads back, so it holds nothing a
//! cardholder's data must not be kept as: the card is a [`Card`] (BIN, last four digits and a keyed hash),
//! and PIN blocks, track data, CVV and EMV data never enter a record.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use compact_str::CompactString;
use iso8583::{Mti, Pan, ResponseCode};
use serde::{Deserialize, Serialize};
use siphasher::sip128::{Hasher128, SipHasher13};

use crate::books::Totals;
use crate::event::{LinkId, TxnId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub txn: TxnId,
    /// Wall-clock time, microseconds since the Unix epoch in storage.
    #[serde(with = "micros")]
    pub at: SystemTime,
    pub step: Step,
}

/// A card as the journal may keep it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Card {
    /// The first six digits.
    pub bin: CompactString,
    pub last4: CompactString,
    /// Keyed hash (SipHash-1-3, 128 bits, hex) of the full number: finds every transaction of one card
    /// for whoever holds the key, and tells nothing to whoever does not.
    pub hash: String,
}

impl Card {
    pub fn new(pan: &Pan<'_>, key: &[u8; 16]) -> Card {
        let text = CompactString::from_utf8_lossy;
        let mut h = SipHasher13::new_with_key(key);
        std::hash::Hasher::write(&mut h, pan.expose());
        Card {
            bin: text(pan.prefix(6)),
            last4: text(pan.last4()),
            hash: hex128(h.finish128().as_u128()),
        }
    }
}

/// Lower-case hex, 32 digits, as `format!("{:032x}")` writes it: 597 instructions a card's hash
/// through `faster-hex`, 1 243 through the formatter, 1 452 through `hex` (callgrind).
fn hex128(value: u128) -> String {
    faster_hex::hex_string(&value.to_be_bytes())
}

impl std::fmt::Display for Card {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}…{}", self.bin, self.last4)
    }
}

/// The identity of a terminal request, recorded once when it arrives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    #[serde(with = "code")]
    pub mti: Mti,
    pub card: Option<Card>,
    pub amount: Option<u64>,
    pub currency: Option<u16>,
    pub terminal: CompactString,
    pub merchant: CompactString,
    pub stan: u32,
    /// Transaction date MMDD the idempotency key uses.
    pub date: u16,
    /// Keyed hash of what a retransmit repeats unchanged: recovery rebuilds the duplicate check from it.
    pub fingerprint: u64,
}

/// One step of a transaction.
///
/// **The on-disk format.** The journal stores records with postcard, which writes a variant as its
/// index and a struct as its fields one after the other, without names: the order of these variants
/// and the fields of every type a record holds are the format of every journal ever written. A new
/// kind of step is a new variant at the end; a step that needs another field is a new variant too,
/// since records written without the field would no longer decode. Never reorder, remove or retype
/// anything. A release must read what an earlier one wrote (`crates/tranlog/tests/format.rs` reads
/// the journal release 0.1.0 wrote, and fails on a reorder), or carry a versioned migration with its
/// own fixture test. The frame around each record has its own version (`crates/tranlog/src/frame.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    Received(Received),
    /// Refused before routing (RC 30, 94...).
    Rejected {
        #[serde(with = "code")]
        rc: ResponseCode,
    },
    /// A retransmit joined the transaction in flight.
    Joined,
    /// A terminal connection waiting for the answer closed.
    Disconnected,
    /// A retransmit got the stored answer again.
    Replayed {
        #[serde(with = "code")]
        rc: ResponseCode,
    },
    /// Written before the request leaves (write-ahead).
    Forwarded {
        issuer: CompactString,
        link: LinkId,
        upstream_stan: u32,
        /// The request as the issuer gets it, without the card number: its RRN, and what a reversal
        /// repeats after a restart (see [`Original`]).
        original: Original,
    },
    /// The issuer answered in time.
    Answered {
        #[serde(with = "code")]
        rc: ResponseCode,
        auth_code: Option<CompactString>,
    },
    TimedOut,
    /// The issuer answered after the timeout; the reversal stands.
    LateAnswer {
        #[serde(with = "code")]
        rc: ResponseCode,
    },
    /// The terminal was told `rc`.
    Told {
        #[serde(with = "code")]
        rc: ResponseCode,
    },
    /// No terminal connection was left to tell.
    Undeliverable {
        #[serde(with = "code")]
        rc: ResponseCode,
    },
    /// Forwarded with no outcome when the switch stopped: found at recovery and reversed.
    InDoubt,
    ReversalQueued,
    ReversalSent {
        attempt: u32,
        link: LinkId,
        upstream_stan: u32,
    },
    ReversalAcknowledged {
        #[serde(with = "code")]
        rc: ResponseCode,
    },
    /// The reversal was never acknowledged before its expiry: it needs manual action.
    ReversalExpired {
        attempts: u32,
    },
    /// Cluster mode: the request's key is held by transaction `txn` of node `node`; this one was not
    /// forwarded, and what follows answers from the holder's records.
    HeldElsewhere {
        node: CompactString,
        txn: TxnId,
    },
    /// Cluster mode: this node took over transaction `txn` of node `node`, whose lease lapsed; the
    /// records that follow copy that transaction's, then carry on its work (its reversal).
    Adopted {
        node: CompactString,
        txn: TxnId,
    },
    /// The issuer answered the reversal with a code its acknowledgement policy says to try again on
    /// (a system error, say): the reversal stands queued and is repeated.
    ReversalRefused {
        #[serde(with = "code")]
        rc: ResponseCode,
    },
    /// The issuer approved part of the amount requested (RC 10, recorded just before): what stands at
    /// the issuer, what the terminal is told, and what a reversal names.
    ApprovedAmount {
        amount: u64,
    },
    /// The terminal reversed only part of it: the replacement amounts (DE95, its first 12 digits the
    /// amount that stands) every attempt of the reversal carries, recorded just before it is queued.
    ReversalReplaces {
        amounts: CompactString,
    },
    /// A terminal's advice (0120, 0220) was accepted and queued for issuer `issuer`: the terminal is
    /// told so once this record is durable, and from then on the switch owes the issuer the advice,
    /// as kept here (without the card number; see [`Original`]).
    AdviceQueued {
        issuer: CompactString,
        advice: Original,
    },
    AdviceSent {
        attempt: u32,
        link: LinkId,
        upstream_stan: u32,
    },
    AdviceAcknowledged {
        #[serde(with = "code")]
        rc: ResponseCode,
    },
    /// Answered with a code the issuer's policy retries: the advice stays queued.
    AdviceRefused {
        #[serde(with = "code")]
        rc: ResponseCode,
    },
    /// Never acknowledged before its expiry: it needs manual action.
    AdviceExpired {
        attempts: u32,
    },
    /// A terminal's settlement request (0500, DE3 92) whose totals for its open batch (`theirs`) differ
    /// from the switch's record of that batch (`ours`): RC 95, a batch upload follows. (In balance, the
    /// batch closes at once: one `BatchClosed`, so that no crash can keep half of the decision.)
    BatchOutOfBalance {
        terminal: CompactString,
        merchant: CompactString,
        ours: Totals,
        theirs: Totals,
    },
    /// One transaction of the batch the terminal uploaded (0320): its STAN and amount, and whether the
    /// switch's record of the batch has it with that amount.
    BatchUploaded {
        terminal: CompactString,
        merchant: CompactString,
        stan: u32,
        amount: u64,
        found: bool,
    },
    /// The batch is closed with the switch's totals of it: in balance (no discrepancies), or after an
    /// upload (0500, DE3 96) with the number of discrepancies it left, each recorded in a
    /// `BatchUploaded` or in the switch's batch.
    BatchClosed {
        terminal: CompactString,
        merchant: CompactString,
        totals: Totals,
        uploaded: bool,
        discrepancies: u32,
    },
    /// Cluster mode: what the store keeps in place of a `Forwarded` record committed with its
    /// transaction's claim when the claim is lost: the forward never left (the write-ahead gate
    /// withdrew it), and the records that follow answer from the key's holder.
    Withdrawn,
}

/// A forwarded request's MTI and the fields a reversal repeats, as text. The card number is left out: a
/// reversal rebuilt from the journal names its original by DE90, DE37 and DE11 instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Original {
    #[serde(with = "code")]
    pub mti: Mti,
    /// Inline strings (up to 24 bytes, which every such field fits): one allocation per record rather
    /// than one per field, each freed on the journal's thread.
    pub fields: Vec<(u8, CompactString)>,
}

/// Fields a record never holds: the card number, its expiry and track data, the PIN block, EMV data.
const NEVER_RECORDED: &[u8] = &[2, 14, 35, 45, 52, 55];

impl Original {
    /// What the journal keeps of `msg`: its MTI and those of `fields` it has, as text, card data left
    /// out.
    pub(crate) fn of(msg: &iso8583::Message, fields: &[u8]) -> Original {
        // Sized once: collecting a filter grows the vector by doubling from four.
        let mut kept = Vec::with_capacity(fields.len());
        kept.extend(
            fields
                .iter()
                .filter(|n| !NEVER_RECORDED.contains(n))
                .filter_map(|&n| {
                    let field = msg.get(n)?;
                    let value = match field.as_str() {
                        Some(text) => CompactString::from(text),
                        None => CompactString::from_utf8_lossy(&field.to_vec()),
                    };
                    Some((n, value))
                }),
        );
        let fields = kept;
        Original {
            mti: msg.mti(),
            fields,
        }
    }

    /// Field `n`, if the request had it.
    pub fn field(&self, n: u8) -> Option<&str> {
        self.fields
            .iter()
            .find(|(number, _)| *number == n)
            .map(|(_, v)| v.as_str())
    }

    /// The retrieval reference number (DE37): the switch sets one on every forwarded request.
    pub fn rrn(&self) -> Option<&str> {
        self.field(37)
    }

    /// Sets field `n`, replacing the value it had.
    pub(crate) fn set(&mut self, n: u8, value: CompactString) {
        match self.fields.iter_mut().find(|(number, _)| *number == n) {
            Some((_, v)) => *v = value,
            None => self.fields.push((n, value)),
        }
    }
}

/// A record's time as it is stored: microseconds since the epoch (0 before it, saturating far after).
pub fn stored_micros(at: SystemTime) -> u64 {
    let us = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    u64::try_from(us).unwrap_or(u64::MAX)
}

/// Wall-clock times as microseconds since the epoch.
mod micros {
    use super::*;

    pub(super) fn serialize<S: serde::Serializer>(
        at: &SystemTime,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(stored_micros(*at))
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<SystemTime, D::Error> {
        Ok(UNIX_EPOCH + Duration::from_micros(u64::deserialize(d)?))
    }
}

/// MTIs and response codes as their characters.
mod code {
    use std::borrow::Cow;

    use super::*;

    pub(super) trait Code: Sized {
        fn text(&self) -> &str;
        fn parse(s: &str) -> Option<Self>;
    }

    impl Code for Mti {
        fn text(&self) -> &str {
            self.as_str()
        }
        fn parse(s: &str) -> Option<Mti> {
            Mti::new(s.as_bytes().try_into().ok()?).ok()
        }
    }

    impl Code for ResponseCode {
        fn text(&self) -> &str {
            self.as_str()
        }
        fn parse(s: &str) -> Option<ResponseCode> {
            Some(ResponseCode(s.as_bytes().try_into().ok()?))
        }
    }

    pub(super) fn serialize<C: Code, S: serde::Serializer>(c: &C, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(c.text())
    }

    pub(super) fn deserialize<'de, C: Code, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<C, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        C::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("bad code {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_card_keeps_bin_last4_and_a_keyed_hash_only() {
        let pan = Pan::new(b"4111111111111111").unwrap();
        let card = Card::new(&pan, &[7; 16]);
        assert_eq!((card.bin.as_str(), card.last4.as_str()), ("411111", "1111"));
        assert_eq!(card.to_string(), "411111…1111");
        assert_eq!(card.hash.len(), 32);
        assert_eq!(card, Card::new(&pan, &[7; 16]), "the hash is stable");
        assert_ne!(
            card.hash,
            Card::new(&pan, &[8; 16]).hash,
            "and depends on the key"
        );
        let json = serde_json::to_string(&card).unwrap();
        assert!(!json.contains("4111111111111111"));
        // What every earlier release recorded for this card under this key: a card's transactions
        // are found by their hash across releases.
        assert_eq!(card.hash, "f56d391dbfc06ae9258a476b00ebeb60");
    }

    proptest::proptest! {
        #[test]
        fn the_hash_is_written_as_the_formatter_writes_it(value: u128) {
            proptest::prop_assert_eq!(hex128(value), format!("{value:032x}"));
        }
    }

    #[test]
    fn records_read_back_as_written_and_codes_are_text() {
        let record = Record {
            txn: TxnId(9),
            at: UNIX_EPOCH + Duration::from_micros(1_795_253_405_123_456),
            step: Step::Answered {
                rc: ResponseCode::APPROVED,
                auth_code: Some("A1B2C3".into()),
            },
        };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            json,
            r#"{"txn":9,"at":1795253405123456,"step":{"Answered":{"rc":"00","auth_code":"A1B2C3"}}}"#
        );
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), record);
    }
}
