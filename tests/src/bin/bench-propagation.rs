//! `bench-propagation`: API-event-to-enforced latency at 100, 1k and 10k pods in the API
//! server (docs/benchmarks.md). Needs root: each world is a throw-away node with its own
//! `podwalld` in Kubernetes mode and the test API server.
//!
//! ```text
//! bash tests/setup.sh   # the release daemon and the static plugin the worlds run
//! cargo run --release -p podwall-tests --bin bench-propagation              # full run
//! cargo run --release -p podwall-tests --bin bench-propagation -- --smoke   # tiny world
//! cargo run --release -p podwall-tests --bin bench-propagation -- --sizes 100,1000 --changes 40
//! ```
#![forbid(unsafe_code)]

use std::process::ExitCode;

use podwall_tests::cli;
use podwall_tests::propagation::{self, Options};

const PROGRAM: &str = "bench-propagation";
const USAGE: &str =
    "usage: bench-propagation [--smoke] [--sizes N,N,...] [--changes N]   (as root)";

fn main() -> ExitCode {
    let mut options = Options::full();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let parsed = match arg.as_str() {
            "--smoke" => {
                options = Options::smoke();
                Ok(())
            }
            "--sizes" => cli::list("--sizes", args.next(), "numbers", false, |n| n.parse().ok())
                .map(|sizes| options.sizes = sizes),
            "--changes" => cli::positive("--changes", args.next()).map(|n| options.changes = n),
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
    cli::finish(PROGRAM, propagation::run(&options))
}
