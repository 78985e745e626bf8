//! Codec speed: decode and encode of a realistic 0200 purchase (22 fields, EMV data in DE55) in the
//! host-link dialect (iso87ascii) and the terminal dialect (iso87bcd).
//!
//! `copy frame` is the baseline measured in the same run: allocating and copying the frame's bytes, the
//! least any parser must do to own a message. Compare decode and encode against it, not against a clock.
//!
//!     cargo bench -p acquiro --bench codec

use std::hint::black_box;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use iso8583::{Message, Mti, Spec};

/// EMV data as a chip card returns it for an ARQC: 16 common tags, 139 bytes.
const EMV: &str = concat!(
    "9F2608A1B2C3D4E5F60718",
    "9F2701809F100706011203A0B8009F37041A2B3C4D",
    "9F3602012C950500800080009A032611219C01005F2A020840820219809F1A020840",
    "9F03060000000000009F02060000000025009F3303E0F8C89F34034203009F350122",
    "9F1E0831323334353637388407A0000000031010",
);

fn purchase(spec: Arc<Spec>) -> Message {
    let mut m = Message::new(spec, Mti::FINANCIAL);
    let fields: [(u8, &str); 19] = [
        (2, "4761739001010010"),
        (3, "000000"),
        (4, "000000002500"),
        (7, "1121093000"),
        (11, "000123"),
        (12, "093000"),
        (13, "1121"),
        (14, "2512"),
        (18, "5411"),
        (22, "051"),
        (23, "001"),
        (25, "00"),
        (32, "12345678901"),
        (35, "4761739001010010=25122011758928889"),
        (37, "632512000123"),
        (41, "TERM0001"),
        (42, "MERCHANT0000001"),
        (43, "ACQUIRO TEST SHOP       LONDON       GB"),
        (49, "840"),
    ];
    for (n, v) in fields {
        m.set(n, v).expect("valid purchase field");
    }
    m.set(52, [0x12, 0x34, 0x56, 0x78, 0x9A, 0xBC, 0xDE, 0xF0])
        .expect("PIN block");
    m.set(55, hex::decode(EMV).expect("hex")).expect("EMV data");
    m.set(62, "INV000123").expect("private data");
    m
}

fn codec(c: &mut Criterion) {
    for name in ["iso87ascii", "iso87bcd"] {
        let spec = dialects::builtin(name).expect("built-in dialect");
        let msg = purchase(spec.clone());
        let wire: Bytes = msg.to_bytes();
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(1));
        group.bench_function("copy frame (baseline)", |b| {
            b.iter(|| Bytes::copy_from_slice(black_box(&wire)))
        });
        group.bench_function("decode", |b| {
            b.iter(|| Message::decode(black_box(&spec), black_box(wire.clone())).expect("decodes"))
        });
        let mut buf = BytesMut::with_capacity(1024);
        group.bench_function("encode", |b| {
            b.iter(|| {
                buf.clear();
                black_box(&msg).encode(&mut buf);
                black_box(buf.len())
            })
        });
        group.bench_function("decode + read key fields", |b| {
            b.iter(|| {
                let m = Message::decode(&spec, black_box(wire.clone())).expect("decodes");
                (
                    m.stan(),
                    m.amount(),
                    m.pan().map(|p| p.len()),
                    m.terminal_id().map(|t| t.len()),
                )
            })
        });
        group.finish();
    }
    let ascii = dialects::builtin("iso87ascii").expect("built-in");
    let bcd = dialects::builtin("iso87bcd").expect("built-in");
    let from_terminal = Message::decode(&bcd, purchase(bcd.clone()).to_bytes()).expect("decodes");
    c.bench_function("translate iso87bcd -> iso87ascii", |b| {
        b.iter(|| {
            black_box(&from_terminal)
                .translate(&ascii)
                .expect("translates")
        })
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
