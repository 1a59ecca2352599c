//! Set and map elements: their keys as the kernel stores them, and element changes as
//! NFT_MSG_NEWSETELEM / NFT_MSG_DELSETELEM messages of a batch (`batch::Batch`), for the
//! hot path. Element messages cost the same whatever the size of the table.

use std::net::IpAddr;

use super::batch::Sink;
use super::names::TABLE;
use super::netlink::{
    c_string, push_attr, push_attr_with, push_nested, push_str, NFPROTO_BRIDGE, NFPROTO_INET,
    NFT_MSG_DELSETELEM, NFT_MSG_NEWSETELEM, NLA_F_NESTED, NLM_F_CREATE,
};

pub(super) const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub(super) const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub(super) const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub(super) const NFTA_LIST_ELEM: u16 = 1;
pub(super) const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
pub(super) const NFTA_DATA_VALUE: u16 = 1;
pub(super) const NFTA_DATA_VERDICT: u16 = 2;
pub(super) const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFT_JUMP: i32 = -3;
/// The kernel's `ifname` key type is IFNAMSIZ bytes, NUL-padded.
const IFNAMSIZ: usize = 16;

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
    /// The key's bytes, written at the end of `out`.
    pub(super) fn write(&self, out: &mut Vec<u8>) {
        let addr = |out: &mut Vec<u8>, ip: &IpAddr| match ip {
            IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
        };
        let ifname = |out: &mut Vec<u8>, name: &str| {
            let name = name.as_bytes();
            let name = name.get(..IFNAMSIZ).unwrap_or(name);
            out.extend_from_slice(name);
            out.resize(out.len() + IFNAMSIZ - name.len(), 0);
        };
        match self {
            Key::Addr(ip) => addr(out, ip),
            Key::AddrPair(ip) => {
                addr(out, ip);
                addr(out, ip);
            }
            Key::AddrPort(ip, port) => {
                addr(out, ip);
                out.extend_from_slice(&port.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
            }
            Key::IfName(name) => ifname(out, name),
            Key::IfNameAddr(name, ip) => {
                ifname(out, name);
                addr(out, ip);
            }
        }
    }

    #[cfg(test)]
    fn bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        self.write(&mut bytes);
        bytes
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

/// Add the element changes to `batch`, in order. Consecutive changes of the same kind to the
/// same set share one message.
pub fn push_elements(batch: &mut dyn Sink, ops: &[ElementOp]) {
    for group in ops.chunk_by(same_message) {
        // `chunk_by` yields no empty group.
        let [first, ..] = group else { continue };
        let (kind, flags) = match first {
            ElementOp::Add { .. } => (NFT_MSG_NEWSETELEM, NLM_F_CREATE),
            ElementOp::Delete { .. } => (NFT_MSG_DELSETELEM, 0),
        };
        // The element list is one attribute, and an attribute's length is 16 bits: a large
        // change (a namespace of thousands of pods starting to match) becomes several
        // messages, still inside the one batch, so still one transaction.
        let mut lists = ElementLists::default();
        for op in group {
            lists.push(|elem| element(elem, op));
        }
        for elements in lists.into_lists() {
            let mut body = Vec::new();
            push_attr(&mut body, NFTA_SET_ELEM_LIST_TABLE, &c_string(TABLE));
            push_attr(&mut body, NFTA_SET_ELEM_LIST_SET, &c_string(first.set()));
            push_attr(
                &mut body,
                NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED,
                &elements,
            );
            let what = format!("elements of set {}", first.set());
            batch.push(kind, flags, first.family(), body, what);
        }
    }
}

/// Most bytes of elements one message carries: an attribute's 16-bit length less its
/// header, with room to spare.
const MAX_ELEMENT_BYTES: usize = 60 * 1024;

/// Elements (each its `NFTA_SET_ELEM_*` attributes), written straight into lists that each
/// fit one attribute, and their number.
#[derive(Debug, Default)]
pub(super) struct ElementLists {
    lists: Vec<Vec<u8>>,
    count: usize,
}

impl ElementLists {
    /// One element, whose attributes `write` writes.
    pub(super) fn push(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        self.count += 1;
        if self.lists.is_empty() {
            self.lists.push(Vec::new());
        }
        let Some(list) = self.lists.last_mut() else {
            return;
        };
        let start = list.len();
        push_nested(list, NFTA_LIST_ELEM, write);
        if list.len() > MAX_ELEMENT_BYTES && start > 0 {
            // It does not fit: it starts the next list.
            let element = list.split_off(start);
            self.lists.push(element);
        }
    }

    /// How many elements were pushed.
    pub(super) fn len(&self) -> usize {
        self.count
    }

    pub(super) fn into_lists(self) -> Vec<Vec<u8>> {
        self.lists
    }
}

fn same_message(a: &ElementOp, b: &ElementOp) -> bool {
    let is_add = |op: &ElementOp| matches!(op, ElementOp::Add { .. });
    is_add(a) == is_add(b) && a.set() == b.set() && a.family() == b.family()
}

/// `op`'s element: its key and, for a map, its verdict.
fn element(elem: &mut Vec<u8>, op: &ElementOp) {
    let (key, jump) = match op {
        ElementOp::Add { key, jump, .. } => (key, jump.as_ref()),
        ElementOp::Delete { key, .. } => (key, None),
    };
    push_nested(elem, NFTA_SET_ELEM_KEY, |value| {
        push_attr_with(value, NFTA_DATA_VALUE, |bytes| key.write(bytes));
    });
    if let Some(chain) = jump {
        push_nested(elem, NFTA_SET_ELEM_DATA, |data| {
            push_nested(data, NFTA_DATA_VERDICT, |verdict| {
                push_attr(verdict, NFTA_VERDICT_CODE, &NFT_JUMP.to_be_bytes());
                push_str(verdict, NFTA_VERDICT_CHAIN, chain);
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::batch::Batch;
    use crate::dataplane::netlink::NFPROTO_BRIDGE;

    fn encode(ops: &[ElementOp], first_seq: u32) -> (Vec<u8>, usize) {
        let mut batch = Batch::default();
        push_elements(&mut batch, ops);
        (batch.encode(first_seq), batch.len())
    }

    fn add(map: &str, addr: &str, chain: &str) -> ElementOp {
        ElementOp::Add {
            set: map.into(),
            key: Key::Addr(addr.parse().unwrap()),
            jump: Some(chain.into()),
        }
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
}
