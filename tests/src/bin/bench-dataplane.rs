//! `bench-dataplane`: the dataplane benchmark of docs/benchmarks.md. Needs root: each world
//! is loaded into a throw-away network namespace.
//!
//! ```text
//! cargo run --release -p podwall-tests --bin bench-dataplane            # full run
//! cargo run --release -p podwall-tests --bin bench-dataplane -- --smoke # tiny world, 2 rounds
//! cargo run --release -p podwall-tests --bin bench-dataplane -- --rounds 50
//! ```
#![forbid(unsafe_code)]

use std::process::ExitCode;

use podwall_tests::bench::{self, Options};

fn main() -> ExitCode {
    let mut options = Options::full();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--smoke" => options = Options::smoke(),
            "--rounds" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) if n > 0 => options.rounds = n,
                _ => return usage("--rounds needs a positive number"),
            },
            "-h" | "--help" => {
                println!("usage: bench-dataplane [--smoke] [--rounds N]   (as root)");
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument {other}")),
        }
    }
    podwall_tests::require_root();
    match bench::run(&options) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("bench-dataplane: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn usage(message: &str) -> ExitCode {
    eprintln!("bench-dataplane: {message}\nusage: bench-dataplane [--smoke] [--rounds N]");
    ExitCode::from(2)
}
