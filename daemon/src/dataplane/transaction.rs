//! Which kernel transaction a ruleset delta needs: none, element changes only (the netlink
//! path, whose cost does not grow with the table), or a swap of the whole table.

use podwall_policy::ruleset::Element;
use podwall_policy::{Direction, Family, RulesetDelta};

use super::names::{hairpin_set, map_name};
use super::netlink::{ElementOp, Key};
use super::{Desired, Guard};

const DIRECTIONS: [Direction; 2] = [Direction::Ingress, Direction::Egress];

/// What must change in the kernel to go from `applied` to `desired`: nothing, elements
/// only, or the structure (then the whole table is swapped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transaction {
    None,
    Elements(Vec<ElementOp>),
    Replace,
}

/// Classify a delta (and a new guard) against what is applied.
pub fn transaction_for(applied: &Desired, delta: &RulesetDelta, guard: &Guard) -> Transaction {
    let (guard_deletes, guard_adds) = applied.guard.ops_to(guard);
    if delta.is_empty() && guard_deletes.is_empty() && guard_adds.is_empty() {
        return Transaction::None;
    }
    let applied = &applied.ruleset;
    let structural = !delta.sets_added.is_empty()
        || !delta.sets_removed.is_empty()
        || !delta.chains_set.is_empty()
        || !delta.chains_removed.is_empty();
    if structural {
        return Transaction::Replace;
    }
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
    Transaction::Elements(deletes)
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
    use std::collections::BTreeSet;

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
                    .collect::<BTreeSet<_>>(),
            },
        );
        rs
    }

    pub(crate) fn desired(ruleset: Ruleset) -> Desired {
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
    fn a_new_set_needs_a_replace() {
        let before = Ruleset::default();
        let after = ruleset_with("10.0.0.2", "in_a", &[]);
        let none = Guard::default();
        assert_eq!(
            transaction_for(&desired(before.clone()), &before.diff(&after), &none),
            Transaction::Replace
        );
        assert_eq!(
            transaction_for(&desired(after.clone()), &after.diff(&after), &none),
            Transaction::None
        );
    }
}
