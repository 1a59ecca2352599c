//! The table as the kernel reads it back, coarsely: each dispatch entry, set sizes, rules by
//! comment. What CHECK asks (is this pod's dispatch in the kernel) and what the tests look
//! at; the reconcile compares the tables exactly (`exact`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use podwall_policy::{Direction, End, Family, Ruleset, Set};

use super::names::{self, map_name, MAPS};
use super::{render, Desired};

/// What a ruleset looks like from outside, as far as the kernel can tell it back: dispatch
/// entries exactly, sets by element count (interval sets only by presence: the kernel may
/// merge ranges), chains by their rules' comments or verdicts. Enough to notice a deleted
/// table, a flushed chain, a missing element.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fingerprint {
    pub maps: BTreeMap<String, BTreeMap<IpAddr, String>>,
    pub sets: BTreeMap<String, Option<usize>>,
    pub chains: BTreeMap<String, Vec<String>>,
}

impl Fingerprint {
    /// The fingerprint the tables rendered from `desired` must have.
    pub fn of(desired: &Desired) -> Self {
        let ruleset = &desired.ruleset;
        let mut maps: BTreeMap<String, BTreeMap<IpAddr, String>> = BTreeMap::new();
        for (direction, family) in MAPS {
            maps.insert(map_name(direction, family).to_string(), BTreeMap::new());
        }
        for direction in [Direction::Ingress, Direction::Egress] {
            for (ip, chain) in ruleset.map(direction) {
                maps.entry(map_name(direction, Family::of(ip)).to_string())
                    .or_default()
                    .insert(*ip, chain.clone());
            }
        }
        let mut sets: BTreeMap<String, Option<usize>> = ruleset
            .sets
            .iter()
            .map(|(name, set)| {
                (
                    name.clone(),
                    if matches!(set, Set::Intervals { .. }) {
                        None
                    } else {
                        Some(set.len())
                    },
                )
            })
            .collect();
        let mut chains: BTreeMap<String, Vec<String>> = ruleset
            .chains
            .iter()
            .map(|(name, chain)| {
                // `ct state invalid drop`, the mid-stream drop, the policy rules (each after
                // its log rule when its policy logs what it allows), the log rule, the final
                // drop.
                let mut rules = vec!["drop".to_string(), "drop".to_string()];
                for rule in &chain.rules {
                    if render::rule_log_prefix(name, rule, desired.logging).is_some() {
                        rules.push("log".to_string());
                    }
                    rules.push(render::rule_comment(rule));
                }
                // The end: `counter drop` after its log rule, or a tier chain's `counter
                // return` / `counter goto …`, as nft names the last expression.
                match &chain.end {
                    End::Drop => {
                        rules.extend(desired.logging.map(|_| "log".to_string()));
                        rules.push("drop".to_string());
                    }
                    End::Return => rules.push("return".to_string()),
                    End::Goto(_) => rules.push("goto".to_string()),
                }
                (name.clone(), rules)
            })
            .collect();
        for family in Family::ALL {
            let pairs = ruleset.ingress.keys().filter(|ip| Family::of(ip) == family);
            sets.insert(names::hairpin_set(family).to_string(), Some(pairs.count()));
        }
        for base in [names::FORWARD_CHAIN, names::OUTPUT_CHAIN] {
            chains.insert(base.to_string(), render::base_chain_fingerprint());
        }
        chains.insert(names::OPEN_CHAIN.to_string(), vec!["drop".to_string()]);
        chains.insert(
            names::QUARANTINE_CHAIN.to_string(),
            vec!["drop".to_string()],
        );
        chains.insert(names::GUARD_CHAIN.to_string(), render::guard_fingerprint());
        let guard = &desired.guard.sources;
        sets.insert(names::GUARD_PORTS.to_string(), Some(guard.len()));
        for (name, v4) in [
            (names::GUARD_SOURCES4, true),
            (names::GUARD_SOURCES6, false),
            (names::GUARD_TARGETS6, false),
        ] {
            let count = guard
                .values()
                .flatten()
                .filter(|ip| ip.is_ipv4() == v4)
                .count();
            sets.insert(name.to_string(), Some(count));
        }
        Fingerprint { maps, sets, chains }
    }

    /// What differs from `expected`, in words, for the log.
    pub fn differences(&self, expected: &Fingerprint) -> Vec<String> {
        let mut out = Vec::new();
        for (name, entries) in &expected.maps {
            let actual = self.maps.get(name);
            let wrong = entries
                .iter()
                .filter(|(ip, chain)| actual.and_then(|m| m.get(ip)) != Some(chain))
                .count();
            let extra = actual.map_or(0, |m| {
                m.keys().filter(|ip| !entries.contains_key(ip)).count()
            });
            if actual.is_none() {
                out.push(format!("map {name} missing"));
            } else if wrong + extra > 0 {
                out.push(format!(
                    "map {name}: {wrong} entries missing or wrong, {extra} extra"
                ));
            }
        }
        for (name, count) in &expected.sets {
            match self.sets.get(name) {
                None => out.push(format!("set {name} missing")),
                Some(actual) if count.is_some() && actual != count => out.push(format!(
                    "set {name}: {} elements, expected {}",
                    actual.unwrap_or(0),
                    count.unwrap_or(0)
                )),
                _ => {}
            }
        }
        for (name, rules) in &expected.chains {
            match self.chains.get(name) {
                None => out.push(format!("chain {name} missing")),
                Some(actual) if actual.len() != rules.len() => out.push(format!(
                    "chain {name}: {} rules, expected {}",
                    actual.len(),
                    rules.len()
                )),
                Some(actual) => {
                    let wrong = actual.iter().zip(rules).position(|(a, r)| a != r);
                    if let Some(n) = wrong {
                        out.push(format!(
                            "chain {name}: rule {n} reads {:?}, expected {:?}",
                            actual[n], rules[n]
                        ));
                    }
                }
            }
        }
        out
    }
}

/// The local pod addresses' dispatch entries, as `desired` has them, for CHECK.
pub fn entries_of(ruleset: &Ruleset, ips: &[IpAddr]) -> Vec<(String, IpAddr, String)> {
    let mut out = Vec::new();
    for direction in [Direction::Ingress, Direction::Egress] {
        for ip in ips {
            if let Some(chain) = ruleset.map(direction).get(ip) {
                out.push((
                    map_name(direction, Family::of(ip)).to_string(),
                    *ip,
                    chain.clone(),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::transaction::tests::{desired, ruleset_with};

    #[test]
    fn fingerprint_differences_name_what_drifted() {
        let expected = Fingerprint::of(&desired(ruleset_with("10.0.0.2", "in_a", &["10.0.1.1"])));
        let mut drifted = expected.clone();
        drifted.chains.remove("forward");
        drifted.maps.get_mut("ingress4").unwrap().clear();
        drifted.sets.insert("pods4_1".into(), Some(0));
        let diff = drifted.differences(&expected);
        assert_eq!(diff.len(), 3, "{diff:?}");
        assert!(diff.iter().any(|d| d.contains("chain forward missing")));
        assert!(expected.differences(&expected).is_empty());
    }
}
