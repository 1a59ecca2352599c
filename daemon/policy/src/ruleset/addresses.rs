//! [`Addresses`]: the elements of a pod-address set, kept compactly because a peer that
//! matches every pod of a large cluster holds tens of thousands of them, twice (the compiled
//! ruleset and what the kernel last took).

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A set of addresses, each family apart: an IPv4 address costs 4 bytes, not the 17 of an
/// `IpAddr`. Iterates in `IpAddr` order (IPv4 first), and reads and writes as a list of
/// addresses.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Addresses {
    v4: BTreeSet<Ipv4Addr>,
    v6: BTreeSet<Ipv6Addr>,
}

impl Addresses {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `ip`; false if it was there.
    pub fn insert(&mut self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(ip) => self.v4.insert(ip),
            IpAddr::V6(ip) => self.v6.insert(ip),
        }
    }

    /// Removes `ip`; false if it was not there.
    pub fn remove(&mut self, ip: &IpAddr) -> bool {
        match ip {
            IpAddr::V4(ip) => self.v4.remove(ip),
            IpAddr::V6(ip) => self.v6.remove(ip),
        }
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        match ip {
            IpAddr::V4(ip) => self.v4.contains(ip),
            IpAddr::V6(ip) => self.v6.contains(ip),
        }
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The addresses, in order.
    pub fn iter(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let v4 = self.v4.iter().map(|ip| IpAddr::V4(*ip));
        v4.chain(self.v6.iter().map(|ip| IpAddr::V6(*ip)))
    }
}

impl FromIterator<IpAddr> for Addresses {
    /// Built in bulk (sorted, then each tree at once), not one insert at a time: a full
    /// compile builds sets of tens of thousands of addresses.
    fn from_iter<I: IntoIterator<Item = IpAddr>>(iter: I) -> Self {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for ip in iter {
            match ip {
                IpAddr::V4(ip) => v4.push(ip),
                IpAddr::V6(ip) => v6.push(ip),
            }
        }
        Addresses {
            v4: v4.into_iter().collect(),
            v6: v6.into_iter().collect(),
        }
    }
}

impl fmt::Debug for Addresses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl Serialize for Addresses {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Addresses {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<IpAddr>::deserialize(deserializer).map(|ips| ips.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_both_families_in_ip_order_and_reads_back_as_a_list() {
        let ips: Vec<IpAddr> = ["fd00::2", "10.0.0.9", "fd00::1", "10.0.0.1"]
            .map(|ip| ip.parse().unwrap())
            .into();
        let mut set: Addresses = ips.iter().copied().collect();
        let ordered: BTreeSet<IpAddr> = ips.iter().copied().collect();
        assert!(set.iter().eq(ordered.iter().copied()));
        assert!(!set.insert(ips[0]) && set.contains(&ips[1]) && set.len() == 4);
        let text = serde_json::to_string(&set).unwrap();
        assert_eq!(text, serde_json::to_string(&ordered).unwrap());
        assert_eq!(serde_json::from_str::<Addresses>(&text).unwrap(), set);
        assert!(set.remove(&ips[0]) && !set.remove(&ips[0]) && !set.contains(&ips[0]));
    }
}
