//! Every kernel object name podwall uses comes from here.
//!
//! Pod chains are named from a hash of the attachment, never from user-controlled strings:
//! pod names can be 253 characters of things nftables would not accept as identifiers.

use podwall::wire::AttachmentId;
use podwall_policy::ruleset::names::stable_hash;

/// Our one table (named where the compiler names its objects), in the `inet` family so that
/// one rule covers IPv4 and IPv6.
pub use podwall_policy::ruleset::names::TABLE;
pub const FAMILY: &str = "inet";
/// The base chain on the forward hook: pod↔pod traffic on the bridge arrives here through
/// br_netfilter, routed pod traffic directly.
pub const FORWARD_CHAIN: &str = "forward";
/// The anti-spoofing guard lives in a `bridge` table of the same name: only the bridge family
/// sees which bridge port (pod veth) a frame came in on.
pub const GUARD_FAMILY: &str = "bridge";
pub const GUARD_CHAIN: &str = "prerouting";
/// Host-side veths of guarded pods.
pub const GUARD_PORTS: &str = "ports";
/// `veth . address` pairs a pod may send from.
pub const GUARD_SOURCES4: &str = "sources4";
pub const GUARD_SOURCES6: &str = "sources6";

/// Where the dispatch maps send a local pod that no policy isolates in that direction: an
/// empty chain, so the packet goes on (to the peer's ingress check, then accept).
pub const OPEN_CHAIN: &str = "open";

/// Where the dispatch maps send a local pod whose labels are not known yet (the API server
/// could not say in time): a chain that drops, so that no policy that would select the pod is
/// bypassed while its labels are unknown.
pub const QUARANTINE_CHAIN: &str = "quarantine";

/// Which side of a pod a chain guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Ingress,
    Egress,
}

/// `pod-<16 hex digits>-in` / `-out`, stable across restarts for the same attachment.
pub fn pod_chain(id: &AttachmentId, direction: Direction) -> String {
    let suffix = match direction {
        Direction::Ingress => "in",
        Direction::Egress => "out",
    };
    let key = [id.container_id.as_bytes(), b"\0", id.ifname.as_bytes()].concat();
    format!("pod-{:016x}-{suffix}", stable_hash(&key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: &str, i: &str) -> AttachmentId {
        AttachmentId {
            container_id: c.into(),
            ifname: i.into(),
        }
    }

    #[test]
    fn chain_names_are_stable_and_distinct_per_attachment() {
        // Pinned (FNV-1a of "abc\0eth0", computed independently): a restart must find the
        // chains an earlier run made.
        assert_eq!(
            pod_chain(&id("abc", "eth0"), Direction::Ingress),
            "pod-540c4ae81be81b20-in"
        );
        assert_ne!(
            pod_chain(&id("abc", "eth0"), Direction::Egress),
            pod_chain(&id("abc", "eth0"), Direction::Ingress)
        );
        assert_ne!(
            pod_chain(&id("abc", "eth1"), Direction::Ingress),
            pod_chain(&id("abc", "eth0"), Direction::Ingress)
        );
        assert_ne!(
            pod_chain(&id("ab", "ceth0"), Direction::Ingress),
            pod_chain(&id("abc", "eth0"), Direction::Ingress)
        );
    }

    #[test]
    fn chain_names_are_short_nft_identifiers() {
        let name = pod_chain(&id(&"x".repeat(300), "eth0"), Direction::Egress);
        assert!(name.len() < 32);
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }
}
