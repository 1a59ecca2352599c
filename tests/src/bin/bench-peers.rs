//! `bench-peers`: podwall against the peers users would run instead, side by side in one
//! run (docs/benchmarks.md): pod start against bridge alone and the firewall plugin;
//! isolation before the first packet, change → enforced, programming cost and per-packet
//! cost against the kube-router shape; the daemon's idle footprint. Needs root.
//!
//! ```text
//! bash tests/bench.sh                 # setup, then the full run (under 20 minutes on 2 cores)
//! bash tests/bench.sh --smoke         # a tiny world, one round of everything
//! ```
#![forbid(unsafe_code)]

use std::process::ExitCode;

use podwall_tests::peers::world::Spec;
use podwall_tests::peers::{self, Options};

const USAGE: &str =
    "usage: bench-peers [--smoke] [--worlds S/1k,L/10k,...|none] [--footprint N,N,...|none]
                   [--rounds N] [--change-rounds N]   (as root)

--worlds   the worlds to build (default: S, M and L, each with 1k and 10k remote pods); pod
           start runs only in S/1k and L/10k, isolation in M/1k, per packet in L/10k, when built
--footprint  cluster pods of the idle-footprint worlds (default: 1000,10000,100000)";

fn main() -> ExitCode {
    let mut options = Options::full();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--smoke" => options = Options::smoke(),
            "--worlds" => {
                let worlds: Option<Vec<Spec>> = match args.next().as_deref() {
                    Some("none") => Some(Vec::new()),
                    Some(list) => list.split(',').map(|w| Spec::parse(w.trim())).collect(),
                    None => None,
                };
                match worlds {
                    Some(worlds) => options.worlds = worlds,
                    None => {
                        return usage(
                            "--worlds needs a list like S/1k,L/10k (sizes S, M, L, tiny) or none",
                        )
                    }
                }
            }
            "--footprint" => {
                let sizes: Option<Vec<usize>> = match args.next().as_deref() {
                    Some("none") => Some(Vec::new()),
                    Some(list) => list.split(',').map(|n| n.trim().parse().ok()).collect(),
                    None => None,
                };
                match sizes {
                    Some(sizes) => options.footprint.0 = sizes,
                    None => return usage("--footprint needs a list of pod counts or none"),
                }
            }
            "--rounds" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) if n > 0 => options.rounds = n,
                _ => return usage("--rounds needs a positive number"),
            },
            "--change-rounds" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) if n > 0 => options.change_rounds = n,
                _ => return usage("--change-rounds needs a positive number"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument {other}")),
        }
    }
    podwall_tests::require_root();
    match peers::run(&options) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("bench-peers: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn usage(message: &str) -> ExitCode {
    eprintln!("bench-peers: {message}\n{USAGE}");
    ExitCode::from(2)
}
