//! The daemon's background loops around `Core`: following the source's updates and the
//! periodic reconcile. Each takes the lock only for one transaction.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sources::Update;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::core::{lock, Core, CoreError};
use crate::dataplane::netlink::NftSocket;
use crate::dataplane::{counters, DataplaneError, Flow, FlowTable};
use crate::health::Health;
use crate::metrics::Metrics;

/// How often, at most, the cluster state is written to the store: a snapshot of a large
/// cluster is megabytes, and a restart only needs a recent one.
const PERSIST_EVERY: Duration = Duration::from_secs(5);

/// Feed every update from a source (the manifests reader, the API watchers) to the core,
/// in order, and, when `persist`, keep a recent cluster state in the store (a restart in
/// Kubernetes mode starts from it; a manifests directory is its own record). Updates that
/// queued up while the core was busy are applied together: consecutive change batches
/// become one transaction. A list that brings nothing new (a restart's first, a relist)
/// writes nothing.
pub async fn follow_source(
    name: &'static str,
    mut updates: mpsc::UnboundedReceiver<Update>,
    core: Arc<Mutex<Core>>,
    persist: bool,
    shutdown: CancellationToken,
) {
    // Changes since the last write to the store; written once PERSIST_EVERY has passed,
    // also when no further update comes to trigger it.
    let mut dirty = false;
    let mut next_persist = tokio::time::Instant::now();
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(next_persist), if dirty => None,
            update = updates.recv() => match update { Some(update) => Some(update), None => return },
        };
        let mut batch: Vec<Update> = first.into_iter().collect();
        while let Ok(update) = updates.try_recv() {
            batch.push(update);
        }
        let due = tokio::time::Instant::now() >= next_persist;
        let core = core.clone();
        let result = tokio::task::spawn_blocking(move || {
            let (changed, applied, write) = {
                let mut core = lock(&core);
                let (changed, applied) = apply(&mut core, batch);
                let write = persist && (dirty || changed) && due;
                (changed, applied, write.then(|| core.cluster_to_store()))
            };
            // Written after the lock is released: an ADD never waits behind the store.
            let written = write.map(|(store, cluster)| {
                store.put_cluster(&cluster).map_err(|err| {
                    warn!(
                        error = format!("{:#}", anyhow::Error::from(err)),
                        "cannot store the cluster state; trying again at the next write"
                    );
                })
            });
            (applied, changed, written)
        })
        .instrument(info_span!("source", name))
        .await;
        let applied = match result {
            Ok((applied, changed, written)) => {
                // A write that failed leaves the state to be written again.
                dirty = match written {
                    Some(written) => written.is_err(),
                    None => dirty || (persist && changed),
                };
                if written.is_some() {
                    next_persist = tokio::time::Instant::now() + PERSIST_EVERY;
                }
                applied
            }
            Err(err) => {
                // Whatever the batch changed is not known: the store catches up.
                dirty = persist;
                warn!(source = name, error = %err, "applying cluster update panicked");
                continue;
            }
        };
        match applied {
            Ok(()) => debug!(source = name, "applied cluster update"),
            Err(err) => {
                warn!(source = name, error = %err, "the kernel refused a cluster update; it stays pending and is retried")
            }
        }
    }
}

/// A whole snapshot replaces what came before it in the batch; changes after it are merged.
/// Every update is applied whatever the kernel says of one before it (a refused change stays
/// pending in the desired state, see `core::pending`). Returns whether the cluster state
/// changed, and the kernel's answer to the last transaction, which holds every change
/// before it.
fn apply(core: &mut Core, batch: Vec<Update>) -> (bool, Result<(), CoreError>) {
    let (mut changed, mut result) = (false, Ok(()));
    let mut changes = Vec::new();
    for update in batch {
        match update {
            Update::Snapshot(snapshot) => {
                changes.clear();
                changed |= !core.holds_cluster(&snapshot);
                result = core.set_cluster(snapshot);
            }
            Update::Changes(more) => changes.extend(more),
        }
    }
    if !changes.is_empty() {
        changed = true;
        result = core.apply_changes(changes);
    }
    (changed, result)
}

/// How often the rules' counters are read for `/metrics`.
pub const COUNT_EVERY: Duration = Duration::from_secs(10);

/// Every `COUNT_EVERY`, read the rules' counters (over netlink, without the core's lock) and
/// tell the core, which attributes them to policies under its lock (a walk of the chains).
pub async fn count_policies(core: Arc<Mutex<Core>>, shutdown: CancellationToken) {
    let mut reader = Some((counters::Tally::default(), None::<NftSocket>));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(COUNT_EVERY) => {}
        }
        let Some((mut tally, socket)) = reader.take() else {
            return;
        };
        let core = core.clone();
        let counted = tokio::task::spawn_blocking(move || {
            let read = |socket: Option<NftSocket>| {
                let mut socket = match socket {
                    Some(socket) => socket,
                    None => NftSocket::open()?,
                };
                counters::read(&mut socket).map(|reading| (reading, socket))
            };
            // The tally survives a failed reading: totals must never count a packet twice.
            match read(socket) {
                Ok((reading, socket)) => {
                    if let Some(reading) = reading {
                        lock(&core).count(&tally.packets_since(&reading));
                    }
                    (tally, Ok(socket))
                }
                Err(err) => (tally, Err(err)),
            }
        })
        .await;
        reader = match counted {
            Ok((tally, Ok(socket))) => Some((tally, Some(socket))),
            Ok((tally, Err(err))) => {
                debug!(error = %err, "cannot read the rules' counters; trying again");
                Some((tally, None))
            }
            Err(err) => {
                warn!(error = %err, "reading the rules' counters panicked");
                Some((counters::Tally::resumed(), None))
            }
        };
    }
}

/// How often the watchdog takes the core's lock (see `Health::stalled`).
pub const BEAT: Duration = Duration::from_secs(1);

/// Take the core's lock every `BEAT` and tell `health`: `/livez` fails when the core stops
/// answering (a transaction that never returns, a lock never released).
pub async fn watchdog(core: Arc<Mutex<Core>>, health: Arc<Health>, shutdown: CancellationToken) {
    loop {
        let core = core.clone();
        let taken = tokio::task::spawn_blocking(move || drop(lock(&core)));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            result = taken => if result.is_ok() { health.beat() },
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(BEAT) => {}
        }
    }
}

/// Every `period`, compare the kernel with what was applied and repair drift; at once
/// first when `read_back_first` (the start kept the table it found, see `core::handover`).
pub async fn reconcile_every(
    period: Duration,
    read_back_first: bool,
    core: Arc<Mutex<Core>>,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    if !read_back_first {
        ticker.tick().await; // the first tick is immediate; start-up just programmed the kernel
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let core = core.clone();
        match tokio::task::spawn_blocking(move || lock(&core).reconcile())
            .instrument(info_span!("resync"))
            .await
        {
            Ok(Ok(drift)) if drift.is_empty() => {}
            Ok(Ok(drift)) => info!(repaired = drift.len(), "reconcile repaired drift"),
            Ok(Err(err)) => warn!(error = %err, "reconcile failed"),
            Err(err) => warn!(error = %err, "reconcile panicked"),
        }
    }
}

/// The first retry of a refused change comes this soon; each further one waits twice as
/// long, up to `RETRY_MAX`.
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Retry changes the kernel refused, with backoff, until it takes them. Attaches and source
/// updates retry too (each swaps the whole desired state while anything is pending), so
/// this loop matters when nothing else happens.
pub async fn retry_pending(core: Arc<Mutex<Core>>, shutdown: CancellationToken) {
    let mut delay = RETRY_MIN;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        let core = core.clone();
        let outcome = tokio::task::spawn_blocking(move || lock(&core).retry_pending()).await;
        delay = match outcome {
            Ok(None) => RETRY_MIN,
            Ok(Some(Ok(()))) => {
                info!("pending changes landed");
                RETRY_MIN
            }
            Ok(Some(Err(err))) => {
                let next = (delay * 2).min(RETRY_MAX);
                warn!(error = %err, retry_in = ?next, "the kernel still refuses the pending changes");
                next
            }
            Err(err) => {
                warn!(error = %err, "retrying pending changes panicked");
                RETRY_MAX
            }
        };
    }
}

/// How long after a change the tracked flows are judged: changes of a burst are judged once,
/// well within the second a revoked connection may outlive its policy.
const REVOKE_AFTER: Duration = Duration::from_millis(100);
const REVOKE_RETRY: Duration = Duration::from_secs(1);

/// Cut the connections each change revoked (see `core::flows`), soon after it lands. The
/// flows are listed and deleted outside the core's lock, which is held only to judge them.
/// While a cut fails, `/healthz` is red naming it, and it is retried every second.
pub async fn revoke_flows(
    core: Arc<Mutex<Core>>,
    table: Box<dyn FlowTable>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    let due = lock(&core).revocations();
    let table = Arc::new(Mutex::new(table));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = due.notified() => {}
        }
        tokio::time::sleep(REVOKE_AFTER).await;
        let (core, table) = (core.clone(), table.clone());
        let sweep = tokio::task::spawn_blocking(move || -> Result<Vec<Flow>, DataplaneError> {
            let mut table = table
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let flows = table.tracked_flows()?;
            let revoked = lock(&core).revoked(flows);
            if !revoked.is_empty() {
                table.forget_flows(&revoked)?;
            }
            Ok(revoked)
        })
        .await;
        let error = match sweep {
            Ok(Ok(revoked)) => {
                if let Some(first) = revoked.first() {
                    metrics.count_revoked_flows(revoked.len());
                    info!(
                        flows = revoked.len(),
                        first = %format!("{} → {}:{}", first.src, first.server, first.server_port),
                        "cut connections the policies no longer allow"
                    );
                }
                health.set_source("conntrack", Ok(()));
                continue;
            }
            Ok(Err(err)) => format!("{:#}", anyhow::Error::from(err)),
            Err(err) => format!("the sweep panicked: {err}"),
        };
        // The rules are right meanwhile; only connections opened before the change may
        // still flow, so say so and try again until they are cut.
        warn!(error = %error, "cannot cut the connections a change revoked; retrying");
        health.set_source(
            "conntrack",
            Err(format!(
                "connections a change denied may still flow: {error}"
            )),
        );
        tokio::time::sleep(REVOKE_RETRY).await;
        due.notify_one();
    }
}

/// How often br_netfilter's switches are checked: reading two sysctl files is cheap, and
/// while they are off same-node pod traffic bypasses every policy.
pub const BRIDGE_CHECK: Duration = Duration::from_secs(1);

/// Keep `bridge-nf-call-ip{,6}tables` on under `proc_bridge`: something that turns them off
/// (a script, another agent) is undone, counted and logged; one that cannot be undone keeps
/// `/healthz` red, naming it, until it is.
pub async fn keep_bridge_netfilter(
    proc_bridge: PathBuf,
    period: Duration,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let path = proc_bridge.clone();
        let checked =
            tokio::task::spawn_blocking(move || crate::sysctl::ensure_bridge_netfilter(&path))
                .await;
        let state = match checked {
            Ok(Ok(switched)) if switched.is_empty() => Ok(()),
            Ok(Ok(switched)) => {
                warn!(switched = ?switched, "br_netfilter was turned off; turned it back on");
                metrics.count_bridge_netfilter_restore();
                Ok(())
            }
            Ok(Err(err)) => {
                warn!(error = format!("{err:#}"), "br_netfilter is off and cannot be turned on: same-node pod traffic is not filtered");
                Err(format!("off and cannot be turned on: {err:#}"))
            }
            Err(err) => Err(format!("checking it failed: {err}")),
        };
        health.set_source("br_netfilter", state);
    }
}

#[cfg(test)]
mod tests {
    use podwall_policy::{Event, Namespace, Snapshot};

    use super::*;
    use crate::core::tests::{attach, cluster, start, Shared, DENY_X};
    use crate::core::Options;
    use crate::dataplane::RecordingKernel;
    use crate::store::Store;

    /// A conntrack that refuses to list its flows while `refuse` holds.
    struct Refusing(Arc<Mutex<bool>>);

    impl FlowTable for Refusing {
        fn tracked_flows(&mut self) -> Result<Vec<Flow>, DataplaneError> {
            if *self.0.lock().unwrap() {
                return Err(DataplaneError::Dump("ctnetlink said no".into()));
            }
            Ok(Vec::new())
        }
        fn forget_flows(&mut self, _: &[Flow]) -> Result<(), DataplaneError> {
            Ok(())
        }
    }

    /// Feed `updates` to `follow_source` (persisting, as in Kubernetes mode) as one batch,
    /// and wait until it has applied them.
    async fn follow(core: &Arc<Mutex<Core>>, updates: Vec<Update>) {
        let (send, receive) = mpsc::unbounded_channel();
        for update in updates {
            send.send(update).unwrap();
        }
        drop(send);
        let shutdown = CancellationToken::new();
        follow_source("test", receive, core.clone(), true, shutdown).await;
    }

    fn shared_core(dir: &std::path::Path, cluster: Snapshot) -> (Arc<Mutex<Core>>, Shared) {
        let kernel = Shared::default();
        let core = start(dir, cluster, &kernel, Options::default());
        (Arc::new(Mutex::new(core)), kernel)
    }

    #[tokio::test]
    async fn a_batch_goes_on_past_a_change_the_kernel_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let (core, kernel) = shared_core(dir.path(), cluster(""));
        attach(&mut lock(&core), "x", "a", "10.0.0.2");
        // The structural change the list makes, and the whole table instead.
        kernel.0.lock().unwrap().refuse("no room", 2);
        let listed = cluster(DENY_X);
        let added = Namespace {
            name: "z".into(),
            labels: Default::default(),
        };
        follow(
            &core,
            vec![
                Update::Snapshot(listed.clone()),
                Update::Changes(vec![Event::Namespace(added)]),
            ],
        )
        .await;
        let (_, now) = lock(&core).cluster_to_store();
        assert_eq!(now.policies, listed.policies, "the refused list is kept");
        assert!(
            now.namespaces.contains_key("z"),
            "the change after the refused list is applied too"
        );
    }

    #[tokio::test]
    async fn a_list_the_store_already_holds_is_not_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let held = cluster("");
        let (core, _kernel) = shared_core(dir.path(), held.clone());
        let (store, _) = lock(&core).cluster_to_store();
        // A marker the store only loses to a write.
        let marker = cluster(DENY_X);
        store.put_cluster(&marker).unwrap();
        follow(&core, vec![Update::Snapshot(held.clone())]).await;
        assert_eq!(
            store.cluster().unwrap(),
            Some(marker),
            "nothing changed: no write"
        );
        let changed = cluster(DENY_X);
        follow(&core, vec![Update::Snapshot(changed.clone())]).await;
        assert_eq!(
            store.cluster().unwrap(),
            Some(changed),
            "a change is written"
        );
    }

    #[tokio::test]
    async fn a_sweep_that_fails_turns_healthz_red_naming_it_until_one_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let (metrics, health) = (Arc::new(Metrics::default()), Arc::new(Health::default()));
        let core = Core::start(
            "n1".into(),
            Default::default(),
            Store::open(dir.path()).unwrap(),
            Box::new(RecordingKernel::default()),
            Options::default(),
            metrics.clone(),
            health.clone(),
        )
        .unwrap();
        let core = Arc::new(Mutex::new(core));
        let refuse = Arc::new(Mutex::new(true));
        let shutdown = CancellationToken::new();
        let table = Box::new(Refusing(refuse.clone()));
        let sweeps = tokio::spawn(revoke_flows(
            core,
            table,
            metrics,
            health.clone(),
            shutdown.clone(),
        ));
        // The start-up swap made a sweep due.
        let red = |health: &Health| health.reason().is_some_and(|r| r.contains("conntrack"));
        for _ in 0..50 {
            if red(&health) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let reason = health.reason().unwrap_or_default();
        assert!(reason.contains("ctnetlink said no"), "{reason}");
        *refuse.lock().unwrap() = false;
        for _ in 0..100 {
            if !red(&health) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!red(&health), "a sweep that works again clears it");
        shutdown.cancel();
        sweeps.await.unwrap();
    }
}
