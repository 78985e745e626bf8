//! The codec beside `iso_8583_rs` (the fastest published Rust ISO 8583 crate we know of), on
//! byte-identical frames of the one format that crate reads: ASCII MTI, hex bitmap, ASCII fields
//! (our `iso87ascii-hexbitmap` dialect). Two messages: a 13-field 0200 and the 22-field purchase with
//! EMV data (DE55) of the other benches. Each operation is measured for both in the same run:
//!
//! - decode: a frame to a message whose fields can be read (theirs borrows the buffer; ours owns it);
//! - typed reads: amount (DE4), STAN (DE11) and the PAN's length (DE2) of a decoded message;
//! - encode: a message built before the timing, written into a reused buffer;
//! - build + encode: every field set from its value, then written.
//!
//! Both check every field's length and character set on decode and on set. Ours checks more (the hex
//! digits of binary fields, `z` and `x+n` characters, a tertiary bitmap's fields).
//!
//!     cargo bench -p dialects --bench codec_peer

use std::collections::HashMap;
use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use iso_8583_rs::specfile::{FieldDescription, Spec as TheirSpec};
use iso8583::{FieldType, LengthKind, Message, Mti, Spec};

#[path = "support/message.rs"]
mod message;

/// The switch's allocator (see `main.rs`): each side is measured as it would run in the switch.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The same dialect in `iso_8583_rs`'s terms, field by field, so that both read the same frames.
fn their_spec(ours: &Spec) -> iso_8583_rs::CompiledSpec {
    let fields = ours
        .fields()
        .filter(|&(n, _)| (2..=128).contains(&n) && n != 65)
        .map(|(n, f)| {
            let content = match f.kind {
                FieldType::N => "n",
                FieldType::An => "an",
                FieldType::Ans => "ans",
                // Not checked by that crate.
                FieldType::B | FieldType::Z | FieldType::Xn => "b",
            };
            let len_type = match f.length {
                LengthKind::Fixed => "fixed",
                LengthKind::Ll => "llvar",
                LengthKind::Lll => "lllvar",
                LengthKind::Llll => "llllvar",
            };
            let description = FieldDescription {
                content_type: content.into(),
                max_len: usize::from(f.max),
                min_len: 0,
                len_type: len_type.into(),
                label: String::new(),
            };
            (i64::from(n), description)
        })
        .collect::<HashMap<_, _>>();
    iso_8583_rs::CompiledSpec::compile(&TheirSpec { fields }).expect("their spec compiles")
}

/// A 13-field 0200, what a magnetic-stripe purchase without PIN carries: the purchase without its
/// card-present extras (expiry, track 2, PIN block, EMV data and the rest).
fn short(spec: &'static Spec) -> Message {
    const KEPT: [u8; 13] = [2, 3, 4, 7, 11, 12, 13, 22, 25, 37, 41, 42, 49];
    let mut m = message::purchase(spec);
    let all: Vec<u8> = m.fields().map(|f| f.number()).collect();
    for n in all.into_iter().filter(|n| !KEPT.contains(n)) {
        m.remove(n);
    }
    m
}

fn codec_peer(c: &mut Criterion) {
    let spec = dialects::builtin("iso87ascii-hexbitmap").expect("built-in dialect");
    let theirs = their_spec(spec);
    for (name, msg) in [
        ("0200 13 fields", short(spec)),
        ("0200 22 fields, DE55", message::purchase(spec)),
    ] {
        let wire: Bytes = msg.to_bytes();
        // Values as each side takes them: ours logical (binary fields as bytes), theirs as on the wire.
        let logical: Vec<(u8, Vec<u8>)> = msg.fields().map(|f| (f.number(), f.to_vec())).collect();
        let on_wire: Vec<(usize, &[u8])> = msg
            .fields()
            .map(|f| (usize::from(f.number()), f.wire()))
            .collect();
        let mut built = iso_8583_rs::Builder::new(&theirs, b"0200").expect("mti");
        for &(n, v) in &on_wire {
            built.set(n, v).expect("their set");
        }
        let mut out = Vec::with_capacity(1024);
        built.pack_into(&mut out);
        assert_eq!(out, &wire[..], "both write the same frame");
        let parsed = iso_8583_rs::Message::parse(&theirs, &wire).expect("they read our frame");
        let decoded = Message::decode(spec, wire.clone()).expect("decodes");
        assert_eq!(
            (parsed.get_u64(4), parsed.get_u64(11)),
            (decoded.amount(), decoded.stan().map(u64::from))
        );

        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(1));
        group.bench_function("copy frame (baseline)", |b| {
            b.iter(|| Bytes::copy_from_slice(black_box(&wire)))
        });
        // Ours takes the frame it keeps: the switch hands it over (moved, never cloned), so the
        // bench's copy of the handle is made outside the timing. Dropping the message (the frame's
        // count and the field table) is timed; theirs has nothing to drop.
        group.bench_function(BenchmarkId::new("decode", "acquiro"), |b| {
            b.iter_batched(
                || wire.clone(),
                |frame| drop(Message::decode(spec, black_box(frame)).expect("decodes")),
                BatchSize::SmallInput,
            )
        });
        group.bench_function(BenchmarkId::new("decode", "iso_8583_rs"), |b| {
            b.iter(|| iso_8583_rs::Message::parse(&theirs, black_box(&wire)).expect("parses"))
        });
        group.bench_function(BenchmarkId::new("typed reads", "acquiro"), |b| {
            b.iter(|| {
                let m = black_box(&decoded);
                (m.amount(), m.stan(), m.pan().map(|p| p.len()))
            })
        });
        group.bench_function(BenchmarkId::new("typed reads", "iso_8583_rs"), |b| {
            b.iter(|| {
                let m = black_box(&parsed);
                (m.get_u64(4), m.get_u64(11), m.get(2).map(<[u8]>::len))
            })
        });
        let mut buf = BytesMut::with_capacity(1024);
        group.bench_function(BenchmarkId::new("encode", "acquiro"), |b| {
            b.iter(|| {
                buf.clear();
                black_box(&msg).encode(&mut buf);
                black_box(buf.len())
            })
        });
        group.bench_function(BenchmarkId::new("encode", "iso_8583_rs"), |b| {
            b.iter(|| {
                out.clear();
                black_box(&built).pack_into(&mut out);
                black_box(out.len())
            })
        });
        group.bench_function(BenchmarkId::new("build + encode", "acquiro"), |b| {
            b.iter(|| {
                let mut m = Message::new(spec, Mti::FINANCIAL);
                for (n, v) in black_box(&logical) {
                    m.set(*n, v).expect("valid field");
                }
                buf.clear();
                m.encode(&mut buf);
                black_box(buf.len())
            })
        });
        group.bench_function(BenchmarkId::new("build + encode", "iso_8583_rs"), |b| {
            b.iter(|| {
                let mut m = iso_8583_rs::Builder::new(&theirs, b"0200").expect("mti");
                for &(n, v) in black_box(&on_wire) {
                    m.set(n, v).expect("valid field");
                }
                out.clear();
                m.pack_into(&mut out);
                black_box(out.len())
            })
        });
        group.finish();
    }
}

criterion_group!(benches, codec_peer);
criterion_main!(benches);
