//! `podwalld explain`: offline verdicts and reachability matrices from a manifests directory.

use std::process::ExitCode;

/// The flags of `podwalld explain` (see the contract's "Explain" section).
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {}

/// Run `podwalld explain`; the exit status says whether the manifests were usable.
pub fn run(_args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("explain is not implemented yet")
}
