//! `podwall_policy_packets_total{tier,namespace,policy,direction,verdict}` and
//! `podwall_drops_total{direction}`: what the rules' counters say, as totals that only grow.
//! Per policy, never per pod: the series are bounded by the policies in the cluster. A
//! ClusterNetworkPolicy is told by its tier (`Admin`, `Baseline`) and an empty namespace.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use podwall_policy::{Direction, PolicyKey, PolicyTier};

use crate::dataplane::counters::ByPolicy;

#[derive(Debug, Default)]
pub struct PolicyPackets {
    totals: Mutex<Totals>,
}

#[derive(Debug, Default)]
struct Totals {
    /// (tier, policy, direction, verdict) → packets.
    policies: BTreeMap<(PolicyTier, PolicyKey, Direction, &'static str), u64>,
    drops: [u64; 2],
}

impl PolicyPackets {
    /// Add what was counted since the last reading; forget the policies not in `current`
    /// in that tier (deleted, or moved to another tier: their series end).
    pub fn add(&self, counted: &ByPolicy, current: impl Fn(PolicyTier, &PolicyKey) -> bool) {
        let mut totals = self.lock();
        for (verdict, by) in [("allow", &counted.allowed), ("deny", &counted.denied)] {
            for ((tier, policy, direction), packets) in by {
                *totals
                    .policies
                    .entry((*tier, policy.clone(), *direction, verdict))
                    .or_default() += packets;
            }
        }
        totals
            .policies
            .retain(|(tier, policy, _, _), _| current(*tier, policy));
        for (total, packets) in totals.drops.iter_mut().zip(counted.drops) {
            *total += packets;
        }
    }

    /// The totals per policy and direction, for `podwalld status`: a NetworkPolicy as
    /// `namespace/name`, a ClusterNetworkPolicy by its name and tier.
    pub fn counts(&self) -> Vec<podwall::wire::PolicyCounts> {
        let totals = self.lock();
        let mut counts: BTreeMap<(PolicyTier, &PolicyKey, Direction), podwall::wire::PolicyCounts> =
            BTreeMap::new();
        for ((tier, policy, direction, verdict), packets) in &totals.policies {
            let entry = counts
                .entry((*tier, policy, *direction))
                .or_insert_with(|| podwall::wire::PolicyCounts {
                    policy: match tier {
                        PolicyTier::NetworkPolicy => policy.to_string(),
                        _ => policy.name.to_string(),
                    },
                    tier: tier.as_str().to_string(),
                    direction: direction.to_string(),
                    allowed: 0,
                    denied: 0,
                });
            match *verdict {
                "allow" => entry.allowed += packets,
                _ => entry.denied += packets,
            }
        }
        counts.into_values().collect()
    }

    pub(super) fn render(&self, out: &mut String) {
        let totals = self.lock();
        let _ = writeln!(
            out,
            "# HELP podwall_policy_packets_total Packets each policy of a tier allowed (its rule matched first) or denied (its Deny rule matched, or dropped in a chain it isolates, allowed by none of its policies).\n\
             # TYPE podwall_policy_packets_total counter"
        );
        for ((tier, policy, direction, verdict), packets) in &totals.policies {
            let _ = writeln!(
                out,
                "podwall_policy_packets_total{{tier=\"{tier}\",namespace=\"{}\",policy=\"{}\",direction=\"{direction}\",verdict=\"{verdict}\"}} {packets}",
                escaped(&policy.namespace),
                escaped(&policy.name)
            );
        }
        let _ = writeln!(
            out,
            "# HELP podwall_drops_total Packets dropped because no policy allowed them.\n\
             # TYPE podwall_drops_total counter"
        );
        for (direction, packets) in ["ingress", "egress"].iter().zip(totals.drops) {
            let _ = writeln!(
                out,
                "podwall_drops_total{{direction=\"{direction}\"}} {packets}"
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Totals> {
        // Plain totals: a panic cannot leave them half-written.
        self.totals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A label value as the text format wants it: a name from a manifests directory is not
/// checked by an API server.
fn escaped(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_grow_and_a_deleted_policy_leaves_the_page() {
        let packets = PolicyPackets::default();
        let (a, b) = (PolicyKey::new("x", "a"), PolicyKey::new("x", "b"));
        let np = PolicyTier::NetworkPolicy;
        let counted = ByPolicy {
            allowed: [((np, a.clone(), Direction::Ingress), 3)].into(),
            denied: [
                ((np, a.clone(), Direction::Ingress), 2),
                ((np, b.clone(), Direction::Ingress), 2),
            ]
            .into(),
            drops: [2, 0],
        };
        packets.add(&counted, |_, _| true);
        packets.add(&counted, |_, p| *p == a);
        let mut out = String::new();
        packets.render(&mut out);
        assert!(out.contains(
            "podwall_policy_packets_total{tier=\"NetworkPolicy\",namespace=\"x\",policy=\"a\",direction=\"ingress\",verdict=\"allow\"} 6\n"
        ), "{out}");
        assert!(out.contains("verdict=\"deny\"} 4\n"), "{out}");
        assert!(!out.contains("policy=\"b\""), "{out}");
        assert!(
            out.contains("podwall_drops_total{direction=\"ingress\"} 4\n"),
            "{out}"
        );
        assert!(
            out.contains("podwall_drops_total{direction=\"egress\"} 0\n"),
            "{out}"
        );
        assert_eq!(escaped("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let counts = packets.counts();
        assert_eq!(counts.len(), 1);
        assert_eq!(
            (counts[0].policy.as_str(), counts[0].direction.as_str()),
            ("x/a", "ingress")
        );
        assert_eq!((counts[0].allowed, counts[0].denied), (6, 4));
    }

    #[test]
    fn a_cluster_policy_is_named_by_its_tier_and_leaves_with_it() {
        let packets = PolicyPackets::default();
        let guard = PolicyKey::new("", "guard");
        let counted = ByPolicy {
            denied: [
                ((PolicyTier::Admin, guard.clone(), Direction::Ingress), 4),
                ((PolicyTier::Baseline, guard.clone(), Direction::Egress), 1),
            ]
            .into(),
            drops: [4, 1],
            ..ByPolicy::default()
        };
        // The policy moved to the Baseline tier: its Admin series ends.
        packets.add(&counted, |tier, _| tier == PolicyTier::Baseline);
        let mut out = String::new();
        packets.render(&mut out);
        assert!(out.contains(
            "podwall_policy_packets_total{tier=\"Baseline\",namespace=\"\",policy=\"guard\",direction=\"egress\",verdict=\"deny\"} 1\n"
        ), "{out}");
        assert!(!out.contains("tier=\"Admin\""), "{out}");
    }
}
