//! The transaction: move to new attachments and a new cluster, compile only what changed,
//! and commit the compiler's delta to the kernel as one transaction (elements only where it
//! can, the whole table where the structure changed).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

use podwall::wire::{Attachment, AttachmentId};
use podwall_policy::{Event, PodKey, RulesetDelta, Snapshot};

use super::local::{guard, local_ips, local_pod, merged, Claims};
use super::{Core, CoreError};
use crate::dataplane::{transaction_for, Desired, Transaction};

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
    /// are `local`, if any.
    pub(super) fn pod_event(
        &self,
        key: &PodKey,
        attachments: &BTreeMap<AttachmentId, Attachment>,
        local: &BTreeSet<IpAddr>,
    ) -> Option<Event> {
        let want = local_pod(
            &self.cluster,
            attachments,
            key,
            &self.node,
            self.quarantine_unknown,
        )
        .or_else(|| {
            let mut pod = self
                .cluster
                .pods
                .get(key)
                .filter(|p| p.node.as_deref() != Some(self.node.as_str()))
                .cloned()?;
            // As `merged` does: an address attached here is this node's pod's alone.
            pod.ips.retain(|ip| !local.contains(ip));
            Some(pod)
        });
        match (want, self.compiler.snapshot().pods.get(key)) {
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
        let local = local_ips(&attachments);
        // Addresses attached or released here.
        let touched: BTreeSet<IpAddr> = local_ips(&self.attachments)
            .symmetric_difference(&local)
            .copied()
            .collect();
        let incremental = !matches!(scope, Scope::Everything);
        let mut events: Vec<Event> = match scope {
            Scope::Pods(keys) => keys
                .iter()
                .filter_map(|key| self.pod_event(key, &attachments, &local))
                .collect(),
            Scope::Changes(changes) => {
                let (mut events, pods) = self.record_changes(changes);
                events.extend(
                    pods.iter()
                        .filter_map(|key| self.pod_event(key, &attachments, &local)),
                );
                events
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
                events
            }
        };
        if incremental && !touched.is_empty() {
            // Pods of other nodes that claim an address attached or released here gain or
            // lose it (see `merged`).
            let claimants = self.claims.on(&touched);
            events.extend(
                claimants
                    .iter()
                    .filter_map(|key| self.pod_event(key, &attachments, &local)),
            );
        }
        let mut deltas: Vec<RulesetDelta> = events
            .into_iter()
            .map(|event| self.compiler.apply(event))
            .collect();
        let guard = guard(&attachments);
        self.attachments = attachments;
        if let Some(cluster) = cluster {
            self.cluster = cluster;
            self.claims = Claims::of(&self.cluster, &self.node);
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
            Transaction::Replace => {
                let mut next = Desired {
                    ruleset: self.applied.ruleset.clone(),
                    guard: guard.clone(),
                };
                next.ruleset.apply(&delta);
                self.kernel
                    .replace(&next)
                    .inspect(|_| self.metrics.observe_replace())
            }
        };
        self.metrics
            .observe_transaction(started.elapsed(), result.is_ok());
        if let Err(err) = result {
            return Err(self.refused(what, err));
        }
        self.applied.ruleset.apply(&delta);
        self.applied.guard = guard;
        self.health.set_ready();
        self.record_size();
        Ok(())
    }

    pub(super) fn record_size(&self) {
        let ruleset = &self.applied.ruleset;
        let elements = ruleset
            .sets
            .values()
            .map(podwall_policy::Set::len)
            .sum::<usize>()
            + ruleset.ingress.len()
            + ruleset.egress.len();
        self.metrics
            .set_table_size(ruleset.chains.len(), ruleset.sets.len(), elements);
        self.metrics.set_attachments(self.attachments.len());
    }

    /// Put the source's changes into `cluster`. Returns the compiler events for namespaces
    /// and policies, and the pods to bring in line.
    pub(super) fn record_changes(&mut self, changes: Vec<Event>) -> (Vec<Event>, BTreeSet<PodKey>) {
        let mut events = Vec::new();
        let mut pods = BTreeSet::new();
        for change in changes {
            match change {
                Event::Pod(pod) => {
                    pods.insert(pod.key.clone());
                    if let Some(old) = self.cluster.pods.get(&pod.key) {
                        self.claims.remove(old);
                    }
                    self.claims.add(&pod, &self.node);
                    self.cluster.pods.insert(pod.key.clone(), pod);
                }
                Event::PodDeleted(key) => {
                    if let Some(old) = self.cluster.pods.remove(&key) {
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
            }
        }
        (events, pods)
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
    };
    match changes {
        [one] => name(one),
        [first, rest @ ..] => format!("{} and {} more object(s)", name(first), rest.len()),
        [] => "no change".to_string(),
    }
}
