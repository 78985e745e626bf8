//! acquiro: an acquirer-side ISO 8583 switch.

mod cli;
mod logging;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("acquiro: {err:#}");
            ExitCode::from(2)
        }
    }
}
