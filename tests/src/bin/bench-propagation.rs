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

use podwall_tests::propagation::{self, Options};

const USAGE: &str =
    "usage: bench-propagation [--smoke] [--sizes N,N,...] [--changes N]   (as root)";

fn main() -> ExitCode {
    let mut options = Options::full();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--smoke" => options = Options::smoke(),
            "--sizes" => {
                let sizes: Option<Vec<usize>> = args
                    .next()
                    .map(|s| s.split(',').map(|n| n.trim().parse().ok()).collect())
                    .unwrap_or(None);
                match sizes {
                    Some(sizes) if !sizes.is_empty() => options.sizes = sizes,
                    _ => return usage("--sizes needs a comma-separated list of numbers"),
                }
            }
            "--changes" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) if n > 0 => options.changes = n,
                _ => return usage("--changes needs a positive number"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument {other}")),
        }
    }
    podwall_tests::require_root();
    match propagation::run(&options) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("bench-propagation: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn usage(message: &str) -> ExitCode {
    eprintln!("bench-propagation: {message}\n{USAGE}");
    ExitCode::from(2)
}
