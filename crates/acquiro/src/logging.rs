//! Log output on stderr, filtered by `RUST_LOG` (default `info`): human-readable lines, or one JSON
//! object per line for a log pipeline. Lines about one transaction are inside its `txn` span, whose
//! `id` is the transaction id of its journal records.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Format {
    Human,
    Json,
}

/// The PostgreSQL client's debug lines print every statement's parameters: in cluster mode, each
/// commit's journal records. They hold no card number, track, PIN block or EMV data, but they are
/// the journal's whole content, on every line, so `RUST_LOG=debug` leaves them out; a `RUST_LOG`
/// that names `tokio_postgres` gets them.
const DATABASE_CLIENT: &str = "tokio_postgres";

pub(crate) fn init(format: Format) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if !std::env::var("RUST_LOG").is_ok_and(|spec| spec.contains(DATABASE_CLIENT)) {
        filter = filter.add_directive(
            format!("{DATABASE_CLIENT}=info")
                .parse()
                .expect("a valid directive"),
        );
    }
    // A closed stderr (a log collector gone) loses lines, nothing more: reporting the failed write
    // would itself write to stderr, and panic.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    match format {
        Format::Human => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        // `span` holds the transaction span (name and id) of a line inside one.
        Format::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}
