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
//!
//! Rooms: this file holds the state and the requests; `source` takes what the cluster's
//! source reports, `local` maps attachments to pods, `transition` turns a change into one
//! kernel transaction, `pending` keeps what the kernel refused until it lands, `handover`
//! keeps the table a clean stop left, `observe` tells `/metrics` and the drop log what the
//! core holds, `options` is what a core is told at start, `error` says why a request failed.

mod error;
mod flows;
mod handover;
mod local;
mod observe;
mod options;
mod pending;
mod source;
mod transition;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use podwall::error_chain;
use podwall::wire::{Attachment, AttachmentId, Reply, Request};
use podwall_policy::{Compiler, PodKey, Snapshot};
use tracing::{error, info, warn};

pub use error::CoreError;
pub use flows::still_allowed;
use local::{merged, pod_key, Claims};
pub use options::Options;
use pending::Pending;
use transition::Scope;

use crate::dataplane::{entries_of, Desired, Exact, Kernel};
use crate::health::Health;
use crate::metrics::{AttachPhase, Metrics};
use crate::store::Store;

/// The one lock around the core, held for one transaction at a time. A panic while it was
/// held cannot leave a transaction half done in the kernel (each commits whole), so a
/// poisoned lock is taken over rather than stopping the daemon.
pub fn lock(core: &std::sync::Mutex<Core>) -> std::sync::MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
    /// The pods of this node enforced without an attachment (see `Placement`).
    adopted: BTreeSet<PodKey>,
    /// The bridge port each adopted pod's address is behind, as the kernel told it.
    adopted_ports: BTreeMap<IpAddr, String>,
    /// Adopted addresses the kernel could not place (logged once; asked again at reconcile).
    unguarded: BTreeSet<IpAddr>,
    /// Compiles `merged(cluster, attachments)` for this node.
    compiler: Compiler,
    /// What the kernel holds: the compiled ruleset and the guard. While changes are pending,
    /// the last state the kernel took.
    applied: Desired,
    pending: Option<Pending>,
    /// Whether a local pod the source has not described is quarantined (the API server's
    /// pods: its labels exist, we just do not know them) or has no labels (a manifests
    /// directory, which describes every pod there is).
    quarantine_unknown: bool,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// Notified when the kernel took a change: `revoke_flows` is due.
    revocations: Arc<tokio::sync::Notify>,
    /// How long the last transition's kernel transaction took.
    last_commit: std::time::Duration,
    /// This start kept the table the last daemon left and has not read it back yet.
    read_back_due: bool,
    /// The exact fold of `applied`, when the kept start took it for the digest: the
    /// read-back compares the kernel with it rather than folding `applied` again. Dropped
    /// whenever `applied` may change.
    applied_exact: Option<Exact>,
    /// Handed over at stop: no request changes the kernel any more.
    stopped: bool,
}

impl Core {
    /// Load the store, compile, and put the result in the kernel in one atomic swap: a
    /// restart never leaves a moment without rules, and never flushes before the new state
    /// is in. When the last daemon stopped cleanly and left exactly this state in the
    /// kernel, the table is kept instead (see `handover`).
    pub fn start(
        node: String,
        cluster: Snapshot,
        store: Store,
        mut kernel: Box<dyn Kernel>,
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
        let handover = handover::take_record(&store);
        let (compiler, read) =
            handover::compile_beside_read(&mut kernel, handover.is_none(), || {
                Compiler::new(
                    merged(&cluster, &attachments, &node, options.quarantine_unknown),
                    &node,
                )
            });
        let claims = Claims::of(&cluster);
        let mut core = Self {
            node,
            store,
            kernel,
            attachments,
            cluster,
            claims,
            adopted: BTreeSet::new(),
            adopted_ports: BTreeMap::new(),
            unguarded: BTreeSet::new(),
            compiler,
            // Logging is fixed for the daemon's life; every desired state takes it from here.
            applied: Desired {
                logging: options.logging,
                ..Desired::default()
            },
            pending: None,
            quarantine_unknown: options.quarantine_unknown,
            metrics,
            health,
            revocations: Arc::new(tokio::sync::Notify::new()),
            last_commit: std::time::Duration::ZERO,
            read_back_due: false,
            applied_exact: None,
            stopped: false,
        };
        let attachments = core.attachments.clone();
        core.adopt(&attachments);
        let kept = match handover {
            Some(handover) => core.keep_handed_over(&handover),
            None => read.is_some_and(|read| core.keep_exact(read)),
        };
        if kept {
            info!(
                attachments = core.attachments.len(),
                chains = core.applied.ruleset.chains.len(),
                sets = core.applied.ruleset.sets.len(),
                "kept the table the last daemon left: it holds this start's state"
            );
            core.record_size();
            core.health.set_ready();
            return Ok(core);
        }
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
                error!(error = %err, "the kernel refused the start-up state; retrying");
            }
        }
        Ok(core)
    }

    /// Whether some change waits for the kernel.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    pub fn handle(&mut self, request: Request) -> Result<Reply, CoreError> {
        let result = if self.stopped {
            Err(CoreError::Stopping)
        } else {
            self.dispatch(request)
        };
        if let Err(err) = &result {
            self.metrics.count_error(err.metric_kind());
        }
        result
    }

    fn dispatch(&mut self, request: Request) -> Result<Reply, CoreError> {
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
                serving: Some(self.pending.is_none()),
            }),
            Request::Gc { valid } => self.gc(&valid),
            Request::Pods => Ok(Reply::Pods {
                pods: self.enforced_pods(),
                policies: self.metrics.policy_packets.counts(),
            }),
        }
    }

    /// A request spent `lookup` asking the API server for its pod and `waited` waiting for
    /// the core: counted when it is an attach.
    pub fn queued(
        &self,
        request: &Request,
        lookup: std::time::Duration,
        waited: std::time::Duration,
    ) {
        if matches!(request, Request::Attach { .. }) {
            self.metrics
                .observe_attach_phase(AttachPhase::Lookup, lookup);
            self.metrics
                .observe_attach_phase(AttachPhase::Queue, waited);
        }
    }

    fn attach(&mut self, attachment: Attachment) -> Result<Reply, CoreError> {
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
        let started = Instant::now();
        self.transition(next, None, Scope::Pods(pods), what)?;
        let compile = started.elapsed().saturating_sub(self.last_commit);
        self.metrics
            .observe_attach_phase(AttachPhase::Compile, compile);
        self.metrics
            .observe_attach_phase(AttachPhase::Kernel, self.last_commit);
        let started = Instant::now();
        for old in &stale {
            self.store.remove_attachment(&old.id)?;
        }
        self.store.put_attachment(&attachment)?;
        self.metrics
            .observe_attach_phase(AttachPhase::Store, started.elapsed());
        self.forget_flows_toward(&attachment)?;
        info!(pod = %attachment.pod, container_id = %attachment.id.container_id, "attached");
        let chains = entries_of(&self.applied.ruleset, &attachment.ips)
            .into_iter()
            .map(|(_, _, chain)| chain)
            .collect();
        Ok(Reply::Attached { chains })
    }

    /// With its rules in, before the ADD returns: the flows conntrack tracks from or to the
    /// pod's addresses are forgotten. The pod has not started, so they are another pod's
    /// that had an address before, and would reach this one past its rules (see
    /// `conntrack::involving`). Failing fails the ADD: nothing may reach the pod unjudged.
    fn forget_flows_toward(&mut self, attachment: &Attachment) -> Result<(), CoreError> {
        let started = Instant::now();
        let forgot = (self.kernel.forget_flows_of(&attachment.ips)).map_err(|err| {
            let ips: Vec<String> = attachment.ips.iter().map(|ip| ip.to_string()).collect();
            CoreError::Kernel(format!(
                "pod {}: forgetting the flows conntrack tracks toward {}: {:#}",
                attachment.pod,
                ips.join(", "),
                anyhow::Error::from(err)
            ))
        })?;
        self.metrics
            .observe_attach_phase(AttachPhase::Kernel, started.elapsed());
        if forgot > 0 {
            info!(pod = %attachment.pod, flows = forgot, "forgot the flows another pod left toward the pod's addresses");
        }
        Ok(())
    }

    fn detach(&mut self, id: &AttachmentId) -> Result<Reply, CoreError> {
        let Some(attachment) = self.attachments.get(id).cloned() else {
            // Still clear a record the store might hold from a crash between writes.
            let existed = self.store.remove_attachment(id)?;
            return Ok(Reply::Detached { existed });
        };
        let mut next = self.attachments.clone();
        next.remove(id);
        let what = format!("pod {} detached", attachment.pod);
        self.transition(next, None, Scope::Pods(vec![pod_key(&attachment)]), what)?;
        self.store.remove_attachment(id)?;
        info!(pod = %attachment.pod, container_id = %id.container_id, "detached");
        Ok(Reply::Detached { existed: true })
    }

    fn check(&mut self, id: &AttachmentId) -> Result<Reply, CoreError> {
        let attachment = self
            .attachments
            .get(id)
            .ok_or_else(|| CoreError::NotAttached(id.clone()))?;
        let kernel = self.kernel.dump()?.ok_or_else(|| {
            CoreError::RulesMissing("the podwall table is missing from the kernel".into())
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
            Err(CoreError::RulesMissing(format!(
                "{} is missing {}",
                attachment.pod,
                missing.join(", ")
            )))
        }
    }

    fn gc(&mut self, valid: &[AttachmentId]) -> Result<Reply, CoreError> {
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
            self.store.remove_attachment(id)?;
        }
        info!(removed = removed.len(), "garbage-collected attachments");
        Ok(Reply::Gc { removed })
    }
}

fn validate(attachment: &Attachment) -> Result<(), CoreError> {
    let bad = |what| Err(CoreError::BadAttachment(what));
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

#[cfg(test)]
pub(crate) mod tests;
