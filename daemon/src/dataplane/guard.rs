//! The anti-spoofing guard: which source addresses each pod's host-side veth may send from.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::names;
use super::netlink::{ElementOp, Key};

/// Which addresses each pod's host-side veth may send from: the anti-spoofing guard. A pod
/// whose veth is listed may send only from its own addresses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Guard {
    pub sources: BTreeMap<String, BTreeSet<IpAddr>>,
}

impl Guard {
    /// The element changes from `self` to `new`, as (deletes, adds).
    pub(super) fn ops_to(&self, new: &Guard) -> (Vec<ElementOp>, Vec<ElementOp>) {
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
