//! `attache-operator`: see `attache-operator --help`.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use std::process::ExitCode;

use attache_operator::cli::{self, Cli, Streams};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The unlocked handles lock per write. Holding `stdout().lock()` for the whole process
    // deadlocked `run`: its log writer, on other threads, waits for the same lock forever.
    let streams = Streams {
        stdin: &mut std::io::stdin(),
        stdout: &mut std::io::stdout(),
        stderr: &mut std::io::stderr(),
    };
    match cli::execute(cli, streams) {
        Ok(status) => status.into(),
        Err(e) => {
            eprintln!("attache-operator: {:#}", anyhow::Error::from(e));
            ExitCode::FAILURE
        }
    }
}
