//! The journal records of real purchases, for the journal benches.

use std::time::SystemTime;

use engine::{Card, Original, Received, Record, Step, TxnId};
use iso8583::{Mti, Pan, ResponseCode};

/// The four records of purchase `n` (received, forwarded, answered, told): card ending in `n % 10000`,
/// terminal `n % 1000`, RRN `n`.
pub(crate) fn purchase(n: u64, at: SystemTime) -> [Record; 4] {
    let digits = format!("476173900101{:04}", n % 10_000);
    let pan = Pan::new(digits.as_bytes()).unwrap();
    let txn = TxnId(n);
    let rrn = format!("{n:012}");
    let step = |step| Record { txn, at, step };
    [
        step(Step::Received(Received {
            mti: Mti::FINANCIAL,
            card: Some(Card::new(&pan, &[7; 16])),
            amount: Some(2500),
            currency: Some(978),
            terminal: format!("T{:07}", n % 1000).into(),
            merchant: "MERCHANT0000001".into(),
            stan: (n % 999_999) as u32,
            date: 1121,
            fingerprint: n.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        })),
        step(Step::Forwarded {
            issuer: "visa".into(),
            link: engine::LinkId(0),
            upstream_stan: (n % 999_999) as u32,
            original: Original {
                mti: Mti::FINANCIAL,
                fields: [
                    (3, "000000"),
                    (4, "000000002500"),
                    (7, "1121093005"),
                    (12, "093005"),
                    (13, "1121"),
                    (22, "051"),
                    (25, "00"),
                    (32, "12345"),
                    (41, "T0000001"),
                    (42, "MERCHANT0000001"),
                    (49, "978"),
                ]
                .into_iter()
                .map(|(n, v)| (n, v.into()))
                .chain([(37, rrn.into())])
                .collect(),
            },
        }),
        step(Step::Answered {
            rc: ResponseCode::APPROVED,
            auth_code: Some("A1B2C3".into()),
        }),
        step(Step::Told {
            rc: ResponseCode::APPROVED,
        }),
    ]
}
