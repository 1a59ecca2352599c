//! Every kernel object name the dataplane renders, reads back or changes by element. The
//! names of what the compiler makes (pod chains, sets, `open`, `quarantine`) come from
//! `podwall_policy::ruleset::names`, hashed from what the objects hold, never from
//! user-controlled strings.

use podwall_policy::{Direction, Family};

/// Our one table (named where the compiler names its objects), in the `inet` family so that
/// one rule covers IPv4 and IPv6.
pub use podwall_policy::ruleset::names::{OPEN_CHAIN, QUARANTINE_CHAIN, TABLE};
pub const FAMILY: &str = "inet";
/// The base chain on the forward hook: pod↔pod traffic on the bridge arrives here through
/// br_netfilter, routed pod traffic directly.
pub const FORWARD_CHAIN: &str = "forward";
/// The base chain on the output hook: pod-sourced packets the node's own stack sends (IPVS).
pub const OUTPUT_CHAIN: &str = "output";
/// The anti-spoofing guard lives in a `bridge` table of the same name: only the bridge family
/// sees which bridge port (pod veth) a frame came in on.
pub const GUARD_FAMILY: &str = "bridge";
pub const GUARD_CHAIN: &str = "prerouting";
/// Host-side veths of guarded pods.
pub const GUARD_PORTS: &str = "ports";
/// `veth . address` pairs a pod may send from.
pub const GUARD_SOURCES4: &str = "sources4";
pub const GUARD_SOURCES6: &str = "sources6";
/// The same IPv6 pairs as `sources6`, keyed as raw bytes: the target a neighbour
/// advertisement claims sits at a fixed offset of the ICMPv6 header, which nft reads only as
/// an integer.
pub const GUARD_TARGETS6: &str = "targets6";

/// The dispatch maps, keyed on a local pod's address: which chain checks its traffic.
pub const MAPS: [(Direction, Family); 4] = [
    (Direction::Ingress, Family::V4),
    (Direction::Egress, Family::V4),
    (Direction::Ingress, Family::V6),
    (Direction::Egress, Family::V6),
];

/// Every local pod address paired with itself, per family: a packet from a pod to itself
/// (through its own Service, DNATed back to it) is accepted before dispatch, as the
/// evaluator allows it. Derived from the ingress maps' keys (every local pod has one).
pub fn hairpin_set(family: Family) -> &'static str {
    match family {
        Family::V4 => "hairpin4",
        Family::V6 => "hairpin6",
    }
}

/// The dispatch map of a direction and family.
pub fn map_name(direction: Direction, family: Family) -> &'static str {
    match (direction, family) {
        (Direction::Ingress, Family::V4) => "ingress4",
        (Direction::Egress, Family::V4) => "egress4",
        (Direction::Ingress, Family::V6) => "ingress6",
        (Direction::Egress, Family::V6) => "egress6",
    }
}

/// Which direction a dispatch map serves, from its name (`None` for any other set).
pub fn map_direction(name: &str) -> Option<Direction> {
    MAPS.into_iter()
        .find(|(direction, family)| map_name(*direction, *family) == name)
        .map(|(direction, _)| direction)
}
