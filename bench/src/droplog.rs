//! What the drop log costs per packet, side by side in one run: the same standalone node
//! with the drop log on (the default), with it off (`--drop-log none`: no log rules), and,
//! when given, an earlier podwalld build (before the rules had counters). On each, in an
//! order that rotates every round:
//! - **allowed**: new connections a second from a client pod to a server pod that ten
//!   policies select, the client admitted by the last one's rule (each new connection walks
//!   the whole chain up to it; established packets never reach a pod chain);
//! - **denied**: a flood of UDP datagrams from a pod no policy admits, to ports of the
//!   server: datagrams a second the sender gets through its own stack and the node's
//!   forward path (the drop happens in the sender's context), and the daemon's CPU time
//!   while the flood lasts (the drop log's reading, limiting and writing).

use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use podwall_tests::manifests::{documents, namespace, PodManifest};
use podwall_tests::node::{Node, NodeOptions};
use podwall_tests::Pod;

use crate::peers::packet::connections;
use crate::peers::world::TARGET_PORT;
use crate::stats::{order, ratio, Samples};

/// Policies selecting the server; the client is admitted by the last.
const POLICIES: usize = 10;

#[derive(Debug, Clone)]
pub struct Options {
    pub rounds: usize,
    pub burst: Duration,
    pub flood: Duration,
    /// An earlier podwalld, measured beside this build.
    pub baseline: Option<PathBuf>,
}

impl Options {
    pub fn full() -> Self {
        Self {
            rounds: 7,
            burst: Duration::from_secs(2),
            flood: Duration::from_secs(2),
            baseline: None,
        }
    }

    pub fn smoke() -> Self {
        Self {
            rounds: 1,
            burst: Duration::from_millis(300),
            flood: Duration::from_millis(300),
            baseline: None,
        }
    }
}

/// One node's figures over the rounds.
#[derive(Debug, Default)]
pub struct Row {
    pub name: String,
    pub rate: Vec<f64>,
    pub connect: Samples,
    pub flood_rate: Vec<f64>,
    pub flood_cpu: Vec<Duration>,
    pub lines: usize,
}

#[derive(Debug)]
pub struct Report {
    pub rows: Vec<Row>,
    pub flood: Duration,
}

struct Contestant {
    node: Node,
    client: Pod,
    intruder: Pod,
    server: Pod,
}

/// The world: namespace `app`, the server, the client, the intruder, and the policies.
fn world() -> String {
    let mut docs = vec![namespace("app", &[])];
    for role in ["server", "client", "intruder"] {
        docs.push(
            PodManifest::new("app", role)
                .labels(&[("role", role)])
                .yaml(),
        );
    }
    for i in 0..POLICIES {
        let from = if i + 1 == POLICIES {
            "client".to_string()
        } else {
            format!("peer-{i}")
        };
        docs.push(format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
             metadata: {{name: server-{i}, namespace: app}}\n\
             spec:\n  podSelector: {{matchLabels: {{role: server}}}}\n  \
             ingress: [{{from: [{{podSelector: {{matchLabels: {{role: {from}}}}}}}], ports: [{{port: {TARGET_PORT}}}]}}]\n"
        ));
    }
    documents(&docs)
}

fn contestant(label: &str, daemon: Option<PathBuf>, args: &[&str]) -> Contestant {
    let mut node = Node::with_options(
        label,
        NodeOptions {
            manifests: true,
            daemon,
            ..NodeOptions::default()
        },
    );
    node.manifests().write("world.yaml", &world());
    node.daemon_args = args.iter().map(|a| a.to_string()).collect();
    node.start_daemon();
    let [server, client, intruder] = ["server", "client", "intruder"]
        .map(|role| Pod::named(&format!("{label}-{role}"), "app", role));
    node.add_all(&[&server, &client, &intruder]);
    Contestant {
        node,
        client,
        intruder,
        server,
    }
}

pub fn run(options: &Options) -> Result<Report> {
    let mut contestants = vec![
        ("drop log on", contestant("dl-on", None, &[])),
        (
            "drop log off",
            contestant("dl-off", None, &["--drop-log", "none"]),
        ),
    ];
    if let Some(baseline) = &options.baseline {
        let name = "before counters";
        contestants.push((name, contestant("dl-base", Some(baseline.clone()), &[])));
    }
    let mut rows: Vec<Row> = (contestants.iter())
        .map(|(name, _)| Row {
            name: name.to_string(),
            ..Row::default()
        })
        .collect();
    for round in 0..options.rounds {
        for i in order(contestants.len(), round) {
            let c = &contestants[i].1;
            let addr = c.server.ip4();
            let (rate, latencies) =
                connections(&c.client.netns, &c.server.netns, addr, options.burst)
                    .with_context(|| format!("connections on {}", contestants[i].0))?;
            rows[i].rate.push(rate);
            rows[i].connect.0.extend(latencies);
            let (sent, cpu) = flood(c, options.flood)?;
            rows[i].flood_rate.push(sent);
            rows[i].flood_cpu.push(cpu);
        }
    }
    for (row, (_, c)) in rows.iter_mut().zip(&contestants) {
        row.lines = c.node.drop_log().len();
    }
    Ok(Report {
        rows,
        flood: options.flood,
    })
}

/// Datagrams a second from the intruder to the server's ports for `length`, and the daemon's
/// CPU time meanwhile (and for the 0.3 s after, while it writes what the kernel passed).
fn flood(c: &Contestant, length: Duration) -> Result<(f64, Duration)> {
    let pid = c.node.daemon_pid().context("the daemon runs")?;
    let socket = (c.intruder.netns)
        .run_in(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
        .context("a UDP socket in the intruder")?;
    let target = c.server.ip4();
    let before = cpu_time(pid);
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < length {
        for _ in 0..1000 {
            let port = 1 + (sent % 60_000) as u16;
            if socket.send_to(b"x", (target, port)).is_ok() {
                sent += 1;
            }
        }
    }
    let rate = sent as f64 / start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    Ok((rate, cpu_time(pid).saturating_sub(before)))
}

/// A process's CPU time, every thread's, as the scheduler accounts it.
fn cpu_time(pid: u32) -> Duration {
    let nanos: u64 = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let off = (self.rows.iter())
            .find(|r| r.name == "drop log off")
            .map(|r| (median(&r.rate), median(&r.flood_rate)));
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| node | allowed conn/s | vs drop log off | connect p50 µs | connect p99 µs | denied datagrams/s | vs drop log off | daemon CPU ms per s of flood | drop log lines |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for row in &self.rows {
            let (rate, flood) = (median(&row.rate), median(&row.flood_rate));
            let cpu: Vec<f64> = (row.flood_cpu.iter())
                .map(|d| d.as_secs_f64() * 1e3 / self.flood.as_secs_f64())
                .collect();
            let (vs_rate, vs_flood) = off.map_or((String::new(), String::new()), |(r, fl)| {
                (ratio(r, rate), ratio(fl, flood))
            });
            let _ = writeln!(
                out,
                "| {} | {rate:.0} | {vs_rate} | {:.0} | {:.0} | {flood:.0} | {vs_flood} | {:.1} | {} |",
                row.name,
                row.connect.p50().as_secs_f64() * 1e6,
                row.connect.p99().as_secs_f64() * 1e6,
                median(&cpu),
                row.lines,
            );
        }
        f.write_str(&out)
    }
}
