//! Codec speed: decode and encode of a realistic 0200 purchase (22 fields, EMV data in DE55) in the
//! host-link dialect (iso87ascii) and the terminal dialect (iso87bcd).
//!
//! `copy frame` is the baseline measured in the same run: allocating and copying the frame's bytes, the
//! least any parser must do to own a message. Compare decode and encode against it, not against a clock.
//!
//!     cargo bench -p dialects --bench codec

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use iso8583::Message;

#[path = "support/message.rs"]
mod message;

/// The switch's allocator (see `main.rs`): the codec and the baseline are measured as the switch runs them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use message::purchase;

fn codec(c: &mut Criterion) {
    for name in ["iso87ascii", "iso87bcd"] {
        let spec = dialects::builtin(name).expect("built-in dialect");
        let msg = purchase(spec);
        let wire: Bytes = msg.to_bytes();
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(1));
        group.bench_function("copy frame (baseline)", |b| {
            b.iter(|| Bytes::copy_from_slice(black_box(&wire)))
        });
        group.bench_function("decode", |b| {
            b.iter(|| Message::decode(black_box(spec), black_box(wire.clone())).expect("decodes"))
        });
        let mut buf = BytesMut::with_capacity(1024);
        group.bench_function("encode", |b| {
            b.iter(|| {
                buf.clear();
                black_box(&msg).encode(&mut buf);
                black_box(buf.len())
            })
        });
        // Values as a switch sets them (binary fields as bytes), for build + encode.
        let values: Vec<(u8, Vec<u8>)> = msg.fields().map(|f| (f.number(), f.to_vec())).collect();
        group.bench_function("build + encode", |b| {
            b.iter(|| {
                let mut m = Message::new(spec, msg.mti());
                for (n, v) in black_box(&values) {
                    m.set(*n, v).expect("valid field");
                }
                buf.clear();
                m.encode(&mut buf);
                black_box(buf.len())
            })
        });
        group.bench_function("decode + read key fields", |b| {
            b.iter(|| {
                let m = Message::decode(spec, black_box(wire.clone())).expect("decodes");
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
    let from_terminal = Message::decode(bcd, purchase(bcd).to_bytes()).expect("decodes");
    c.bench_function("translate iso87bcd -> iso87ascii", |b| {
        b.iter(|| {
            black_box(&from_terminal)
                .translate(ascii)
                .expect("translates")
        })
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
