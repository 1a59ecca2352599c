//! Sets as NFT_MSG_NEWSET and NFT_MSG_NEWSETELEM messages: each kind of set podwall makes
//! (the compiler's address, interval and address-port sets, the dispatch maps, the hairpin
//! pairs, the guard's interface sets, and the anonymous sets of ports and ICMPv6 types a rule
//! reads), declared byte for byte as nft 1.0 declares it, so that `nft list` prints a table
//! built over netlink exactly as one loaded with `nft -f`. Pure.

use std::net::IpAddr;

use podwall_policy::{Family, Set};

use super::batch::Sink;
use super::elements::{
    ElementLists, Key, NFTA_DATA_VALUE, NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_LIST_ELEMENTS,
    NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_TABLE,
};
use super::exprs::ANONYMOUS_SET;
use super::names::TABLE;
use super::netlink::{
    c_string, push_attr, push_attr_with, push_nested, NFPROTO_INET, NFT_MSG_NEWSET,
    NFT_MSG_NEWSETELEM, NLA_F_NESTED, NLM_F_CREATE,
};

// Set types and flags (nf_tables.h; nft's datatype numbers).
const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_CONSTANT: u32 = 0x2;
pub(super) const NFT_SET_INTERVAL: u32 = 0x4;
pub(super) const NFT_SET_MAP: u32 = 0x8;
const TYPE_INTEGER: u32 = 4;
pub(super) const TYPE_IPV4_ADDR: u32 = 7;
pub(super) const TYPE_IPV6_ADDR: u32 = 8;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_ICMPV6_TYPE: u32 = 29;
pub(super) const TYPE_IFNAME: u32 = 41;
/// The data type of a verdict map.
const TYPE_VERDICT: u32 = 0xffff_ff00;
/// nft's concatenated type: each field's type shifted in by 6 bits.
pub(super) const fn concat(first: u32, second: u32) -> u32 {
    (first << 6) | second
}
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;

/// Everything NEWSET says of a set but its name and batch id.
#[derive(Debug, Clone)]
pub(super) struct Declaration {
    pub family: u8,
    pub flags: u32,
    pub key_type: u32,
    pub key_len: u32,
    /// How nft prints the keys (its user data).
    pub printed: Printed,
}

impl Declaration {
    /// A named set of the `inet` table.
    pub fn named(flags: u32, key_type: u32, key_len: u32, printed: Printed) -> Self {
        Self {
            family: NFPROTO_INET,
            flags,
            key_type,
            key_len,
            printed,
        }
    }
}

/// nft's user data of a set: how `nft list` prints its keys, byte for byte as nft 1.0 writes
/// it for each kind of set podwall makes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Printed {
    /// An address: big endian.
    Address,
    /// A concatenation of two typed fields: a byte order of 0 and the type of its last field.
    Concatenation,
    /// An interface name: host byte order.
    Interface,
    /// A verdict map keyed on an address.
    Dispatch,
    /// An anonymous set of a payload field (`th dport`, `ip6 saddr`, `icmpv6 type`), its
    /// protocol and field as nft numbers them; `merged` for an interval set.
    Payload {
        header: u32,
        field: u32,
        merged: bool,
    },
    /// `typeof iifname . @th,64,128` (the guard's neighbour advertisement targets).
    InterfaceRawAddress,
}

fn tlv(kind: u8, value: u32) -> Vec<u8> {
    let mut out = vec![kind, 4];
    out.extend(value.to_ne_bytes());
    out
}

fn nested(kind: u8, inner: &[u8]) -> Vec<u8> {
    let mut out = vec![kind, u8::try_from(inner.len()).unwrap_or(u8::MAX)];
    out.extend(inner);
    out
}

/// nft 1.0's bytes for `typeof iifname . @th,64,128`.
const INTERFACE_RAW_ADDRESS: [u8; 72] = [
    0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x03, 0x40, 0x00, 0x04, 0x0d, 0x00, 0x00, 0x00, 0x01, 0x38,
    0x00, 0x0e, 0x00, 0x04, 0x09, 0x00, 0x00, 0x00, 0x01, 0x06, 0x00, 0x04, 0x06, 0x00, 0x00, 0x00,
    0x01, 0x26, 0x00, 0x04, 0x07, 0x00, 0x00, 0x00, 0x01, 0x1e, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x04, 0x00, 0x00, 0x00, 0x00, 0x02, 0x04, 0x03, 0x00, 0x00, 0x00, 0x03, 0x04, 0x40, 0x00,
    0x00, 0x00, 0x04, 0x04, 0x80, 0x00, 0x00, 0x00,
];

impl Printed {
    fn userdata(self) -> Vec<u8> {
        match self {
            Printed::Address => tlv(0, 2),
            Printed::Concatenation => {
                let mut out = tlv(0, 0);
                out.extend(nested(3, &[tlv(0, TYPE_INET_SERVICE), vec![1, 0]].concat()));
                out
            }
            Printed::Interface => tlv(0, 1),
            Printed::Dispatch => [tlv(0, 2), tlv(1, 0), tlv(6, 0)].concat(),
            Printed::Payload {
                header,
                field,
                merged,
            } => {
                let mut out = tlv(0, 2);
                if merged {
                    out.extend(tlv(2, 1));
                }
                let data = [tlv(0, header), tlv(1, field)].concat();
                let key = [tlv(0, 7), nested(1, &data)].concat();
                out.extend(nested(3, &key));
                out
            }
            Printed::InterfaceRawAddress => INTERFACE_RAW_ADDRESS.to_vec(),
        }
    }
}

/// `th dport`, `ip6 saddr` and `icmpv6 type` as nft numbers their protocols and fields.
pub(super) const PORTS: Printed = Printed::Payload {
    header: 11,
    field: 2,
    merged: true,
};
pub(super) const IP6_SOURCES: Printed = Printed::Payload {
    header: 13,
    field: 8,
    merged: true,
};
pub(super) const ICMPV6_TYPES: Printed = Printed::Payload {
    header: 14,
    field: 1,
    merged: false,
};

/// NEWSET for the set `name`, numbered `id` in the batch.
pub(super) fn push_declaration(batch: &mut dyn Sink, name: &str, id: u32, set: &Declaration) {
    let mut body = Vec::new();
    push_attr(&mut body, 1, &c_string(TABLE)); // NFTA_SET_TABLE
    push_attr(&mut body, 2, &c_string(name)); // NFTA_SET_NAME
    push_attr(&mut body, 3, &set.flags.to_be_bytes()); // NFTA_SET_FLAGS
    push_attr(&mut body, 4, &set.key_type.to_be_bytes()); // NFTA_SET_KEY_TYPE
    push_attr(&mut body, 5, &set.key_len.to_be_bytes()); // NFTA_SET_KEY_LEN
    if set.flags & NFT_SET_MAP != 0 {
        push_attr(&mut body, 6, &TYPE_VERDICT.to_be_bytes()); // NFTA_SET_DATA_TYPE
        push_attr(&mut body, 7, &0u32.to_be_bytes()); // NFTA_SET_DATA_LEN
    }
    push_attr(&mut body, 10, &id.to_be_bytes()); // NFTA_SET_ID
    push_attr(&mut body, 13, &set.printed.userdata()); // NFTA_SET_USERDATA
    let what = format!("new set {name}");
    batch.push(NFT_MSG_NEWSET, NLM_F_CREATE, set.family, body, what);
}

/// An anonymous set of a rule, numbered `id` in the batch, with its encoded elements.
pub(super) fn push_anonymous(
    batch: &mut dyn Sink,
    id: u32,
    set: &Declaration,
    elements: ElementLists,
) {
    let flags = set.flags | NFT_SET_ANONYMOUS | NFT_SET_CONSTANT;
    let mut body = Vec::new();
    push_attr(&mut body, 1, &c_string(TABLE)); // NFTA_SET_TABLE
    push_attr(&mut body, 2, &c_string(ANONYMOUS_SET)); // NFTA_SET_NAME
    push_attr(&mut body, 3, &flags.to_be_bytes()); // NFTA_SET_FLAGS
    push_attr(&mut body, 4, &set.key_type.to_be_bytes()); // NFTA_SET_KEY_TYPE
    push_attr(&mut body, 5, &set.key_len.to_be_bytes()); // NFTA_SET_KEY_LEN
    push_attr(&mut body, 10, &id.to_be_bytes()); // NFTA_SET_ID
    let mut desc = Vec::new();
    push_attr(&mut desc, 1, &(elements.len() as u32).to_be_bytes()); // NFTA_SET_DESC_SIZE
    push_attr(&mut body, 9 | NLA_F_NESTED, &desc); // NFTA_SET_DESC
    push_attr(&mut body, 13, &set.printed.userdata()); // NFTA_SET_USERDATA
    let what = "an anonymous set".to_string();
    batch.push(NFT_MSG_NEWSET, NLM_F_CREATE, set.family, body, what);
    push_set_elements(batch, set.family, ANONYMOUS_SET, Some(id), elements);
}

/// How a set of the compiler is declared.
fn declaration(set: &Set) -> Declaration {
    let (addr, len) = addr_type(set.family());
    match set {
        Set::Addresses { .. } => Declaration::named(0, addr, len, Printed::Address),
        Set::Intervals { .. } => Declaration::named(NFT_SET_INTERVAL, addr, len, Printed::Address),
        // Each field of a concatenation takes a multiple of 4 bytes.
        Set::AddressPorts { .. } => Declaration::named(
            0,
            concat(addr, TYPE_INET_SERVICE),
            len + 4,
            Printed::Concatenation,
        ),
    }
}

pub(super) fn addr_type(family: Family) -> (u32, u32) {
    match family {
        Family::V4 => (TYPE_IPV4_ADDR, 4),
        Family::V6 => (TYPE_IPV6_ADDR, 16),
    }
}

/// NEWSET for a set of the compiler, numbered `id` in the batch, then its elements.
pub(super) fn push_set(batch: &mut dyn Sink, name: &str, set: &Set, id: u32) {
    push_declaration(batch, name, id, &declaration(set));
    push_set_elements(batch, NFPROTO_INET, name, None, set_elements(set));
}

/// The anonymous set of a rule's ports (`th dport { 53, 80-90 }`), numbered `id` in the batch.
pub(super) fn push_port_set(batch: &mut dyn Sink, id: u32, ranges: &[(u16, u16)]) {
    let ranges: Vec<(u128, u128)> = (ranges.iter())
        .map(|(a, b)| (u128::from(*a), u128::from(*b)))
        .collect();
    let ports = Declaration::named(NFT_SET_INTERVAL, TYPE_INET_SERVICE, 2, PORTS);
    push_anonymous(batch, id, &ports, interval_elements(&ranges, 2));
}

/// The anonymous set of ICMPv6 types a rule of `family`'s table reads.
pub(super) fn icmpv6_types(family: u8) -> Declaration {
    Declaration {
        family,
        ..Declaration::named(0, TYPE_ICMPV6_TYPE, 1, ICMPV6_TYPES)
    }
}

/// An integer key type of `len` bytes after an interface name, for a raw header field.
pub(super) const INTERFACE_INTEGER: u32 = concat(TYPE_IFNAME, TYPE_INTEGER);

/// NEWSETELEM messages carrying `elements`.
pub(super) fn push_set_elements(
    batch: &mut dyn Sink,
    family: u8,
    set: &str,
    id: Option<u32>,
    elements: ElementLists,
) {
    for list in elements.into_lists() {
        let mut body = Vec::new();
        push_attr(&mut body, NFTA_SET_ELEM_LIST_TABLE, &c_string(TABLE));
        push_attr(&mut body, NFTA_SET_ELEM_LIST_SET, &c_string(set));
        if let Some(id) = id {
            push_attr(&mut body, NFTA_SET_ELEM_LIST_SET_ID, &id.to_be_bytes());
        }
        push_attr(&mut body, NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, &list);
        let what = format!("elements of set {set}");
        batch.push(NFT_MSG_NEWSETELEM, NLM_F_CREATE, family, body, what);
    }
}

/// A set's elements as the kernel takes them.
pub(super) fn set_elements(set: &Set) -> ElementLists {
    let mut lists = ElementLists::default();
    match set {
        Set::Addresses { elements, .. } => {
            for ip in elements.iter() {
                key_element(&mut lists, |key| Key::Addr(ip).write(key), None, false);
            }
        }
        Set::AddressPorts { elements, .. } => {
            for (ip, port) in elements {
                let key = Key::AddrPort(*ip, *port);
                key_element(&mut lists, |bytes| key.write(bytes), None, false);
            }
        }
        Set::Intervals { family, ranges } => {
            let width = addr_type(*family).1 as usize;
            let ranges: Vec<(u128, u128)> = (ranges.iter())
                .map(|r| (to_u128(&r.first), to_u128(&r.last)))
                .collect();
            return interval_elements(&ranges, width);
        }
    }
    lists
}

fn to_u128(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(*v4)),
        IpAddr::V6(v6) => u128::from(*v6),
    }
}

/// Inclusive ranges of `width`-byte keys as an interval set's elements, the way nft writes
/// them: each range a start and, one past its end, an end marker; a marker at 0 when the
/// first range does not start there; a range that reaches the top has no end marker and is
/// flagged open. Touching ranges are merged first (nft would).
pub(super) fn interval_elements(ranges: &[(u128, u128)], width: usize) -> ElementLists {
    let top = if width >= 16 {
        u128::MAX
    } else {
        (1u128 << (8 * width)) - 1
    };
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    let mut merged: Vec<(u128, u128)> = Vec::new();
    for (first, last) in sorted {
        match merged.last_mut() {
            Some(prev) if prev.1 == top || first <= prev.1 + 1 => prev.1 = prev.1.max(last),
            _ => merged.push((first, last)),
        }
    }
    let bytes = |value: u128| {
        let bytes = value.to_be_bytes();
        move |out: &mut Vec<u8>| {
            out.extend_from_slice(bytes.get(16usize.saturating_sub(width)..).unwrap_or(&bytes))
        }
    };
    let mut out = ElementLists::default();
    if merged.first().is_some_and(|(first, _)| *first != 0) {
        key_element(&mut out, bytes(0), None, true);
    }
    for (first, last) in merged {
        if last >= top {
            // NFTNL_UDATA_SET_ELEM_FLAGS: NFTNL_SET_ELEM_F_INTERVAL_OPEN.
            let mut open = vec![1, 4];
            open.extend(1u32.to_ne_bytes());
            key_element(&mut out, bytes(first), Some(&open), false);
        } else {
            key_element(&mut out, bytes(first), None, false);
            key_element(&mut out, bytes(last + 1), None, true);
        }
    }
    out
}

/// One element: its key (which `key` writes), user data, and whether it ends an interval.
pub(super) fn key_element(
    lists: &mut ElementLists,
    key: impl FnOnce(&mut Vec<u8>),
    userdata: Option<&[u8]>,
    end: bool,
) {
    lists.push(|elem| {
        if end {
            push_attr(
                elem,
                NFTA_SET_ELEM_FLAGS,
                &NFT_SET_ELEM_INTERVAL_END.to_be_bytes(),
            );
        }
        push_nested(elem, NFTA_SET_ELEM_KEY, |value| {
            push_attr_with(value, NFTA_DATA_VALUE, key);
        });
        if let Some(data) = userdata {
            push_attr(elem, NFTA_SET_ELEM_USERDATA, data);
        }
    });
}
