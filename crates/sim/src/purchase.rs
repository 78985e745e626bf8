//! Terminal requests with realistic fields: purchases, refunds, inquiries, authorizations, the terminal's
//! own reversal (whole, or partial with DE95) and its advices (a completion, an offline sale).

use iso8583::{Message, Mti, OriginalData, Spec};

/// One purchase as a POS terminal would send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purchase {
    pub mti: Mti,
    /// DE3: 000000 purchase, 200000 refund, 310000 balance inquiry...
    pub processing: String,
    pub pan: String,
    pub amount: u64,
    /// ISO 4217 numeric.
    pub currency: u16,
    pub stan: u32,
    /// DE7, MMDDhhmmss (UTC).
    pub transmission: u64,
    /// DE12 hhmmss and DE13 MMDD, the terminal's local time.
    pub local_time: u32,
    pub local_date: u16,
    /// DE37, unique per transaction: the key the issuer's ledger and the reconciliation use.
    pub rrn: String,
    pub terminal: String,
    pub merchant: String,
}

/// A test card's track 2: the PAN, a separator, expiry, service code and discretionary data.
fn track2(pan: &str) -> String {
    format!("{pan}=2812201{:0>9}", 0)
}

impl Purchase {
    /// A complete example: a 25.00 EUR purchase on a Visa test card.
    pub fn example() -> Purchase {
        Purchase {
            mti: Mti::FINANCIAL,
            processing: "000000".into(),
            pan: "4761739001010010".into(),
            amount: 2500,
            currency: 978,
            stan: 1,
            transmission: 1121093000,
            local_time: 93000,
            local_date: 1121,
            rrn: "000000000001".into(),
            terminal: "TERM0001".into(),
            merchant: "MERCHANT0000001".into(),
        }
    }

    /// The request in `spec`, with track 2 (DE35) and a PIN block (DE52) as a card-present purchase
    /// carries them: the switch must never log or keep either.
    pub fn message(&self, spec: &'static Spec) -> Result<Message, iso8583::Error> {
        let mut m = Message::new(spec, self.mti);
        m.set(2, &self.pan)?
            .set(3, &self.processing)?
            .set_number(4, self.amount)?
            .set_number(7, self.transmission)?
            .set_number(11, u64::from(self.stan))?
            .set_number(12, u64::from(self.local_time))?
            .set_number(13, u64::from(self.local_date))?
            .set(22, "051")?
            .set(25, "00")?
            .set(35, track2(&self.pan))?
            .set(37, &self.rrn)?
            .set(41, &self.terminal)?
            .set(42, &self.merchant)?
            .set_number(49, u64::from(self.currency))?
            .set(52, [0x12u8, 0x34, 0x56, 0x78, 0x9A, 0xBC, 0xDE, 0xF0])?;
        Ok(m)
    }

    /// The terminal's own reversal (0400, or 0401 for a repeat) of this purchase, with its own STAN and
    /// DE90 naming the original.
    pub fn reversal(
        &self,
        spec: &'static Spec,
        stan: u32,
        repeat: bool,
    ) -> Result<Message, iso8583::Error> {
        let mti = if repeat {
            Mti::REVERSAL_REPEAT
        } else {
            Mti::REVERSAL
        };
        self.follow_up(spec, mti, stan)
    }

    /// The terminal's partial reversal: its reversal with replacement amounts (DE95) saying that
    /// `actual` stands (a fuel pump that delivered less than it authorized).
    pub fn partial_reversal(
        &self,
        spec: &'static Spec,
        stan: u32,
        repeat: bool,
        actual: u64,
    ) -> Result<Message, iso8583::Error> {
        let mut m = self.reversal(spec, stan, repeat)?;
        m.set(95, format!("{actual:012}{:030}", 0))?;
        Ok(m)
    }

    /// The completion (0220, or 0221 for a repeat) of this pre-authorization for `amount`, with its own
    /// STAN, DE90 naming the pre-authorization and the pre-authorization's RRN.
    pub fn completion(
        &self,
        spec: &'static Spec,
        stan: u32,
        repeat: bool,
        amount: u64,
    ) -> Result<Message, iso8583::Error> {
        let mti = Mti::new(if repeat { *b"0221" } else { *b"0220" })?;
        let mut m = self.follow_up(spec, mti, stan)?;
        m.set_number(4, amount)?;
        Ok(m)
    }

    /// The terminal's next message about this transaction: `mti` under STAN `stan`, DE90 naming it,
    /// without the track and PIN block.
    fn follow_up(
        &self,
        spec: &'static Spec,
        mti: Mti,
        stan: u32,
    ) -> Result<Message, iso8583::Error> {
        let original = OriginalData {
            mti: self.mti,
            stan: self.stan,
            transmission: self.transmission,
            acquirer: 0,
            forwarding: 0,
        };
        let mut m = self.message(spec)?;
        m.set_mti(mti);
        m.remove(35);
        m.remove(52);
        m.set_number(11, u64::from(stan))?
            .set(90, original.to_digits())?;
        Ok(m)
    }

    /// Its upload (0320) in a batch upload, under STAN `stan`, for the `amount` that stands.
    pub fn upload(
        &self,
        spec: &'static Spec,
        stan: u32,
        amount: u64,
    ) -> Result<Message, iso8583::Error> {
        let mut m = self.follow_up(spec, Mti::new(*b"0320")?, stan)?;
        m.set_number(4, amount)?;
        Ok(m)
    }

    /// Whether it credits the cardholder (a refund, processing code 20).
    pub fn is_credit(&self) -> bool {
        self.processing.starts_with("20")
    }

    /// Whether it moves no money (a balance inquiry, 30 or 31).
    pub fn is_inquiry(&self) -> bool {
        self.processing.starts_with("30") || self.processing.starts_with("31")
    }
}

/// A terminal's settlement request (0500): DE3 `processing` (920000 with its batch totals, 960000
/// after a batch upload) and its totals, ISO 8583:1987 style: credits and debits counts (DE74, DE76) and
/// amounts (DE86, DE88).
pub fn settlement(
    spec: &'static Spec,
    like: &Purchase,
    stan: u32,
    processing: &str,
    [credits, debits, credit_amount, debit_amount]: [u64; 4],
) -> Result<Message, iso8583::Error> {
    let mut m = Message::new(spec, Mti::new(*b"0500")?);
    m.set(3, processing)?
        .set_number(7, like.transmission)?
        .set_number(11, u64::from(stan))?
        .set_number(12, u64::from(like.local_time))?
        .set_number(13, u64::from(like.local_date))?
        .set(41, &like.terminal)?
        .set(42, &like.merchant)?
        .set_number(74, credits)?
        .set_number(76, debits)?
        .set_number(86, credit_amount)?
        .set_number(88, debit_amount)?;
    Ok(m)
}
