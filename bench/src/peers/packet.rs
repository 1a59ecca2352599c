//! Per packet: one TCP stream's throughput (iperf3) and new connections per second with
//! their connect latency, from a client pod to the target pod on an allowed path (the
//! `probe-by-label` policy admits the client; the target is behind every policy of its
//! group as well), on four nodes: no rules at all; conntrack only (br_netfilter on and one
//! `ct state established,related accept` rule: what any stateful filter on a bridge pays);
//! podwall; the kube-router shape.
//!
//! Established packets take the conntrack fast path in both enforcers, so the stream mostly
//! measures the bridge; new connections pay for the whole policy walk.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::socket::{setsockopt, sockopt};
use podwall_tests::cni::{result_ips, Pod};
use podwall_tests::manifests::PodManifest;
use podwall_tests::netns::TestNetns;
use podwall_tests::node::{Node, NodeOptions};
use serde_json::Value;

use super::pair::{first_v4, Op, Pair};
use super::podwall::PodwallNode;
use super::world::TARGET_PORT;
use crate::stats::{order, Samples};

/// The client pod's object: admitted by the target's `probe-by-label` policy.
pub const CLIENT: (&str, &str) = ("probe", "client");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    NoRules,
    ConntrackOnly,
    Podwall,
    KubeRouter,
}

impl Path {
    pub const ALL: [Path; 4] = [
        Path::NoRules,
        Path::ConntrackOnly,
        Path::Podwall,
        Path::KubeRouter,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Path::NoRules => "no rules",
            Path::ConntrackOnly => "conntrack only",
            Path::Podwall => "podwall",
            Path::KubeRouter => "kube-router shape",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Row {
    /// Gbit/s of each round's stream.
    pub gbits: Vec<f64>,
    /// Connections per second of each round.
    pub rate: Vec<f64>,
    /// Every connect's latency.
    pub connect: Samples,
}

/// The node without rules and its two pods.
struct Plain {
    _node: Node,
    client: Pod,
    server: Pod,
}

/// `rounds` rounds of a `stream`-long iperf3 stream and a `burst` of connections per path.
pub fn measure(
    pair: &mut Pair,
    rounds: usize,
    stream: Duration,
    burst: Duration,
) -> Result<Vec<(Path, Row)>> {
    let plain = plain_node("pkt-plain", None)?;
    let tracked = plain_node("pkt-ct", Some(CONNTRACK_ONLY))?;
    let pw_client = podwall_client(&pair.pw, "pkt-pw")?;
    let kr_client = Pod::named("pkt-kr", CLIENT.0, CLIENT.1);
    let result = pair
        .kr
        .libcni("add", &pair.kr_conflist, &kr_client)
        .map_err(|e| anyhow!("ADD the kube-router node's client: {e}"))?;
    let ip = first_v4(&result_ips(&result)).context("no IPv4 address for the client")?;
    let kr_yaml = PodManifest::new(CLIENT.0, CLIENT.1)
        .labels(&[("role", "client")])
        .remote(pair.kr.name(), &[ip])
        .yaml();
    pair.kr_apply(&Op::Apply(kr_yaml));
    pair.resync()?;

    let ends = |path: Path| -> (&TestNetns, &TestNetns, IpAddr) {
        match path {
            Path::NoRules => (&plain.client.netns, &plain.server.netns, plain.server.ip4()),
            Path::ConntrackOnly => (
                &tracked.client.netns,
                &tracked.server.netns,
                tracked.server.ip4(),
            ),
            Path::Podwall => (
                &pw_client.netns,
                &pair.pw.pods[0].netns,
                pair.pw.pods[0].ip4(),
            ),
            Path::KubeRouter => (
                &kr_client.netns,
                &pair.kr_pods[0].netns,
                pair.kr_pods[0].ip4(),
            ),
        }
    };
    let mut rows: Vec<(Path, Row)> = Path::ALL.iter().map(|&p| (p, Row::default())).collect();
    for round in 0..rounds {
        for i in order(Path::ALL.len(), round) {
            let (client, server, addr) = ends(Path::ALL[i]);
            let row = &mut rows[i].1;
            row.gbits.push(
                iperf(client, server, addr, stream)
                    .with_context(|| format!("iperf3 on the {} path", Path::ALL[i].name()))?,
            );
            let (rate, latencies) = connections(client, server, addr, burst)
                .with_context(|| format!("connections on the {} path", Path::ALL[i].name()))?;
            row.rate.push(rate);
            row.connect.0.extend(latencies);
        }
    }
    Ok(rows)
}

/// The client pod on `pw`'s node (`tag` names its netns), its Pod object created first as
/// the scheduler would.
pub(crate) fn podwall_client(pw: &PodwallNode, tag: &str) -> Result<Pod> {
    let client = Pod::named(tag, CLIENT.0, CLIENT.1);
    let yaml = PodManifest::new(CLIENT.0, CLIENT.1)
        .labels(&[("role", "client")])
        .remote(pw.node().name(), &[])
        .yaml();
    pw.apply(&Op::Apply(yaml))?;
    pw.cluster.attach(0, &client);
    Ok(client)
}

/// The conntrack-only node's rules.
const CONNTRACK_ONLY: &str = "table inet tracked {
    chain forward {
        type filter hook forward priority filter; policy accept;
        ct state established,related accept
    }
}
";

/// A node with bridge alone, and with `rules` loaded and bridged traffic passed through
/// netfilter (br_netfilter) when given.
fn plain_node(label: &str, rules: Option<&str>) -> Result<Plain> {
    let node = Node::with_options(label, NodeOptions::default());
    if let Some(rules) = rules {
        node.netns
            .set_sysctl("net.bridge.bridge-nf-call-iptables", "1")
            .context("turning br_netfilter on")?;
        let path = node.dir().join("rules.nft");
        std::fs::write(&path, rules).context("writing the rules")?;
        node.netns
            .exec(&["nft", "-f", &path.display().to_string()])
            .and_then(podwall_tests::cmd::Output::ok)
            .context("loading the rules")?;
    }
    let conflist = node.write_conflist("bridge", &node.conflist_json("1.0.0", None));
    let client = Pod::new(&format!("{label}-c"));
    let server = Pod::new(&format!("{label}-s"));
    for pod in [&client, &server] {
        node.libcni("add", &conflist, pod)
            .map_err(|e| anyhow!("ADD on the node without rules: {e}"))?;
    }
    Ok(Plain {
        _node: node,
        client,
        server,
    })
}

/// One iperf3 stream of `length` from `client` to `server` at `addr`; Gbit/s received.
pub(crate) fn iperf(
    client: &TestNetns,
    server: &TestNetns,
    addr: IpAddr,
    length: Duration,
) -> Result<f64> {
    let port = TARGET_PORT.to_string();
    let mut daemon: Child = server
        .command("iperf3")
        .args(["-s", "-1", "-p", &port])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 -s")?;
    // iperf3 takes whole seconds (a fraction reads as 0: forever).
    let secs = length.as_secs().max(1).to_string();
    let target = addr.to_string();
    let mut last = String::new();
    let mut out = None;
    // The server needs a moment to listen; iperf3 -J reports a refused connection in its
    // JSON (and exits 0), so such runs are retried.
    for _ in 0..50 {
        let o = client.exec(&["iperf3", "-J", "-c", &target, "-p", &port, "-t", &secs])?;
        let json: Value = serde_json::from_str(&o.stdout).unwrap_or(Value::Null);
        if o.success() && json.get("error").is_none() {
            out = Some(json);
            break;
        }
        last = o.stdout;
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let json = out.with_context(|| format!("iperf3 -c never ran:\n{last}"))?;
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .with_context(|| format!("iperf3 reported no received rate:\n{json}"))
}

/// New connections from `client` to `server` at `addr` for `burst`, one after another:
/// connections per second and each connect's latency. Each connection is reset on close,
/// so that no TIME_WAIT sockets pile up over the rounds.
pub(crate) fn connections(
    client: &TestNetns,
    server: &TestNetns,
    addr: IpAddr,
    burst: Duration,
) -> Result<(f64, Vec<Duration>)> {
    let listener = server
        .run_in(|| listen(TARGET_PORT))
        .context("binding the connection server")?;
    let stop = Arc::new(AtomicBool::new(false));
    // A blocking accept loop (a polling one would take a core from the client); the last
    // connection below wakes it to see the stop flag.
    let accept = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::Relaxed) || conn.is_err() {
                    return;
                }
            }
        })
    };
    let target = SocketAddr::new(addr, TARGET_PORT);
    let result = client.run_in(|| -> Result<(f64, Vec<Duration>)> {
        let mut latencies = Vec::new();
        let start = Instant::now();
        while start.elapsed() < burst {
            let t0 = Instant::now();
            let stream = TcpStream::connect_timeout(&target, Duration::from_secs(1))
                .with_context(|| format!("allowed connection {} failed", latencies.len() + 1))?;
            latencies.push(t0.elapsed());
            setsockopt(
                &stream.as_fd(),
                sockopt::Linger,
                &nix::libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                },
            )
            .context("SO_LINGER")?;
        }
        if latencies.is_empty() {
            bail!("no connection in {burst:?}");
        }
        Ok((
            latencies.len() as f64 / start.elapsed().as_secs_f64(),
            latencies,
        ))
    });
    stop.store(true, Ordering::Relaxed);
    // A connection of the burst still queued can show the thread the flag first: it then
    // closes the listener, and a refused wake means just that.
    match client.run_in(|| TcpStream::connect_timeout(&target, Duration::from_secs(1))) {
        Err(e) if e.kind() != std::io::ErrorKind::ConnectionRefused => {
            return Err(e).context("waking the connection server")
        }
        _ => {}
    }
    let _ = accept.join();
    result
}

/// A TCP listener with a deep accept queue: with std's 128, a burst of connections that
/// outruns the accept thread fills it, and the kernel then drops SYNs, which would show
/// as one-second retransmits that are not the path's doing.
fn listen(port: u16) -> Result<TcpListener> {
    use nix::sys::socket::{
        bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(std::net::SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)),
    )?;
    listen(&fd, Backlog::MAXCONN)?;
    Ok(TcpListener::from(fd))
}
