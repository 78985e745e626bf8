//! `acquiro tranlog`: the journal as evidence. `show` gives the timeline of matching transactions,
//! `export` every record for a bank's own tools, `verify` checks every checksum, the chain and the
//! indexes.
//!
//! No command changes a record: a torn tail (from a crash) is reported, and cut off only when the switch
//! starts. `show` finds transactions through the per-segment indexes, and writes the index of a closed
//! segment that has none (when it may).
//!
//! With `--database` (cluster mode) the same commands read every node's records from PostgreSQL: a
//! transaction is named by its node as well, and exports carry the node.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use engine::{Record, Step, TxnId};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tranlog::{Mode, OnCorrupt};

#[derive(Subcommand)]
pub(crate) enum TranlogCommand {
    /// The full timeline of each matching transaction: every step, with times, codes, issuer and link,
    /// and every reversal attempt.
    Show(ShowArgs),
    /// Every record (in a time range) as JSON lines or CSV.
    Export(ExportArgs),
    /// Check every record's checksum, the sequence, the chain and the indexes; exit 1 on any problem.
    Verify(DirArgs),
}

#[derive(Args)]
#[group(required = true, multiple = false)]
pub(crate) struct DirArgs {
    /// The journal directory (journal.dir of the switch).
    #[arg(long)]
    journal_dir: Option<PathBuf>,
    /// Cluster mode: the database every node writes to (cluster.database; also ACQUIRO_DATABASE_URL).
    #[arg(long, env = "ACQUIRO_DATABASE_URL")]
    database: Option<String>,
}

impl DirArgs {
    fn path(&self) -> anyhow::Result<&Path> {
        let Some(dir) = &self.journal_dir else {
            anyhow::bail!("give --journal-dir or --database");
        };
        anyhow::ensure!(dir.is_dir(), "{}: no such journal directory", dir.display());
        Ok(dir)
    }
}

/// Runs `f` on a connection to `url`, on a runtime of its own.
pub(crate) fn with_database<T>(
    url: &str,
    f: impl AsyncFnOnce(&tokio_postgres::Client) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = cluster::connect(url)
            .await
            .context("connecting to the database")?;
        f(&client).await
    })
}

/// A time range, RFC 3339 (`2026-11-21T09:00:00Z`).
#[derive(Args)]
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

#[derive(Args)]
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

#[derive(Args)]
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

/// Every record, with the node that wrote it (empty for a journal directory), oldest first per node.
pub(crate) fn each_record(dir: &DirArgs, mut each: impl FnMut(&str, Record)) -> anyhow::Result<()> {
    if let Some(url) = &dir.database {
        return with_database(url, async |client| {
            cluster::evidence::export(client, None, None, |node, record| {
                each(node, record);
                Ok(())
            })
            .await?;
            Ok(())
        });
    }
    read(dir, |_, record| each("", record))?;
    Ok(())
}

/// Reads every record without changing the journal; corrupt records are reported and skipped.
fn read(
    dir: &DirArgs,
    each: impl FnMut(&tranlog::Position, Record),
) -> anyhow::Result<tranlog::Scanned> {
    let mode = Mode {
        repair: false,
        on_corrupt: OnCorrupt::Skip,
    };
    tranlog::scan(dir.path()?, mode, each).context("reading the journal")
}

fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let wanted = |record: &Record| match &record.step {
        Step::Forwarded { original, .. }
        | Step::AdviceQueued {
            advice: original, ..
        } => args.rrn.is_some() && args.rrn.as_deref() == original.rrn(),
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
    if let Some(url) = &args.dir.database {
        return show_cluster(&args, url, wanted);
    }
    let mut keys = Vec::new();
    keys.extend(args.rrn.clone().map(tranlog::Key::Rrn));
    if let (Some(terminal), Some(stan)) = (&args.terminal, args.stan) {
        keys.push(tranlog::Key::Terminal {
            terminal: terminal.clone(),
            stan,
        });
    }
    keys.extend(args.pan_last4.clone().map(tranlog::Key::Last4));
    let query = tranlog::Query {
        keys,
        from: args.range.from,
        to: args.range.to,
    };
    // The index gives candidates (a key hash can collide; --date and the time range are not in it):
    // a transaction is shown when one of its own records matches.
    let candidates = tranlog::lookup(args.dir.path()?, &query).context("reading the journal")?;
    let matched: HashSet<TxnId> = candidates
        .iter()
        .filter(|r| wanted(r))
        .map(|r| r.txn)
        .collect();
    let timeline: Vec<&Record> = candidates
        .iter()
        .filter(|r| matched.contains(&r.txn))
        .collect();
    let timeline = timeline
        .into_iter()
        .map(|r| (format!("transaction {}", r.txn.0), r));
    print_timelines(timeline)
}

/// Each transaction's heading (once, when it changes) and its steps with their times; exit 1 when
/// there is none.
fn print_timelines<'a>(
    timeline: impl Iterator<Item = (String, &'a Record)>,
) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let mut current = None;
    for (heading, record) in timeline {
        if current.as_ref() != Some(&heading) {
            writeln!(out, "{heading}")?;
            current = Some(heading);
        }
        writeln!(
            out,
            "  {}  {}",
            rfc3339(record.at),
            serde_json::to_string(&record.step)?
        )?;
    }
    if current.is_none() {
        eprintln!("no matching transaction");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// `show` across every node's records in the database.
fn show_cluster(
    args: &ShowArgs,
    url: &str,
    wanted: impl Fn(&Record) -> bool,
) -> anyhow::Result<ExitCode> {
    let named = cluster::evidence::Named {
        rrn: args.rrn.clone(),
        terminal: args.terminal.clone().zip(args.stan),
        last4: args.pan_last4.clone(),
        from: args.range.from,
        to: args.range.to,
    };
    let candidates = with_database(url, async |client| {
        Ok(cluster::evidence::timelines(client, &named).await?)
    })?;
    let matched: HashSet<(&str, TxnId)> = candidates
        .iter()
        .filter(|(_, r)| wanted(r))
        .map(|(node, r)| (node.as_str(), r.txn))
        .collect();
    let timeline = candidates
        .iter()
        .filter(|(node, r)| matched.contains(&(node.as_str(), r.txn)))
        .map(|(node, r)| (format!("transaction {} node {node}", r.txn.0), r));
    print_timelines(timeline)
}

fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if let Some(url) = &args.dir.database {
        if let Format::Csv = args.format {
            writeln!(out, "node,txn,at,step,detail")?;
        }
        let (from, to) = (args.range.from, args.range.to);
        with_database(url, async |client| {
            cluster::evidence::export(client, from, to, |node, record| match args.format {
                Format::Jsonl => {
                    let mut line = serde_json::to_value(&record).map_err(std::io::Error::other)?;
                    line["node"] = node.into();
                    writeln!(out, "{line}")
                }
                Format::Csv => writeln!(out, "{node},{}", csv_line(&record)?),
            })
            .await?;
            Ok(())
        })?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
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
    if let Some(url) = &args.database {
        let found = with_database(url, async |client| {
            Ok(cluster::evidence::verify(client).await?)
        })?;
        outln!("{} node(s), {} record(s)", found.nodes, found.records)?;
        for p in &found.problems {
            outln!("PROBLEM {p}")?;
        }
        if found.problems.is_empty() {
            outln!(
                "every record decodes, every node's sequence is whole, the search indexes hold every copied row, every claim is recorded"
            )?;
            return Ok(ExitCode::SUCCESS);
        }
        outln!("{} problem(s)", found.problems.len())?;
        return Ok(ExitCode::from(1));
    }
    let scanned = read(&args, |_, _| {})?;
    outln!(
        "{} segment(s), {} record(s), last sequence number {}",
        scanned.segments.len(),
        scanned.records,
        scanned.last_seq
    )?;
    if let Some(at) = &scanned.torn {
        outln!("torn record at the end ({at}): a crash during a write; cut off at the next start")?;
    }
    let indexes = tranlog::verify_indexes(args.path()?).context("checking the indexes")?;
    let problems: Vec<_> = scanned.problems.iter().chain(&indexes).collect();
    for p in &problems {
        outln!("PROBLEM {}: {}", p.at, p.what)?;
    }
    if problems.is_empty() {
        outln!("every checksum, the chain of records and every index are intact")?;
        Ok(ExitCode::SUCCESS)
    } else {
        outln!("{} problem(s)", problems.len())?;
        Ok(ExitCode::from(1))
    }
}

fn rfc3339(at: SystemTime) -> String {
    OffsetDateTime::from(at)
        .format(&Rfc3339)
        .unwrap_or_else(|_| format!("{at:?}"))
}
