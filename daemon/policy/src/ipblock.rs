//! ipBlock peers and their interval arithmetic: a cidr minus its excepts, as disjoint
//! address ranges, for IPv4 and IPv6 alike; and the address [`Family`] that everything keyed
//! by address (pods, sets, rules) is split by.
//!
//! The excepts are subtracted here, inside the peer, and never become deny rules: an
//! address in an except of one peer may still be allowed by another peer or policy.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use k8s_openapi::api::networking::v1 as net;
use serde::{Deserialize, Serialize};

use crate::error::{Errors, Problem};

/// Address family of an IP address, set or rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// Both families, v4 first.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// An inclusive range of addresses of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IpRange {
    pub first: IpAddr,
    pub last: IpAddr,
}

impl IpRange {
    /// Whether `ip` lies in the range (never for the other family).
    pub fn contains(&self, ip: &IpAddr) -> bool {
        Family::of(ip) == Family::of(&self.first) && *ip >= self.first && *ip <= self.last
    }

    /// The family of the range.
    pub fn family(&self) -> Family {
        Family::of(&self.first)
    }

    /// The range as CIDR prefixes, smallest number of them, in address order.
    pub fn to_prefixes(&self) -> Vec<IpNetwork> {
        let family = self.family();
        let bits = bits(family);
        let (mut lo, hi) = (to_u128(&self.first), to_u128(&self.last));
        let mut out = Vec::new();
        loop {
            // The largest aligned block starting at `lo` that does not pass `hi`.
            let mut size_log = if lo == 0 {
                bits
            } else {
                lo.trailing_zeros().min(bits)
            };
            while size_log > 0 && block_end(lo, size_log).is_none_or(|end| end > hi) {
                size_log -= 1;
            }
            let prefix = (bits - size_log) as u8;
            out.push(IpNetwork::new(from_u128(family, lo), prefix).expect("prefix within family"));
            match block_end(lo, size_log) {
                Some(end) if end < hi => lo = end + 1,
                _ => break,
            }
        }
        out
    }
}

fn block_end(lo: u128, size_log: u32) -> Option<u128> {
    if size_log >= 128 {
        return if lo == 0 { Some(u128::MAX) } else { None };
    }
    lo.checked_add((1u128 << size_log) - 1)
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// An ipBlock: `cidr` minus every `except`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IpBlock {
    pub cidr: IpNetwork,
    pub except: Vec<IpNetwork>,
}

impl IpBlock {
    /// A block from already-valid networks; excepts are sorted so equal blocks compare equal.
    pub fn new(cidr: IpNetwork, mut except: Vec<IpNetwork>) -> Self {
        except.sort();
        except.dedup();
        IpBlock { cidr, except }
    }

    /// The family of the block.
    pub fn family(&self) -> Family {
        Family::of(&self.cidr.network())
    }

    /// Whether `ip` is in the cidr and in no except.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        net_contains(&self.cidr, ip) && !self.except.iter().any(|e| net_contains(e, ip))
    }

    /// The addresses of the block as sorted, disjoint, non-adjacent ranges.
    pub fn ranges(&self) -> Vec<IpRange> {
        let family = self.family();
        let mut ranges = vec![bounds(&self.cidr)];
        for except in &self.except {
            let (elo, ehi) = bounds(except);
            ranges = ranges
                .into_iter()
                .flat_map(|(lo, hi)| {
                    let mut parts = Vec::with_capacity(2);
                    if ehi < lo || elo > hi {
                        parts.push((lo, hi));
                    } else {
                        if lo < elo {
                            parts.push((lo, elo - 1));
                        }
                        if ehi < hi {
                            parts.push((ehi + 1, hi));
                        }
                    }
                    parts
                })
                .collect();
        }
        ranges
            .into_iter()
            .map(|(lo, hi)| IpRange {
                first: from_u128(family, lo),
                last: from_u128(family, hi),
            })
            .collect()
    }

    /// Converts an API ipBlock, checking that every except is a strict subnet of the cidr.
    pub(crate) fn from_api(block: &net::IPBlock, field: &str, errs: &mut Errors) -> Option<Self> {
        let Some(cidr) = parse_cidr(&block.cidr) else {
            errs.push(
                format!("{field}.cidr"),
                Problem::InvalidCidr(block.cidr.clone()),
            );
            return None;
        };
        let mut except = Vec::new();
        let mut ok = true;
        for (i, text) in block.except.iter().flatten().enumerate() {
            let field = format!("{field}.except[{i}]");
            match parse_cidr(text) {
                None => {
                    ok = false;
                    errs.push(field, Problem::InvalidCidr(text.clone()));
                }
                // Strictly inside, as the API server demands: same family, longer prefix,
                // network address within the cidr.
                Some(e)
                    if Family::of(&e.network()) != Family::of(&cidr.network())
                        || e.prefix() <= cidr.prefix()
                        || !net_contains(&cidr, &e.network()) =>
                {
                    ok = false;
                    errs.push(
                        field,
                        Problem::ExceptOutsideCidr {
                            except: text.clone(),
                            cidr: block.cidr.clone(),
                        },
                    );
                }
                Some(e) => except.push(e),
            }
        }
        ok.then(|| IpBlock::new(cidr, except))
    }
}

/// Parses a CIDR the way the API server does: host bits may be set and are masked off.
pub(crate) fn parse_cidr(text: &str) -> Option<IpNetwork> {
    if !text.contains('/') {
        return None;
    }
    let net: IpNetwork = text.parse().ok()?;
    IpNetwork::new(net.network(), net.prefix()).ok()
}

fn net_contains(net: &IpNetwork, ip: &IpAddr) -> bool {
    if Family::of(&net.network()) != Family::of(ip) {
        return false;
    }
    let (lo, hi) = bounds(net);
    let v = to_u128(ip);
    lo <= v && v <= hi
}

fn bits(family: Family) -> u32 {
    match family {
        Family::V4 => 32,
        Family::V6 => 128,
    }
}

/// First and last address of a network, as integers of its family's width.
fn bounds(net: &IpNetwork) -> (u128, u128) {
    let family = Family::of(&net.network());
    let host_bits = bits(family) - u32::from(net.prefix());
    let lo = to_u128(&net.network());
    // `::/0` has 128 host bits; a shift by 128 would overflow.
    let span = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    let lo = lo & !span;
    (lo, lo | span)
}

fn to_u128(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(*a)),
        IpAddr::V6(a) => u128::from(*a),
    }
}

fn from_u128(family: Family, v: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(
            u32::try_from(v).expect("an IPv4 value fits in 32 bits"),
        )),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(cidr: &str, except: &[&str]) -> IpBlock {
        IpBlock::new(
            cidr.parse().unwrap(),
            except.iter().map(|e| e.parse().unwrap()).collect(),
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn api(cidr: &str, except: &[&str]) -> net::IPBlock {
        net::IPBlock {
            cidr: cidr.to_string(),
            except: Some(except.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn excepts_are_cut_out_of_the_cidr() {
        let b = block("10.0.0.0/24", &["10.0.0.64/26", "10.0.0.200/32"]);
        let shown: Vec<String> = b.ranges().iter().map(|r| r.to_string()).collect();
        assert_eq!(
            shown,
            [
                "10.0.0.0-10.0.0.63",
                "10.0.0.128-10.0.0.199",
                "10.0.0.201-10.0.0.255"
            ]
        );
        assert!(b.contains(&ip("10.0.0.1")));
        assert!(!b.contains(&ip("10.0.0.70")));
        assert!(!b.contains(&ip("10.0.0.200")));
        assert!(!b.contains(&ip("10.0.1.1")));
    }

    #[test]
    fn nested_excepts_subtract_once() {
        let b = block("10.0.0.0/16", &["10.0.0.0/24", "10.0.0.0/25"]);
        let shown: Vec<String> = b.ranges().iter().map(|r| r.to_string()).collect();
        assert_eq!(shown, ["10.0.1.0-10.0.255.255"]);
    }

    #[test]
    fn all_of_ipv6_is_one_range_and_matches_no_ipv4() {
        let b = block("::/0", &[]);
        assert_eq!(
            b.ranges(),
            vec![IpRange {
                first: ip("::"),
                last: ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
            }]
        );
        assert!(b.contains(&ip("2001:db8::1")));
        assert!(!b.contains(&ip("10.0.0.1")));
        let all4 = block("0.0.0.0/0", &["10.0.0.0/8"]);
        assert!(all4.contains(&ip("192.0.2.1")));
        assert!(!all4.contains(&ip("10.1.2.3")));
        assert!(!all4.contains(&ip("::1")));
    }

    #[test]
    fn ipv6_excepts_are_cut_out() {
        let b = block("2001:db8::/32", &["2001:db8:1::/48"]);
        assert!(b.contains(&ip("2001:db8:2::1")));
        assert!(!b.contains(&ip("2001:db8:1::1")));
        assert_eq!(b.ranges().len(), 2);
    }

    #[test]
    fn ranges_become_minimal_prefixes() {
        let b = block("10.0.0.0/24", &["10.0.0.0/26"]);
        let prefixes: Vec<String> = b.ranges()[0]
            .to_prefixes()
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(prefixes, ["10.0.0.64/26", "10.0.0.128/25"]);
        let whole = block("::/0", &[]);
        let prefixes: Vec<String> = whole.ranges()[0]
            .to_prefixes()
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(prefixes, ["::/0"]);
    }

    #[test]
    fn cidr_with_host_bits_is_masked_like_the_api_server_does() {
        let mut errs = Errors::new("networkpolicy", "x/p".into());
        let b = IpBlock::from_api(&api("10.0.0.77/24", &[]), "f", &mut errs).unwrap();
        assert_eq!(b.cidr.to_string(), "10.0.0.0/24");
    }

    #[test]
    fn bad_cidrs_and_excepts_are_reported_with_their_field() {
        let cases: Vec<(net::IPBlock, &str, Problem)> = vec![
            (
                api("10.0.0.0/33", &[]),
                "f.cidr",
                Problem::InvalidCidr("10.0.0.0/33".into()),
            ),
            (
                api("10.0.0.1", &[]),
                "f.cidr",
                Problem::InvalidCidr("10.0.0.1".into()),
            ),
            (
                api("banana", &[]),
                "f.cidr",
                Problem::InvalidCidr("banana".into()),
            ),
            (
                api("10.0.0.0/24", &["10.1.0.0/25"]),
                "f.except[0]",
                Problem::ExceptOutsideCidr {
                    except: "10.1.0.0/25".into(),
                    cidr: "10.0.0.0/24".into(),
                },
            ),
            (
                api("10.0.0.0/24", &["10.0.0.0/24"]),
                "f.except[0]",
                Problem::ExceptOutsideCidr {
                    except: "10.0.0.0/24".into(),
                    cidr: "10.0.0.0/24".into(),
                },
            ),
            (
                api("10.0.0.0/24", &["10.0.0.0/25", "2001:db8::/64"]),
                "f.except[1]",
                Problem::ExceptOutsideCidr {
                    except: "2001:db8::/64".into(),
                    cidr: "10.0.0.0/24".into(),
                },
            ),
            (
                api("10.0.0.0/24", &["nope"]),
                "f.except[0]",
                Problem::InvalidCidr("nope".into()),
            ),
        ];
        for (input, field, problem) in cases {
            let mut errs = Errors::new("networkpolicy", "x/p".into());
            assert!(
                IpBlock::from_api(&input, "f", &mut errs).is_none(),
                "{input:?}"
            );
            let errs = errs.into_vec();
            assert_eq!(errs.len(), 1, "{input:?}");
            assert_eq!(errs[0].field, field);
            assert_eq!(errs[0].problem, problem);
        }
    }
}
