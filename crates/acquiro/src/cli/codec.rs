//! `acquiro decode` and `acquiro encode`: hex frames ⇄ readable messages.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use bytes::BytesMut;
use iso8583::{Message, tlv};
use serde_json::Value;
use tokio_util::codec::Decoder;
use wire::{Frame, FrameCodec};

use super::json::{from_json, to_json};
use super::{DecodeArgs, EncodeArgs};

pub(super) fn decode(args: DecodeArgs) -> anyhow::Result<ExitCode> {
    let spec = dialects::load(&args.frame.spec)?;
    let mut codec = FrameCodec::new(args.frame.header)
        .with_tpdu(args.tpdu)
        .with_max_frame(usize::MAX);
    if args.unmasked {
        eprintln!("acquiro: --unmasked shows card data in clear: use it on test data only");
    }
    let lines: Box<dyn Iterator<Item = std::io::Result<String>>> = match args.hex {
        Some(hex) => Box::new(std::iter::once(Ok(hex))),
        None => Box::new(std::io::stdin().lock().lines()),
    };
    let mut out = std::io::stdout().lock();
    each_line(lines, |line| {
        let frame = read_frame(&mut codec, line)?;
        let msg = Message::decode(spec, frame.message)?;
        if args.json {
            let mut obj = to_json(&msg, args.tlv, args.unmasked);
            if let Some(tpdu) = frame.tpdu {
                obj["tpdu"] = Value::String(hex::encode_upper(tpdu.to_bytes()));
            }
            writeln!(out, "{obj}")?;
        } else {
            print_table(&mut out, &msg, args.tlv, args.unmasked)?;
        }
        Ok(())
    })
}

/// Runs `handle` on every non-empty line. A line that fails is reported with its number on stderr and
/// the run goes on; the exit code says whether any failed.
fn each_line(
    lines: impl Iterator<Item = std::io::Result<String>>,
    mut handle: impl FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<ExitCode> {
    let mut failed = 0usize;
    for (i, line) in lines.enumerate() {
        let line = line?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Err(err) = handle(line) {
            failed += 1;
            eprintln!("line {}: {err:#}", i + 1);
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn read_frame(codec: &mut FrameCodec, hex_line: &str) -> anyhow::Result<Frame> {
    let bytes = hex::decode(hex_line).context("not hex")?;
    let mut buf = BytesMut::from(&bytes[..]);
    let frame = codec
        .decode_eof(&mut buf)?
        .ok_or_else(|| anyhow!("empty frame"))?;
    if !buf.is_empty() {
        bail!("{} bytes after the frame", buf.len());
    }
    Ok(frame)
}

fn print_table(
    out: &mut impl Write,
    msg: &Message,
    tlv_list: bool,
    unmasked: bool,
) -> anyhow::Result<()> {
    writeln!(out, "MTI {}", msg.mti())?;
    for field in msg.fields() {
        let value = if unmasked {
            field.unmasked().to_string()
        } else {
            field.to_string()
        };
        writeln!(
            out,
            "{:>4}  {:<40}  {value}",
            field.number(),
            field.spec().name
        )?;
        if tlv_list && field.number() == 55 {
            for item in tlv::parse(55, &field.to_vec())? {
                let value = if unmasked {
                    hex::encode_upper(item.value)
                } else {
                    "[redacted]".into()
                };
                writeln!(
                    out,
                    "{:>10}  {:>3}  {value}",
                    hex::encode_upper(item.tag),
                    item.value.len()
                )?;
            }
        }
    }
    writeln!(out)?;
    Ok(())
}

pub(super) fn encode(args: EncodeArgs) -> anyhow::Result<ExitCode> {
    let spec = dialects::load(&args.frame.spec)?;
    let mut out = std::io::stdout().lock();
    each_line(std::io::stdin().lock().lines(), |line| {
        let value: Value = serde_json::from_str(line)?;
        let msg = from_json(spec, &value)?;
        let tpdu = match (args.tpdu, value.get("tpdu").and_then(Value::as_str)) {
            (Some(t), _) => Some(t),
            (None, Some(t)) => Some(t.parse().map_err(|e: String| anyhow!(e))?),
            (None, None) => None,
        };
        let codec = FrameCodec::new(args.frame.header)
            .with_tpdu(tpdu.is_some())
            .with_max_frame(usize::MAX);
        let mut buf = BytesMut::new();
        codec.encode_with(tpdu, &mut buf, |dst| msg.encode(dst))?;
        writeln!(out, "{}", hex::encode_upper(&buf))?;
        Ok(())
    })
}
