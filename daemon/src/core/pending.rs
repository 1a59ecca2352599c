//! Changes the kernel has not taken yet, and how they land: a refused change stays in the
//! desired state, `/healthz` names it, and the whole desired state is swapped in again (by the
//! retry loop, by every later change, by every reconcile) until the kernel takes it.

use std::time::Instant;

use tracing::{info, warn};

use super::{local::guard, Core, CoreError};
use crate::dataplane::{DataplaneError, Desired, Exact};

/// Changes of the desired state that the kernel has not taken yet.
#[derive(Debug)]
pub(super) struct Pending {
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
    pub(super) fn reason(&self) -> String {
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

impl Core {
    /// Compare the kernel with what we applied and swap the table back in if anything
    /// drifted (a table deleted, a chain flushed, an element removed by hand).
    pub fn reconcile(&mut self) -> Result<Vec<String>, CoreError> {
        let started = Instant::now();
        let result = self.repair_drift();
        self.metrics.observe_sync(started.elapsed(), result.is_ok());
        result
    }

    pub(super) fn repair_drift(&mut self) -> Result<Vec<String>, CoreError> {
        // Adopted addresses the kernel could not place before: the node may have talked to
        // them since. A newly found port goes in with the repair below.
        let placed = self.adopted_ports.len();
        if !self.unguarded.is_empty() {
            self.unguarded.clear();
            let attachments = self.attachments.clone();
            self.adopt(&attachments);
        }
        let newly_guarded = self.adopted_ports.len() > placed;
        if let Some(retried) = self.retry_pending() {
            return retried.map(|()| Vec::new());
        }
        let expected = (self.applied_exact.take()).unwrap_or_else(|| Exact::of(&self.applied));
        let kernel = match self.kernel.exact() {
            Ok(kernel) => kernel,
            Err(err) => return Err(self.refused("reading the kernel back".to_string(), err)),
        };
        let drift = match kernel {
            None => vec!["table inet podwall missing".to_string()],
            Some(actual) => actual.differences(&expected),
        };
        if !drift.is_empty() {
            warn!(drift = ?drift, "kernel drifted from the applied rules; repairing");
        } else if newly_guarded {
            info!("guarding adopted pods the kernel has placed since");
        }
        if !drift.is_empty() || newly_guarded {
            if let Err(err) = self.commit_desired() {
                return Err(self.refused("drift repair".to_string(), err));
            }
        }
        if !drift.is_empty() {
            self.metrics.count_repair();
        }
        self.health.set_ready();
        self.read_back();
        Ok(drift)
    }

    /// Swap the whole desired state in again if changes are pending: `None` when none are.
    pub fn retry_pending(&mut self) -> Option<Result<(), CoreError>> {
        self.pending.as_ref()?;
        Some(match self.commit_desired() {
            Ok(()) => {
                self.landed();
                Ok(())
            }
            Err(err) => {
                let err = CoreError::from(err);
                if let Some(pending) = &mut self.pending {
                    pending.error = err.to_string();
                    self.health.set_failed(pending.reason());
                }
                self.metrics.count_error("kernel");
                Err(err)
            }
        })
    }

    /// The desired state: the compiled ruleset and the guard.
    pub(super) fn desired(&self) -> Desired {
        Desired {
            ruleset: self.compiler.ruleset().clone(),
            guard: guard(&self.attachments, &self.adopted_ports),
            logging: self.applied.logging,
        }
    }

    /// Put the whole desired state in the kernel in one swap: how a pending change lands,
    /// whatever the kernel held before (a refused change, drift, an earlier daemon's rules).
    pub(super) fn commit_desired(&mut self) -> Result<(), DataplaneError> {
        let desired = self.desired();
        let started = Instant::now();
        let result = self.kernel.replace(&desired);
        self.metrics
            .observe_transaction(started.elapsed(), result.is_ok());
        result?;
        self.metrics.observe_replace();
        self.applied = desired;
        self.applied_exact = None;
        // Swapped whole: what a kept start had yet to read back is known now.
        self.read_back();
        self.record_size();
        self.revocations.notify_one();
        Ok(())
    }

    /// The kernel refused `what`: it stays in the desired state, pending, and is named in
    /// `/healthz` until a retry lands it.
    pub(super) fn refused(&mut self, what: String, err: DataplaneError) -> CoreError {
        let err = CoreError::from(err);
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
        pending.error = err.to_string();
        self.metrics
            .set_pending(Some((pending.changes, pending.since)));
        self.health.set_failed(pending.reason());
        err
    }

    /// The kernel was found (or made) to hold what was applied.
    fn read_back(&mut self) {
        if std::mem::take(&mut self.read_back_due) {
            self.health.set_source(super::handover::READ_BACK, Ok(()));
        }
    }

    /// The kernel holds the desired state again.
    pub(super) fn landed(&mut self) {
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
}
