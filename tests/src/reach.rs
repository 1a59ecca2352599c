//! Expected versus observed reachability.
//!
//! EXPECTED comes from `podwall_policy::evaluate` over the node's manifests directory plus
//! the node's attached pods (their addresses come from the CNI results, as the daemon takes
//! them); OBSERVED comes from real probes between network namespaces. Both are
//! `podwalld::explain::report::Matrix`, printed like `podwalld explain` (`.` allowed, `X`
//! denied), and a test asserts that they agree, polling until the daemon has caught up with
//! the latest manifests.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use podwall_policy::{evaluate, Endpoint, ObjectKey, Pod as PolicyPod, Protocol, Query, Snapshot};
use podwalld::explain::report::Matrix;

use crate::cni::Pod;
use crate::external::ExternalHost;
use crate::manifests::ManifestDir;
use crate::netns::TestNetns;
use crate::node::Node;
use crate::probe::{self, EchoServer, PROBE_TIMEOUT};

/// One end of a probed connection.
#[derive(Clone)]
pub struct Peer<'a> {
    /// How matrices name it: `ns/name` for a pod, the address for anything else, `node`.
    pub name: String,
    /// Where probes from it run.
    pub netns: &'a TestNetns,
    /// The address probes to it aim at (and that the evaluator judges).
    pub addr: IpAddr,
    /// The node itself: always allowed as a source, never a destination.
    pub is_node: bool,
}

impl<'a> Peer<'a> {
    /// A pod at its IPv4 address, named as the daemon knows it.
    pub fn pod(pod: &'a Pod) -> Self {
        Self::pod_at(pod, pod.ip4())
    }

    /// A pod at its IPv6 address.
    pub fn pod6(pod: &'a Pod) -> Self {
        let addr = pod
            .ips()
            .into_iter()
            .find(IpAddr::is_ipv6)
            .unwrap_or_else(|| panic!("pod {} has no IPv6 address", pod.container_id));
        Self::pod_at(pod, addr)
    }

    /// A pod at one of its addresses.
    pub fn pod_at(pod: &'a Pod, addr: IpAddr) -> Self {
        Peer {
            name: pod_key(pod).to_string(),
            netns: &pod.netns,
            addr,
            is_node: false,
        }
    }

    /// A host outside the cluster, named by its address.
    pub fn external(host: &'a ExternalHost) -> Self {
        Peer {
            name: host.addr().to_string(),
            netns: &host.netns,
            addr: host.addr(),
            is_node: false,
        }
    }

    /// The node itself, as a source of probes (locally originated traffic).
    pub fn node(node: &'a Node) -> Self {
        Peer {
            name: "node".into(),
            netns: &node.netns,
            addr: node.gateway4(),
            is_node: true,
        }
    }

    fn endpoint(&self) -> Endpoint {
        if self.is_node {
            Endpoint::Node
        } else {
            Endpoint::Ip(self.addr)
        }
    }
}

/// Destinations of a matrix over `peers`: every peer but the node.
fn destinations<'p, 'a>(peers: &'p [Peer<'a>]) -> Vec<&'p Peer<'a>> {
    peers.iter().filter(|p| !p.is_node).collect()
}

/// The identity the daemon gives an attachment: `K8S_POD_NAMESPACE/K8S_POD_NAME` from
/// `CNI_ARGS`, else `default/<container id>`.
pub fn pod_key(pod: &Pod) -> ObjectKey {
    let field = |key: &str| {
        pod.cni_args.as_deref().and_then(|args| {
            args.split(';')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        })
    };
    match (field("K8S_POD_NAMESPACE"), field("K8S_POD_NAME")) {
        (Some(ns), Some(name)) => ObjectKey::new(ns, name),
        _ => ObjectKey::new("default", pod.container_id.clone()),
    }
}

/// What the daemon of `node` should enforce: the manifests, with `local` pods (attached to
/// `node`) taking their addresses from their interfaces and, when a Pod manifest names
/// them, its labels and ports; a local pod without a manifest has no labels.
pub fn snapshot(dir: &ManifestDir, node: &Node, local: &[&Pod]) -> Snapshot {
    let loaded = dir.load();
    assert!(
        !loaded.has_fatal_errors(),
        "the test's manifests are unreadable: {:?}",
        loaded.errors
    );
    let mut snap = loaded.snapshot;
    for pod in local {
        let key = pod_key(pod);
        let ips = pod.ips();
        let entry = snap
            .pods
            .entry(key.clone())
            .or_insert_with(|| PolicyPod::new(key, Default::default(), Vec::new()));
        entry.ips = ips;
        entry.node = Some(node.name().into());
    }
    snap
}

/// The evaluator's matrix: every peer as a source, every peer but the node as a destination.
pub fn expected(snap: &Snapshot, peers: &[Peer], protocol: Protocol, port: u16) -> Matrix {
    let dsts = destinations(peers);
    let allowed = peers
        .iter()
        .map(|from| {
            dsts.iter()
                .map(|to| expect(snap, from, to, protocol, port))
                .collect()
        })
        .collect();
    matrix(peers, &dsts, protocol, port, allowed)
}

/// The evaluator's verdict for one connection.
pub fn expect(snap: &Snapshot, from: &Peer, to: &Peer, protocol: Protocol, port: u16) -> bool {
    let query = Query {
        from: from.endpoint(),
        to: to.endpoint(),
        protocol,
        port,
    };
    evaluate(snap, &query)
        .unwrap_or_else(|e| panic!("evaluating {} -> {}: {e}", from.name, to.name))
        .allowed
}

/// Probe every cell of the matrix at once (a denied probe costs its timeout, so they run
/// side by side). Every destination must run an echo server on `port`.
pub fn observed(peers: &[Peer], protocol: Protocol, port: u16) -> Matrix {
    let dsts = destinations(peers);
    let allowed = std::thread::scope(|s| {
        let rows: Vec<Vec<_>> = peers
            .iter()
            .map(|from| {
                dsts.iter()
                    .map(|to| s.spawn(move || probe_once(from, to, protocol, port)))
                    .collect()
            })
            .collect();
        rows.into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|h| h.join().expect("probe thread"))
                    .collect()
            })
            .collect()
    });
    matrix(peers, &dsts, protocol, port, allowed)
}

/// One probe: TCP connect and echo, or a UDP echo.
pub fn probe_once(from: &Peer, to: &Peer, protocol: Protocol, port: u16) -> bool {
    match protocol {
        Protocol::Tcp => probe::tcp_connects(from.netns, to.addr, port, PROBE_TIMEOUT),
        Protocol::Udp => probe::udp_reaches(from.netns, to.addr, port, PROBE_TIMEOUT),
        Protocol::Sctp => panic!("the test kernel has no SCTP sockets: SCTP cannot be probed"),
    }
}

fn matrix(
    sources: &[Peer],
    destinations: &[&Peer],
    protocol: Protocol,
    port: u16,
    allowed: Vec<Vec<bool>>,
) -> Matrix {
    Matrix {
        port,
        protocol,
        sources: sources.iter().map(|p| p.name.clone()).collect(),
        destinations: destinations.iter().map(|p| p.name.clone()).collect(),
        allowed,
    }
}

/// `a -> b: expected allowed, observed denied` for every cell that differs.
pub fn mismatches(expected: &Matrix, observed: &Matrix) -> Vec<String> {
    let word = |ok: bool| if ok { "allowed" } else { "denied" };
    let mut out = Vec::new();
    for (i, src) in expected.sources.iter().enumerate() {
        for (j, dst) in expected.destinations.iter().enumerate() {
            let (e, o) = (expected.allowed[i][j], observed.allowed[i][j]);
            if e != o {
                out.push(format!(
                    "{src} -> {dst} {}/{}: expected {}, observed {}",
                    expected.protocol,
                    expected.port,
                    word(e),
                    word(o)
                ));
            }
        }
    }
    out
}

/// Both matrices and their differences, for a failure message or the demo.
pub fn report(expected: &Matrix, observed: &Matrix) -> String {
    let diff = mismatches(expected, observed);
    format!(
        "EXPECTED\n{}OBSERVED\n{}{}",
        expected.to_table(),
        observed.to_table(),
        if diff.is_empty() {
            "match\n".to_string()
        } else {
            diff.join("\n") + "\n"
        }
    )
}

/// Poll until the probes agree with the evaluator on the current manifests (the daemon
/// re-reads the directory within about a second), or fail after `deadline` showing both
/// matrices. Returns the agreed matrix.
pub fn assert_agree_within(
    deadline: Duration,
    dir: &ManifestDir,
    node: &Node,
    local: &[&Pod],
    peers: &[Peer],
    protocol: Protocol,
    port: u16,
) -> Matrix {
    let snap = snapshot(dir, node, local);
    let want = expected(&snap, peers, protocol, port);
    let end = Instant::now() + deadline;
    loop {
        let got = observed(peers, protocol, port);
        if mismatches(&want, &got).is_empty() {
            return want;
        }
        if Instant::now() >= end {
            panic!(
                "probes disagree with the evaluator after {deadline:?}\n{}\n--- table ---\n{}",
                report(&want, &got),
                node.ruleset_text()
            );
        }
    }
}

/// The matrix cell `from -> to`.
pub fn cell(m: &Matrix, from: &str, to: &str) -> bool {
    let i = m
        .sources
        .iter()
        .position(|s| s == from)
        .unwrap_or_else(|| panic!("no source {from} in {:?}", m.sources));
    let j = m
        .destinations
        .iter()
        .position(|d| d == to)
        .unwrap_or_else(|| panic!("no destination {to} in {:?}", m.destinations));
    m.allowed[i][j]
}

/// Poll one connection until its verdict is `want`; true when it got there within
/// `deadline`.
pub fn settles(
    deadline: Duration,
    from: &Peer,
    to: &Peer,
    protocol: Protocol,
    port: u16,
    want: bool,
) -> bool {
    crate::wait::eventually(deadline, || probe_once(from, to, protocol, port) == want)
}

/// Echo servers (TCP and UDP) on every port of `ports` in every peer but the node; they stop
/// when the returned list is dropped.
pub fn serve(peers: &[Peer], ports: &[u16]) -> Vec<EchoServer> {
    peers
        .iter()
        .filter(|p| !p.is_node)
        .flat_map(|p| ports.iter().map(|port| EchoServer::start(p.netns, *port)))
        .collect()
}
