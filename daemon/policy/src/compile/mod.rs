//! The compiler: a [`Snapshot`] and a node name → the node's [`Ruleset`], fully or one event
//! at a time.
//!
//! [`Compiler`] keeps an index next to the ruleset so that an event touches only what it
//! affects:
//! - every distinct selector peer (namespace scope + pod selector) has one pair of address
//!   sets (v4, v6), shared by every rule that names the same peer; the peers are indexed by
//!   the namespace they are confined to, or listed as following a namespaceSelector. A pod
//!   event re-checks the pod against those peers only, a namespace label change re-checks
//!   that namespace's pods against namespaceSelector peers only.
//! - named ports have one `addr . port` set per (name, protocol, family), holding every pod
//!   that declares the name, so that a pod event changes a few elements.
//! - the elements of both kinds of set are counted by holder: two pods can hold one address
//!   (a reused address whose old pod's delete is late), and the element must stay until the
//!   last of them leaves the set. Only the holders beyond an element's first are kept.
//! - a policy event regroups the local pods of its namespace; the chains they hold are made
//!   again, and compile the policy anew.
//! - a policy is compiled, and its sets exist, only while a chain judges with it: a policy
//!   that selects no pod of the node costs the node nothing (see `usage`).
//!
//! Every change goes through a journal, from which [`Compiler::apply`] returns the
//! [`RulesetDelta`] that turns the previous ruleset into the new one. [`compile()`] is the
//! full compile; a test checks that both ways give the same ruleset.
//!
//! Rooms: this file holds the events and the compiler's state; `local` gives local pods
//! their dispatch entries, `sets` keeps the peer, ipBlock and named-port sets, `rules` turns
//! a policy into rules, `tiers` does so for ClusterNetworkPolicies and builds their chains,
//! `usage` compiles policies while they are used, `journal` records each mutation to build
//! the delta.

mod journal;
mod local;
mod rules;
mod sets;
mod tiers;
mod usage;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::diff::diff;
use crate::ipblock::{Family, IpBlock};
use crate::model::{
    ClusterPolicy, Direction, Namespace, NamespaceScope, Peer, Peers, Pod, PodKey, Policy,
    PolicyKey, PortSpec, Protocol, Snapshot,
};
use crate::ruleset::{
    names, Chain, ChainName, Element, PeerMatch, PortMatch, Rule, Ruleset, RulesetDelta, Set,
    SetName,
};
use crate::selector::{Labels, Selector};
use journal::Journal;
use local::LocalPod;
use rules::Compiled;
use sets::{fam_index, PeerState};
use usage::{Unused, Used};

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
    /// A ClusterNetworkPolicy was added or changed.
    ClusterPolicy(ClusterPolicy),
    ClusterPolicyDeleted(String),
}

impl Event {
    /// The events that turn snapshot `old` into `new`: namespaces and pods before the
    /// policies that select them, deletions last and in the opposite order.
    pub fn between(old: &Snapshot, new: &Snapshot) -> Vec<Event> {
        let (mut events, mut deletes) = (Vec::new(), Vec::new());
        for change in diff(&old.namespaces, &new.namespaces) {
            match change.new_value() {
                Some(ns) => events.push(Event::Namespace(ns.clone())),
                None => deletes.push(Event::NamespaceDeleted(change.key().clone())),
            }
        }
        for change in diff(&old.pods, &new.pods) {
            match change.new_value() {
                Some(pod) => events.push(Event::Pod(pod.clone())),
                None => deletes.push(Event::PodDeleted(change.key().clone())),
            }
        }
        for change in diff(&old.policies, &new.policies) {
            match change.new_value() {
                Some(policy) => events.push(Event::Policy(policy.clone())),
                None => deletes.push(Event::PolicyDeleted(change.key().clone())),
            }
        }
        for change in diff(&old.cluster_policies, &new.cluster_policies) {
            match change.new_value() {
                Some(policy) => events.push(Event::ClusterPolicy(policy.clone())),
                None => deletes.push(Event::ClusterPolicyDeleted(change.key().clone())),
            }
        }
        // Policies go before the pods and namespaces they select.
        events.extend(deletes.into_iter().rev());
        events
    }
}

/// Compiles the ruleset of `node` from scratch.
pub fn compile(snap: &Snapshot, node: &str) -> Ruleset {
    Compiler::new(snap.clone(), node).into_ruleset()
}

/// A selector peer: the identity of one pair of address sets.
type PeerKey = (NamespaceScope, Selector);

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
    /// The pod-address and named-port sets, each with its elements that more than one pod
    /// holds and how many holders they have beyond the first (the set's elements are its
    /// holders' own; at most a few addresses are ever shared).
    extra_holders: BTreeMap<SetName, BTreeMap<Element, usize>>,
    /// The policies some chain judges with, compiled.
    compiled: BTreeMap<PolicyKey, Used<Compiled>>,
    cluster_compiled: BTreeMap<String, Used<tiers::ClusterCompiled>>,
    unused: Unused,
    chain_refs: BTreeMap<ChainName, usize>,
    local: BTreeMap<PodKey, LocalPod>,
    journal: Journal,
    /// During a full compile only: what it indexes once (see `FullIndex`).
    full: Option<FullIndex>,
}

/// What a full compile indexes once for the events it is made of; events keep no such
/// index, as the snapshot changes under them.
struct FullIndex {
    /// The pods of each label set (pods share their sets), in key order: a namespaceSelector
    /// peer judges each set once, and each namespace's run of pods in it once.
    label_groups: BTreeMap<Labels, Vec<Pod>>,
    /// Every namespace with pods or an object, with its labels.
    namespaces: Vec<(String, Labels)>,
}

impl Compiler {
    /// Compiles `snap` for `node` in full.
    pub fn new(mut snap: Snapshot, node: &str) -> Self {
        // A full compile is a sequence of events through the incremental path, so that the
        // two cannot disagree: every policy, then every pod. Policies first, so that each
        // local pod is attached once, not again for each policy of its namespace.
        let policies = std::mem::take(&mut snap.policies);
        let cluster_policies = std::mem::take(&mut snap.cluster_policies);
        let mut c = Compiler {
            node: node.to_string(),
            snap,
            rs: Ruleset::default(),
            peers: BTreeMap::new(),
            peers_by_namespace: BTreeMap::new(),
            peers_by_labels: BTreeSet::new(),
            blocks: BTreeMap::new(),
            named: BTreeMap::new(),
            extra_holders: BTreeMap::new(),
            compiled: BTreeMap::new(),
            cluster_compiled: BTreeMap::new(),
            unused: Unused::default(),
            chain_refs: BTreeMap::new(),
            local: BTreeMap::new(),
            journal: Journal::default(),
            full: None,
        };
        // The pods themselves, shared with the snapshot: a peer's candidates are read from
        // here, not looked up again by key.
        let mut label_groups: BTreeMap<Labels, Vec<Pod>> = BTreeMap::new();
        for pod in c.snap.pods.values() {
            (label_groups.entry(pod.labels.clone()).or_default()).push(pod.clone());
        }
        let namespaces = (c.snap.namespace_names().into_iter())
            .map(|name| {
                let labels = c.snap.namespace_labels(&name);
                (name, labels)
            })
            .collect();
        c.full = Some(FullIndex {
            label_groups,
            namespaces,
        });
        for policy in policies.into_values() {
            c.upsert_policy(policy);
        }
        for policy in cluster_policies.into_values() {
            c.snap.cluster_policies.insert(policy.name.clone(), policy);
        }
        let keys: Vec<PodKey> = c.snap.pods.keys().cloned().collect();
        for key in keys {
            c.attach(&key);
        }
        c.release_unused();
        c.full = None;
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

    /// The pods that have dispatch entries here.
    pub fn local_pods(&self) -> impl Iterator<Item = &PodKey> + '_ {
        self.local.keys()
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
            Event::ClusterPolicy(policy) => self.upsert_cluster_policy(policy),
            Event::ClusterPolicyDeleted(name) => self.delete_cluster_policy(&name),
        }
        self.release_unused();
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
            .get(key.namespace.as_str())
            .into_iter()
            .flatten()
            .chain(self.peers_by_labels.iter())
            .cloned()
            .collect();
        for peer in candidates {
            // A pod event leaves the namespaces as they were: the old pod was a member if
            // it matches now.
            let was = old
                .as_ref()
                .is_some_and(|p| peer_matches(&self.snap, &peer, p));
            self.refresh_member(&peer, &key, old.as_ref(), was);
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
                let was = current
                    .as_ref()
                    .is_some_and(|p| peer_matches_in(peer, p, &before));
                self.refresh_member(peer, key, current.as_ref(), was);
            }
        }
        // After the peers above: one the chains made again acquire is built from the
        // namespace as it is now, and must not be re-checked as if it had been before.
        if !self.snap.cluster_policies.is_empty() {
            // A subject may select the namespace's pods by its labels.
            self.regroup(name);
        }
    }

    fn upsert_policy(&mut self, policy: Policy) {
        let key = policy.key.clone();
        self.snap.upsert_policy(policy);
        // The chains made again compile the new version; the old one is released after
        // them, so that sets both match on stay.
        let old = self.compiled.remove(&key);
        self.regroup(&key.namespace);
        if let Some(old) = old {
            self.release(old.policy);
        }
    }

    fn delete_policy(&mut self, key: &PolicyKey) {
        self.snap.policies.remove(key);
        let old = self.compiled.remove(key);
        self.regroup(&key.namespace);
        if let Some(old) = old {
            self.release(old.policy);
        }
    }
}

fn pods_in<'a>(snap: &'a Snapshot, namespace: &'a str) -> impl Iterator<Item = &'a Pod> + 'a {
    snap.pods
        .range(PodKey::new(namespace, "")..)
        .take_while(move |(k, _)| k.namespace == namespace)
        .map(|(_, p)| p)
}

fn peer_matches(snap: &Snapshot, peer: &PeerKey, pod: &Pod) -> bool {
    let labels = match &peer.0 {
        NamespaceScope::Named(_) => Labels::new(), // not read
        NamespaceScope::Matching(_) => snap.namespace_labels(&pod.key.namespace),
    };
    peer_matches_in(peer, pod, &labels)
}

/// Whether `pod` is a member of `peer` while its namespace has `namespace_labels`.
fn peer_matches_in(peer: &PeerKey, pod: &Pod, namespace_labels: &Labels) -> bool {
    pod.is_policed()
        && match &peer.0 {
            NamespaceScope::Named(ns) => pod.key.namespace == *ns,
            NamespaceScope::Matching(sel) => sel.matches(namespace_labels),
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
mod tests;
