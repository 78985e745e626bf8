use bytes::Bytes;
use iso8583::{Message, Mti};
use std::hint::black_box;
use std::time::Instant;
#[path = "../../../benches/support/message.rs"]
mod message;
fn time(label: &str, f: impl Fn()) {
    let mut best = f64::MAX;
    for _ in 0..15 {
        let t = Instant::now();
        for _ in 0..200_000 {
            f();
        }
        best = best.min(t.elapsed().as_nanos() as f64 / 200_000.0);
    }
    println!("{label:40} {best:7.1} ns");
}
fn main() {
    for name in ["iso87ascii", "iso87bcd"] {
        let spec = dialects::builtin(name).unwrap();
        let full: Bytes = message::purchase(spec).to_bytes();
        let mut small = Message::new(spec, Mti::FINANCIAL);
        small.set(11, "000123").unwrap();
        let small: Bytes = small.to_bytes();
        time(&format!("{name} copy"), || {
            black_box(Bytes::copy_from_slice(black_box(&full)));
        });
        time(&format!("{name} bytes clone"), || {
            black_box(black_box(&full).clone());
        });
        time(&format!("{name} decode 1 field"), || {
            black_box(Message::decode(black_box(spec), black_box(small.clone())).unwrap());
        });
        time(&format!("{name} decode 22 fields"), || {
            black_box(Message::decode(black_box(spec), black_box(full.clone())).unwrap());
        });
    }
}
