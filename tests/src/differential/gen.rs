//! The generator of cluster histories: from a seed, a reproducible sequence of [`Step`]s —
//! namespaces and pods with overlapping labels, local pods attached and detached through
//! CNI (before, after or without their manifests), remote pods with shared and reused
//! addresses, policies of every shape (deny-all, empty rules, selectors, ipBlocks with
//! excepts, numeric, named and ranged ports, 253-character names, thousands of peers,
//! broken fields), thousands of remote pods in one file, and daemon restarts.
//!
//! Pure: it writes no files and starts nothing. The driver carries each step out and tells
//! the generator the one thing only the kernel knows, the addresses host-local gave an
//! attached pod. Its own [`Rng`] keeps a seed's history the same on every machine.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use podwall_policy::selector::Labels;
use podwall_policy::PodKey;
use serde_json::{json, Map, Value};

/// SplitMix64: small, and the same sequence on every platform and toolchain, so a seed
/// replays the same history for as long as this module's code does not change.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`; `n` must not be 0.
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "Rng::below(0)");
        (self.next_u64() % n as u64) as usize
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True `p` times in a hundred.
    pub fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Up to `n` distinct items, in a random order.
    pub fn sample<T: Clone>(&mut self, items: &[T], n: usize) -> Vec<T> {
        let mut idx: Vec<usize> = (0..items.len()).collect();
        let n = n.min(idx.len());
        for i in 0..n {
            let j = i + self.below(idx.len() - i);
            idx.swap(i, j);
        }
        idx[..n].iter().map(|&i| items[i].clone()).collect()
    }
}

/// What the generator may do. Each can be switched off, to tell one divergence from another
/// (`--without restarts,long-names`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// Stop (SIGTERM or SIGKILL) and start the daemon, changing manifests while it is down.
    pub restarts: bool,
    /// 253-character policy and pod names.
    pub long_names: bool,
    /// A policy with thousands of peers.
    pub huge_policies: bool,
    /// Thousands of remote pods in one file.
    pub bulk_pods: bool,
    /// Remote pods that claim an address another pod holds.
    pub shared_ips: bool,
    /// Pods attached before, or without, their manifest (and without `K8S_POD_*` names).
    pub unlabelled: bool,
    /// Policies with an invalid field (fail closed).
    pub broken: bool,
    /// Dual-stack nodes (for even seeds) and IPv6 remote pods and ipBlocks.
    pub ipv6: bool,
}

impl Features {
    /// The names `--without` takes.
    pub const NAMES: [&'static str; 8] = [
        "restarts",
        "long-names",
        "huge-policies",
        "bulk-pods",
        "shared-ips",
        "unlabelled",
        "broken",
        "ipv6",
    ];

    pub fn all() -> Self {
        Features {
            restarts: true,
            long_names: true,
            huge_policies: true,
            bulk_pods: true,
            shared_ips: true,
            unlabelled: true,
            broken: true,
            ipv6: true,
        }
    }

    /// These features with `name` switched off; `None` for an unknown name.
    pub fn without(mut self, name: &str) -> Option<Self> {
        let flag = match name {
            "restarts" => &mut self.restarts,
            "long-names" => &mut self.long_names,
            "huge-policies" => &mut self.huge_policies,
            "bulk-pods" => &mut self.bulk_pods,
            "shared-ips" => &mut self.shared_ips,
            "unlabelled" => &mut self.unlabelled,
            "broken" => &mut self.broken,
            "ipv6" => &mut self.ipv6,
            _ => return None,
        };
        *flag = false;
        Some(self)
    }

    /// The names of the features switched off.
    pub fn off(&self) -> Vec<&'static str> {
        let on = [
            self.restarts,
            self.long_names,
            self.huge_policies,
            self.bulk_pods,
            self.shared_ips,
            self.unlabelled,
            self.broken,
            self.ipv6,
        ];
        Self::NAMES
            .iter()
            .zip(on)
            .filter(|(_, on)| !on)
            .map(|(name, _)| *name)
            .collect()
    }

    /// Whether the node of `seed` has IPv6 pod addresses too.
    pub fn dual_stack(&self, seed: u64) -> bool {
        self.ipv6 && seed % 2 == 0
    }
}

/// What the generator knows of the node it writes for.
#[derive(Debug, Clone)]
pub struct Context {
    /// `--node-name`: local pod manifests name it, remote ones other nodes.
    pub node: String,
    /// The node's pod subnet, a /24 its namespace owns: remote pods take addresses at its
    /// top end, which host-local does not reach in a run, and addresses local pods gave back.
    pub subnet4: Ipv4Addr,
}

/// One change to the cluster or the node.
#[derive(Debug, Clone)]
pub enum Step {
    /// Write (create or replace) a manifest file of the `--manifests` directory.
    Write {
        file: String,
        what: String,
        doc: Value,
    },
    /// Delete a manifest file.
    Remove {
        file: String,
        what: String,
    },
    /// CNI ADD through the real chain. `pod` is `None` for an attachment without
    /// `K8S_POD_*` arguments, which the daemon names `default/<container id>`.
    Attach {
        slot: usize,
        pod: Option<PodKey>,
    },
    /// CNI DEL of the pod attached for `slot`.
    Detach {
        slot: usize,
        pod: PodKey,
    },
    /// Stop the daemon (SIGKILL when `kill`, as after a crash); the steps until [`Step::Start`]
    /// change manifests only.
    Stop {
        kill: bool,
    },
    Start,
    /// Manifest changes one right after the other, so that the daemon reads them in one
    /// poll of its directory (or in the same batch of updates).
    Burst(Vec<Step>),
}

impl Step {
    /// One line saying what the step does.
    pub fn summary(&self) -> String {
        match self {
            Step::Write { file, what, .. } => format!("write {file}: {what}"),
            Step::Remove { file, what } => format!("remove {file}: {what}"),
            Step::Attach {
                slot,
                pod: Some(pod),
            } => format!("CNI ADD pod {pod} (slot {slot})"),
            Step::Attach { slot, pod: None } => {
                format!("CNI ADD a pod without K8S_POD_* arguments (slot {slot})")
            }
            Step::Detach { slot, pod } => format!("CNI DEL pod {pod} (slot {slot})"),
            Step::Stop { kill: true } => "stop the daemon with SIGKILL".to_string(),
            Step::Stop { kill: false } => "stop the daemon with SIGTERM".to_string(),
            Step::Start => "start the daemon".to_string(),
            Step::Burst(steps) => {
                let each: Vec<String> = steps.iter().map(Step::summary).collect();
                format!("at once: {}", each.join("; "))
            }
        }
    }

    /// Whether the step changes only the manifests directory.
    pub fn is_manifest(&self) -> bool {
        match self {
            Step::Write { .. } | Step::Remove { .. } => true,
            Step::Burst(steps) => steps.iter().all(Step::is_manifest),
            _ => false,
        }
    }

    /// The bytes of manifest text the step writes.
    pub fn written(&self) -> usize {
        match self {
            Step::Write { doc, .. } => doc.to_string().len(),
            Step::Burst(steps) => steps.iter().map(Step::written).sum(),
            _ => 0,
        }
    }
}

/// How much of a manifest a failure report shows.
const SHOWN_DOC: usize = 3000;

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Step::Burst(steps) = self {
            f.write_str("at once:")?;
            for step in steps {
                write!(f, "\n  - {step}")?;
            }
            return Ok(());
        }
        f.write_str(&self.summary())?;
        if let Step::Write { doc, .. } = self {
            let text = doc.to_string();
            if text.len() > SHOWN_DOC {
                let cut = (0..=SHOWN_DOC)
                    .rev()
                    .find(|i| text.is_char_boundary(*i))
                    .unwrap_or(0);
                write!(f, "\n  {}… ({} bytes)", &text[..cut], text.len())?;
            } else {
                write!(f, "\n  {text}")?;
            }
        }
        Ok(())
    }
}

/// Namespaces pods and policies live in; some never get a Namespace manifest.
const NAMESPACES: [&str; 4] = ["alpha", "beta", "gamma", "delta"];
/// Pod names shared between namespaces, so that keys differ only by namespace.
const POD_NAMES: [&str; 4] = ["web", "db", "api", "cache"];
const POD_LABEL_KEYS: [&str; 3] = ["app", "tier", "team"];
const POD_LABEL_VALUES: [&str; 3] = ["a", "b", "c"];
const NS_LABEL_KEYS: [&str; 2] = ["team", "env"];
const NS_LABEL_VALUES: [&str; 2] = ["x", "y"];
/// Port numbers of rules and container ports; ranges start at one of them.
pub const PORTS: [u16; 7] = [53, 80, 443, 5432, 8080, 8443, 9090];
const PORT_NAMES: [&str; 4] = ["http", "dns", "db", "metrics"];
/// Nodes remote pods run on.
const REMOTE_NODES: [&str; 2] = ["pwt-remote-1", "pwt-remote-2"];

/// Limits that keep a history's world about the size one node can settle in a second.
const MAX_ATTACHED: usize = 8;
const MAX_REMOTE: usize = 14;
const MAX_POLICIES: usize = 10;
/// A huge policy has this many peers at most.
const MAX_HUGE_PEERS: usize = 4000;
const MAX_BULK_PODS: usize = 5000;
/// Enough IPv6 addresses to fill more than one 64 KiB netlink attribute.
const MIN_BULK_PODS: usize = 1500;
/// Remote pods at the top of the node's /24 start at this host number.
const NODE_SUBNET_REMOTE_FIRST: u32 = 200;

/// The generator of one seed's history.
pub struct Generator {
    rng: Rng,
    features: Features,
    ctx: Context,
    world: World,
}

/// What the generator believes the cluster and the node hold.
#[derive(Debug, Default)]
struct World {
    namespaces: BTreeMap<String, Labels>,
    pods: BTreeMap<usize, PodSlot>,
    next_pod: usize,
    policies: BTreeMap<usize, PolicySlot>,
    next_policy: usize,
    /// The bulk file present, if any.
    bulk: Option<usize>,
    next_bulk: usize,
    /// Addresses local pods gave back, for remote pods to reuse.
    released: Vec<IpAddr>,
    /// Counters of fresh remote addresses.
    fresh4: u32,
    fresh6: u32,
    /// Manifest steps left while the daemon is stopped.
    down: Option<usize>,
}

#[derive(Debug, Clone)]
struct PodSlot {
    /// `None` until an attachment without pod arguments is named by its container id.
    key: Option<PodKey>,
    /// The node of a remote pod; `None` for a pod of the test's node.
    remote: Option<&'static str>,
    manifest: Option<PodDoc>,
    /// Local pods only: the addresses of the attachment.
    attached: Option<Vec<IpAddr>>,
}

#[derive(Debug, Clone)]
struct PodDoc {
    labels: Labels,
    ports: Vec<(String, u16, &'static str)>,
    ips: Vec<IpAddr>,
    phase: &'static str,
    host_network: bool,
}

#[derive(Debug, Clone)]
struct PolicySlot {
    key: PodKey,
    huge: bool,
}

/// What one step may do, before its details are drawn.
#[derive(Debug, Clone, Copy)]
enum Action {
    AttachNew,
    Reattach,
    Detach,
    Restart,
    RemotePod,
    LocalManifest,
    RewritePod,
    DeletePod,
    WriteNamespace,
    DeleteNamespace,
    NewPolicy,
    ChangePolicy,
    DeletePolicy,
    HugePolicy,
    BulkPods,
    RemoveBulk,
    Burst,
}

impl Generator {
    pub fn new(seed: u64, features: Features, ctx: Context) -> Self {
        Generator {
            rng: Rng::new(seed),
            features,
            ctx,
            world: World::default(),
        }
    }

    /// The next step. Call [`Generator::attached`] or [`Generator::attach_failed`] after
    /// carrying out a [`Step::Attach`], before asking for the next one.
    pub fn next_step(&mut self) -> Step {
        if let Some(left) = self.world.down {
            if left == 0 {
                self.world.down = None;
                return Step::Start;
            }
            self.world.down = Some(left - 1);
            let action = self.choose_manifest_action(false);
            return self.carry_out(action);
        }
        let attached = self.attached_slots().len();
        let mut options = Vec::new();
        // A world needs a few local pods before policies can isolate anything.
        let eager = if attached < 3 { 3 } else { 1 };
        if attached < MAX_ATTACHED && self.features.unlabelled {
            options.push((12 * eager, Action::AttachNew));
        }
        if attached < MAX_ATTACHED && !self.idle_local_slots().is_empty() {
            let weight = if self.features.unlabelled { 6 } else { 16 };
            options.push((weight * eager, Action::Reattach));
        }
        if attached > 0 {
            options.push((7, Action::Detach));
        }
        if self.features.restarts {
            options.push((3, Action::Restart));
        }
        let action = match self.weighted(&options, 72) {
            Some(action) => action,
            None => self.choose_manifest_action(false),
        };
        self.carry_out(action)
    }

    /// The driver attached `slot`'s pod as `key` with the addresses the CNI result gave.
    pub fn attached(&mut self, slot: usize, key: PodKey, ips: Vec<IpAddr>) {
        if let Some(pod) = self.world.pods.get_mut(&slot) {
            pod.key = Some(key);
            pod.attached = Some(ips);
        }
    }

    /// The driver's CNI ADD for `slot` failed: the pod is not attached.
    pub fn attach_failed(&mut self, slot: usize) {
        let gone = self
            .world
            .pods
            .get(&slot)
            .is_some_and(|pod| pod.manifest.is_none());
        if gone {
            self.world.pods.remove(&slot);
        }
    }

    /// Picks one of `options` by weight, or `None` with weight `rest`.
    fn weighted(&mut self, options: &[(usize, Action)], rest: usize) -> Option<Action> {
        let total: usize = options.iter().map(|(w, _)| w).sum::<usize>() + rest;
        let mut roll = self.rng.below(total);
        for (weight, action) in options {
            if roll < *weight {
                return Some(*action);
            }
            roll -= weight;
        }
        None
    }

    /// A manifest action; `in_burst` leaves out bursts themselves.
    fn choose_manifest_action(&mut self, in_burst: bool) -> Action {
        let remote = self.remote_slots().len();
        let with_manifest = self.slots_with_manifest(true).len();
        let huge_present = self.world.policies.values().any(|p| p.huge);
        let regular_policies = self.world.policies.values().filter(|p| !p.huge).count();
        let mut options = vec![(7, Action::WriteNamespace), (6, Action::LocalManifest)];
        if remote < MAX_REMOTE {
            options.push((10, Action::RemotePod));
        }
        if with_manifest > 0 {
            options.push((14, Action::RewritePod));
        }
        if !self
            .slots_with_manifest(self.features.unlabelled)
            .is_empty()
        {
            options.push((5, Action::DeletePod));
        }
        if !self.world.namespaces.is_empty() {
            options.push((3, Action::DeleteNamespace));
        }
        if regular_policies < MAX_POLICIES {
            options.push((12, Action::NewPolicy));
        }
        if regular_policies > 0 {
            options.push((9, Action::ChangePolicy));
        }
        if !self.world.policies.is_empty() {
            options.push((4, Action::DeletePolicy));
        }
        if self.features.huge_policies && !huge_present {
            options.push((1, Action::HugePolicy));
        }
        if self.features.bulk_pods && self.world.bulk.is_none() {
            options.push((2, Action::BulkPods));
        }
        if self.world.bulk.is_some() {
            options.push((2, Action::RemoveBulk));
        }
        if !in_burst {
            options.push((6, Action::Burst));
        }
        self.weighted(&options, 0)
            .expect("writing a namespace is always possible")
    }

    fn carry_out(&mut self, action: Action) -> Step {
        match action {
            Action::AttachNew => self.attach_new(),
            Action::Reattach => {
                let slot = *self.rng.pick(&self.idle_local_slots());
                let pod = self.world.pods[&slot].key.clone();
                Step::Attach { slot, pod }
            }
            Action::Detach => self.detach(),
            Action::Restart => {
                self.world.down = Some(self.rng.between(0, 2));
                Step::Stop {
                    kill: self.rng.percent(50),
                }
            }
            Action::RemotePod => self.new_remote_pod(),
            Action::LocalManifest => self.local_manifest(),
            Action::RewritePod => {
                let slot = *self.rng.pick(&self.slots_with_manifest(true));
                self.rewrite_pod(slot)
            }
            Action::DeletePod => self.delete_pod(),
            Action::WriteNamespace => self.write_namespace(),
            Action::DeleteNamespace => {
                let names: Vec<String> = self.world.namespaces.keys().cloned().collect();
                let name = self.rng.pick(&names).clone();
                self.world.namespaces.remove(&name);
                Step::Remove {
                    file: format!("ns-{name}.json"),
                    what: format!("namespace {name}"),
                }
            }
            Action::NewPolicy => {
                let slot = self.world.next_policy;
                self.world.next_policy += 1;
                let namespace = self.policy_namespace();
                let name = if self.features.long_names && self.rng.percent(20) {
                    long_name(&format!("np{slot}"))
                } else {
                    format!("np{slot}")
                };
                let key = PodKey::new(namespace, name);
                self.world.policies.insert(
                    slot,
                    PolicySlot {
                        key: key.clone(),
                        huge: false,
                    },
                );
                self.write_policy(slot, &key, "new")
            }
            Action::ChangePolicy => {
                let slots: Vec<usize> = self
                    .world
                    .policies
                    .iter()
                    .filter(|(_, p)| !p.huge)
                    .map(|(s, _)| *s)
                    .collect();
                let slot = *self.rng.pick(&slots);
                let key = self.world.policies[&slot].key.clone();
                self.write_policy(slot, &key, "changed")
            }
            Action::DeletePolicy => {
                let slots: Vec<usize> = self.world.policies.keys().copied().collect();
                let slot = *self.rng.pick(&slots);
                let policy = self.world.policies.remove(&slot).expect("picked a policy");
                Step::Remove {
                    file: format!("policy-{slot}.json"),
                    what: format!("policy {}", policy.key),
                }
            }
            Action::HugePolicy => self.huge_policy(),
            Action::BulkPods => self.bulk_pods(),
            Action::Burst => {
                let n = self.rng.between(2, 4);
                let steps = (0..n)
                    .map(|_| {
                        let action = self.choose_manifest_action(true);
                        self.carry_out(action)
                    })
                    .collect();
                Step::Burst(steps)
            }
            Action::RemoveBulk => {
                let slot = self.world.bulk.take().expect("a bulk file is present");
                Step::Remove {
                    file: format!("bulk-{slot}.json"),
                    what: "every pod of the bulk file".to_string(),
                }
            }
        }
    }

    // ---- the world's slots ----

    fn attached_slots(&self) -> Vec<usize> {
        self.world
            .pods
            .iter()
            .filter(|(_, p)| p.attached.is_some())
            .map(|(s, _)| *s)
            .collect()
    }

    /// Local pods that could be attached: known by name, not attached; with a manifest
    /// unless pods may be attached without one.
    fn idle_local_slots(&self) -> Vec<usize> {
        self.world
            .pods
            .iter()
            .filter(|(_, p)| p.remote.is_none() && p.attached.is_none() && p.key.is_some())
            .filter(|(_, p)| self.features.unlabelled || p.manifest.is_some())
            .map(|(s, _)| *s)
            .collect()
    }

    fn remote_slots(&self) -> Vec<usize> {
        self.world
            .pods
            .iter()
            .filter(|(_, p)| p.remote.is_some())
            .map(|(s, _)| *s)
            .collect()
    }

    /// Pods with a manifest; attached ones only if `attached_too`.
    fn slots_with_manifest(&self, attached_too: bool) -> Vec<usize> {
        self.world
            .pods
            .iter()
            .filter(|(_, p)| p.manifest.is_some() && (attached_too || p.attached.is_none()))
            .map(|(s, _)| *s)
            .collect()
    }

    /// Keys of pods alive in the world.
    fn live_keys(&self) -> BTreeSet<PodKey> {
        self.world
            .pods
            .values()
            .filter_map(|p| p.key.clone())
            .collect()
    }

    /// A pod key no live pod has: a shared name in a random namespace, or a unique one.
    fn fresh_key(&mut self, slot: usize) -> PodKey {
        let namespace = self.rng.pick(&NAMESPACES).to_string();
        let name = if self.features.long_names && self.rng.percent(4) {
            long_name(&format!("p{slot}"))
        } else if self.rng.percent(50) {
            self.rng.pick(&POD_NAMES).to_string()
        } else {
            format!("p{slot}")
        };
        let key = PodKey::new(namespace.clone(), name);
        if self.live_keys().contains(&key) {
            PodKey::new(namespace, format!("p{slot}"))
        } else {
            key
        }
    }

    fn new_slot(&mut self, remote: Option<&'static str>, named: bool) -> usize {
        let slot = self.world.next_pod;
        self.world.next_pod += 1;
        let key = named.then(|| self.fresh_key(slot));
        self.world.pods.insert(
            slot,
            PodSlot {
                key,
                remote,
                manifest: None,
                attached: None,
            },
        );
        slot
    }

    // ---- pods ----

    fn attach_new(&mut self) -> Step {
        let named = !self.rng.percent(15);
        let slot = self.new_slot(None, named);
        let pod = self.world.pods[&slot].key.clone();
        Step::Attach { slot, pod }
    }

    fn detach(&mut self) -> Step {
        let slot = *self.rng.pick(&self.attached_slots());
        let pod = self.world.pods.get_mut(&slot).expect("an attached slot");
        let ips = pod.attached.take().unwrap_or_default();
        let key = pod.key.clone().expect("an attached pod has a key");
        let forget = pod.manifest.is_none();
        self.world.released.extend(ips);
        if forget {
            self.world.pods.remove(&slot);
        }
        Step::Detach { slot, pod: key }
    }

    fn new_remote_pod(&mut self) -> Step {
        let node = *self.rng.pick(&REMOTE_NODES);
        let slot = self.new_slot(Some(node), true);
        self.rewrite_pod(slot)
    }

    /// A manifest for a local pod that has none (attached or not), or for a new local pod
    /// that is attached later.
    fn local_manifest(&mut self) -> Step {
        let without: Vec<usize> = self
            .world
            .pods
            .iter()
            .filter(|(_, p)| p.remote.is_none() && p.manifest.is_none() && p.key.is_some())
            .map(|(s, _)| *s)
            .collect();
        let slot = if !without.is_empty() && self.rng.percent(60) {
            *self.rng.pick(&without)
        } else {
            self.new_slot(None, true)
        };
        self.rewrite_pod(slot)
    }

    /// A new version of a pod's manifest: labels, ports and, for remote pods, addresses,
    /// phase and host network drawn afresh (an existing remote pod keeps its addresses half
    /// the time, so that relabels happen on their own).
    fn rewrite_pod(&mut self, slot: usize) -> Step {
        let pod = self.world.pods[&slot].clone();
        let key = pod.key.clone().expect("a pod with a manifest has a key");
        let labels = self.labels(&POD_LABEL_KEYS, &POD_LABEL_VALUES, 60);
        let ports = self.container_ports();
        let (ips, phase, host_network) = match pod.remote {
            None => (Vec::new(), "Running", false),
            Some(_) => {
                let keep = pod.manifest.as_ref().filter(|_| self.rng.percent(50));
                let ips = match keep {
                    Some(doc) => doc.ips.clone(),
                    None => self.remote_ips(),
                };
                let phase = if self.rng.percent(8) {
                    *self.rng.pick(&["Succeeded", "Failed"])
                } else {
                    *self.rng.pick(&["Running", "Running", "Pending"])
                };
                (ips, phase, self.rng.percent(5))
            }
        };
        let doc = PodDoc {
            labels,
            ports,
            ips,
            phase,
            host_network,
        };
        // A remote pod sometimes moves to the other remote node, or names this node while
        // it is not attached here (scheduled, not started): then it is no pod at all.
        let node = match pod.remote {
            None => self.ctx.node.clone(),
            Some(_) if self.rng.percent(5) => self.ctx.node.clone(),
            Some(_) => self.rng.pick(&REMOTE_NODES).to_string(),
        };
        let what = format!(
            "pod {key} on {node}{} labels {:?} ports {:?} ips {:?}{}{}",
            if pod.manifest.is_some() {
                " (rewritten)"
            } else {
                ""
            },
            doc.labels,
            doc.ports,
            doc.ips,
            if phase == "Running" {
                String::new()
            } else {
                format!(" phase {phase}")
            },
            if host_network { " hostNetwork" } else { "" },
        );
        let json = pod_doc(&key, &node, &doc);
        self.world
            .pods
            .get_mut(&slot)
            .expect("the slot exists")
            .manifest = Some(doc);
        Step::Write {
            file: format!("pod-{slot}.json"),
            what,
            doc: json,
        }
    }

    fn delete_pod(&mut self) -> Step {
        let slot = *self
            .rng
            .pick(&self.slots_with_manifest(self.features.unlabelled));
        let pod = self
            .world
            .pods
            .get_mut(&slot)
            .expect("a slot with a manifest");
        let doc = pod.manifest.take().expect("a slot with a manifest");
        let key = pod.key.clone().expect("a pod with a manifest has a key");
        let attached = pod.attached.is_some();
        if pod.remote.is_some() {
            self.world.released.extend(doc.ips);
            self.world.pods.remove(&slot);
        } else if !attached && !self.features.unlabelled {
            self.world.pods.remove(&slot);
        }
        Step::Remove {
            file: format!("pod-{slot}.json"),
            what: format!(
                "pod {key}{}",
                if attached { " (still attached)" } else { "" }
            ),
        }
    }

    /// Addresses for a remote pod: fresh ones of the documentation ranges or of the top of
    /// the node's subnet, ones local pods gave back and, with shared IPs, ones that another
    /// pod still holds. Sometimes none (not scheduled yet), sometimes IPv6 too or only.
    fn remote_ips(&mut self) -> Vec<IpAddr> {
        if self.rng.percent(5) {
            return Vec::new();
        }
        let mut ips = Vec::new();
        let v6_only = self.features.ipv6 && self.rng.percent(10);
        if !v6_only {
            let attached: Vec<IpAddr> = self
                .world
                .pods
                .values()
                .filter_map(|p| p.attached.as_ref())
                .flatten()
                .copied()
                .filter(IpAddr::is_ipv4)
                .collect();
            let remote: Vec<IpAddr> = self
                .world
                .pods
                .values()
                .filter_map(|p| p.manifest.as_ref())
                .flat_map(|d| d.ips.iter().copied())
                .filter(IpAddr::is_ipv4)
                .collect();
            let released: Vec<IpAddr> = self
                .world
                .released
                .iter()
                .copied()
                .filter(IpAddr::is_ipv4)
                .collect();
            let roll = self.rng.below(100);
            let ip = if roll < 15 && !released.is_empty() {
                *self.rng.pick(&released)
            } else if roll < 25 && self.features.shared_ips && !attached.is_empty() {
                *self.rng.pick(&attached)
            } else if roll < 40 && self.features.shared_ips && !remote.is_empty() {
                *self.rng.pick(&remote)
            } else if roll < 55 {
                let host = NODE_SUBNET_REMOTE_FIRST + self.rng.below(50) as u32;
                IpAddr::V4(Ipv4Addr::from(u32::from(self.ctx.subnet4) + host))
            } else {
                self.fresh4()
            };
            ips.push(ip);
        }
        if v6_only || (self.features.ipv6 && self.rng.percent(30)) {
            self.world.fresh6 += 1;
            ips.push(IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                0,
                0,
                0,
                0,
                0,
                self.world.fresh6 as u16,
            )));
        }
        ips
    }

    /// A documentation address (TEST-NET-1 and -3) no remote pod had before.
    fn fresh4(&mut self) -> IpAddr {
        let n = self.world.fresh4;
        self.world.fresh4 += 1;
        let (base, host) = if n % 2 == 0 {
            ([192, 0, 2, 0], 10 + (n / 2) % 240)
        } else {
            ([203, 0, 113, 0], 10 + (n / 2) % 240)
        };
        IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::from(base)) + host))
    }

    fn container_ports(&mut self) -> Vec<(String, u16, &'static str)> {
        let n = self.rng.between(0, 3);
        (0..n)
            .map(|_| {
                let name = self.rng.pick(&PORT_NAMES).to_string();
                let base = *self.rng.pick(&PORTS);
                let port = base + self.rng.between(0, 2) as u16;
                let protocol = *self.rng.pick(&["TCP", "TCP", "UDP", "SCTP"]);
                (name, port, protocol)
            })
            .collect()
    }

    /// Thousands of remote pods with the same labels in one file (a `List`): the sets of
    /// the peers they match grow by thousands of elements in one change.
    fn bulk_pods(&mut self) -> Step {
        let slot = self.world.next_bulk;
        self.world.next_bulk += 1;
        self.world.bulk = Some(slot);
        let count = self.rng.between(MIN_BULK_PODS, MAX_BULK_PODS);
        // Mostly the twins of a pod of the world, so that the peers matching it grow by
        // thousands at once.
        let twins: Vec<(String, Labels)> = self
            .world
            .pods
            .values()
            .filter_map(|p| {
                Some((
                    p.key.clone()?.namespace.to_string(),
                    p.manifest.as_ref()?.labels.clone(),
                ))
            })
            .collect();
        let (namespace, labels) = if !twins.is_empty() && self.rng.percent(70) {
            self.rng.pick(&twins).clone()
        } else {
            (
                self.rng.pick(&NAMESPACES).to_string(),
                self.labels(&POD_LABEL_KEYS, &POD_LABEL_VALUES, 70),
            )
        };
        let node = *self.rng.pick(&REMOTE_NODES);
        let items: Vec<Value> = (0..count)
            .map(|i| {
                let key = PodKey::new(namespace.as_str(), format!("bulk{slot}-{i}"));
                let mut ips = vec![IpAddr::V6(Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    0xb000 + slot as u16,
                    0,
                    0,
                    0,
                    (i >> 16) as u16,
                    i as u16 + 1,
                ))];
                // TEST-NET-2 is the bulk files' own IPv4 range.
                if i < 250 {
                    ips.insert(0, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1 + i as u8)));
                }
                let doc = PodDoc {
                    labels: labels.clone(),
                    ports: vec![("http".to_string(), 8080, "TCP")],
                    ips,
                    phase: "Running",
                    host_network: false,
                };
                pod_doc(&key, node, &doc)
            })
            .collect();
        Step::Write {
            file: format!("bulk-{slot}.json"),
            what: format!("{count} remote pods in {namespace} labelled {labels:?}"),
            doc: json!({"apiVersion": "v1", "kind": "List", "items": items}),
        }
    }

    // ---- namespaces ----

    fn write_namespace(&mut self) -> Step {
        let name = self.rng.pick(&NAMESPACES).to_string();
        let labels = self.labels(&NS_LABEL_KEYS, &NS_LABEL_VALUES, 60);
        let what = format!(
            "namespace {name}{} labels {labels:?}",
            if self.world.namespaces.contains_key(&name) {
                " (relabelled)"
            } else {
                ""
            }
        );
        self.world.namespaces.insert(name.clone(), labels.clone());
        Step::Write {
            file: format!("ns-{name}.json"),
            what,
            doc: json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": labels},
            }),
        }
    }

    fn labels(&mut self, keys: &[&str], values: &[&str], percent: usize) -> Labels {
        let mut labels = Labels::new();
        for key in keys {
            if self.rng.percent(percent) {
                labels.insert(key.to_string(), self.rng.pick(values).to_string());
            }
        }
        labels
    }

    // ---- policies ----

    fn write_policy(&mut self, slot: usize, key: &PodKey, how: &str) -> Step {
        let spec = self.policy_spec();
        Step::Write {
            file: format!("policy-{slot}.json"),
            what: format!("{how} policy {key}"),
            doc: policy_doc(key, spec),
        }
    }

    fn policy_spec(&mut self) -> Value {
        let mut spec = Map::new();
        if self.rng.percent(8) {
            // Deny all, in one or both directions.
            spec.insert("podSelector".into(), json!({}));
            let types = self
                .rng
                .pick(&[&["Ingress"][..], &["Egress"], &["Ingress", "Egress"]])
                .to_vec();
            spec.insert("policyTypes".into(), json!(types));
            return Value::Object(spec);
        }
        let selector = self.pod_selector();
        spec.insert("podSelector".into(), selector);
        match self.rng.below(5) {
            0 | 1 => {}
            2 => {
                spec.insert("policyTypes".into(), json!(["Ingress"]));
            }
            3 => {
                spec.insert("policyTypes".into(), json!(["Egress"]));
            }
            _ => {
                spec.insert("policyTypes".into(), json!(["Ingress", "Egress"]));
            }
        }
        for (field, peers) in [("ingress", "from"), ("egress", "to")] {
            match self.rng.below(10) {
                0..=2 => {}
                3 => {
                    spec.insert(field.into(), json!([]));
                }
                _ => {
                    let n = self.rng.between(1, 3);
                    let rules: Vec<Value> = (0..n).map(|_| self.rule(peers)).collect();
                    spec.insert(field.into(), Value::Array(rules));
                }
            }
        }
        let mut spec = Value::Object(spec);
        if self.features.broken && self.rng.percent(4) {
            self.break_policy(&mut spec);
        }
        spec
    }

    /// One rule: sometimes `{}`, else peers (missing, empty or 1–3) and ports (missing,
    /// empty or 1–3).
    fn rule(&mut self, peers_field: &str) -> Value {
        let mut rule = Map::new();
        if self.rng.percent(10) {
            return Value::Object(rule);
        }
        match self.rng.below(20) {
            0..=2 => {}
            3 => {
                rule.insert(peers_field.into(), json!([]));
            }
            _ => {
                let n = self.rng.between(1, 3);
                let peers: Vec<Value> = (0..n).map(|_| self.peer()).collect();
                rule.insert(peers_field.into(), Value::Array(peers));
            }
        }
        match self.rng.below(20) {
            0..=6 => {}
            7 => {
                rule.insert("ports".into(), json!([]));
            }
            _ => {
                let n = self.rng.between(1, 3);
                let ports: Vec<Value> = (0..n).map(|_| self.port_entry()).collect();
                rule.insert("ports".into(), Value::Array(ports));
            }
        }
        Value::Object(rule)
    }

    fn peer(&mut self) -> Value {
        match self.rng.below(20) {
            0..=6 => json!({"podSelector": self.pod_selector()}),
            7..=10 => json!({"namespaceSelector": self.namespace_selector()}),
            11..=14 => json!({
                "podSelector": self.pod_selector(),
                "namespaceSelector": self.namespace_selector(),
            }),
            _ => json!({"ipBlock": self.ip_block()}),
        }
    }

    /// A pod selector; a third of them name one label a pod of the world has, so that
    /// policies select (and peers match) something often.
    fn pod_selector(&mut self) -> Value {
        let known: Vec<(String, String)> = self
            .world
            .pods
            .values()
            .filter_map(|p| p.manifest.as_ref())
            .flat_map(|d| d.labels.iter().map(|(k, v)| (k.clone(), v.clone())))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !known.is_empty() && self.rng.percent(35) {
            let (key, value) = self.rng.pick(&known).clone();
            return json!({"matchLabels": {key: value}});
        }
        self.selector(&POD_LABEL_KEYS, &POD_LABEL_VALUES)
    }

    /// The namespace of a new policy: mostly one a local pod lives in.
    fn policy_namespace(&mut self) -> String {
        let local: Vec<String> = self
            .world
            .pods
            .values()
            .filter(|p| p.remote.is_none())
            .filter_map(|p| p.key.as_ref().map(|k| k.namespace.to_string()))
            .collect();
        if !local.is_empty() && self.rng.percent(60) {
            self.rng.pick(&local).clone()
        } else {
            self.rng.pick(&NAMESPACES).to_string()
        }
    }

    fn namespace_selector(&mut self) -> Value {
        if self.rng.percent(15) {
            let names = self.rng.sample(&NAMESPACES, 2);
            return json!({"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": names}
            ]});
        }
        self.selector(&NS_LABEL_KEYS, &NS_LABEL_VALUES)
    }

    /// A label selector: empty, matchLabels, matchExpressions (every operator) or both.
    fn selector(&mut self, keys: &[&str], values: &[&str]) -> Value {
        let mut sel = Map::new();
        let roll = self.rng.below(10);
        if roll < 2 {
            return Value::Object(sel);
        }
        if roll < 7 || roll == 9 {
            let n = self.rng.between(1, 2);
            let labels: Labels = self
                .rng
                .sample(keys, n)
                .into_iter()
                .map(|k| (k.to_string(), self.rng.pick(values).to_string()))
                .collect();
            sel.insert("matchLabels".into(), json!(labels));
        }
        if roll >= 7 {
            let n = self.rng.between(1, 2);
            let exprs: Vec<Value> = (0..n)
                .map(|_| {
                    let key = *self.rng.pick(keys);
                    let n = self.rng.between(1, 2);
                    match self.rng.below(4) {
                        0 => json!({"key": key, "operator": "In",
                                    "values": self.rng.sample(values, n)}),
                        1 => json!({"key": key, "operator": "NotIn",
                                    "values": self.rng.sample(values, n)}),
                        2 => json!({"key": key, "operator": "Exists"}),
                        _ => json!({"key": key, "operator": "DoesNotExist"}),
                    }
                })
                .collect();
            sel.insert("matchExpressions".into(), Value::Array(exprs));
        }
        Value::Object(sel)
    }

    /// An ipBlock over the node's subnet, the documentation ranges, everything, or one pod's
    /// address; excepts are strict subnets around addresses pods hold.
    fn ip_block(&mut self) -> Value {
        let subnet = u32::from(self.ctx.subnet4);
        let mut cidrs: Vec<(IpAddr, u8)> = vec![
            (IpAddr::V4(Ipv4Addr::from(subnet)), 24),
            (IpAddr::V4(Ipv4Addr::from(subnet)), 25),
            (IpAddr::V4(Ipv4Addr::from(subnet + 192)), 26),
            (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0)), 24),
            (IpAddr::V4(Ipv4Addr::new(203, 0, 113, 0)), 24),
            (IpAddr::V4(Ipv4Addr::new(198, 51, 100, 0)), 24),
            (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0)), 25),
            (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            (IpAddr::V4(Ipv4Addr::new(10, 200, 0, 0)), 16),
        ];
        if self.features.ipv6 {
            cidrs.extend([
                (
                    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0)),
                    32,
                ),
                (
                    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0)),
                    64,
                ),
                (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
                (
                    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 0)),
                    32,
                ),
            ]);
        }
        let anchors = self.anchors();
        let (addr, len) = if self.rng.percent(15) && !anchors.is_empty() {
            let ip = *self.rng.pick(&anchors);
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        } else {
            *self.rng.pick(&cidrs)
        };
        let cidr = (mask(addr, len), len);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let mut except = Vec::new();
        if len < max {
            let inside: Vec<IpAddr> = anchors
                .iter()
                .copied()
                .filter(|ip| within(*ip, cidr))
                .collect();
            for _ in 0..self.rng.between(0, 2) {
                let anchor = if inside.is_empty() {
                    cidr.0
                } else {
                    *self.rng.pick(&inside)
                };
                let sub = self.rng.between(len as usize + 1, max as usize) as u8;
                // An IPv6 except is at most a /96: it cuts around the address in play, not
                // half of the address space.
                let sub = if max == 128 { sub.max(96) } else { sub };
                except.push(format!("{}/{sub}", mask(anchor, sub)));
            }
        }
        let mut block = json!({"cidr": format!("{}/{}", cidr.0, cidr.1)});
        if !except.is_empty() {
            block["except"] = json!(except);
        }
        block
    }

    /// Addresses pods hold, attached or remote.
    fn anchors(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = self
            .world
            .pods
            .values()
            .flat_map(|p| {
                p.attached
                    .iter()
                    .flatten()
                    .chain(p.manifest.iter().flat_map(|d| d.ips.iter()))
                    .copied()
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    fn port_entry(&mut self) -> Value {
        let mut entry = Map::new();
        match self.rng.below(20) {
            0..=5 => {}
            6..=13 => {
                entry.insert("protocol".into(), json!("TCP"));
            }
            14..=16 => {
                entry.insert("protocol".into(), json!("UDP"));
            }
            _ => {
                entry.insert("protocol".into(), json!("SCTP"));
            }
        }
        match self.rng.below(20) {
            0..=1 => {}
            2..=11 => {
                entry.insert("port".into(), json!(self.rng.pick(&PORTS)));
            }
            12..=16 => {
                entry.insert("port".into(), json!(self.rng.pick(&PORT_NAMES)));
            }
            _ => {
                let port = *self.rng.pick(&PORTS);
                entry.insert("port".into(), json!(port));
                entry.insert(
                    "endPort".into(),
                    json!(port + self.rng.between(0, 3) as u16),
                );
            }
        }
        Value::Object(entry)
    }

    /// Break one field the way the API server would refuse it: the policy fails closed.
    fn break_policy(&mut self, spec: &mut Value) {
        let rule = match self.rng.below(4) {
            0 => {
                json!({"from": [{"ipBlock": {"cidr": "192.0.2.0/24", "except": ["198.51.100.0/25"]}}]})
            }
            1 => json!({"ports": [{"port": 8080, "endPort": 80}]}),
            2 => json!({"ports": [{"protocol": "ICMP", "port": 80}]}),
            _ => json!({"from": [{}]}),
        };
        let rules = spec
            .as_object_mut()
            .expect("a spec is an object")
            .entry("ingress")
            .or_insert_with(|| json!([]));
        if let Some(rules) = rules.as_array_mut() {
            rules.push(rule);
        }
    }

    /// A policy with thousands of peers in one rule: /128s and /48s of the IPv6
    /// documentation range (/32s of TEST-NET-3 without IPv6), and pod selectors each
    /// naming one pod.
    fn huge_policy(&mut self) -> Step {
        let slot = self.world.next_policy;
        self.world.next_policy += 1;
        let namespace = self.policy_namespace();
        let name = if self.features.long_names && self.rng.percent(30) {
            long_name(&format!("huge{slot}"))
        } else {
            format!("huge{slot}")
        };
        let key = PodKey::new(namespace, name);
        let count = self.rng.between(1000, MAX_HUGE_PEERS);
        let peers: Vec<Value> = (0..count)
            .map(|i| match i % 10 {
                0 => json!({"podSelector": {"matchLabels": {"app": POD_LABEL_VALUES[i % 3], "idx": format!("{i}")}}}),
                _ if self.features.ipv6 && i % 2 == 0 => json!({"ipBlock": {"cidr": format!("2001:db8:{:x}::/48", 0x1000 + i)}}),
                _ if self.features.ipv6 => json!({"ipBlock": {"cidr": format!("2001:db8:ffff::{:x}/128", i)}}),
                _ => json!({"ipBlock": {"cidr": format!("203.0.113.{}/32", i % 256)}}),
            })
            .collect();
        let field = if self.rng.percent(50) {
            ("ingress", "from")
        } else {
            ("egress", "to")
        };
        let mut spec = Map::new();
        let selector = self.pod_selector();
        spec.insert("podSelector".into(), selector);
        let mut rule = Map::new();
        rule.insert(field.1.into(), Value::Array(peers));
        if self.rng.percent(50) {
            rule.insert("ports".into(), json!([{"port": 80}, {"port": "http"}]));
        }
        spec.insert(field.0.into(), json!([Value::Object(rule)]));
        if field.0 == "egress" {
            spec.insert("policyTypes".into(), json!(["Egress"]));
        }
        self.world.policies.insert(
            slot,
            PolicySlot {
                key: key.clone(),
                huge: true,
            },
        );
        Step::Write {
            file: format!("policy-{slot}.json"),
            what: format!("policy {key} with {count} {} peers", field.0),
            doc: policy_doc(&key, Value::Object(spec)),
        }
    }
}

/// The first `steps` steps of `seed`'s history without running them: attached pods get
/// made-up addresses of 10.200.0.0/24 (a real run's depend on its node's subnet), so the
/// addresses differ from a run's but the steps are the same.
pub fn plan(seed: u64, steps: usize, features: Features, node: &str) -> Vec<Step> {
    let subnet4 = Ipv4Addr::new(10, 200, 0, 0);
    let mut gen = Generator::new(
        seed,
        features,
        Context {
            node: node.to_string(),
            subnet4,
        },
    );
    let mut host = 1;
    (0..steps)
        .map(|_| {
            let step = gen.next_step();
            if let Step::Attach { slot, pod } = &step {
                host += 1;
                let key = pod
                    .clone()
                    .unwrap_or_else(|| PodKey::new("default", format!("container-{slot}")));
                let ip = IpAddr::V4(Ipv4Addr::from(u32::from(subnet4) + host));
                gen.attached(*slot, key, vec![ip]);
            }
            step
        })
        .collect()
}

/// A Pod manifest as JSON.
fn pod_doc(key: &PodKey, node: &str, doc: &PodDoc) -> Value {
    let ports: Vec<Value> = doc
        .ports
        .iter()
        .map(|(name, port, protocol)| json!({"name": name, "containerPort": port, "protocol": protocol}))
        .collect();
    let mut spec = json!({
        "nodeName": node,
        "containers": [{"name": "c", "image": "busybox", "ports": ports}],
    });
    if doc.host_network {
        spec["hostNetwork"] = json!(true);
    }
    let mut status = json!({"phase": doc.phase});
    if let Some(first) = doc.ips.first() {
        status["podIP"] = json!(first.to_string());
        let ips: Vec<Value> = doc
            .ips
            .iter()
            .map(|ip| json!({"ip": ip.to_string()}))
            .collect();
        status["podIPs"] = json!(ips);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": key.name, "namespace": key.namespace, "labels": doc.labels},
        "spec": spec,
        "status": status,
    })
}

fn policy_doc(key: &PodKey, spec: Value) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": key.name, "namespace": key.namespace},
        "spec": spec,
    })
}

/// A DNS subdomain of exactly 253 characters starting with `tag`: labels of at most 63
/// characters joined by dots, the longest name Kubernetes accepts.
pub fn long_name(tag: &str) -> String {
    let mut name = format!("{tag}-");
    while name.len() < 253 {
        let at_label_end = name.rsplit('.').next().map_or(0, str::len) == 63;
        name.push(if at_label_end { '.' } else { 'x' });
    }
    name.pop();
    name.push('z');
    name
}

/// `ip` with every bit after the first `len` cleared.
fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// Whether `ip` lies in the network `(base, len)`.
fn within(ip: IpAddr, (base, len): (IpAddr, u8)) -> bool {
    ip.is_ipv4() == base.is_ipv4() && mask(ip, len) == base
}

#[cfg(test)]
mod tests {
    use super::*;
    use podwall_policy::manifests::load;

    fn generator(seed: u64) -> Generator {
        Generator::new(
            seed,
            Features::all(),
            Context {
                node: "pwt-node-x".into(),
                subnet4: Ipv4Addr::new(10, 200, 7, 0),
            },
        )
    }

    /// Runs `steps` steps, attaching pods at made-up addresses; returns the summaries.
    fn history(seed: u64, steps: usize) -> Vec<String> {
        plan(seed, steps, Features::all(), "pwt-node-x")
            .iter()
            .map(Step::summary)
            .collect()
    }

    #[test]
    fn a_seed_replays_the_same_history() {
        assert_eq!(history(7, 200), history(7, 200));
        assert_ne!(history(7, 50), history(8, 50));
    }

    #[test]
    fn every_manifest_loads_with_at_most_object_errors() {
        for seed in 0..4 {
            let mut gen = generator(seed);
            for _ in 0..40 {
                let step = gen.next_step();
                if let Step::Attach { slot, pod } = &step {
                    let key = pod.clone().unwrap_or_else(|| PodKey::new("default", "x"));
                    gen.attached(*slot, key, vec!["10.200.7.9".parse().unwrap()]);
                }
                if let Step::Write { file, doc, .. } = &step {
                    let text = doc.to_string();
                    let loaded = load([(file.as_str(), text.as_str())]);
                    assert!(!loaded.has_fatal_errors(), "{step}: {:?}", loaded.errors);
                }
            }
        }
    }

    #[test]
    fn long_names_are_253_character_subdomains() {
        let name = long_name("np3");
        assert_eq!(name.len(), 253);
        assert!(name.starts_with("np3-"));
        assert!(name.split('.').all(|l| !l.is_empty() && l.len() <= 63));
        assert!(name.ends_with('z'));
    }

    #[test]
    fn restarts_are_followed_by_a_start() {
        let mut gen = generator(3);
        let mut down = false;
        for _ in 0..500 {
            let step = gen.next_step();
            if let Step::Attach { slot, pod } = &step {
                let key = pod.clone().unwrap_or_else(|| PodKey::new("default", "x"));
                gen.attached(*slot, key, vec!["10.200.7.9".parse().unwrap()]);
            }
            match step {
                Step::Stop { .. } => {
                    assert!(!down);
                    down = true;
                }
                Step::Start => {
                    assert!(down);
                    down = false;
                }
                other => assert!(!down || other.is_manifest(), "{other}"),
            }
        }
    }

    #[test]
    fn masks_and_networks() {
        let ip: IpAddr = "192.0.2.77".parse().unwrap();
        assert_eq!(mask(ip, 25), "192.0.2.0".parse::<IpAddr>().unwrap());
        assert_eq!(mask(ip, 0), "0.0.0.0".parse::<IpAddr>().unwrap());
        assert!(within(ip, ("192.0.2.0".parse().unwrap(), 24)));
        assert!(!within(ip, ("192.0.2.128".parse().unwrap(), 25)));
        assert!(!within(
            "2001:db8::1".parse().unwrap(),
            ("0.0.0.0".parse().unwrap(), 0)
        ));
    }
}
