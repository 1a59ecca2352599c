//! `bench-droplog`: what the drop log costs per packet, side by side in one run
//! (docs/benchmarks.md). Needs root.
//!
//! ```text
//! cargo run --release -p podwall-bench --bin bench-droplog                     # 7 rounds
//! cargo run --release -p podwall-bench --bin bench-droplog -- --baseline OLD   # and an earlier build
//! cargo run --release -p podwall-bench --bin bench-droplog -- --smoke          # one short round
//! ```
#![forbid(unsafe_code)]

use std::process::ExitCode;

use podwall_bench::droplog::{self, Options};
use podwall_tests::cli;

const PROGRAM: &str = "bench-droplog";
const USAGE: &str = "usage: bench-droplog [--smoke] [--rounds N] [--baseline PODWALLD]   (as root)

--baseline  another podwalld binary (an earlier build), measured beside this one";

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
                "--baseline" => match args.next() {
                    Some(path) if std::path::Path::new(&path).is_file() => {
                        options.baseline = Some(path.into());
                        Ok(())
                    }
                    _ => Err("--baseline needs the path of a podwalld binary".into()),
                },
                _ => return None,
            })
        },
        droplog::run,
    )
}
