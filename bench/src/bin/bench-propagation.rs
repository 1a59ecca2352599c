//! `bench-propagation`: change-to-enforced latency at 100, 1k and 10k pods in the API
//! server (docs/benchmarks.md), or with `--manifests` in a standalone node's manifests
//! directory. Needs root: each world is a throw-away node with its own `podwalld` in
//! Kubernetes mode and the test API server, or in standalone mode.
//!
//! ```text
//! bash tests/setup.sh   # the release daemon and the static plugin the worlds run
//! cargo run --release -p podwall-bench --bin bench-propagation              # full run
//! cargo run --release -p podwall-bench --bin bench-propagation -- --smoke   # tiny world
//! cargo run --release -p podwall-bench --bin bench-propagation -- --sizes 100,1000 --changes 40
//! cargo run --release -p podwall-bench --bin bench-propagation -- --manifests --sizes 10000
//! ```
#![forbid(unsafe_code)]

use std::process::ExitCode;

use podwall_bench::propagation::{self, Options, Source};
use podwall_tests::cli;

const PROGRAM: &str = "bench-propagation";
const USAGE: &str =
    "usage: bench-propagation [--smoke] [--manifests] [--sizes N,N,...] [--changes N]   (as root)";

fn main() -> ExitCode {
    cli::main(
        PROGRAM,
        USAGE,
        Options::full(),
        |options, arg, args| {
            Some(match arg {
                "--smoke" => {
                    *options = Options {
                        source: options.source,
                        ..Options::smoke()
                    };
                    Ok(())
                }
                "--manifests" => {
                    options.source = Source::Manifests;
                    Ok(())
                }
                "--sizes" => cli::list(arg, args.next(), "numbers", false, |n| n.parse().ok())
                    .map(|sizes| options.sizes = sizes),
                "--changes" => cli::positive(arg, args.next()).map(|n| options.changes = n),
                _ => return None,
            })
        },
        propagation::run,
    )
}
