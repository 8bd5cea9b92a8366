//! `attache-operator`: see `attache-operator --help`.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use std::process::ExitCode;

use attache_operator::cli::{self, Cli, Streams};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let streams = Streams {
        stdin: &mut std::io::stdin().lock(),
        stdout: &mut std::io::stdout().lock(),
        stderr: &mut std::io::stderr().lock(),
    };
    match cli::execute(cli, streams) {
        Ok(status) => status.into(),
        Err(e) => {
            eprintln!("attache-operator: {:#}", anyhow::Error::from(e));
            ExitCode::FAILURE
        }
    }
}
