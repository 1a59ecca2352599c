//! The ruleset description: what the dataplane renders into the `inet podwall` table.
//!
//! Plain data, no nftables text. The shape:
//! - `ingress` / `egress`: verdict-map entries keyed on a local pod's address (the renderer
//!   splits them into `ingress4`/`ingress6`/`egress4`/`egress6`); each points to the chain
//!   that judges traffic to (ingress) or from (egress) that pod. A pod no policy isolates in a
//!   direction has no entry for it: that side is open.
//! - `chains`: one per distinct set of isolating policies and direction, shared by every
//!   local pod with that set, so attaching a pod usually adds map and set elements only. A
//!   chain's rules allow; falling off its end drops. The dataplane reaches a chain with
//!   `jump` from the map and renders "allowed" as `return`, so that a packet that passes the
//!   egress check still meets the ingress check.
//! - `sets`: peer addresses per selector peer and family, interval sets for ipBlocks (excepts
//!   already subtracted) and `addr . port` concatenations for named ports.
//!
//! Every kernel object name comes from [`names`], derived from a stable hash of what the
//! object means, never from user-controlled strings.

mod addresses;
pub mod names;
mod verdict;

pub use addresses::Addresses;
pub use verdict::{End, RuleVerdict};

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::diff::{diff, Diff};
use crate::ipblock::{Family, IpRange};
use crate::model::{Direction, PolicyKey, PolicyTier, Protocol};

/// Name of a set in the table.
pub type SetName = String;
/// Name of a chain in the table.
pub type ChainName = String;

/// A named set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Set {
    /// `type ipv4_addr` / `ipv6_addr`: the addresses of the pods a selector peer matches.
    Addresses { family: Family, elements: Addresses },
    /// `flags interval`: an ipBlock, sorted disjoint ranges with the excepts cut out.
    Intervals {
        family: Family,
        ranges: Vec<IpRange>,
    },
    /// `ipv4_addr . inet_service`: every (pod address, port number) a named port resolves to
    /// for one protocol, so the allowed port can depend on the destination pod.
    AddressPorts {
        family: Family,
        protocol: Protocol,
        elements: BTreeSet<(IpAddr, u16)>,
    },
}

impl Set {
    /// The family of the set's addresses.
    pub fn family(&self) -> Family {
        match self {
            Set::Addresses { family, .. }
            | Set::Intervals { family, .. }
            | Set::AddressPorts { family, .. } => *family,
        }
    }

    /// Whether `elem` is in the set (interval sets match by range).
    pub fn contains(&self, elem: &Element) -> bool {
        match (self, elem) {
            (Set::Addresses { elements, .. }, Element::Address(ip)) => elements.contains(ip),
            (Set::Intervals { ranges, .. }, Element::Address(ip)) => {
                ranges.iter().any(|r| r.contains(ip))
            }
            (Set::AddressPorts { elements, .. }, Element::AddressPort(ip, port)) => {
                elements.contains(&(*ip, *port))
            }
            _ => false,
        }
    }

    /// Adds an element to an element set; false if it was there (or the set is an interval set).
    pub fn insert(&mut self, elem: Element) -> bool {
        match (self, elem) {
            (Set::Addresses { elements, .. }, Element::Address(ip)) => elements.insert(ip),
            (Set::AddressPorts { elements, .. }, Element::AddressPort(ip, port)) => {
                elements.insert((ip, port))
            }
            _ => false,
        }
    }

    /// Removes an element; false if it was not there.
    pub fn remove(&mut self, elem: &Element) -> bool {
        match (self, elem) {
            (Set::Addresses { elements, .. }, Element::Address(ip)) => elements.remove(ip),
            (Set::AddressPorts { elements, .. }, Element::AddressPort(ip, port)) => {
                elements.remove(&(*ip, *port))
            }
            _ => false,
        }
    }

    /// The number of elements (ranges for an interval set).
    pub fn len(&self) -> usize {
        match self {
            Set::Addresses { elements, .. } => elements.len(),
            Set::Intervals { ranges, .. } => ranges.len(),
            Set::AddressPorts { elements, .. } => elements.len(),
        }
    }

    /// Whether the set has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One element of an element set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Element {
    Address(IpAddr),
    AddressPort(IpAddr, u16),
}

/// What a rule requires of the peer's address: saddr in an ingress chain, daddr in an
/// egress chain.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PeerMatch {
    Any,
    /// The address is in the set (of the rule's family).
    InSet(SetName),
}

/// What a rule requires of the layer-4 header.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PortMatch {
    /// Any protocol, any port.
    Any,
    /// `meta l4proto P`, any port.
    Protocol(Protocol),
    /// `meta l4proto P th dport { a-b, ... }`.
    Ports {
        protocol: Protocol,
        ranges: Vec<(u16, u16)>,
    },
    /// `meta l4proto P ip daddr . th dport @set`: a named port, resolved on the destination.
    Named { protocol: Protocol, set: SetName },
}

/// One rule of a chain; a packet that matches it gets the rule's verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// `meta nfproto`; `None` matches both families.
    pub family: Option<Family>,
    pub peer: PeerMatch,
    pub ports: PortMatch,
    /// The policy rule this comes from (`spec.ingress[index]` of `policy`), for comments
    /// and counters.
    pub policy: PolicyKey,
    pub index: usize,
    /// The policy logs what this rule allows (`Policy::log_allowed`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub log: bool,
    /// Allow for every NetworkPolicy rule.
    #[serde(default, skip_serializing_if = "RuleVerdict::is_allow")]
    pub verdict: RuleVerdict,
}

/// A chain judging one direction for the pods that share its set of policies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    pub direction: Direction,
    /// The isolating policies, sorted; their rules follow in that order.
    pub policies: Vec<PolicyKey>,
    /// The first rule that matches decides, with its verdict.
    pub rules: Vec<Rule>,
    /// What happens when none does: a NetworkPolicy chain drops.
    #[serde(default, skip_serializing_if = "End::is_drop")]
    pub end: End,
    /// The tier its rules and its end judge for: what the counters and the drop log say
    /// decided (a chain holds one tier's policies).
    #[serde(default, skip_serializing_if = "PolicyTier::is_network_policy")]
    pub tier: PolicyTier,
}

/// The desired state of the table for one node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ruleset {
    pub sets: BTreeMap<SetName, Set>,
    pub chains: BTreeMap<ChainName, Chain>,
    /// Local pod address → chain judging traffic to it.
    pub ingress: BTreeMap<IpAddr, ChainName>,
    /// Local pod address → chain judging traffic from it.
    pub egress: BTreeMap<IpAddr, ChainName>,
}

impl Ruleset {
    /// The dispatch map of a direction.
    pub fn map(&self, direction: Direction) -> &BTreeMap<IpAddr, ChainName> {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    pub(crate) fn map_mut(&mut self, direction: Direction) -> &mut BTreeMap<IpAddr, ChainName> {
        match direction {
            Direction::Ingress => &mut self.ingress,
            Direction::Egress => &mut self.egress,
        }
    }

    /// What changes `self` into `new`: whole sets and chains added or removed, elements of
    /// sets present in both, map entries.
    pub fn diff(&self, new: &Ruleset) -> RulesetDelta {
        let mut delta = RulesetDelta::default();
        for change in diff(&self.sets, &new.sets) {
            match change {
                Diff::Added(name, set) => {
                    delta.sets_added.insert(name.clone(), set.clone());
                }
                Diff::Changed { key, old, new } => diff_elements(key, old, new, &mut delta),
                Diff::Removed(name, _) => {
                    delta.sets_removed.insert(name.clone());
                }
            }
        }
        for change in diff(&self.chains, &new.chains) {
            match change.new_value() {
                Some(chain) => {
                    delta.chains_set.insert(change.key().clone(), chain.clone());
                }
                None => {
                    delta.chains_removed.insert(change.key().clone());
                }
            }
        }
        for direction in [Direction::Ingress, Direction::Egress] {
            let changes = delta.map_mut(direction);
            for change in diff(self.map(direction), new.map(direction)) {
                changes.insert(*change.key(), change.new_value().cloned());
            }
        }
        delta
    }

    /// What changes `self` into `new` among the objects `deltas` touched: several deltas of
    /// one transaction become one, without comparing whole rulesets.
    pub fn diff_over(&self, new: &Ruleset, deltas: &[RulesetDelta]) -> RulesetDelta {
        let mut sets = BTreeSet::new();
        let mut chains = BTreeSet::new();
        let mut ingress = BTreeSet::new();
        let mut egress = BTreeSet::new();
        for d in deltas {
            sets.extend(
                d.sets_added
                    .keys()
                    .chain(&d.sets_removed)
                    .chain(d.elements_added.keys())
                    .chain(d.elements_removed.keys()),
            );
            chains.extend(d.chains_set.keys().chain(&d.chains_removed));
            ingress.extend(d.ingress.keys());
            egress.extend(d.egress.keys());
        }
        fn part<K: Ord + Clone, V: Clone>(
            map: &BTreeMap<K, V>,
            keys: &BTreeSet<&K>,
        ) -> BTreeMap<K, V> {
            keys.iter()
                .filter_map(|k| map.get(*k).map(|v| ((*k).clone(), v.clone())))
                .collect()
        }
        let parts = |rs: &Ruleset| Ruleset {
            sets: part(&rs.sets, &sets),
            chains: part(&rs.chains, &chains),
            ingress: part(&rs.ingress, &ingress),
            egress: part(&rs.egress, &egress),
        };
        parts(self).diff(&parts(new))
    }

    /// Applies a delta, as the kernel would apply the transaction made from it.
    pub fn apply(&mut self, delta: &RulesetDelta) {
        for name in &delta.sets_removed {
            self.sets.remove(name);
        }
        for (name, set) in &delta.sets_added {
            self.sets.insert(name.clone(), set.clone());
        }
        for (name, elems) in &delta.elements_removed {
            if let Some(set) = self.sets.get_mut(name) {
                for e in elems {
                    set.remove(e);
                }
            }
        }
        for (name, elems) in &delta.elements_added {
            if let Some(set) = self.sets.get_mut(name) {
                for e in elems {
                    set.insert(*e);
                }
            }
        }
        for name in &delta.chains_removed {
            self.chains.remove(name);
        }
        for (name, chain) in &delta.chains_set {
            self.chains.insert(name.clone(), chain.clone());
        }
        for direction in [Direction::Ingress, Direction::Egress] {
            let changes = delta.map(direction).clone();
            let map = self.map_mut(direction);
            for (ip, chain) in changes {
                match chain {
                    Some(chain) => map.insert(ip, chain),
                    None => map.remove(&ip),
                };
            }
        }
    }
}

fn diff_elements(name: &str, old: &Set, new: &Set, delta: &mut RulesetDelta) {
    let (old_elems, new_elems) = (elements(old), elements(new));
    match (old_elems, new_elems) {
        (Some(o), Some(n)) if old.family() == new.family() => {
            let added: BTreeSet<Element> = n.difference(&o).copied().collect();
            let removed: BTreeSet<Element> = o.difference(&n).copied().collect();
            if !added.is_empty() {
                delta.elements_added.insert(name.to_string(), added);
            }
            if !removed.is_empty() {
                delta.elements_removed.insert(name.to_string(), removed);
            }
        }
        // Interval sets (and a set whose type changed) are replaced whole.
        _ => {
            delta.sets_removed.insert(name.to_string());
            delta.sets_added.insert(name.to_string(), new.clone());
        }
    }
}

fn elements(set: &Set) -> Option<BTreeSet<Element>> {
    match set {
        Set::Addresses { elements, .. } => Some(elements.iter().map(Element::Address).collect()),
        Set::AddressPorts { elements, .. } => Some(
            elements
                .iter()
                .map(|(ip, port)| Element::AddressPort(*ip, *port))
                .collect(),
        ),
        Set::Intervals { .. } => None,
    }
}

/// The changes between two rulesets, ready to become one transaction. Apply in this order:
/// removed sets go first only when they are replaced (a name in both `sets_removed` and
/// `sets_added`); otherwise add sets, elements, chains and map entries before removing map
/// entries, chains, elements and sets, so that nothing refers to a missing object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesetDelta {
    /// New sets, with all their elements.
    pub sets_added: BTreeMap<SetName, Set>,
    pub sets_removed: BTreeSet<SetName>,
    /// Elements to add to sets that exist before and after.
    pub elements_added: BTreeMap<SetName, BTreeSet<Element>>,
    pub elements_removed: BTreeMap<SetName, BTreeSet<Element>>,
    /// New or rewritten chains, whole.
    pub chains_set: BTreeMap<ChainName, Chain>,
    pub chains_removed: BTreeSet<ChainName>,
    /// Ingress map entries: `Some` sets the entry, `None` deletes it.
    pub ingress: BTreeMap<IpAddr, Option<ChainName>>,
    pub egress: BTreeMap<IpAddr, Option<ChainName>>,
}

impl RulesetDelta {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        *self == RulesetDelta::default()
    }

    /// The map changes of a direction.
    pub fn map(&self, direction: Direction) -> &BTreeMap<IpAddr, Option<ChainName>> {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    fn map_mut(&mut self, direction: Direction) -> &mut BTreeMap<IpAddr, Option<ChainName>> {
        match direction {
            Direction::Ingress => &mut self.ingress,
            Direction::Egress => &mut self.egress,
        }
    }

    /// How many objects and elements change: a rough size of the transaction.
    pub fn size(&self) -> usize {
        self.sets_added.len()
            + self.sets_removed.len()
            + self
                .elements_added
                .values()
                .map(BTreeSet::len)
                .sum::<usize>()
            + self
                .elements_removed
                .values()
                .map(BTreeSet::len)
                .sum::<usize>()
            + self.chains_set.len()
            + self.chains_removed.len()
            + self.ingress.len()
            + self.egress.len()
    }
}
