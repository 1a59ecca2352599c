//! Names of kernel objects: a kind prefix, the family where it matters and 16 hex digits of
//! a stable 64-bit FNV-1a hash of the canonical description of what the object holds. Short,
//! valid nftables identifiers, the same on every run and every node.

use crate::ipblock::Family;
use crate::model::Direction;

/// The table podwall owns.
pub const TABLE: &str = "podwall";

/// Where the dispatch maps send a local pod that no policy isolates in that direction:
/// an empty chain, so the packet goes on (to the peer's ingress check, then accept).
/// Entries for every local pod make the table say which pods the node enforces.
pub const OPEN_CHAIN: &str = "open";

/// Where the dispatch maps send a local pod whose labels are not known yet (the API
/// server could not say in time): a chain that drops, so that no policy that would
/// select the pod is bypassed while its labels are unknown.
pub const QUARANTINE_CHAIN: &str = "quarantine";

/// 64-bit FNV-1a: tiny, stable across Rust releases (unlike `DefaultHasher`).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn family_digit(family: Family) -> char {
    match family {
        Family::V4 => '4',
        Family::V6 => '6',
    }
}

/// Set of pod addresses matched by a selector peer.
pub fn peer_set(canonical: &str, family: Family) -> String {
    format!(
        "pods{}_{:016x}",
        family_digit(family),
        stable_hash(canonical.as_bytes())
    )
}

/// Interval set of an ipBlock.
pub fn block_set(canonical: &str, family: Family) -> String {
    format!(
        "cidr{}_{:016x}",
        family_digit(family),
        stable_hash(canonical.as_bytes())
    )
}

/// `addr . port` set of a named port and protocol.
pub fn named_port_set(canonical: &str, family: Family) -> String {
    format!(
        "port{}_{:016x}",
        family_digit(family),
        stable_hash(canonical.as_bytes())
    )
}

/// Chain of a direction and a set of policies.
pub fn chain(direction: Direction, canonical: &str) -> String {
    let prefix = match direction {
        Direction::Ingress => "in",
        Direction::Egress => "out",
    };
    format!("{prefix}_{:016x}", stable_hash(canonical.as_bytes()))
}
