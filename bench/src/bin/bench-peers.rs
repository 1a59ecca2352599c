//! `bench-peers`: podwall against the peers users would run instead, side by side in one
//! run (docs/benchmarks.md): pod start against bridge alone and the firewall plugin;
//! isolation before the first packet, change → enforced, programming cost and per-packet
//! cost against the kube-router shape; the daemon's idle footprint. Needs root.
//!
//! ```text
//! bash tests/bench.sh                 # setup, then the full run (about 16 min on 2 cores, fresh)
//! bash tests/bench.sh --smoke         # a tiny world, one round of everything
//! ```
#![forbid(unsafe_code)]

use std::process::ExitCode;

use podwall_bench::peers::world::Spec;
use podwall_bench::peers::{self, Options};
use podwall_tests::cli;

const PROGRAM: &str = "bench-peers";
const USAGE: &str =
    "usage: bench-peers [--smoke] [--worlds S/1k,L/10k,...|none] [--footprint N,N,...|none]
                   [--footprint-baseline PODWALLD] [--rounds N] [--change-rounds N]   (as root)

--worlds   the worlds to build (default: S, M and L, each with 1k and 10k remote pods); pod
           start runs only in S/1k and L/10k, isolation in M/1k, per packet in L/10k, when built
--footprint  cluster pods of the idle-footprint worlds (default: 1000,10000,100000)
--footprint-baseline  another podwalld binary (an earlier build) measured beside this one,
           in turn, at each footprint size";

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
                "--worlds" => cli::list(
                    arg,
                    args.next(),
                    "worlds like S/1k,L/10k (sizes S, M, L, tiny)",
                    true,
                    Spec::parse,
                )
                .map(|worlds| options.worlds = worlds),
                "--footprint" => {
                    cli::list(arg, args.next(), "pod counts", true, |n| n.parse().ok())
                        .map(|sizes| options.footprint.0 = sizes)
                }
                "--footprint-baseline" => match args.next() {
                    Some(path) if std::path::Path::new(&path).is_file() => {
                        options.footprint_baseline = Some(path.into());
                        Ok(())
                    }
                    _ => Err("--footprint-baseline needs the path of a podwalld binary".into()),
                },
                "--rounds" => cli::positive(arg, args.next()).map(|n| options.rounds = n),
                "--change-rounds" => {
                    cli::positive(arg, args.next()).map(|n| options.change_rounds = n)
                }
                _ => return None,
            })
        },
        peers::run,
    )
}
