//! Command-line interface.

/// `println!` that returns the write's error instead of panicking: the reader of the output may be gone
/// (`acquiro tranlog show … | head`), which `main` then treats as the end of the output.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)
    }};
}

/// `print!`, as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout(), $($arg)*)
    }};
}

mod cluster;
mod codec;
mod demo;
mod json;
mod serve;
mod settlement;
mod sim;
mod tranlog;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use wire::{LengthHeader, Tpdu};

/// The command line's types do not derive `Debug`: they hold connection strings, which may carry a
/// password, and nothing should ever print them.
#[derive(Parser)]
#[command(name = "acquiro", version, about = "Acquirer-side ISO 8583 switch")]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines on stderr as text or as one JSON object each (filtered by RUST_LOG, default info).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "human",
        env = "ACQUIRO_LOG_FORMAT"
    )]
    log_format: crate::logging::Format,
}

#[derive(Subcommand)]
enum Command {
    /// Run the switch against an issuer simulator with terminals that retransmit and reverse, show live
    /// figures, and check at the end that every terminal's outcome matches the issuer's books.
    Demo(demo::DemoArgs),
    /// Decode frames given as hex (one per line on stdin, or --hex) and print them, masked by default.
    Decode(DecodeArgs),
    /// Encode messages given as JSON lines on stdin (the output of `decode --json`) into hex frames.
    Encode(EncodeArgs),
    /// Run the switch.
    Serve(serve::ServeArgs),
    /// Simulators: an issuer host, POS terminals, and the reconciliation of the two.
    #[command(subcommand)]
    Sim(sim::SimCommand),
    /// The transaction journal: dispute evidence, export, verification.
    #[command(subcommand)]
    Tranlog(tranlog::TranlogCommand),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Cluster mode: the nodes sharing one database.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// What each merchant and terminal is owed, from the journal, and its reconciliation with the
    /// issuer's settlement.
    Settlement(settlement::SettlementArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a configuration file: every error names the key and the reason.
    Check(serve::CheckArgs),
}

/// How frames are laid out: the dialect and the framing around each message.
#[derive(Args)]
struct FrameArgs {
    /// Dialect: a built-in name (iso87ascii, iso87ascii-hexbitmap, iso87bcd, iso87ebcdic) or a .toml file.
    #[arg(long, default_value = "iso87ascii")]
    spec: String,
    /// Length header in front of each frame: none, binary2, binary2-inclusive, binary4, ascii2, ascii4, bcd2.
    #[arg(long, default_value = "none")]
    header: LengthHeader,
}

#[derive(Args)]
struct DecodeArgs {
    #[command(flatten)]
    frame: FrameArgs,
    /// Frames carry a 5-byte TPDU after the length header.
    #[arg(long)]
    tpdu: bool,
    /// One frame as hex; without it, one hex frame per line is read from stdin.
    #[arg(long)]
    hex: Option<String>,
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Also list DE55 as BER-TLV items (with --json: under "tlv").
    #[arg(long)]
    tlv: bool,
    /// Show card numbers and secret fields in clear. For test data only.
    #[arg(long)]
    unmasked: bool,
}

#[derive(Args)]
struct EncodeArgs {
    #[command(flatten)]
    frame: FrameArgs,
    /// Write this TPDU (10 hex digits) after the length header; a "tpdu" key in the JSON is used otherwise.
    #[arg(long)]
    tpdu: Option<Tpdu>,
}

pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // The demo draws its own screen.
    if !matches!(cli.command, Command::Demo(_)) {
        crate::logging::init(cli.log_format);
    }
    match cli.command {
        Command::Demo(args) => demo::demo(args),
        Command::Decode(args) => codec::decode(args),
        Command::Encode(args) => codec::encode(args),
        Command::Serve(args) => serve::serve(args),
        Command::Sim(command) => sim::run(command),
        Command::Tranlog(command) => tranlog::run(command),
        Command::Cluster(command) => cluster::run(command),
        Command::Settlement(args) => settlement::run(args),
        Command::Config(ConfigCommand::Check(args)) => serve::check(args),
    }
}
