//! `acquiro settlement`: what each merchant and terminal is owed, folded from the journal (every node's
//! records with `--database`) by the same books the switch keeps of each terminal's open batch; and
//! `acquiro settlement reconcile`, every difference by RRN against the issuer's (or network's) list of
//! what it settled.
//!
//! The issuer file is CSV with a header line `rrn,amount`: one line per transaction the issuer settled,
//! the amount signed in minor units (positive: the cardholder was debited; negative: credited, a refund).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use engine::{Books, Closed, Cutover, Settled};
use serde::Serialize;

use super::tranlog::{DirArgs, each_record};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct SettlementArgs {
    #[command(subcommand)]
    command: Option<SettlementCommand>,
    #[command(flatten)]
    report: ReportArgs,
}

#[derive(Subcommand)]
enum SettlementCommand {
    /// Every difference, by RRN, between the settlement and the issuer's file; exit 1 if any.
    Reconcile(ReconcileArgs),
}

#[derive(Args)]
struct ReportArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// Only this business date (YYYY-MM-DD).
    #[arg(long, value_parser = date)]
    date: Option<time::Date>,
    /// The switch's `settlement.cutover` (HH:MM, UTC): when the business date turns.
    #[arg(long, default_value = "00:00")]
    cutover: Cutover,
    #[arg(long, value_enum, default_value = "csv")]
    format: Format,
}

#[derive(Args)]
struct ReconcileArgs {
    #[command(flatten)]
    report: ReportArgs,
    /// The issuer's settlement: CSV `rrn,amount` (signed minor units). `acquiro sim issuer
    /// --settlement FILE` writes one.
    #[arg(long)]
    issuer_file: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Csv,
    Json,
}

fn date(s: &str) -> Result<time::Date, String> {
    let bad = || format!("{s:?} is not a date YYYY-MM-DD");
    let mut parts = s.splitn(3, '-').map(str::parse::<u16>);
    let (Some(Ok(y)), Some(Ok(m)), Some(Ok(d))) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let month = time::Month::try_from(u8::try_from(m).map_err(|_| bad())?).map_err(|_| bad())?;
    time::Date::from_calendar_date(i32::from(y), month, u8::try_from(d).map_err(|_| bad())?)
        .map_err(|e| format!("{s:?}: {e}"))
}

pub(crate) fn run(args: SettlementArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(SettlementCommand::Reconcile(args)) => reconcile(args),
        None => report(args.report),
    }
}

/// The books of the journal, and the financial transactions of the business date asked for.
fn settled(args: &ReportArgs) -> anyhow::Result<(Vec<Settled>, Vec<Closed>)> {
    let mut books = Books::default();
    each_record(&args.dir, |node, record| books.add(node, &record))?;
    let on_date = |at| {
        args.date
            .is_none_or(|d| args.cutover.business_date(at) == d)
    };
    let settled = books
        .settled()
        .into_iter()
        .filter(|s| on_date(s.at))
        .collect();
    let closed = books
        .closed()
        .iter()
        .filter(|c| on_date(c.at))
        .cloned()
        .collect();
    Ok((settled, closed))
}

/// One merchant's terminal in the report.
#[derive(Debug, Default, Serialize)]
struct Row {
    merchant: String,
    terminal: String,
    debits: u64,
    debit_amount: u64,
    credits: u64,
    credit_amount: u64,
    /// Approved transactions reversed afterwards (wholly, or in part), and the amount reversed.
    reversals: u64,
    reversed_amount: u64,
    /// Debits minus credits: what the merchant is owed.
    net: i64,
    /// `open`, `in balance`, or `settled after upload` with its discrepancies.
    settlement: String,
    discrepancies: u32,
}

fn report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let (settled, closed) = settled(&args)?;
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    for s in &settled {
        let row = rows
            .entry((s.merchant.to_string(), s.terminal.to_string()))
            .or_insert_with(|| Row {
                merchant: s.merchant.to_string(),
                terminal: s.terminal.to_string(),
                settlement: "open".into(),
                ..Row::default()
            });
        if s.stands < s.amount {
            (row.reversals, row.reversed_amount) = (
                row.reversals + 1,
                row.reversed_amount + (s.amount - s.stands),
            );
        }
        if s.stands > 0 {
            match s.credit {
                true => {
                    (row.credits, row.credit_amount) =
                        (row.credits + 1, row.credit_amount + s.stands)
                }
                false => {
                    (row.debits, row.debit_amount) = (row.debits + 1, row.debit_amount + s.stands)
                }
            }
        }
        row.net += s.net();
    }
    for c in &closed {
        let row = rows
            .entry((c.merchant.to_string(), c.terminal.to_string()))
            .or_insert_with(|| Row {
                merchant: c.merchant.to_string(),
                terminal: c.terminal.to_string(),
                ..Row::default()
            });
        row.discrepancies += c.discrepancies;
        row.settlement = match (c.uploaded, row.discrepancies) {
            (false, 0) => "in balance".into(),
            (_, 0) => "settled after upload".into(),
            (_, n) => format!("settled after upload, {n} discrepancies"),
        };
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match args.format {
        Format::Json => {
            let rows: Vec<&Row> = rows.values().collect();
            serde_json::to_writer_pretty(&mut out, &rows)?;
            writeln!(out)?;
        }
        Format::Csv => {
            writeln!(
                out,
                "merchant,terminal,debits,debit_amount,credits,credit_amount,reversals,reversed_amount,net,settlement,discrepancies"
            )?;
            for r in rows.values() {
                writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},{},{},{}",
                    r.merchant,
                    r.terminal,
                    r.debits,
                    r.debit_amount,
                    r.credits,
                    r.credit_amount,
                    r.reversals,
                    r.reversed_amount,
                    r.net,
                    r.settlement,
                    r.discrepancies
                )?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn reconcile(args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    let (settled, _) = settled(&args.report)?;
    let ours = engine::net_by_rrn(&settled);
    let issuer = issuer_file(&args.issuer_file)?;
    let differences = sim::settlement::differences(&ours, &issuer);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match args.report.format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &differences)?;
            writeln!(out)?;
        }
        Format::Csv => {
            writeln!(out, "rrn,kind,ours,issuer")?;
            let cell = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
            for d in &differences {
                writeln!(
                    out,
                    "{},{},{},{}",
                    d.rrn,
                    d.kind,
                    cell(d.ours),
                    cell(d.issuer)
                )?;
            }
        }
    }
    out.flush()?;
    eprintln!(
        "{} transactions in the settlement, {} at the issuer, {} differences",
        ours.len(),
        issuer.len(),
        differences.len()
    );
    Ok(if differences.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The issuer's file: `rrn,amount` lines after a header.
fn issuer_file(path: &PathBuf) -> anyhow::Result<BTreeMap<String, i64>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let mut lines = text.lines();
    anyhow::ensure!(
        lines.next().map(str::trim) == Some("rrn,amount"),
        "{}: the first line must be the header rrn,amount",
        path.display()
    );
    let mut settled = BTreeMap::new();
    for (n, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let parsed = line
            .split_once(',')
            .and_then(|(rrn, amount)| Some((rrn.trim(), amount.trim().parse::<i64>().ok()?)));
        let Some((rrn, amount)) = parsed else {
            anyhow::bail!(
                "{} line {}: not rrn,amount: {line:?}",
                path.display(),
                n + 2
            );
        };
        *settled.entry(rrn.to_string()).or_default() += amount;
    }
    Ok(settled)
}
