//! One step's check: sample packets over the addresses of the current world, ask the
//! evaluator what this node must do with each, and hold the kernel's table to it.
//!
//! This node enforces a packet's egress side when its source is one of the node's pods and
//! its ingress side when its destination is; every other side is another node's business
//! and must pass here. So the expected verdict is the evaluator's answer restricted to the
//! local sides, and a packet between two non-local addresses must be accepted (which also
//! catches dispatch entries left behind for addresses the node gave up).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use podwall_policy::evaluate::{Path, Side};
use podwall_policy::model::{Peer, Peers, Phase, PortSpec};
use podwall_policy::selector::Labels;
use podwall_policy::{evaluate, Endpoint, Pod, PodKey, Protocol, Query, Snapshot};

use super::gen::{Rng, PORTS};
use super::kernel::{Packet, Table};

/// What this node must do with a packet, and why.
#[derive(Debug, Clone)]
pub struct Expectation {
    pub packet: Packet,
    pub allowed: bool,
    pub why: String,
}

/// How many addresses a check draws from, at most, per kind.
const POD_ADDRESSES: usize = 40;
const EDGE_ADDRESSES: usize = 30;
/// Peers of each local address per check, and ports per pair.
const PEERS_PER_LOCAL: usize = 10;
const PORTS_PER_PAIR: usize = 3;
/// Pairs with no local address at all.
const FOREIGN_PAIRS: usize = 12;

/// The world as the daemon must see it (docs/semantics.md): the manifests' cluster with this
/// node's attached pods as the attachments say (labels and ports from the Pod of the same
/// name, addresses from CNI); a pod the manifests place on this node that is not attached is
/// adopted when it runs in the pod network with addresses (less those attached here), and
/// counts for nothing otherwise; another node's pod that claims an address held here is
/// stale there.
pub fn snapshot<'a>(
    cluster: &Snapshot,
    node: &str,
    attached: impl IntoIterator<Item = (&'a PodKey, &'a [IpAddr])>,
) -> Snapshot {
    let attached: Vec<(&PodKey, &[IpAddr])> = attached.into_iter().collect();
    let attached_ips: BTreeSet<IpAddr> = attached
        .iter()
        .flat_map(|(_, ips)| ips.iter().copied())
        .collect();
    let here = |pod: &Pod| pod.node.as_deref() == Some(node);
    let mut snap = cluster.clone();
    snap.pods.retain(|key, pod| {
        !here(pod)
            || (pod.is_policed() && !pod.ips.is_empty() && !attached.iter().any(|(k, _)| *k == key))
    });
    for pod in snap.pods.values_mut().filter(|pod| here(pod)) {
        pod.ips.retain(|ip| !attached_ips.contains(ip));
    }
    snap.pods.retain(|_, pod| !here(pod) || !pod.ips.is_empty());
    for (key, ips) in attached {
        let mut pod = cluster
            .pods
            .get(key)
            .cloned()
            .unwrap_or_else(|| Pod::new(key.clone(), Labels::new(), Vec::new()));
        pod.node = Some(node.into());
        pod.ips = ips.to_vec();
        pod.phase = Phase::Active;
        pod.host_network = false;
        snap.pods.insert(key.clone(), pod);
    }
    snap.drop_stale_claims_on(node);
    snap
}

/// Packets to check: every local address against a sample of the others (both ways),
/// some pairs of non-local addresses, on ports around every rule's edges.
pub fn sample(
    snap: &Snapshot,
    node: &str,
    subnet4: Ipv4Addr,
    stale: &BTreeSet<IpAddr>,
    rng: &mut Rng,
) -> Vec<Packet> {
    let local: Vec<IpAddr> = snap
        .pods
        .values()
        .filter(|p| p.node.as_deref() == Some(node))
        .flat_map(|p| p.ips.iter().copied())
        .collect();
    let remote: Vec<IpAddr> = snap
        .pods
        .values()
        .filter(|p| p.node.as_deref() != Some(node))
        .flat_map(|p| p.ips.iter().copied())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut addresses: BTreeSet<IpAddr> = local.iter().copied().collect();
    addresses.extend(rng.sample(&remote, POD_ADDRESSES));
    addresses.extend(stale.iter().copied());
    addresses.extend(rng.sample(&block_edges(snap), EDGE_ADDRESSES));
    let subnet = u32::from(subnet4);
    addresses.extend([
        IpAddr::V4(Ipv4Addr::from(subnet + 1)),
        IpAddr::V4(Ipv4Addr::from(subnet + 254)),
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 254)),
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)),
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    ]);
    let addresses: Vec<IpAddr> = addresses.into_iter().collect();
    let ports = ports(snap);
    let mut pairs = Vec::new();
    for l in &local {
        let same: Vec<IpAddr> = addresses
            .iter()
            .copied()
            .filter(|a| a.is_ipv4() == l.is_ipv4() && a != l)
            .collect();
        for other in rng.sample(&same, PEERS_PER_LOCAL) {
            pairs.push((*l, other));
            pairs.push((other, *l));
        }
    }
    for _ in 0..FOREIGN_PAIRS {
        let (a, b) = (*rng.pick(&addresses), *rng.pick(&addresses));
        if a != b && a.is_ipv4() == b.is_ipv4() {
            pairs.push((a, b));
        }
    }
    let mut packets = BTreeSet::new();
    for (src, dst) in pairs {
        for _ in 0..PORTS_PER_PAIR {
            let protocol = *rng.pick(&[
                Protocol::Tcp,
                Protocol::Tcp,
                Protocol::Tcp,
                Protocol::Udp,
                Protocol::Udp,
                Protocol::Sctp,
            ]);
            packets.insert(Packet {
                src,
                dst,
                protocol,
                port: *rng.pick(&ports),
            });
        }
    }
    packets.into_iter().collect()
}

/// The first and last address of every ipBlock range of every policy, and their
/// neighbours outside it.
fn block_edges(snap: &Snapshot) -> Vec<IpAddr> {
    let mut out = BTreeSet::new();
    for policy in snap.policies.values() {
        for rule in policy.ingress.iter().chain(&policy.egress) {
            let Peers::Only(peers) = &rule.peers else {
                continue;
            };
            for peer in peers {
                let Peer::Block(block) = peer else { continue };
                for range in block.ranges() {
                    out.insert(range.first);
                    out.insert(range.last);
                    out.extend(step(range.first, -1));
                    out.extend(step(range.last, 1));
                }
            }
        }
    }
    out.into_iter().collect()
}

/// `ip` plus `by`, if that stays in the family.
fn step(ip: IpAddr, by: i8) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v4) => {
            let n = u32::from(v4);
            let n = if by < 0 {
                n.checked_sub(1)?
            } else {
                n.checked_add(1)?
            };
            Some(IpAddr::V4(n.into()))
        }
        IpAddr::V6(v6) => {
            let n = u128::from(v6);
            let n = if by < 0 {
                n.checked_sub(1)?
            } else {
                n.checked_add(1)?
            };
            Some(IpAddr::V6(n.into()))
        }
    }
}

/// Ports worth asking about: the usual numbers, both ends of every range and their
/// outside neighbours, every container port, and one nobody names.
fn ports(snap: &Snapshot) -> Vec<u16> {
    let mut out: BTreeSet<u16> = PORTS.into_iter().collect();
    out.insert(31337);
    for policy in snap.policies.values() {
        for rule in policy.ingress.iter().chain(&policy.egress) {
            for pm in &rule.ports {
                if let PortSpec::Range { first, last } = pm.port {
                    out.extend([first.saturating_sub(1), first, last, last.saturating_add(1)]);
                }
            }
        }
    }
    for pod in snap.pods.values().take(200) {
        out.extend(pod.ports.iter().map(|p| p.port));
    }
    out.remove(&0);
    out.into_iter().collect()
}

/// What this node must do with each packet; a pod talking to itself is left out (it never
/// reaches the forward hook).
pub fn expect(snap: &Snapshot, node: &str, packets: &[Packet]) -> Vec<Expectation> {
    // `Snapshot::pod_by_ip`, once for every address: the first policed pod by key owns it.
    let mut owners: BTreeMap<IpAddr, &Pod> = BTreeMap::new();
    for pod in snap.pods.values().filter(|p| p.is_policed()) {
        for ip in &pod.ips {
            owners.entry(*ip).or_insert(pod);
        }
    }
    let local = |ip: &IpAddr| {
        owners
            .get(ip)
            .is_some_and(|p| p.node.as_deref() == Some(node))
    };
    packets
        .iter()
        .filter_map(|packet| {
            let query = Query {
                from: Endpoint::Ip(packet.src),
                to: Endpoint::Ip(packet.dst),
                protocol: packet.protocol,
                port: packet.port,
            };
            let verdict = evaluate(snap, &query).expect("addresses are always answerable");
            let Path::Policies { egress, ingress } = verdict.path else {
                return None;
            };
            let (src_local, dst_local) = (local(&packet.src), local(&packet.dst));
            let allowed = (!src_local || egress.is_open()) && (!dst_local || ingress.is_open());
            let why = format!(
                "egress {}; ingress {}",
                side_text(&egress, src_local),
                side_text(&ingress, dst_local)
            );
            Some(Expectation {
                packet: *packet,
                allowed,
                why,
            })
        })
        .collect()
}

fn side_text(side: &Side, local: bool) -> String {
    if !local {
        return "not judged here".to_string();
    }
    match side {
        Side::NotAPod => "not a pod".to_string(),
        Side::NotIsolated => "not isolated".to_string(),
        Side::Allowed { allowed_by, .. } => {
            let rules: Vec<String> = allowed_by
                .iter()
                .map(|r| format!("{}[{}]", short(&r.policy.to_string()), r.index))
                .collect();
            format!("allowed by {}", rules.join(", "))
        }
        Side::Denied { isolated_by } => {
            let policies: Vec<String> = isolated_by
                .iter()
                .map(|i| {
                    format!(
                        "{}{}",
                        short(&i.policy.to_string()),
                        if i.broken { " (broken)" } else { "" }
                    )
                })
                .collect();
            format!("denied, isolated by {}", policies.join(", "))
        }
        Side::Decided(decision) => decision.to_string(),
    }
}

/// A 253-character name, cut for a report line.
pub fn short(name: &str) -> String {
    if name.len() <= 60 {
        return name.to_string();
    }
    let cut = (0..=40)
        .rev()
        .find(|i| name.is_char_boundary(*i))
        .unwrap_or(0);
    format!("{}…({} chars)", &name[..cut], name.len())
}

/// The packets on which the kernel's table and the expectation differ, one line each. No
/// table means nothing is enforced: every packet passes.
pub fn mismatches(
    table: Option<&Table>,
    snap: &Snapshot,
    expected: &[Expectation],
) -> anyhow::Result<Vec<String>> {
    let name = |ip: &IpAddr| match snap.pod_by_ip(ip) {
        Some(pod) => format!("{ip} ({})", short(&pod.key.to_string())),
        None => ip.to_string(),
    };
    let word = |ok: bool| if ok { "allowed" } else { "denied" };
    let mut out = Vec::new();
    for e in expected {
        let (accepted, trace) = match table {
            Some(table) => {
                let d = table.judge(&e.packet)?;
                (d.accepted, d.trace.join(" → "))
            }
            None => (true, "no table".to_string()),
        };
        if accepted != e.allowed {
            out.push(format!(
                "{} -> {} {}/{}: kernel {}, evaluator {} ({})\n      kernel path: {}",
                name(&e.packet.src),
                name(&e.packet.dst),
                e.packet.protocol.as_str(),
                e.packet.port,
                word(accepted),
                word(e.allowed),
                e.why,
                trace
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use podwall_policy::manifests::load;

    const WORLD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec: {nodeName: here, containers: [{name: c, image: i}]}
status: {phase: Running}
---
apiVersion: v1
kind: Pod
metadata: {name: ghost, namespace: shop, labels: {app: db}}
spec: {nodeName: here, containers: [{name: c, image: i}]}
status: {phase: Running, podIPs: [{ip: 10.1.0.9}]}
---
apiVersion: v1
kind: Pod
metadata: {name: far, namespace: shop, labels: {app: far}}
spec: {nodeName: there, containers: [{name: c, image: i}]}
status: {phase: Running, podIPs: [{ip: 192.0.2.5}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {}
  ingress: [{from: [{ipBlock: {cidr: 192.0.2.0/24, except: [192.0.2.0/30]}}], ports: [{port: 80, endPort: 82}]}]
"#;

    fn world() -> Snapshot {
        let loaded = load([("w.yaml", WORLD)]);
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        let key = PodKey::new("shop", "db");
        let ips = ["10.1.0.7".parse().unwrap()];
        snapshot(&loaded.snapshot, "here", [(&key, &ips[..])])
    }

    fn packet(src: &str, dst: &str, port: u16) -> Packet {
        Packet {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol: Protocol::Tcp,
            port,
        }
    }

    #[test]
    fn local_pods_are_the_attachments_and_the_running_pods_adopted() {
        let snap = world();
        let db = &snap.pods[&PodKey::new("shop", "db")];
        assert_eq!(db.ips, vec!["10.1.0.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(db.labels["app"], "db");
        // Running here with an address, never attached: adopted as the manifest says.
        let ghost = &snap.pods[&PodKey::new("shop", "ghost")];
        assert_eq!(ghost.ips, vec!["10.1.0.9".parse::<IpAddr>().unwrap()]);
        // Attached at the ghost's address instead, db owns it and the ghost is nowhere.
        let loaded = load([("w.yaml", WORLD)]);
        let (key, ips) = (PodKey::new("shop", "db"), ["10.1.0.9".parse().unwrap()]);
        let snap = snapshot(&loaded.snapshot, "here", [(&key, &ips[..])]);
        assert!(!snap.pods.contains_key(&PodKey::new("shop", "ghost")));
    }

    #[test]
    fn another_nodes_claim_on_an_attached_address_is_stale_here() {
        let loaded = load([("w.yaml", WORLD)]);
        let key = PodKey::new("shop", "db");
        let ips = ["192.0.2.5".parse().unwrap()];
        let snap = snapshot(&loaded.snapshot, "here", [(&key, &ips[..])]);
        assert!(snap.pods[&PodKey::new("shop", "far")].ips.is_empty());
        assert_eq!(snap.pod_by_ip(&ips[0]).unwrap().key, key);
    }

    #[test]
    fn only_local_sides_are_expected_to_be_enforced() {
        let snap = world();
        let got = expect(
            &snap,
            "here",
            &[
                packet("192.0.2.5", "10.1.0.7", 80),
                packet("192.0.2.1", "10.1.0.7", 80),
                packet("192.0.2.5", "10.1.0.7", 83),
                packet("10.1.0.7", "192.0.2.5", 1),
                packet("192.0.2.1", "192.0.2.5", 1),
            ],
        );
        let allowed: Vec<bool> = got.iter().map(|e| e.allowed).collect();
        assert_eq!(allowed, [true, false, false, true, true]);
    }

    #[test]
    fn samples_cover_range_edges_and_every_local_address() {
        let snap = world();
        let mut rng = Rng::new(1);
        let packets = sample(
            &snap,
            "here",
            Ipv4Addr::new(10, 1, 0, 0),
            &BTreeSet::new(),
            &mut rng,
        );
        let local: IpAddr = "10.1.0.7".parse().unwrap();
        assert!(packets.iter().any(|p| p.src == local));
        assert!(packets.iter().any(|p| p.dst == local));
        let ports: BTreeSet<u16> = ports(&snap).into_iter().collect();
        assert!(ports.is_superset(&[79, 80, 82, 83].into_iter().collect()));
        let edges = block_edges(&snap);
        for ip in ["192.0.2.3", "192.0.2.4", "192.0.2.255", "192.0.3.0"] {
            assert!(edges.contains(&ip.parse().unwrap()), "{ip}: {edges:?}");
        }
    }
}
