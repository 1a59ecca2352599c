//! The daemon's background loops around `Core`: following the source's updates and the
//! periodic reconcile. Each takes the lock only for one transaction.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use podwall_policy::Snapshot;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

use crate::core::Core;

fn lock(core: &Mutex<Core>) -> std::sync::MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How often, at most, the cluster state is written to the store: a snapshot of a large
/// cluster is megabytes, and a restart only needs a recent one.
const PERSIST_EVERY: Duration = Duration::from_secs(5);

/// Feed every new snapshot from a source (the manifests reader, the API watchers) to the
/// core, and keep a recent one in the store.
pub async fn follow_source(
    name: &'static str,
    mut updates: watch::Receiver<Arc<Snapshot>>,
    core: Arc<Mutex<Core>>,
    shutdown: CancellationToken,
) {
    let mut persisted: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = updates.changed() => if changed.is_err() { return },
        }
        let snapshot = (*updates.borrow_and_update().clone()).clone();
        let persist = persisted.is_none_or(|at| at.elapsed() >= PERSIST_EVERY);
        let core = core.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut core = lock(&core);
            let applied = core.set_cluster(snapshot);
            if persist {
                if let Err(err) = core.persist_cluster() {
                    warn!(
                        error = format!("{:#}", anyhow::Error::from(err)),
                        "cannot store the cluster state"
                    );
                }
            }
            applied
        })
        .instrument(info_span!("source", name))
        .await;
        if persist {
            persisted = Some(Instant::now());
        }
        match result {
            Ok(Ok(())) => info!(source = name, "applied cluster update"),
            Ok(Err(err)) => {
                warn!(source = name, error = %err.message, "applying cluster update failed; the reconcile retries")
            }
            Err(err) => warn!(source = name, error = %err, "applying cluster update panicked"),
        }
    }
}

/// Every `period`, compare the kernel with what was applied and repair drift.
pub async fn reconcile_every(
    period: Duration,
    core: Arc<Mutex<Core>>,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate; start-up just programmed the kernel
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
            Ok(Err(err)) => warn!(error = %err.message, "reconcile failed"),
            Err(err) => warn!(error = %err, "reconcile panicked"),
        }
    }
}
