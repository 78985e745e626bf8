//! `acquiro tranlog`: the journal as evidence. `show` gives the timeline of matching transactions,
//! `export` every record for a bank's own tools, `verify` checks every checksum and the chain.
//!
//! Each command reads the journal without changing it; a torn tail (from a crash) is reported, and cut
//! off only when the switch starts.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use engine::{Record, Step, TxnId};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tranlog::{Mode, OnCorrupt};

#[derive(Debug, Subcommand)]
pub(crate) enum TranlogCommand {
    /// The full timeline of each matching transaction: every step, with times, codes, issuer and link,
    /// and every reversal attempt.
    Show(ShowArgs),
    /// Every record (in a time range) as JSON lines or CSV.
    Export(ExportArgs),
    /// Check every record's checksum, the sequence and the chain; exit 1 on any problem.
    Verify(DirArgs),
}

#[derive(Debug, Args)]
pub(crate) struct DirArgs {
    /// The journal directory (journal.dir of the switch).
    #[arg(long)]
    journal_dir: PathBuf,
}

/// A time range, RFC 3339 (`2026-11-21T09:00:00Z`).
#[derive(Debug, Args)]
pub(crate) struct Range {
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    from: Option<SystemTime>,
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    to: Option<SystemTime>,
}

impl Range {
    fn contains(&self, at: SystemTime) -> bool {
        self.from.is_none_or(|f| at >= f) && self.to.is_none_or(|t| at < t)
    }
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// Retrieval reference number (DE37).
    #[arg(long)]
    rrn: Option<String>,
    /// Terminal id (DE41), with --stan.
    #[arg(long, requires = "stan")]
    terminal: Option<String>,
    #[arg(long, requires = "terminal")]
    stan: Option<u32>,
    /// Transaction date MMDD, with --terminal and --stan.
    #[arg(long, requires = "stan")]
    date: Option<u16>,
    /// Last four digits of the card, within --from/--to.
    #[arg(long)]
    pan_last4: Option<String>,
    #[command(flatten)]
    range: Range,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Jsonl,
    Csv,
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    dir: DirArgs,
    #[arg(long, value_enum, default_value = "jsonl")]
    format: Format,
    #[command(flatten)]
    range: Range,
}

pub(crate) fn run(command: TranlogCommand) -> anyhow::Result<ExitCode> {
    match command {
        TranlogCommand::Show(args) => show(args),
        TranlogCommand::Export(args) => export(args),
        TranlogCommand::Verify(args) => verify(args),
    }
}

/// Reads every record without changing the journal; corrupt records are reported and skipped.
fn read(
    dir: &DirArgs,
    each: impl FnMut(&tranlog::Position, Record),
) -> anyhow::Result<tranlog::Scanned> {
    anyhow::ensure!(
        dir.journal_dir.is_dir(),
        "{}: no such journal directory",
        dir.journal_dir.display()
    );
    let mode = Mode {
        repair: false,
        on_corrupt: OnCorrupt::Skip,
    };
    tranlog::scan(&dir.journal_dir, mode, each).context("reading the journal")
}

fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let wanted = |record: &Record| match &record.step {
        Step::Forwarded { original, .. } => {
            args.rrn.is_some() && args.rrn.as_deref() == original.rrn()
        }
        Step::Received(r) => {
            let by_terminal = args.terminal.as_ref().is_some_and(|t| {
                *t == r.terminal
                    && args.stan == Some(r.stan)
                    && args.date.is_none_or(|d| d == r.date)
            });
            let by_card = args.pan_last4.as_ref().is_some_and(|l| {
                r.card.as_ref().is_some_and(|c| c.last4 == *l) && args.range.contains(record.at)
            });
            by_terminal || by_card
        }
        _ => false,
    };
    anyhow::ensure!(
        args.rrn.is_some() || args.terminal.is_some() || args.pan_last4.is_some(),
        "give --rrn, --terminal with --stan, or --pan-last4"
    );
    // Two passes: which transactions match, then every record of theirs (a reversal can come hours later).
    let mut txns: HashSet<TxnId> = HashSet::new();
    read(&args.dir, |_, record| {
        if wanted(&record) {
            txns.insert(record.txn);
        }
    })?;
    let mut timeline: Vec<Record> = Vec::new();
    read(&args.dir, |_, record| {
        if txns.contains(&record.txn) {
            timeline.push(record);
        }
    })?;
    timeline.sort_by_key(|r| r.txn);
    let mut out = std::io::stdout().lock();
    let mut current = None;
    for record in &timeline {
        if current != Some(record.txn) {
            current = Some(record.txn);
            writeln!(out, "transaction {}", record.txn.0)?;
        }
        writeln!(
            out,
            "  {}  {}",
            rfc3339(record.at),
            serde_json::to_string(&record.step)?
        )?;
    }
    if txns.is_empty() {
        eprintln!("no matching transaction");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if let Format::Csv = args.format {
        writeln!(out, "txn,at,step,detail")?;
    }
    let mut failed = None;
    read(&args.dir, |_, record| {
        if failed.is_some() || !args.range.contains(record.at) {
            return;
        }
        let written = match args.format {
            Format::Jsonl => serde_json::to_string(&record)
                .map_err(std::io::Error::other)
                .and_then(|line| writeln!(out, "{line}")),
            Format::Csv => csv_line(&record).and_then(|line| writeln!(out, "{line}")),
        };
        failed = written.err();
    })?;
    if let Some(error) = failed {
        return Err(error.into());
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `txn,at,step,detail`: the step's name, and its fields as JSON in a quoted cell.
fn csv_line(record: &Record) -> std::io::Result<String> {
    let step = serde_json::to_value(&record.step).map_err(std::io::Error::other)?;
    let (name, detail) = match &step {
        serde_json::Value::String(name) => (name.clone(), String::new()),
        serde_json::Value::Object(map) => map
            .iter()
            .next()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .unwrap_or_default(),
        other => (other.to_string(), String::new()),
    };
    Ok(format!(
        "{},{},{},\"{}\"",
        record.txn.0,
        rfc3339(record.at),
        name,
        detail.replace('"', "\"\"")
    ))
}

fn verify(args: DirArgs) -> anyhow::Result<ExitCode> {
    let scanned = read(&args, |_, _| {})?;
    println!(
        "{} segment(s), {} record(s), last sequence number {}",
        scanned.segments.len(),
        scanned.records,
        scanned.last_seq
    );
    if let Some(at) = &scanned.torn {
        println!(
            "torn record at the end ({at}): a crash during a write; cut off at the next start"
        );
    }
    for p in &scanned.problems {
        println!("PROBLEM {}: {}", p.at, p.what);
    }
    if scanned.problems.is_empty() {
        println!("every checksum and the chain of records are intact");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{} problem(s)", scanned.problems.len());
        Ok(ExitCode::from(1))
    }
}

fn rfc3339(at: SystemTime) -> String {
    OffsetDateTime::from(at)
        .format(&Rfc3339)
        .unwrap_or_else(|_| format!("{at:?}"))
}
