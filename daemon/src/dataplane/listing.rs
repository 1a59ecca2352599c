//! A table read back over netlink, exactly (`read_exact`: every object and element, folded
//! by `exact`), or into a [`Fingerprint`]: its chains, each rule by its comment or its last
//! expression as nft names it, each named set by its element count (interval sets by
//! presence) and each verdict map entry by entry.
//!
//! `nft -j list table` did this before, and cost what nft spends decoding every rule in
//! userspace: 67 ms for world L's table, 125 ms with 100 ClusterNetworkPolicies (three
//! times the rules), on every reconcile and before a kept restart turns healthy. The
//! kernel's own dumps cost a few milliseconds. Anonymous sets (a rule's `{ 80, 443 }`) are
//! part of their rule, as nft prints them, and are not listed.
//!
//! Every reader here takes one message of a dump and never panics on what it reads: a
//! malformed message is left out, as if the kernel had not listed the object, which reads
//! as drift and is repaired.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::counters::comment;
use super::netlink::{
    attribute, attributes, be32, c_string, push_attr, text, NftSocket, AF_UNSPEC, NFT_MSG_GETCHAIN,
    NFT_MSG_GETRULE, NFT_MSG_GETSET, NFT_MSG_GETSETELEM, NFT_MSG_GETTABLE, NFT_MSG_NEWCHAIN,
    NFT_MSG_NEWRULE, NFT_MSG_NEWSET, NFT_MSG_NEWSETELEM, NFT_MSG_NEWTABLE,
};
use super::{exact, DataplaneError, Fingerprint};

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_LOOKUP_SET: u16 = 1;
const NFTA_LOOKUP_DREG: u16 = 3;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;

const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_MAP: u32 = 0x8;
/// The register a verdict is loaded into: a lookup into it is a verdict map.
const NFT_REG_VERDICT: u32 = 0;

/// Reads table `table` of `family` (`NFPROTO_*`) into `fp`.
pub fn read_table(
    socket: &mut NftSocket,
    family: u8,
    table: &str,
    fp: &mut Fingerprint,
) -> Result<(), DataplaneError> {
    let what = |objects: &str| format!("the {objects} of table {table}");
    // The table attribute is numbered 1 for chains, rules and sets alike. Chains are listed
    // for the whole family: `fold` skips other tables' by name.
    let mut by_table = Vec::new();
    push_attr(&mut by_table, NFTA_RULE_TABLE, &c_string(table));
    let chains = socket.dump(&what("chains"), NFT_MSG_GETCHAIN, family, &by_table)?;
    let rules = socket.dump(&what("rules"), NFT_MSG_GETRULE, family, &by_table)?;
    let mut sets = Vec::new();
    for message in socket.dump(&what("sets"), NFT_MSG_GETSET, family, &by_table)? {
        let Some((name, flags)) = set_of(&message, table) else {
            continue;
        };
        let mut attrs = Vec::new();
        push_attr(&mut attrs, NFTA_SET_ELEM_LIST_TABLE, &c_string(table));
        push_attr(&mut attrs, NFTA_SET_ELEM_LIST_SET, &c_string(&name));
        let what = format!("the elements of set {name} of table {table}");
        let elements = socket.dump(&what, NFT_MSG_GETSETELEM, family, &attrs)?;
        sets.push(NamedSet {
            name,
            flags,
            elements,
        });
    }
    fold(fp, table, &chains, &rules, sets);
    Ok(())
}

/// Reads every table named `table` of the `families` (`NFPROTO_*`) into `fold`: the
/// tables, from one listing of them all, then each table's sets (the anonymous ones too)
/// with their elements, chains and rules. Returns the families that have such a table.
pub fn read_exact(
    socket: &mut NftSocket,
    families: &[u8],
    table: &str,
    fold: &mut exact::Fold,
) -> Result<Vec<u8>, DataplaneError> {
    let mut found = Vec::new();
    socket.dump_each("the tables", NFT_MSG_GETTABLE, AF_UNSPEC, &[], |message| {
        // nfgenmsg's first byte, after the 16 of nlmsghdr, is the table's family.
        let family = message.get(16).copied().filter(|f| families.contains(f));
        if let (Some(family), Some(attrs)) = (family, of_table(&message, NFTA_TABLE_NAME, table)) {
            fold.message(NFT_MSG_NEWTABLE, family, attrs);
            found.push(family);
        }
    })?;
    for family in &found {
        read_contents(socket, *family, table, fold)?;
    }
    Ok(found)
}

/// Table `table` of `family`'s sets (the anonymous ones too) with their elements, then its
/// chains and rules, into `fold`.
fn read_contents(
    socket: &mut NftSocket,
    family: u8,
    table: &str,
    fold: &mut exact::Fold,
) -> Result<(), DataplaneError> {
    let what = |objects: &str| format!("the {objects} of table {table}");
    let of = (family, table);
    let mut by_table = Vec::new();
    push_attr(&mut by_table, NFTA_RULE_TABLE, &c_string(table));
    // The sets before the rules: a rule's anonymous set is compared by what it holds.
    let sets = socket.dump(&what("sets"), NFT_MSG_GETSET, family, &by_table)?;
    for attrs in sets
        .iter()
        .filter_map(|m| of_table(m, NFTA_SET_TABLE, table))
    {
        fold.message(NFT_MSG_NEWSET, family, attrs);
        let Some(name) = attribute(attrs, NFTA_SET_NAME).and_then(text) else {
            continue;
        };
        let mut request = Vec::new();
        push_attr(&mut request, NFTA_SET_ELEM_LIST_TABLE, &c_string(table));
        push_attr(&mut request, NFTA_SET_ELEM_LIST_SET, &c_string(name));
        let what = format!("the elements of set {name} of table {table}");
        let elements = (
            NFT_MSG_GETSETELEM,
            NFT_MSG_NEWSETELEM,
            NFTA_SET_ELEM_LIST_TABLE,
        );
        fold_dump(socket, fold, &what, of, elements, &request)?;
    }
    let chains = (NFT_MSG_GETCHAIN, NFT_MSG_NEWCHAIN, NFTA_CHAIN_TABLE);
    fold_dump(socket, fold, &what("chains"), of, chains, &by_table)?;
    let rules = (NFT_MSG_GETRULE, NFT_MSG_NEWRULE, NFTA_RULE_TABLE);
    fold_dump(socket, fold, &what("rules"), of, rules, &by_table)
}

/// One dump (`get`, with `request`), each of its messages of table `of` (its table in
/// attribute `table_attr`) folded as the object `new` as it arrives: the rules and elements
/// of a large table are never held whole.
fn fold_dump(
    socket: &mut NftSocket,
    fold: &mut exact::Fold,
    what: &str,
    (family, table): (u8, &str),
    (get, new, table_attr): (u16, u16, u16),
    request: &[u8],
) -> Result<(), DataplaneError> {
    socket.dump_each(what, get, family, request, |message| {
        if let Some(attrs) = of_table(&message, table_attr, table) {
            fold.message(new, family, attrs);
        }
    })
}

/// A named set as listed: its flags and the messages of its element dump.
pub struct NamedSet {
    pub name: String,
    pub flags: u32,
    pub elements: Vec<Vec<u8>>,
}

/// Adds what the dumps of `table` listed to `fp`.
pub fn fold(
    fp: &mut Fingerprint,
    table: &str,
    chains: &[Vec<u8>],
    rules: &[Vec<u8>],
    sets: Vec<NamedSet>,
) {
    for name in chains.iter().filter_map(|m| chain_of(m, table)) {
        fp.chains.entry(name).or_default();
    }
    for (chain, print) in rules.iter().filter_map(|m| rule_of(m, table)) {
        fp.chains.entry(chain).or_default().push(print);
    }
    for set in sets {
        if set.flags & NFT_SET_MAP != 0 {
            let entries = fp.maps.entry(set.name).or_default();
            entries.extend(set.elements.iter().flat_map(|m| map_entries(m)));
        } else if set.flags & NFT_SET_INTERVAL != 0 {
            fp.sets.insert(set.name, None);
        } else {
            let count = set.elements.iter().map(|m| elements(m).count()).sum();
            fp.sets.insert(set.name, Some(count));
        }
    }
}

/// The attributes of a message (after nlmsghdr and nfgenmsg) whose `table_attr` names
/// `table`.
fn of_table<'a>(message: &'a [u8], table_attr: u16, table: &str) -> Option<&'a [u8]> {
    let attrs = message.get(20..)?;
    (text(attribute(attrs, table_attr)?)? == table).then_some(attrs)
}

/// A chain's name.
pub fn chain_of(message: &[u8], table: &str) -> Option<String> {
    let attrs = of_table(message, NFTA_CHAIN_TABLE, table)?;
    text(attribute(attrs, NFTA_CHAIN_NAME)?).map(str::to_string)
}

/// A rule's chain, and how it reads: its comment, else its last expression as nft names it
/// (`accept`, `drop`, `return`, `goto`, `log`, `vmap @map`, …).
pub fn rule_of(message: &[u8], table: &str) -> Option<(String, String)> {
    let attrs = of_table(message, NFTA_RULE_TABLE, table)?;
    let chain = text(attribute(attrs, NFTA_RULE_CHAIN)?)?.to_string();
    if let Some(comment) = attribute(attrs, NFTA_RULE_USERDATA).and_then(comment) {
        return Some((chain, comment));
    }
    let last = attribute(attrs, NFTA_RULE_EXPRESSIONS).and_then(|exprs| {
        attributes(exprs)
            .filter(|(kind, _)| *kind == NFTA_LIST_ELEM)
            .last()
            .map(|(_, expr)| expression(expr))
    });
    Some((chain, last.unwrap_or_else(|| "?".to_string())))
}

/// An expression as nft's JSON names it, as far as a fingerprint tells rules apart.
fn expression(expr: &[u8]) -> String {
    let name = attribute(expr, NFTA_EXPR_NAME)
        .and_then(text)
        .unwrap_or("?");
    let data = attribute(expr, NFTA_EXPR_DATA).unwrap_or_default();
    match name {
        "immediate" if attribute(data, NFTA_IMMEDIATE_DREG).and_then(be32) == Some(0) => {
            let verdict = attribute(data, NFTA_IMMEDIATE_DATA)
                .and_then(|d| attribute(d, NFTA_DATA_VERDICT))
                .and_then(verdict);
            verdict.map_or_else(|| "?".to_string(), |(code, _)| code.to_string())
        }
        "lookup" if attribute(data, NFTA_LOOKUP_DREG).and_then(be32) == Some(NFT_REG_VERDICT) => {
            let set = attribute(data, NFTA_LOOKUP_SET)
                .and_then(text)
                .unwrap_or("?");
            format!("vmap @{set}")
        }
        "lookup" | "cmp" | "range" => "match".to_string(),
        other => other.to_string(),
    }
}

/// A verdict (`NFTA_DATA_VERDICT`'s content): its name, and the chain of a jump or goto.
fn verdict(data: &[u8]) -> Option<(&'static str, Option<&str>)> {
    let code = be32(attribute(data, NFTA_VERDICT_CODE)?)? as i32;
    let name = match code {
        0 => "drop",
        1 => "accept",
        -1 => "continue",
        -2 => "break",
        -3 => "jump",
        -4 => "goto",
        -5 => "return",
        _ => "?",
    };
    Some((name, attribute(data, NFTA_VERDICT_CHAIN).and_then(text)))
}

/// A named set's name and flags (`NFT_SET_*`); `None` for an anonymous one.
pub fn set_of(message: &[u8], table: &str) -> Option<(String, u32)> {
    let attrs = of_table(message, NFTA_SET_TABLE, table)?;
    let flags = attribute(attrs, NFTA_SET_FLAGS).and_then(be32).unwrap_or(0);
    let name = text(attribute(attrs, NFTA_SET_NAME)?)?;
    (flags & NFT_SET_ANONYMOUS == 0).then(|| (name.to_string(), flags))
}

/// The elements (`NFTA_LIST_ELEM` contents) of one message of a set's element dump.
pub fn elements(message: &[u8]) -> impl Iterator<Item = &[u8]> {
    let list = message
        .get(20..)
        .and_then(|attrs| attribute(attrs, NFTA_SET_ELEM_LIST_ELEMENTS))
        .unwrap_or_default();
    attributes(list)
        .filter(|(kind, _)| *kind == NFTA_LIST_ELEM)
        .map(|(_, elem)| elem)
}

/// A verdict map's entries in one message: address → the chain it jumps to (or the name of
/// another verdict, which no map of podwall's holds).
pub fn map_entries(message: &[u8]) -> impl Iterator<Item = (IpAddr, String)> + '_ {
    elements(message).filter_map(|elem| {
        let key = attribute(elem, NFTA_SET_ELEM_KEY).and_then(|k| attribute(k, NFTA_DATA_VALUE))?;
        let addr = match key.len() {
            4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(key).ok()?)),
            16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(key).ok()?)),
            _ => return None,
        };
        let (name, chain) = attribute(elem, NFTA_SET_ELEM_DATA)
            .and_then(|d| attribute(d, NFTA_DATA_VERDICT))
            .and_then(verdict)?;
        Some((addr, chain.unwrap_or(name).to_string()))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::dataplane::render::tests::world_desired;

    /// Each message the kernel's dumps gave for both tables after loading
    /// `testdata/compiled_world.nft`, by file name (`<family>-<kind>[-<set>]-<n>.bin`).
    fn golden_dumps() -> BTreeMap<String, Vec<u8>> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/netlink");
        (std::fs::read_dir(dir).unwrap())
            .map(|entry| entry.unwrap().path())
            .filter(|path| {
                !path
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("crash-")
            })
            .map(|path| {
                let name = path.file_name().unwrap().to_str().unwrap().to_string();
                (name, std::fs::read(&path).unwrap())
            })
            .collect()
    }

    fn read_golden(dumps: &BTreeMap<String, Vec<u8>>) -> Fingerprint {
        let mut fp = Fingerprint::default();
        for family in ["inet", "bridge"] {
            let of = |kind: &str| -> Vec<Vec<u8>> {
                let prefix = format!("{family}-{kind}-");
                (dumps.iter())
                    .filter(|(name, _)| name.starts_with(&prefix))
                    .map(|(_, message)| message.clone())
                    .collect()
            };
            let sets = (of("set").iter())
                .filter_map(|m| set_of(m, "podwall"))
                .map(|(name, flags)| NamedSet {
                    elements: of(&format!("elements-{name}")),
                    name,
                    flags,
                })
                .collect();
            fold(&mut fp, "podwall", &of("chain"), &of("rule"), sets);
        }
        fp
    }

    #[test]
    fn the_kernels_listing_of_the_golden_table_reads_back_as_its_fingerprint() {
        let fp = read_golden(&golden_dumps());
        let expected = Fingerprint::of(&world_desired());
        assert_eq!(fp.differences(&expected), Vec::<String>::new());
        assert_eq!(fp, expected);
    }

    #[test]
    fn what_another_table_lists_is_left_out() {
        let dumps = golden_dumps();
        let rule = &dumps["inet-rule-00.bin"];
        assert!(rule_of(rule, "podwall").is_some());
        assert_eq!(rule_of(rule, "filter"), None);
        let set = &dumps["inet-set-00.bin"];
        assert_eq!(set_of(set, "filter"), None);
    }

    #[test]
    fn a_drifted_listing_reads_back_as_different() {
        let expected = Fingerprint::of(&world_desired());
        let mut dumps = golden_dumps();
        // A rule flushed, an element deleted, a dispatch entry gone: each shows.
        for gone in [
            "inet-rule-05.bin",
            "inet-elements-hairpin4-00.bin",
            "inet-elements-ingress4-00.bin",
        ] {
            let mut drifted = dumps.clone();
            drifted.remove(gone);
            let diff = read_golden(&drifted).differences(&expected);
            assert!(!diff.is_empty(), "without {gone}");
        }
        // Truncated messages read as objects missing, never as a panic.
        for message in dumps.values_mut() {
            message.truncate(message.len() / 2);
        }
        assert!(!read_golden(&dumps).differences(&expected).is_empty());
    }
}
