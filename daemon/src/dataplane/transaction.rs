//! Which kernel transaction a ruleset delta needs: none, element changes only, or a change
//! of structure with its element changes. Both go over netlink, one batch each, and cost
//! what changes, not the table's size; a whole-table swap is left for the start, repairs,
//! and a set that would change its type in place.

use std::collections::{BTreeMap, BTreeSet};

use podwall_policy::ruleset::Element;
use podwall_policy::{Chain, Direction, End, Family, RuleVerdict, Ruleset, RulesetDelta, Set};

use super::elements::{ElementOp, Key};
use super::names::{hairpin_set, map_name};
use super::shape::shape;
use super::structure::{ChainChange, Structure};
use super::{Desired, Guard};

const DIRECTIONS: [Direction; 2] = [Direction::Ingress, Direction::Egress];

/// What must change in the kernel to go from `applied` to `desired`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transaction {
    None,
    Elements(Vec<ElementOp>),
    Structure(Box<Structure>),
    /// Swap the whole table (a set whose type changes under the same name).
    Replace,
}

/// Classify a delta (and a new guard) against what is applied.
pub fn transaction_for(applied: &Desired, delta: &RulesetDelta, guard: &Guard) -> Transaction {
    let (guard_deletes, guard_adds) = applied.guard.ops_to(guard);
    if delta.is_empty() && guard_deletes.is_empty() && guard_adds.is_empty() {
        return Transaction::None;
    }
    let elements = element_ops(&applied.ruleset, delta, guard_deletes, guard_adds);
    let structural = !delta.sets_added.is_empty()
        || !delta.sets_removed.is_empty()
        || !delta.chains_set.is_empty()
        || !delta.chains_removed.is_empty();
    if !structural {
        return Transaction::Elements(elements);
    }
    match structure(&applied.ruleset, delta, elements) {
        Some(structure) => Transaction::Structure(Box::new(Structure {
            logging: applied.logging,
            ..structure
        })),
        None => Transaction::Replace,
    }
}

/// The structural change, or `None` when a set keeps its name but not its type (the
/// kernel cannot change a set's type while rules refer to it).
fn structure(
    applied: &Ruleset,
    delta: &RulesetDelta,
    elements: Vec<ElementOp>,
) -> Option<Structure> {
    let mut structure = Structure {
        elements,
        ..Structure::default()
    };
    for (name, set) in &delta.sets_added {
        match applied
            .sets
            .get(name)
            .filter(|_| delta.sets_removed.contains(name))
        {
            Some(old) if same_type(old, set) => {
                structure.refilled_sets.insert(name.clone(), set.clone());
            }
            Some(_) => return None,
            None => {
                structure.new_sets.insert(name.clone(), set.clone());
            }
        }
    }
    structure.removed_sets = (delta.sets_removed.iter())
        .filter(|name| !delta.sets_added.contains_key(*name))
        .cloned()
        .collect();
    // A rule's family may come from its set, which is new or unchanged.
    let family_of = |set: &str| {
        (delta.sets_added.get(set))
            .or_else(|| applied.sets.get(set))
            .map(Set::family)
    };
    structure.chains = (delta.chains_set.iter())
        .map(|(name, chain)| {
            let new = !applied.chains.contains_key(name);
            (name.clone(), change(new, chain.clone(), family_of))
        })
        .collect::<BTreeMap<_, _>>();
    structure.removed_chains = deletion_order(applied, &delta.chains_removed);
    Some(structure)
}

/// `chain`'s rules resolved to their shapes, a rule's family from its sets' (`family_of`).
fn change(new: bool, chain: Chain, family_of: impl Fn(&str) -> Option<Family>) -> ChainChange {
    let shapes = (chain.rules.iter())
        .map(|rule| shape(chain.direction, rule, &family_of))
        .collect();
    ChainChange { new, chain, shapes }
}

/// Every element a whole table's batch adds after its sets and chains: the dispatch
/// entries, the hairpin pairs and the guard's elements (`table` writes the rest).
pub(super) fn whole_elements(desired: &Desired) -> Vec<ElementOp> {
    let entries = |map: &BTreeMap<std::net::IpAddr, String>| {
        (map.iter())
            .map(|(ip, chain)| (*ip, Some(chain.clone())))
            .collect()
    };
    let delta = RulesetDelta {
        ingress: entries(&desired.ruleset.ingress),
        egress: entries(&desired.ruleset.egress),
        ..RulesetDelta::default()
    };
    let (_, guard_adds) = Guard::default().ops_to(&desired.guard);
    element_ops(&Ruleset::default(), &delta, Vec::new(), guard_adds)
}

/// The removed chains, those that another removed chain goes to last: the kernel refuses to
/// delete a chain a rule still goes to.
fn deletion_order(applied: &Ruleset, removed: &BTreeSet<String>) -> Vec<String> {
    let targets: BTreeSet<&String> = removed
        .iter()
        .filter_map(|name| applied.chains.get(name))
        .flat_map(|chain| {
            let rules = chain.rules.iter().filter_map(|r| match &r.verdict {
                RuleVerdict::Goto(next) => Some(next),
                _ => None,
            });
            let end = match &chain.end {
                End::Goto(next) => Some(next),
                _ => None,
            };
            rules.chain(end)
        })
        .collect();
    let (last, first): (Vec<&String>, Vec<&String>) =
        removed.iter().partition(|name| targets.contains(name));
    first.into_iter().chain(last).cloned().collect()
}

fn same_type(a: &Set, b: &Set) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b) && a.family() == b.family()
}

/// The element changes of a delta: dispatch, hairpin, set elements and guard, deletes
/// first (a verdict map element cannot change its verdict in place).
fn element_ops(
    applied: &Ruleset,
    delta: &RulesetDelta,
    guard_deletes: Vec<ElementOp>,
    guard_adds: Vec<ElementOp>,
) -> Vec<ElementOp> {
    let (mut deletes, mut adds) = (guard_deletes, guard_adds);
    for direction in DIRECTIONS {
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
    // A local pod's address appears in or leaves the ingress map: its hairpin pair follows.
    for (ip, chain) in &delta.ingress {
        let set = hairpin_set(Family::of(ip)).to_string();
        let key = Key::AddrPair(*ip);
        match (applied.ingress.contains_key(ip), chain) {
            (false, Some(_)) => adds.push(ElementOp::Add {
                set,
                key,
                jump: None,
            }),
            (true, None) => deletes.push(ElementOp::Delete { set, key }),
            _ => {}
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
    deletes
}

fn key(element: &Element) -> Key {
    // (Interval sets never change by element: the compiler replaces them whole.)
    match element {
        Element::Address(ip) => Key::Addr(*ip),
        Element::AddressPort(ip, port) => Key::AddrPort(*ip, *port),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use podwall_policy::ruleset::Addresses;
    use podwall_policy::{Ruleset, Set};

    use super::*;
    use crate::dataplane::{Kernel, RecordingKernel};

    pub(crate) fn ruleset_with(ip: &str, chain: &str, peers: &[&str]) -> Ruleset {
        let mut rs = Ruleset::default();
        rs.ingress.insert(ip.parse().unwrap(), chain.into());
        rs.sets.insert(
            "pods4_1".into(),
            Set::Addresses {
                family: Family::V4,
                elements: peers
                    .iter()
                    .map(|p| p.parse().unwrap())
                    .collect::<Addresses>(),
            },
        );
        rs
    }

    pub(crate) fn desired(ruleset: Ruleset) -> Desired {
        Desired {
            ruleset,
            guard: Guard::default(),
            logging: None,
        }
    }

    #[test]
    fn element_changes_go_over_the_element_path_deletes_first() {
        let before = ruleset_with("10.0.0.2", "in_a", &["10.0.1.1"]);
        let after = ruleset_with("10.0.0.2", "in_b", &["10.0.1.2"]);
        let applied = desired(before.clone());
        let Transaction::Elements(ops) =
            transaction_for(&applied, &before.diff(&after), &Guard::default())
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
        let Transaction::Elements(ops) =
            transaction_for(&Desired::default(), &RulesetDelta::default(), &guard)
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
    fn a_new_set_and_chain_are_a_structural_change_that_brings_its_elements() {
        let before = Ruleset::default();
        let mut after = ruleset_with("10.0.0.2", "in_a", &["10.0.1.1"]);
        after.chains.insert(
            "in_a".into(),
            podwall_policy::Chain {
                direction: Direction::Ingress,
                policies: vec![],
                rules: vec![],
                end: Default::default(),
                tier: Default::default(),
            },
        );
        let none = Guard::default();
        let Transaction::Structure(structure) =
            transaction_for(&desired(before.clone()), &before.diff(&after), &none)
        else {
            panic!("a structural change")
        };
        assert_eq!(structure.new_sets.keys().collect::<Vec<_>>(), ["pods4_1"]);
        assert!(structure.chains["in_a"].new);
        // The dispatch entry and the hairpin pair of the new pod go in the same batch.
        assert_eq!(structure.elements.len(), 2, "{:?}", structure.elements);
        let mut kernel = RecordingKernel {
            table: Some(desired(before)),
            ..Default::default()
        };
        kernel.apply_structure(&structure).unwrap();
        assert_eq!(kernel.table, Some(desired(after.clone())));
        assert_eq!(
            transaction_for(&desired(after.clone()), &after.diff(&after), &none),
            Transaction::None
        );
    }

    #[test]
    fn a_set_replaced_whole_is_refilled_unless_its_type_changes() {
        let interval = |last: &str| Set::Intervals {
            family: Family::V4,
            ranges: vec![podwall_policy::ipblock::IpRange {
                first: "10.0.0.0".parse().unwrap(),
                last: last.parse().unwrap(),
            }],
        };
        let with = |set: Set| {
            let mut rs = Ruleset::default();
            rs.sets.insert("cidr4_x".into(), set);
            rs
        };
        let (a, b) = (with(interval("10.0.0.255")), with(interval("10.0.1.255")));
        let none = Guard::default();
        let Transaction::Structure(structure) =
            transaction_for(&desired(a.clone()), &a.diff(&b), &none)
        else {
            panic!("a structural change")
        };
        assert_eq!(structure.refilled_sets.len(), 1);
        assert!(structure.new_sets.is_empty() && structure.removed_sets.is_empty());
        let c = with(Set::Addresses {
            family: Family::V4,
            elements: Addresses::new(),
        });
        assert_eq!(
            transaction_for(&desired(a.clone()), &a.diff(&c), &none),
            Transaction::Replace
        );
    }
}
