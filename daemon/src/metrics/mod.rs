//! Counters and histograms for `/metrics`, rendered as Prometheus text. Lock-free atomics:
//! recording sits on the attach path.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod droplog;
mod instruments;
mod policies;

pub use droplog::DropLogCounts;
use instruments::{write_family, Histogram, ResultCounter};
pub use policies::PolicyPackets;

#[derive(Debug, Default)]
pub struct Metrics {
    /// What the rules' counters say, per policy.
    pub policy_packets: PolicyPackets,
    /// What the drop log wrote and held back.
    pub drop_log: DropLogCounts,
    attaches: ResultCounter,
    attach_seconds: Histogram,
    /// Nanoseconds spent in each `AttachPhase`, over all attaches.
    attach_phases: [AtomicU64; ATTACH_PHASES.len()],
    transactions: ResultCounter,
    transaction_seconds: Histogram,
    attachments: AtomicU64,
    policies: AtomicU64,
    cluster_policies: AtomicU64,
    cluster_pods: AtomicU64,
    local_pods: AtomicU64,
    adopted_pods: AtomicU64,
    full_replaces: AtomicU64,
    handovers: AtomicU64,
    structural_transactions: AtomicU64,
    structural_fallbacks: AtomicU64,
    element_transactions: AtomicU64,
    elements_changed: AtomicU64,
    reconcile_repairs: AtomicU64,
    revoked_flows: AtomicU64,
    watch_restarts: AtomicU64,
    /// Errors by kind, in the order of `ERROR_KINDS`.
    errors: [AtomicU64; ERROR_KINDS.len()],
    syncs: ResultCounter,
    sync_seconds: Histogram,
    /// What the kernel holds: chains, sets, set and map elements.
    chains: AtomicU64,
    sets: AtomicU64,
    elements: AtomicU64,
    /// Changes the desired state holds that the kernel has not taken yet.
    pending_changes: AtomicU64,
    /// When the oldest of them was first refused.
    pending_since: Mutex<Option<Instant>>,
    store_discards: AtomicU64,
    bridge_netfilter_restores: AtomicU64,
    manifest_files_read: AtomicU64,
}

/// Where an attach's time goes in the daemon, in the order it is spent: asking the API
/// server for a pod the watchers have not delivered yet, waiting for the core, compiling
/// the change, the kernel's transaction, the store's flush.
#[derive(Debug, Clone, Copy)]
pub enum AttachPhase {
    Lookup = 0,
    Queue = 1,
    Compile = 2,
    Kernel = 3,
    Store = 4,
}

/// The `phase` label values of `podwall_attach_phase_seconds_total`.
pub const ATTACH_PHASES: [&str; 5] = ["lookup", "queue", "compile", "kernel", "store"];

/// The `kind` label values of `podwall_errors_total`.
pub const ERROR_KINDS: [&str; 4] = ["api", "kernel", "store", "request"];

impl Metrics {
    pub fn observe_attach(&self, elapsed: Duration, ok: bool) {
        self.attaches.record(ok);
        self.attach_seconds.observe(elapsed);
    }

    pub fn observe_attach_phase(&self, phase: AttachPhase, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.attach_phases[phase as usize].fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn observe_transaction(&self, elapsed: Duration, ok: bool) {
        self.transactions.record(ok);
        self.transaction_seconds.observe(elapsed);
    }

    /// Both tables were swapped in whole.
    pub fn observe_replace(&self) {
        self.full_replaces.fetch_add(1, Ordering::Relaxed);
    }

    /// A start kept the tables it found instead of swapping them in.
    pub fn count_handover(&self) {
        self.handovers.fetch_add(1, Ordering::Relaxed);
    }

    /// A structural change went over netlink.
    pub fn observe_structure(&self) {
        self.structural_transactions.fetch_add(1, Ordering::Relaxed);
    }

    /// The kernel refused a structural change over netlink; the whole table is swapped
    /// instead.
    pub fn observe_structural_fallback(&self) {
        self.structural_fallbacks.fetch_add(1, Ordering::Relaxed);
    }

    /// An element-only transaction of `n` element changes went over netlink.
    pub fn observe_elements(&self, n: usize) {
        self.element_transactions.fetch_add(1, Ordering::Relaxed);
        self.elements_changed.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// `n` tracked connections were cut: a change revoked them.
    pub fn count_revoked_flows(&self, n: usize) {
        self.revoked_flows.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A reconcile found drift and repaired it.
    pub fn count_repair(&self) {
        self.reconcile_repairs.fetch_add(1, Ordering::Relaxed);
    }

    /// A watcher relisted (after a 410 Gone or a dropped watch).
    pub fn count_watch_restart(&self) {
        self.watch_restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// An error of one of `ERROR_KINDS`.
    pub fn count_error(&self, kind: &str) {
        if let Some(i) = ERROR_KINDS.iter().position(|k| *k == kind) {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A whole-cluster sync (a source update or a reconcile) took `elapsed`.
    pub fn observe_sync(&self, elapsed: Duration, ok: bool) {
        self.syncs.record(ok);
        self.sync_seconds.observe(elapsed);
    }

    /// The size of what the kernel holds.
    pub fn set_table_size(&self, chains: usize, sets: usize, elements: usize) {
        self.chains.store(chains as u64, Ordering::Relaxed);
        self.sets.store(sets as u64, Ordering::Relaxed);
        self.elements.store(elements as u64, Ordering::Relaxed);
    }

    pub fn set_attachments(&self, n: usize) {
        self.attachments.store(n as u64, Ordering::Relaxed);
    }

    /// What the daemon enforces from: the cluster's policies (namespaced, and cluster) and
    /// pods as the source reports them, and the pods of this node that have dispatch entries.
    pub fn set_cluster_size(
        &self,
        (policies, cluster_policies): (usize, usize),
        cluster_pods: usize,
        local_pods: usize,
    ) {
        self.policies.store(policies as u64, Ordering::Relaxed);
        (self.cluster_policies).store(cluster_policies as u64, Ordering::Relaxed);
        self.cluster_pods
            .store(cluster_pods as u64, Ordering::Relaxed);
        self.local_pods.store(local_pods as u64, Ordering::Relaxed);
    }

    pub fn set_adopted_pods(&self, n: usize) {
        self.adopted_pods.store(n as u64, Ordering::Relaxed);
    }

    /// `n` changes wait for the kernel, the oldest since `since`; `None` once it took them.
    pub fn set_pending(&self, pending: Option<(usize, Instant)>) {
        let (n, since) = pending.map_or((0, None), |(n, since)| (n, Some(since)));
        self.pending_changes.store(n as u64, Ordering::Relaxed);
        *self
            .pending_since
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = since;
    }

    /// A stored record that could not be read was discarded.
    pub fn count_store_discard(&self) {
        self.store_discards.fetch_add(1, Ordering::Relaxed);
    }

    /// br_netfilter was found off and turned back on.
    pub fn count_bridge_netfilter_restore(&self) {
        self.bridge_netfilter_restores
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A file of the manifests directory was read (it changed, or this is the first load).
    pub fn count_manifest_read(&self) {
        self.manifest_files_read.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        self.policy_packets.render(&mut out);
        self.drop_log.render(&mut out);
        if let Some(rss) = resident_bytes() {
            let _ = writeln!(
                out,
                "# HELP process_resident_memory_bytes Resident memory of the daemon.\n\
                 # TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}"
            );
        }
        self.attaches.render(
            &mut out,
            "podwall_attach_total",
            "CNI attach requests served.",
        );
        self.attach_seconds.render(
            &mut out,
            "podwall_attach_duration_seconds",
            "Time from attach request to rules committed.",
        );
        self.transactions.render(
            &mut out,
            "podwall_transactions_total",
            "nftables transactions committed.",
        );
        self.transaction_seconds.render(
            &mut out,
            "podwall_transaction_duration_seconds",
            "Time to commit one nftables transaction.",
        );
        self.syncs.render(
            &mut out,
            "podwall_syncs_total",
            "Whole-cluster syncs: source updates and reconciles.",
        );
        self.sync_seconds.render(
            &mut out,
            "podwall_sync_duration_seconds",
            "Time to apply a source update or run a reconcile.",
        );
        let _ = writeln!(
            out,
            "# HELP podwall_build_info The running build.\n# TYPE podwall_build_info gauge\n\
             podwall_build_info{{version=\"{}\",commit=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            crate::COMMIT
        );
        let pending_age = self
            .pending_since
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .map_or(0.0, |since| since.elapsed().as_secs_f64());
        let _ = writeln!(
            out,
            "# HELP podwall_pending_oldest_seconds Age of the oldest change the kernel has not taken yet (0: none).\n\
             # TYPE podwall_pending_oldest_seconds gauge\npodwall_pending_oldest_seconds {pending_age:.3}"
        );
        write_family(
            &mut out,
            "gauge",
            [
                (
                    "podwall_pending_changes",
                    "Changes the kernel has not taken yet; retried until it does.",
                    &self.pending_changes,
                ),
                (
                    "podwall_attachments",
                    "Pods attached on this node.",
                    &self.attachments,
                ),
                (
                    "podwall_policies",
                    "NetworkPolicies in the cluster, as the source reports them.",
                    &self.policies,
                ),
                (
                    "podwall_cluster_policies",
                    "ClusterNetworkPolicies in the cluster, as the source reports them.",
                    &self.cluster_policies,
                ),
                (
                    "podwall_cluster_pods",
                    "Pods in the cluster, as the source reports them.",
                    &self.cluster_pods,
                ),
                (
                    "podwall_local_pods",
                    "Pods of this node with dispatch entries (attached, adopted or quarantined).",
                    &self.local_pods,
                ),
                (
                    "podwall_adopted_pods",
                    "Pods of this node enforced without an attachment (running before podwall, or started while it was down).",
                    &self.adopted_pods,
                ),
                (
                    "podwall_chains",
                    "Policy chains in the kernel.",
                    &self.chains,
                ),
                ("podwall_sets", "Named sets in the kernel.", &self.sets),
                (
                    "podwall_elements",
                    "Set and dispatch-map elements in the kernel.",
                    &self.elements,
                ),
            ],
        );
        write_family(
            &mut out,
            "counter",
            [
                (
                    "podwall_full_replaces_total",
                    "Whole-table swaps.",
                    &self.full_replaces,
                ),
                (
                    "podwall_start_handovers_total",
                    "Starts that kept the tables they found, as a clean stop recorded or read back exactly (0 or 1).",
                    &self.handovers,
                ),
                (
                    "podwall_structural_transactions_total",
                    "Changes of sets, chains and rules over netlink.",
                    &self.structural_transactions,
                ),
                (
                    "podwall_structural_fallbacks_total",
                    "Structural changes refused over netlink and swapped in whole instead.",
                    &self.structural_fallbacks,
                ),
                (
                    "podwall_element_transactions_total",
                    "Element-only transactions over netlink.",
                    &self.element_transactions,
                ),
                (
                    "podwall_elements_changed_total",
                    "Set and map elements changed by element-only transactions.",
                    &self.elements_changed,
                ),
                (
                    "podwall_watch_restarts_total",
                    "API watches that relisted.",
                    &self.watch_restarts,
                ),
                (
                    "podwall_reconcile_repairs_total",
                    "Reconciles that found the kernel drifted and repaired it.",
                    &self.reconcile_repairs,
                ),
                (
                    "podwall_revoked_flows_total",
                    "Tracked connections cut because a change denied them.",
                    &self.revoked_flows,
                ),
                (
                    "podwall_store_discards_total",
                    "Stored records that could not be read and were discarded.",
                    &self.store_discards,
                ),
                (
                    "podwall_bridge_netfilter_restores_total",
                    "Times br_netfilter was found off and turned back on.",
                    &self.bridge_netfilter_restores,
                ),
                (
                    "podwall_manifest_files_read_total",
                    "Files of the manifests directory read: the first load, then those that changed.",
                    &self.manifest_files_read,
                ),
            ],
        );
        let _ = writeln!(
            out,
            "# HELP podwall_attach_phase_seconds_total Time attaches spent in each phase in the daemon.\n\
             # TYPE podwall_attach_phase_seconds_total counter"
        );
        for (phase, nanos) in ATTACH_PHASES.iter().zip(&self.attach_phases) {
            let seconds = nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(
                out,
                "podwall_attach_phase_seconds_total{{phase=\"{phase}\"}} {seconds}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP podwall_errors_total Errors by kind.\n# TYPE podwall_errors_total counter"
        );
        for (kind, count) in ERROR_KINDS.iter().zip(&self.errors) {
            let _ = writeln!(
                out,
                "podwall_errors_total{{kind=\"{kind}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// The daemon's resident memory, from `/proc/self/status` (`VmRSS`, in kB).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_errors_are_exported_by_their_names() {
        let m = Metrics::default();
        m.set_table_size(3, 4, 50);
        m.count_error("api");
        m.count_error("nonsense");
        let text = m.render();
        assert!(
            text.contains("podwall_chains 3\n")
                && text.contains("podwall_sets 4\n")
                && text.contains("podwall_elements 50\n")
        );
        assert!(
            text.contains("podwall_errors_total{kind=\"api\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("nonsense"), "labels come from a fixed set");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.observe_attach(Duration::from_millis(3), true);
        m.observe_attach(Duration::from_millis(30), false);
        let text = m.render();
        assert!(
            text.contains("podwall_attach_duration_seconds_bucket{le=\"0.0025\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("podwall_attach_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("podwall_attach_duration_seconds_bucket{le=\"0.05\"} 2\n"));
        assert!(text.contains("podwall_attach_duration_seconds_count 2\n"));
        assert!(text.contains("podwall_attach_total{result=\"error\"} 1\n"));
    }

    /// Every metric the Grafana dashboard queries is on the page (its `# TYPE` line is
    /// there whether or not a series has a value yet).
    #[test]
    fn every_metric_the_dashboard_queries_exists() {
        let dashboard: serde_json::Value = serde_json::from_str(include_str!(
            "../../../install/monitoring/grafana-dashboard.json"
        ))
        .expect("the dashboard is JSON");
        let page = Metrics::default().render();
        let typed: std::collections::BTreeSet<&str> = page
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let mut queried = std::collections::BTreeSet::new();
        let panels = dashboard["panels"].as_array().expect("panels");
        for target in panels
            .iter()
            .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        {
            let expr = target["expr"].as_str().expect("an expression");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("podwall_") || word.starts_with("process_") {
                    queried.insert(word.to_string());
                }
            }
        }
        assert!(queried.len() >= 10, "{queried:?}");
        for metric in &queried {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| metric.strip_suffix(suffix))
                .filter(|base| typed.contains(base))
                .unwrap_or(metric);
            assert!(
                typed.contains(family),
                "{metric} is queried but not exported"
            );
        }
        // The template variables are filled from a metric that exists too.
        assert!(typed.contains("podwall_build_info"));
    }
}
