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
use podwall_tests::cli;

const PROGRAM: &str = "bench-dataplane";
const USAGE: &str = "usage: bench-dataplane [--smoke] [--rounds N]   (as root)";

fn main() -> ExitCode {
    let mut options = Options::full();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let parsed = match arg.as_str() {
            "--smoke" => {
                options = Options::smoke();
                Ok(())
            }
            "--rounds" => cli::positive("--rounds", args.next()).map(|n| options.rounds = n),
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => Err(format!("unknown argument {other}")),
        };
        if let Err(message) = parsed {
            return cli::usage_error(PROGRAM, USAGE, &message);
        }
    }
    podwall_tests::require_root();
    cli::finish(PROGRAM, bench::run(&options))
}
