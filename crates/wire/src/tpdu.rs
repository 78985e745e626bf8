//! The 5-byte Transport Protocol Data Unit used by POS terminals on dial-up and NII-routed links.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// TPDU: an id byte (0x60 transaction, 0x68 for some networks), destination and source addresses (NII).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tpdu {
    pub id: u8,
    pub destination: [u8; 2],
    pub source: [u8; 2],
}

impl Tpdu {
    pub const LEN: usize = 5;

    pub(crate) fn parse(bytes: &[u8]) -> Result<Tpdu, Error> {
        match bytes {
            [id @ (0x60 | 0x68), d0, d1, s0, s1] => Ok(Tpdu {
                id: *id,
                destination: [*d0, *d1],
                source: [*s0, *s1],
            }),
            [id, ..] => Err(Error::BadTpdu(*id)),
            [] => Err(Error::ShortTpdu { len: 0 }),
        }
    }

    pub fn to_bytes(self) -> [u8; 5] {
        let [d0, d1] = self.destination;
        let [s0, s1] = self.source;
        [self.id, d0, d1, s0, s1]
    }

    /// The TPDU of the answer: destination and source swapped.
    pub fn response(self) -> Tpdu {
        Tpdu {
            id: self.id,
            destination: self.source,
            source: self.destination,
        }
    }
}

impl Default for Tpdu {
    fn default() -> Self {
        Tpdu {
            id: 0x60,
            destination: [0, 0],
            source: [0, 0],
        }
    }
}

impl fmt::Debug for Tpdu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tpdu(")?;
        self.to_bytes()
            .iter()
            .try_for_each(|b| write!(f, "{b:02X}"))?;
        write!(f, ")")
    }
}

/// Ten hex digits, e.g. `6000030000`.
impl FromStr for Tpdu {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let digits: Option<Vec<u8>> = (0..s.len())
            .step_by(2)
            .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect();
        match digits.as_deref() {
            Some(bytes) if s.len() == 10 => Tpdu::parse(bytes).map_err(|e| e.to_string()),
            _ => Err(format!("TPDU must be 10 hex digits, got {s:?}")),
        }
    }
}
