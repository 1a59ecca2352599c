//! `bench-dataplane`: the dataplane benchmark of docs/benchmarks.md. Needs root: each world
//! is loaded into a throw-away network namespace.
//!
//! ```text
//! cargo run --release -p podwall-bench --bin bench-dataplane            # full run
//! cargo run --release -p podwall-bench --bin bench-dataplane -- --smoke # tiny world, 2 rounds
//! cargo run --release -p podwall-bench --bin bench-dataplane -- --rounds 50
//! ```
#![forbid(unsafe_code)]

use std::process::ExitCode;

use podwall_bench::dataplane::{self, Options};
use podwall_tests::cli;

const PROGRAM: &str = "bench-dataplane";
const USAGE: &str = "usage: bench-dataplane [--smoke] [--rounds N]   (as root)";

fn main() -> ExitCode {
    cli::main(
        PROGRAM,
        USAGE,
        Options::full(),
        |options, arg, args| {
            Some(match arg {
                "--smoke" => {
                    *options = Options::smoke();
                    Ok(())
                }
                "--rounds" => cli::positive(arg, args.next()).map(|n| options.rounds = n),
                _ => return None,
            })
        },
        dataplane::run,
    )
}
