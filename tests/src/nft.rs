//! Reading the node's `inet podwall` table back from the kernel, to check what the daemon
//! committed: its chains and the elements of its verdict maps.
//!
//! The JSON output of `nft -j` is parsed with serde_json; verdicts are rendered the way
//! `nft` prints them (`jump in_0123456789abcdef`, `accept`), which keeps assertions readable.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::cmd::Output;
use crate::netns::TestNetns;

/// podwall's table: family and name.
pub const FAMILY: &str = "inet";
pub const TABLE: &str = "podwall";

/// The verdict maps keyed by pod IP.
pub const POD_MAPS: [&str; 4] = ["ingress4", "egress4", "ingress6", "egress6"];

/// What the table holds, as far as the tests look at it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Chain names, in the order nft lists them.
    pub chains: Vec<String>,
    /// Map name → (key, value) elements; keys and verdicts as text (`10.200.1.2`, `jump open`).
    /// Sorted: the kernel's listing order of a hash set is not stable, the tests' views are.
    pub maps: BTreeMap<String, Vec<(String, String)>>,
    /// Set name → element keys as text, sorted.
    pub sets: BTreeMap<String, Vec<String>>,
    /// Chain name → its rules in order, each as the JSON of its expressions (handles left
    /// out, so a rule put back compares equal to the original).
    pub rules: BTreeMap<String, Vec<String>>,
}

impl Ruleset {
    /// Parse the output of `nft -j list table inet podwall`.
    pub fn from_json(text: &str) -> Result<Self> {
        let doc: Value = serde_json::from_str(text).context("nft -j output is not JSON")?;
        let mut rules = Ruleset::default();
        for item in doc["nftables"].as_array().into_iter().flatten() {
            if let Some(chain) = item.get("chain") {
                rules
                    .chains
                    .extend(chain["name"].as_str().map(str::to_string));
            } else if let Some(rule) = item.get("rule") {
                let chain = rule["chain"].as_str().unwrap_or_default().to_string();
                let mut expr = rule["expr"].clone();
                strip_volatile(&mut expr);
                rules.rules.entry(chain).or_default().push(expr.to_string());
            } else if let Some(map) = item.get("map") {
                let name = map["name"].as_str().unwrap_or_default().to_string();
                let mut elems: Vec<_> = map["elem"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| {
                        let pair = e.as_array()?;
                        Some((key_text(pair.first()?), verdict_text(pair.get(1)?)))
                    })
                    .collect();
                elems.sort();
                rules.maps.insert(name, elems);
            } else if let Some(set) = item.get("set") {
                let name = set["name"].as_str().unwrap_or_default().to_string();
                let mut elems: Vec<_> = set["elem"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(key_text)
                    .collect();
                elems.sort();
                rules.sets.insert(name, elems);
            }
        }
        Ok(rules)
    }

    /// The chains the compiler made for local pods ([`is_pod_chain`]); not `forward`,
    /// `open` or `quarantine`.
    pub fn pod_chains(&self) -> Vec<&str> {
        self.chains
            .iter()
            .map(String::as_str)
            .filter(|c| is_pod_chain(c))
            .collect()
    }

    /// The rules of a chain (empty when it has none or does not exist).
    pub fn chain_rules(&self, name: &str) -> &[String] {
        self.rules.get(name).map(Vec::as_slice).unwrap_or_default()
    }

    pub fn has_chain(&self, name: &str) -> bool {
        self.chains.iter().any(|c| c == name)
    }

    /// The elements of a map (empty when the map does not exist).
    pub fn map(&self, name: &str) -> &[(String, String)] {
        self.maps.get(name).map(Vec::as_slice).unwrap_or_default()
    }

    /// The verdict a map gives `ip`, e.g. `jump in_0123456789abcdef`.
    pub fn verdict(&self, map: &str, ip: IpAddr) -> Option<&str> {
        let key = ip.to_string();
        self.map(map)
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The chain a map jumps to for `ip`, when the verdict is `jump` or `goto`.
    pub fn target(&self, map: &str, ip: IpAddr) -> Option<&str> {
        self.verdict(map, ip)?
            .strip_prefix("jump ")
            .or_else(|| self.verdict(map, ip)?.strip_prefix("goto "))
    }

    /// Does any pod map mention `ip`?
    pub fn mentions(&self, ip: IpAddr) -> bool {
        POD_MAPS.iter().any(|m| self.verdict(m, ip).is_some())
    }

    /// Does any element of a pod map jump or go to `chain`?
    pub fn is_target(&self, chain: &str) -> bool {
        POD_MAPS
            .iter()
            .flat_map(|m| self.map(m))
            .any(|(_, verdict)| {
                verdict
                    .strip_prefix("jump ")
                    .or_else(|| verdict.strip_prefix("goto "))
                    == Some(chain)
            })
    }
}

/// Is `name` a chain the compiler made for the local pods that one set of policies selects in
/// one direction: `in_` or `out_` and 16 hex digits (`podwall_policy::ruleset::names::chain`)?
/// Pods the same policies select share it; it goes when the last of them does.
pub fn is_pod_chain(name: &str) -> bool {
    name.strip_prefix("in_")
        .or_else(|| name.strip_prefix("out_"))
        .is_some_and(|hash| hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `10.0.0.1`, `10.0.0.0/24`, or the JSON text of anything fancier.
fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Object(o) if o.contains_key("prefix") => {
            format!("{}/{}", key_text(&o["prefix"]["addr"]), o["prefix"]["len"])
        }
        // An element with options (timeout, comment) wraps its key: {"elem": {"val": …}}.
        Value::Object(o) if o.contains_key("elem") => key_text(&o["elem"]["val"]),
        Value::Object(o) if o.contains_key("range") => {
            let r = o["range"].as_array().cloned().unwrap_or_default();
            format!(
                "{}-{}",
                key_text(r.first().unwrap_or(&Value::Null)),
                key_text(r.get(1).unwrap_or(&Value::Null))
            )
        }
        Value::Object(o) if o.contains_key("concat") => o["concat"]
            .as_array()
            .into_iter()
            .flatten()
            .map(key_text)
            .collect::<Vec<_>>()
            .join(" . "),
        other => other.to_string(),
    }
}

/// `{"jump":{"target":"x"}}` → `jump x`; `{"accept":null}` → `accept`.
fn verdict_text(value: &Value) -> String {
    match value {
        Value::Object(o) if o.len() == 1 => {
            let (kind, arg) = o.iter().next().expect("one entry");
            match arg["target"].as_str() {
                Some(target) => format!("{kind} {target}"),
                None => kind.clone(),
            }
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Is `inet podwall` present in the namespace?
pub fn table_exists(ns: &TestNetns) -> Result<bool> {
    Ok(table_handles(ns)?.contains_key(FAMILY))
}

/// The kernel's handle of each of podwall's tables, by family: a table deleted and created
/// again gets a new one.
pub fn table_handles(ns: &TestNetns) -> Result<BTreeMap<String, u64>> {
    let out = ns
        .exec(&["nft", "-j", "list", "tables"])
        .and_then(Output::ok)?;
    let doc: Value = serde_json::from_str(&out.stdout).context("nft -j list tables is not JSON")?;
    Ok(doc["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item.get("table"))
        .filter(|t| t["name"] == TABLE)
        .filter_map(|t| Some((t["family"].as_str()?.to_string(), t["handle"].as_u64()?)))
        .collect())
}

/// The table, or `None` when the daemon has not created it.
pub fn read_table(ns: &TestNetns) -> Result<Option<Ruleset>> {
    // Asking for the list of tables first tells "absent" from "nft failed" without
    // interpreting nft's error text.
    if !table_exists(ns)? {
        return Ok(None);
    }
    let out = ns
        .exec(&["nft", "-j", "list", "table", FAMILY, TABLE])
        .and_then(Output::ok)?;
    Ruleset::from_json(&out.stdout).map(Some)
}

/// `nft list table inet podwall` as nft prints it; a note when absent.
pub fn table_text(ns: &TestNetns) -> Result<String> {
    if !table_exists(ns)? {
        return Ok(format!("(no table {FAMILY} {TABLE})\n"));
    }
    Ok(ns
        .exec(&["nft", "list", "table", FAMILY, TABLE])
        .and_then(Output::ok)?
        .stdout)
}

/// Every table of the namespace as `nft -j list ruleset` prints it, each object under its
/// kind, family and name, a chain's rules in order; without handles, counters' values and
/// the order of objects of different chains, which only say in which order objects were
/// made and what traffic passed. Two namespaces whose listings are equal hold the same rules.
pub fn listing(ns: &TestNetns) -> Result<BTreeMap<String, Vec<String>>> {
    let out = ns
        .exec(&["nft", "-j", "list", "ruleset"])
        .and_then(Output::ok)?;
    let mut doc: Value =
        serde_json::from_str(&out.stdout).context("nft -j list ruleset is not JSON")?;
    strip_volatile(&mut doc);
    let mut objects: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for object in doc["nftables"].as_array().into_iter().flatten() {
        let Some((kind, body)) = object.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        let name = match kind.as_str() {
            "rule" => &body["chain"],
            _ => &body["name"],
        };
        let key = format!("{kind} {} {} {name}", body["family"], body["table"]);
        objects.entry(key).or_default().push(body.to_string());
    }
    Ok(objects)
}

/// Without what says when and in which order objects were made, or how much traffic they
/// saw: handles, nft's metainfo, counters' values (a `counter` stays, its counts do not).
fn strip_volatile(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("handle");
            map.remove("metainfo");
            if let Some(counter) = map.get_mut("counter") {
                *counter = Value::Null;
            }
            map.values_mut().for_each(strip_volatile);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_volatile),
        _ => {}
    }
}

/// The objects that differ between two listings, each with both versions.
pub fn listing_differences(
    a: &BTreeMap<String, Vec<String>>,
    b: &BTreeMap<String, Vec<String>>,
) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}:\n  first:  {:?}\n  second: {:?}", a.get(k), b.get(k)))
        .collect()
}

/// podwall's policy table taken over by a socket of the test: the kernel refuses every
/// change to a table that a socket owns to any other socket (`EPERM`), podwalld's whole-table
/// swaps, structural batches and element changes alike, until the owner closes its socket
/// (the value is dropped), when the kernel deletes the table.
pub struct OwnedTable(#[allow(dead_code)] podwalld::dataplane::netlink::NftSocket);

impl OwnedTable {
    /// Delete the daemon's table in `ns` and create an empty one of its name, owned.
    pub fn take_over(ns: &TestNetns) -> Result<Self> {
        use podwalld::dataplane::batch::{Batch, Sink};
        use podwalld::dataplane::netlink::NftSocket;
        let mut socket = ns
            .run_in(NftSocket::open)
            .context("opening a netlink socket")?;
        // NFTA_TABLE_NAME, and for the new table NFTA_TABLE_FLAGS = NFT_TABLE_F_OWNER.
        let name = attribute(1, b"podwall\0");
        let owned = [name.clone(), attribute(2, &2u32.to_be_bytes())].concat();
        let (new_table, delete_table, create, inet) = (0, 2, 0x400, 1);
        let mut batch = Batch::default();
        batch.push(delete_table, 0, inet, name, "delete the table".into());
        batch.push(new_table, create, inet, owned, "create it owned".into());
        socket.commit(&batch).context("taking the table over")?;
        Ok(Self(socket))
    }
}

/// A netlink attribute: length, type, payload, padded to 4 bytes.
fn attribute(kind: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(
        u16::try_from(4 + payload.len())
            .unwrap_or(u16::MAX)
            .to_ne_bytes(),
    );
    out.extend(kind.to_ne_bytes());
    out.extend(payload);
    out.resize(out.len().next_multiple_of(4), 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use podwall_policy::ruleset::names;
    use podwall_policy::Direction;

    const SAMPLE: &str = r#"{"nftables": [
      {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
      {"table": {"family": "inet", "name": "podwall", "handle": 1}},
      {"chain": {"family": "inet", "table": "podwall", "name": "forward", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
      {"chain": {"family": "inet", "table": "podwall", "name": "in_00c0ffee12345678", "handle": 2}},
      {"chain": {"family": "inet", "table": "podwall", "name": "open", "handle": 6}},
      {"chain": {"family": "inet", "table": "podwall", "name": "quarantine", "handle": 7}},
      {"rule": {"family": "inet", "table": "podwall", "chain": "in_00c0ffee12345678", "handle": 9, "expr": [{"drop": null}]}},
      {"map": {"family": "inet", "name": "ingress4", "table": "podwall", "type": "ipv4_addr", "handle": 3, "map": "verdict",
               "elem": [["10.200.1.2", {"jump": {"target": "in_00c0ffee12345678"}}], [{"elem": {"val": "10.200.1.3", "comment": "x"}}, {"accept": null}]]}},
      {"map": {"family": "inet", "name": "egress4", "table": "podwall", "type": "ipv4_addr", "handle": 4, "map": "verdict"}},
      {"set": {"family": "inet", "name": "peers", "table": "podwall", "type": "ipv4_addr", "handle": 5, "flags": ["interval"],
               "elem": [{"prefix": {"addr": "10.0.0.0", "len": 8}}, "192.168.1.1"]}}
    ]}"#;

    #[test]
    fn chains_maps_and_sets_are_read() {
        let r = Ruleset::from_json(SAMPLE).unwrap();
        assert_eq!(
            r.chains,
            vec!["forward", "in_00c0ffee12345678", "open", "quarantine"]
        );
        assert_eq!(r.pod_chains(), vec!["in_00c0ffee12345678"]);
        let ip = "10.200.1.2".parse().unwrap();
        assert_eq!(r.verdict("ingress4", ip), Some("jump in_00c0ffee12345678"));
        assert_eq!(r.target("ingress4", ip), Some("in_00c0ffee12345678"));
        assert!(r.is_target("in_00c0ffee12345678") && !r.is_target("open"));
        assert_eq!(
            r.verdict("ingress4", "10.200.1.3".parse().unwrap()),
            Some("accept")
        );
        assert!(r.map("egress4").is_empty());
        assert!(r.map("nope").is_empty());
        assert_eq!(r.sets["peers"], vec!["10.0.0.0/8", "192.168.1.1"]);
        assert_eq!(r.chain_rules("in_00c0ffee12345678"), [r#"[{"drop":null}]"#]);
        assert!(r.chain_rules("forward").is_empty());
        assert!(r.mentions(ip));
    }

    #[test]
    fn pod_chains_are_the_compilers_policy_chains() {
        // The names the compiler gives, so a rename there fails here rather than leaving
        // `pod_chains` empty and every "no pod chains left" assertion vacuous.
        for direction in [Direction::Ingress, Direction::Egress] {
            let name = names::chain(direction, "shop/db-from-api");
            assert!(is_pod_chain(&name), "{name}");
        }
        for other in [
            "forward",
            "open",
            "quarantine",
            "in_",
            "in_0123",
            "out_0123456789abcdeg",
            "pod-540c4ae81be81b20-in",
        ] {
            assert!(!is_pod_chain(other), "{other}");
        }
    }
}
