//! The compiler: a [`Snapshot`] and a node name → the node's [`Ruleset`], fully or one event
//! at a time.
//!
//! [`Compiler`] keeps an index next to the ruleset so that an event touches only what it
//! affects:
//! - every distinct selector peer (namespace scope + pod selector) has one pair of address
//!   sets (v4, v6), shared by every rule that names the same peer, with its member pods; the
//!   peers are indexed by the namespace they are confined to, or listed as following a
//!   namespaceSelector. A pod event re-checks the pod against those peers only, a namespace
//!   label change re-checks that namespace's pods against namespaceSelector peers only.
//! - named ports have one `addr . port` set per (name, protocol, family), holding every pod
//!   that declares the name, so that a pod event changes a few elements.
//! - the elements of both kinds of set are counted by holder: two pods can hold one address
//!   (a reused address whose old pod's delete is late), and the element must stay until the
//!   last of them leaves the set.
//! - a policy event recompiles that policy and regroups the local pods of its namespace.
//!
//! Every change goes through a journal, from which [`Compiler::apply`] returns the
//! [`RulesetDelta`] that turns the previous ruleset into the new one. [`compile()`] is the
//! full compile; a test checks that both ways give the same ruleset.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::ipblock::{Family, IpBlock};
use crate::model::{
    Direction, Namespace, NamespaceScope, Peer, Peers, Pod, PodKey, Policy, PolicyKey, PortSpec,
    Protocol, Snapshot,
};
use crate::ruleset::{
    names, Chain, ChainName, Element, PeerMatch, PortMatch, Rule, Ruleset, RulesetDelta, Set,
    SetName,
};
use crate::selector::Selector;

/// A change of the cluster, as the watchers (or the manifests source) report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A pod was added or changed.
    Pod(Pod),
    PodDeleted(PodKey),
    /// A namespace was added or its labels changed.
    Namespace(Namespace),
    NamespaceDeleted(String),
    /// A policy was added or changed (possibly to its fail-closed stand-in).
    Policy(Policy),
    PolicyDeleted(PolicyKey),
}

/// Compiles the ruleset of `node` from scratch.
pub fn compile(snap: &Snapshot, node: &str) -> Ruleset {
    Compiler::new(snap.clone(), node).into_ruleset()
}

/// A selector peer: the identity of one pair of address sets.
type PeerKey = (NamespaceScope, Selector);

struct PeerState {
    refs: usize,
    members: BTreeSet<PodKey>,
    sets: [SetName; 2],
}

/// A policy's rules in ruleset form and the sets they hold on to.
#[derive(Default)]
struct Compiled {
    ingress: Vec<Rule>,
    egress: Vec<Rule>,
    peers: Vec<PeerKey>,
    blocks: Vec<IpBlock>,
    named: Vec<(String, Protocol)>,
}

impl Compiled {
    fn rules(&self, direction: Direction) -> &[Rule] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// A local pod's place in the ruleset.
struct Attachment {
    ips: Vec<IpAddr>,
    chains: [Option<ChainName>; 2],
}

/// Records what an event changed, to build its delta without comparing whole rulesets.
#[derive(Default)]
struct Journal {
    /// Sets touched, and whether each existed before the event.
    sets_before: BTreeMap<SetName, bool>,
    /// Sets deleted and created again within the event: replaced whole.
    sets_replaced: BTreeSet<SetName>,
    added: BTreeMap<SetName, BTreeSet<Element>>,
    removed: BTreeMap<SetName, BTreeSet<Element>>,
    chains_before: BTreeMap<ChainName, Option<Chain>>,
    maps_before: [BTreeMap<IpAddr, Option<ChainName>>; 2],
}

fn dir_index(direction: Direction) -> usize {
    match direction {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

const DIRECTIONS: [Direction; 2] = [Direction::Ingress, Direction::Egress];

/// The incremental compiler of one node's ruleset.
pub struct Compiler {
    node: String,
    snap: Snapshot,
    rs: Ruleset,
    peers: BTreeMap<PeerKey, PeerState>,
    /// Peers without a namespaceSelector, by the namespace they are confined to.
    peers_by_namespace: BTreeMap<String, BTreeSet<PeerKey>>,
    /// Peers with a namespaceSelector.
    peers_by_labels: BTreeSet<PeerKey>,
    blocks: BTreeMap<IpBlock, usize>,
    named: BTreeMap<(String, Protocol), usize>,
    /// How many pods hold each element of the pod-address and named-port sets; a set is
    /// here exactly while it exists, and its elements are the keys.
    holders: BTreeMap<SetName, BTreeMap<Element, usize>>,
    compiled: BTreeMap<PolicyKey, Compiled>,
    chain_refs: BTreeMap<ChainName, usize>,
    local: BTreeMap<PodKey, Attachment>,
    journal: Journal,
}

impl Compiler {
    /// Compiles `snap` for `node` in full.
    pub fn new(mut snap: Snapshot, node: &str) -> Self {
        // Policies are added one by one through the incremental path, so that a full
        // compile and a sequence of events cannot disagree.
        let policies = std::mem::take(&mut snap.policies);
        let mut c = Compiler {
            node: node.to_string(),
            snap,
            rs: Ruleset::default(),
            peers: BTreeMap::new(),
            peers_by_namespace: BTreeMap::new(),
            peers_by_labels: BTreeSet::new(),
            blocks: BTreeMap::new(),
            named: BTreeMap::new(),
            holders: BTreeMap::new(),
            compiled: BTreeMap::new(),
            chain_refs: BTreeMap::new(),
            local: BTreeMap::new(),
            journal: Journal::default(),
        };
        let keys: Vec<PodKey> = c.snap.pods.keys().cloned().collect();
        for key in keys {
            c.attach(&key);
        }
        for policy in policies.into_values() {
            c.upsert_policy(policy);
        }
        c.journal = Journal::default();
        c
    }

    /// The current ruleset.
    pub fn ruleset(&self) -> &Ruleset {
        &self.rs
    }

    /// The ruleset, giving up the compiler.
    pub fn into_ruleset(self) -> Ruleset {
        self.rs
    }

    /// The cluster state the ruleset was compiled from.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snap
    }

    /// The node this compiler dispatches pods of.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Applies one event and returns what changed in the ruleset.
    pub fn apply(&mut self, event: Event) -> RulesetDelta {
        match event {
            Event::Pod(pod) => self.upsert_pod(Some(pod), None),
            Event::PodDeleted(key) => self.upsert_pod(None, Some(key)),
            Event::Namespace(ns) => self.change_namespace(&ns.name.clone(), Some(ns)),
            Event::NamespaceDeleted(name) => self.change_namespace(&name, None),
            Event::Policy(policy) => self.upsert_policy(policy),
            Event::PolicyDeleted(key) => self.delete_policy(&key),
        }
        self.take_delta()
    }

    // ---- events ----

    fn upsert_pod(&mut self, new: Option<Pod>, deleted: Option<PodKey>) {
        let key = match (&new, deleted) {
            (Some(p), _) => p.key.clone(),
            (None, Some(k)) => k,
            (None, None) => return,
        };
        self.detach(&key);
        let old = match new {
            Some(pod) => self.snap.pods.insert(key.clone(), pod),
            None => self.snap.pods.remove(&key),
        };
        let candidates: Vec<PeerKey> = self
            .peers_by_namespace
            .get(&key.namespace)
            .into_iter()
            .flatten()
            .chain(self.peers_by_labels.iter())
            .cloned()
            .collect();
        for peer in candidates {
            self.refresh_member(&peer, &key, old.as_ref());
        }
        self.refresh_named_ports(&key, old.as_ref());
        self.attach(&key);
    }

    fn change_namespace(&mut self, name: &str, ns: Option<Namespace>) {
        let before = self.snap.namespace_labels(name);
        match ns {
            Some(ns) => self.snap.upsert_namespace(ns),
            None => {
                self.snap.namespaces.remove(name);
            }
        }
        let after = self.snap.namespace_labels(name);
        if before == after {
            return;
        }
        let pods: Vec<PodKey> = pods_in(&self.snap, name).map(|p| p.key.clone()).collect();
        let peers: Vec<PeerKey> = self
            .peers_by_labels
            .iter()
            .filter(|(scope, _)| match scope {
                NamespaceScope::Matching(sel) => sel.matches(&before) != sel.matches(&after),
                NamespaceScope::Named(_) => false,
            })
            .cloned()
            .collect();
        for peer in &peers {
            for key in &pods {
                let current = self.snap.pods.get(key).cloned();
                self.refresh_member(peer, key, current.as_ref());
            }
        }
    }

    fn upsert_policy(&mut self, policy: Policy) {
        let key = policy.key.clone();
        let compiled = self.compile_policy(&policy);
        let old = self.compiled.insert(key.clone(), compiled);
        self.snap.upsert_policy(policy);
        self.regroup(&key.namespace);
        if let Some(old) = old {
            self.release(old);
        }
    }

    fn delete_policy(&mut self, key: &PolicyKey) {
        self.snap.policies.remove(key);
        let old = self.compiled.remove(key);
        self.regroup(&key.namespace);
        if let Some(old) = old {
            self.release(old);
        }
    }

    // ---- local pods ----

    fn is_local(&self, pod: &Pod) -> bool {
        pod.node.as_deref() == Some(self.node.as_str()) && pod.is_policed()
    }

    /// Re-attaches every local pod of a namespace; chains whose policies changed are rebuilt
    /// because detaching the namespace's pods frees them first.
    fn regroup(&mut self, namespace: &str) {
        let keys: Vec<PodKey> = self
            .local
            .range(PodKey::new(namespace, "")..)
            .take_while(|(k, _)| k.namespace == namespace)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &keys {
            self.detach(key);
        }
        for key in &keys {
            self.attach(key);
        }
    }

    fn attach(&mut self, key: &PodKey) {
        let Some(pod) = self.snap.pods.get(key) else {
            return;
        };
        if !self.is_local(pod) {
            return;
        }
        let ips = pod.ips.clone();
        let selected = DIRECTIONS.map(|d| selecting(&self.snap, pod, d));
        let mut chains = [None, None];
        for (direction, policies) in DIRECTIONS.into_iter().zip(selected) {
            if policies.is_empty() {
                continue;
            }
            let canonical = format!(
                "{direction}|{}",
                policies
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join("|")
            );
            let name = names::chain(direction, &canonical);
            let refs = self.chain_refs.entry(name.clone()).or_insert(0);
            *refs += 1;
            if *refs == 1 {
                let rules = policies
                    .iter()
                    .filter_map(|p| self.compiled.get(p))
                    .flat_map(|c| c.rules(direction).iter().cloned())
                    .collect();
                self.chain_put(
                    name.clone(),
                    Chain {
                        direction,
                        policies,
                        rules,
                    },
                );
            }
            for ip in &ips {
                self.map_put(direction, *ip, name.clone());
            }
            chains[dir_index(direction)] = Some(name);
        }
        self.local.insert(key.clone(), Attachment { ips, chains });
    }

    fn detach(&mut self, key: &PodKey) {
        let Some(att) = self.local.remove(key) else {
            return;
        };
        for direction in DIRECTIONS {
            let Some(chain) = &att.chains[dir_index(direction)] else {
                continue;
            };
            for ip in &att.ips {
                if self.rs.map(direction).get(ip) == Some(chain) {
                    self.map_delete(direction, *ip);
                }
            }
            // Every attached chain is counted; an uncounted one (a broken invariant) is
            // deleted rather than panicking on cluster input.
            let refs = self.chain_refs.get_mut(chain).map_or(0, |refs| {
                *refs = refs.saturating_sub(1);
                *refs
            });
            if refs == 0 {
                self.chain_refs.remove(chain);
                self.chain_delete(chain);
            }
        }
    }

    // ---- peers and sets ----

    /// Re-checks pod `key` (now `self.snap.pods[key]`, or gone) against one peer; `old` is
    /// the pod as it was when it became a member.
    fn refresh_member(&mut self, peer: &PeerKey, key: &PodKey, old: Option<&Pod>) {
        let now = self
            .snap
            .pods
            .get(key)
            .filter(|p| peer_matches(&self.snap, peer, p))
            .cloned();
        // Callers take peers from the indexes, which list only peers that exist.
        let Some(state) = self.peers.get_mut(peer) else {
            return;
        };
        let was = state.members.remove(key);
        if now.is_some() {
            state.members.insert(key.clone());
        }
        let sets = state.sets.clone();
        if was {
            for ip in old.map(|p| p.ips.as_slice()).unwrap_or_default() {
                self.elem_remove(&sets[fam_index(Family::of(ip))], Element::Address(*ip));
            }
        }
        for ip in now.iter().flat_map(|p| &p.ips) {
            self.elem_add(&sets[fam_index(Family::of(ip))], Element::Address(*ip));
        }
    }

    fn refresh_named_ports(&mut self, key: &PodKey, old: Option<&Pod>) {
        let new = self.snap.pods.get(key).cloned();
        for (pod, add) in [(old.cloned(), false), (new, true)] {
            let Some(pod) = pod.filter(Pod::is_policed) else {
                continue;
            };
            // A name resolves to its first declaration, as in `Pod::named_port`, even if the
            // pod (against validation) declares it twice.
            let mut declared: BTreeMap<(&String, Protocol), u16> = BTreeMap::new();
            for cp in &pod.ports {
                if let Some(name) = &cp.name {
                    declared.entry((name, cp.protocol)).or_insert(cp.port);
                }
            }
            for ((name, protocol), port) in declared {
                if !self.named.contains_key(&(name.clone(), protocol)) {
                    continue;
                }
                for ip in &pod.ips {
                    let set = named_set(name, protocol, Family::of(ip));
                    let elem = Element::AddressPort(*ip, port);
                    if add {
                        self.elem_add(&set, elem);
                    } else {
                        self.elem_remove(&set, elem);
                    }
                }
            }
        }
    }

    fn acquire_peer(&mut self, peer: &PeerKey) -> [SetName; 2] {
        if let Some(state) = self.peers.get_mut(peer) {
            state.refs += 1;
            return state.sets.clone();
        }
        let canonical = serde_json::to_string(peer)
            .expect("a peer is enums, strings and sets of strings, which JSON always encodes");
        let sets = Family::ALL.map(|f| names::peer_set(&canonical, f));
        let mut members = BTreeSet::new();
        let mut held = [BTreeMap::new(), BTreeMap::new()];
        let namespaces: Vec<String> = match &peer.0 {
            NamespaceScope::Named(ns) => vec![ns.clone()],
            NamespaceScope::Matching(sel) => self
                .snap
                .namespace_names()
                .into_iter()
                .filter(|ns| sel.matches(&self.snap.namespace_labels(ns)))
                .collect(),
        };
        for ns in &namespaces {
            for pod in pods_in(&self.snap, ns) {
                if pod.is_policed() && peer.1.matches(&pod.labels) {
                    members.insert(pod.key.clone());
                    for ip in &pod.ips {
                        *held[fam_index(Family::of(ip))].entry(*ip).or_insert(0) += 1;
                    }
                }
            }
        }
        for (family, held) in Family::ALL.into_iter().zip(held) {
            let set = Set::Addresses {
                family,
                elements: held.keys().copied().collect(),
            };
            let held = held
                .into_iter()
                .map(|(ip, n)| (Element::Address(ip), n))
                .collect();
            self.counted_set_create(sets[fam_index(family)].clone(), set, held);
        }
        match &peer.0 {
            NamespaceScope::Named(ns) => {
                self.peers_by_namespace
                    .entry(ns.clone())
                    .or_default()
                    .insert(peer.clone());
            }
            NamespaceScope::Matching(_) => {
                self.peers_by_labels.insert(peer.clone());
            }
        }
        self.peers.insert(
            peer.clone(),
            PeerState {
                refs: 1,
                members,
                sets: sets.clone(),
            },
        );
        sets
    }

    fn acquire_block(&mut self, block: &IpBlock) -> SetName {
        let name = block_set(block);
        let refs = self.blocks.entry(block.clone()).or_insert(0);
        *refs += 1;
        if *refs == 1 {
            self.set_create(
                name.clone(),
                Set::Intervals {
                    family: block.family(),
                    ranges: block.ranges(),
                },
            );
        }
        name
    }

    fn acquire_named(&mut self, name: &str, protocol: Protocol) -> [SetName; 2] {
        let key = (name.to_string(), protocol);
        let sets = Family::ALL.map(|f| named_set(name, protocol, f));
        let refs = self.named.entry(key).or_insert(0);
        *refs += 1;
        if *refs == 1 {
            let mut held = [BTreeMap::new(), BTreeMap::new()];
            for pod in self.snap.pods.values().filter(|p| p.is_policed()) {
                if let Some(port) = pod.named_port(name, protocol) {
                    for ip in &pod.ips {
                        *held[fam_index(Family::of(ip))]
                            .entry((*ip, port))
                            .or_insert(0) += 1;
                    }
                }
            }
            for (family, held) in Family::ALL.into_iter().zip(held) {
                let set = Set::AddressPorts {
                    family,
                    protocol,
                    elements: held.keys().copied().collect(),
                };
                let held = held
                    .into_iter()
                    .map(|((ip, port), n)| (Element::AddressPort(ip, port), n))
                    .collect();
                self.counted_set_create(sets[fam_index(family)].clone(), set, held);
            }
        }
        sets
    }

    fn release(&mut self, old: Compiled) {
        for peer in old.peers {
            let Some(state) = self.peers.get_mut(&peer) else {
                continue; // held peers exist; nothing to release otherwise
            };
            state.refs = state.refs.saturating_sub(1);
            if state.refs > 0 {
                continue;
            }
            if let Some(state) = self.peers.remove(&peer) {
                for set in &state.sets {
                    self.set_delete(set);
                }
                match &peer.0 {
                    NamespaceScope::Named(ns) => {
                        if let Some(list) = self.peers_by_namespace.get_mut(ns) {
                            list.remove(&peer);
                            if list.is_empty() {
                                self.peers_by_namespace.remove(ns);
                            }
                        }
                    }
                    NamespaceScope::Matching(_) => {
                        self.peers_by_labels.remove(&peer);
                    }
                }
            }
        }
        for block in old.blocks {
            let Some(refs) = self.blocks.get_mut(&block) else {
                continue;
            };
            *refs = refs.saturating_sub(1);
            if *refs == 0 {
                self.blocks.remove(&block);
                self.set_delete(&block_set(&block));
            }
        }
        for (name, protocol) in old.named {
            let key = (name, protocol);
            let Some(refs) = self.named.get_mut(&key) else {
                continue;
            };
            *refs = refs.saturating_sub(1);
            if *refs == 0 {
                self.named.remove(&key);
                for family in Family::ALL {
                    self.set_delete(&named_set(&key.0, protocol, family));
                }
            }
        }
    }

    // ---- policies → rules ----

    fn compile_policy(&mut self, policy: &Policy) -> Compiled {
        let mut out = Compiled::default();
        for direction in DIRECTIONS {
            if !policy.isolates(direction) {
                continue;
            }
            let mut rules = Vec::new();
            for (index, rule) in policy.rules(direction).iter().enumerate() {
                let peers = self.peer_matches(&rule.peers, &mut out);
                let ports = self.port_matches(&rule.ports, &mut out);
                for (pf, peer) in &peers {
                    for (qf, port) in &ports {
                        let family = match (pf, qf) {
                            (Some(a), Some(b)) if a != b => continue,
                            (Some(a), _) | (None, Some(a)) => Some(*a),
                            (None, None) => None,
                        };
                        rules.push(Rule {
                            family,
                            peer: peer.clone(),
                            ports: port.clone(),
                            policy: policy.key.clone(),
                            index,
                        });
                    }
                }
            }
            match direction {
                Direction::Ingress => out.ingress = rules,
                Direction::Egress => out.egress = rules,
            }
        }
        out
    }

    fn peer_matches(
        &mut self,
        peers: &Peers,
        out: &mut Compiled,
    ) -> Vec<(Option<Family>, PeerMatch)> {
        match peers {
            Peers::Any => vec![(None, PeerMatch::Any)],
            Peers::Only(list) => {
                let mut matches = Vec::new();
                for peer in list {
                    match peer {
                        Peer::Pods { namespaces, pods } => {
                            let key = (namespaces.clone(), pods.clone());
                            let sets = self.acquire_peer(&key);
                            out.peers.push(key);
                            for family in Family::ALL {
                                matches.push((
                                    Some(family),
                                    PeerMatch::InSet(sets[fam_index(family)].clone()),
                                ));
                            }
                        }
                        Peer::Block(block) => {
                            let set = self.acquire_block(block);
                            out.blocks.push(block.clone());
                            matches.push((Some(block.family()), PeerMatch::InSet(set)));
                        }
                    }
                }
                matches
            }
        }
    }

    fn port_matches(
        &mut self,
        ports: &[crate::model::PortMatch],
        out: &mut Compiled,
    ) -> Vec<(Option<Family>, PortMatch)> {
        if ports.is_empty() {
            return vec![(None, PortMatch::Any)];
        }
        // Numeric ports of one protocol share a rule; a port-less entry covers the protocol.
        let mut numeric: BTreeMap<Protocol, Option<Vec<(u16, u16)>>> = BTreeMap::new();
        let mut matches = Vec::new();
        for pm in ports {
            match &pm.port {
                PortSpec::Any => {
                    numeric.insert(pm.protocol, None);
                }
                PortSpec::Range { first, last } => {
                    // `None` already means the whole protocol; ranges add nothing to it.
                    let entry = numeric
                        .entry(pm.protocol)
                        .or_insert_with(|| Some(Vec::new()));
                    if let Some(ranges) = entry {
                        ranges.push((*first, *last));
                    }
                }
                PortSpec::Named(name) => {
                    let sets = self.acquire_named(name, pm.protocol);
                    out.named.push((name.clone(), pm.protocol));
                    for family in Family::ALL {
                        matches.push((
                            Some(family),
                            PortMatch::Named {
                                protocol: pm.protocol,
                                set: sets[fam_index(family)].clone(),
                            },
                        ));
                    }
                }
            }
        }
        let mut result: Vec<(Option<Family>, PortMatch)> = numeric
            .into_iter()
            .map(|(protocol, ranges)| match ranges {
                None => (None, PortMatch::Protocol(protocol)),
                Some(mut ranges) => {
                    ranges.sort_unstable();
                    ranges.dedup();
                    (None, PortMatch::Ports { protocol, ranges })
                }
            })
            .collect();
        result.extend(matches);
        result
    }

    // ---- journaled mutations ----

    fn set_create(&mut self, name: SetName, set: Set) {
        let existed = self.rs.sets.contains_key(&name);
        let before = *self
            .journal
            .sets_before
            .entry(name.clone())
            .or_insert(existed);
        if before && !existed {
            self.journal.sets_replaced.insert(name.clone());
        }
        self.rs.sets.insert(name, set);
    }

    /// Creates a set whose elements `elem_add` and `elem_remove` count by holder; `held`
    /// counts the holders of each of `set`'s elements.
    fn counted_set_create(&mut self, name: SetName, set: Set, held: BTreeMap<Element, usize>) {
        self.set_create(name.clone(), set);
        self.holders.insert(name, held);
    }

    fn set_delete(&mut self, name: &SetName) {
        let existed = self.rs.sets.contains_key(name);
        self.journal
            .sets_before
            .entry(name.clone())
            .or_insert(existed);
        self.rs.sets.remove(name);
        self.holders.remove(name);
    }

    /// One more holder of `elem`; the first puts it in the set.
    fn elem_add(&mut self, set: &SetName, elem: Element) {
        let Some(held) = self.holders.get_mut(set) else {
            return;
        };
        let count = held.entry(elem).or_insert(0);
        *count += 1;
        if *count > 1 {
            return;
        }
        let Some(s) = self.rs.sets.get_mut(set) else {
            return;
        };
        if s.insert(elem) {
            let removed = self.journal.removed.entry(set.clone()).or_default();
            if !removed.remove(&elem) {
                self.journal
                    .added
                    .entry(set.clone())
                    .or_default()
                    .insert(elem);
            }
        }
    }

    /// One holder of `elem` fewer; the last takes it out of the set.
    fn elem_remove(&mut self, set: &SetName, elem: Element) {
        let Some(held) = self.holders.get_mut(set) else {
            return;
        };
        match held.get_mut(&elem) {
            None => return,
            Some(count) if *count > 1 => {
                *count -= 1;
                return;
            }
            Some(_) => {
                held.remove(&elem);
            }
        }
        let Some(s) = self.rs.sets.get_mut(set) else {
            return;
        };
        if s.remove(&elem) {
            let added = self.journal.added.entry(set.clone()).or_default();
            if !added.remove(&elem) {
                self.journal
                    .removed
                    .entry(set.clone())
                    .or_default()
                    .insert(elem);
            }
        }
    }

    fn chain_put(&mut self, name: ChainName, chain: Chain) {
        let old = self.rs.chains.get(&name).cloned();
        self.journal
            .chains_before
            .entry(name.clone())
            .or_insert(old);
        self.rs.chains.insert(name, chain);
    }

    fn chain_delete(&mut self, name: &ChainName) {
        let old = self.rs.chains.remove(name);
        self.journal
            .chains_before
            .entry(name.clone())
            .or_insert(old);
    }

    fn map_put(&mut self, direction: Direction, ip: IpAddr, chain: ChainName) {
        let old = self.rs.map(direction).get(&ip).cloned();
        self.journal.maps_before[dir_index(direction)]
            .entry(ip)
            .or_insert(old);
        self.rs.map_mut(direction).insert(ip, chain);
    }

    fn map_delete(&mut self, direction: Direction, ip: IpAddr) {
        let old = self.rs.map_mut(direction).remove(&ip);
        self.journal.maps_before[dir_index(direction)]
            .entry(ip)
            .or_insert(old);
    }

    fn take_delta(&mut self) -> RulesetDelta {
        let journal = std::mem::take(&mut self.journal);
        let mut delta = RulesetDelta::default();
        let mut touched: BTreeSet<&SetName> = journal.sets_before.keys().collect();
        touched.extend(journal.added.keys());
        touched.extend(journal.removed.keys());
        for name in touched {
            let before = journal.sets_before.get(name).copied().unwrap_or(true);
            let now = self.rs.sets.get(name);
            match (before, now) {
                (false, Some(set)) => {
                    delta.sets_added.insert(name.clone(), set.clone());
                }
                (true, None) => {
                    delta.sets_removed.insert(name.clone());
                }
                (true, Some(set)) if journal.sets_replaced.contains(name) => {
                    delta.sets_removed.insert(name.clone());
                    delta.sets_added.insert(name.clone(), set.clone());
                }
                (true, Some(_)) => {
                    if let Some(e) = journal.added.get(name).filter(|e| !e.is_empty()) {
                        delta.elements_added.insert(name.clone(), e.clone());
                    }
                    if let Some(e) = journal.removed.get(name).filter(|e| !e.is_empty()) {
                        delta.elements_removed.insert(name.clone(), e.clone());
                    }
                }
                (false, None) => {}
            }
        }
        for (name, before) in journal.chains_before {
            match (before, self.rs.chains.get(&name)) {
                (before, Some(now)) if before.as_ref() != Some(now) => {
                    delta.chains_set.insert(name, now.clone());
                }
                (Some(_), None) => {
                    delta.chains_removed.insert(name);
                }
                _ => {}
            }
        }
        for direction in DIRECTIONS {
            let changes = match direction {
                Direction::Ingress => &mut delta.ingress,
                Direction::Egress => &mut delta.egress,
            };
            for (ip, before) in &journal.maps_before[dir_index(direction)] {
                let now = self.rs.map(direction).get(ip);
                if before.as_ref() != now {
                    changes.insert(*ip, now.cloned());
                }
            }
        }
        delta
    }
}

fn fam_index(family: Family) -> usize {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

fn block_set(block: &IpBlock) -> SetName {
    let canonical = serde_json::to_string(block).expect("blocks serialise");
    names::block_set(&canonical, block.family())
}

fn named_set(name: &str, protocol: Protocol, family: Family) -> SetName {
    names::named_port_set(&format!("{name}/{protocol}"), family)
}

fn pods_in<'a>(snap: &'a Snapshot, namespace: &'a str) -> impl Iterator<Item = &'a Pod> + 'a {
    snap.pods
        .range(PodKey::new(namespace, "")..)
        .take_while(move |(k, _)| k.namespace == namespace)
        .map(|(_, p)| p)
}

fn peer_matches(snap: &Snapshot, peer: &PeerKey, pod: &Pod) -> bool {
    pod.is_policed()
        && match &peer.0 {
            NamespaceScope::Named(ns) => pod.key.namespace == *ns,
            NamespaceScope::Matching(sel) => {
                sel.matches(&snap.namespace_labels(&pod.key.namespace))
            }
        }
        && peer.1.matches(&pod.labels)
}

/// The policies of the pod's namespace that isolate it in `direction`, sorted.
fn selecting(snap: &Snapshot, pod: &Pod, direction: Direction) -> Vec<PolicyKey> {
    let ns = &pod.key.namespace;
    snap.policies
        .range(PolicyKey::new(ns.as_str(), "")..)
        .take_while(|(k, _)| k.namespace == *ns)
        .filter(|(_, p)| p.isolates(direction) && p.pod_selector.matches(&pod.labels))
        .map(|(k, _)| k.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::{forward, lookup, Lookup, Packet};
    use crate::manifests::load;
    use crate::model::ContainerPort;
    use crate::model::Protocol::*;
    use crate::selector::Labels;
    use crate::testworld::{ip4, ip6, world, world_manifests};

    fn policy(ns: &str, name: &str, spec: &str) -> String {
        let body: Vec<String> = spec.lines().map(|l| format!("  {l}")).collect();
        format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{}\n",
            body.join("\n")
        )
    }

    /// Rulesets of every node of the world (pods a on node-a, b on node-b, c on node-c).
    fn nodes(snap: &Snapshot) -> Vec<Ruleset> {
        ["node-a", "node-b", "node-c"]
            .iter()
            .map(|n| compile(snap, n))
            .collect()
    }

    fn verdict(
        rulesets: &[Ruleset],
        src: IpAddr,
        dst: IpAddr,
        protocol: Protocol,
        port: u16,
    ) -> bool {
        forward(
            rulesets,
            &Packet {
                src,
                dst,
                protocol,
                port,
            },
        )
    }

    #[test]
    fn namespace_selector_admits_only_labelled_namespaces() {
        let snap = world(&policy(
            "x",
            "from-y",
            "podSelector: {matchLabels: {pod: a}}\ningress:\n- from: [{namespaceSelector: {matchLabels: {ns: y}}}]\n  ports: [{port: 80}]",
        ));
        let rs = nodes(&snap);
        assert!(verdict(&rs, ip4("y/b"), ip4("x/a"), Tcp, 80));
        assert!(verdict(&rs, ip6("y/b"), ip6("x/a"), Tcp, 80));
        assert!(!verdict(&rs, ip4("z/b"), ip4("x/a"), Tcp, 80));
        assert!(!verdict(&rs, ip4("y/b"), ip4("x/a"), Tcp, 81));
        assert!(verdict(&rs, ip4("z/b"), ip4("x/b"), Tcp, 81));
    }

    #[test]
    fn only_local_pods_get_dispatch_entries() {
        let snap = world(&policy(
            "x",
            "deny",
            "podSelector: {}\npolicyTypes: [Ingress, Egress]",
        ));
        let rs = compile(&snap, "node-a");
        let mut local: Vec<IpAddr> = rs.ingress.keys().copied().collect();
        local.sort();
        assert_eq!(local, vec![ip4("x/a"), ip6("x/a")]);
        assert_eq!(rs.egress.len(), 2);
        // Peers elsewhere are still in the sets of policies that name them.
        assert!(compile(&snap, "node-q").ingress.is_empty());
    }

    #[test]
    fn pods_with_the_same_policies_share_one_chain() {
        let extra = "
---
apiVersion: v1
kind: Pod
metadata: {name: d, namespace: x, labels: {pod: d}}
spec: {nodeName: node-a}
status: {podIP: 10.0.1.4}
";
        let snap = world(&format!(
            "{extra}{}",
            policy("x", "deny", "podSelector: {}\ningress: []")
        ));
        let rs = compile(&snap, "node-a");
        assert_eq!(rs.chains.len(), 1);
        assert_eq!(
            rs.ingress[&ip4("x/a")],
            rs.ingress[&"10.0.1.4".parse().unwrap()]
        );
    }

    #[test]
    fn attaching_a_pod_with_known_policies_adds_only_elements() {
        let snap = world(&policy(
            "x",
            "from-b",
            "podSelector: {}\ningress:\n- from: [{podSelector: {matchLabels: {pod: b}}}]",
        ));
        let mut c = Compiler::new(snap, "node-a");
        let mut pod = Pod::new(
            PodKey::new("x", "new"),
            [("pod".to_string(), "b".to_string())].into(),
            vec!["10.0.1.9".parse().unwrap()],
        );
        pod.node = Some("node-a".into());
        let delta = c.apply(Event::Pod(pod));
        assert!(
            delta.chains_set.is_empty() && delta.sets_added.is_empty(),
            "{delta:?}"
        );
        assert_eq!(delta.ingress.len(), 1);
        assert_eq!(
            delta
                .elements_added
                .values()
                .map(BTreeSet::len)
                .sum::<usize>(),
            1
        );
    }

    #[test]
    fn label_change_moves_the_pod_between_peer_sets_only() {
        let snap = world(&policy(
            "x",
            "from-b",
            "podSelector: {matchLabels: {pod: a}}\ningress:\n- from: [{namespaceSelector: {}, podSelector: {matchLabels: {pod: b}}}]",
        ));
        let mut c = Compiler::new(snap.clone(), "node-a");
        let mut pod = snap.pods[&PodKey::new("z", "c")].clone();
        pod.labels.insert("pod".into(), "b".into());
        let before = c.ruleset().clone();
        let delta = c.apply(Event::Pod(pod));
        assert!(delta.chains_set.is_empty() && delta.ingress.is_empty() && delta.egress.is_empty());
        let added: Vec<Element> = delta.elements_added.values().flatten().copied().collect();
        assert_eq!(added.len(), 2, "the pod's v4 and v6 addresses: {delta:?}");
        let mut after = before;
        after.apply(&delta);
        assert_eq!(&after, c.ruleset());
        assert!(verdict(&[after], ip4("z/c"), ip4("x/a"), Tcp, 80));
    }

    #[test]
    fn ip_block_becomes_an_interval_set_without_its_excepts() {
        let snap = world(&policy(
            "x",
            "block",
            "podSelector: {}\ningress:\n- from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.2.0/24]}}]",
        ));
        let rs = compile(&snap, "node-a");
        let ranges: Vec<String> = rs
            .sets
            .values()
            .filter_map(|s| match s {
                Set::Intervals { ranges, .. } => Some(ranges.iter().map(|r| r.to_string())),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(ranges, ["10.0.0.0-10.0.1.255", "10.0.3.0-10.0.255.255"]);
        assert!(!verdict(
            std::slice::from_ref(&rs),
            ip4("y/a"),
            ip4("x/a"),
            Udp,
            53
        ));
        assert!(verdict(&[rs], ip4("z/a"), ip4("x/a"), Udp, 53));
    }

    #[test]
    fn named_port_set_holds_each_pods_own_number() {
        let extra = "
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: y, labels: {app: web}}
spec: {nodeName: node-b, containers: [{name: c, image: i, ports: [{containerPort: 8080, name: serve-80-tcp}]}]}
status: {podIP: 10.0.2.20}
";
        let snap = world(&format!(
            "{extra}{}",
            policy(
                "x",
                "out",
                "podSelector: {}\npolicyTypes: [Egress]\negress: [{ports: [{port: serve-80-tcp}]}]"
            )
        ));
        let rs = nodes(&snap);
        let web: IpAddr = "10.0.2.20".parse().unwrap();
        assert!(verdict(&rs, ip4("x/a"), web, Tcp, 8080));
        assert!(!verdict(&rs, ip4("x/a"), web, Tcp, 80));
        assert!(verdict(&rs, ip4("x/a"), ip4("y/a"), Tcp, 80));
        assert!(!verdict(
            &rs,
            ip4("x/a"),
            "192.0.2.1".parse().unwrap(),
            Tcp,
            80
        ));
    }

    #[test]
    fn broken_policy_compiles_to_a_chain_that_allows_nothing() {
        let text = policy(
            "x",
            "bad",
            "podSelector: {matchLabels: {pod: a}}\ningress: [{ports: [{protocol: ICMP}]}]",
        );
        let base = world_manifests();
        let loaded = load([("w.yaml", base.as_str()), ("p.yaml", text.as_str())]);
        assert_eq!(loaded.errors.len(), 1);
        let rs = compile(&loaded.snapshot, "node-a");
        let packet = Packet {
            src: ip4("y/a"),
            dst: ip4("x/a"),
            protocol: Tcp,
            port: 80,
        };
        assert_eq!(lookup(&rs, Direction::Ingress, &packet), Lookup::Dropped);
    }

    #[test]
    fn sctp_only_rule_drops_tcp_in_the_chain() {
        let snap = world(&policy(
            "x",
            "sctp",
            "podSelector: {}\ningress: [{ports: [{protocol: SCTP, port: 80}]}]",
        ));
        let rs = nodes(&snap);
        assert!(verdict(&rs, ip4("y/a"), ip4("x/a"), Sctp, 80));
        assert!(!verdict(&rs, ip4("y/a"), ip4("x/a"), Tcp, 80));
    }

    #[test]
    fn object_names_are_short_valid_nftables_identifiers() {
        let snap = world(&format!(
            "{}{}",
            policy("x", "a-very-long-policy-name-that-goes-on-and-on-and-on-and-on-forever", "podSelector: {}\ningress: [{from: [{podSelector: {}}], ports: [{port: serve-80-tcp}]}]"),
            policy("x", "b", "podSelector: {}\negress: [{to: [{ipBlock: {cidr: 10.0.0.0/8}}]}]"),
        ));
        let rs = compile(&snap, "node-a");
        let names: Vec<&String> = rs.sets.keys().chain(rs.chains.keys()).collect();
        assert!(names.len() >= 6, "{names:?}");
        for name in names {
            assert!(name.len() <= 32, "{name}");
            assert!(name.chars().next().unwrap().is_ascii_lowercase(), "{name}");
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{name}"
            );
        }
    }

    /// The address a stale pod and its successor both hold in the shared-address tests.
    const REUSED: &str = "10.1.0.9";

    /// Pod `ns/name` on `node` (not node-a) holding [`REUSED`].
    fn holder(key: &str, node: &str, labels: &[(&str, &str)]) -> Pod {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut pod = Pod::new(
            PodKey::parse(key).unwrap(),
            labels,
            vec![REUSED.parse().unwrap()],
        );
        pod.node = Some(node.into());
        pod
    }

    /// `holder` declaring TCP port `web` as `port`.
    fn web_holder(key: &str, node: &str, port: u16) -> Pod {
        let mut pod = holder(key, node, &[]);
        pod.ports = vec![ContainerPort {
            name: Some("web".into()),
            port,
            protocol: Tcp,
        }];
        pod
    }

    /// Applies `event`, checking that its delta replays and that the compiler ends where a
    /// full compile of its snapshot does.
    fn step(c: &mut Compiler, event: Event) {
        let mut replay = c.ruleset().clone();
        let delta = c.apply(event.clone());
        replay.apply(&delta);
        assert_eq!(&replay, c.ruleset(), "delta of {event:?} does not replay");
        assert_eq!(
            c.ruleset(),
            &compile(c.snapshot(), c.node()),
            "after {event:?}"
        );
    }

    fn from_reused(c: &Compiler) -> bool {
        let src = REUSED.parse().unwrap();
        verdict(std::slice::from_ref(c.ruleset()), src, ip4("x/a"), Tcp, 80)
    }

    fn to_reused(c: &Compiler, port: u16) -> bool {
        let dst = REUSED.parse().unwrap();
        verdict(
            std::slice::from_ref(c.ruleset()),
            ip4("x/a"),
            dst,
            Tcp,
            port,
        )
    }

    fn from_clients() -> Compiler {
        let snap = world(&policy(
            "x",
            "clients",
            "podSelector: {matchLabels: {pod: a}}\ningress:\n- from: [{podSelector: {matchLabels: {role: client}}}]",
        ));
        Compiler::new(snap, "node-a")
    }

    #[test]
    fn shared_address_stays_in_the_peer_set_until_its_last_holder_goes() {
        for (first, second) in [("x/old", "x/new"), ("x/new", "x/old")] {
            let mut c = from_clients();
            step(
                &mut c,
                Event::Pod(holder("x/old", "node-b", &[("role", "client")])),
            );
            step(
                &mut c,
                Event::Pod(holder("x/new", "node-c", &[("role", "client")])),
            );
            assert!(from_reused(&c));
            step(&mut c, Event::PodDeleted(PodKey::parse(first).unwrap()));
            assert!(from_reused(&c), "{second} still holds {REUSED}");
            step(&mut c, Event::PodDeleted(PodKey::parse(second).unwrap()));
            assert!(!from_reused(&c));
        }
    }

    #[test]
    fn shared_address_stays_in_the_peer_set_while_a_holder_matches() {
        let mut c = from_clients();
        let client = [("role", "client")];
        let server = [("role", "server")];
        step(&mut c, Event::Pod(holder("x/old", "node-b", &client)));
        step(&mut c, Event::Pod(holder("x/new", "node-c", &client)));
        step(&mut c, Event::Pod(holder("x/old", "node-b", &server)));
        assert!(from_reused(&c), "x/new still matches");
        step(&mut c, Event::Pod(holder("x/new", "node-c", &server)));
        assert!(!from_reused(&c));
        step(&mut c, Event::Pod(holder("x/old", "node-b", &client)));
        assert!(from_reused(&c));
    }

    #[test]
    fn shared_address_stays_in_a_peer_set_built_with_both_holders() {
        // Both holders are in the snapshot before the policy's set is made.
        let mut snap = from_clients().snapshot().clone();
        snap.upsert_pod(holder("x/old", "node-b", &[("role", "client")]));
        snap.upsert_pod(holder("x/new", "node-c", &[("role", "client")]));
        let mut c = Compiler::new(snap, "node-a");
        step(&mut c, Event::PodDeleted(PodKey::new("x", "old")));
        assert!(from_reused(&c), "x/new still holds {REUSED}");
        step(&mut c, Event::PodDeleted(PodKey::new("x", "new")));
        assert!(!from_reused(&c));
    }

    #[test]
    fn shared_address_survives_a_namespace_relabel_while_a_holder_matches() {
        let snap = world(&policy(
            "x",
            "teams",
            "podSelector: {matchLabels: {pod: a}}\ningress:\n- from: [{namespaceSelector: {matchLabels: {team: t}}, podSelector: {matchLabels: {role: client}}}]",
        ));
        let team =
            |name: &str| Namespace::new(name, [("team".to_string(), "t".to_string())].into());
        let mut c = Compiler::new(snap, "node-a");
        step(&mut c, Event::Namespace(team("y")));
        step(&mut c, Event::Namespace(team("z")));
        step(
            &mut c,
            Event::Pod(holder("y/old", "node-b", &[("role", "client")])),
        );
        step(
            &mut c,
            Event::Pod(holder("z/new", "node-c", &[("role", "client")])),
        );
        assert!(from_reused(&c));
        step(&mut c, Event::Namespace(Namespace::new("y", Labels::new())));
        assert!(from_reused(&c), "z/new is still in a team namespace");
        step(&mut c, Event::Namespace(team("y")));
        step(&mut c, Event::NamespaceDeleted("z".into()));
        assert!(from_reused(&c), "y/old is back in a team namespace");
        step(&mut c, Event::Namespace(Namespace::new("y", Labels::new())));
        assert!(!from_reused(&c));
    }

    #[test]
    fn shared_address_keeps_a_named_port_while_a_holder_declares_it() {
        let snap = world(&policy(
            "x",
            "web",
            "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\negress: [{ports: [{port: web}]}]",
        ));
        for (first, second) in [("x/old", "x/new"), ("x/new", "x/old")] {
            let mut c = Compiler::new(snap.clone(), "node-a");
            step(&mut c, Event::Pod(web_holder("x/old", "node-b", 8080)));
            step(&mut c, Event::Pod(web_holder("x/new", "node-c", 8080)));
            assert!(to_reused(&c, 8080));
            step(&mut c, Event::PodDeleted(PodKey::parse(first).unwrap()));
            assert!(to_reused(&c, 8080), "{second} still declares web");
            step(&mut c, Event::PodDeleted(PodKey::parse(second).unwrap()));
            assert!(!to_reused(&c, 8080));
        }
    }

    #[test]
    fn shared_address_named_port_follows_each_holders_number() {
        let snap = world(&policy(
            "x",
            "web",
            "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\negress: [{ports: [{port: web}]}]",
        ));
        let mut c = Compiler::new(snap, "node-a");
        step(&mut c, Event::Pod(web_holder("x/old", "node-b", 8080)));
        step(&mut c, Event::Pod(web_holder("x/new", "node-c", 8080)));
        step(&mut c, Event::Pod(web_holder("x/new", "node-c", 9090)));
        assert!(to_reused(&c, 8080), "x/old still declares web as 8080");
        assert!(to_reused(&c, 9090));
        step(&mut c, Event::PodDeleted(PodKey::new("x", "old")));
        assert!(!to_reused(&c, 8080));
        assert!(to_reused(&c, 9090));
        step(&mut c, Event::Pod(web_holder("x/new", "node-c", 8080)));
        assert!(to_reused(&c, 8080));
        assert!(!to_reused(&c, 9090));
    }

    #[test]
    fn deleting_the_last_policy_removes_its_chains_and_sets() {
        let snap = world(&policy(
            "x",
            "p",
            "podSelector: {}\ningress: [{from: [{podSelector: {}}]}]",
        ));
        let mut c = Compiler::new(snap, "node-a");
        let before = c.ruleset().clone();
        assert!(!before.chains.is_empty());
        let delta = c.apply(Event::PolicyDeleted(PolicyKey::new("x", "p")));
        assert_eq!(c.ruleset(), &Ruleset::default());
        let mut replay = before;
        replay.apply(&delta);
        assert_eq!(replay, Ruleset::default());
    }
}
