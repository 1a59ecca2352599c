//! ClusterNetworkPolicies → rules with verdicts, and the tier chains a local pod's dispatch
//! entry goes to when a ClusterNetworkPolicy selects it.
//!
//! The chain of a pod, per direction, is the Admin chain of the Admin policies that select it
//! (their rules in order: Accept returns, Deny drops, Pass goes to the rest), ending in the
//! rest: the pod's NetworkPolicy chain when one isolates it (it drops what nothing allowed),
//! else the Baseline chain of the Baseline policies that select it (Pass and falling off its
//! end return), else nothing (return). Chains are shared by every pod with the same policies,
//! as NetworkPolicy chains are.
//!
//! The daemon's dataplane renders the verdicts and ends; both sources (the manifests loader,
//! the watchers while the CRD is installed) send `Event::ClusterPolicy`. The agreement
//! property tests hold this compiler to the evaluator.

use super::*;
use crate::model::{Action, ClusterPeer, ClusterPolicy, Tier};
use crate::ruleset::{End, RuleVerdict};

/// A ClusterNetworkPolicy's rules in ruleset form, each with its action, and the sets they
/// hold on to.
pub(super) struct ClusterCompiled {
    pub(super) compiled: Compiled,
    /// The action of each rule of `compiled`, per direction (ingress, egress).
    pub(super) actions: [Vec<Action>; 2],
}

/// The key a cluster-scoped policy's rules carry (no namespace).
pub(super) fn cluster_key(name: &str) -> PolicyKey {
    PolicyKey::new("", name)
}

impl Compiler {
    pub(super) fn compile_cluster_policy(&mut self, policy: &ClusterPolicy) -> ClusterCompiled {
        let mut out = Compiled::default();
        let mut actions: [Vec<Action>; 2] = [Vec::new(), Vec::new()];
        for direction in DIRECTIONS {
            let mut rules = Vec::new();
            let acts = &mut actions[dir_index(direction)];
            for (index, rule) in policy.rules(direction).iter().enumerate() {
                let action = rule.effective_action();
                let origin = |family, peer, ports| Rule {
                    family,
                    peer,
                    ports,
                    policy: cluster_key(&policy.name),
                    index,
                    log: false,
                    verdict: RuleVerdict::Allow,
                };
                if rule.fails_closed.is_some() {
                    // Accept matches nothing; Deny and Pass deny everything.
                    if action != Action::Accept {
                        rules.push(origin(None, PeerMatch::Any, PortMatch::Any));
                        acts.push(Action::Deny);
                    }
                    continue;
                }
                let peers: Vec<Peer> = rule
                    .peers
                    .iter()
                    .flat_map(|p| match p {
                        ClusterPeer::Pods(sel) => vec![Peer::Pods {
                            namespaces: NamespaceScope::Matching(sel.namespaces.clone()),
                            pods: sel.pods.clone(),
                        }],
                        ClusterPeer::Networks(blocks) => {
                            blocks.iter().cloned().map(Peer::Block).collect()
                        }
                    })
                    .collect();
                if peers.is_empty() {
                    continue;
                }
                let peers = self.peer_matches(&Peers::Only(peers), &mut out);
                let ports = self.port_matches(&rule.ports, &mut out);
                for (family, peer, port) in rules::combine(&peers, &ports) {
                    rules.push(origin(family, peer, port));
                    acts.push(action);
                }
            }
            match direction {
                Direction::Ingress => out.ingress = rules,
                Direction::Egress => out.egress = rules,
            }
        }
        ClusterCompiled {
            compiled: out,
            actions,
        }
    }

    /// The Admin and the Baseline policies that select `pod`, each in evaluation order.
    pub(super) fn cluster_selecting(&self, pod: &Pod) -> [Vec<String>; 2] {
        let ns_labels = self.snap.namespace_labels(&pod.key.namespace);
        let mut found: Vec<&ClusterPolicy> = self
            .snap
            .cluster_policies
            .values()
            .filter(|p| selects(p, &ns_labels, pod))
            .collect();
        found.sort_by(|a, b| a.order().cmp(&b.order()));
        [Tier::Admin, Tier::Baseline].map(|tier| {
            (found.iter())
                .filter(|p| p.tier == tier)
                .map(|p| p.name.clone())
                .collect()
        })
    }

    /// The chain a pod with these policies is dispatched to in `direction`, and every chain
    /// it holds (each taken once more); `None` when nothing judges it (open).
    pub(super) fn hold_tiers(
        &mut self,
        direction: Direction,
        admin: &[String],
        network: Vec<PolicyKey>,
        baseline: &[String],
    ) -> Option<(ChainName, Vec<ChainName>)> {
        let mut held = Vec::new();
        let rest = if !network.is_empty() {
            Some(self.hold_chain(direction, network))
        } else if !baseline.is_empty() {
            Some(self.hold_cluster_chain(direction, Tier::Baseline, baseline, None))
        } else {
            None
        };
        held.extend(rest.clone());
        if admin.is_empty() {
            return rest.map(|chain| (chain, held));
        }
        let chain = self.hold_cluster_chain(direction, Tier::Admin, admin, rest);
        held.push(chain.clone());
        Some((chain, held))
    }

    /// One more holder of the chain of `policies` of `tier`, ending in `rest` (or returning);
    /// the first makes it.
    fn hold_cluster_chain(
        &mut self,
        direction: Direction,
        tier: Tier,
        policies: &[String],
        rest: Option<ChainName>,
    ) -> ChainName {
        let canonical = format!(
            "{direction}|{tier}|{}|{}",
            policies.join("|"),
            rest.as_deref().unwrap_or("-")
        );
        let name = names::chain(direction, &canonical);
        let refs = self.chain_refs.entry(name.clone()).or_insert(0);
        *refs += 1;
        if *refs > 1 {
            return name;
        }
        let d = dir_index(direction);
        let mut rules = Vec::new();
        for policy in policies {
            let Some(cc) = self.use_cluster_policy(policy) else {
                continue;
            };
            for (rule, action) in cc.compiled.rules(direction).iter().zip(&cc.actions[d]) {
                let verdict = match (action, &rest) {
                    (Action::Accept, _) | (Action::Pass, None) => RuleVerdict::Allow,
                    (Action::Deny, _) => RuleVerdict::Deny,
                    (Action::Pass, Some(rest)) => RuleVerdict::Goto(rest.clone()),
                };
                rules.push(Rule {
                    verdict,
                    ..rule.clone()
                });
            }
        }
        let end = match rest {
            Some(rest) => End::Goto(rest),
            None => End::Return,
        };
        let chain = Chain {
            direction,
            policies: policies.iter().map(|p| cluster_key(p)).collect(),
            rules: local::distinct(rules.iter()),
            end,
            tier: tier.into(),
        };
        self.make_chain(&name, chain);
        name
    }

    pub(super) fn upsert_cluster_policy(&mut self, policy: ClusterPolicy) {
        let before = self
            .snap
            .cluster_policies
            .insert(policy.name.clone(), policy.clone());
        // As for a NetworkPolicy: the chains made again compile the new version, then the
        // old one is released.
        let old = self.cluster_compiled.remove(&policy.name);
        self.regroup_subjects(before.iter().chain([&policy]));
        if let Some(old) = old {
            self.release(old.policy.compiled);
        }
    }

    pub(super) fn delete_cluster_policy(&mut self, name: &str) {
        let before = self.snap.cluster_policies.remove(name);
        let old = self.cluster_compiled.remove(name);
        self.regroup_subjects(before.iter());
        if let Some(old) = old {
            self.release(old.policy.compiled);
        }
    }

    /// The policies of `names` with rules in `direction`, in order: one without any is left
    /// out of the chain.
    pub(super) fn with_rules(&mut self, direction: Direction, names: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for name in names {
            if (self.use_cluster_policy(name))
                .is_some_and(|c| !c.compiled.rules(direction).is_empty())
            {
                out.push(name.clone());
            }
        }
        out
    }

    /// Re-attaches the local pods the subject of any of `policies` selects: only their
    /// dispatch can change when those policies change.
    fn regroup_subjects<'a>(&mut self, policies: impl Iterator<Item = &'a ClusterPolicy>) {
        let policies: Vec<&ClusterPolicy> = policies.collect();
        let keys: Vec<PodKey> = (self.local.keys())
            .filter(|key| {
                self.snap.pods.get(*key).is_some_and(|pod| {
                    let ns_labels = self.snap.namespace_labels(&pod.key.namespace);
                    policies.iter().any(|p| selects(p, &ns_labels, pod))
                })
            })
            .cloned()
            .collect();
        for key in &keys {
            self.detach(key);
        }
        for key in &keys {
            self.attach(key);
        }
    }
}

/// Whether `policy`'s subject selects `pod`, whose namespace has `ns_labels`.
fn selects(policy: &ClusterPolicy, ns_labels: &Labels, pod: &Pod) -> bool {
    policy.subject.namespaces.matches(ns_labels) && policy.subject.pods.matches(&pod.labels)
}
