//! Which bridge port (a pod's host-side veth) an address is behind, asked of the kernel: the
//! neighbour table gives the address's MAC, the bridge's forwarding database the port that
//! MAC was learnt on. Needed for the pods podwall adopted: it never saw their CNI result,
//! which names the port of an attached pod.
//!
//! Parsing is pure; `host_ports` alone opens a socket (rtnetlink, `linux/neighbour.h`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_sys::{protocols::NETLINK_ROUTE, Socket};

use super::netlink::{
    attributes, kernel_socket, messages, u32_at, NLMSG_DONE, NLMSG_ERROR, NLM_F_DUMP, NLM_F_REQUEST,
};
use super::DataplaneError;

const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const AF_BRIDGE: u8 = 7;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NDA_MASTER: u16 = 9;
/// Neighbour states that hold no usable link-layer address.
const NUD_INCOMPLETE: u16 = 0x01;
const NUD_FAILED: u16 = 0x20;
/// struct ndmsg: family, 3 bytes padding, ifindex, state, flags, type.
const NDMSG: usize = 12;

/// One neighbour or forwarding-database entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub ifindex: u32,
    pub address: Option<IpAddr>,
    pub mac: Option<Vec<u8>>,
    /// The bridge a forwarding-database entry's port belongs to.
    pub master: Option<u32>,
}

/// The entries in one datagram of a neighbour dump, and whether it was the last. Reads what
/// is well-formed and stops at the first thing that is not; it never panics.
pub fn parse_neighbours(datagram: &[u8]) -> (Vec<Neighbour>, bool) {
    let mut found = Vec::new();
    let mut done = false;
    for (kind, message) in messages(datagram) {
        match kind {
            NLMSG_DONE | NLMSG_ERROR => done = true,
            RTM_NEWNEIGH => found.extend(message.get(16..).and_then(neighbour)),
            _ => {}
        }
    }
    (found, done)
}

fn neighbour(body: &[u8]) -> Option<Neighbour> {
    let ifindex = u32_at(body, 4)?;
    let state = u16::from_ne_bytes(body.get(8..10)?.try_into().ok()?);
    let mut entry = Neighbour {
        ifindex,
        address: None,
        mac: None,
        master: None,
    };
    if state & (NUD_INCOMPLETE | NUD_FAILED) != 0 {
        return Some(entry);
    }
    for (kind, payload) in attributes(body.get(NDMSG..)?) {
        match kind {
            NDA_DST => {
                entry.address = match payload.len() {
                    4 => <[u8; 4]>::try_from(payload)
                        .ok()
                        .map(|a| Ipv4Addr::from(a).into()),
                    16 => <[u8; 16]>::try_from(payload)
                        .ok()
                        .map(|a| Ipv6Addr::from(a).into()),
                    _ => None,
                }
            }
            NDA_LLADDR => entry.mac = Some(payload.to_vec()),
            NDA_MASTER => entry.master = u32_at(payload, 0),
            _ => {}
        }
    }
    Some(entry)
}

/// The port each of `ips` is behind: its MAC from `neighbours`, the port that MAC was
/// learnt on from `fdb` (entries of a bridge's ports, which name their bridge).
pub fn ports_of(
    ips: &BTreeSet<IpAddr>,
    neighbours: &[Neighbour],
    fdb: &[Neighbour],
) -> BTreeMap<IpAddr, u32> {
    let mut ports = BTreeMap::new();
    for n in neighbours {
        let (Some(ip), Some(mac)) = (n.address, &n.mac) else {
            continue;
        };
        if !ips.contains(&ip) {
            continue;
        }
        let port = fdb
            .iter()
            .find(|f| f.master == Some(n.ifindex) && f.mac.as_ref() == Some(mac));
        if let Some(port) = port {
            ports.insert(ip, port.ifindex);
        }
    }
    ports
}

fn dump_request(family: u8, seq: u32) -> Vec<u8> {
    let mut body = vec![family, 0, 0, 0];
    body.extend_from_slice(&[0; NDMSG - 4]);
    let len = u32::try_from(16 + body.len()).unwrap_or(u32::MAX);
    let mut out = Vec::new();
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&RTM_GETNEIGH.to_ne_bytes());
    out.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    // No attributes: a dump of every entry of the family.
    out.extend(body);
    out
}

fn dump(socket: &mut Socket, family: u8, seq: u32) -> Result<Vec<Neighbour>, DataplaneError> {
    socket.send(&dump_request(family, seq), 0).map_err(io)?;
    let mut entries = Vec::new();
    loop {
        let (reply, _) = socket.recv_from_full().map_err(io)?;
        let (found, done) = parse_neighbours(&reply);
        entries.extend(found);
        if done {
            return Ok(entries);
        }
    }
}

/// The host-side interface each of `ips` is behind, where the kernel knows it (an address
/// the node never talked to has no neighbour entry yet).
pub fn host_ports(ips: &BTreeSet<IpAddr>) -> Result<BTreeMap<IpAddr, String>, DataplaneError> {
    let mut socket = kernel_socket(NETLINK_ROUTE).map_err(io)?;
    let mut neighbours = dump(&mut socket, AF_INET, 1)?;
    neighbours.extend(dump(&mut socket, AF_INET6, 2)?);
    let fdb = dump(&mut socket, AF_BRIDGE, 3)?;
    Ok(ports_of(ips, &neighbours, &fdb)
        .into_iter()
        .filter_map(|(ip, index)| {
            let name = nix::net::if_::if_indextoname(index).ok()?;
            Some((ip, name.into_string().ok()?))
        })
        .collect())
}

fn io(source: std::io::Error) -> DataplaneError {
    DataplaneError::Exec {
        program: "rtnetlink socket".into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::super::netlink::push_attr;
    use super::*;

    /// An RTM_NEWNEIGH message as the kernel sends one.
    fn message(ifindex: u32, state: u16, attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![AF_INET, 0, 0, 0];
        body.extend_from_slice(&ifindex.to_ne_bytes());
        body.extend_from_slice(&state.to_ne_bytes());
        body.extend_from_slice(&[0, 0]);
        for (kind, payload) in attrs {
            push_attr(&mut body, *kind, payload);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&u32::try_from(16 + body.len()).unwrap().to_ne_bytes());
        out.extend_from_slice(&RTM_NEWNEIGH.to_ne_bytes());
        out.extend_from_slice(&[0; 10]);
        out.extend(body);
        out
    }

    #[test]
    fn an_address_is_behind_the_port_its_mac_was_learnt_on() {
        let mac = vec![2, 0, 0, 0, 0, 7];
        let bridge = 3;
        let mut datagram = message(
            bridge,
            0x02,
            &[(NDA_DST, vec![10, 0, 0, 7]), (NDA_LLADDR, mac.clone())],
        );
        // An unresolved neighbour holds no address to trust.
        datagram.extend(message(bridge, NUD_FAILED, &[(NDA_DST, vec![10, 0, 0, 8])]));
        let (neighbours, done) = parse_neighbours(&datagram);
        assert!(!done);
        let fdb_datagram = [
            message(
                9,
                0x80,
                &[
                    (NDA_LLADDR, mac.clone()),
                    (NDA_MASTER, bridge.to_ne_bytes().to_vec()),
                ],
            ),
            // The same MAC on another bridge's port is not this one.
            message(
                11,
                0x80,
                &[
                    (NDA_LLADDR, mac),
                    (NDA_MASTER, 42u32.to_ne_bytes().to_vec()),
                ],
            ),
        ]
        .concat();
        let (fdb, _) = parse_neighbours(&fdb_datagram);
        let ips: BTreeSet<IpAddr> =
            ["10.0.0.7".parse().unwrap(), "10.0.0.8".parse().unwrap()].into();
        assert_eq!(
            ports_of(&ips, &neighbours, &fdb),
            BTreeMap::from([("10.0.0.7".parse().unwrap(), 9)])
        );
    }

    #[test]
    fn truncation_and_garbage_never_panic() {
        let whole = message(
            3,
            0x02,
            &[(NDA_DST, vec![10, 0, 0, 7]), (NDA_LLADDR, vec![1; 6])],
        );
        for cut in 0..whole.len() {
            let _ = parse_neighbours(&whole[..cut]);
        }
        assert_eq!(parse_neighbours(&[0xff; 40]).0, Vec::new());
    }
}
