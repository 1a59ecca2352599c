//! The flows conntrack tracks, over netfilter netlink (ctnetlink): listed after a change, so
//! that those the change revoked are deleted. Their next packet is then judged as a new
//! connection and dropped; without this, `ct state established accept` would let a
//! connection a policy now denies flow for as long as it lives. An ADD deletes those of the
//! new pod's addresses (`involving`), which can only be another pod's.
//!
//! The encoding and the parsing are pure; `ConntrackSocket` alone opens a socket. Message
//! layout: the kernel's uapi `linux/netfilter/nfnetlink_conntrack.h`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};

use super::netlink::{
    self, attribute, kernel_socket, push_attr, push_message, NLA_F_NESTED, NLM_F_ACK, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use super::DataplaneError;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
/// Every family, in a dump request.
const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

/// A tracked flow: its original tuple (who opened it, to where: how conntrack names it) and
/// where it really goes, the reply's source, which differs after a DNAT (a Service's VIP
/// becomes the backend pod).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Flow {
    /// IANA protocol number (6 TCP, 17 UDP, 132 SCTP); only those carry ports.
    pub protocol: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub zone: u16,
    /// The server: the reply tuple's source address and port.
    pub server: IpAddr,
    pub server_port: u16,
}

fn address(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(bytes).ok()?,
        ))),
        _ => None,
    }
}

fn port(bytes: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(bytes.get(0..2)?.try_into().ok()?))
}

/// One tuple: protocol, source and destination addresses and ports.
fn tuple(bytes: &[u8]) -> Option<(u8, IpAddr, IpAddr, u16, u16)> {
    let ip = attribute(bytes, CTA_TUPLE_IP)?;
    let proto = attribute(bytes, CTA_TUPLE_PROTO)?;
    let (src, dst) = match (attribute(ip, CTA_IP_V4_SRC), attribute(ip, CTA_IP_V4_DST)) {
        (Some(s), Some(d)) => (address(s)?, address(d)?),
        _ => (
            address(attribute(ip, CTA_IP_V6_SRC)?)?,
            address(attribute(ip, CTA_IP_V6_DST)?)?,
        ),
    };
    Some((
        *attribute(proto, CTA_PROTO_NUM)?.first()?,
        src,
        dst,
        port(attribute(proto, CTA_PROTO_SRC_PORT)?)?,
        port(attribute(proto, CTA_PROTO_DST_PORT)?)?,
    ))
}

/// The flow a conntrack message describes, if it has address and port tuples.
fn flow(attrs: &[u8]) -> Option<Flow> {
    let (protocol, src, dst, sport, dport) = tuple(attribute(attrs, CTA_TUPLE_ORIG)?)?;
    // Without a reply tuple (never seen in a dump), the flow goes where it was sent.
    let (server, server_port) = attribute(attrs, CTA_TUPLE_REPLY)
        .and_then(tuple)
        .map_or((dst, dport), |(_, reply_src, _, reply_sport, _)| {
            (reply_src, reply_sport)
        });
    Some(Flow {
        protocol,
        src,
        dst,
        sport,
        dport,
        zone: attribute(attrs, CTA_ZONE).and_then(port).unwrap_or(0),
        server,
        server_port,
    })
}

/// What one datagram of a dump said.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DumpPart {
    pub flows: Vec<Flow>,
    /// The dump is complete.
    pub done: bool,
    /// The kernel refused the dump (an errno).
    pub error: Option<i32>,
}

/// The flows in a datagram of a conntrack dump (those without ports are skipped). Reads what
/// is well-formed and stops at the first thing that is not; it never panics.
pub fn parse_dump(datagram: &[u8]) -> DumpPart {
    let reply = netlink::parse_dump(datagram, None);
    DumpPart {
        // nlmsghdr (16) + nfgenmsg (4), then the attributes.
        flows: (reply.messages.iter())
            .filter_map(|m| m.get(20..).and_then(flow))
            .collect(),
        done: reply.done,
        error: reply.error,
    }
}

/// One ctnetlink request.
fn request(msg: u16, flags: u16, seq: u32, family: u8, attrs: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let kind = (NFNL_SUBSYS_CTNETLINK << 8) | msg;
    push_message(&mut out, kind, NLM_F_REQUEST | flags, seq, family, 0, attrs);
    out
}

/// The request for every flow of `family`.
pub fn encode_dump(family: u8, seq: u32) -> Vec<u8> {
    request(IPCTNL_MSG_CT_GET, NLM_F_DUMP, seq, family, &[])
}

/// The request that deletes `flow`, by its original tuple.
pub fn encode_delete(flow: &Flow, seq: u32) -> Vec<u8> {
    let octets = |ip: &IpAddr| match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let (family, src, dst) = match flow.src {
        IpAddr::V4(_) => (AF_INET, CTA_IP_V4_SRC, CTA_IP_V4_DST),
        IpAddr::V6(_) => (AF_INET6, CTA_IP_V6_SRC, CTA_IP_V6_DST),
    };
    let mut ip = Vec::new();
    push_attr(&mut ip, src, &octets(&flow.src));
    push_attr(&mut ip, dst, &octets(&flow.dst));
    let mut proto = Vec::new();
    push_attr(&mut proto, CTA_PROTO_NUM, &[flow.protocol]);
    push_attr(&mut proto, CTA_PROTO_SRC_PORT, &flow.sport.to_be_bytes());
    push_attr(&mut proto, CTA_PROTO_DST_PORT, &flow.dport.to_be_bytes());
    let mut tuple = Vec::new();
    push_attr(&mut tuple, CTA_TUPLE_IP | NLA_F_NESTED, &ip);
    push_attr(&mut tuple, CTA_TUPLE_PROTO | NLA_F_NESTED, &proto);
    let mut attrs = Vec::new();
    push_attr(&mut attrs, CTA_TUPLE_ORIG | NLA_F_NESTED, &tuple);
    push_attr(&mut attrs, CTA_ZONE, &flow.zone.to_be_bytes());
    request(IPCTNL_MSG_CT_DELETE, NLM_F_ACK, seq, family, &attrs)
}

/// A ctnetlink socket in the calling thread's network namespace.
pub struct ConntrackSocket {
    socket: Socket,
    seq: u32,
}

impl ConntrackSocket {
    pub fn open() -> Result<Self, DataplaneError> {
        let socket = kernel_socket(NETLINK_NETFILTER).map_err(io)?;
        Ok(Self { socket, seq: 1 })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Every flow conntrack tracks that has ports, both families in one dump: each dump
    /// walks the kernel's whole conntrack table (every namespace's, 262,144 buckets on the
    /// reference machine: about 3.5 ms even when it holds nothing), so one per family would
    /// walk it twice.
    pub fn flows(&mut self) -> Result<Vec<Flow>, DataplaneError> {
        let mut flows = Vec::new();
        let seq = self.next_seq();
        self.socket
            .send(&encode_dump(AF_UNSPEC, seq), 0)
            .map_err(io)?;
        loop {
            let (reply, _) = self.socket.recv_from_full().map_err(io)?;
            let part = parse_dump(&reply);
            flows.extend(part.flows);
            if let Some(code) = part.error {
                return Err(DataplaneError::Dump(format!(
                    "listing conntrack flows: {}",
                    std::io::Error::from_raw_os_error(-code)
                )));
            }
            if part.done {
                break;
            }
        }
        Ok(flows)
    }

    /// Delete `flows`; one that is already gone (it ended meanwhile) counts as deleted.
    pub fn delete(&mut self, flows: &[Flow]) -> Result<(), DataplaneError> {
        for flow in flows {
            let seq = self.next_seq();
            self.socket.send(&encode_delete(flow, seq), 0).map_err(io)?;
            let (reply, _) = self.socket.recv_from_full().map_err(io)?;
            let part = parse_dump(&reply);
            match part.error {
                None | Some(-2) => {} // acknowledged, or ENOENT
                Some(code) => {
                    return Err(DataplaneError::Rejected {
                        ops: flows.len(),
                        detail: format!(
                            "deleting conntrack flow {} → {}: {}",
                            flow.src,
                            flow.dst,
                            std::io::Error::from_raw_os_error(-code)
                        ),
                    })
                }
            }
        }
        Ok(())
    }
}

/// The flows conntrack tracks, and their deletion, for the sweep. Apart from the `Kernel`,
/// which the core holds under its lock: the sweep's listing must not hold up a change or an
/// ADD (an ADD forgets its own addresses' flows through the `Kernel`).
pub trait FlowTable: Send {
    /// The flows the node did not open from one of its own addresses (the node's own
    /// traffic is never a pod's; see the output chain).
    fn tracked_flows(&mut self) -> Result<Vec<Flow>, DataplaneError>;
    /// Forget `flows`: their next packet is judged as a new connection.
    fn forget_flows(&mut self, flows: &[Flow]) -> Result<(), DataplaneError>;
}

/// The production flow table: ctnetlink in the calling thread's namespace, opened on first
/// use.
#[derive(Default)]
pub struct Conntrack {
    socket: Option<ConntrackSocket>,
}

impl Conntrack {
    fn socket(&mut self) -> Result<&mut ConntrackSocket, DataplaneError> {
        if self.socket.is_none() {
            self.socket = Some(ConntrackSocket::open()?);
        }
        self.socket
            .as_mut()
            .ok_or_else(|| DataplaneError::Dump("the conntrack socket did not open".into()))
    }
}

impl FlowTable for Conntrack {
    fn tracked_flows(&mut self) -> Result<Vec<Flow>, DataplaneError> {
        let own = node_addresses()?;
        let flows = self.socket()?.flows()?;
        Ok(flows
            .into_iter()
            .filter(|f| !own.contains(&f.src))
            .collect())
    }

    fn forget_flows(&mut self, flows: &[Flow]) -> Result<(), DataplaneError> {
        self.socket()?.delete(flows)
    }
}

impl Conntrack {
    /// Forget every flow from or to one of `ips`; how many there were.
    pub fn forget_involving(&mut self, ips: &[IpAddr]) -> Result<usize, DataplaneError> {
        let socket = self.socket()?;
        let flows = involving(socket.flows()?, ips);
        socket.delete(&flows)?;
        Ok(flows.len())
    }
}

/// Of `flows`, those from or to one of `ips`, on either side of a NAT: a new pod's address
/// has none of its own yet (it has not started), so any is another pod's that had the
/// address before, and would reach the new one past its rules.
pub fn involving(flows: Vec<Flow>, ips: &[IpAddr]) -> Vec<Flow> {
    flows
        .into_iter()
        .filter(|f| [f.src, f.dst, f.server].iter().any(|ip| ips.contains(ip)))
        .collect()
}

/// The addresses of the node's own interfaces, in this network namespace.
fn node_addresses() -> Result<std::collections::BTreeSet<std::net::IpAddr>, DataplaneError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| DataplaneError::Exec {
        program: "getifaddrs".into(),
        source: e.into(),
    })?;
    Ok(addrs
        .filter_map(|a| a.address)
        .filter_map(|a| {
            a.as_sockaddr_in()
                .map(|v4| std::net::IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| std::net::IpAddr::V6(v6.ip())))
        })
        .collect())
}

fn io(source: std::io::Error) -> DataplaneError {
    DataplaneError::Exec {
        program: "conntrack netlink socket".into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::super::netlink::{NLMSG_DONE, NLMSG_ERROR};
    use super::*;

    fn tcp(src: &str, dst: &str) -> Flow {
        Flow {
            protocol: 6,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sport: 40000,
            dport: 5432,
            zone: 0,
            server: dst.parse().unwrap(),
            server_port: 5432,
        }
    }

    /// A dump message as the kernel sends one: the delete request's attributes are the same
    /// original tuple, so a dump of what we would delete parses back to the flow.
    fn as_dump_message(flow: &Flow) -> Vec<u8> {
        let mut msg = encode_delete(flow, 7);
        // Make it a NEW message of a dump, not a DELETE request.
        msg[4..6].copy_from_slice(&(NFNL_SUBSYS_CTNETLINK << 8).to_ne_bytes());
        msg
    }

    #[test]
    fn the_flows_of_an_address_are_those_from_it_to_it_and_behind_a_nat_to_it() {
        let from = tcp("10.0.0.3", "10.0.0.9");
        let to = tcp("10.0.0.9", "10.0.0.3");
        let mut natted = tcp("10.0.0.9", "10.96.0.10");
        natted.server = "10.0.0.3".parse().unwrap();
        let other = tcp("10.0.0.8", "10.0.0.9");
        let flows = vec![from.clone(), to.clone(), natted.clone(), other];
        let ip = ["10.0.0.3".parse().unwrap()];
        assert_eq!(involving(flows, &ip), [from, to, natted]);
    }

    #[test]
    fn a_deleted_tuple_reads_back_as_the_flow_in_both_families() {
        for flow in [tcp("10.0.0.2", "10.0.0.3"), tcp("fd00::2", "fd00::3")] {
            let mut datagram = as_dump_message(&flow);
            let mut done = Vec::new();
            push_message(&mut done, NLMSG_DONE, 0, 7, 0, 0, &[]);
            datagram.extend(done);
            let part = parse_dump(&datagram);
            assert_eq!(part.flows, vec![flow]);
            assert!(part.done && part.error.is_none());
        }
    }

    #[test]
    fn garbage_and_truncation_never_panic() {
        let whole = as_dump_message(&tcp("10.0.0.2", "10.0.0.3"));
        for cut in 0..whole.len() {
            let _ = parse_dump(&whole[..cut]);
        }
        assert_eq!(parse_dump(&[0xff; 64]), DumpPart::default());
    }

    #[test]
    fn an_error_ends_the_dump_with_its_errno() {
        // nlmsghdr, then the errno and the header of the request it answers.
        let mut msg = Vec::new();
        msg.extend_from_slice(&36u32.to_ne_bytes());
        msg.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        msg.extend_from_slice(&[0; 10]);
        msg.extend_from_slice(&(-1i32).to_ne_bytes());
        msg.extend_from_slice(&[0; 16]);
        let part = parse_dump(&msg);
        assert_eq!(part.error, Some(-1));
        assert!(part.done);
    }
}
