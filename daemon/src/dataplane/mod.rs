//! The kernel side: turns compiled rulesets and their deltas into nftables transactions, and
//! reads the table back for checks and reconcile.
//!
//! Knows nftables, knows nothing of Kubernetes. `nft.rs` alone runs a program and
//! `netlink.rs` alone opens a socket. Two ways into the kernel, both one transaction each:
//! - a change of elements only (a pod attached, detached or relabelled, a peer appearing)
//!   goes over netlink as set/map element messages, costing the same whatever the table's
//!   size;
//! - a change of structure (a new chain or set, a policy added or removed) swaps the whole
//!   table with one `nft -f` script, which is fine for changes that are rare and bulky.

pub mod compiled;
pub mod names;
pub mod netlink;
pub mod nft;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use podwall_policy::ruleset::Element;
use podwall_policy::{Direction, Family, Ruleset, RulesetDelta, Set};

pub use netlink::{ElementOp, Key};

/// The dispatch map of a direction and family.
pub fn map_name(direction: Direction, family: Family) -> &'static str {
    match (direction, family) {
        (Direction::Ingress, Family::V4) => "ingress4",
        (Direction::Egress, Family::V4) => "egress4",
        (Direction::Ingress, Family::V6) => "ingress6",
        (Direction::Egress, Family::V6) => "egress6",
    }
}

/// Which addresses each pod's host-side veth may send from: the anti-spoofing guard. A pod
/// whose veth is listed may send only from its own addresses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Guard {
    pub sources: BTreeMap<String, BTreeSet<IpAddr>>,
}

impl Guard {
    /// The element changes from `self` to `new`, as (deletes, adds).
    fn ops_to(&self, new: &Guard) -> (Vec<ElementOp>, Vec<ElementOp>) {
        let (mut deletes, mut adds) = (Vec::new(), Vec::new());
        for (port, ips) in &self.sources {
            let kept = new.sources.get(port);
            if kept.is_none() {
                deletes.push(ElementOp::Delete {
                    set: names::GUARD_PORTS.into(),
                    key: Key::IfName(port.clone()),
                });
            }
            for ip in ips
                .iter()
                .filter(|ip| !kept.is_some_and(|k| k.contains(ip)))
            {
                deletes.push(ElementOp::Delete {
                    set: guard_set(ip).into(),
                    key: Key::IfNameAddr(port.clone(), *ip),
                });
            }
        }
        for (port, ips) in &new.sources {
            let had = self.sources.get(port);
            if had.is_none() {
                adds.push(ElementOp::Add {
                    set: names::GUARD_PORTS.into(),
                    key: Key::IfName(port.clone()),
                    jump: None,
                });
            }
            for ip in ips.iter().filter(|ip| !had.is_some_and(|h| h.contains(ip))) {
                adds.push(ElementOp::Add {
                    set: guard_set(ip).into(),
                    key: Key::IfNameAddr(port.clone(), *ip),
                    jump: None,
                });
            }
        }
        (deletes, adds)
    }
}

fn guard_set(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() {
        names::GUARD_SOURCES4
    } else {
        names::GUARD_SOURCES6
    }
}

/// Everything podwall keeps in the kernel: the compiled policy table and the guard.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Desired {
    pub ruleset: Ruleset,
    pub guard: Guard,
}

/// What must change in the kernel to go from `applied` to `desired`: nothing, elements
/// only, or the structure (then the whole table is swapped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    None,
    Elements(Vec<ElementOp>),
    Replace,
}

/// Classify a delta (and a new guard) against what is applied.
pub fn change_for(applied: &Desired, delta: &RulesetDelta, guard: &Guard) -> Change {
    let (guard_deletes, guard_adds) = applied.guard.ops_to(guard);
    if delta.is_empty() && guard_deletes.is_empty() && guard_adds.is_empty() {
        return Change::None;
    }
    let applied = &applied.ruleset;
    let structural = !delta.sets_added.is_empty()
        || !delta.sets_removed.is_empty()
        || !delta.chains_set.is_empty()
        || !delta.chains_removed.is_empty();
    if structural {
        return Change::Replace;
    }
    let (mut deletes, mut adds) = (guard_deletes, guard_adds);
    for direction in [Direction::Ingress, Direction::Egress] {
        for (ip, chain) in delta.map(direction) {
            let set = map_name(direction, Family::of(ip)).to_string();
            // A verdict map element cannot change its verdict in place: delete, then add.
            if applied.map(direction).contains_key(ip) {
                deletes.push(ElementOp::Delete {
                    set: set.clone(),
                    key: Key::Addr(*ip),
                });
            }
            if let Some(chain) = chain {
                adds.push(ElementOp::Add {
                    set,
                    key: Key::Addr(*ip),
                    jump: Some(chain.clone()),
                });
            }
        }
    }
    for (set, elements) in &delta.elements_removed {
        deletes.extend(elements.iter().map(|e| ElementOp::Delete {
            set: set.clone(),
            key: key(e),
        }));
    }
    for (set, elements) in &delta.elements_added {
        adds.extend(elements.iter().map(|e| ElementOp::Add {
            set: set.clone(),
            key: key(e),
            jump: None,
        }));
    }
    deletes.extend(adds);
    Change::Elements(deletes)
}

fn key(element: &Element) -> Key {
    // (Interval sets never change by element: the compiler replaces them whole.)
    match element {
        Element::Address(ip) => Key::Addr(*ip),
        Element::AddressPort(ip, port) => Key::AddrPort(*ip, *port),
    }
}

/// What a ruleset looks like from outside, as far as the kernel can tell it back: dispatch
/// entries exactly, sets by element count (interval sets only by presence: the kernel may
/// merge ranges), chains by their rules' comments or verdicts. Enough to notice a deleted
/// table, a flushed chain, a missing element.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fingerprint {
    pub maps: BTreeMap<String, BTreeMap<IpAddr, String>>,
    pub sets: BTreeMap<String, Option<usize>>,
    pub chains: BTreeMap<String, Vec<String>>,
}

impl Fingerprint {
    /// The fingerprint the tables rendered from `desired` must have.
    pub fn of(desired: &Desired) -> Self {
        let ruleset = &desired.ruleset;
        let mut maps: BTreeMap<String, BTreeMap<IpAddr, String>> = BTreeMap::new();
        for direction in [Direction::Ingress, Direction::Egress] {
            for family in Family::ALL {
                maps.insert(map_name(direction, family).to_string(), BTreeMap::new());
            }
            for (ip, chain) in ruleset.map(direction) {
                maps.entry(map_name(direction, Family::of(ip)).to_string())
                    .or_default()
                    .insert(*ip, chain.clone());
            }
        }
        let mut sets: BTreeMap<String, Option<usize>> = ruleset
            .sets
            .iter()
            .map(|(name, set)| {
                (
                    name.clone(),
                    if matches!(set, Set::Intervals { .. }) {
                        None
                    } else {
                        Some(set.len())
                    },
                )
            })
            .collect();
        let mut chains: BTreeMap<String, Vec<String>> = ruleset
            .chains
            .iter()
            .map(|(name, chain)| {
                // `ct state invalid drop`, the policy rules, the final drop.
                let mut rules = vec!["drop".to_string()];
                rules.extend(chain.rules.iter().map(compiled::rule_comment));
                rules.push("drop".to_string());
                (name.clone(), rules)
            })
            .collect();
        chains.insert(
            names::FORWARD_CHAIN.to_string(),
            compiled::FORWARD_FINGERPRINT
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
        chains.insert(names::OPEN_CHAIN.to_string(), Vec::new());
        chains.insert(
            names::QUARANTINE_CHAIN.to_string(),
            vec!["drop".to_string()],
        );
        chains.insert(
            names::GUARD_CHAIN.to_string(),
            compiled::GUARD_FINGERPRINT
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
        let guard = &desired.guard.sources;
        sets.insert(names::GUARD_PORTS.to_string(), Some(guard.len()));
        for (name, v4) in [
            (names::GUARD_SOURCES4, true),
            (names::GUARD_SOURCES6, false),
        ] {
            let count = guard
                .values()
                .flatten()
                .filter(|ip| ip.is_ipv4() == v4)
                .count();
            sets.insert(name.to_string(), Some(count));
        }
        Fingerprint { maps, sets, chains }
    }

    /// What differs from `expected`, in words, for the log.
    pub fn differences(&self, expected: &Fingerprint) -> Vec<String> {
        let mut out = Vec::new();
        for (name, entries) in &expected.maps {
            let actual = self.maps.get(name);
            let wrong = entries
                .iter()
                .filter(|(ip, chain)| actual.and_then(|m| m.get(ip)) != Some(chain))
                .count();
            let extra = actual.map_or(0, |m| {
                m.keys().filter(|ip| !entries.contains_key(ip)).count()
            });
            if actual.is_none() {
                out.push(format!("map {name} missing"));
            } else if wrong + extra > 0 {
                out.push(format!(
                    "map {name}: {wrong} entries missing or wrong, {extra} extra"
                ));
            }
        }
        for (name, count) in &expected.sets {
            match self.sets.get(name) {
                None => out.push(format!("set {name} missing")),
                Some(actual) if count.is_some() && actual != count => out.push(format!(
                    "set {name}: {} elements, expected {}",
                    actual.unwrap_or(0),
                    count.unwrap_or(0)
                )),
                _ => {}
            }
        }
        for (name, rules) in &expected.chains {
            match self.chains.get(name) {
                None => out.push(format!("chain {name} missing")),
                Some(actual) if actual != rules => out.push(format!(
                    "chain {name}: {} rules, expected {}",
                    actual.len(),
                    rules.len()
                )),
                _ => {}
            }
        }
        out
    }
}

/// The local pod addresses' dispatch entries, as `desired` has them, for CHECK.
pub fn entries_of(ruleset: &Ruleset, ips: &[IpAddr]) -> Vec<(String, IpAddr, String)> {
    let mut out = Vec::new();
    for direction in [Direction::Ingress, Direction::Egress] {
        for ip in ips {
            if let Some(chain) = ruleset.map(direction).get(ip) {
                out.push((
                    map_name(direction, Family::of(ip)).to_string(),
                    *ip,
                    chain.clone(),
                ));
            }
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The kernel refused the whole transaction; nothing changed.
    #[error("nftables transaction rejected ({ops} operations): {detail}")]
    Rejected { ops: usize, detail: String },
    /// `nft` or the netlink socket could not be used at all.
    #[error("cannot use {program}")]
    Exec {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The kernel's answer could not be understood.
    #[error("cannot read the podwall table back: {0}")]
    Dump(String),
}

/// The kernel, as far as podwall needs it. Production uses `nft::NftKernel`; tests use
/// `RecordingKernel`.
pub trait Kernel: Send {
    /// Swap our tables for the ones `desired` renders to, in one transaction, never leaving
    /// a moment without rules.
    fn replace(&mut self, desired: &Desired) -> Result<(), DataplaneError>;
    /// Change elements of existing sets and maps, in one transaction.
    fn apply_elements(&mut self, ops: &[ElementOp]) -> Result<(), DataplaneError>;
    /// Read our table back: `None` when it does not exist.
    fn dump(&mut self) -> Result<Option<Fingerprint>, DataplaneError>;
}

/// One call a `RecordingKernel` received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Replace,
    Elements(Vec<ElementOp>),
}

/// A kernel that keeps every call and the resulting table in memory.
#[derive(Debug, Default)]
pub struct RecordingKernel {
    pub calls: Vec<Call>,
    pub table: Option<Desired>,
    /// When set, the next call fails with this detail and changes nothing.
    pub fail_next: Option<String>,
}

impl RecordingKernel {
    fn fail(&mut self, ops: usize) -> Result<(), DataplaneError> {
        match self.fail_next.take() {
            Some(detail) => Err(DataplaneError::Rejected { ops, detail }),
            None => Ok(()),
        }
    }
}

impl Kernel for RecordingKernel {
    fn replace(&mut self, desired: &Desired) -> Result<(), DataplaneError> {
        self.fail(1)?;
        self.table = Some(desired.clone());
        self.calls.push(Call::Replace);
        Ok(())
    }

    fn apply_elements(&mut self, ops: &[ElementOp]) -> Result<(), DataplaneError> {
        self.fail(ops.len())?;
        let table = self.table.get_or_insert_with(Desired::default);
        for op in ops {
            apply_op(table, op);
        }
        self.calls.push(Call::Elements(ops.to_vec()));
        Ok(())
    }

    fn dump(&mut self) -> Result<Option<Fingerprint>, DataplaneError> {
        Ok(self.table.as_ref().map(Fingerprint::of))
    }
}

/// An element op applied to the in-memory tables, as the kernel would.
fn apply_op(table: &mut Desired, op: &ElementOp) {
    let (set, key, add) = match op {
        ElementOp::Add { set, key, .. } => (set.as_str(), key, true),
        ElementOp::Delete { set, key } => (set.as_str(), key, false),
    };
    match key {
        Key::IfName(port) => {
            if add {
                table.guard.sources.entry(port.clone()).or_default();
            } else {
                table.guard.sources.remove(port);
            }
        }
        Key::IfNameAddr(port, ip) => {
            if add {
                table
                    .guard
                    .sources
                    .entry(port.clone())
                    .or_default()
                    .insert(*ip);
            } else if let Some(ips) = table.guard.sources.get_mut(port) {
                ips.remove(ip);
            }
        }
        Key::Addr(ip) if set.starts_with("ingress") || set.starts_with("egress") => {
            let map = if set.starts_with("ingress") {
                &mut table.ruleset.ingress
            } else {
                &mut table.ruleset.egress
            };
            match op {
                ElementOp::Add {
                    jump: Some(chain), ..
                } => {
                    map.insert(*ip, chain.clone());
                }
                _ => {
                    map.remove(ip);
                }
            }
        }
        Key::Addr(_) | Key::AddrPort(..) => {
            let element = match key {
                Key::AddrPort(ip, port) => Element::AddressPort(*ip, *port),
                Key::Addr(ip) => Element::Address(*ip),
                _ => unreachable!("matched above"),
            };
            if let Some(s) = table.ruleset.sets.get_mut(set) {
                if add {
                    s.insert(element);
                } else {
                    s.remove(&element);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn ruleset_with(ip: &str, chain: &str, peers: &[&str]) -> Ruleset {
        let mut rs = Ruleset::default();
        rs.ingress.insert(ip.parse().unwrap(), chain.into());
        rs.sets.insert(
            "pods4_1".into(),
            Set::Addresses {
                family: Family::V4,
                elements: peers
                    .iter()
                    .map(|p| p.parse().unwrap())
                    .collect::<BTreeSet<_>>(),
            },
        );
        rs
    }

    fn desired(ruleset: Ruleset) -> Desired {
        Desired {
            ruleset,
            guard: Guard::default(),
        }
    }

    #[test]
    fn element_changes_go_over_the_element_path_deletes_first() {
        let before = ruleset_with("10.0.0.2", "in_a", &["10.0.1.1"]);
        let after = ruleset_with("10.0.0.2", "in_b", &["10.0.1.2"]);
        let applied = desired(before.clone());
        let Change::Elements(ops) = change_for(&applied, &before.diff(&after), &Guard::default())
        else {
            panic!("element-only change")
        };
        let addr = |ip: &str| Key::Addr(ip.parse().unwrap());
        assert_eq!(
            ops,
            vec![
                ElementOp::Delete {
                    set: "ingress4".into(),
                    key: addr("10.0.0.2")
                },
                ElementOp::Delete {
                    set: "pods4_1".into(),
                    key: addr("10.0.1.1")
                },
                ElementOp::Add {
                    set: "ingress4".into(),
                    key: addr("10.0.0.2"),
                    jump: Some("in_b".into())
                },
                ElementOp::Add {
                    set: "pods4_1".into(),
                    key: addr("10.0.1.2"),
                    jump: None
                },
            ]
        );
        let mut kernel = RecordingKernel {
            table: Some(applied),
            ..Default::default()
        };
        kernel.apply_elements(&ops).unwrap();
        assert_eq!(kernel.table, Some(desired(after)));
    }

    #[test]
    fn a_guard_change_alone_is_an_element_change() {
        let mut guard = Guard::default();
        guard
            .sources
            .insert("veth1".into(), ["10.0.0.2".parse().unwrap()].into());
        let Change::Elements(ops) =
            change_for(&Desired::default(), &RulesetDelta::default(), &guard)
        else {
            panic!("element-only change")
        };
        assert_eq!(ops.len(), 2, "the port and its address: {ops:?}");
        let mut kernel = RecordingKernel {
            table: Some(Desired::default()),
            ..Default::default()
        };
        kernel.apply_elements(&ops).unwrap();
        assert_eq!(kernel.table.unwrap().guard, guard);
    }

    #[test]
    fn a_new_set_needs_a_replace() {
        let before = Ruleset::default();
        let after = ruleset_with("10.0.0.2", "in_a", &[]);
        let none = Guard::default();
        assert_eq!(
            change_for(&desired(before.clone()), &before.diff(&after), &none),
            Change::Replace
        );
        assert_eq!(
            change_for(&desired(after.clone()), &after.diff(&after), &none),
            Change::None
        );
    }

    #[test]
    fn fingerprint_differences_name_what_drifted() {
        let expected = Fingerprint::of(&desired(ruleset_with("10.0.0.2", "in_a", &["10.0.1.1"])));
        let mut drifted = expected.clone();
        drifted.chains.remove("forward");
        drifted.maps.get_mut("ingress4").unwrap().clear();
        drifted.sets.insert("pods4_1".into(), Some(0));
        let diff = drifted.differences(&expected);
        assert_eq!(diff.len(), 3, "{diff:?}");
        assert!(diff.iter().any(|d| d.contains("chain forward missing")));
        assert!(expected.differences(&expected).is_empty());
    }
}
