//! The kube-router baseline of the peer benchmark: what kube-router's network policy
//! controller (`--run-firewall`, iptables mode) would feed to `ipset restore` and
//! `iptables-restore` on one node for the same NetworkPolicies ([`generate`], pure; the caller
//! times it), and the loader that applies that inside a node's namespace and accounts for the
//! loaders' time, CPU and memory ([`apply`], [`clear`]).
//!
//! The shape is kube-router's (`pkg/controllers/netpol`):
//! - `INPUT`, `FORWARD` and `OUTPUT` jump to `KUBE-ROUTER-INPUT`, `-FORWARD` and `-OUTPUT`,
//!   then accept what a pod chain marked 0x20000.
//! - Every local pod gets a `KUBE-POD-FW-<hash>` chain, reached from `KUBE-ROUTER-FORWARD`
//!   for `-d` and for `-s` its address (routed, and `--physdev-is-bridged`), from
//!   `KUBE-ROUTER-OUTPUT` for both and from `KUBE-ROUTER-INPUT` for `-s`. It accepts
//!   established traffic, drops invalid traffic, accepts traffic from the node, runs the
//!   chains of the policies that select the pod (`KUBE-NWPLCY-DEFAULT`, which marks
//!   everything, in a direction none isolates), NFLOGs and REJECTs what none marked 0x10000,
//!   clears that mark and sets 0x20000.
//! - A policy chain `KUBE-NWPLCY-<hash>` has a MARK 0x10000 and a RETURN rule per peer set
//!   and port entry of each rule. The policy's pods are `KUBE-DST-<hash>` (ingress) or
//!   `KUBE-SRC-<hash>` (egress); a rule's pod peers are one hash:ip set; an ipBlock is a
//!   hash:net set with its excepts as `nomatch` entries (a /0 as two /1s: hash:net takes no
//!   /0); a named port becomes, per number it resolves to, a hash:ip set of the destination
//!   pods that declare it, matched with `--dport` that number.
//! - Names are 16 base32 characters of a hash of the object's names. The ipset script fills
//!   a TMP set per set type, `swap`s it with the real set and destroys the TMP sets, all in
//!   one `ipset restore -exist`. The iptables document is the whole filter table, restored
//!   without `--noflush` as kube-router restores its edited `iptables-save`, so a resync
//!   replaces every chain in one transaction and leaves no duplicates.
//!
//! Departures, where kube-router's verdicts differ from Kubernetes' and so from
//! `podwall_policy::evaluate`:
//! - A policy has one chain per direction it isolates; the pod chain jumps to ingress chains
//!   for `-d` its address and to egress chains for `-s`. kube-router's one chain per policy
//!   holds both directions' rules and is jumped to for either, so one pod's egress rule can
//!   admit traffic into another pod of the same policy.
//! - Each ipBlock peer has its own hash:net set. kube-router puts a rule's blocks in one,
//!   where hash:net's most-specific-entry match lets one block's except cut into another.
//! - Egress named ports resolve on every pod, the rule's peer set matched alongside.
//!   kube-router resolves them on the rule's peer pods only (with no `to`, on the policy's
//!   namespace, then admits the number towards any address) and drops them for ipBlocks.
//! - No ICMP accepts in `KUBE-NWPLCY-DEFAULT` (they would skip the other end's chain; the
//!   model has no ICMP), no service or node-port RETURNs in `KUBE-ROUTER-INPUT` (no services).
//! - No sync version in chain names (kube-router hashes a timestamp into them), so the output
//!   is deterministic; the whole-table restore replaces the chains all the same.
//!
//! IPv4 only: IPv6 addresses and blocks are skipped (kube-router writes them to `ip6tables`
//! alike). Traffic from a pod to the node's own addresses passes the pod's egress chain, where
//! an ipBlock may name the node; the evaluator takes the node for an address no ipBlock
//! names, so the tests never probe the node as a destination.
//!
//! [`apply`] skips kube-router's `iptables-save` and `ipset save` (the rig node's filter
//! table holds nothing else), which flatters kube-router's cost a little.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use podwall_policy::model::{NamespaceScope, Peer, Peers, PortMatch, PortSpec, Rule};
use podwall_policy::selector::Labels;
use podwall_policy::{
    Direction, Family, Pod, PodKey, Policy, PolicyKey, Protocol, Selector, Snapshot,
};
use podwall_tests::cmd;
use podwall_tests::netns::TestNetns;

/// Where `INPUT` sends everything: traffic from local pods to the node.
pub const INPUT_CHAIN: &str = "KUBE-ROUTER-INPUT";
/// Where `FORWARD` sends everything: traffic to and from local pods, routed or bridged.
pub const FORWARD_CHAIN: &str = "KUBE-ROUTER-FORWARD";
/// Where `OUTPUT` sends everything: traffic from the node to local pods.
pub const OUTPUT_CHAIN: &str = "KUBE-ROUTER-OUTPUT";
/// Where a pod goes in a direction no policy isolates: it marks everything allowed.
pub const DEFAULT_CHAIN: &str = "KUBE-NWPLCY-DEFAULT";
const POD_CHAIN_PREFIX: &str = "KUBE-POD-FW-";
const POLICY_CHAIN_PREFIX: &str = "KUBE-NWPLCY-";
const SRC_SET_PREFIX: &str = "KUBE-SRC-";
const DST_SET_PREFIX: &str = "KUBE-DST-";
const TMP_SET_PREFIX: &str = "TMP-";

/// Set by a policy chain that admits the packet; the pod chain rejects what lacks it.
const ALLOWED_MARK: &str = "0x10000/0x10000";
/// Set by a pod chain the packet passed; the built-in chains accept on it.
const PASSED_MARK: &str = "0x20000/0x20000";

/// The built-in chains and the kube-router chain each one jumps to.
const BUILTINS: [(&str, &str); 3] = [
    ("INPUT", INPUT_CHAIN),
    ("FORWARD", FORWARD_CHAIN),
    ("OUTPUT", OUTPUT_CHAIN),
];

/// The two loader inputs for one node, and the sets the ipset script fills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scripts {
    /// For `ipset restore -exist`.
    pub ipset: String,
    /// For `iptables-restore`: the whole filter table.
    pub iptables: String,
    /// Every set `ipset` fills; [`apply`] destroys the other `KUBE-SRC-`/`KUBE-DST-` sets.
    pub sets: BTreeSet<String>,
}

// ---- names ----

/// `KUBE-POD-FW-<hash>` of a pod.
pub fn pod_chain(pod: &PodKey) -> String {
    format!("{POD_CHAIN_PREFIX}{}", hash16(&[&pod.namespace, &pod.name]))
}

/// `KUBE-NWPLCY-<hash>` of a policy's rules in one direction.
pub fn policy_chain(policy: &PolicyKey, direction: Direction) -> String {
    let direction = direction.to_string();
    format!(
        "{POLICY_CHAIN_PREFIX}{}",
        hash16(&[&policy.namespace, &policy.name, &direction])
    )
}

/// The policy's own pods: destinations of its ingress rules, sources of its egress rules.
fn target_set(policy: &PolicyKey, direction: Direction) -> String {
    let prefix = match direction {
        Direction::Ingress => DST_SET_PREFIX,
        Direction::Egress => SRC_SET_PREFIX,
    };
    format!("{prefix}{}", hash16(&[&policy.namespace, &policy.name]))
}

/// A set of rule `rule` of a policy: `what` (`pod`, `ipblock`, `namedport`) number `index`.
fn rule_set(
    prefix: &str,
    policy: &PolicyKey,
    direction: Direction,
    rule: usize,
    what: &str,
    index: usize,
) -> String {
    let rule = format!("{direction}rule{rule}");
    let index = index.to_string();
    format!(
        "{prefix}{}",
        hash16(&[&policy.namespace, &policy.name, &rule, what, &index])
    )
}

/// 16 base32 characters (80 bits) of a 128-bit FNV-1a over the parts, as kube-router takes
/// 16 of sha256's; the parts are separated, so `a`+`bc` and `ab`+`c` differ.
fn hash16(parts: &[&str]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    // An odd multiplier with dense bits (the golden ratio), for the final mix.
    const MIX: u128 = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835;
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for (i, part) in parts.iter().enumerate() {
        let separator = (i > 0).then_some(0x1f_u8);
        for b in separator.into_iter().chain(part.bytes()) {
            h ^= u128::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    // FNV's sparse prime moves a late byte's change into few high bits; the characters come
    // from the high bits, so mix every bit into them first.
    for _ in 0..2 {
        h ^= h >> 64;
        h = h.wrapping_mul(MIX);
    }
    (0..16)
        .map(|i| char::from(ALPHABET[((h >> (123 - 5 * i)) & 31) as usize]))
        .collect()
}

// ---- the generator ----

/// The ipset and iptables-restore input for the pods of `node`. See the module doc for the
/// shape and where it departs from kube-router.
pub fn generate(snap: &Snapshot, node: &str) -> Scripts {
    let world = World::new(snap);
    let mut fw = Firewall::default();
    for (builtin, chain) in BUILTINS {
        let uuid = hash16(&[builtin, chain]);
        fw.chain(
            builtin,
            vec![
                format!(
                    "{} -j {chain}",
                    comment(&format!("kube-router netpol - {uuid}"))
                ),
                format!(
                    "{} -m mark --mark {PASSED_MARK} -j ACCEPT",
                    comment("KUBE-ROUTER rule to explicitly ACCEPT traffic that comply to network policies")
                ),
            ],
        );
    }
    fw.chain(
        DEFAULT_CHAIN,
        vec![format!(
            "{} -j MARK --set-xmark {ALLOWED_MARK}",
            comment("rule to mark traffic matching a network policy")
        )],
    );
    for policy in snap.policies.values() {
        world.policy_chains(policy, &mut fw);
    }
    let mut jumps = Jumps::default();
    for pod in world
        .pods
        .iter()
        .filter(|p| p.pod.node.as_deref() == Some(node))
    {
        let chain = pod_chain(&pod.pod.key);
        fw.chain(&chain, world.pod_chain_rules(pod));
        jumps.intercept(pod, &chain);
    }
    fw.chain(FORWARD_CHAIN, jumps.forward);
    fw.chain(INPUT_CHAIN, jumps.input);
    fw.chain(OUTPUT_CHAIN, jumps.output);
    fw.render()
}

/// The rules of kube-router's top chains that send a local pod's traffic to its chain.
#[derive(Default)]
struct Jumps {
    input: Vec<String>,
    forward: Vec<String>,
    output: Vec<String>,
}

impl Jumps {
    /// Traffic to the pod (routed, bridged, from the node) and from it (routed, bridged, to
    /// the node) goes through `chain`.
    fn intercept(&mut self, pod: &PodAddrs, chain: &str) {
        let (name, ns) = (&pod.pod.key.name, &pod.pod.key.namespace);
        let to = comment(&format!(
            "rule to jump traffic destined to POD name:{name} namespace: {ns} to chain {chain}"
        ));
        let from = comment(&format!(
            "rule to jump traffic from POD name:{name} namespace: {ns} to chain {chain}"
        ));
        let bridged = "-m physdev --physdev-is-bridged";
        for ip in &pod.ips {
            self.forward.extend([
                format!("-d {ip} {to} -j {chain}"),
                format!("-d {ip} {bridged} {to} -j {chain}"),
                format!("-s {ip} {from} -j {chain}"),
                format!("-s {ip} {bridged} {from} -j {chain}"),
            ]);
            self.input.push(format!("-s {ip} {from} -j {chain}"));
            self.output.extend([
                format!("-d {ip} {to} -j {chain}"),
                format!("-s {ip} {from} -j {chain}"),
            ]);
        }
    }
}

/// A policed pod and its IPv4 addresses: the only pods a set can hold.
struct PodAddrs<'a> {
    pod: &'a Pod,
    ips: Vec<Ipv4Addr>,
}

/// The snapshot, indexed once for the generator as kube-router's informers index it: a
/// peer's pods are looked up namespace by namespace, never by scanning the cluster.
struct World<'a> {
    snap: &'a Snapshot,
    /// Policed pods with an IPv4 address, by key.
    pods: Vec<PodAddrs<'a>>,
    /// Each namespace's labels and its pods (indices into `pods`).
    namespaces: BTreeMap<&'a str, (Labels, Vec<usize>)>,
}

/// One entry of a rule's `ports`, as iptables matches it.
#[derive(Default)]
struct PortTerm {
    protocol: Option<Protocol>,
    dport: Option<String>,
    /// A named port's destinations that resolve it to `dport`.
    set: Option<String>,
}

impl<'a> World<'a> {
    fn new(snap: &'a Snapshot) -> Self {
        let pods: Vec<PodAddrs<'a>> = snap
            .pods
            .values()
            .filter(|pod| pod.is_policed())
            .map(|pod| PodAddrs {
                pod,
                ips: pod.ips.iter().filter_map(v4).collect(),
            })
            .filter(|p| !p.ips.is_empty())
            .collect();
        let mut namespaces: BTreeMap<&str, (Labels, Vec<usize>)> = BTreeMap::new();
        for (i, p) in pods.iter().enumerate() {
            let ns = p.pod.key.namespace.as_str();
            namespaces
                .entry(ns)
                .or_insert_with(|| (snap.namespace_labels(ns), Vec::new()))
                .1
                .push(i);
        }
        World {
            snap,
            pods,
            namespaces,
        }
    }

    /// The pods of namespace `ns` that `selector` selects.
    fn pods_in(&self, ns: &str, selector: &'a Selector) -> impl Iterator<Item = &PodAddrs<'a>> {
        let members = self.namespaces.get(ns).map_or(&[][..], |(_, m)| m);
        members
            .iter()
            .map(|&i| &self.pods[i])
            .filter(move |p| selector.matches(&p.pod.labels))
    }

    /// The pods a selector peer selects: its namespaces first, then their pods.
    fn peer_pods(&self, namespaces: &NamespaceScope, pods: &'a Selector) -> Vec<&PodAddrs<'a>> {
        match namespaces {
            NamespaceScope::Named(ns) => self.pods_in(ns, pods).collect(),
            NamespaceScope::Matching(selector) => self
                .namespaces
                .iter()
                .filter(|(_, (labels, _))| selector.matches(labels))
                .flat_map(|(ns, _)| self.pods_in(ns, pods))
                .collect(),
        }
    }

    /// The chains of `policy`, one per direction it isolates, and their sets.
    fn policy_chains(&self, policy: &Policy, fw: &mut Firewall) {
        let targets: Vec<&PodAddrs> = self
            .pods_in(&policy.key.namespace, &policy.pod_selector)
            .collect();
        for direction in [Direction::Ingress, Direction::Egress] {
            if !policy.isolates(direction) {
                continue;
            }
            fw.set(
                target_set(&policy.key, direction),
                SetKind::Ip,
                addresses(targets.iter().copied()),
            );
            let mut rules = Vec::new();
            for (index, rule) in policy.rules(direction).iter().enumerate() {
                rules.extend(self.rule_lines(policy, direction, index, rule, &targets, fw));
            }
            fw.chain(&policy_chain(&policy.key, direction), rules);
        }
    }

    /// The MARK and RETURN pair of every peer set and port entry of one rule.
    fn rule_lines(
        &self,
        policy: &Policy,
        direction: Direction,
        index: usize,
        rule: &Rule,
        targets: &[&PodAddrs],
        fw: &mut Firewall,
    ) -> Vec<String> {
        let key = &policy.key;
        let peer_sets = match &rule.peers {
            Peers::Any => vec![None],
            Peers::Only(peers) => self
                .peer_sets(key, direction, index, peers, fw)
                .into_iter()
                .map(Some)
                .collect(),
        };
        let ports = if rule.ports.is_empty() {
            vec![PortTerm::default()]
        } else {
            self.port_terms(key, direction, index, &rule.ports, targets, fw)
        };
        let target = target_set(key, direction);
        let text = comment(&format!(
            "rule to ACCEPT {direction} traffic of pods selected by policy name: {} namespace {}",
            key.name, key.namespace
        ));
        let mut lines = Vec::new();
        for peer in &peer_sets {
            for port in &ports {
                let mut line = text.clone();
                let mut set = |name: &str, dir: &str| {
                    let _ = write!(line, " -m set --match-set {name} {dir}");
                };
                match direction {
                    Direction::Ingress => {
                        if let Some(peer) = peer {
                            set(peer, "src");
                        }
                        // A named port's set holds the targets that declare that number.
                        set(port.set.as_deref().unwrap_or(&target), "dst");
                    }
                    Direction::Egress => {
                        set(&target, "src");
                        for name in peer.iter().chain(&port.set) {
                            set(name, "dst");
                        }
                    }
                }
                if let Some(protocol) = port.protocol {
                    let _ = write!(line, " -p {}", protocol_name(protocol));
                }
                if let Some(dport) = &port.dport {
                    let _ = write!(line, " --dport {dport}");
                }
                lines.push(format!("{line} -j MARK --set-xmark {ALLOWED_MARK}"));
                lines.push(format!("{line} -m mark --mark {ALLOWED_MARK} -j RETURN"));
            }
        }
        lines
    }

    /// The sets of a rule's peers: one for all its selector peers (none when they select no
    /// pod), one per IPv4 ipBlock.
    fn peer_sets(
        &self,
        key: &PolicyKey,
        direction: Direction,
        index: usize,
        peers: &[Peer],
        fw: &mut Firewall,
    ) -> Vec<String> {
        let prefix = match direction {
            Direction::Ingress => SRC_SET_PREFIX,
            Direction::Egress => DST_SET_PREFIX,
        };
        let selectors: Vec<(&NamespaceScope, &Selector)> = peers
            .iter()
            .filter_map(|p| match p {
                Peer::Pods { namespaces, pods } => Some((namespaces, pods)),
                Peer::Block(_) => None,
            })
            .collect();
        let mut sets = Vec::new();
        let selected = selectors
            .iter()
            .flat_map(|(namespaces, pods)| self.peer_pods(namespaces, pods));
        let entries = addresses(selected);
        if !entries.is_empty() {
            let name = rule_set(prefix, key, direction, index, "pod", 0);
            fw.set(name.clone(), SetKind::Ip, entries);
            sets.push(name);
        }
        for (j, peer) in peers.iter().enumerate() {
            let Peer::Block(block) = peer else { continue };
            if block.family() != Family::V4 {
                continue;
            }
            let mut entries = net_entries(block.cidr.network(), block.cidr.prefix(), false);
            for except in &block.except {
                entries.extend(net_entries(except.network(), except.prefix(), true));
            }
            let name = rule_set(prefix, key, direction, index, "ipblock", j);
            fw.set(name.clone(), SetKind::Net, entries);
            sets.push(name);
        }
        sets
    }

    /// A rule's port entries; a named port becomes one term per number it resolves to, on
    /// the policy's pods for ingress and on every pod for egress.
    fn port_terms(
        &self,
        key: &PolicyKey,
        direction: Direction,
        index: usize,
        ports: &[PortMatch],
        targets: &[&PodAddrs],
        fw: &mut Firewall,
    ) -> Vec<PortTerm> {
        let mut terms = Vec::new();
        let mut named = 0;
        for pm in ports {
            let protocol = Some(pm.protocol);
            match &pm.port {
                PortSpec::Any => terms.push(PortTerm {
                    protocol,
                    ..PortTerm::default()
                }),
                PortSpec::Range { first, last } => terms.push(PortTerm {
                    protocol,
                    dport: Some(if first == last {
                        first.to_string()
                    } else {
                        format!("{first}:{last}")
                    }),
                    set: None,
                }),
                PortSpec::Named(name) => {
                    let candidates: Box<dyn Iterator<Item = &PodAddrs>> = match direction {
                        Direction::Ingress => Box::new(targets.iter().copied()),
                        Direction::Egress => Box::new(self.pods.iter()),
                    };
                    let mut by_number: BTreeMap<u16, Vec<&PodAddrs>> = BTreeMap::new();
                    for p in candidates {
                        if let Some(number) = p.pod.named_port(name, pm.protocol) {
                            by_number.entry(number).or_default().push(p);
                        }
                    }
                    for (number, pods) in by_number {
                        let set =
                            rule_set(DST_SET_PREFIX, key, direction, index, "namedport", named);
                        named += 1;
                        fw.set(set.clone(), SetKind::Ip, addresses(pods));
                        terms.push(PortTerm {
                            protocol,
                            dport: Some(number.to_string()),
                            set: Some(set),
                        });
                    }
                }
            }
        }
        terms
    }

    /// The policies of the pod's namespace that isolate it in `direction`.
    fn isolating(&self, pod: &Pod, direction: Direction) -> Vec<&'a Policy> {
        self.snap
            .policies
            .values()
            .filter(|p| {
                p.key.namespace == pod.key.namespace
                    && p.isolates(direction)
                    && p.pod_selector.matches(&pod.labels)
            })
            .collect()
    }

    /// A local pod's firewall chain.
    fn pod_chain_rules(&self, pod: &PodAddrs) -> Vec<String> {
        let (name, ns) = (&pod.pod.key.name, &pod.pod.key.namespace);
        let mut rules = vec![
            format!(
                "{} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                comment("rule for stateful firewall for pod")
            ),
            format!(
                "{} -m conntrack --ctstate INVALID -j DROP",
                comment("rule to drop invalid state for pod")
            ),
        ];
        let local = comment("rule to permit the traffic to pods when source is the local node");
        for ip in &pod.ips {
            rules.push(format!(
                "-d {ip} {local} -m addrtype --src-type LOCAL -j ACCEPT"
            ));
        }
        let ingress = self.isolating(pod.pod, Direction::Ingress);
        let egress = self.isolating(pod.pod, Direction::Egress);
        for (direction, policies, flag) in [
            (Direction::Egress, &egress, "-s"),
            (Direction::Ingress, &ingress, "-d"),
        ] {
            if policies.is_empty() {
                let text = comment(&format!(
                    "run through default {direction} network policy chain"
                ));
                for ip in &pod.ips {
                    rules.push(format!("{flag} {ip} {text} -j {DEFAULT_CHAIN}"));
                }
            }
        }
        for (direction, policies, flag) in [
            (Direction::Ingress, &ingress, "-d"),
            (Direction::Egress, &egress, "-s"),
        ] {
            for policy in policies {
                let text = comment(&format!("run through nw policy {}", policy.key.name));
                let chain = policy_chain(&policy.key, direction);
                for ip in &pod.ips {
                    rules.push(format!("{flag} {ip} {text} -j {chain}"));
                }
            }
        }
        rules.extend([
            format!(
                "{} -m mark ! --mark {ALLOWED_MARK} -m limit --limit 10/minute --limit-burst 10 -j NFLOG --nflog-group 100",
                comment(&format!("rule to log dropped traffic POD name:{name} namespace: {ns}"))
            ),
            format!(
                "{} -m mark ! --mark {ALLOWED_MARK} -j REJECT",
                comment(&format!("rule to REJECT traffic destined for POD name:{name} namespace: {ns}"))
            ),
            "-j MARK --set-mark 0/0x10000".to_string(),
            format!(
                "{} -j MARK --set-mark {PASSED_MARK}",
                comment("set mark to ACCEPT traffic that comply to network policies")
            ),
        ]);
        rules
    }
}

fn v4(ip: &IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(a) => Some(*a),
        IpAddr::V6(_) => None,
    }
}

/// hash:ip entries of the pods' addresses, sorted.
fn addresses<'p>(pods: impl IntoIterator<Item = &'p PodAddrs<'p>>) -> Vec<Entry> {
    let ips: BTreeSet<Ipv4Addr> = pods
        .into_iter()
        .flat_map(|p| p.ips.iter().copied())
        .collect();
    ips.into_iter()
        .map(|ip| Entry {
            addr: ip.to_string(),
            nomatch: false,
        })
        .collect()
}

/// hash:net entries of a network: a /0 as its two halves, since hash:net takes no /0.
fn net_entries(network: IpAddr, prefix: u8, nomatch: bool) -> Vec<Entry> {
    let nets = if prefix == 0 {
        vec!["0.0.0.0/1".to_string(), "128.0.0.0/1".to_string()]
    } else {
        vec![format!("{network}/{prefix}")]
    };
    nets.into_iter()
        .map(|addr| Entry { addr, nomatch })
        .collect()
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// `-m comment --comment "…"`, cut to fit the 256 bytes xt_comment takes.
fn comment(text: &str) -> String {
    let mut end = text.len().min(255);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("-m comment --comment \"{}\"", &text[..end])
}

// ---- rendering ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetKind {
    Ip,
    Net,
}

impl SetKind {
    /// The `create` options, as kube-router gives them (entries never time out).
    fn options(self) -> &'static str {
        match self {
            SetKind::Ip => "hash:ip timeout 0",
            SetKind::Net => "hash:net timeout 0",
        }
    }
}

struct Entry {
    addr: String,
    nomatch: bool,
}

struct IpSet {
    kind: SetKind,
    entries: Vec<Entry>,
}

/// Sets by name and chains in the order they are written, before rendering.
#[derive(Default)]
struct Firewall {
    sets: BTreeMap<String, IpSet>,
    chains: Vec<(String, Vec<String>)>,
}

impl Firewall {
    fn set(&mut self, name: String, kind: SetKind, entries: Vec<Entry>) {
        self.sets.insert(name, IpSet { kind, entries });
    }

    fn chain(&mut self, name: &str, rules: Vec<String>) {
        self.chains.push((name.to_string(), rules));
    }

    fn render(self) -> Scripts {
        Scripts {
            ipset: self.render_ipset(),
            iptables: self.render_iptables(),
            sets: self.sets.keys().cloned().collect(),
        }
    }

    /// Each set through a TMP set of its type and a `swap`, so that a resync replaces a set
    /// atomically; the TMP sets go at the end.
    fn render_ipset(&self) -> String {
        let mut out = String::new();
        let mut tmps: BTreeMap<&str, String> = BTreeMap::new();
        for (name, set) in &self.sets {
            let options = set.kind.options();
            let tmp = tmps.entry(options).or_insert_with(|| {
                let tmp = format!("{TMP_SET_PREFIX}{}", hash16(&["tmp", options]));
                let _ = writeln!(out, "create {tmp} {options}\nflush {tmp}");
                tmp
            });
            for entry in &set.entries {
                let nomatch = if entry.nomatch { " nomatch" } else { "" };
                let _ = writeln!(out, "add {tmp} {} timeout 0{nomatch}", entry.addr);
            }
            let _ = writeln!(
                out,
                "create {name} {options}\nswap {tmp} {name}\nflush {tmp}"
            );
        }
        let tmps: BTreeSet<&String> = tmps.values().collect();
        for tmp in tmps {
            let _ = writeln!(out, "destroy {tmp}");
        }
        out
    }

    /// The whole filter table: built-in chains, kube-router's chains, their rules.
    fn render_iptables(&self) -> String {
        let builtin = |name: &str| BUILTINS.iter().any(|(b, _)| *b == name);
        let mut out = String::from("*filter\n");
        for (name, _) in BUILTINS {
            let _ = writeln!(out, ":{name} ACCEPT [0:0]");
        }
        let declared: BTreeSet<&str> = self
            .chains
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| !builtin(name))
            .collect();
        for name in declared {
            let _ = writeln!(out, ":{name} - [0:0]");
        }
        for (name, rules) in &self.chains {
            for rule in rules {
                let _ = writeln!(out, "-A {name} {rule}");
            }
        }
        out.push_str("COMMIT\n");
        out
    }
}

// ---- applying ----

/// What the loaders cost: their wall time end to end (added up), their user and system CPU
/// (added up), and the largest peak RSS among them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    pub wall: Duration,
    pub cpu: Duration,
    pub max_rss_kib: u64,
}

impl Cost {
    /// This cost and then `next`, as if one ran after the other.
    pub fn then(self, next: Cost) -> Cost {
        Cost {
            wall: self.wall + next.wall,
            cpu: self.cpu + next.cpu,
            max_rss_kib: self.max_rss_kib.max(next.max_rss_kib),
        }
    }
}

/// The longest one loader may take; a large world on a small machine takes seconds.
const LOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// Load `scripts` into the namespace, as kube-router's sync does: `ipset restore -exist`,
/// then `iptables-nft-restore -w -T filter` (the whole table, no `--noflush`), then the
/// destruction of `KUBE-SRC-`/`KUBE-DST-` sets the scripts no longer fill (they can go only
/// once no rule refers to them). The cost covers every program run, the set listing and
/// destruction included.
pub fn apply(ns: &TestNetns, scripts: &Scripts) -> Result<Cost> {
    let sets = measured(ns, &["ipset", "restore", "-exist"], &scripts.ipset)
        .context("loading the ipsets")?;
    let rules = measured(
        ns,
        &["iptables-nft-restore", "-w", "-T", "filter"],
        &scripts.iptables,
    )
    .context("loading the filter table")?;
    let listed = measured(ns, &["ipset", "list", "-n"], "").context("listing the ipsets")?;
    let stale = destroy_script(&listed.stdout, |name| {
        (name.starts_with(SRC_SET_PREFIX) || name.starts_with(DST_SET_PREFIX))
            && !scripts.sets.contains(name)
    });
    let mut cost = sets.cost.then(rules.cost).then(listed.cost);
    if !stale.is_empty() {
        let destroyed = measured(ns, &["ipset", "restore"], &stale)
            .context("destroying the ipsets no policy uses")?;
        cost = cost.then(destroyed.cost);
    }
    Ok(cost)
}

/// Remove everything [`apply`] loaded: the filter table (kube-router's alone on a rig node;
/// deleting it also unhooks its base chains, so a node switched to podwall pays nothing for
/// it) and every `KUBE-SRC-`, `KUBE-DST-` and `TMP-` set.
pub fn clear(ns: &TestNetns) -> Result<()> {
    let tables = ns.exec(&["nft", "list", "tables", "ip"])?.ok()?;
    if tables.stdout.lines().any(|l| l.trim() == "table ip filter") {
        ns.exec(&["nft", "delete", "table", "ip", "filter"])?.ok()?;
    }
    let listed = ns.exec(&["ipset", "list", "-n"])?.ok()?;
    let script = destroy_script(&listed.stdout, |name| {
        [SRC_SET_PREFIX, DST_SET_PREFIX, TMP_SET_PREFIX]
            .iter()
            .any(|prefix| name.starts_with(prefix))
    });
    if !script.is_empty() {
        cmd::run(
            ns.command("ipset").arg("restore"),
            Some(script.as_bytes()),
            cmd::SHORT,
        )?
        .ok()
        .with_context(|| format!("destroying the ipsets in netns {}", ns.name()))?;
    }
    Ok(())
}

/// `destroy <name>` for every set of `ipset list -n` that `doomed` picks.
fn destroy_script(listing: &str, doomed: impl Fn(&str) -> bool) -> String {
    listing
        .lines()
        .map(str::trim)
        .filter(|name| doomed(name))
        .map(|name| format!("destroy {name}\n"))
        .collect()
}

/// What one measured program printed and cost.
struct Ran {
    stdout: String,
    cost: Cost,
}

/// Run `argv` inside the namespace with `stdin`, reaping it with its own resource usage. The
/// program is forked from a thread that entered the namespace, not through `ip netns exec`,
/// so the cost is the loader's alone.
fn measured(ns: &TestNetns, argv: &[&str], stdin: &str) -> Result<Ran> {
    let (program, args) = argv.split_first().expect("a command has a program");
    let command = argv.join(" ");
    let run = || -> Result<Ran> {
        let start = Instant::now();
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting `{command}`"))?;
        let mut input = child.stdin.take().expect("stdin was piped above");
        let mut stdout = child.stdout.take().expect("stdout was piped above");
        let mut stderr = child.stderr.take().expect("stderr was piped above");
        let done = AtomicBool::new(false);
        let (reaped, out, err) = std::thread::scope(|s| {
            // Feeding and draining on their own threads, so that neither side blocks on a
            // full pipe; dropping `input` is the end of the script.
            s.spawn(move || {
                let _ = input.write_all(stdin.as_bytes());
            });
            let out = s.spawn(move || {
                let mut text = String::new();
                let _ = stdout.read_to_string(&mut text);
                text
            });
            let err = s.spawn(move || {
                let mut text = String::new();
                let _ = stderr.read_to_string(&mut text);
                text
            });
            let pid = child.id();
            let done = &done;
            let peak = s.spawn(move || peak_rss_kib(pid, program, done));
            let reaped = child::wait(pid, LOAD_TIMEOUT);
            done.store(true, Ordering::Relaxed);
            (
                reaped.map(|r| (r, peak.join().unwrap_or(0))),
                out.join().unwrap_or_default(),
                err.join().unwrap_or_default(),
            )
        });
        let (reaped, peak) = reaped.with_context(|| format!("waiting for `{command}`"))?;
        let wall = start.elapsed();
        if reaped.timed_out {
            bail!("`{command}` did not finish within {LOAD_TIMEOUT:?}; killed");
        }
        if !reaped.status.success() {
            bail!("`{command}` exited with {}: {}", reaped.status, err.trim());
        }
        Ok(Ran {
            stdout: out,
            cost: Cost {
                wall,
                cpu: reaped.cpu,
                max_rss_kib: peak,
            },
        })
    };
    ns.run_in(run)
        .with_context(|| format!("in netns {}", ns.name()))
}

/// The child's peak resident set, sampled from `/proc/<pid>/status` every millisecond until
/// `done`. `wait4`'s `ru_maxrss` cannot be used for it: a child's maximum includes the
/// memory of the process it was forked from (this benchmark, holding whole worlds) up to its
/// `exec`. Samples from before the `exec` (while the process still has the parent's name)
/// are skipped; a peak reached in the last millisecond of the run can be missed.
fn peak_rss_kib(pid: u32, program: &str, done: &AtomicBool) -> u64 {
    // The kernel keeps 15 bytes of a program's name.
    let name: String = program
        .rsplit('/')
        .next()
        .unwrap_or(program)
        .chars()
        .take(15)
        .collect();
    let mut peak = 0;
    while !done.load(Ordering::Relaxed) {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let field = |key: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .map(|v| v.trim().to_string())
            };
            if field("Name:").as_deref() == Some(name.as_str()) {
                let kib = field("VmHWM:")
                    .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()));
                peak = peak.max(kib.unwrap_or(0));
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    peak
}

/// Reaping one child with its own resource usage. `getrusage(RUSAGE_CHILDREN)` adds up every
/// child the process ever reaped, those of tests running beside this one included; `wait4`
/// reports the one child's. nix wraps no `wait4`, hence the crate's one `unsafe` block.
#[allow(unsafe_code)]
mod child {
    use std::io;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc::{self, RecvTimeoutError};
    use std::sync::Mutex;
    use std::time::Duration;

    use nix::errno::Errno;
    use nix::libc;
    use nix::sys::signal::{self, Signal};
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    use nix::unistd::Pid;

    /// How a child ended and what it used.
    pub struct Reaped {
        pub status: ExitStatus,
        /// It ran past the timeout and was killed.
        pub timed_out: bool,
        /// User plus system CPU.
        pub cpu: Duration,
    }

    /// Wait for child `pid` (killing it after `timeout`) and reap it.
    pub fn wait(pid: u32, timeout: Duration) -> io::Result<Reaped> {
        let pid = Pid::from_raw(i32::try_from(pid).expect("a pid fits in pid_t"));
        let reaped = Mutex::new(false);
        let timed_out = AtomicBool::new(false);
        let (done, finished) = mpsc::channel::<()>();
        let (reaped_ref, timed_out_ref) = (&reaped, &timed_out);
        let result = std::thread::scope(|s| {
            s.spawn(move || {
                if finished.recv_timeout(timeout) == Err(RecvTimeoutError::Timeout) {
                    // Under the lock the child is not reaped yet, so the pid is still ours.
                    let reaped = reaped_ref.lock().expect("no thread panics holding it");
                    if !*reaped {
                        timed_out_ref.store(true, Ordering::Relaxed);
                        let _ = signal::kill(pid, Signal::SIGKILL);
                    }
                }
            });
            let result = reap(pid, reaped_ref);
            drop(done);
            result
        });
        let (status, usage) = result?;
        let time = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64)
                + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        Ok(Reaped {
            status: ExitStatus::from_raw(status),
            timed_out: timed_out.load(Ordering::Relaxed),
            cpu: time(usage.ru_utime) + time(usage.ru_stime),
        })
    }

    fn reap(pid: Pid, reaped: &Mutex<bool>) -> io::Result<(i32, libc::rusage)> {
        // Wait for the exit but leave the zombie, so that the pid cannot be reused while the
        // watchdog may still signal it.
        loop {
            match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                Ok(_) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let mut reaped = reaped.lock().expect("no thread panics holding it");
        let mut status = 0;
        // SAFETY: all zeroes is a valid `rusage` (plain integers and timevals), and both
        // pointers are to live locals, valid for writes for the duration of the call.
        let ret = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            let ret = libc::wait4(pid.as_raw(), &mut status, 0, &mut usage);
            (ret, usage)
        };
        if ret.0 < 0 {
            return Err(io::Error::last_os_error());
        }
        *reaped = true;
        Ok((status, ret.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podwall_tests::manifests::{documents, namespace, PodManifest};

    const NODE: &str = "n1";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A snapshot of `docs` (manifests) and `policies` (NetworkPolicy YAML documents).
    fn world(docs: &[String], policies: &str) -> Snapshot {
        let text = documents(docs) + "---\n" + policies;
        let loaded = podwall_policy::manifests::load([("w.yaml", text.as_str())]);
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        loaded.snapshot
    }

    fn shop() -> Snapshot {
        world(
            &[
                namespace("shop", &[]),
                namespace("ops", &[("team", "ops")]),
                PodManifest::new("shop", "db")
                    .labels(&[("app", "db")])
                    .ports(&[("sql", 5432, "TCP")])
                    .remote(NODE, &[ip("10.1.0.5"), ip("fd00::5")])
                    .yaml(),
                PodManifest::new("shop", "web")
                    .labels(&[("app", "web")])
                    .remote(NODE, &[ip("10.1.0.6")])
                    .yaml(),
                PodManifest::new("shop", "far")
                    .labels(&[("app", "web")])
                    .remote("n2", &[ip("10.2.0.7")])
                    .yaml(),
                PodManifest::new("ops", "probe")
                    .remote("n2", &[ip("10.2.0.9")])
                    .yaml(),
            ],
            "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: sql}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-outside, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from:
    - ipBlock: {cidr: 192.0.2.0/24, except: [192.0.2.128/25]}
    - ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}
    - namespaceSelector: {matchLabels: {team: ops}}
    ports: [{protocol: UDP, port: 5000, endPort: 5100}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {}}]
    ports: [{port: sql}]
",
        )
    }

    fn key(ns: &str, name: &str) -> PodKey {
        PodKey::new(ns, name)
    }

    /// The rules of `chain` in an iptables-restore document, without `-A <chain> `.
    fn rules<'s>(text: &'s str, chain: &str) -> Vec<&'s str> {
        let prefix = format!("-A {chain} ");
        text.lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str()))
            .collect()
    }

    /// The `add` lines of the set filled just before `create <set>`.
    fn entries<'s>(ipset: &'s str, set: &str) -> Vec<&'s str> {
        let lines: Vec<&str> = ipset.lines().collect();
        let create = lines
            .iter()
            .position(|l| l.starts_with(&format!("create {set} ")))
            .unwrap_or_else(|| panic!("no set {set} in\n{ipset}"));
        lines[..create]
            .iter()
            .rev()
            .take_while(|l| l.starts_with("add "))
            .map(|l| l.split_once(' ').unwrap().1.split_once(' ').unwrap().1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect()
    }

    #[test]
    fn pod_selected_by_two_policies_jumps_to_both_chains_for_its_address() {
        let s = generate(&shop(), NODE);
        let db = rules(&s.iptables, &pod_chain(&key("shop", "db")));
        for policy in ["db-from-web", "db-from-outside"] {
            let chain = policy_chain(&PolicyKey::new("shop", policy), Direction::Ingress);
            let jump = db
                .iter()
                .find(|r| r.ends_with(&format!("-j {chain}")))
                .unwrap_or_else(|| panic!("no jump to {policy}: {db:#?}"));
            assert!(jump.starts_with("-d 10.1.0.5 "), "{jump}");
        }
        assert!(
            db.iter()
                .any(|r| r.starts_with("-s 10.1.0.5 ") && r.ends_with(DEFAULT_CHAIN)),
            "no policy isolates db's egress: {db:#?}"
        );
        assert!(!db
            .iter()
            .any(|r| r.starts_with("-d ") && r.ends_with(DEFAULT_CHAIN)));
        assert!(!s.iptables.contains("fd00::5"), "IPv6 is left out");
    }

    #[test]
    fn pod_chain_rejects_what_no_policy_marked_after_the_policy_jumps() {
        let s = generate(&shop(), NODE);
        let db = rules(&s.iptables, &pod_chain(&key("shop", "db")));
        assert!(db[0].ends_with("--ctstate RELATED,ESTABLISHED -j ACCEPT"));
        assert!(db[1].ends_with("--ctstate INVALID -j DROP"));
        let reject = db.iter().position(|r| r.ends_with("-j REJECT")).unwrap();
        let last_jump = db
            .iter()
            .rposition(|r| r.contains("-j KUBE-NWPLCY-"))
            .unwrap();
        assert!(last_jump < reject);
        assert!(db[reject].contains("-m mark ! --mark 0x10000/0x10000"));
        assert_eq!(
            db.last().unwrap().split(" -j ").last(),
            Some("MARK --set-mark 0x20000/0x20000")
        );
    }

    #[test]
    fn every_local_pod_has_a_chain_and_pods_of_other_nodes_none() {
        let s = generate(&shop(), NODE);
        for (ns, name) in [("shop", "db"), ("shop", "web")] {
            let chain = pod_chain(&key(ns, name));
            assert!(s.iptables.contains(&format!(":{chain} - [0:0]")), "{name}");
        }
        for (ns, name) in [("shop", "far"), ("ops", "probe")] {
            assert!(!s.iptables.contains(&pod_chain(&key(ns, name))), "{name}");
        }
        let forward = rules(&s.iptables, FORWARD_CHAIN);
        let web = pod_chain(&key("shop", "web"));
        let jumps: Vec<_> = forward.iter().filter(|r| r.ends_with(&web)).collect();
        assert_eq!(
            jumps.len(),
            4,
            "routed and bridged, to and from: {jumps:#?}"
        );
        assert!(jumps
            .iter()
            .any(|r| r.starts_with("-s 10.1.0.6 -m physdev --physdev-is-bridged")));
    }

    #[test]
    fn ip_block_excepts_are_nomatch_entries_and_zero_prefix_is_split() {
        let s = generate(&shop(), NODE);
        let policy = PolicyKey::new("shop", "db-from-outside");
        let first = rule_set(SRC_SET_PREFIX, &policy, Direction::Ingress, 0, "ipblock", 0);
        assert_eq!(
            entries(&s.ipset, &first),
            ["192.0.2.0/24 timeout 0", "192.0.2.128/25 timeout 0 nomatch"]
        );
        let second = rule_set(SRC_SET_PREFIX, &policy, Direction::Ingress, 0, "ipblock", 1);
        assert_eq!(
            entries(&s.ipset, &second),
            [
                "0.0.0.0/1 timeout 0",
                "128.0.0.0/1 timeout 0",
                "10.0.0.0/8 timeout 0 nomatch"
            ]
        );
        assert!(s
            .ipset
            .contains(&format!("create {first} hash:net timeout 0\n")));
        let pods = rule_set(SRC_SET_PREFIX, &policy, Direction::Ingress, 0, "pod", 0);
        assert_eq!(
            entries(&s.ipset, &pods),
            ["10.2.0.9 timeout 0"],
            "ops/probe"
        );
        let chain = rules(&s.iptables, &policy_chain(&policy, Direction::Ingress));
        assert_eq!(
            chain.len(),
            6,
            "three peer sets, one port entry, MARK and RETURN"
        );
        assert!(chain
            .iter()
            .all(|r| r.contains(" -p udp --dport 5000:5100 ")));
    }

    #[test]
    fn named_ports_resolve_on_the_pods_that_declare_them() {
        let s = generate(&shop(), NODE);
        let ingress = PolicyKey::new("shop", "db-from-web");
        let set = rule_set(
            DST_SET_PREFIX,
            &ingress,
            Direction::Ingress,
            0,
            "namedport",
            0,
        );
        assert_eq!(entries(&s.ipset, &set), ["10.1.0.5 timeout 0"]);
        let chain = rules(&s.iptables, &policy_chain(&ingress, Direction::Ingress));
        assert!(
            chain[0].contains(&format!(
                "--match-set {set} dst -p tcp --dport 5432 -j MARK"
            )),
            "{chain:#?}"
        );
        // Egress resolves on every pod, beside the peer set.
        let egress = PolicyKey::new("shop", "web-egress");
        let chain = rules(&s.iptables, &policy_chain(&egress, Direction::Egress));
        let peers = rule_set(DST_SET_PREFIX, &egress, Direction::Egress, 0, "pod", 0);
        let named = rule_set(
            DST_SET_PREFIX,
            &egress,
            Direction::Egress,
            0,
            "namedport",
            0,
        );
        assert!(chain[0].contains(&format!(
            "--match-set {} src -m set --match-set {peers} dst -m set --match-set {named} dst -p tcp --dport 5432",
            target_set(&egress, Direction::Egress)
        )), "{chain:#?}");
    }

    #[test]
    fn policy_without_rules_isolates_with_an_empty_chain() {
        let snap = world(
            &[
                namespace("x", &[]),
                PodManifest::new("x", "a")
                    .remote(NODE, &[ip("10.1.0.2")])
                    .yaml(),
            ],
            "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
",
        );
        let s = generate(&snap, NODE);
        let policy = PolicyKey::new("x", "deny");
        for direction in [Direction::Ingress, Direction::Egress] {
            let chain = policy_chain(&policy, direction);
            assert!(s.iptables.contains(&format!(":{chain} - [0:0]")));
            assert!(rules(&s.iptables, &chain).is_empty());
        }
        let a = rules(&s.iptables, &pod_chain(&key("x", "a")));
        assert!(!a.iter().any(|r| r.ends_with(DEFAULT_CHAIN)), "{a:#?}");
        assert_eq!(
            entries(&s.ipset, &target_set(&policy, Direction::Egress)),
            ["10.1.0.2 timeout 0"]
        );
    }

    #[test]
    fn sets_are_filled_through_tmp_sets_and_swapped() {
        let s = generate(&shop(), NODE);
        let tmp_creates: Vec<&str> = s
            .ipset
            .lines()
            .filter(|l| l.starts_with("create TMP-"))
            .collect();
        assert_eq!(tmp_creates.len(), 2, "one per set type: {tmp_creates:#?}");
        for set in &s.sets {
            let swaps = s
                .ipset
                .lines()
                .filter(|l| l.starts_with("swap TMP-") && l.ends_with(&format!(" {set}")))
                .count();
            assert_eq!(swaps, 1, "{set}");
        }
        let destroys: Vec<&str> = s
            .ipset
            .lines()
            .filter(|l| l.starts_with("destroy "))
            .collect();
        assert_eq!(destroys.len(), 2);
        assert!(
            s.ipset.ends_with(&format!("{}\n", destroys[1])),
            "the TMP sets go last"
        );
        assert!(
            s.sets.iter().all(|n| n.len() <= 31),
            "ipset names are at most 31 bytes"
        );
    }

    #[test]
    fn document_declares_every_chain_once_and_jumps_only_to_declared_chains() {
        let s = generate(&shop(), NODE);
        assert!(s.iptables.starts_with("*filter\n:INPUT ACCEPT [0:0]\n"));
        assert!(s.iptables.ends_with("\nCOMMIT\n"));
        let declared: Vec<&str> = s
            .iptables
            .lines()
            .filter_map(|l| l.strip_prefix(':'))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        let unique: BTreeSet<&str> = declared.iter().copied().collect();
        assert_eq!(unique.len(), declared.len());
        assert!(
            declared.iter().all(|c| c.len() <= 28),
            "chain names are at most 28 bytes"
        );
        for line in s.iptables.lines().filter(|l| l.starts_with("-A ")) {
            let target = line
                .rsplit(" -j ")
                .next()
                .unwrap()
                .split(' ')
                .next()
                .unwrap();
            if target.starts_with("KUBE-") {
                assert!(unique.contains(target), "{line}");
            }
            for set in line.split("--match-set ").skip(1) {
                let set = set.split(' ').next().unwrap();
                assert!(s.sets.contains(set), "{line}");
            }
        }
    }

    #[test]
    fn output_is_deterministic_and_follows_the_world() {
        let a = generate(&shop(), NODE);
        assert_eq!(a, generate(&shop(), NODE));
        let mut moved = shop();
        moved.pods.get_mut(&key("shop", "web")).unwrap().node = Some("n2".into());
        let b = generate(&moved, NODE);
        assert!(!b.iptables.contains(&pod_chain(&key("shop", "web"))));
        assert_eq!(a.sets, b.sets, "sets are cluster-wide");
        assert_eq!(generate(&shop(), "n9").sets, a.sets);
    }

    #[test]
    fn hash_is_sixteen_base32_characters_and_separates_its_parts() {
        let h = hash16(&["shop", "db"]);
        assert_eq!(h.len(), 16);
        assert!(h
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)));
        assert_ne!(hash16(&["a", "bc"]), hash16(&["ab", "c"]));
        assert_eq!(h, hash16(&["shop", "db"]));
        let near = hash16(&["shop", "dc"]);
        let same = h.bytes().zip(near.bytes()).filter(|(a, b)| a == b).count();
        assert!(
            same < 6,
            "one letter apart, yet {h} and {near} share {same} characters"
        );
    }

    #[test]
    fn costs_add_up_and_keep_the_largest_peak() {
        let a = Cost {
            wall: Duration::from_millis(3),
            cpu: Duration::from_millis(2),
            max_rss_kib: 900,
        };
        let b = Cost {
            wall: Duration::from_millis(5),
            cpu: Duration::from_millis(1),
            max_rss_kib: 400,
        };
        assert_eq!(
            a.then(b),
            Cost {
                wall: Duration::from_millis(8),
                cpu: Duration::from_millis(3),
                max_rss_kib: 900
            }
        );
    }
}
