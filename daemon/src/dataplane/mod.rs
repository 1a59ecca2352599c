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

/// What must change in the kernel to go from `applied` to `desired`: nothing, elements
/// only, or the structure (then the whole table is swapped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    None,
    Elements(Vec<ElementOp>),
    Replace,
}

/// Classify a delta against the ruleset it applies to.
pub fn change_for(applied: &Ruleset, delta: &RulesetDelta) -> Change {
    if delta.is_empty() {
        return Change::None;
    }
    let structural = !delta.sets_added.is_empty()
        || !delta.sets_removed.is_empty()
        || !delta.chains_set.is_empty()
        || !delta.chains_removed.is_empty();
    if structural {
        return Change::Replace;
    }
    let mut deletes = Vec::new();
    let mut adds = Vec::new();
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
    /// The fingerprint the table rendered from `ruleset` must have.
    pub fn of(ruleset: &Ruleset) -> Self {
        let mut maps: BTreeMap<String, BTreeMap<IpAddr, String>> = BTreeMap::new();
        for direction in [Direction::Ingress, Direction::Egress] {
            for family in Family::ALL {
                maps.insert(map_name(direction, family).to_string(), BTreeMap::new());
            }
            for (ip, chain) in ruleset.map(direction) {
                maps.get_mut(map_name(direction, Family::of(ip)))
                    .expect("all maps inserted")
                    .insert(*ip, chain.clone());
            }
        }
        let sets = ruleset
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
                let mut rules: Vec<String> =
                    chain.rules.iter().map(compiled::rule_comment).collect();
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
    /// Swap the whole table for the one `ruleset` renders to, in one transaction, never
    /// leaving a moment without rules.
    fn replace(&mut self, ruleset: &Ruleset) -> Result<(), DataplaneError>;
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
    pub table: Option<Ruleset>,
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
    fn replace(&mut self, ruleset: &Ruleset) -> Result<(), DataplaneError> {
        self.fail(1)?;
        self.table = Some(ruleset.clone());
        self.calls.push(Call::Replace);
        Ok(())
    }

    fn apply_elements(&mut self, ops: &[ElementOp]) -> Result<(), DataplaneError> {
        self.fail(ops.len())?;
        let table = self.table.get_or_insert_with(Ruleset::default);
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

/// An element op applied to an in-memory ruleset, as the kernel would.
fn apply_op(table: &mut Ruleset, op: &ElementOp) {
    let maps: BTreeSet<&str> = ["ingress4", "ingress6", "egress4", "egress6"].into();
    let (set, key) = match op {
        ElementOp::Add { set, key, .. } | ElementOp::Delete { set, key } => (set.as_str(), *key),
    };
    if maps.contains(set) {
        let Key::Addr(ip) = key else { return };
        let map = if set.starts_with("ingress") {
            &mut table.ingress
        } else {
            &mut table.egress
        };
        match op {
            ElementOp::Add {
                jump: Some(chain), ..
            } => {
                map.insert(ip, chain.clone());
            }
            _ => {
                map.remove(&ip);
            }
        }
        return;
    }
    let element = match key {
        Key::Addr(ip) => Element::Address(ip),
        Key::AddrPort(ip, port) => Element::AddressPort(ip, port),
    };
    if let Some(s) = table.sets.get_mut(set) {
        match op {
            ElementOp::Add { .. } => s.insert(element),
            ElementOp::Delete { .. } => s.remove(&element),
        };
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

    #[test]
    fn element_changes_go_over_the_element_path_deletes_first() {
        let before = ruleset_with("10.0.0.2", "in_a", &["10.0.1.1"]);
        let after = ruleset_with("10.0.0.2", "in_b", &["10.0.1.2"]);
        let Change::Elements(ops) = change_for(&before, &before.diff(&after)) else {
            panic!("element-only change")
        };
        assert_eq!(
            ops,
            vec![
                ElementOp::Delete {
                    set: "ingress4".into(),
                    key: Key::Addr("10.0.0.2".parse().unwrap())
                },
                ElementOp::Delete {
                    set: "pods4_1".into(),
                    key: Key::Addr("10.0.1.1".parse().unwrap())
                },
                ElementOp::Add {
                    set: "ingress4".into(),
                    key: Key::Addr("10.0.0.2".parse().unwrap()),
                    jump: Some("in_b".into())
                },
                ElementOp::Add {
                    set: "pods4_1".into(),
                    key: Key::Addr("10.0.1.2".parse().unwrap()),
                    jump: None
                },
            ]
        );
        let mut kernel = RecordingKernel {
            table: Some(before),
            ..Default::default()
        };
        kernel.apply_elements(&ops).unwrap();
        assert_eq!(kernel.table, Some(after));
    }

    #[test]
    fn a_new_set_needs_a_replace() {
        let before = Ruleset::default();
        let after = ruleset_with("10.0.0.2", "in_a", &[]);
        assert_eq!(change_for(&before, &before.diff(&after)), Change::Replace);
        assert_eq!(change_for(&after, &after.diff(&after)), Change::None);
    }

    #[test]
    fn fingerprint_differences_name_what_drifted() {
        let rs = ruleset_with("10.0.0.2", "in_a", &["10.0.1.1"]);
        let expected = Fingerprint::of(&rs);
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
