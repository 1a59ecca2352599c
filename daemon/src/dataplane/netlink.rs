//! Map and set elements straight over netfilter netlink, for the hot path.
//!
//! A batch of NFT_MSG_NEWSETELEM / NFT_MSG_DELSETELEM messages between BATCH_BEGIN and
//! BATCH_END is one transaction, like an `nft -f` script, but it skips what makes `nft` slow:
//! starting a process and fetching the whole ruleset into its cache before every command
//! (DESIGN.md: ~9 ms small, ~37 ms at 10k chains). Element messages cost the same whatever the
//! size of the table.
//!
//! The encoding is pure (`encode`); `ElementSocket` alone opens a socket. The message layout
//! follows the kernel's uapi `linux/netfilter/nf_tables.h` and `nfnetlink.h`.

use std::net::IpAddr;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use super::names::TABLE;
use super::DataplaneError;

// netlink / nfnetlink framing
pub(super) const NLM_F_REQUEST: u16 = 0x1;
pub(super) const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
pub(super) const NLMSG_ERROR: u16 = 0x2;
pub(super) const NLA_F_NESTED: u16 = 0x8000;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFPROTO_INET: u8 = 1;
const NFPROTO_BRIDGE: u8 = 7;
/// The kernel's `ifname` key type is IFNAMSIZ bytes, NUL-padded.
const IFNAMSIZ: usize = 16;
const AF_UNSPEC: u8 = 0;

// nf_tables messages and attributes
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFT_JUMP: i32 = -3;

/// The key of a set or map element, as the kernel stores it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    /// `ipv4_addr` / `ipv6_addr`.
    Addr(IpAddr),
    /// `ipv4_addr . inet_service` (and v6): each field padded to 4 bytes, as nft concatenates.
    AddrPort(IpAddr, u16),
    /// `ipv4_addr . ipv4_addr` (and v6): an address paired with itself (hairpin).
    AddrPair(IpAddr),
    /// `ifname`: a pod's host-side veth (anti-spoofing guard, bridge table).
    IfName(String),
    /// `ifname . ipv4_addr` (and v6): an address a pod's veth may send from.
    IfNameAddr(String, IpAddr),
}

impl Key {
    fn bytes(&self) -> Vec<u8> {
        let addr = |ip: &IpAddr| match ip {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        let ifname = |name: &str| {
            let mut bytes = name.as_bytes().to_vec();
            bytes.resize(IFNAMSIZ, 0);
            bytes
        };
        match self {
            Key::Addr(ip) => addr(ip),
            Key::AddrPair(ip) => [addr(ip), addr(ip)].concat(),
            Key::AddrPort(ip, port) => {
                let mut bytes = addr(ip);
                bytes.extend_from_slice(&port.to_be_bytes());
                bytes.extend_from_slice(&[0, 0]);
                bytes
            }
            Key::IfName(name) => ifname(name),
            Key::IfNameAddr(name, ip) => {
                let mut bytes = ifname(name);
                bytes.extend(addr(ip));
                bytes
            }
        }
    }

    /// Interface keys live in the `bridge` table, which sees the bridge port a frame came
    /// in on; everything else in the `inet` table.
    fn family(&self) -> u8 {
        match self {
            Key::IfName(_) | Key::IfNameAddr(..) => NFPROTO_BRIDGE,
            Key::Addr(_) | Key::AddrPair(_) | Key::AddrPort(..) => NFPROTO_INET,
        }
    }
}

/// One element change in a named set, or in a verdict map when `jump` is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElementOp {
    Add {
        set: String,
        key: Key,
        jump: Option<String>,
    },
    Delete {
        set: String,
        key: Key,
    },
}

impl ElementOp {
    fn set(&self) -> &str {
        match self {
            ElementOp::Add { set, .. } | ElementOp::Delete { set, .. } => set,
        }
    }

    fn family(&self) -> u8 {
        match self {
            ElementOp::Add { key, .. } | ElementOp::Delete { key, .. } => key.family(),
        }
    }
}

/// The datagram for a batch of element changes, and how many acknowledgements to expect.
/// Consecutive changes of the same kind to the same map share one message.
pub fn encode(ops: &[ElementOp], first_seq: u32) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut seq = first_seq;
    push_message(
        &mut out,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        AF_UNSPEC,
        NFNL_SUBSYS_NFTABLES,
        &[],
    );
    let mut acks = 0;
    for group in ops.chunk_by(same_message) {
        let (kind, flags) = match &group[0] {
            ElementOp::Add { .. } => (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE),
            ElementOp::Delete { .. } => (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK),
        };
        // The element list is one attribute, and an attribute's length is 16 bits: a large
        // change (a namespace of thousands of pods starting to match) becomes several
        // messages, still inside the one batch, so still one transaction.
        for elements in element_lists(group) {
            seq += 1;
            acks += 1;
            let mut body = Vec::new();
            push_attr(&mut body, NFTA_SET_ELEM_LIST_TABLE, &c_string(TABLE));
            push_attr(&mut body, NFTA_SET_ELEM_LIST_SET, &c_string(group[0].set()));
            push_attr(
                &mut body,
                NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED,
                &elements,
            );
            push_message(
                &mut out,
                (NFNL_SUBSYS_NFTABLES << 8) | kind,
                flags,
                seq,
                group[0].family(),
                0,
                &body,
            );
        }
    }
    seq += 1;
    push_message(
        &mut out,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq,
        AF_UNSPEC,
        NFNL_SUBSYS_NFTABLES,
        &[],
    );
    (out, acks)
}

/// Most bytes of elements one message carries: an attribute's 16-bit length less its
/// header, with room to spare.
const MAX_ELEMENT_BYTES: usize = 60 * 1024;

/// The encoded elements of `group`, cut into lists that each fit one attribute.
fn element_lists(group: &[ElementOp]) -> Vec<Vec<u8>> {
    let mut lists = vec![Vec::new()];
    for op in group {
        let mut encoded = Vec::new();
        push_attr(&mut encoded, NFTA_LIST_ELEM | NLA_F_NESTED, &element(op));
        let fits = lists
            .last()
            .is_some_and(|last| last.len() + encoded.len() <= MAX_ELEMENT_BYTES);
        if fits {
            if let Some(last) = lists.last_mut() {
                last.extend(encoded);
            }
        } else {
            lists.push(encoded);
        }
    }
    lists.retain(|list| !list.is_empty());
    lists
}

fn same_message(a: &ElementOp, b: &ElementOp) -> bool {
    let is_add = |op: &ElementOp| matches!(op, ElementOp::Add { .. });
    is_add(a) == is_add(b) && a.set() == b.set() && a.family() == b.family()
}

fn element(op: &ElementOp) -> Vec<u8> {
    let (key, jump) = match op {
        ElementOp::Add { key, jump, .. } => (key, jump.as_ref()),
        ElementOp::Delete { key, .. } => (key, None),
    };
    let mut key_attr = Vec::new();
    push_attr(&mut key_attr, NFTA_DATA_VALUE, &key.bytes());
    let mut elem = Vec::new();
    push_attr(&mut elem, NFTA_SET_ELEM_KEY | NLA_F_NESTED, &key_attr);
    if let Some(chain) = jump {
        let mut verdict = Vec::new();
        push_attr(&mut verdict, NFTA_VERDICT_CODE, &NFT_JUMP.to_be_bytes());
        push_attr(&mut verdict, NFTA_VERDICT_CHAIN, &c_string(chain));
        let mut data = Vec::new();
        push_attr(&mut data, NFTA_DATA_VERDICT | NLA_F_NESTED, &verdict);
        push_attr(&mut elem, NFTA_SET_ELEM_DATA | NLA_F_NESTED, &data);
    }
    elem
}

fn c_string(s: &str) -> Vec<u8> {
    let mut bytes = s.as_bytes().to_vec();
    bytes.push(0);
    bytes
}

/// nlattr: length (header included, padding excluded), type, payload padded to 4 bytes.
/// Payloads are a key (at most 32 bytes), a chain name, a set name, or an element list that
/// `element_lists` keeps under `MAX_ELEMENT_BYTES`: all far below the 16-bit limit, which the
/// length saturates at rather than wrap, so a broken invariant is a refused message.
pub(super) fn push_attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = u16::try_from(4 + payload.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    pad(out);
}

/// nlmsghdr + nfgenmsg + attributes.
pub(super) fn push_message(
    out: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    attrs: &[u8],
) {
    // Attributes are bounded by `element_lists`: a message is ~60 KiB at most.
    let len = u32::try_from(16 + 4 + attrs.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    out.push(family);
    out.push(0); // NFNETLINK_V0
    out.extend_from_slice(&res_id.to_be_bytes());
    out.extend_from_slice(attrs);
    pad(out);
}

fn pad(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

/// One NLMSG_ERROR of a reply: the sequence number of the message it answers and its errno
/// (0 is an acknowledgement).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub seq: u32,
    pub code: i32,
}

pub(super) fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Each netlink message of a datagram: its type and its bytes, header included. Whatever the
/// kernel (or anything else on the socket) sends, this yields what is well-formed and stops
/// at the first thing that is not; it never panics.
pub(super) fn messages(datagram: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        let len = u32_at(rest, 0)? as usize;
        let kind = u16::from_ne_bytes(rest.get(4..6)?.try_into().ok()?);
        let message = rest.get(..len).filter(|_| len >= 16)?;
        rest = rest.get((len + 3) & !3..).unwrap_or_default();
        Some((kind, message))
    })
}

/// The acknowledgements and errors in a datagram.
pub fn parse_acks(datagram: &[u8]) -> Vec<Ack> {
    messages(datagram)
        .filter(|(kind, _)| *kind == NLMSG_ERROR)
        // nlmsgerr: errno, then the header of the message it answers (its seq at +8).
        .filter_map(|(_, message)| {
            Some(Ack {
                seq: u32_at(message, 20 + 8)?,
                code: u32_at(message, 16)? as i32,
            })
        })
        .collect()
}

/// A netlink socket of `protocol` in the calling thread's network namespace, connected to
/// the kernel; a kernel that never answers must not hang the daemon, so reads time out.
pub(super) fn kernel_socket(protocol: isize) -> std::io::Result<Socket> {
    let mut socket = Socket::new(protocol)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let timeout = nix::sys::time::TimeVal::new(Duration::from_secs(5).as_secs() as _, 0);
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)?;
    Ok(socket)
}

/// A netfilter netlink socket in the calling thread's network namespace.
pub struct ElementSocket {
    socket: Socket,
    seq: u32,
    /// The send buffer we asked for; 0 until a batch needed more than the default.
    send_buffer: usize,
}

/// The default send buffer (`wmem_default`) is ~208 KiB; batches up to this need no change.
const DEFAULT_SEND_BUFFER: usize = 200 * 1024;
/// Headroom above a batch's size when the send buffer is raised for it.
const SEND_SLACK: usize = 64 * 1024;

impl ElementSocket {
    pub fn open() -> Result<Self, DataplaneError> {
        let io = |source| DataplaneError::Exec {
            program: "netfilter netlink socket".into(),
            source,
        };
        let socket = kernel_socket(NETLINK_NETFILTER).map_err(io)?;
        Ok(Self {
            socket,
            seq: 1,
            send_buffer: DEFAULT_SEND_BUFFER,
        })
    }

    /// Commit the element changes as one transaction: all or nothing.
    pub fn commit(&mut self, ops: &[ElementOp]) -> Result<(), DataplaneError> {
        if ops.is_empty() {
            return Ok(());
        }
        let first = self.seq;
        let (datagram, expected) = encode(ops, first);
        self.seq = self.seq.wrapping_add(expected as u32 + 2);
        let io = |source| DataplaneError::Exec {
            program: "netfilter netlink socket".into(),
            source,
        };
        // The kernel takes a batch only whole, in one datagram, and refuses one larger than
        // the socket's send buffer: make room (CAP_NET_ADMIN may exceed wmem_max, as nft does).
        if datagram.len() + SEND_SLACK > self.send_buffer {
            let size = datagram.len() + SEND_SLACK;
            nix::sys::socket::setsockopt(
                &self.socket,
                nix::sys::socket::sockopt::SndBufForce,
                &size,
            )
            .map_err(|e| io(e.into()))?;
            self.send_buffer = size;
        }
        self.socket.send(&datagram, 0).map_err(io)?;
        let mut errors = Vec::new();
        let mut answered = 0;
        while answered < expected {
            let (reply, _) = self.socket.recv_from_full().map_err(io)?;
            for ack in parse_acks(&reply) {
                let error = || std::io::Error::from_raw_os_error(-ack.code).to_string();
                match ack.seq.wrapping_sub(first) {
                    // BATCH_BEGIN refused (no permission, say): nothing else will answer.
                    0 if ack.code != 0 => {
                        errors.push(error());
                        answered = expected;
                    }
                    n if n >= 1 && n <= expected as u32 => {
                        answered += 1;
                        if ack.code != 0 {
                            errors.push(error());
                        }
                    }
                    // An answer to an earlier batch (one that timed out) is not this one's.
                    _ => {}
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(DataplaneError::Rejected {
                ops: ops.len(),
                detail: errors.join("; "),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(map: &str, addr: &str, chain: &str) -> ElementOp {
        ElementOp::Add {
            set: map.into(),
            key: Key::Addr(addr.parse().unwrap()),
            jump: Some(chain.into()),
        }
    }

    #[test]
    fn a_batch_is_framed_by_begin_and_end() {
        let (bytes, acks) = encode(&[add("ingress4", "10.0.0.2", "pod-1-in")], 7);
        assert_eq!(acks, 1);
        // BATCH_BEGIN: 20 bytes, type 0x10, seq 7, res_id = nftables subsystem (big-endian).
        assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()), 20);
        assert_eq!(
            u16::from_ne_bytes(bytes[4..6].try_into().unwrap()),
            NFNL_MSG_BATCH_BEGIN
        );
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 7);
        assert_eq!(&bytes[18..20], &[0, 10]);
        // BATCH_END is the last 20 bytes, seq 9.
        let end = &bytes[bytes.len() - 20..];
        assert_eq!(
            u16::from_ne_bytes(end[4..6].try_into().unwrap()),
            NFNL_MSG_BATCH_END
        );
        assert_eq!(u32::from_ne_bytes(end[8..12].try_into().unwrap()), 9);
        assert_eq!(bytes.len() % 4, 0);
    }

    #[test]
    fn consecutive_changes_to_one_map_share_a_message() {
        let ops = [
            add("ingress4", "10.0.0.2", "a"),
            add("ingress4", "10.0.0.3", "b"),
            add("egress4", "10.0.0.2", "c"),
            ElementOp::Delete {
                set: "egress4".into(),
                key: Key::Addr("10.0.0.9".parse().unwrap()),
            },
        ];
        assert_eq!(encode(&ops, 1).1, 3);
    }

    #[test]
    fn the_element_message_carries_key_and_jump() {
        let (bytes, _) = encode(&[add("ingress6", "fd00::2", "pod-1-in")], 1);
        let msg = &bytes[20..bytes.len() - 20];
        assert_eq!(
            u16::from_ne_bytes(msg[4..6].try_into().unwrap()),
            (10 << 8) | NFT_MSG_NEWSETELEM
        );
        let find = |needle: &[u8]| msg.windows(needle.len()).any(|w| w == needle);
        assert!(find(b"podwall\0") && find(b"ingress6\0") && find(b"pod-1-in\0"));
        let key: IpAddr = "fd00::2".parse().unwrap();
        let IpAddr::V6(v6) = key else { unreachable!() };
        assert!(find(&v6.octets()));
        assert!(
            find(&(-3i32).to_be_bytes()),
            "verdict code NFT_JUMP, big-endian"
        );
    }

    #[test]
    fn concatenated_keys_pad_the_port_to_four_bytes() {
        let key = Key::AddrPort("10.0.0.2".parse().unwrap(), 8080);
        assert_eq!(key.bytes(), vec![10, 0, 0, 2, 0x1f, 0x90, 0, 0]);
        assert_eq!(
            Key::AddrPort("fd00::2".parse().unwrap(), 80).bytes().len(),
            20
        );
    }

    #[test]
    fn interface_keys_are_nul_padded_and_go_to_the_bridge_table() {
        let key = Key::IfNameAddr("veth1".into(), "10.0.0.2".parse().unwrap());
        let mut expected = b"veth1".to_vec();
        expected.resize(16, 0);
        expected.extend([10, 0, 0, 2]);
        assert_eq!(key.bytes(), expected);
        let op = ElementOp::Add {
            set: "ports".into(),
            key: Key::IfName("veth1".into()),
            jump: None,
        };
        let (bytes, _) = encode(&[op], 1);
        assert_eq!(
            bytes[20 + 16],
            NFPROTO_BRIDGE,
            "nfgenmsg family of the element message"
        );
    }

    #[test]
    fn acks_and_errors_are_read_from_a_reply() {
        let mut reply = Vec::new();
        for code in [0i32, -2] {
            reply.extend_from_slice(&36u32.to_ne_bytes());
            reply.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            reply.extend_from_slice(&[0; 10]);
            reply.extend_from_slice(&code.to_ne_bytes());
            reply.extend_from_slice(&[0; 16]);
        }
        let codes: Vec<i32> = parse_acks(&reply).iter().map(|a| a.code).collect();
        assert_eq!(codes, vec![0, -2]);
    }

    #[test]
    fn a_large_change_is_cut_into_messages_that_fit_an_attribute() {
        // A namespace of 8,000 pods starting to match a peer: one set, one kind of change.
        let ops: Vec<ElementOp> = (0..8_000u32)
            .map(|i| ElementOp::Add {
                set: "pods4_0123456789abcdef".into(),
                key: Key::Addr(std::net::Ipv4Addr::from(0x0a00_0000 + i).into()),
                jump: None,
            })
            .collect();
        let (bytes, acks) = encode(&ops, 1);
        assert!(acks > 1, "{acks} messages");
        // Every message and every attribute in it has a length that is its real size.
        let mut rest = &bytes[..];
        let mut messages = 0;
        while !rest.is_empty() {
            let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
            assert!(len <= rest.len() && len >= 20);
            let mut attrs = &rest[20..len];
            while !attrs.is_empty() {
                let alen = u16::from_ne_bytes(attrs[0..2].try_into().unwrap()) as usize;
                assert!(
                    alen >= 4 && alen <= attrs.len(),
                    "attribute of {alen} bytes"
                );
                attrs = &attrs[((alen + 3) & !3).min(attrs.len())..];
            }
            rest = &rest[(len + 3) & !3..];
            messages += 1;
        }
        assert_eq!(messages, acks + 2, "begin, the element messages, end");
        let find = |ip: [u8; 4]| bytes.windows(4).filter(|w| *w == ip).count();
        assert_eq!(find([10, 0, 31, 63]), 1, "the last element is sent once");
    }

    #[test]
    fn replies_of_any_shape_are_read_without_panicking() {
        for datagram in [
            &b""[..],
            &[0xff; 3],
            &[36, 0, 0, 0, 2, 0],
            &[16, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff],
            &[
                0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        ] {
            let _ = parse_acks(datagram);
        }
    }
}
