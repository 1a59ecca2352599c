//! `podwalld explain`: verdicts and reachability matrices from a manifests directory (or
//! `-`, standard input: `kubectl get ... -o yaml | podwalld explain --manifests -`), or from
//! the live cluster (`--kubeconfig`; with neither flag, the kubeconfig kubectl would use,
//! or the in-cluster config).
//!
//! This file does the I/O only: it reads the directory's `*.yaml`, `*.yml` and `*.json`
//! files in name order (or lists the API server, `live`), prints every manifest problem on
//! stderr (one line each), and prints what [`report`] computes and formats on stdout. Broken policies are evaluated as the
//! daemon enforces them, fail closed: the pods they select stay isolated and the broken
//! policy allows nothing. When a document cannot be read at all, so that a policy may be
//! missing, nothing is evaluated.
//!
//! Exit status: 0 when every manifest was fine, 1 when some were broken (with or without a
//! result), 2 for a question that does not fit the manifests (an unknown pod).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use podwall_policy::{Endpoint, EvaluateError, PodKey, Protocol, Query, Snapshot};

mod live;
pub mod report;

/// The flags of `podwalld explain` (see the contract's "Explain" section).
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// Directory of Namespace, Pod and NetworkPolicy manifests (*.yaml, *.yml, *.json), or
    /// `-` for one stream of them on standard input [default: the live cluster]
    #[arg(long, value_name = "DIR|-", conflicts_with = "kubeconfig")]
    pub manifests: Option<PathBuf>,
    /// The live cluster's API server, from this kubeconfig [default: $KUBECONFIG,
    /// ~/.kube/config, then the in-cluster config, as kubectl]
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Destination port of the connection
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// Protocol of the connection
    #[arg(long, value_parser = parse_protocol, value_name = "TCP|UDP|SCTP")]
    pub protocol: Protocol,
    /// Source of the connection; with --to, explain this one pair
    #[arg(long, value_name = "NS/POD|IP", value_parser = parse_target, requires = "to")]
    pub from: Option<Target>,
    /// Destination of the connection; with --from, explain this one pair
    #[arg(long, value_name = "NS/POD|IP", value_parser = parse_target, requires = "from")]
    pub to: Option<Target>,
    /// An address outside the cluster to add to the matrix, as source and destination
    #[arg(long, value_name = "IP")]
    pub external: Vec<IpAddr>,
    /// How to print the answer
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Output form: `table` (text) or `json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// `--from`/`--to`: a pod as `namespace/name`, or an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Pod(PodKey),
    Ip(IpAddr),
}

fn parse_protocol(text: &str) -> Result<Protocol, String> {
    text.to_ascii_uppercase()
        .parse()
        .map_err(|_| format!("unknown protocol {text:?}, expected TCP, UDP or SCTP"))
}

fn parse_target(text: &str) -> Result<Target, String> {
    if let Ok(ip) = text.parse() {
        return Ok(Target::Ip(ip));
    }
    PodKey::parse(text)
        .map(Target::Pod)
        .ok_or_else(|| format!("{text:?} is neither namespace/pod nor an IP address"))
}

/// Where the answer's cluster came from, for messages.
fn source(args: &ExplainArgs) -> String {
    match (&args.manifests, &args.kubeconfig) {
        (Some(dir), _) if dir.as_os_str() == "-" => "standard input".to_string(),
        (Some(dir), _) => dir.display().to_string(),
        (None, Some(kubeconfig)) => format!("the cluster of {}", kubeconfig.display()),
        (None, None) => "the cluster".to_string(),
    }
}

/// The cluster to answer from, and every problem found reading it (one line each); `None`
/// when something could not be read at all, so that a policy may be missing.
fn cluster(args: &ExplainArgs) -> anyhow::Result<(Option<Snapshot>, Vec<String>)> {
    let loaded = match &args.manifests {
        Some(dir) if dir.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("reading manifests from standard input")?;
            podwall_policy::manifests::load([("stdin", text.as_str())])
        }
        Some(dir) => crate::sources::manifests::load_dir(dir)?,
        None => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let (snapshot, broken) = runtime.block_on(async {
                let client = match &args.kubeconfig {
                    Some(path) => crate::sources::kube::client(Some(path)).await?,
                    // As kubectl: $KUBECONFIG, ~/.kube/config, then the in-cluster config.
                    None => kube::Client::try_default().await.context(
                        "no API server: no kubeconfig ($KUBECONFIG, ~/.kube/config) and not in a pod; pass --kubeconfig FILE or --manifests DIR",
                    )?,
                };
                live::snapshot(client).await
            })?;
            return Ok((Some(snapshot), broken));
        }
    };
    // Parser messages may span lines; the contract is one line per problem.
    let problems = (loaded.errors.iter())
        .map(|e| e.to_string().replace('\n', " "))
        .collect();
    let usable = !loaded.has_fatal_errors();
    Ok((usable.then_some(loaded.snapshot), problems))
}

/// Run `podwalld explain`; the exit status says whether the manifests were usable.
pub fn run(args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let (snapshot, problems) = cluster(args)?;
    for problem in &problems {
        eprintln!("podwalld explain: {problem}");
    }
    let Some(snapshot) = snapshot else {
        eprintln!(
            "podwalld explain: not evaluating: some manifests could not be read, so a policy may be missing"
        );
        return Ok(ExitCode::FAILURE);
    };
    let status = if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    let snap = &snapshot;

    let (Some(from), Some(to)) = (&args.from, &args.to) else {
        let matrix = report::matrix(snap, &args.external, args.protocol, args.port);
        match args.output {
            Output::Table => print!("{}", matrix.to_table()),
            Output::Json => println!(
                "{}",
                serde_json::to_string(&matrix).context("encoding the matrix")?
            ),
        }
        return Ok(status);
    };
    let query = Query {
        from: endpoint(from),
        to: endpoint(to),
        protocol: args.protocol,
        port: args.port,
    };
    let verdict = match report::pair(snap, &query) {
        Ok(v) => v,
        Err(e @ (EvaluateError::UnknownPod(_) | EvaluateError::FinishedPod(_))) => {
            eprintln!("podwalld explain: {e} in {}", source(args));
            return Ok(ExitCode::from(2));
        }
    };
    match args.output {
        Output::Table => print!("{}", report::pair_text(&query, &verdict)),
        Output::Json => println!(
            "{}",
            serde_json::to_string(&report::pair_json(&query, &verdict))
                .context("encoding the verdict")?
        ),
    }
    Ok(status)
}

fn endpoint(target: &Target) -> Endpoint {
    match target {
        Target::Pod(key) => Endpoint::Pod(key.clone()),
        Target::Ip(ip) => Endpoint::Ip(*ip),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_pods_or_addresses() {
        assert_eq!(parse_target("x/a"), Ok(Target::Pod(PodKey::new("x", "a"))));
        assert_eq!(
            parse_target("fd00::1"),
            Ok(Target::Ip("fd00::1".parse().unwrap()))
        );
        assert!(parse_target("x").is_err());
        assert!(parse_target("x/a/b").is_err());
    }

    #[test]
    fn protocol_flag_accepts_any_case_but_only_known_protocols() {
        assert_eq!(parse_protocol("udp"), Ok(Protocol::Udp));
        assert_eq!(parse_protocol("SCTP"), Ok(Protocol::Sctp));
        assert!(parse_protocol("ICMP").is_err());
    }
}
