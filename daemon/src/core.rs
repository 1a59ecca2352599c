//! The daemon's state: the node's attachments, the cluster as the source reports it, the
//! compiler over both, and what we applied to the kernel. The one place where requests and
//! source updates turn into kernel transactions and store writes.
//!
//! `Core` is synchronous and owns its `Kernel` and `Store`; callers hold one lock around it,
//! so transactions never interleave.
//!
//! One rule for failure: the desired state (attachments, cluster, compiler) always follows
//! what the node and the cluster say. A change the kernel refuses stays pending: `/healthz`
//! is red and names it, and the whole desired state is swapped in again (with backoff, and
//! at every reconcile) until the kernel takes it. Nothing is undone into forgetting.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use podwall::error_chain;
use podwall::wire::{Attachment, AttachmentId, ErrorKind, Reply, Request, WireError};
use podwall_policy::model::Phase;
use podwall_policy::selector::Labels;
use podwall_policy::{Compiler, Event, Pod, PodKey, Ruleset, RulesetDelta, Snapshot};
use tracing::{error, info, warn};

use crate::dataplane::compiled::{settle_open_entries, with_open_entries, with_quarantine};
use crate::dataplane::{
    change_for, entries_of, Change, DataplaneError, Desired, Fingerprint, Guard, Kernel,
};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::store::Store;

/// What a transition can have changed.
enum Scope {
    /// These pods (attach, detach, GC).
    Pods(Vec<PodKey>),
    /// These objects of the cluster, as a source reported them.
    Changes(Vec<Event>),
    /// Anything: compare whole snapshots.
    Everything,
}

/// Changes of the desired state that the kernel has not taken yet.
#[derive(Debug)]
struct Pending {
    /// When the oldest was first refused.
    since: Instant,
    changes: usize,
    /// What the first few were, for `/healthz`.
    first: Vec<String>,
    /// The kernel's last refusal.
    error: String,
}

/// How many changes `/healthz` names; the count says how many more there are.
const NAMED_PENDING: usize = 3;

impl Pending {
    fn reason(&self) -> String {
        let more = self.changes.saturating_sub(self.first.len());
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        format!(
            "{} change(s) not in the kernel yet ({}{more}), retrying: {}",
            self.changes,
            self.first.join(", "),
            self.error
        )
    }
}

/// The delta between `old` and `new` over the objects `deltas` touched: several compiler
/// deltas become one transaction without comparing whole rulesets.
fn touched_delta(old: &Ruleset, new: &Ruleset, deltas: &[RulesetDelta]) -> RulesetDelta {
    let mut sets = BTreeSet::new();
    let mut chains = BTreeSet::new();
    let mut ingress: BTreeSet<IpAddr> = BTreeSet::new();
    let mut egress: BTreeSet<IpAddr> = BTreeSet::new();
    for d in deltas {
        sets.extend(
            d.sets_added
                .keys()
                .chain(&d.sets_removed)
                .chain(d.elements_added.keys())
                .chain(d.elements_removed.keys()),
        );
        chains.extend(d.chains_set.keys().chain(&d.chains_removed));
        ingress.extend(d.ingress.keys());
        egress.extend(d.egress.keys());
    }
    let part = |rs: &Ruleset| Ruleset {
        sets: rs
            .sets
            .iter()
            .filter(|(k, _)| sets.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        chains: rs
            .chains
            .iter()
            .filter(|(k, _)| chains.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        ingress: rs
            .ingress
            .iter()
            .filter(|(k, _)| ingress.contains(k))
            .map(|(k, v)| (*k, v.clone()))
            .collect(),
        egress: rs
            .egress
            .iter()
            .filter(|(k, _)| egress.contains(k))
            .map(|(k, v)| (*k, v.clone()))
            .collect(),
    };
    part(old).diff(&part(new))
}

/// How a core treats what it cannot know for itself.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Quarantine a local pod the source has not described (see `Core::quarantined`).
    pub quarantine_unknown: bool,
    /// The runtime's libcni cache, to rebuild attachment records the store cannot read.
    pub cni_cache: Option<std::path::PathBuf>,
}

/// Which pods of other nodes claim each address: those `merged` takes an address attached
/// here from. Kept beside `Core::cluster`, so that an attach finds them without scanning
/// every pod of the cluster.
#[derive(Debug, Default)]
struct Claims(BTreeMap<IpAddr, BTreeSet<PodKey>>);

impl Claims {
    fn of(cluster: &Snapshot, node: &str) -> Self {
        let mut claims = Self::default();
        for pod in cluster.pods.values() {
            claims.add(pod, node);
        }
        claims
    }

    fn add(&mut self, pod: &Pod, node: &str) {
        if pod.node.as_deref() == Some(node) {
            return;
        }
        for ip in &pod.ips {
            self.0.entry(*ip).or_default().insert(pod.key.clone());
        }
    }

    fn remove(&mut self, pod: &Pod) {
        for ip in &pod.ips {
            if let Some(keys) = self.0.get_mut(ip) {
                keys.remove(&pod.key);
                if keys.is_empty() {
                    self.0.remove(ip);
                }
            }
        }
    }

    /// The pods of other nodes that claim any of `ips`.
    fn on(&self, ips: &BTreeSet<IpAddr>) -> BTreeSet<PodKey> {
        ips.iter()
            .filter_map(|ip| self.0.get(ip))
            .flatten()
            .cloned()
            .collect()
    }
}

pub struct Core {
    node: String,
    store: Store,
    kernel: Box<dyn Kernel>,
    attachments: BTreeMap<AttachmentId, Attachment>,
    /// The cluster as the source (manifests or API) reports it; what it says of this node's
    /// pods counts only for attached ones (see `merged`).
    cluster: Snapshot,
    claims: Claims,
    /// Compiles `merged(cluster, attachments)` for this node.
    compiler: Compiler,
    /// What the kernel holds: the compiled ruleset plus `open` entries for unisolated pods.
    /// While changes are pending, the last state the kernel took.
    applied: Desired,
    pending: Option<Pending>,
    /// Whether a local pod the source has not described is quarantined (the API server's
    /// pods: its labels exist, we just do not know them) or has no labels (a manifests
    /// directory, which describes every pod there is).
    quarantine_unknown: bool,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// The cluster with this node's pods as the attachments say: a pod is here once it is
/// attached (whatever the source claims), with the addresses the CNI result gave it and the
/// labels and ports the source knows for it.
pub fn merged(
    cluster: &Snapshot,
    attachments: &BTreeMap<AttachmentId, Attachment>,
    node: &str,
) -> Snapshot {
    let mut snap = cluster.clone();
    snap.pods.retain(|_, pod| pod.node.as_deref() != Some(node));
    for pod in local_pods(cluster, attachments, node).into_values() {
        snap.pods.insert(pod.key.clone(), pod);
    }
    snap.drop_stale_claims_on(node);
    snap
}

fn local_pods(
    cluster: &Snapshot,
    attachments: &BTreeMap<AttachmentId, Attachment>,
    node: &str,
) -> BTreeMap<PodKey, Pod> {
    let keys: BTreeSet<PodKey> = attachments.values().map(pod_key).collect();
    keys.into_iter()
        .filter_map(|key| local_pod(cluster, attachments, &key, node).map(|pod| (key, pod)))
        .collect()
}

/// Pod `key` as attached here: the source's labels and ports, the attachments' addresses (two
/// attachments of one pod, two interfaces, give it both). `None` if it is not attached.
fn local_pod(
    cluster: &Snapshot,
    attachments: &BTreeMap<AttachmentId, Attachment>,
    key: &PodKey,
    node: &str,
) -> Option<Pod> {
    let ips: Vec<IpAddr> = attachments
        .values()
        .filter(|a| pod_key(a) == *key)
        .flat_map(|a| a.ips.iter().copied())
        .collect();
    if ips.is_empty() {
        return None;
    }
    let mut pod = cluster
        .pods
        .get(key)
        .cloned()
        .unwrap_or_else(|| Pod::new(key.clone(), Labels::new(), Vec::new()));
    pod.node = Some(node.to_string());
    pod.ips = ips;
    pod.phase = Phase::Active;
    pod.host_network = false;
    Some(pod)
}

fn pod_key(attachment: &Attachment) -> PodKey {
    PodKey {
        namespace: attachment.pod.namespace.clone(),
        name: attachment.pod.name.clone(),
    }
}

/// Each attached pod's host-side veth may send only from the pod's addresses. A result
/// that names no host interface leaves that pod unguarded (logged at attach).
fn guard(attachments: &BTreeMap<AttachmentId, Attachment>) -> Guard {
    let mut guard = Guard::default();
    for attachment in attachments.values() {
        if let Some(port) = &attachment.host_interface {
            guard
                .sources
                .entry(port.clone())
                .or_default()
                .extend(attachment.ips.iter().copied());
        }
    }
    guard
}

fn local_ips(attachments: &BTreeMap<AttachmentId, Attachment>) -> BTreeSet<IpAddr> {
    attachments
        .values()
        .flat_map(|a| a.ips.iter().copied())
        .collect()
}

/// The compiler events that turn snapshot `old` into `new`.
pub fn events_between(old: &Snapshot, new: &Snapshot) -> Vec<Event> {
    let mut events = Vec::new();
    for (name, ns) in &new.namespaces {
        if old.namespaces.get(name) != Some(ns) {
            events.push(Event::Namespace(ns.clone()));
        }
    }
    for (key, pod) in &new.pods {
        if old.pods.get(key) != Some(pod) {
            events.push(Event::Pod(pod.clone()));
        }
    }
    for (key, policy) in &new.policies {
        if old.policies.get(key) != Some(policy) {
            events.push(Event::Policy(policy.clone()));
        }
    }
    events.extend(
        old.policies
            .keys()
            .filter(|k| !new.policies.contains_key(*k))
            .cloned()
            .map(Event::PolicyDeleted),
    );
    events.extend(
        old.pods
            .keys()
            .filter(|k| !new.pods.contains_key(*k))
            .cloned()
            .map(Event::PodDeleted),
    );
    events.extend(
        old.namespaces
            .keys()
            .filter(|k| !new.namespaces.contains_key(*k))
            .cloned()
            .map(Event::NamespaceDeleted),
    );
    events
}

impl Core {
    /// Load the store, compile, and put the result in the kernel in one atomic swap: a
    /// restart never leaves a moment without rules, and never flushes before the new state
    /// is in.
    pub fn start(
        node: String,
        cluster: Snapshot,
        store: Store,
        kernel: Box<dyn Kernel>,
        options: Options,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> anyhow::Result<Self> {
        let (mut attachments, unreadable) = store.attachments().context("loading attachments")?;
        let mut lost = Vec::new();
        for record in unreadable {
            metrics.count_store_discard();
            let rebuilt = match (&record.id, &options.cni_cache) {
                (Some(id), Some(dir)) => crate::recover::from_cni_cache(dir, id),
                (None, _) => Err("its key names no attachment".to_string()),
                (_, None) => Err("no CNI cache to rebuild it from".to_string()),
            };
            match rebuilt {
                Ok(attachment) => {
                    warn!(pod = %attachment.pod, container_id = %attachment.id.container_id, error = %error_chain(&record.error), "rebuilt an unreadable attachment record from the runtime's CNI cache");
                    store.put_attachment(&attachment)?;
                    attachments.insert(attachment.id.clone(), attachment);
                }
                Err(why) => {
                    error!(error = %error_chain(&record.error), why, "discarded an unreadable attachment record: its pod is not enforced until it is attached again");
                    lost.push(
                        record
                            .id
                            .map_or_else(|| "?".to_string(), |id| id.container_id),
                    );
                }
            }
        }
        if !lost.is_empty() {
            // Their pods run, but nothing says which they are or what addresses they hold:
            // say so until the daemon restarts, by then the operator has been told.
            health.set_source(
                "store",
                Err(format!(
                    "{} unreadable attachment record(s) discarded (containers {}); their pods are not enforced until they are attached again (restart them)",
                    lost.len(),
                    lost.join(", ")
                )),
            );
        }
        let compiler = Compiler::new(merged(&cluster, &attachments, &node), &node);
        let claims = Claims::of(&cluster, &node);
        let mut core = Self {
            node,
            store,
            kernel,
            attachments,
            cluster,
            claims,
            compiler,
            applied: Desired::default(),
            pending: None,
            quarantine_unknown: options.quarantine_unknown,
            metrics,
            health,
        };
        // A kernel that refuses the start state does not stop the daemon: ADDs keep being
        // served (each retries the swap) and the retry loop keeps at it, with /healthz red.
        match core.commit_desired() {
            Ok(()) => {
                info!(
                    attachments = core.attachments.len(),
                    chains = core.applied.ruleset.chains.len(),
                    sets = core.applied.ruleset.sets.len(),
                    "programmed kernel"
                );
                core.health.set_ready();
            }
            Err(err) => {
                let err = core.refused("start-up state".to_string(), err);
                error!(error = %err.message, "the kernel refused the start-up state; retrying");
            }
        }
        Ok(core)
    }

    /// Whether some change waits for the kernel.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    pub fn handle(&mut self, request: Request) -> Result<Reply, WireError> {
        let result = self.serve(request);
        if let Err(err) = &result {
            self.metrics.count_error(match err.kind {
                ErrorKind::Kernel => "kernel",
                ErrorKind::Store => "store",
                _ => "request",
            });
        }
        result
    }

    fn serve(&mut self, request: Request) -> Result<Reply, WireError> {
        match request {
            Request::Attach { attachment } => {
                let started = Instant::now();
                let result = self.attach(attachment);
                self.metrics
                    .observe_attach(started.elapsed(), result.is_ok());
                result
            }
            Request::Detach { id } => self.detach(&id),
            Request::Check { id } => self.check(&id),
            Request::Status => Ok(Reply::Status {
                ready: self.health.is_ready(),
                attachments: self.attachments.len(),
                reason: self.health.reason(),
            }),
            Request::Gc { valid } => self.gc(&valid),
        }
    }

    /// Whether the source has told us about pod `key` (kube mode asks the API server directly
    /// on attach when it has not).
    pub fn knows_pod(&self, key: &PodKey) -> bool {
        self.cluster.pods.contains_key(key)
    }

    /// A pod fetched directly, ahead of the watch: the attach that follows uses its labels.
    pub fn learn_pod(&mut self, pod: Pod) {
        if !self.cluster.pods.contains_key(&pod.key) {
            self.claims.add(&pod, &self.node);
            self.cluster.pods.insert(pod.key.clone(), pod);
        }
    }

    /// Keep the cluster state in the store, for a restart while the API is unreachable.
    pub fn persist_cluster(&self) -> Result<(), crate::store::StoreError> {
        self.store.put_cluster(&self.cluster)
    }

    /// The source reported changed objects (the API watchers' events): only they are
    /// compared and compiled.
    pub fn apply_changes(&mut self, changes: Vec<Event>) -> Result<(), WireError> {
        let started = Instant::now();
        let attachments = self.attachments.clone();
        let what = describe(&changes);
        let result = self.transition(attachments, None, Scope::Changes(changes), what);
        self.metrics.observe_sync(started.elapsed(), result.is_ok());
        result
    }

    /// The source reported a new state of the cluster.
    pub fn set_cluster(&mut self, cluster: Snapshot) -> Result<(), WireError> {
        let started = Instant::now();
        let attachments = self.attachments.clone();
        // The transition names the objects that differ.
        let result = self.transition(attachments, Some(cluster), Scope::Everything, String::new());
        self.metrics.observe_sync(started.elapsed(), result.is_ok());
        result
    }

    fn attach(&mut self, attachment: Attachment) -> Result<Reply, WireError> {
        validate(&attachment)?;
        if attachment.host_interface.is_none() {
            warn!(pod = %attachment.pod, "the CNI result names no host interface: the pod's source addresses are not guarded");
        }
        let mut next = self.attachments.clone();
        // An address still held by another attachment means that pod went away without a DEL
        // and its address was handed out again: the new pod owns it now.
        let stale: Vec<Attachment> = next
            .values()
            .filter(|a| a.id != attachment.id && a.ips.iter().any(|ip| attachment.ips.contains(ip)))
            .cloned()
            .collect();
        for old in &stale {
            warn!(pod = %old.pod, container_id = %old.id.container_id, "address reused; dropping stale attachment");
            next.remove(&old.id);
        }
        let mut pods: Vec<PodKey> = stale.iter().map(pod_key).collect();
        pods.push(pod_key(&attachment));
        next.insert(attachment.id.clone(), attachment.clone());
        let what = format!("pod {} attached", attachment.pod);
        self.transition(next, None, Scope::Pods(pods), what)?;
        for old in &stale {
            self.store.remove_attachment(&old.id).map_err(store_error)?;
        }
        self.store
            .put_attachment(&attachment)
            .map_err(store_error)?;
        info!(pod = %attachment.pod, container_id = %attachment.id.container_id, "attached");
        let chains = entries_of(&self.applied.ruleset, &attachment.ips)
            .into_iter()
            .map(|(_, _, chain)| chain)
            .collect();
        Ok(Reply::Attached { chains })
    }

    fn detach(&mut self, id: &AttachmentId) -> Result<Reply, WireError> {
        let Some(attachment) = self.attachments.get(id).cloned() else {
            // Still clear a record the store might hold from a crash between writes.
            let existed = self.store.remove_attachment(id).map_err(store_error)?;
            return Ok(Reply::Detached { existed });
        };
        let mut next = self.attachments.clone();
        next.remove(id);
        let what = format!("pod {} detached", attachment.pod);
        self.transition(next, None, Scope::Pods(vec![pod_key(&attachment)]), what)?;
        self.store.remove_attachment(id).map_err(store_error)?;
        info!(pod = %attachment.pod, container_id = %id.container_id, "detached");
        Ok(Reply::Detached { existed: true })
    }

    fn check(&mut self, id: &AttachmentId) -> Result<Reply, WireError> {
        let attachment = self
            .attachments
            .get(id)
            .ok_or_else(|| WireError::new(ErrorKind::NotAttached, format!("no attachment {id}")))?;
        let kernel = self
            .kernel
            .dump()
            .map_err(|e| {
                WireError::new(ErrorKind::Kernel, format!("{:#}", anyhow::Error::from(e)))
            })?
            .ok_or_else(|| {
                WireError::new(
                    ErrorKind::RulesMissing,
                    "the podwall table is missing from the kernel",
                )
            })?;
        let mut missing = Vec::new();
        for (map, ip, chain) in entries_of(&self.applied.ruleset, &attachment.ips) {
            if kernel.maps.get(&map).and_then(|m| m.get(&ip)) != Some(&chain) {
                missing.push(format!("{map} element {ip}"));
            }
            if !kernel.chains.contains_key(&chain) {
                missing.push(format!("chain {chain}"));
            }
        }
        if missing.is_empty() {
            Ok(Reply::Checked)
        } else {
            Err(WireError::new(
                ErrorKind::RulesMissing,
                format!("{} is missing {}", attachment.pod, missing.join(", ")),
            ))
        }
    }

    fn gc(&mut self, valid: &[AttachmentId]) -> Result<Reply, WireError> {
        let removed: Vec<AttachmentId> = self
            .attachments
            .keys()
            .filter(|id| !valid.contains(id))
            .cloned()
            .collect();
        if removed.is_empty() {
            return Ok(Reply::Gc { removed });
        }
        let next = self
            .attachments
            .iter()
            .filter(|(id, _)| valid.contains(id))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let pods = removed
            .iter()
            .filter_map(|id| self.attachments.get(id))
            .map(pod_key)
            .collect();
        let what = format!("{} attachment(s) garbage-collected", removed.len());
        self.transition(next, None, Scope::Pods(pods), what)?;
        for id in &removed {
            self.store.remove_attachment(id).map_err(store_error)?;
        }
        info!(removed = removed.len(), "garbage-collected attachments");
        Ok(Reply::Gc { removed })
    }

    /// Compare the kernel with what we applied and swap the table back in if anything
    /// drifted (a table deleted, a chain flushed, an element removed by hand).
    pub fn reconcile(&mut self) -> Result<Vec<String>, WireError> {
        let started = Instant::now();
        let result = self.repair_drift();
        self.metrics.observe_sync(started.elapsed(), result.is_ok());
        result
    }

    fn repair_drift(&mut self) -> Result<Vec<String>, WireError> {
        if let Some(retried) = self.retry_pending() {
            return retried.map(|()| Vec::new());
        }
        let expected = Fingerprint::of(&self.applied);
        let kernel = match self.kernel.dump() {
            Ok(kernel) => kernel,
            Err(err) => return Err(self.refused("reading the kernel back".to_string(), err)),
        };
        let drift = match kernel {
            None => vec!["table inet podwall missing".to_string()],
            Some(actual) => actual.differences(&expected),
        };
        if !drift.is_empty() {
            warn!(drift = ?drift, "kernel drifted from the applied rules; repairing");
            if let Err(err) = self.commit_desired() {
                return Err(self.refused("drift repair".to_string(), err));
            }
            self.metrics.count_repair();
        }
        self.health.set_ready();
        Ok(drift)
    }

    /// Swap the whole desired state in again if changes are pending: `None` when none are.
    pub fn retry_pending(&mut self) -> Option<Result<(), WireError>> {
        self.pending.as_ref()?;
        Some(match self.commit_desired() {
            Ok(()) => {
                self.landed();
                Ok(())
            }
            Err(err) => {
                let message = format!("{:#}", anyhow::Error::from(err));
                if let Some(pending) = &mut self.pending {
                    pending.error = message.clone();
                    self.health.set_failed(pending.reason());
                }
                self.metrics.count_error("kernel");
                Err(WireError::new(ErrorKind::Kernel, message))
            }
        })
    }

    /// The desired state: the compiled ruleset with `open` and `quarantine` entries, and the
    /// guard.
    fn desired(&self) -> Desired {
        let ruleset = with_open_entries(
            self.compiler.ruleset().clone(),
            local_ips(&self.attachments),
        );
        Desired {
            ruleset: with_quarantine(ruleset, &self.quarantined(&self.attachments)),
            guard: guard(&self.attachments),
        }
    }

    /// The addresses of attached pods whose labels are unknown: the source has not described
    /// them (the watch lags, the API server is unreachable). They send and receive nothing
    /// new until it does, so no policy that would select them is bypassed meanwhile.
    fn quarantined(&self, attachments: &BTreeMap<AttachmentId, Attachment>) -> BTreeSet<IpAddr> {
        if !self.quarantine_unknown {
            return BTreeSet::new();
        }
        attachments
            .values()
            .filter(|a| !self.cluster.pods.contains_key(&pod_key(a)))
            .flat_map(|a| a.ips.iter().copied())
            .collect()
    }

    /// Put the whole desired state in the kernel in one swap: how a pending change lands,
    /// whatever the kernel held before (a refused change, drift, an earlier daemon's rules).
    fn commit_desired(&mut self) -> Result<(), DataplaneError> {
        let desired = self.desired();
        let started = Instant::now();
        let result = self.kernel.replace(&desired);
        self.metrics
            .observe_transaction(started.elapsed(), result.is_ok());
        result?;
        self.metrics.observe_replace();
        self.applied = desired;
        self.record_size();
        Ok(())
    }

    /// The kernel refused `what`: it stays in the desired state, pending, and is named in
    /// `/healthz` until a retry lands it.
    fn refused(&mut self, what: String, err: DataplaneError) -> WireError {
        let message = format!("{:#}", anyhow::Error::from(err));
        let pending = self.pending.get_or_insert_with(|| Pending {
            since: Instant::now(),
            changes: 0,
            first: Vec::new(),
            error: String::new(),
        });
        pending.changes += 1;
        if pending.first.len() < NAMED_PENDING {
            pending.first.push(what);
        }
        pending.error = message.clone();
        self.metrics
            .set_pending(Some((pending.changes, pending.since)));
        self.health.set_failed(pending.reason());
        WireError::new(ErrorKind::Kernel, message)
    }

    /// The kernel holds the desired state again.
    fn landed(&mut self) {
        if let Some(pending) = self.pending.take() {
            info!(
                changes = pending.changes,
                after = ?pending.since.elapsed(),
                "pending changes are in the kernel"
            );
        }
        self.metrics.set_pending(None);
        self.health.set_ready();
    }

    /// The compiler event that brings pod `key` in line with `attachments`, whose addresses
    /// are `local`, if any.
    fn pod_event(
        &self,
        key: &PodKey,
        attachments: &BTreeMap<AttachmentId, Attachment>,
        local: &BTreeSet<IpAddr>,
    ) -> Option<Event> {
        let want = local_pod(&self.cluster, attachments, key, &self.node).or_else(|| {
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
    fn transition(
        &mut self,
        attachments: BTreeMap<AttachmentId, Attachment>,
        cluster: Option<Snapshot>,
        scope: Scope,
        mut what: String,
    ) -> Result<(), WireError> {
        let quarantined_before = self.quarantined(&self.attachments);
        let local = local_ips(&attachments);
        let mut touched: BTreeSet<IpAddr> = local_ips(&self.attachments)
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
                let old = merged(&self.cluster, &self.attachments, &self.node);
                let new = merged(
                    cluster.as_ref().unwrap_or(&self.cluster),
                    &attachments,
                    &self.node,
                );
                let events = events_between(&old, &new);
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
        for d in &deltas {
            touched.extend(d.ingress.keys().chain(d.egress.keys()).copied());
        }
        let guard = guard(&attachments);
        self.attachments = attachments;
        if let Some(cluster) = cluster {
            self.cluster = cluster;
            self.claims = Claims::of(&self.cluster, &self.node);
        }
        let quarantined = self.quarantined(&self.attachments);
        touched.extend(quarantined.symmetric_difference(&quarantined_before));
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
        let mut delta = match (deltas.pop(), deltas.is_empty()) {
            (Some(only), true) => only,
            (last, _) => {
                deltas.extend(last);
                touched_delta(&self.applied.ruleset, self.compiler.ruleset(), &deltas)
            }
        };
        settle_open_entries(
            &mut delta,
            self.compiler.ruleset(),
            &self.applied.ruleset,
            &touched,
            &local,
            &quarantined,
        );
        let started = Instant::now();
        let result = match change_for(&self.applied, &delta, &guard) {
            Change::None => Ok(()),
            Change::Elements(ops) => {
                let n = ops.len();
                self.kernel
                    .apply_elements(&ops)
                    .inspect(|_| self.metrics.observe_elements(n))
            }
            Change::Replace => {
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

    fn record_size(&self) {
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
    fn record_changes(&mut self, changes: Vec<Event>) -> (Vec<Event>, BTreeSet<PodKey>) {
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
fn describe(changes: &[Event]) -> String {
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

fn validate(attachment: &Attachment) -> Result<(), WireError> {
    let bad = |what: &str| {
        Err(WireError::new(
            ErrorKind::BadRequest,
            format!("attachment {what}"),
        ))
    };
    if attachment.id.container_id.is_empty() || attachment.id.ifname.is_empty() {
        return bad("needs a container id and an interface name");
    }
    if attachment.ips.is_empty() {
        return bad("has no IP addresses");
    }
    if attachment.pod.namespace.is_empty() || attachment.pod.name.is_empty() {
        return bad("needs a pod namespace and name");
    }
    Ok(())
}

fn store_error(err: crate::store::StoreError) -> WireError {
    WireError::new(ErrorKind::Store, format!("{:#}", anyhow::Error::from(err)))
}

#[cfg(test)]
mod tests;
