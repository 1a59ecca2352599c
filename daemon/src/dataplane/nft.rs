//! `NftKernel`: commits batches with `nft -f -` (one script = one transaction) and reads the
//! table back with `nft -j`, whose JSON is typed (no text parsing). `nft` is a separate GPL
//! program, run, not linked.
//!
//! Every `nft` call pays for starting the program and its cache fetch (DESIGN.md: ~9 ms,
//! growing with the ruleset), so batches of element changes skip it and go over netlink.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::names::{FAMILY, TABLE};
use super::netlink::{ElementOp, ElementSocket};
use super::render::{render, render_replace};
use super::{Batch, DataplaneError, Hook, Kernel, MapName, Op, Rule, Table};

/// The production kernel, acting in the daemon's network namespace. Batches that only
/// change map elements (the hot path once pods share chains) go over netlink; anything that
/// creates or deletes chains goes through `nft -f`.
pub struct NftKernel {
    program: PathBuf,
    elements: Option<ElementSocket>,
}

impl Default for NftKernel {
    fn default() -> Self {
        Self::new("nft")
    }
}

impl NftKernel {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            elements: None,
        }
    }

    /// Commit a batch through `nft -f`, whatever it holds (benchmarks compare the two paths).
    pub fn apply_with_nft(&mut self, batch: &Batch) -> Result<(), DataplaneError> {
        self.commit(&render(batch), batch.len())
    }

    /// Remove everything podwall put in the kernel: it is all in one table. Returns whether
    /// there was a table to remove.
    pub fn remove_table(&mut self) -> Result<bool, DataplaneError> {
        if !self.table_exists()? {
            return Ok(false);
        }
        self.commit(&format!("delete table {FAMILY} {TABLE}\n"), 1)?;
        Ok(true)
    }

    // Listing a missing table is an error whose text we would have to parse; listing the
    // tables first tells absence apart from failure.
    fn table_exists(&self) -> Result<bool, DataplaneError> {
        let (ok, tables, stderr) = self.run(&["-j", "list", "tables", FAMILY], None)?;
        if !ok {
            return Err(DataplaneError::Dump(stderr));
        }
        Ok(has_our_table(&parse_json(&tables)?))
    }

    fn apply_elements(&mut self, ops: &[ElementOp]) -> Result<(), DataplaneError> {
        let socket = match &mut self.elements {
            Some(socket) => socket,
            None => self.elements.insert(ElementSocket::open()?),
        };
        socket.commit(ops)
    }

    fn run(
        &self,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<(bool, String, String), DataplaneError> {
        let exec_err = |source| DataplaneError::Exec {
            program: self.program.display().to_string(),
            source,
        };
        let mut child = Command::new(&self.program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(exec_err)?;
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().expect("stdin was piped");
            pipe.write_all(text.as_bytes()).map_err(exec_err)?;
        }
        let out = child.wait_with_output().map_err(exec_err)?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }

    fn commit(&self, script: &str, ops: usize) -> Result<(), DataplaneError> {
        let (ok, _, stderr) = self.run(&["-f", "-"], Some(script))?;
        if ok {
            Ok(())
        } else {
            Err(DataplaneError::Rejected {
                ops,
                detail: stderr,
            })
        }
    }
}

impl Kernel for NftKernel {
    fn apply(&mut self, batch: &Batch) -> Result<(), DataplaneError> {
        if batch.is_empty() {
            return Ok(());
        }
        match element_ops(batch) {
            Some(ops) => self.apply_elements(&ops),
            None => self.apply_with_nft(batch),
        }
    }

    fn replace(&mut self, desired: &Table) -> Result<(), DataplaneError> {
        self.commit(&render_replace(desired), 1)
    }

    fn dump_table(&mut self) -> Result<Option<Table>, DataplaneError> {
        if !self.table_exists()? {
            return Ok(None);
        }
        let (ok, text, stderr) = self.run(&["-j", "list", "table", FAMILY, TABLE], None)?;
        if !ok {
            return Err(DataplaneError::Dump(stderr));
        }
        table_from_json(&parse_json(&text)?).map(Some)
    }
}

/// The batch as element changes, if that is all it holds.
fn element_ops(batch: &Batch) -> Option<Vec<ElementOp>> {
    batch
        .ops
        .iter()
        .map(|op| match op {
            Op::AddElement { map, addr, chain } => Some(ElementOp::Add {
                map: *map,
                addr: *addr,
                chain: chain.clone(),
            }),
            Op::DeleteElement { map, addr } => Some(ElementOp::Delete {
                map: *map,
                addr: *addr,
            }),
            _ => None,
        })
        .collect()
}

fn parse_json(text: &str) -> Result<Value, DataplaneError> {
    serde_json::from_str(text)
        .map_err(|e| DataplaneError::Dump(format!("nft printed invalid JSON: {e}")))
}

fn objects(doc: &Value) -> impl Iterator<Item = &Value> {
    doc["nftables"].as_array().into_iter().flatten()
}

fn has_our_table(doc: &Value) -> bool {
    objects(doc).any(|o| o["table"]["family"] == FAMILY && o["table"]["name"] == TABLE)
}

/// The typed table from `nft -j list table inet podwall`.
pub fn table_from_json(doc: &Value) -> Result<Table, DataplaneError> {
    let mut table = Table::default();
    for obj in objects(doc) {
        if let Some(chain) = obj.get("chain") {
            let name = str_field(chain, "name")?;
            let hook = match chain.get("hook").and_then(Value::as_str) {
                Some("forward") => Some(Hook::Forward),
                Some(other) => {
                    return Err(DataplaneError::Dump(format!(
                        "chain {name} hooks {other}, not ours"
                    )))
                }
                None => None,
            };
            table.chains.entry(name.to_string()).or_default().hook = hook;
        } else if let Some(map) = obj.get("map") {
            let Some(name) = MapName::from_name(str_field(map, "name")?) else {
                continue;
            };
            let elements = table.maps.entry(name).or_default();
            for elem in map
                .get("elem")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let (addr, chain) = map_element(elem)?;
                elements.insert(addr, chain);
            }
        } else if let Some(rule) = obj.get("rule") {
            let chain = str_field(rule, "chain")?;
            table
                .chains
                .entry(chain.to_string())
                .or_default()
                .rules
                .push(rule_from_expr(&rule["expr"]));
        }
    }
    Ok(table)
}

fn str_field<'a>(obj: &'a Value, key: &str) -> Result<&'a str, DataplaneError> {
    obj.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| DataplaneError::Dump(format!("object without {key}: {obj}")))
}

/// `["10.0.0.2", {"jump": {"target": "pod-…-in"}}]`
fn map_element(elem: &Value) -> Result<(IpAddr, String), DataplaneError> {
    let bad = || DataplaneError::Dump(format!("unexpected map element {elem}"));
    let pair = elem.as_array().filter(|p| p.len() == 2).ok_or_else(bad)?;
    let addr: IpAddr = pair[0]
        .as_str()
        .and_then(|a| a.parse().ok())
        .ok_or_else(bad)?;
    let chain = pair[1]["jump"]["target"].as_str().ok_or_else(bad)?;
    Ok((addr, chain.to_string()))
}

/// Recognise the few rule shapes podwall writes; anything else is drift.
fn rule_from_expr(expr: &Value) -> Rule {
    let unrecognized = || Rule::Unrecognized(expr.to_string());
    let Some(stmts) = expr.as_array() else {
        return unrecognized();
    };
    match stmts.as_slice() {
        [one] if one.get("accept").is_some() => Rule::Accept,
        [one] if one.get("return").is_some() => Rule::Return,
        [m, verdict]
            if verdict.get("accept").is_some()
                && m["match"]["left"]["ct"]["key"] == "state"
                && m["match"]["right"] == serde_json::json!(["established", "related"]) =>
        {
            Rule::AcceptEstablished
        }
        [one] if one.get("vmap").is_some() => {
            let vmap = &one["vmap"];
            let data = vmap["data"].as_str().unwrap_or("");
            let field = vmap["key"]["payload"]["field"].as_str().unwrap_or("");
            match MapName::from_name(data.trim_start_matches('@')) {
                Some(map) if field == expected_field(map) => Rule::Dispatch(map),
                _ => unrecognized(),
            }
        }
        _ => unrecognized(),
    }
}

fn expected_field(map: MapName) -> &'static str {
    match map {
        MapName::Ingress4 | MapName::Ingress6 => "daddr",
        MapName::Egress4 | MapName::Egress6 => "saddr",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::Chain;

    #[test]
    fn dump_json_becomes_the_table_we_rendered() {
        // What nft 1.0.6 prints for a table holding one pod (trimmed to the fields we read).
        let doc: Value = serde_json::from_str(include_str!("testdata/one_pod.json")).unwrap();
        let table = table_from_json(&doc).unwrap();
        let mut expected = Table::base();
        expected.chains.insert(
            "pod-1-in".into(),
            Chain {
                hook: None,
                rules: vec![Rule::Accept],
            },
        );
        expected
            .maps
            .get_mut(&MapName::Ingress4)
            .unwrap()
            .insert("10.0.0.2".parse().unwrap(), "pod-1-in".into());
        assert_eq!(table, expected);
    }

    #[test]
    fn foreign_rules_are_drift() {
        let rule = rule_from_expr(
            &serde_json::json!([{"counter": {"packets": 0, "bytes": 0}}, {"drop": null}]),
        );
        assert!(matches!(rule, Rule::Unrecognized(_)));
        let swapped = rule_from_expr(
            &serde_json::json!([{"vmap": {"key": {"payload": {"protocol": "ip", "field": "saddr"}}, "data": "@ingress4"}}]),
        );
        assert!(
            matches!(swapped, Rule::Unrecognized(_)),
            "a dispatch on the wrong field is not ours"
        );
    }
}
