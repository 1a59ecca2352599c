//! A software model of how the kernel looks a new connection up in compiled rulesets: the
//! tests hold the compiler to the evaluator with it, and the daemon judges tracked flows.
//!
//! It follows the dispatch the dataplane renders: on the node of the source, the egress map
//! keyed on the source address picks a chain, which must allow; on the node of the
//! destination, the ingress map keyed on the destination address picks a chain, which must
//! allow. An address without an entry, or with one to `open`, is not isolated in that
//! direction; one in `quarantine` drops. Established traffic, node-originated traffic and
//! neighbour discovery are accepted before any of this and are not modelled.
//!
//! The daemon asks it which tracked flows a change revoked (`allowed_here`). A ruleset that
//! names a missing chain or set is a compiler bug: the lookup says so (`Dangling`), the
//! daemon treats it as dropped, and the tests' `forward` fails on it.

use std::net::IpAddr;

use crate::ipblock::Family;
use crate::model::{Direction, Protocol};
use crate::ruleset::{names, Element, End, PeerMatch, PortMatch, Rule, RuleVerdict, Ruleset};

/// The first packet of a connection, as the forward hook sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
}

/// What one direction's lookup decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// No map entry, or one to `open`, or a chain that returns without a verdict (no tier
    /// decided): the address is not isolated in that direction.
    NoEntry,
    /// The chain allowed, by this rule.
    Allowed(Rule),
    /// The chain ran off its end.
    Dropped,
    /// A rule that denies matched (a ClusterNetworkPolicy's Deny).
    Denied(Rule),
    /// The ruleset names a chain or set it does not hold: a compiler bug, a table the kernel
    /// would never have taken. Whoever acts on a lookup treats it as dropped.
    Dangling(String),
}

/// Looks `packet` up in one node's ruleset for one direction.
pub fn lookup(rs: &Ruleset, direction: Direction, packet: &Packet) -> Lookup {
    let key = match direction {
        Direction::Ingress => packet.dst,
        Direction::Egress => packet.src,
    };
    let name = match rs.map(direction).get(&key).map(String::as_str) {
        None | Some(names::OPEN_CHAIN) => return Lookup::NoEntry,
        Some(names::QUARANTINE_CHAIN) => return Lookup::Dropped,
        Some(name) => name,
    };
    walk(rs, name, direction, packet, 0)
}

/// The most chains a lookup goes through (Admin tier, then NetworkPolicy or Baseline); more
/// is a loop the compiler made.
const MAX_DEPTH: usize = 3;

/// Follows chain `name` and the chains it goes to.
fn walk(rs: &Ruleset, name: &str, direction: Direction, packet: &Packet, depth: usize) -> Lookup {
    if depth >= MAX_DEPTH {
        return Lookup::Dangling(format!("chain {name} is reached through too many gotos"));
    }
    let Some(chain) = rs.chains.get(name) else {
        return Lookup::Dangling(format!(
            "a map entry or goto points to missing chain {name}"
        ));
    };
    for rule in &chain.rules {
        match rule_matches(rs, rule, direction, packet) {
            Ok(true) => {
                return match &rule.verdict {
                    RuleVerdict::Allow => Lookup::Allowed(rule.clone()),
                    RuleVerdict::Deny => Lookup::Denied(rule.clone()),
                    RuleVerdict::Goto(next) => walk(rs, next, direction, packet, depth + 1),
                }
            }
            Ok(false) => {}
            Err(missing) => {
                return Lookup::Dangling(format!("rule refers to missing set {missing}"))
            }
        }
    }
    match &chain.end {
        End::Drop => Lookup::Dropped,
        End::Return => Lookup::NoEntry,
        End::Goto(next) => walk(rs, next, direction, packet, depth + 1),
    }
}

/// Whether a new connection with `packet`'s addresses, protocol and port is still allowed by
/// this node's ruleset: its source's egress and its destination's ingress, where they are
/// local. A pod reaching itself always is (hairpin).
pub fn allowed_here(rs: &Ruleset, packet: &Packet) -> bool {
    packet.src == packet.dst
        || [Direction::Egress, Direction::Ingress]
            .into_iter()
            .all(|direction| {
                matches!(
                    lookup(rs, direction, packet),
                    Lookup::NoEntry | Lookup::Allowed(_)
                )
            })
}

/// Whether a new connection passes every node's rules: the source's egress (wherever its
/// pod runs) and the destination's ingress. Traffic from an address to itself never leaves
/// the pod and is not seen.
///
/// Test support: a dangling reference is a compiler bug, and fails the test.
#[cfg(any(test, feature = "testing"))]
pub fn forward<'a>(
    rulesets: impl IntoIterator<Item = &'a Ruleset> + Clone,
    packet: &Packet,
) -> bool {
    if packet.src == packet.dst {
        return true;
    }
    [Direction::Egress, Direction::Ingress]
        .into_iter()
        .all(|direction| {
            rulesets
                .clone()
                .into_iter()
                .all(|rs| match lookup(rs, direction, packet) {
                    Lookup::Dangling(what) => panic!("{what}"),
                    found => !matches!(found, Lookup::Dropped | Lookup::Denied(_)),
                })
        })
}

/// Whether `rule` matches; `Err` names a set the ruleset does not hold.
fn rule_matches(
    rs: &Ruleset,
    rule: &Rule,
    direction: Direction,
    p: &Packet,
) -> Result<bool, String> {
    if rule.family.is_some_and(|f| f != Family::of(&p.src)) {
        return Ok(false);
    }
    let peer = match direction {
        Direction::Ingress => p.src,
        Direction::Egress => p.dst,
    };
    let peer_ok = match &rule.peer {
        PeerMatch::Any => true,
        PeerMatch::InSet(name) => in_set(rs, name, Element::Address(peer))?,
    };
    Ok(peer_ok
        && match &rule.ports {
            PortMatch::Any => true,
            PortMatch::Protocol(proto) => *proto == p.protocol,
            PortMatch::Ports { protocol, ranges } => {
                *protocol == p.protocol && ranges.iter().any(|(a, b)| (*a..=*b).contains(&p.port))
            }
            PortMatch::Named { protocol, set } => {
                *protocol == p.protocol && in_set(rs, set, Element::AddressPort(p.dst, p.port))?
            }
        })
}

fn in_set(rs: &Ruleset, name: &str, elem: Element) -> Result<bool, String> {
    let set = rs.sets.get(name).ok_or_else(|| name.to_string())?;
    // A set of the other family never matches (nftables would not even load such a rule).
    let family = match elem {
        Element::Address(ip) | Element::AddressPort(ip, _) => Family::of(&ip),
    };
    Ok(set.family() == family && set.contains(&elem))
}
