//! The command line, mirroring the contract's flags, and its validation into `Config`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::droplog;
use crate::explain::ExplainArgs;

/// podwall node daemon: enforces Kubernetes NetworkPolicy for the pods of this node.
#[derive(Debug, Parser)]
#[command(name = "podwalld", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Evaluate the NetworkPolicies of a manifests directory offline (no root, no kernel).
    Explain(ExplainArgs),
    /// Remove everything podwall put in this network namespace's kernel (the `inet podwall`
    /// table). Run it after the daemon is stopped for good: pods lose their enforcement.
    Cleanup,
    /// Ask the running daemon which pods of this node it enforces, how (attached, adopted,
    /// quarantined) and by which policies.
    Pods(QueryArgs),
    /// Ask the running daemon whether it is ready and serving ADDs, which pods it enforces
    /// by which policies, and what each policy allowed and denied (exit 1 when not ready).
    Status(QueryArgs),
}

#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// The daemon's Unix socket.
    #[arg(long, default_value = podwall::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// `table` for people, `json` for scripts.
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    pub output: String,
}

#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// This node; only its pods are enforced here [default: the hostname].
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Unix socket for the plugin.
    #[arg(long, default_value = podwall::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Directory of the state store (the attachments in sled, the cluster state in a file).
    #[arg(long, default_value = "/var/lib/podwall")]
    pub state_dir: PathBuf,
    /// Address of `GET /healthz` and `GET /metrics`.
    #[arg(long, default_value = "127.0.0.1:20244")]
    pub health_addr: String,
    /// API server to watch, from this kubeconfig [default: the in-cluster config].
    #[arg(long, env = "KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// How long to wait at start for the first complete list of every watched kind.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub cache_sync_timeout: Duration,
    /// Standalone mode: read Namespace, Pod and NetworkPolicy manifests from DIR (re-read when
    /// files change) instead of watching an API server.
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    /// Full reconcile of the kernel rules against the desired state (e.g. 30s, 5m, 1h).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub sync_period: Duration,
    /// The container runtime's libcni cache (its `results/` hold each ADD's result): an
    /// attachment record the store cannot read is rebuilt from it.
    #[arg(long, default_value = "/var/lib/cni", value_name = "DIR")]
    pub cni_cache_dir: PathBuf,
    /// The node's CNI config directory: in Kubernetes mode, podwall's default conflist there
    /// gets the node's pod range from its Node's spec.podCIDRs.
    #[arg(long, default_value = "/etc/cni/net.d", value_name = "DIR")]
    pub cni_net_dir: PathBuf,
    /// Log lines as `text` (for people) or `json` (one object a line, for log collectors).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// The least severe level logged: error, warn, info, debug or trace. RUST_LOG, when set,
    /// wins (it can set levels per module).
    #[arg(long, default_value = "info", value_parser = ["error", "warn", "info", "debug", "trace"])]
    pub log_level: String,
    /// Where the drop log's lines go (one JSON object a line for each packet a policy
    /// denies): `-` for stdout, a file (appended to), or `none` (no log rules at all).
    #[arg(long, default_value = "-", value_name = "FILE|-|none")]
    pub drop_log: String,
    /// The drop log's lines a second for any one pod, however many flows it sends or
    /// receives; what is held back is told in one line a second.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub drop_log_rate: u32,
    /// The nfnetlink_log group the pod chains log to (one process per node may read a group).
    #[arg(long, default_value_t = 1027)]
    pub drop_log_group: u16,
}

/// A duration as Go writes one (`time.ParseDuration`), so that kube-router's values copy
/// over: numbers with a unit each, summed, fractions allowed (`500ms`, `30s`, `1m30s`,
/// `1.5h`; units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`). Zero is refused: it would spin.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration like 30s, 1m30s or 1h");
    let mut rest = text;
    let mut nanos: f64 = 0.0;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let value: f64 = number.parse().map_err(|_| bad())?;
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        nanos += value * scale;
        rest = after;
    }
    // A year is far beyond any period or timeout a node daemon waits for.
    if !nanos.is_finite() || nanos > 365.0 * 24.0 * 3600e9 {
        return Err(format!("{text:?} is longer than a year"));
    }
    let duration = Duration::from_nanos(nanos.round() as u64);
    if duration.is_zero() {
        return Err("a duration of zero would spin".to_string());
    }
    Ok(duration)
}

/// Validated daemon settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The node whose pods get dispatch entries (`--node-name`).
    pub node_name: String,
    /// The plugin's Unix socket: root only, one request a connection.
    pub socket: PathBuf,
    /// The store of attachments (sled) and the last-known cluster (a file), so that a restart enforces
    /// at once, also while the API server is unreachable.
    pub state_dir: PathBuf,
    /// Where `/healthz` and `/metrics` are served.
    pub health_addr: SocketAddr,
    /// Where the cluster comes from.
    pub source: Source,
    /// How often the kernel is compared with the applied rules and repaired.
    pub sync_period: Duration,
    /// The runtime's libcni cache, to rebuild attachment records the store cannot read.
    pub cni_cache_dir: PathBuf,
    /// The node's CNI config directory, where the default conflist waits for its pod range.
    pub cni_net_dir: PathBuf,
    /// One JSON object per log line instead of text.
    pub log_json: bool,
    /// The default level filter (`RUST_LOG` overrides it).
    pub log_level: String,
    pub drop_log: droplog::Settings,
}

/// Where the daemon learns the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Standalone mode: a directory of manifests, which describes every pod there is.
    Manifests(PathBuf),
    /// The API server: in-cluster, or the one `kubeconfig` names. Start-up without a stored
    /// cluster waits `cache_sync_timeout` for the first complete list of every kind.
    Kubernetes {
        kubeconfig: Option<PathBuf>,
        cache_sync_timeout: Duration,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--health-addr {0:?} is not IP:PORT")]
    HealthAddr(String),
    #[error("--node-name is empty and the hostname cannot be read")]
    NodeName,
    #[error("--{flag} must not be empty")]
    Empty { flag: &'static str },
}

impl Config {
    /// `hostname` is passed in so that validation stays pure.
    pub fn from_args(args: DaemonArgs, hostname: Option<String>) -> Result<Self, ConfigError> {
        let health_addr = args
            .health_addr
            .parse()
            .map_err(|_| ConfigError::HealthAddr(args.health_addr.clone()))?;
        let node_name = args
            .node_name
            .filter(|n| !n.is_empty())
            .or(hostname)
            .ok_or(ConfigError::NodeName)?;
        if args.socket.as_os_str().is_empty() {
            return Err(ConfigError::Empty { flag: "socket" });
        }
        if args.state_dir.as_os_str().is_empty() {
            return Err(ConfigError::Empty { flag: "state-dir" });
        }
        Ok(Config {
            node_name,
            socket: args.socket,
            state_dir: args.state_dir,
            health_addr,
            source: match args.manifests {
                Some(dir) => Source::Manifests(dir),
                None => Source::Kubernetes {
                    kubeconfig: args.kubeconfig,
                    cache_sync_timeout: args.cache_sync_timeout,
                },
            },
            sync_period: args.sync_period,
            cni_cache_dir: args.cni_cache_dir,
            cni_net_dir: args.cni_net_dir,
            log_json: args.log_format == "json",
            log_level: args.log_level,
            drop_log: droplog::Settings {
                output: match args.drop_log.as_str() {
                    "" => return Err(ConfigError::Empty { flag: "drop-log" }),
                    "-" => droplog::Output::Stdout,
                    "none" => droplog::Output::None,
                    path => droplog::Output::File(path.into()),
                },
                rate: args.drop_log_rate,
                group: args.drop_log_group,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let cli =
            Cli::try_parse_from(std::iter::once("podwalld").chain(args.iter().copied())).unwrap();
        Config::from_args(cli.daemon, Some("host-1".into()))
    }

    #[test]
    fn defaults_follow_the_contract() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.socket, PathBuf::from("/run/podwall/podwall.sock"));
        assert_eq!(config.state_dir, PathBuf::from("/var/lib/podwall"));
        assert_eq!(config.health_addr, "127.0.0.1:20244".parse().unwrap());
        assert_eq!(config.node_name, "host-1");
        assert_eq!(
            (config.log_json, config.log_level.as_str()),
            (false, "info")
        );
        assert_eq!(
            config.drop_log,
            droplog::Settings {
                output: droplog::Output::Stdout,
                rate: 50,
                group: 1027
            }
        );
        let config = parse(&["--log-format", "json", "--log-level", "debug"]).unwrap();
        assert_eq!(
            (config.log_json, config.log_level.as_str()),
            (true, "debug")
        );
    }

    #[test]
    fn a_manifests_directory_is_standalone_mode_and_anything_else_kubernetes() {
        assert_eq!(
            parse(&["--manifests", "/etc/podwall/manifests"])
                .unwrap()
                .source,
            Source::Manifests("/etc/podwall/manifests".into())
        );
        let Source::Kubernetes { kubeconfig, .. } = parse(&["--kubeconfig", "/k"]).unwrap().source
        else {
            panic!("no --manifests: Kubernetes mode")
        };
        assert_eq!(kubeconfig, Some(PathBuf::from("/k")));
    }

    #[test]
    fn a_bad_health_address_is_named() {
        assert_eq!(
            parse(&["--health-addr", "localhost"]),
            Err(ConfigError::HealthAddr("localhost".into()))
        );
    }

    #[test]
    fn the_drop_log_goes_to_a_file_or_nowhere_at_a_rate_of_at_least_one() {
        let config = parse(&["--drop-log", "/var/log/drops", "--drop-log-rate", "5"]).unwrap();
        assert_eq!(
            (config.drop_log.output, config.drop_log.rate),
            (droplog::Output::File("/var/log/drops".into()), 5)
        );
        let none = parse(&["--drop-log", "none"]).unwrap();
        assert_eq!(none.drop_log.output, droplog::Output::None);
        for bad in [["--drop-log-rate", "0"], ["--drop-log-group", "70000"]] {
            let cli = Cli::try_parse_from(std::iter::once("podwalld").chain(bad));
            assert!(cli.is_err(), "{bad:?}");
        }
        assert_eq!(
            parse(&["--drop-log", ""]),
            Err(ConfigError::Empty { flag: "drop-log" })
        );
    }

    #[test]
    fn node_name_flag_beats_hostname() {
        assert_eq!(parse(&["--node-name", "n7"]).unwrap().node_name, "n7");
    }

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5").unwrap_err().contains("30s"));
        assert!(parse_duration("0s").is_err());
        assert_eq!(parse(&[]).unwrap().sync_period, Duration::from_secs(300));
    }

    #[test]
    fn durations_take_the_forms_go_writes() {
        // kube-router's flags are Go durations: `--iptables-sync-period=1m30s` copies over.
        for (text, millis) in [
            ("1m30s", 90_000),
            ("1h0m0s", 3_600_000),
            ("1.5h", 5_400_000),
            ("2h45m", 9_900_000),
            ("300ms", 300),
            ("2500us", 2),
            ("2500µs", 2),
            ("2000000ns", 2),
        ] {
            let parsed = parse_duration(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(parsed.as_millis(), millis, "{text}");
        }
        for bad in ["", "m", "1x", "-1s", "1.2.3s", "s1", "1m 30s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} is refused");
        }
        assert!(parse_duration("9000h").unwrap_err().contains("year"));
    }

    #[test]
    fn no_node_name_at_all_is_an_error() {
        let cli = Cli::try_parse_from(["podwalld"]).unwrap();
        assert_eq!(
            Config::from_args(cli.daemon, None),
            Err(ConfigError::NodeName)
        );
    }
}
