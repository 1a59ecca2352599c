//! Restarts that do not rewrite the kernel. A clean stop records which tables the kernel
//! holds and a digest of what they hold (`dataplane::handover`); the next start keeps them
//! when they are still those tables and its own start state has that digest. A restart then
//! costs reading the store and compiling, not rewriting a table that grows with the cluster.
//!
//! Kept is not trusted blindly: the kernel is read back once, right after the socket serves,
//! and `/healthz` stays red (naming why) until that read-back found the table as expected or
//! repaired it. A reboot, another namespace, a table deleted or created again, or a start
//! state that differs in any rule or element means a record that does not match, and the
//! start swaps the table in whole. With no record (a crash, a stop with changes pending), the
//! start reads the tables back exactly before it serves and keeps them only if they hold
//! exactly its state.

use tracing::{info, warn};

use super::{Core, CoreError};
use podwall_policy::Compiler;

use crate::dataplane::{DataplaneError, Digest, Exact, Handover, Kernel};
use crate::store::Store;

/// The `/healthz` condition that is red between a kept start and its read-back.
pub(super) const READ_BACK: &str = "handover";

/// How the last clean stop left the kernel, if it recorded it (removed as it is read).
pub(super) fn take_record(store: &Store) -> Option<Handover> {
    store.take_handover().unwrap_or_else(|err| {
        warn!(
            error = format!("{:#}", anyhow::Error::from(err)),
            "cannot read how the last daemon left the kernel; swapping the start state in"
        );
        None
    })
}

/// `compile`, and beside it, when `read` (a start without a record, `keep_exact`), the
/// kernel's tables read back whole: the read does not depend on the compile.
pub(super) fn compile_beside_read(
    kernel: &mut Box<dyn Kernel>,
    read: bool,
    compile: impl FnOnce() -> Compiler,
) -> (Compiler, Option<Result<Option<Exact>, DataplaneError>>) {
    std::thread::scope(|scope| {
        let read = read.then(|| scope.spawn(|| kernel.exact()));
        let compiler = compile();
        let read = read.map(|read| {
            (read.join()).unwrap_or_else(|_| {
                Err(DataplaneError::Dump(
                    "the thread reading the tables back panicked".into(),
                ))
            })
        });
        (compiler, read)
    })
}

impl Core {
    /// At a clean stop, once nothing else will change the kernel: stop taking requests,
    /// write the cluster state a last time when `persist_cluster` (Kubernetes mode: the
    /// next start compiles it), and record how the kernel is left. Returns whether a record
    /// was written; none is while changes are pending (the kernel does not hold the desired
    /// state then) or when the cluster state could not be written.
    pub fn hand_over(&mut self, persist_cluster: bool) -> Result<bool, CoreError> {
        self.stopped = true;
        if persist_cluster {
            self.store.put_cluster(&self.cluster)?;
        }
        if self.pending.is_some() {
            warn!("changes are pending at stop: the next start swaps the whole table in");
            return Ok(false);
        }
        let Some(tables) = self.kernel.tables_id()? else {
            return Ok(false);
        };
        let handover = Handover {
            tables,
            digest: Digest::of(&Exact::of(&self.applied)),
        };
        self.store.put_handover(&handover)?;
        Ok(true)
    }

    /// Whether the kernel holds what `handover` recorded and that is this start's state,
    /// `self.desired()`: then the table is kept and read back once instead of swapped in.
    pub(super) fn keep_handed_over(&mut self, handover: &Handover) -> bool {
        let tables = match self.kernel.tables_id() {
            Ok(Some(tables)) => tables,
            Ok(None) => return false,
            Err(err) => {
                warn!(error = %err, "cannot tell which tables the kernel holds; swapping the start state in");
                return false;
            }
        };
        if tables != handover.tables {
            info!("the kernel's tables are not the ones the last daemon left; swapping the start state in");
            return false;
        }
        let desired = self.desired();
        let exact = Exact::of(&desired);
        if Digest::of(&exact) != handover.digest {
            info!("the stored state compiles to other rules than the kernel holds; swapping the start state in");
            return false;
        }
        self.applied = desired;
        // The read-back compares the kernel with it, unless `applied` changes first.
        self.applied_exact = Some(exact);
        self.read_back_due = true;
        self.health.set_source(
            READ_BACK,
            Err("kept the table the last daemon left; not read back yet".to_string()),
        );
        self.metrics.count_handover();
        true
    }

    /// Without a clean stop's record (a crash, a kill, a first start over a table another
    /// daemon left): whether the kernel holds exactly this start's state, as `read` read it
    /// back whole (`dataplane::exact`). Then it is kept as it is, already read back, and a
    /// start after a crash costs a read instead of rewriting a table that grows with the
    /// cluster.
    pub(super) fn keep_exact(&mut self, read: Result<Option<Exact>, DataplaneError>) -> bool {
        let desired = self.desired();
        match read {
            Ok(Some(kernel)) if kernel == Exact::of(&desired) => {}
            Ok(_) => return false,
            Err(err) => {
                warn!(error = %err, "cannot read the kernel's tables back; swapping the start state in");
                return false;
            }
        }
        self.applied = desired;
        self.metrics.count_handover();
        true
    }

    /// Whether this start kept the table and has not read it back yet.
    pub fn read_back_due(&self) -> bool {
        self.read_back_due
    }
}

#[cfg(test)]
mod tests {
    use podwall::wire::{Reply, Request};

    use super::super::tests::{attach, cluster, full_compile, start, Shared, DENY_X};
    use super::*;
    use crate::core::Options;
    use crate::dataplane::Call;

    fn replaces(kernel: &Shared) -> usize {
        let kernel = kernel.0.lock().unwrap();
        kernel.calls.iter().filter(|c| **c == Call::Replace).count()
    }

    /// A core with two pods attached, stopped cleanly over `kernel`.
    fn stopped(dir: &std::path::Path, kernel: &Shared) {
        let mut core = start(dir, cluster(DENY_X), kernel, Options::default());
        attach(&mut core, "x", "a", "10.0.0.2");
        attach(&mut core, "y", "b", "10.0.0.3");
        assert!(core.hand_over(true).unwrap(), "recorded");
        let refused = core.handle(Request::Status).unwrap_err();
        assert_eq!(
            refused,
            CoreError::Stopping,
            "no request after the handover"
        );
    }

    #[test]
    fn a_clean_restart_keeps_the_table_and_reads_it_back_before_ready() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = Shared::default();
        stopped(dir.path(), &kernel);
        let before = (replaces(&kernel), kernel.table());
        let mut core = start(dir.path(), cluster(DENY_X), &kernel, Options::default());
        assert_eq!(
            (replaces(&kernel), kernel.table()),
            before,
            "kept as it was"
        );
        assert_eq!(core.applied.ruleset, full_compile(&core));
        assert!(core.read_back_due());
        let reason = core.health.reason().unwrap_or_default();
        assert!(reason.contains("not read back yet"), "{reason}");
        // It serves at once, and its changes go in as changes, not swaps.
        attach(&mut core, "x", "c", "10.0.0.4");
        assert!(matches!(kernel.last_call(), Call::Elements(_)));
        assert!(!core.health.is_ready(), "still not read back");
        assert_eq!(core.reconcile().unwrap(), Vec::<String>::new());
        assert!(core.health.is_ready(), "{:?}", core.health.reason());
        assert_eq!(replaces(&kernel), before.0);
        // The record is gone with this start: the next one reads the tables back whole and
        // keeps them only if they hold exactly its state.
        drop(core);
        start(dir.path(), cluster(DENY_X), &kernel, Options::default());
        assert_eq!(replaces(&kernel), before.0, "exactly its state: kept");
        kernel.edit(|table| {
            table.ruleset.ingress.pop_first();
        });
        start(dir.path(), cluster(DENY_X), &kernel, Options::default());
        assert_eq!(replaces(&kernel), before.0 + 1, "one entry fewer: swapped");
    }

    #[test]
    fn a_table_created_again_since_the_stop_is_swapped_in() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = Shared::default();
        stopped(dir.path(), &kernel);
        // Another writer put the same content in a new table: the handle differs.
        let table = kernel.0.lock().unwrap().table.clone().unwrap();
        crate::dataplane::Kernel::replace(&mut *kernel.0.lock().unwrap(), &table).unwrap();
        let before = replaces(&kernel);
        let core = start(dir.path(), cluster(DENY_X), &kernel, Options::default());
        assert_eq!(replaces(&kernel), before + 1);
        assert!(!core.read_back_due() && core.health.is_ready());
    }

    #[test]
    fn a_start_state_other_than_the_kernels_is_swapped_in() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = Shared::default();
        stopped(dir.path(), &kernel);
        let before = replaces(&kernel);
        // The stored cluster says one thing more than the kernel was left with.
        let core = start(dir.path(), cluster(""), &kernel, Options::default());
        assert_eq!(replaces(&kernel), before + 1);
        assert_eq!(kernel.table(), full_compile(&core));
    }

    #[test]
    fn a_kept_table_edited_by_hand_is_repaired_by_the_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = Shared::default();
        stopped(dir.path(), &kernel);
        let mut core = start(dir.path(), cluster(DENY_X), &kernel, Options::default());
        kernel.edit(|table| table.ruleset.chains.clear());
        let drift = core.reconcile().unwrap();
        assert!(!drift.is_empty());
        assert!(core.health.is_ready(), "{:?}", core.health.reason());
        assert_eq!(kernel.table(), full_compile(&core));
    }

    #[test]
    fn nothing_is_recorded_while_changes_are_pending() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = Shared::default();
        let mut core = start(dir.path(), cluster(DENY_X), &kernel, Options::default());
        kernel.0.lock().unwrap().refuse("no memory", 2);
        assert!(core
            .handle(Request::Attach {
                attachment: super::super::tests::attachment("x", "a", "10.0.0.2"),
            })
            .is_err());
        assert!(!core.hand_over(true).unwrap());
        drop(core);
        let before = replaces(&kernel);
        // The refused attach is in neither the kernel nor the store: the next start reads
        // back exactly its own state, and keeps it.
        let mut core = start(dir.path(), cluster(DENY_X), &kernel, Options::default());
        assert_eq!(replaces(&kernel), before);
        assert_eq!(kernel.table(), full_compile(&core));
        assert!(matches!(
            core.handle(Request::Status),
            Ok(Reply::Status { ready: true, .. })
        ));
    }
}
