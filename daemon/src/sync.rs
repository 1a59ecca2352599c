//! The daemon's background loops around `Core`: following the source's updates and the
//! periodic reconcile. Each takes the lock only for one transaction.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use podwall_policy::manifests::Loaded;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

use crate::core::Core;

fn lock(core: &Mutex<Core>) -> std::sync::MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Feed every new manifests load to the core (the reader already kept the last readable
/// version of any file that broke).
pub async fn follow_manifests(
    dir: PathBuf,
    mut updates: watch::Receiver<Arc<Loaded>>,
    core: Arc<Mutex<Core>>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = updates.changed() => if changed.is_err() { return },
        }
        let loaded = updates.borrow_and_update().clone();
        let core = core.clone();
        let snapshot = loaded.snapshot.clone();
        let result = tokio::task::spawn_blocking(move || lock(&core).set_cluster(snapshot))
            .instrument(info_span!("manifests"))
            .await;
        match result {
            Ok(Ok(())) => info!(dir = %dir.display(), "applied manifests"),
            Ok(Err(err)) => {
                warn!(error = %err.message, "applying manifests failed; will retry on the next change or reconcile")
            }
            Err(err) => warn!(error = %err, "applying manifests panicked"),
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
