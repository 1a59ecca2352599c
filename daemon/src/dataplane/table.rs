//! Both tables whole, as one netlink batch: what `render` writes as an `nft -f` script,
//! object for object and expression for expression, without nft parsing and evaluating every
//! rule in userspace (a root test lists the two and compares them). The swap that a start
//! without a handover, a repair and a refused change's fallback make costs the kernel's work
//! only. Pure; the socket is `netlink::NftSocket`.
//!
//! Each table is created, deleted and created again in the batch, so the delete is valid
//! whether or not the table exists; the batch is one transaction, so no packet ever sees a
//! table missing or half built.

use std::net::Ipv6Addr;

use podwall_policy::{Direction, Family, Set};

use super::batch::{Batch, Sink};
use super::elements::{push_elements, ElementLists};
use super::exprs::{
    address, ct_state, l4proto, nfproto, CmpOp, Expr, CT_STATE_ESTABLISHED, CT_STATE_RELATED,
    NFT_META_IIFNAME, NFT_META_L4PROTO, NFT_META_PROTOCOL, NFT_PAYLOAD_LL_HEADER,
    NFT_PAYLOAD_NETWORK_HEADER, NFT_PAYLOAD_TRANSPORT_HEADER, NF_ACCEPT, NF_DROP, REG32_01, REG_1,
    REG_2,
};
use super::names::{
    hairpin_set, map_name, FORWARD_CHAIN, GUARD_CHAIN, GUARD_PORTS, GUARD_SOURCES4, GUARD_SOURCES6,
    GUARD_TARGETS6, MAPS, OPEN_CHAIN, OUTPUT_CHAIN, QUARANTINE_CHAIN, TABLE,
};
use super::netlink::{
    c_string, push_attr, NFPROTO_BRIDGE, NFPROTO_INET, NFT_MSG_DELTABLE, NFT_MSG_NEWCHAIN,
    NFT_MSG_NEWTABLE, NLA_F_NESTED, NLM_F_CREATE,
};
use super::sets::{
    addr_type, concat, icmpv6_types, interval_elements, key_element, push_anonymous,
    push_declaration, push_set, Declaration, Printed, INTERFACE_INTEGER, IP6_SOURCES,
    NFT_SET_INTERVAL, NFT_SET_MAP, TYPE_IFNAME, TYPE_IPV4_ADDR, TYPE_IPV6_ADDR,
};
use super::shape::Field;
use super::shape::{shape, RuleShape};
use super::structure;
use super::transaction::whole_elements;
use super::Desired;

/// Hooks: the inet family's forward and output, the bridge's prerouting.
const NF_INET_FORWARD: u32 = 2;
const NF_INET_LOCAL_OUT: u32 = 3;
const NF_BR_PRE_ROUTING: u32 = 0;
/// `priority filter` in the inet and in the bridge family.
const INET_FILTER: i32 = 0;
const BRIDGE_FILTER: i32 = -200;
/// `fib saddr type local`.
const RTN_LOCAL: u32 = 2;
/// ICMPv6 types (RFC 4443, 4861, 2710, 3810).
const MLD_LISTENER_REPORT: u8 = 131;
const MLD_LISTENER_DONE: u8 = 132;
const ND_ROUTER_SOLICIT: u8 = 133;
const ND_ROUTER_ADVERT: u8 = 134;
const ND_NEIGHBOR_SOLICIT: u8 = 135;
const ND_NEIGHBOR_ADVERT: u8 = 136;
const ND_REDIRECT: u8 = 137;
const MLD2_LISTENER_REPORT: u8 = 143;
const ICMPV6: u8 = 58;
const ETHER_IP: [u8; 2] = [0x08, 0x00];
const ETHER_ARP: [u8; 2] = [0x08, 0x06];
const ETHER_IP6: [u8; 2] = [0x86, 0xdd];

/// The batch that swaps both tables for the ones `desired` renders to.
pub fn batch(desired: &Desired) -> Batch {
    let mut batch = Batch::default();
    write(&mut batch, desired);
    batch
}

/// That batch's messages, into `sink`, straight from `desired`: nothing of it is copied.
pub(super) fn write(sink: &mut dyn Sink, desired: &Desired) {
    let ruleset = &desired.ruleset;
    let mut table = Table { sink, set_id: 0 };
    table.guard();
    // In `render`'s order, which is the order `nft list` prints them in.
    table.swap(NFPROTO_INET);
    for (name, set) in &ruleset.sets {
        table.set_id += 1;
        push_set(table.sink, name, set, table.set_id);
    }
    table.policy();
    for name in ruleset.chains.keys() {
        structure::push_chain(table.sink, name);
    }
    let family_of = |set: &str| ruleset.sets.get(set).map(Set::family);
    for (name, chain) in &ruleset.chains {
        let shapes: Vec<RuleShape> = (chain.rules.iter())
            .map(|rule| shape(chain.direction, rule, family_of))
            .collect();
        let rules = shapes.iter().zip(&chain.rules);
        let chain = (name.as_str(), &chain.end);
        structure::push_rules(table.sink, &mut table.set_id, chain, rules, desired.logging);
    }
    push_elements(table.sink, &whole_elements(desired));
}

struct Table<'a> {
    sink: &'a mut dyn Sink,
    /// The last id a set of the batch took.
    set_id: u32,
}

impl Table<'_> {
    /// Create the table, delete it, create it again: the delete is valid whether or not the
    /// table existed, and what follows fills an empty one.
    fn swap(&mut self, family: u8) {
        let name = || {
            let mut body = Vec::new();
            push_attr(&mut body, 1, &c_string(TABLE)); // NFTA_TABLE_NAME
            body
        };
        let created = || {
            let mut body = name();
            push_attr(&mut body, 2, &0u32.to_be_bytes()); // NFTA_TABLE_FLAGS
            body
        };
        let steps = [
            (NFT_MSG_NEWTABLE, NLM_F_CREATE, created(), "creation"),
            (NFT_MSG_DELTABLE, 0, name(), "deletion"),
            (NFT_MSG_NEWTABLE, NLM_F_CREATE, created(), "creation"),
        ];
        for (kind, flags, body, verb) in steps {
            let what = format!("{verb} of table {TABLE}");
            self.sink.push(kind, flags, family, body, what);
        }
    }

    fn set(&mut self, name: &str, set: &Declaration) {
        self.set_id += 1;
        push_declaration(self.sink, name, self.set_id, set);
    }

    /// An anonymous set for the next rule: its id.
    fn anonymous(&mut self, set: &Declaration, elements: ElementLists) -> Option<u32> {
        self.set_id += 1;
        push_anonymous(self.sink, self.set_id, set, elements);
        Some(self.set_id)
    }

    /// A chain; a base chain on `hook` (its number and priority) accepts what it does not
    /// decide.
    fn chain(&mut self, family: u8, name: &str, hook: Option<(u32, i32)>) {
        let mut body = Vec::new();
        push_attr(&mut body, 1, &c_string(TABLE)); // NFTA_CHAIN_TABLE
        push_attr(&mut body, 3, &c_string(name)); // NFTA_CHAIN_NAME
        if let Some((number, priority)) = hook {
            let mut hook = Vec::new();
            push_attr(&mut hook, 1, &number.to_be_bytes()); // NFTA_HOOK_HOOKNUM
            push_attr(&mut hook, 2, &priority.to_be_bytes()); // NFTA_HOOK_PRIORITY
            push_attr(&mut body, 4 | NLA_F_NESTED, &hook); // NFTA_CHAIN_HOOK
            push_attr(&mut body, 5, &NF_ACCEPT.to_be_bytes()); // NFTA_CHAIN_POLICY
            push_attr(&mut body, 7, &c_string("filter")); // NFTA_CHAIN_TYPE
        }
        let what = format!("new chain {name}");
        self.sink
            .push(NFT_MSG_NEWCHAIN, NLM_F_CREATE, family, body, what);
    }

    fn rule(&mut self, family: u8, chain: &str, exprs: &[Expr]) {
        structure::push_rule(self.sink, family, chain, exprs, None);
    }

    /// The `inet` table's fixed objects: the hairpin sets, the dispatch maps, `open`,
    /// `quarantine` and the base chains (`render::render_ruleset`).
    fn policy(&mut self) {
        for family in Family::ALL {
            let (addr, len) = addr_type(family);
            let pairs = Declaration::named(0, concat(addr, addr), 2 * len, Printed::Concatenation);
            self.set(hairpin_set(family), &pairs);
        }
        for (direction, family) in MAPS {
            let (addr, len) = addr_type(family);
            let map = Declaration::named(NFT_SET_MAP, addr, len, Printed::Dispatch);
            self.set(map_name(direction, family), &map);
        }
        // Neighbour discovery between pods; router advertisements and redirects are the
        // node's (the guard drops them from pods).
        let types = [ND_ROUTER_SOLICIT, ND_NEIGHBOR_SOLICIT, ND_NEIGHBOR_ADVERT];
        let id = self.anonymous(&icmpv6_types(NFPROTO_INET), type_elements(&types));
        let mut discovery = nfproto(Family::V6).to_vec();
        discovery.extend(icmpv6_type());
        discovery.extend([
            Expr::Lookup {
                set: ANON.into(),
                id,
            },
            accept(),
        ]);
        self.base_chain(FORWARD_CHAIN, NF_INET_FORWARD, &discovery);
        // The node's own traffic (`fib saddr type local accept`).
        let local = [
            Expr::FibSaddrType,
            Expr::Cmp(CmpOp::Eq, RTN_LOCAL.to_ne_bytes().to_vec()),
            accept(),
        ];
        self.base_chain(OUTPUT_CHAIN, NF_INET_LOCAL_OUT, &local);
        self.chain(NFPROTO_INET, OPEN_CHAIN, None);
        self.rule(NFPROTO_INET, OPEN_CHAIN, &super::exprs::midstream_drop());
        self.chain(NFPROTO_INET, QUARANTINE_CHAIN, None);
        self.rule(NFPROTO_INET, QUARANTINE_CHAIN, &[Expr::Verdict(NF_DROP)]);
    }

    /// `render::base_chain`: established flows, hairpin, `exception`, then the dispatch.
    fn base_chain(&mut self, name: &str, hook: u32, exception: &[Expr]) {
        self.chain(NFPROTO_INET, name, Some((hook, INET_FILTER)));
        let mut established = ct_state(CT_STATE_ESTABLISHED | CT_STATE_RELATED);
        established.push(accept());
        self.rule(NFPROTO_INET, name, &established);
        for family in Family::ALL {
            let second = if family == Family::V4 {
                REG32_01
            } else {
                REG_2
            };
            let mut hairpin = nfproto(family).to_vec();
            hairpin.extend([
                address(Some(family), Field::Saddr, REG_1),
                address(Some(family), Field::Daddr, second),
                Expr::Lookup {
                    set: hairpin_set(family).into(),
                    id: None,
                },
                accept(),
            ]);
            self.rule(NFPROTO_INET, name, &hairpin);
        }
        self.rule(NFPROTO_INET, name, exception);
        for (direction, field) in [
            (Direction::Egress, Field::Saddr),
            (Direction::Ingress, Field::Daddr),
        ] {
            for family in Family::ALL {
                let mut dispatch = nfproto(family).to_vec();
                dispatch.push(address(Some(family), field, REG_1));
                dispatch.push(Expr::Vmap(map_name(direction, family).into()));
                self.rule(NFPROTO_INET, name, &dispatch);
            }
        }
    }

    /// The `bridge` table: the guard's sets and its prerouting chain (`render::render_guard`
    /// and `GUARD_RULES`, rule for rule). Its elements come with the rest.
    fn guard(&mut self) {
        self.swap(NFPROTO_BRIDGE);
        let bridge = |key_type, key_len, printed| Declaration {
            family: NFPROTO_BRIDGE,
            ..Declaration::named(0, key_type, key_len, printed)
        };
        let sources = |addr| concat(TYPE_IFNAME, addr);
        self.set(GUARD_PORTS, &bridge(TYPE_IFNAME, 16, Printed::Interface));
        let pairs = Printed::Concatenation;
        self.set(GUARD_SOURCES4, &bridge(sources(TYPE_IPV4_ADDR), 20, pairs));
        self.set(GUARD_SOURCES6, &bridge(sources(TYPE_IPV6_ADDR), 32, pairs));
        let raw = Printed::InterfaceRawAddress;
        self.set(GUARD_TARGETS6, &bridge(INTERFACE_INTEGER, 32, raw));
        self.chain(
            NFPROTO_BRIDGE,
            GUARD_CHAIN,
            Some((NF_BR_PRE_ROUTING, BRIDGE_FILTER)),
        );
        for rule in self.guard_rules() {
            self.rule(NFPROTO_BRIDGE, GUARD_CHAIN, &rule);
        }
    }

    /// `iifname != @ports accept`, then each of `render::GUARD_RULES`, ending in `drop`.
    fn guard_rules(&mut self) -> Vec<Vec<Expr>> {
        let ip6_saddr = address(Some(Family::V6), Field::Saddr, REG_1);
        let arp_saddr = |dreg| network(14, 4, dreg);
        let not_in = |set: &str| Expr::NotIn {
            set: set.into(),
            id: None,
        };
        let link_local = vec![(0, 0), (u128::from(LINK_LOCAL), LINK_LOCAL_LAST)];
        let scopes = Declaration {
            family: NFPROTO_BRIDGE,
            ..Declaration::named(NFT_SET_INTERVAL, TYPE_IPV6_ADDR, 16, IP6_SOURCES)
        };
        let types = icmpv6_types(NFPROTO_BRIDGE);
        let mut rules = vec![vec![iifname(), not_in(GUARD_PORTS), accept()]];
        // ether type ip iifname . ip saddr != @sources4
        let mut rule = ether(ETHER_IP);
        rule.extend([iifname(), network(12, 4, REG_2), not_in(GUARD_SOURCES4)]);
        rules.push(rule);
        // ether type arp arp saddr ip != 0.0.0.0 iifname . arp saddr ip != @sources4
        let mut rule = ether(ETHER_ARP);
        rule.extend([arp_saddr(REG_1), Expr::Cmp(CmpOp::Neq, vec![0; 4])]);
        rule.extend([iifname(), arp_saddr(REG_2), not_in(GUARD_SOURCES4)]);
        rules.push(rule);
        // ether type ip6 ip6 saddr != { ::, fe80::/10 } iifname . ip6 saddr != @sources6
        let id = self.anonymous(&scopes, interval_elements(&link_local, 16));
        let mut rule = ether(ETHER_IP6);
        rule.extend([ip6_saddr.clone(), anonymous_not_in(id)]);
        rule.extend([iifname(), network(8, 16, REG_2), not_in(GUARD_SOURCES6)]);
        rules.push(rule);
        // icmpv6 type { nd-router-advert, nd-redirect }
        let id = self.anonymous(&types, type_elements(&[ND_ROUTER_ADVERT, ND_REDIRECT]));
        let mut rule = ether(ETHER_IP6);
        rule.extend(icmpv6_type());
        rule.push(Expr::Lookup {
            set: ANON.into(),
            id,
        });
        rules.push(rule);
        // ip6 saddr { ::, fe80::/10 } meta l4proto != 58
        let id = self.anonymous(&scopes, interval_elements(&link_local, 16));
        let mut rule = ip6_protocol();
        rule.extend([
            ip6_saddr.clone(),
            Expr::Lookup {
                set: ANON.into(),
                id,
            },
        ]);
        rule.extend([
            Expr::Meta(NFT_META_L4PROTO),
            Expr::Cmp(CmpOp::Neq, vec![ICMPV6]),
        ]);
        rules.push(rule);
        // ip6 saddr { ::, fe80::/10 } icmpv6 type != { what link-local sources may send }
        let id = self.anonymous(&scopes, interval_elements(&link_local, 16));
        let mut rule = ip6_protocol();
        rule.extend([
            ip6_saddr,
            Expr::Lookup {
                set: ANON.into(),
                id,
            },
        ]);
        let allowed = [
            ND_ROUTER_SOLICIT,
            ND_NEIGHBOR_SOLICIT,
            ND_NEIGHBOR_ADVERT,
            MLD_LISTENER_REPORT,
            MLD_LISTENER_DONE,
            MLD2_LISTENER_REPORT,
        ];
        let id = self.anonymous(&types, type_elements(&allowed));
        rule.extend(icmpv6_type());
        rule.push(anonymous_not_in(id));
        rules.push(rule);
        // icmpv6 type nd-neighbor-advert @th,64,16 & 0xffc0 != 0xfe80
        //   iifname . @th,64,128 != @targets6
        let mut rule = ether(ETHER_IP6);
        rule.extend(icmpv6_type());
        rule.extend([
            Expr::Cmp(CmpOp::Eq, vec![ND_NEIGHBOR_ADVERT]),
            transport(8, 2, REG_1),
            Expr::And(vec![0xff, 0xc0]),
            Expr::Cmp(CmpOp::Neq, vec![0xfe, 0x80]),
            iifname(),
            transport(8, 16, REG_2),
            not_in(GUARD_TARGETS6),
        ]);
        rules.push(rule);
        for rule in &mut rules[1..] {
            rule.push(Expr::Verdict(NF_DROP));
        }
        rules
    }
}

const ANON: &str = super::exprs::ANONYMOUS_SET;
const LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0);
/// The last address of fe80::/10.
const LINK_LOCAL_LAST: u128 = (0xfebf_u128 << 112) | ((1 << 112) - 1);

fn accept() -> Expr {
    Expr::Verdict(NF_ACCEPT)
}

fn iifname() -> Expr {
    Expr::Meta(NFT_META_IIFNAME)
}

fn anonymous_not_in(id: Option<u32>) -> Expr {
    Expr::NotIn {
        set: ANON.into(),
        id,
    }
}

fn network(offset: u32, len: u32, dreg: u32) -> Expr {
    payload(NFT_PAYLOAD_NETWORK_HEADER, offset, len, dreg)
}

fn transport(offset: u32, len: u32, dreg: u32) -> Expr {
    payload(NFT_PAYLOAD_TRANSPORT_HEADER, offset, len, dreg)
}

fn payload(base: u32, offset: u32, len: u32, dreg: u32) -> Expr {
    Expr::Payload {
        base,
        offset,
        len,
        dreg,
    }
}

/// `ether type …`: the frame's own header.
fn ether(kind: [u8; 2]) -> Vec<Expr> {
    vec![
        payload(NFT_PAYLOAD_LL_HEADER, 12, 2, REG_1),
        Expr::Cmp(CmpOp::Eq, kind.to_vec()),
    ]
}

/// The protocol nft checks before an `ip6` field of a rule that names no ether type.
fn ip6_protocol() -> Vec<Expr> {
    vec![
        Expr::Meta(NFT_META_PROTOCOL),
        Expr::Cmp(CmpOp::Eq, ETHER_IP6.to_vec()),
    ]
}

/// `icmpv6 type`, loaded after its protocol check.
fn icmpv6_type() -> Vec<Expr> {
    let mut exprs = l4proto(ICMPV6).to_vec();
    exprs.push(transport(0, 1, REG_1));
    exprs
}

fn type_elements(types: &[u8]) -> ElementLists {
    let mut elements = ElementLists::default();
    for t in types {
        key_element(&mut elements, |key| key.push(*t), None, false);
    }
    elements
}
