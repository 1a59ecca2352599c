//! Local pods: each gets dispatch entries for its addresses in both directions, to the
//! chain its policies share, to `open`, or to `quarantine`.

use super::*;

/// A local pod's place in the ruleset: where each direction's dispatch entries send its
/// addresses.
pub(super) struct LocalPod {
    ips: Vec<IpAddr>,
    targets: [Target; 2],
    /// Every chain the pod holds, per direction: its target's, and the chains that one
    /// goes on to (a tier chain's rest).
    held: [Vec<ChainName>; 2],
}

/// Where a local pod's dispatch entries point in one direction.
#[derive(Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// No policy isolates it: the empty `open` chain.
    Open,
    /// Its labels are unknown: the `quarantine` chain, which drops.
    Quarantine,
    /// The chain of the policies that isolate it, shared by every pod with the same ones.
    Chain(ChainName),
}

impl Target {
    fn chain(&self) -> &str {
        match self {
            Target::Open => names::OPEN_CHAIN,
            Target::Quarantine => names::QUARANTINE_CHAIN,
            Target::Chain(name) => name,
        }
    }
}

impl Compiler {
    pub(super) fn is_local(&self, pod: &Pod) -> bool {
        pod.node.as_deref() == Some(self.node.as_str()) && pod.is_policed()
    }

    /// Re-attaches every local pod of a namespace; chains whose policies changed are rebuilt
    /// because detaching the namespace's pods frees them first.
    pub(super) fn regroup(&mut self, namespace: &str) {
        let keys: Vec<PodKey> = self
            .local
            .range(PodKey::new(namespace, "")..)
            .take_while(|(k, _)| k.namespace == namespace)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &keys {
            self.detach(key);
        }
        for key in &keys {
            self.attach(key);
        }
    }

    /// Gives a local pod its dispatch entries: to the chain of the policies that isolate it,
    /// to `open` in a direction none does, to `quarantine` while its labels are unknown.
    pub(super) fn attach(&mut self, key: &PodKey) {
        let Some(pod) = self.snap.pods.get(key) else {
            return;
        };
        if !self.is_local(pod) {
            return;
        }
        let ips = pod.ips.clone();
        let quarantined = pod.quarantined;
        let selected = DIRECTIONS.map(|d| selecting(&self.snap, pod, d));
        let [admin, baseline] = self.cluster_selecting(pod);
        let mut targets = [Target::Open, Target::Open];
        let mut held: [Vec<ChainName>; 2] = [Vec::new(), Vec::new()];
        for (direction, policies) in DIRECTIONS.into_iter().zip(selected) {
            let d = dir_index(direction);
            let target = if quarantined {
                Target::Quarantine
            } else {
                let admin = self.with_rules(direction, &admin);
                let baseline = self.with_rules(direction, &baseline);
                match self.hold_tiers(direction, &admin, policies, &baseline) {
                    None => Target::Open,
                    Some((chain, chains)) => {
                        held[d] = chains;
                        Target::Chain(chain)
                    }
                }
            };
            for ip in &ips {
                self.map_set(direction, *ip, Some(target.chain().to_string()));
            }
            targets[d] = target;
        }
        self.local
            .insert(key.clone(), LocalPod { ips, targets, held });
    }

    /// One more pod dispatched to the chain of `policies` in `direction`; the first makes it.
    pub(super) fn hold_chain(
        &mut self,
        direction: Direction,
        policies: Vec<PolicyKey>,
    ) -> ChainName {
        let canonical = format!(
            "{direction}|{}",
            policies
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("|")
        );
        let name = names::chain(direction, &canonical);
        let refs = self.chain_refs.entry(name.clone()).or_insert(0);
        *refs += 1;
        if *refs == 1 {
            for policy in &policies {
                self.use_policy(policy);
            }
            let rules = distinct(
                (policies.iter())
                    .filter_map(|p| self.compiled.get(p))
                    .flat_map(|used| used.policy.rules(direction).iter()),
            );
            let chain = Chain {
                direction,
                policies,
                rules,
                end: crate::ruleset::End::Drop,
                tier: crate::model::PolicyTier::NetworkPolicy,
            };
            self.make_chain(&name, chain);
        }
        name
    }

    pub(super) fn detach(&mut self, key: &PodKey) {
        let Some(pod) = self.local.remove(key) else {
            return;
        };
        for direction in DIRECTIONS {
            let target = &pod.targets[dir_index(direction)];
            for ip in &pod.ips {
                if self.rs.map(direction).get(ip).map(String::as_str) == Some(target.chain()) {
                    self.map_set(direction, *ip, None);
                }
            }
            // Every held chain is counted; an uncounted one (a broken invariant) is deleted
            // rather than panicking on cluster input.
            for chain in &pod.held[dir_index(direction)] {
                let refs = self.chain_refs.get_mut(chain).map_or(0, |refs| {
                    *refs = refs.saturating_sub(1);
                    *refs
                });
                if refs == 0 {
                    self.chain_refs.remove(chain);
                    self.delete_chain(chain);
                }
            }
        }
    }
}

/// The rules in order, without any that an earlier one covers: one whose match takes in
/// every packet of the later one's (the same family or any, the same peer or any, the same
/// ports or any) decides all of them first, so the later one never matches and would only
/// lengthen every walk of the chain, whatever either's verdict. Replicated policies (one per
/// team, all alike) repeat rules, and a guardrail that denies a peer on every port covers
/// what other policies say of that peer on some ports.
pub(super) fn distinct<'a>(rules: impl Iterator<Item = &'a Rule>) -> Vec<Rule> {
    let (any_peer, any_ports) = (PeerMatch::Any, PortMatch::Any);
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for rule in rules {
        let families = [rule.family, None];
        let peers = [&rule.peer, &any_peer];
        let ports = [&rule.ports, &any_ports];
        let covered = (families.iter()).any(|family| {
            (peers.iter()).any(|peer| (ports.iter()).any(|p| seen.contains(&(*family, *peer, *p))))
        });
        if !covered {
            seen.insert((rule.family, &rule.peer, &rule.ports));
            out.push(rule.clone());
        }
    }
    out
}
