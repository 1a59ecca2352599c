use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Mutex;

use podwall::wire::PodRef;
use podwall_policy::manifests::load;

use super::*;
use crate::dataplane::names::{OPEN_CHAIN, QUARANTINE_CHAIN};
use crate::dataplane::{
    Call, DataplaneError, ElementOp, Fingerprint, Guard, RecordingKernel, Structure,
};
use podwall_policy::selector::Labels;
use podwall_policy::{Event, Pod, PolicyKey, Ruleset};

/// A kernel the test can look into after handing it to `Core`.
#[derive(Clone, Default)]
pub(crate) struct Shared(pub(crate) Arc<Mutex<RecordingKernel>>);

impl Kernel for Shared {
    fn replace(&mut self, desired: &Desired) -> Result<(), DataplaneError> {
        self.0.lock().unwrap().replace(desired)
    }
    fn apply_elements(&mut self, ops: &[ElementOp]) -> Result<(), DataplaneError> {
        self.0.lock().unwrap().apply_elements(ops)
    }
    fn apply_structure(&mut self, structure: &Structure) -> Result<(), DataplaneError> {
        self.0.lock().unwrap().apply_structure(structure)
    }
    fn dump(&mut self) -> Result<Option<Fingerprint>, DataplaneError> {
        self.0.lock().unwrap().dump()
    }
    fn exact(&mut self) -> Result<Option<crate::dataplane::Exact>, DataplaneError> {
        self.0.lock().unwrap().exact()
    }
    fn tables_id(&mut self) -> Result<Option<crate::dataplane::TablesId>, DataplaneError> {
        self.0.lock().unwrap().tables_id()
    }
    fn forget_flows_of(&mut self, ips: &[IpAddr]) -> Result<usize, DataplaneError> {
        self.0.lock().unwrap().forget_flows_of(ips)
    }
    fn host_ports(
        &mut self,
        ips: &BTreeSet<IpAddr>,
    ) -> Result<std::collections::BTreeMap<IpAddr, String>, DataplaneError> {
        self.0.lock().unwrap().host_ports(ips)
    }
}

impl Shared {
    pub(super) fn last_call(&self) -> Call {
        self.0
            .lock()
            .unwrap()
            .calls
            .last()
            .cloned()
            .expect("a call")
    }
    /// Change the kernel's table behind the core's back, as a hand edit would.
    pub(super) fn edit(&self, change: impl FnOnce(&mut Desired)) {
        change(self.0.lock().unwrap().table.as_mut().expect("a table"));
    }
    pub(super) fn table(&self) -> Ruleset {
        self.0
            .lock()
            .unwrap()
            .table
            .clone()
            .expect("a table")
            .ruleset
    }
    fn guard(&self) -> Guard {
        self.0.lock().unwrap().table.clone().expect("a table").guard
    }
}

const NAMESPACES: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {team: web}}
---
apiVersion: v1
kind: Namespace
metadata: {name: y}
";

pub(crate) const DENY_X: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {}}
";

pub(crate) fn cluster(extra: &str) -> Snapshot {
    let loaded = load([("ns.yaml", NAMESPACES), ("extra.yaml", extra)]);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    loaded.snapshot
}

pub(super) fn attachment(ns: &str, name: &str, ip: &str) -> Attachment {
    Attachment {
        id: AttachmentId {
            container_id: format!("c-{name}"),
            ifname: "eth0".into(),
        },
        pod: PodRef {
            namespace: ns.into(),
            name: name.into(),
            uid: None,
        },
        netns: format!("/run/netns/{name}"),
        ips: vec![ip.parse().unwrap()],
        host_interface: Some(format!("veth-{name}")),
    }
}

pub(crate) fn attach(core: &mut Core, ns: &str, name: &str, ip: &str) {
    core.handle(Request::Attach {
        attachment: attachment(ns, name, ip),
    })
    .unwrap();
}

/// The store in `dir`, reopened: sled's flusher thread of a store just dropped may hold the
/// directory's lock for a moment longer.
fn reopen(dir: &std::path::Path) -> Store {
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Store::open(dir) {
            Ok(store) => return store,
            Err(err) if Instant::now() > deadline => panic!("opening the store: {err}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}

fn core_with(dir: &std::path::Path, cluster: Snapshot) -> (Core, Shared) {
    let kernel = Shared::default();
    let core = start(dir, cluster, &kernel, Options::default());
    (core, kernel)
}

/// A core on node n1 over the store in `dir` and `kernel`.
pub(crate) fn start(
    dir: &std::path::Path,
    cluster: Snapshot,
    kernel: &Shared,
    options: Options,
) -> Core {
    Core::start(
        "n1".into(),
        cluster,
        reopen(dir),
        Box::new(kernel.clone()),
        options,
        Arc::new(Metrics::default()),
        Arc::new(Health::default()),
    )
    .unwrap()
}

/// The table a from-scratch compile of the core's state gives: the incremental path must
/// always end there.
pub(super) fn full_compile(core: &Core) -> Ruleset {
    let snap = merged(
        &core.cluster,
        &core.attachments,
        &core.node,
        core.quarantine_unknown,
    );
    podwall_policy::compile(&snap, &core.node)
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn attaching_an_unisolated_pod_adds_open_hairpin_and_guard_elements_only() {
    let dir = tempfile::tempdir().unwrap();
    let (mut core, kernel) = core_with(dir.path(), cluster(""));
    attach(&mut core, "y", "a", "10.0.0.2");
    let Call::Elements(ops) = kernel.last_call() else {
        panic!("element-only transaction")
    };
    let maps = ops
        .iter()
        .filter(|op| matches!(op, ElementOp::Add { jump: Some(_), .. }))
        .count();
    assert_eq!(
        (maps, ops.len()),
        (2, 5),
        "ingress, egress, its hairpin pair, the veth and its address: {ops:?}"
    );
    assert_eq!(
        kernel
            .table()
            .ingress
            .get(&ip("10.0.0.2"))
            .map(String::as_str),
        Some(OPEN_CHAIN)
    );
    assert_eq!(kernel.table(), full_compile(&core));
}

#[test]
fn the_second_pod_of_an_isolated_group_costs_elements_only() {
    let dir = tempfile::tempdir().unwrap();
    let (mut core, kernel) = core_with(dir.path(), cluster(DENY_X));
    attach(&mut core, "x", "a", "10.0.0.2");
    assert!(
        matches!(kernel.last_call(), Call::Structure(s) if s.chains.values().all(|c| c.new)),
        "the group's chain is new"
    );
    attach(&mut core, "x", "b", "10.0.0.3");
    assert!(matches!(kernel.last_call(), Call::Elements(_)));
    let table = kernel.table();
    assert_eq!(
        table.ingress[&ip("10.0.0.2")],
        table.ingress[&ip("10.0.0.3")],
        "one shared chain"
    );
    assert_ne!(table.ingress[&ip("10.0.0.2")], OPEN_CHAIN);
    assert_eq!(table, full_compile(&core));
}

#[test]
fn detach_removes_the_pods_elements() {
    let dir = tempfile::tempdir().unwrap();
    let (mut core, kernel) = core_with(dir.path(), cluster(DENY_X));
    attach(&mut core, "x", "a", "10.0.0.2");
    attach(&mut core, "y", "b", "10.0.0.3");
    let reply = core
        .handle(Request::Detach {
            id: attachment("y", "b", "10.0.0.3").id,
        })
        .unwrap();
    assert_eq!(reply, Reply::Detached { existed: true });
    let table = kernel.table();
    assert!(
        !table.ingress.contains_key(&ip("10.0.0.3")) && !table.egress.contains_key(&ip("10.0.0.3"))
    );
    assert_eq!(table, full_compile(&core));
    let again = core
        .handle(Request::Detach {
            id: attachment("y", "b", "10.0.0.3").id,
        })
        .unwrap();
    assert_eq!(again, Reply::Detached { existed: false });
}

#[test]
fn a_label_change_from_the_source_is_an_element_change() {
    let allow_web = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: x}
spec:
  podSelector: {}
  ingress: [{from: [{podSelector: {matchLabels: {role: web}}}]}]
";
    let peer = |role: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: x, labels: {{role: {role}}}}}\n\
             spec: {{nodeName: n2, containers: [{{name: c, image: i}}]}}\nstatus: {{phase: Running, podIPs: [{{ip: 10.0.9.9}}]}}\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut core, kernel) = core_with(dir.path(), cluster(&format!("{allow_web}{}", peer("web"))));
    attach(&mut core, "x", "a", "10.0.0.2");
    core.set_cluster(cluster(&format!("{allow_web}{}", peer("db"))))
        .unwrap();
    let Call::Elements(ops) = kernel.last_call() else {
        panic!("element-only transaction")
    };
    assert_eq!(ops.len(), 1, "the peer leaves one set: {ops:?}");
    assert_eq!(kernel.table(), full_compile(&core));
}

#[test]
fn a_new_policy_is_a_structural_change_that_matches_a_full_compile() {
    let dir = tempfile::tempdir().unwrap();
    let (mut core, kernel) = core_with(dir.path(), cluster(""));
    attach(&mut core, "x", "a", "10.0.0.2");
    core.set_cluster(cluster(DENY_X)).unwrap();
    assert!(matches!(kernel.last_call(), Call::Structure(_)));
    assert_ne!(kernel.table().ingress[&ip("10.0.0.2")], OPEN_CHAIN);
    core.set_cluster(cluster("")).unwrap();
    assert_eq!(
        kernel.table().ingress[&ip("10.0.0.2")],
        OPEN_CHAIN,
        "policy deleted: open again"
    );
    assert_eq!(kernel.table(), full_compile(&core));
}

#[test]
fn an_attach_forgets_the_flows_toward_its_addresses_once_its_rules_are_in() {
    let dir = tempfile::tempdir().unwrap();
    let (mut core, kernel) = core_with(dir.path(), cluster(DENY_X));
    attach(&mut core, "x", "a", "10.0.0.2");
    let kernel = kernel.0.lock().unwrap();
    let (calls_before, ips) = kernel.forgotten.last().cloned().expect("flows forgotten");
    assert_eq!(ips, [ip("10.0.0.2")]);
    assert_eq!(
        calls_before,
        kernel.calls.len(),
        "after the attach's transaction"
    );
}

#[test]
fn an_attach_whose_flows_cannot_be_forgotten_fails_naming_conntrack() {
    let dir = tempfile::tempdir().unwrap();
    let (mut core, kernel) = core_with(dir.path(), cluster(DENY_X));
    kernel.0.lock().unwrap().conntrack_refusal = Some("no ctnetlink".into());
    let refused = core
        .handle(Request::Attach {
            attachment: attachment("x", "a", "10.0.0.2"),
        })
        .unwrap_err();
    let text = refused.to_string();
    assert!(
        text.contains("conntrack") && text.contains("no ctnetlink"),
        "{text}"
    );
    assert!(text.contains("x/a") && text.contains("10.0.0.2"), "{text}");
    // Its rules stay: the kubelet's DEL or another ADD follows a failed ADD.
    kernel.0.lock().unwrap().conntrack_refusal = None;
    attach(&mut core, "x", "a", "10.0.0.2");
}

#[test]
fn an_attach_says_where_its_time_went() {
    let dir = tempfile::tempdir().unwrap();
    let (mut core, _kernel) = core_with(dir.path(), cluster(DENY_X));
    attach(&mut core, "x", "a", "10.0.0.2");
    let text = core.metrics.render();
    let seconds = |phase: &str| -> f64 {
        let series = format!("podwall_attach_phase_seconds_total{{phase=\"{phase}\"}} ");
        let line = text.lines().find(|l| l.starts_with(&series));
        line.and_then(|l| l[series.len()..].parse().ok())
            .unwrap_or_else(|| panic!("no {series} in {text}"))
    };
    // Compiling and the store's flush take time even with a kernel in memory.
    assert!(seconds("compile") > 0.0 && seconds("store") > 0.0, "{text}");
    assert!(seconds("kernel") >= 0.0);
}

#[test]
fn a_structural_change_refused_over_netlink_lands_whole_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut core, kernel) = core_with(dir.path(), cluster(""));
    attach(&mut core, "x", "a", "10.0.0.2");
    kernel.0.lock().unwrap().refuse("Invalid argument", 1);
    core.set_cluster(cluster(DENY_X)).unwrap();
    assert_eq!(kernel.last_call(), Call::Replace);
    assert!(core.health.is_ready());
    assert_eq!(kernel.table(), full_compile(&core));
    let metrics = core.metrics.render();
    assert!(
        metrics.contains("podwall_structural_fallbacks_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("podwall_structural_transactions_total 0"),
        "{metrics}"
    );
}

#[test]
fn check_notices_a_deleted_element() {
    let dir = tempfile::tempdir().unwrap();
    let (mut core, kernel) = core_with(dir.path(), cluster(""));
    attach(&mut core, "x", "a", "10.0.0.2");
    let id = attachment("x", "a", "10.0.0.2").id;
    assert_eq!(
        core.handle(Request::Check { id: id.clone() }),
        Ok(Reply::Checked)
    );
    kernel.edit(|table| table.ruleset.egress.clear());
    let err = core.handle(Request::Check { id }).unwrap_err();
    assert!(matches!(err, CoreError::RulesMissing(_)), "{err}");
    assert!(
        err.to_string().contains("egress4 element 10.0.0.2"),
        "{err}"
    );
    let unknown = core
        .handle(Request::Check {
            id: attachment("x", "zz", "10.0.0.9").id,
        })
        .unwrap_err();
    assert!(matches!(unknown, CoreError::NotAttached(_)), "{unknown}");
}

#[test]
fn a_rejected_attach_fails_the_request_and_stays_pending_until_it_lands() {
    let dir = tempfile::tempdir().unwrap();
    let (mut core, kernel) = core_with(dir.path(), cluster(DENY_X));
    // The pod's chain is new: the structural batch is refused, then its whole-table
    // fallback too.
    kernel.0.lock().unwrap().refuse("no memory", 2);
    let err = core
        .handle(Request::Attach {
            attachment: attachment("x", "a", "10.0.0.2"),
        })
        .unwrap_err();
    assert!(matches!(err, CoreError::Kernel(_)), "{err}");
    let reason = core.health.reason().unwrap_or_default();
    assert!(reason.contains("pod x/a attached"), "{reason}");
    assert!(
        core.store.attachments().unwrap().0.is_empty(),
        "not said attached"
    );
    let serving = |core: &mut Core| match core.handle(Request::Status) {
        Ok(Reply::Status { serving, .. }) => serving,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        serving(&mut core),
        Some(false),
        "CNI STATUS: no ADD can land"
    );
    assert!(core.retry_pending().unwrap().is_ok());
    assert!(core.health.is_ready(), "landed");
    assert_eq!(serving(&mut core), Some(true));
    assert_eq!(kernel.table(), full_compile(&core));
    assert_ne!(kernel.table().ingress[&ip("10.0.0.2")], OPEN_CHAIN);
}

#[test]
fn restart_restores_attachments_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let (mut core, kernel) = core_with(dir.path(), cluster(DENY_X));
        attach(&mut core, "x", "a", "10.0.0.2");
        attach(&mut core, "y", "b", "10.0.0.3");
        kernel.table()
    };
    let (mut core, kernel) = core_with(dir.path(), cluster(DENY_X));
    assert_eq!(kernel.last_call(), Call::Replace);
    assert_eq!(kernel.table(), expected);
    assert!(matches!(
        core.handle(Request::Status),
        Ok(Reply::Status {
            ready: true,
            attachments: 2,
            ..
        })
    ));
}

#[test]
fn a_reused_address_moves_to_the_new_pod() {
    let dir = tempfile::tempdir().unwrap();
    let (mut core, kernel) = core_with(dir.path(), cluster(DENY_X));
    attach(&mut core, "x", "old", "10.0.0.2");
    attach(&mut core, "y", "new", "10.0.0.2");
    let stored = core.store.attachments().unwrap().0;
    assert_eq!(
        stored
            .keys()
            .map(|k| k.container_id.as_str())
            .collect::<Vec<_>>(),
        vec!["c-new"]
    );
    assert_eq!(
        kernel.table().ingress[&ip("10.0.0.2")],
        OPEN_CHAIN,
        "y is not isolated"
    );
}

#[test]
fn gc_keeps_only_valid_attachments() {
    let dir = tempfile::tempdir().unwrap();
    let (mut core, kernel) = core_with(dir.path(), cluster(""));
    attach(&mut core, "x", "a", "10.0.0.2");
    attach(&mut core, "x", "b", "10.0.0.3");
    let reply = core
        .handle(Request::Gc {
            valid: vec![attachment("x", "b", "10.0.0.3").id],
        })
        .unwrap();
    assert_eq!(
        reply,
        Reply::Gc {
            removed: vec![attachment("x", "a", "10.0.0.2").id]
        }
    );
    assert!(!kernel.table().ingress.contains_key(&ip("10.0.0.2")));
}

#[test]
fn reconcile_repairs_drift_and_leaves_a_good_table_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (mut core, kernel) = core_with(dir.path(), cluster(DENY_X));
    attach(&mut core, "x", "a", "10.0.0.2");
    let calls = kernel.0.lock().unwrap().calls.len();
    assert!(core.reconcile().unwrap().is_empty());
    assert_eq!(
        kernel.0.lock().unwrap().calls.len(),
        calls,
        "no drift, no transaction"
    );
    kernel.0.lock().unwrap().table = None;
    let drift = core.reconcile().unwrap();
    assert_eq!(drift, vec!["table inet podwall missing".to_string()]);
    assert_eq!(kernel.table(), full_compile(&core));
    assert!(core
        .metrics
        .render()
        .contains("podwall_reconcile_repairs_total 1\n"));
}

#[test]
fn a_local_pod_takes_labels_from_the_source_and_addresses_from_cni() {
    let pod = "
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: db}}
spec: {nodeName: elsewhere, containers: [{name: c, image: i}]}
status: {phase: Running, podIPs: [{ip: 10.9.9.9}]}
";
    let snap = merged(
        &cluster(pod),
        &[attachment("x", "a", "10.0.0.2")]
            .into_iter()
            .map(|a| (a.id.clone(), a))
            .collect(),
        "n1",
        true,
    );
    let merged_pod = &snap.pods[&PodKey {
        namespace: "x".into(),
        name: "a".into(),
    }];
    assert_eq!(merged_pod.ips, vec![ip("10.0.0.2")]);
    assert_eq!(merged_pod.node.as_deref(), Some("n1"));
    assert_eq!(merged_pod.labels.get("app").map(String::as_str), Some("db"));
}

#[test]
fn attachment_without_addresses_is_a_bad_request() {
    let dir = tempfile::tempdir().unwrap();
    let (mut core, _) = core_with(dir.path(), cluster(""));
    let mut a = attachment("x", "a", "10.0.0.2");
    a.ips.clear();
    let err = core.handle(Request::Attach { attachment: a }).unwrap_err();
    assert_eq!(err, CoreError::BadAttachment("has no IP addresses"));
}

#[test]
fn the_guard_follows_attachments_by_element_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut core, kernel) = core_with(dir.path(), cluster(""));
    attach(&mut core, "x", "a", "10.0.0.2");
    let Call::Elements(ops) = kernel.last_call() else {
        panic!("element-only transaction")
    };
    assert!(
        ops.iter()
            .any(|op| matches!(op, ElementOp::Add { set, .. } if set == "sources4")),
        "{ops:?}"
    );
    assert_eq!(
        kernel.guard().sources["veth-a"],
        BTreeSet::from([ip("10.0.0.2")])
    );
    core.handle(Request::Detach {
        id: attachment("x", "a", "10.0.0.2").id,
    })
    .unwrap();
    assert!(kernel.guard().sources.is_empty());
}

#[test]
fn source_changes_compile_only_what_they_touch_and_match_a_full_compile() {
    let allow_web = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: x}
spec:
  podSelector: {}
  ingress: [{from: [{podSelector: {matchLabels: {role: web}}}]}]
";
    let dir = tempfile::tempdir().unwrap();
    let (mut core, kernel) = core_with(dir.path(), cluster(allow_web));
    attach(&mut core, "x", "a", "10.0.0.2");
    let peer = |role: &str| {
        let mut pod = Pod::new(
            PodKey {
                namespace: "x".into(),
                name: "p".into(),
            },
            [("role".to_string(), role.to_string())].into(),
            vec![ip("10.0.9.9")],
        );
        pod.node = Some("n2".into());
        pod
    };
    core.apply_changes(vec![Event::Pod(peer("web"))]).unwrap();
    let Call::Elements(ops) = kernel.last_call() else {
        panic!("element-only transaction")
    };
    assert_eq!(ops.len(), 1, "the peer joins one set: {ops:?}");
    // Two changes in one batch are one transaction.
    let calls = kernel.0.lock().unwrap().calls.len();
    core.apply_changes(vec![Event::Pod(peer("db")), Event::Pod(peer("web"))])
        .unwrap();
    assert!(kernel.0.lock().unwrap().calls.len() <= calls + 1);
    core.apply_changes(vec![Event::PodDeleted(peer("web").key.clone())])
        .unwrap();
    assert_eq!(kernel.table(), full_compile(&core));
}

fn deny_x() -> podwall_policy::Policy {
    load([("p.yaml", DENY_X)])
        .snapshot
        .policies
        .into_values()
        .next()
        .unwrap()
}

#[test]
fn a_rejected_source_change_stays_pending_and_lands_without_being_resent() {
    let dir = tempfile::tempdir().unwrap();
    let (mut core, kernel) = core_with(dir.path(), cluster(""));
    attach(&mut core, "x", "a", "10.0.0.2");
    kernel.0.lock().unwrap().refuse("no memory", 2);
    assert!(core.apply_changes(vec![Event::Policy(deny_x())]).is_err());
    assert!(
        core.cluster.policies.contains_key(&deny_x().key),
        "the desired state keeps the change"
    );
    let reason = core.health.reason().unwrap_or_default();
    assert!(reason.contains("policy x/deny"), "{reason}");
    assert!(core.metrics.render().contains("podwall_pending_changes 1"));
    // A reconcile neither forgets it nor calls the kernel healthy: it lands it.
    assert_eq!(core.reconcile().unwrap(), Vec::<String>::new());
    assert!(core.health.is_ready());
    assert!(core.metrics.render().contains("podwall_pending_changes 0"));
    assert_eq!(kernel.table(), full_compile(&core));
    assert_ne!(kernel.table().ingress[&ip("10.0.0.2")], OPEN_CHAIN);
}

#[test]
fn changes_while_pending_keep_it_red_until_the_kernel_takes_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let (mut core, kernel) = core_with(dir.path(), cluster(""));
    attach(&mut core, "x", "a", "10.0.0.2");
    kernel.0.lock().unwrap().refuse("no memory", 2);
    assert!(core.apply_changes(vec![Event::Policy(deny_x())]).is_err());
    kernel.0.lock().unwrap().refuse("still no memory", 1);
    assert!(core
        .handle(Request::Attach {
            attachment: attachment("y", "b", "10.0.0.3"),
        })
        .is_err());
    let reason = core.health.reason().unwrap_or_default();
    assert!(reason.starts_with("2 change(s)"), "{reason}");
    assert!(reason.contains("still no memory"), "{reason}");
    // The next change lands everything at once, in one swap.
    attach(&mut core, "y", "c", "10.0.0.4");
    assert!(core.health.is_ready());
    assert_eq!(kernel.last_call(), Call::Replace);
    assert_eq!(kernel.table(), full_compile(&core));
}

#[test]
fn a_kernel_that_refuses_the_start_state_does_not_stop_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let shared = Shared::default();
    shared.0.lock().unwrap().refuse("busy", 1);
    let mut core = start(dir.path(), cluster(DENY_X), &shared, Options::default());
    let health = core.health.clone();
    assert!(!health.is_ready());
    assert!(core.is_pending());
    assert!(core.retry_pending().unwrap().is_ok());
    assert!(health.is_ready());
    assert_eq!(shared.table(), full_compile(&core));
}

#[test]
fn a_pod_whose_labels_are_unknown_is_quarantined_until_the_source_describes_it() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = Shared::default();
    let options = Options {
        quarantine_unknown: true,
        ..Options::default()
    };
    let mut core = start(dir.path(), cluster(DENY_X), &kernel, options);
    // x/a holds the chain of the deny policy, which x/new will share.
    core.learn_pod(Pod::new(PodKey::new("x", "a"), Labels::new(), Vec::new()));
    attach(&mut core, "x", "a", "10.0.0.2");
    // The API server has not told us about x/new yet: whatever policies would select it,
    // it sends and receives nothing new.
    attach(&mut core, "x", "new", "10.0.0.5");
    let table = kernel.table();
    assert_eq!(table.ingress[&ip("10.0.0.5")], QUARANTINE_CHAIN);
    assert_eq!(table.egress[&ip("10.0.0.5")], QUARANTINE_CHAIN);
    // The watch delivers it: its policies take over, by element changes (the chain exists).
    let pod = Pod::new(PodKey::new("x", "new"), Labels::new(), Vec::new());
    core.apply_changes(vec![Event::Pod(pod)]).unwrap();
    assert!(matches!(kernel.last_call(), Call::Elements(_)));
    assert_eq!(kernel.table(), full_compile(&core));
    assert_ne!(kernel.table().ingress[&ip("10.0.0.5")], QUARANTINE_CHAIN);
    assert_eq!(kernel.table().egress[&ip("10.0.0.5")], OPEN_CHAIN);
}

/// A store whose record of attachment `c-<name>`/eth0 cannot be read.
fn store_with_unreadable_record(dir: &std::path::Path, name: &str) {
    let db = sled::open(dir).unwrap();
    let tree = db.open_tree("attachments/v1").unwrap();
    tree.insert(format!("c-{name}\0eth0"), b"{\"id\": tru".to_vec())
        .unwrap();
    db.flush().unwrap();
}

fn start_with_cache(dir: &std::path::Path, cache: &std::path::Path) -> (Core, Shared) {
    let kernel = Shared::default();
    let options = Options {
        cni_cache: Some(cache.to_path_buf()),
        ..Options::default()
    };
    let core = start(dir, cluster(DENY_X), &kernel, options);
    (core, kernel)
}

#[test]
fn an_unreadable_attachment_record_is_rebuilt_from_the_runtimes_cni_cache() {
    let (dir, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    store_with_unreadable_record(dir.path(), "a");
    std::fs::create_dir(cache.path().join("results")).unwrap();
    std::fs::write(
        cache.path().join("results/k8s-c-a-eth0"),
        r#"{"kind":"cniCacheV1","containerId":"c-a","ifName":"eth0","networkName":"k8s",
            "cniArgs":[["K8S_POD_NAMESPACE","x"],["K8S_POD_NAME","a"]],
            "result":{"interfaces":[{"name":"br0"},{"name":"veth-a"},{"name":"eth0","sandbox":"/run/netns/a"}],
            "ips":[{"address":"10.0.0.2/24"}]}}"#,
    )
    .unwrap();
    let (core, kernel) = start_with_cache(dir.path(), cache.path());
    assert!(core.health.is_ready(), "{:?}", core.health.reason());
    assert_eq!(core.attachments.len(), 1);
    assert_ne!(
        kernel.table().ingress[&ip("10.0.0.2")],
        OPEN_CHAIN,
        "enforced"
    );
    assert_eq!(core.store.attachments().unwrap().0.len(), 1, "stored again");
}

#[test]
fn an_unreadable_attachment_record_without_a_cache_entry_is_named_in_health() {
    let (dir, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    store_with_unreadable_record(dir.path(), "gone");
    let (core, _) = start_with_cache(dir.path(), cache.path());
    let reason = core.health.reason().unwrap_or_default();
    assert!(reason.starts_with("store:"), "{reason}");
    assert!(reason.contains("c-gone"), "{reason}");
    assert!(core
        .metrics
        .render()
        .contains("podwall_store_discards_total 1"));
}

#[test]
fn a_pod_of_another_node_loses_its_claim_on_an_address_attached_here_and_gets_it_back() {
    // y/far on another node still claims 10.0.0.2; x admits only pods labelled client, and
    // x/web here makes that policy's peers this node's business.
    let extra = "
apiVersion: v1
kind: Pod
metadata: {name: far, namespace: y, labels: {role: client}}
spec: {nodeName: n2, containers: [{name: c, image: i}]}
status: {phase: Running, podIPs: [{ip: 10.0.0.2}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: x}
spec: {nodeName: n1, containers: [{name: c, image: i}]}
status: {phase: Running, podIPs: [{ip: 10.0.0.5}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: clients, namespace: x}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {role: client}}}]}]
";
    let dir = tempfile::tempdir().unwrap();
    let (mut core, kernel) = core_with(dir.path(), cluster(extra));
    assert!(
        holds_address(&kernel, "10.0.0.2"),
        "the remote client is a peer"
    );
    // This node's CNI hands 10.0.0.2 to y/local, no client: the remote claim is stale.
    attach(&mut core, "y", "local", "10.0.0.2");
    assert!(!holds_address(&kernel, "10.0.0.2"));
    assert_eq!(kernel.table(), full_compile(&core));
    core.handle(Request::Detach {
        id: attachment("y", "local", "10.0.0.2").id,
    })
    .unwrap();
    assert!(
        holds_address(&kernel, "10.0.0.2"),
        "released here, the address is the remote pod's again"
    );
    assert_eq!(kernel.table(), full_compile(&core));
    // The remote pod moves to another address; attaching that one here takes it away again.
    let mut far = core.cluster.pods[&PodKey::new("y", "far")].clone();
    far.ips = vec![ip("10.0.0.9")];
    core.apply_changes(vec![Event::Pod(far)]).unwrap();
    assert!(holds_address(&kernel, "10.0.0.9"));
    attach(&mut core, "y", "other", "10.0.0.9");
    assert!(!holds_address(&kernel, "10.0.0.9"));
    assert_eq!(kernel.table(), full_compile(&core));
}

#[test]
fn the_compiler_shares_the_clusters_copy_of_a_pod_until_it_must_change_it() {
    let extra = "
apiVersion: v1
kind: Pod
metadata: {name: far, namespace: y, labels: {role: client}}
spec: {nodeName: n2, containers: [{name: c, image: i}]}
status: {phase: Running, podIPs: [{ip: 10.0.0.2}]}
";
    let dir = tempfile::tempdir().unwrap();
    let (mut core, _) = core_with(dir.path(), cluster(extra));
    let key = PodKey::new("y", "far");
    let shared = |core: &Core| {
        std::ptr::eq(
            &*core.cluster.pods[&key],
            &*core.compiler.snapshot().pods[&key],
        )
    };
    assert!(shared(&core), "one copy of a pod nothing changes");
    // Its address attached here is taken from the compiler's copy only.
    attach(&mut core, "y", "local", "10.0.0.2");
    assert!(!shared(&core));
    assert!(core.compiler.snapshot().pods[&key].ips.is_empty());
    assert_eq!(core.cluster.pods[&key].ips, [ip("10.0.0.2")]);
}

#[test]
fn the_core_and_the_compiler_hold_one_copy_of_each_policy() {
    let extra = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: y}
spec: {podSelector: {matchLabels: {role: web}}, ingress: [{from: [{podSelector: {}}]}]}
---
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: guard}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {}}
  ingress: [{action: Deny, from: [{namespaces: {matchLabels: {team: outside}}}]}]
";
    let dir = tempfile::tempdir().unwrap();
    let (core, _) = core_with(dir.path(), cluster(extra));
    let compiled = core.compiler.snapshot();
    let key = PolicyKey::new("y", "web");
    assert!(std::ptr::eq(
        &*core.cluster.policies[&key],
        &*compiled.policies[&key]
    ));
    assert!(std::ptr::eq(
        &*core.cluster.cluster_policies["guard"],
        &*compiled.cluster_policies["guard"]
    ));
}

fn holds_address(kernel: &Shared, address: &str) -> bool {
    let element = podwall_policy::ruleset::Element::Address(ip(address));
    kernel
        .table()
        .sets
        .values()
        .any(|set| set.contains(&element))
}

/// A pod the source reports on this node, with an address, in namespace x.
const RUNNING_HERE: &str = "
apiVersion: v1
kind: Pod
metadata: {name: old, namespace: x}
spec: {nodeName: n1, containers: [{name: c, image: i}]}
status: {phase: Running, podIPs: [{ip: 10.0.0.7}]}
---
apiVersion: v1
kind: Pod
metadata: {name: stale, namespace: y}
spec: {nodeName: n2, containers: [{name: c, image: i}]}
status: {phase: Running, podIPs: [{ip: 10.0.0.7}]}
";

#[test]
fn a_running_pod_of_this_node_is_adopted_until_an_attach_takes_it_over() {
    let dir = tempfile::tempdir().unwrap();
    let (mut core, kernel) = core_with(dir.path(), cluster(&format!("{RUNNING_HERE}---{DENY_X}")));
    // Never attached, yet enforced: x's deny policy isolates it.
    let chain = kernel.table().ingress.get(&ip("10.0.0.7")).cloned();
    assert!(
        chain.as_ref().is_some_and(|c| c != OPEN_CHAIN),
        "the adopted pod is isolated"
    );
    assert_eq!(core.adopted.len(), 1);
    // Another node's stale claim on its address does not make that pod a peer here.
    let stale = core.compiler.snapshot().pods[&PodKey::new("y", "stale")].clone();
    assert!(stale.ips.is_empty(), "{stale:?}");
    assert_eq!(kernel.table(), full_compile(&core));
    // The runtime adds it again through podwall: taken over, no gap, same entries.
    attach(&mut core, "x", "old", "10.0.0.7");
    assert!(core.adopted.is_empty());
    assert_eq!(kernel.table().ingress.get(&ip("10.0.0.7")), chain.as_ref());
    assert_eq!(kernel.table(), full_compile(&core));
    // The source says it is gone: attached, it stays until its DEL.
    core.apply_changes(vec![Event::PodDeleted(PodKey::new("x", "old"))])
        .unwrap();
    assert!(kernel.table().ingress.contains_key(&ip("10.0.0.7")));
    assert_eq!(kernel.table(), full_compile(&core));
}

#[test]
fn an_adopted_pod_that_stops_running_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let (mut core, kernel) = core_with(dir.path(), cluster(RUNNING_HERE));
    assert!(kernel.table().ingress.contains_key(&ip("10.0.0.7")));
    let mut done = core.cluster.pods[&PodKey::new("x", "old")].clone();
    done.phase = podwall_policy::model::Phase::Finished;
    core.apply_changes(vec![Event::Pod(done)]).unwrap();
    assert!(!kernel.table().ingress.contains_key(&ip("10.0.0.7")));
    assert!(core.adopted.is_empty());
    // Its address goes back to the other node's pod that claims it.
    let stale = &core.compiler.snapshot().pods[&PodKey::new("y", "stale")];
    assert_eq!(stale.ips, vec![ip("10.0.0.7")]);
    assert_eq!(kernel.table(), full_compile(&core));
}

fn flow(src: &str, dst: &str, server: &str, port: u16) -> crate::dataplane::Flow {
    crate::dataplane::Flow {
        protocol: 6,
        src: ip(src),
        dst: ip(dst),
        sport: 40000,
        dport: port,
        zone: 0,
        server: ip(server),
        server_port: port,
    }
}

#[test]
fn flows_a_change_denies_are_cut_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (mut core, _) = core_with(dir.path(), cluster(""));
    attach(&mut core, "x", "a", "10.0.0.2");
    attach(&mut core, "y", "b", "10.0.0.3");
    let direct = flow("10.0.0.3", "10.0.0.2", "10.0.0.2", 80);
    // Through a Service: sent to the VIP, DNATed to x/a; judged by where it really went.
    let service = flow("10.0.0.3", "10.96.0.10", "10.0.0.2", 80);
    let outward = flow("10.0.0.2", "10.0.0.3", "10.0.0.3", 80);
    let flows = vec![direct.clone(), service.clone(), outward];
    assert!(
        core.revoked(flows.clone()).is_empty(),
        "nothing isolates anyone yet"
    );
    // x denies all ingress: the flows into x/a are revoked, x/a's own flow out is not.
    let deny = cluster(DENY_X).policies.into_values().next().unwrap();
    core.apply_changes(vec![Event::Policy(deny)]).unwrap();
    assert_eq!(core.revoked(flows), vec![direct, service]);
}

#[test]
fn an_adopted_pod_is_guarded_on_the_port_the_kernel_places_it_behind() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = Shared::default();
    kernel
        .0
        .lock()
        .unwrap()
        .ports
        .insert(ip("10.0.0.7"), "veth-old".into());
    let core = start(
        dir.path(),
        cluster(RUNNING_HERE),
        &kernel,
        Options::default(),
    );
    assert_eq!(
        kernel
            .0
            .lock()
            .unwrap()
            .table
            .as_ref()
            .unwrap()
            .guard
            .sources["veth-old"],
        BTreeSet::from([ip("10.0.0.7")])
    );
    assert!(core.unguarded.is_empty());
}

#[test]
fn pods_lists_each_enforced_pod_how_and_by_which_policies() {
    let dir = tempfile::tempdir().unwrap();
    let (mut core, _) = core_with(dir.path(), cluster(&format!("{RUNNING_HERE}---{DENY_X}")));
    attach(&mut core, "y", "b", "10.0.0.3");
    let Ok(Reply::Pods { pods, .. }) = core.handle(Request::Pods) else {
        panic!("a pods reply")
    };
    let seen: Vec<(String, String, Vec<String>)> = pods
        .iter()
        .map(|p| {
            (
                format!("{}/{}", p.namespace, p.name),
                p.how.clone(),
                p.ingress.clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("x/old".into(), "adopted".into(), vec!["x/deny".into()]),
            ("y/b".into(), "attached".into(), vec![]),
        ]
    );
}
