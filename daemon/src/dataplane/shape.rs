//! What one policy rule checks, resolved once for both ways into the kernel: the `nft -f`
//! text (`render`) and the netlink expressions (`exprs`). Keeping the decisions here (which
//! family, which address field, how ports are grouped) is what makes the two read back the
//! same.

use podwall_policy::ruleset::{PeerMatch, PortMatch, Rule as PolicyRule};
use podwall_policy::{Direction, Family, Protocol};

use super::render::rule_comment;

/// One allow rule, ready to be written down either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleShape {
    /// `meta nfproto`, when the rule is for one family.
    pub family: Option<Family>,
    /// The peer's address field (`saddr` for ingress, `daddr` for egress) and its set.
    pub peer: Option<(Field, String)>,
    pub ports: Ports,
    /// `ns/name#index`, the rule's comment.
    pub comment: String,
}

/// Which address of the packet a set is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Saddr,
    Daddr,
}

/// What a rule requires of the layer-4 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ports {
    Any,
    Protocol(Protocol),
    /// One port, one range, or several (then an anonymous set): sorted, and overlapping or
    /// touching ranges merged, as nft merges an anonymous set.
    Numbers {
        protocol: Protocol,
        ranges: Vec<(u16, u16)>,
    },
    /// A named port: `daddr . th dport` in a set of the rule's family.
    Named {
        protocol: Protocol,
        set: String,
    },
}

/// The shape of `rule` in a chain of `direction`. The family of a rule that names none is
/// its peer set's (or its named-port set's), as `family_of` a set name tells; a rule that
/// still has none matches both families.
pub fn shape(
    direction: Direction,
    rule: &PolicyRule,
    family_of: impl Fn(&str) -> Option<Family>,
) -> RuleShape {
    let family = rule.family.or_else(|| match &rule.peer {
        PeerMatch::InSet(set) => family_of(set),
        PeerMatch::Any => None,
    });
    let family = family.or_else(|| match &rule.ports {
        PortMatch::Named { set, .. } => family_of(set),
        _ => None,
    });
    let field = match direction {
        Direction::Ingress => Field::Saddr,
        Direction::Egress => Field::Daddr,
    };
    let peer = match &rule.peer {
        PeerMatch::InSet(set) => Some((field, set.clone())),
        PeerMatch::Any => None,
    };
    let ports = match &rule.ports {
        PortMatch::Any => Ports::Any,
        PortMatch::Protocol(p) => Ports::Protocol(*p),
        PortMatch::Ports { protocol, ranges } => Ports::Numbers {
            protocol: *protocol,
            ranges: merged(ranges),
        },
        PortMatch::Named { protocol, set } => Ports::Named {
            protocol: *protocol,
            set: set.clone(),
        },
    };
    RuleShape {
        family,
        peer,
        ports,
        comment: rule_comment(rule),
    }
}

/// Port ranges sorted, with overlapping and touching ones merged.
fn merged(ranges: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(sorted.len());
    for (first, last) in sorted {
        match out.last_mut() {
            Some(prev) if u32::from(first) <= u32::from(prev.1) + 1 => prev.1 = prev.1.max(last),
            _ => out.push((first, last)),
        }
    }
    out
}

/// nft's name for a protocol, and its number (`meta l4proto`).
pub fn protocol(protocol: Protocol) -> (&'static str, u8) {
    match protocol {
        Protocol::Tcp => ("tcp", 6),
        Protocol::Udp => ("udp", 17),
        Protocol::Sctp => ("sctp", 132),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_are_sorted_and_merged_as_nft_merges_them() {
        assert_eq!(
            merged(&[(90, 95), (80, 80), (80, 85), (86, 86), (443, 443)]),
            vec![(80, 86), (90, 95), (443, 443)]
        );
        assert_eq!(merged(&[(1, 65535), (80, 80)]), vec![(1, 65535)]);
        assert_eq!(
            merged(&[(65535, 65535), (65534, 65534)]),
            vec![(65534, 65535)]
        );
    }
}
