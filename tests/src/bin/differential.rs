//! `podwall-differential`: hunt for divergence between the kernel and the policy evaluator
//! along random cluster histories, one fresh standalone node per seed (docs/design.md,
//! "Hunting divergence"). Prints a line per seed and every failure with its seed and step;
//! exits 1 when any seed diverged. Needs root.
//!
//! ```text
//! bash tests/differential.sh --seeds 1..1000 --steps 50 --minutes 30
//! ```
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use podwall_tests::cli;
use podwall_tests::differential::gen::Features;
use podwall_tests::differential::{self, parse_seeds, Options};

const PROGRAM: &str = "podwall-differential";
const USAGE: &str = "usage: podwall-differential [--seeds 1..1000] [--steps N] [--minutes M]
                            [--without FEATURE,...] [--verbose] [--plan]   (as root)

--seeds    seeds to run, both ends included (default 1..1000); a list like 3,10..20 too
--steps    steps per seed (default 50)
--minutes  start no new seed after this many minutes (default: no limit)
--without  switch generator features off, to tell divergences apart: restarts, long-names,
           huge-policies, bulk-pods, shared-ips, unlabelled, broken, ipv6
--verbose  print every step on stderr as it passes
--plan     print each seed's steps without running them (addresses are made up)";

fn main() -> ExitCode {
    cli::main(
        PROGRAM,
        USAGE,
        Options::default(),
        |options, arg, args| {
            Some(match arg {
                "--seeds" => cli::list(arg, args.next(), "seeds like 1..1000 or 7", false, parse_seeds)
                    .map(|seeds| options.seeds = seeds),
                "--verbose" => {
                    options.verbose = true;
                    Ok(())
                }
                "--plan" => {
                    options.plan = true;
                    Ok(())
                }
                "--steps" => cli::positive(arg, args.next()).map(|n| options.steps = n),
                "--minutes" => cli::positive(arg, args.next())
                    .map(|m| options.budget = Some(Duration::from_secs(60 * m as u64))),
                "--without" => cli::list(
                    arg,
                    args.next(),
                    "features (restarts, long-names, huge-policies, bulk-pods, shared-ips, unlabelled, broken, ipv6)",
                    false,
                    |name| Features::NAMES.contains(&name).then(|| name.to_string()),
                )
                .map(|names| {
                    for name in names {
                        options.features = options
                            .features
                            .without(&name)
                            .expect("the name was checked");
                    }
                }),
                _ => return None,
            })
        },
        differential::run,
    )
}
