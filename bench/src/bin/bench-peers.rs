//! `bench-peers`: podwall against the peers users would run instead, side by side in one
//! run (docs/benchmarks.md): pod start against bridge alone and the firewall plugin;
//! isolation before the first packet, change → enforced, programming cost and per-packet
//! cost against the kube-router shape; the daemon's idle footprint. With
//! `--cluster-policies N`, podwall with and without N ClusterNetworkPolicies instead. Needs
//! root.
//!
//! ```text
//! bash tests/bench.sh                 # setup, then the full run (about 16 min on 2 cores, fresh)
//! bash tests/bench.sh --smoke         # a tiny world, one round of everything
//! bash tests/bench.sh --cluster-policies 100   # with and without 100 cluster policies
//! ```
#![forbid(unsafe_code)]

use std::fmt::Display;
use std::process::ExitCode;

use podwall_bench::peers::world::Spec;
use podwall_bench::peers::{self, tiers, Options};
use podwall_tests::cli;

const PROGRAM: &str = "bench-peers";
const USAGE: &str =
    "usage: bench-peers [--smoke] [--worlds S/1k,L/10k,...|none] [--footprint N,N,...|none]
                   [--footprint-baseline PODWALLD] [--rounds N] [--change-rounds N]
                   [--cluster-policies N]   (as root)

--worlds   the worlds to build (default: S, M and L, each with 1k and 10k remote pods); pod
           start runs only in S/1k and L/10k, isolation in M/1k, per packet in L/10k, when built
--footprint  cluster pods of the idle-footprint worlds (default: 1000,10000,100000)
--footprint-baseline  another podwalld binary (an earlier build) measured beside this one,
           in turn, at each footprint size
--cluster-policies  compare podwall with and without N ClusterNetworkPolicies instead of the
           peers: pod start, change -> enforced, restart and per packet in every world
           (default: M/1k,L/10k; --rounds 8, --change-rounds 24), and the footprint
           (default: 10000; in every round)";

fn main() -> ExitCode {
    // The comparison's defaults differ from the peers' whatever the order of the flags.
    let tiers = std::env::args().any(|a| a == "--cluster-policies");
    let initial = if tiers {
        Options::cluster_policies(100)
    } else {
        Options::full()
    };
    cli::main(
        PROGRAM,
        USAGE,
        initial,
        |options, arg, args| {
            Some(match arg {
                "--smoke" => {
                    *options = Options {
                        cluster_policies: options.cluster_policies,
                        ..Options::smoke()
                    };
                    Ok(())
                }
                "--cluster-policies" => {
                    cli::positive(arg, args.next()).map(|n| options.cluster_policies = Some(n))
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
        |options| -> anyhow::Result<Box<dyn Display>> {
            Ok(match options.cluster_policies {
                Some(_) => Box::new(tiers::run(options)?),
                None => Box::new(peers::run(options)?),
            })
        },
    )
}
