//! `Batch` → the text `nft -f` reads. Pure, with golden tests: the same batch always renders
//! to the same script.

use std::fmt::Write;

use super::names::{FAMILY, TABLE};
use super::{Batch, Chain, Hook, MapName, Op, Rule, Table};

/// The script for one batch; `nft -f` commits a script as one transaction.
pub fn render(batch: &Batch) -> String {
    let mut out = String::new();
    for op in &batch.ops {
        render_op(&mut out, op);
    }
    out
}

/// A script that swaps the whole table atomically: creating then deleting it first makes the
/// delete valid whether or not the table exists, and nothing in between is ever visible.
pub fn render_replace(desired: &Table) -> String {
    let mut out = format!("add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n");
    out.push_str(&render(&super::plan(None, desired)));
    out
}

fn render_op(out: &mut String, op: &Op) {
    // Writing to a String cannot fail.
    let _ = match op {
        Op::EnsureSkeleton(skeleton) => {
            let _ = writeln!(out, "add table {FAMILY} {TABLE}");
            for map in skeleton.maps.keys() {
                let key = if map.is_ipv4() {
                    "ipv4_addr"
                } else {
                    "ipv6_addr"
                };
                let _ = writeln!(
                    out,
                    "add map {FAMILY} {TABLE} {} {{ type {key} : verdict ; }}",
                    map.as_str()
                );
            }
            for (name, chain) in &skeleton.chains {
                render_chain(out, name, chain);
            }
            Ok(())
        }
        Op::SetChain { name, chain } => {
            render_chain(out, name, chain);
            Ok(())
        }
        Op::DeleteChain { name } => writeln!(out, "delete chain {FAMILY} {TABLE} {name}"),
        Op::AddElement { map, addr, chain } => {
            writeln!(
                out,
                "add element {FAMILY} {TABLE} {} {{ {addr} : jump {chain} }}",
                map.as_str()
            )
        }
        Op::DeleteElement { map, addr } => {
            writeln!(
                out,
                "delete element {FAMILY} {TABLE} {} {{ {addr} }}",
                map.as_str()
            )
        }
    };
}

/// Create-or-flush, then the rules: the chain ends up with exactly these rules.
fn render_chain(out: &mut String, name: &str, chain: &Chain) {
    let _ = match chain.hook {
        Some(Hook::Forward) => writeln!(
            out,
            "add chain {FAMILY} {TABLE} {name} {{ type filter hook forward priority filter ; policy accept ; }}"
        ),
        None => writeln!(out, "add chain {FAMILY} {TABLE} {name}"),
    };
    let _ = writeln!(out, "flush chain {FAMILY} {TABLE} {name}");
    for rule in &chain.rules {
        if let Some(text) = rule_text(rule) {
            let _ = writeln!(out, "add rule {FAMILY} {TABLE} {name} {text}");
        }
    }
}

/// The nft statement for a rule; `Unrecognized` only ever comes from a dump and is never
/// written back.
fn rule_text(rule: &Rule) -> Option<String> {
    Some(match rule {
        Rule::AcceptEstablished => "ct state established,related accept".to_string(),
        Rule::Dispatch(map) => {
            let (proto, field) = match map {
                MapName::Ingress4 => ("ip", "daddr"),
                MapName::Egress4 => ("ip", "saddr"),
                MapName::Ingress6 => ("ip6", "daddr"),
                MapName::Egress6 => ("ip6", "saddr"),
            };
            format!("{proto} {field} vmap @{}", map.as_str())
        }
        Rule::Return => "return".to_string(),
        Rule::Accept => "accept".to_string(),
        Rule::Unrecognized(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::plan;

    #[test]
    fn fresh_table_renders_skeleton_then_pod() {
        let mut desired = Table::base();
        desired.chains.insert(
            "pod-1-in".into(),
            Chain {
                hook: None,
                rules: vec![Rule::Accept],
            },
        );
        desired
            .maps
            .get_mut(&MapName::Ingress4)
            .unwrap()
            .insert("10.0.0.2".parse().unwrap(), "pod-1-in".into());
        assert_eq!(
            render(&plan(None, &desired)),
            include_str!("testdata/fresh_table.nft")
        );
    }

    #[test]
    fn deletes_render_elements_then_chains() {
        let batch = Batch {
            ops: vec![
                Op::DeleteElement {
                    map: MapName::Egress6,
                    addr: "fd00::2".parse().unwrap(),
                },
                Op::DeleteChain {
                    name: "pod-1-out".into(),
                },
            ],
        };
        assert_eq!(
            render(&batch),
            "delete element inet podwall egress6 { fd00::2 }\ndelete chain inet podwall pod-1-out\n"
        );
    }

    #[test]
    fn replace_deletes_the_old_table_in_the_same_script() {
        let text = render_replace(&Table::base());
        assert!(text.starts_with(
            "add table inet podwall\ndelete table inet podwall\nadd table inet podwall\n"
        ));
    }
}
