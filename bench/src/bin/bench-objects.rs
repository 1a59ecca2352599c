//! `bench-objects`: what realistic Pod, Namespace and NetworkPolicy objects weigh as watch
//! events, and the CPU `podwalld`'s source spends decoding and folding each (docs/scale.md).
//! No root needed.
//!
//! ```text
//! cargo run --release -p podwall-bench --bin bench-objects                # 2,000 pod lives
//! cargo run --release -p podwall-bench --bin bench-objects -- --smoke     # 20
//! cargo run --release -p podwall-bench --bin bench-objects -- --rounds 5000 --cache-pods 100000
//! cargo run --release -p podwall-bench --bin bench-objects -- --persist-pods 1000,10000,100000
//! ```
#![forbid(unsafe_code)]

use std::process::ExitCode;

use podwall_bench::objects::{self, Options};
use podwall_tests::cli;

const USAGE: &str =
    "usage: bench-objects [--smoke] [--rounds N] [--cache-pods N] [--persist-pods N,N,...]";

fn main() -> ExitCode {
    let mut options = Options::full();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let parsed = match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--smoke" => {
                options = Options::smoke();
                Ok(())
            }
            "--rounds" => cli::positive(&arg, args.next()).map(|n| options.rounds = n),
            "--cache-pods" => cli::positive(&arg, args.next()).map(|n| options.cache_pods = n),
            "--persist-pods" => cli::list(&arg, args.next(), "numbers", true, |n| n.parse().ok())
                .map(|sizes| options.persist_pods = sizes),
            _ => Err(format!("unknown argument {arg}")),
        };
        if let Err(message) = parsed {
            eprintln!("bench-objects: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    match objects::measure(&options) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("bench-objects: {err:#}");
            ExitCode::FAILURE
        }
    }
}
