//! The anti-spoofing guard: which source addresses each pod's host-side veth may send from.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::elements::{ElementOp, Key};
use super::names;

/// Which addresses each pod's host-side veth may send from: the anti-spoofing guard. A pod
/// whose veth is listed may send only from its own addresses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Guard {
    pub sources: BTreeMap<String, BTreeSet<IpAddr>>,
}

impl Guard {
    /// The element changes from `self` to `new`, as (deletes, adds).
    pub(super) fn ops_to(&self, new: &Guard) -> (Vec<ElementOp>, Vec<ElementOp>) {
        let (old, new) = (self.elements(), new.elements());
        let deletes = old
            .difference(&new)
            .map(|(set, key)| ElementOp::Delete {
                set: set.to_string(),
                key: key.clone(),
            })
            .collect();
        let adds = new
            .difference(&old)
            .map(|(set, key)| ElementOp::Add {
                set: set.to_string(),
                key: key.clone(),
                jump: None,
            })
            .collect();
        (deletes, adds)
    }

    /// The guard's set elements: each guarded port, and each of its addresses.
    fn elements(&self) -> BTreeSet<(&'static str, Key)> {
        let mut elements = BTreeSet::new();
        for (port, ips) in &self.sources {
            elements.insert((names::GUARD_PORTS, Key::IfName(port.clone())));
            for ip in ips {
                elements.insert((guard_set(ip), Key::IfNameAddr(port.clone(), *ip)));
                if ip.is_ipv6() {
                    elements.insert((names::GUARD_TARGETS6, Key::IfNameAddr(port.clone(), *ip)));
                }
            }
        }
        elements
    }
}

fn guard_set(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() {
        names::GUARD_SOURCES4
    } else {
        names::GUARD_SOURCES6
    }
}
