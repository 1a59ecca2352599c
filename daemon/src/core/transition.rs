//! The transaction: move to new attachments and a new cluster, compile only what changed,
//! and commit the compiler's delta to the kernel as one transaction (elements only where it
//! can, the whole table where the structure changed).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

use podwall::wire::{Attachment, AttachmentId};
use podwall_policy::{Event, Pod, PodKey, RulesetDelta, Snapshot};

use super::local::{guard, local_ips, merged, pod_key, Claims, Placement};
use super::{Core, CoreError};
use crate::dataplane::{transaction_for, DataplaneError, Desired, Guard, Transaction};
use tracing::{info, warn};

/// What a transition can have changed.
pub(super) enum Scope {
    /// These pods (attach, detach, GC).
    Pods(Vec<PodKey>),
    /// These objects of the cluster, as a source reported them.
    Changes(Vec<Event>),
    /// Anything: compare whole snapshots.
    Everything,
}

impl Core {
    /// The compiler event that brings pod `key` in line with `attachments`, whose addresses
    /// are `attached`, if any (see `Placement`).
    pub(super) fn pod_event(
        &self,
        key: &PodKey,
        attachments: &BTreeMap<AttachmentId, Attachment>,
        attached: &BTreeSet<IpAddr>,
    ) -> Option<Event> {
        let place = Placement {
            cluster: &self.cluster,
            attachments,
            node: &self.node,
            quarantine_unknown: self.quarantine_unknown,
            attached,
            claims: &self.claims,
        };
        match (place.pod(key), self.compiler.snapshot().pods.get(key)) {
            (Some(pod), Some(have)) if pod == *have => None,
            (Some(pod), _) => Some(Event::Pod(pod)),
            (None, Some(_)) => Some(Event::PodDeleted(key.clone())),
            (None, None) => None,
        }
    }

    /// Move to a new state — attachments, and the cluster when it changed — compile, and
    /// commit to the kernel. The new state is kept whatever the kernel says (see the module
    /// comment); `what` names the change if the kernel refuses it. `Scope::Pods` names the only
    /// pods that can have changed, which keeps the attach path from comparing whole snapshots.
    pub(super) fn transition(
        &mut self,
        attachments: BTreeMap<AttachmentId, Attachment>,
        cluster: Option<Snapshot>,
        scope: Scope,
        mut what: String,
    ) -> Result<(), CoreError> {
        self.last_commit = std::time::Duration::ZERO;
        self.applied_exact = None;
        let local = local_ips(&attachments);
        // Addresses attached or released here.
        let mut touched: BTreeSet<IpAddr> = local_ips(&self.attachments)
            .symmetric_difference(&local)
            .copied()
            .collect();
        let incremental = !matches!(scope, Scope::Everything);
        let (mut events, mut pods) = match scope {
            Scope::Pods(keys) => (Vec::new(), keys.into_iter().collect()),
            Scope::Changes(changes) => {
                let (events, pods, node_ips) = self.record_changes(changes);
                // An adopted pod appearing, moving or going takes its addresses from, or
                // gives them back to, the other pods that claim them.
                touched.extend(node_ips);
                (events, pods)
            }
            Scope::Everything => {
                let old = merged(
                    &self.cluster,
                    &self.attachments,
                    &self.node,
                    self.quarantine_unknown,
                );
                let new = merged(
                    cluster.as_ref().unwrap_or(&self.cluster),
                    &attachments,
                    &self.node,
                    self.quarantine_unknown,
                );
                let events = Event::between(&old, &new);
                what = describe(&events);
                (events, BTreeSet::new())
            }
        };
        if incremental {
            // The pods that claim an address attached, adopted or released here gain or lose
            // it (see `Placement`).
            pods.extend(self.claims.on(&touched));
            events.extend(
                pods.iter()
                    .filter_map(|key| self.pod_event(key, &attachments, &local)),
            );
        }
        let mut deltas: Vec<RulesetDelta> = events
            .into_iter()
            .map(|event| self.compiler.apply(event))
            .collect();
        self.adopt(&attachments);
        let guard = guard(&attachments, &self.adopted_ports);
        self.attachments = attachments;
        if let Some(cluster) = cluster {
            self.cluster = cluster;
            self.claims = Claims::of(&self.cluster);
        }
        if self.pending.is_some() {
            // The kernel is behind: a delta against what it last took would not describe
            // the earlier refused changes, so the whole desired state goes in.
            return match self.commit_desired() {
                Ok(()) => {
                    self.landed();
                    Ok(())
                }
                Err(err) => Err(self.refused(what, err)),
            };
        }
        // One event (the hot path) is the compiler's own delta; several become one
        // transaction over what they touched.
        let delta = match (deltas.pop(), deltas.is_empty()) {
            (Some(only), true) => only,
            (last, _) => {
                deltas.extend(last);
                self.applied
                    .ruleset
                    .diff_over(self.compiler.ruleset(), &deltas)
            }
        };
        let started = Instant::now();
        let result = match transaction_for(&self.applied, &delta, &guard) {
            Transaction::None => Ok(()),
            Transaction::Elements(ops) => {
                let n = ops.len();
                self.kernel
                    .apply_elements(&ops)
                    .inspect(|_| self.metrics.observe_elements(n))
            }
            Transaction::Structure(structure) => match self.kernel.apply_structure(&structure) {
                Ok(()) => {
                    self.metrics.observe_structure();
                    Ok(())
                }
                Err(err) => {
                    warn!(error = %err, "the kernel refused a structural change over netlink; swapping the whole table instead");
                    self.metrics.observe_structural_fallback();
                    self.replace_with(&delta, &guard)
                }
            },
            Transaction::Replace => self.replace_with(&delta, &guard),
        };
        self.last_commit = started.elapsed();
        self.metrics
            .observe_transaction(self.last_commit, result.is_ok());
        if let Err(err) = result {
            return Err(self.refused(what, err));
        }
        self.applied.ruleset.apply(&delta);
        self.applied.guard = guard;
        self.health.set_ready();
        self.record_size();
        self.revocations.notify_one();
        Ok(())
    }

    /// Swap in the applied table with `delta` and `guard`, whole.
    fn replace_with(&mut self, delta: &RulesetDelta, guard: &Guard) -> Result<(), DataplaneError> {
        let mut next = Desired {
            ruleset: self.applied.ruleset.clone(),
            guard: guard.clone(),
            logging: self.applied.logging,
        };
        next.ruleset.apply(delta);
        self.kernel
            .replace(&next)
            .inspect(|_| self.metrics.observe_replace())
    }

    /// Bring the adopted pods (enforced, not attached) in line with `attachments`: log those
    /// adopted and released, count them, and ask the kernel which bridge port each adopted
    /// address is behind, for those that have none yet (the pod's CNI result, which names
    /// it, was never seen). An address it cannot place (the node never talked to the pod) is
    /// logged once and left unguarded until a reconcile finds it or the pod is attached.
    pub(super) fn adopt(&mut self, attachments: &BTreeMap<AttachmentId, Attachment>) {
        let attached: BTreeSet<PodKey> = attachments.values().map(pod_key).collect();
        let adopted: BTreeSet<PodKey> = (self.compiler.local_pods())
            .filter(|key| !attached.contains(*key))
            .cloned()
            .collect();
        for key in adopted.difference(&self.adopted) {
            info!(pod = %key, "adopted a pod of this node that podwall did not attach");
        }
        for key in self.adopted.difference(&adopted) {
            let how = if attached.contains(key) {
                "attached"
            } else {
                "gone"
            };
            info!(pod = %key, how, "no longer adopted");
        }
        self.metrics.set_adopted_pods(adopted.len());
        let snapshot = self.compiler.snapshot();
        let addresses: BTreeMap<IpAddr, PodKey> = (adopted.iter())
            .filter_map(|key| snapshot.pods.get(key))
            .flat_map(|pod| pod.ips.iter().map(|ip| (*ip, pod.key.clone())))
            .collect();
        self.adopted = adopted;
        self.adopted_ports
            .retain(|ip, _| addresses.contains_key(ip));
        self.unguarded.retain(|ip| addresses.contains_key(ip));
        let missing: BTreeSet<IpAddr> = (addresses.keys())
            .filter(|ip| !self.adopted_ports.contains_key(ip) && !self.unguarded.contains(ip))
            .copied()
            .collect();
        if missing.is_empty() {
            return;
        }
        let found = self.kernel.host_ports(&missing).unwrap_or_else(|err| {
            warn!(error = %err, "cannot ask the kernel where adopted pods are");
            BTreeMap::new()
        });
        for ip in missing.iter().filter(|ip| !found.contains_key(ip)) {
            if let Some(pod) = addresses.get(ip) {
                warn!(%pod, address = %ip, "cannot find the host interface of an adopted pod: it is not guarded against spoofing until the node has talked to it or the pod is attached");
            }
            self.unguarded.insert(*ip);
        }
        self.adopted_ports.extend(found);
    }

    /// Put the source's changes into `cluster`. Returns the compiler events for namespaces
    /// and policies, the pods to bring in line, and the addresses of this node's pods among
    /// them (before and after).
    pub(super) fn record_changes(
        &mut self,
        changes: Vec<Event>,
    ) -> (Vec<Event>, BTreeSet<PodKey>, BTreeSet<IpAddr>) {
        let mut events = Vec::new();
        let mut pods = BTreeSet::new();
        let mut node_ips = BTreeSet::new();
        let node = self.node.clone();
        let mut note = |pod: &Pod| {
            if pod.node.as_deref() == Some(node.as_str()) {
                node_ips.extend(pod.ips.iter().copied());
            }
        };
        for change in changes {
            match change {
                Event::Pod(pod) => {
                    pods.insert(pod.key.clone());
                    if let Some(old) = self.cluster.pods.get(&pod.key) {
                        note(old);
                        self.claims.remove(old);
                    }
                    note(&pod);
                    self.claims.add(&pod);
                    self.cluster.pods.insert(pod.key.clone(), pod);
                }
                Event::PodDeleted(key) => {
                    if let Some(old) = self.cluster.pods.remove(&key) {
                        note(&old);
                        self.claims.remove(&old);
                    }
                    pods.insert(key);
                }
                Event::Namespace(ns) => {
                    self.cluster.namespaces.insert(ns.name.clone(), ns.clone());
                    events.push(Event::Namespace(ns));
                }
                Event::NamespaceDeleted(name) => {
                    self.cluster.namespaces.remove(&name);
                    events.push(Event::NamespaceDeleted(name));
                }
                Event::Policy(policy) => {
                    self.cluster
                        .policies
                        .insert(policy.key.clone(), policy.clone());
                    events.push(Event::Policy(policy));
                }
                Event::PolicyDeleted(key) => {
                    self.cluster.policies.remove(&key);
                    events.push(Event::PolicyDeleted(key));
                }
                Event::ClusterPolicy(policy) => {
                    self.cluster
                        .cluster_policies
                        .insert(policy.name.clone(), policy.clone());
                    events.push(Event::ClusterPolicy(policy));
                }
                Event::ClusterPolicyDeleted(name) => {
                    self.cluster.cluster_policies.remove(&name);
                    events.push(Event::ClusterPolicyDeleted(name));
                }
            }
        }
        (events, pods, node_ips)
    }
}

/// A short name for a batch of source changes, for `/healthz` when the kernel refuses it.
pub(super) fn describe(changes: &[Event]) -> String {
    let name = |event: &Event| match event {
        Event::Pod(pod) => format!("pod {}", pod.key),
        Event::PodDeleted(key) => format!("pod {key} deleted"),
        Event::Namespace(ns) => format!("namespace {}", ns.name),
        Event::NamespaceDeleted(name) => format!("namespace {name} deleted"),
        Event::Policy(policy) => format!("policy {}", policy.key),
        Event::PolicyDeleted(key) => format!("policy {key} deleted"),
        Event::ClusterPolicy(policy) => format!("clusternetworkpolicy {}", policy.name),
        Event::ClusterPolicyDeleted(name) => format!("clusternetworkpolicy {name} deleted"),
    };
    match changes {
        [one] => name(one),
        [first, rest @ ..] => format!("{} and {} more object(s)", name(first), rest.len()),
        [] => "no change".to_string(),
    }
}
