//! The pure part of the Kubernetes source: watch events in, a `Snapshot` and the compiler
//! events that changed it out. No I/O, so the folds are unit-tested here.
//!
//! Every watched kind goes through the one `Cache::fold`; what differs between pods,
//! namespaces, policies and cluster policies is said once per kind, by its `Watched` impl.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Namespace as ApiNamespace, ObjectReference};
use k8s_openapi::api::networking::v1::NetworkPolicy as ApiPolicy;
use kube::runtime::watcher::Event as WatchEvent;
use kube::Resource;
use podwall_policy::diff::diff;
use podwall_policy::model::{ClusterPolicy, Interner, Namespace, Pod, PodKey, Policy, PolicyKey};
use podwall_policy::ModelError;
use podwall_policy::{Event, Snapshot};
use tracing::{debug, warn};

use super::{ClusterPolicyObject, Kind, SlimPod};

/// One watcher event, of whichever kind. Moved once per event, so the size difference of
/// the variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Update {
    Pod(WatchEvent<SlimPod>),
    Namespace(WatchEvent<ApiNamespace>),
    Policy(WatchEvent<ApiPolicy>),
    ClusterPolicy(WatchEvent<ClusterPolicyObject>),
    /// The kind's objects as the cache has them, taken as listed: its watch cannot list
    /// them (see `WatchError::Unreadable`), and forgetting them would drop what is enforced.
    Keep(Kind),
}

/// A policy (namespaced or cluster) that converted with errors: enforced as its fail-closed
/// stand-in, and reported.
#[derive(Debug, Clone)]
pub struct Broken {
    /// The object, as an Event names it: without its version, so that the Events of its
    /// versions are one series.
    pub object: ObjectReference,
    /// The `resourceVersion` read: each broken version is reported once.
    pub version: String,
    pub errors: Vec<ModelError>,
}

impl Broken {
    /// `namespace/name`, or `name` for a cluster policy.
    pub fn name(&self) -> String {
        let name = self.object.name.as_deref().unwrap_or_default();
        match self.object.namespace.as_deref() {
            Some(namespace) => format!("{namespace}/{name}"),
            None => name.to_string(),
        }
    }
}

/// The cluster as the watchers have told it so far.
#[derive(Default)]
pub struct Cache {
    snapshot: Snapshot,
    synced: BTreeSet<Kind>,
    /// Objects being relisted, kept apart until the list is complete, so that a relist (after
    /// a 410 Gone or a dropped watch) swaps in whole and causes no churn. A kind's buffer is
    /// a `Snapshot` in which only that kind's map is filled.
    relists: BTreeMap<Kind, Snapshot>,
    /// The one copy of the namespace, node and label set that many pods share.
    interner: Interner,
}

impl Cache {
    /// Start from the last-known state (the store's), which the first lists replace.
    pub fn from_snapshot(snapshot: Snapshot) -> Self {
        let mut interner = Interner::new();
        Self::from_interned(interner.snapshot(snapshot), interner)
    }

    /// `from_snapshot`, for a snapshot whose pods already share the copies `interner` holds.
    pub fn from_interned(snapshot: Snapshot, interner: Interner) -> Self {
        Self {
            snapshot,
            interner,
            ..Default::default()
        }
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Whether every kind has completed its first list.
    pub fn is_synced(&self) -> bool {
        Kind::ALL.iter().all(|k| self.synced.contains(k))
    }

    pub fn is_kind_synced(&self, kind: Kind) -> bool {
        self.synced.contains(&kind)
    }

    /// Apply one watch event. Returns what changed in the snapshot, as compiler events, and
    /// the policies that converted with errors.
    pub fn apply(&mut self, update: Update) -> (Vec<Event>, Vec<Broken>) {
        let mut broken = Vec::new();
        let changes = match update {
            Update::Pod(event) => self.fold(event, &mut broken),
            Update::Namespace(event) => self.fold(event, &mut broken),
            Update::Policy(event) => self.fold(event, &mut broken),
            Update::ClusterPolicy(event) => self.fold(event, &mut broken),
            Update::Keep(kind) => {
                self.relists.remove(&kind);
                self.synced.insert(kind);
                Vec::new()
            }
        };
        (changes, broken)
    }

    /// The one fold of a watch, whatever its kind: a list gathers in its relist buffer and
    /// replaces the kind's map at `InitDone`; the other events change the snapshot itself.
    fn fold<K: Watched>(&mut self, event: WatchEvent<K>, broken: &mut Vec<Broken>) -> Vec<Event> {
        match event {
            WatchEvent::Init => {
                self.relists.insert(K::KIND, Snapshot::default());
                Vec::new()
            }
            WatchEvent::InitApply(api) => {
                if let Some((key, value)) = K::convert(api, broken, &mut self.interner) {
                    K::map(self.relists.entry(K::KIND).or_default()).insert(key, value);
                }
                Vec::new()
            }
            WatchEvent::InitDone => {
                let mut relist = self.relists.remove(&K::KIND).unwrap_or_default();
                self.synced.insert(K::KIND);
                replace(
                    K::map(&mut self.snapshot),
                    std::mem::take(K::map(&mut relist)),
                    K::UPSERTED,
                    K::DELETED,
                )
            }
            WatchEvent::Apply(api) => match K::convert(api, broken, &mut self.interner) {
                Some((key, value)) => upsert(K::map(&mut self.snapshot), key, value, K::UPSERTED),
                None => Vec::new(),
            },
            WatchEvent::Delete(api) => match K::deleted_key(&api) {
                Some(key) => remove(K::map(&mut self.snapshot), key, K::DELETED),
                None => Vec::new(),
            },
        }
    }
}

/// A kind of API object the cache folds: how one converts, which map of a `Snapshot` holds
/// it, and which compiler events announce it.
trait Watched: Sized {
    const KIND: Kind;
    type Key: Ord + Clone;
    type Value: PartialEq + Clone;

    /// The object as the compiler sees it, with its key, or `None` to skip it. A pod's or a
    /// namespace's problems are logged here; a policy's go to `broken`, to be reported. A
    /// pod holds the `interner`'s copies of what pods share.
    fn convert(
        self,
        broken: &mut Vec<Broken>,
        interner: &mut Interner,
    ) -> Option<(Self::Key, Self::Value)>;
    /// The key of a deleted object, or `None` when it has none (so it cannot be cached).
    fn deleted_key(&self) -> Option<Self::Key>;
    /// The map of this kind in `snapshot`.
    fn map(snapshot: &mut Snapshot) -> &mut BTreeMap<Self::Key, Self::Value>;
    /// The events that announce an object added or changed, and deleted.
    const UPSERTED: fn(Self::Value) -> Event;
    const DELETED: fn(Self::Key) -> Event;
}

impl Watched for SlimPod {
    const KIND: Kind = Kind::Pods;
    type Key = PodKey;
    type Value = Pod;

    fn convert(self, _: &mut Vec<Broken>, interner: &mut Interner) -> Option<(PodKey, Pod)> {
        let pod = interner.pod(pod_from_api(&self));
        Some((pod.key.clone(), pod))
    }

    fn deleted_key(&self) -> Option<PodKey> {
        Some(pod_from_api(self).key.clone())
    }

    fn map(snapshot: &mut Snapshot) -> &mut BTreeMap<PodKey, Pod> {
        &mut snapshot.pods
    }

    const UPSERTED: fn(Pod) -> Event = Event::Pod;
    const DELETED: fn(PodKey) -> Event = Event::PodDeleted;
}

/// A pod always converts: a field it cannot use is ignored, which is worth a debug line only.
fn pod_from_api(api: &SlimPod) -> Pod {
    let (pod, errors) = Pod::from_api(&api.0);
    for error in errors {
        debug!(pod = %pod.key, error = %error, "pod field ignored");
    }
    pod
}

impl Watched for ApiNamespace {
    const KIND: Kind = Kind::Namespaces;
    type Key = String;
    type Value = Namespace;

    fn convert(self, _: &mut Vec<Broken>, _: &mut Interner) -> Option<(String, Namespace)> {
        match Namespace::from_api(&self) {
            Ok(ns) => Some((ns.name.clone(), ns)),
            Err(error) => {
                warn!(error = %error, "namespace skipped");
                None
            }
        }
    }

    fn deleted_key(&self) -> Option<String> {
        self.metadata.name.clone()
    }

    fn map(snapshot: &mut Snapshot) -> &mut BTreeMap<String, Namespace> {
        &mut snapshot.namespaces
    }

    const UPSERTED: fn(Namespace) -> Event = Event::Namespace;
    const DELETED: fn(String) -> Event = Event::NamespaceDeleted;
}

impl Watched for ApiPolicy {
    const KIND: Kind = Kind::NetworkPolicies;
    type Key = PolicyKey;
    type Value = Policy;

    /// A policy with errors converts to its fail-closed stand-in, and is reported.
    fn convert(self, broken: &mut Vec<Broken>, _: &mut Interner) -> Option<(PolicyKey, Policy)> {
        let (policy, errors) = Policy::from_api(&self);
        if !errors.is_empty() {
            broken.push(Broken {
                object: self.object_ref(&()),
                version: self.metadata.resource_version.clone().unwrap_or_default(),
                errors,
            });
        }
        Some((policy.key.clone(), policy))
    }

    /// A deleted policy needs no report, however broken it was.
    fn deleted_key(&self) -> Option<PolicyKey> {
        Some(Policy::from_api(self).0.key.clone())
    }

    fn map(snapshot: &mut Snapshot) -> &mut BTreeMap<PolicyKey, Policy> {
        &mut snapshot.policies
    }

    const UPSERTED: fn(Policy) -> Event = Event::Policy;
    const DELETED: fn(PolicyKey) -> Event = Event::PolicyDeleted;
}

impl Watched for ClusterPolicyObject {
    const KIND: Kind = Kind::ClusterNetworkPolicies;
    type Key = String;
    type Value = ClusterPolicy;

    /// As a namespaced policy: with errors, the fail-closed stand-in, and reported.
    fn convert(
        self,
        broken: &mut Vec<Broken>,
        _: &mut Interner,
    ) -> Option<(String, ClusterPolicy)> {
        let (policy, errors) = ClusterPolicyObject::convert(&self);
        if !errors.is_empty() {
            broken.push(Broken {
                object: self.reference(),
                version: self.version().to_string(),
                errors,
            });
        }
        Some((policy.name.clone(), policy))
    }

    fn deleted_key(&self) -> Option<String> {
        Some(self.name().to_string())
    }

    fn map(snapshot: &mut Snapshot) -> &mut BTreeMap<String, ClusterPolicy> {
        &mut snapshot.cluster_policies
    }

    const UPSERTED: fn(ClusterPolicy) -> Event = Event::ClusterPolicy;
    const DELETED: fn(String) -> Event = Event::ClusterPolicyDeleted;
}

/// Swap in a complete list; what differed, as changes (none after a relist of an unchanged
/// cluster).
fn replace<K: Ord + Clone, V: PartialEq + Clone>(
    current: &mut BTreeMap<K, V>,
    listed: BTreeMap<K, V>,
    upserted: fn(V) -> Event,
    deleted: fn(K) -> Event,
) -> Vec<Event> {
    let changes = diff(current, &listed)
        .map(|change| match change.new_value() {
            Some(value) => upserted(value.clone()),
            None => deleted(change.key().clone()),
        })
        .collect();
    // Rebuilt from its sorted entries: a list arrives in key order, and a map grown by
    // inserting keys in order leaves every node half empty (the core's copy of it too). An
    // object listed as it was keeps the value the core's and the compiler's copies share.
    let mut before = std::mem::take(current);
    *current = (listed.into_iter())
        .map(|(key, value)| match before.remove(&key) {
            Some(kept) if kept == value => (key, kept),
            _ => (key, value),
        })
        .collect();
    changes
}

fn upsert<K: Ord, V: PartialEq + Clone>(
    map: &mut BTreeMap<K, V>,
    key: K,
    value: V,
    upserted: fn(V) -> Event,
) -> Vec<Event> {
    // Unchanged (a status the model does not read): the shared value stays.
    if map.get(&key) == Some(&value) {
        return Vec::new();
    }
    map.insert(key, value.clone());
    vec![upserted(value)]
}

fn remove<K: Ord, V>(map: &mut BTreeMap<K, V>, key: K, deleted: fn(K) -> Event) -> Vec<Event> {
    match map.remove(&key) {
        Some(_) => vec![deleted(key)],
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn pod(ns: &str, name: &str, labels: &[(&str, &str)], ip: &str) -> SlimPod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels.iter().cloned().collect::<BTreeMap<_, _>>()},
            "spec": {"nodeName": "n2", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "podIPs": [{"ip": ip}]},
        }))
        .unwrap()
    }

    fn namespace(name: &str) -> ApiNamespace {
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": name, "labels": {"team": name}}}),
        )
        .unwrap()
    }

    fn policy(ns: &str, name: &str, cidr: &str) -> ApiPolicy {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "resourceVersion": "7"},
            "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": cidr}}]}]},
        }))
        .unwrap()
    }

    /// Feed one complete list of each kind.
    fn synced(pods: Vec<SlimPod>) -> Cache {
        let mut cache = Cache::default();
        cache.apply(Update::Pod(WatchEvent::Init));
        for p in pods {
            cache.apply(Update::Pod(WatchEvent::InitApply(p)));
        }
        cache.apply(Update::Pod(WatchEvent::InitDone));
        for update in [
            Update::Namespace(WatchEvent::Init),
            Update::Namespace(WatchEvent::InitApply(namespace("x"))),
            Update::Namespace(WatchEvent::InitDone),
            Update::Policy(WatchEvent::Init),
            Update::Policy(WatchEvent::InitDone),
            Update::ClusterPolicy(WatchEvent::Init),
            Update::ClusterPolicy(WatchEvent::InitDone),
        ] {
            cache.apply(update);
        }
        cache
    }

    fn cluster_policy(name: &str, priority: Value) -> ClusterPolicyObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "policy.networking.k8s.io/v1beta1",
            "metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": "9"},
            "spec": {"tier": "Admin", "priority": priority,
                     "subject": {"namespaces": {}},
                     "ingress": [{"name": "deny-all", "action": "Deny", "from": [{"namespaces": {}}]}]},
        }))
        .unwrap()
    }

    #[test]
    fn cluster_policies_fold_like_policies_and_broken_ones_are_reported_by_name() {
        let mut cache = synced(vec![]);
        let apply = |cache: &mut Cache, p| cache.apply(Update::ClusterPolicy(WatchEvent::Apply(p)));
        let (changes, broken) = apply(&mut cache, cluster_policy("guard", 10.into()));
        assert!(
            matches!(changes.as_slice(), [Event::ClusterPolicy(p)] if p.name == "guard" && !p.broken)
        );
        assert!(broken.is_empty(), "{broken:?}");
        let (changes, broken) = apply(&mut cache, cluster_policy("odd", 5000.into()));
        assert!(matches!(changes.as_slice(), [Event::ClusterPolicy(p)] if p.broken));
        assert_eq!(broken.len(), 1);
        assert_eq!(broken[0].name(), "odd");
        assert_eq!(broken[0].version, "9");
        assert_eq!(cache.snapshot().cluster_policies.len(), 2);
        let deleted = cache.apply(Update::ClusterPolicy(WatchEvent::Delete(cluster_policy(
            "guard",
            10.into(),
        ))));
        assert!(matches!(deleted.0.as_slice(), [Event::ClusterPolicyDeleted(n)] if n == "guard"));
        // No CRD any more: its watch lists nothing, and every cluster policy goes.
        cache.apply(Update::ClusterPolicy(WatchEvent::Init));
        let (changes, _) = cache.apply(Update::ClusterPolicy(WatchEvent::InitDone));
        assert!(matches!(changes.as_slice(), [Event::ClusterPolicyDeleted(n)] if n == "odd"));
        assert!(cache.snapshot().cluster_policies.is_empty());
    }

    #[test]
    fn a_kind_kept_as_it_is_counts_as_listed_and_changes_nothing() {
        let mut cache = synced(vec![]);
        cache.apply(Update::ClusterPolicy(WatchEvent::Apply(cluster_policy(
            "guard",
            10.into(),
        ))));
        let restarted = Cache::from_snapshot(cache.snapshot().clone());
        let mut cache = restarted;
        for kind in [Kind::Pods, Kind::Namespaces, Kind::NetworkPolicies] {
            cache.apply(Update::Keep(kind));
        }
        assert!(!cache.is_synced());
        let (changes, _) = cache.apply(Update::Keep(Kind::ClusterNetworkPolicies));
        assert!(changes.is_empty(), "{changes:?}");
        assert!(cache.is_synced());
        assert_eq!(cache.snapshot().cluster_policies.len(), 1, "not forgotten");
    }

    #[test]
    fn an_object_listed_or_applied_as_it_was_keeps_the_value_the_copies_share() {
        let web = || pod("x", "a", &[("app", "web")], "10.0.0.2");
        let mut cache = synced(vec![web()]);
        let guard = || policy("x", "p", "10.1.0.0/16");
        cache.apply(Update::Policy(WatchEvent::Apply(guard())));
        // What the core holds.
        let before = cache.snapshot().clone();
        // The same pod with a status the model does not read (a new version, Ready).
        let restated: SlimPod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a", "namespace": "x", "labels": {"app": "web"}, "resourceVersion": "8"},
            "spec": {"nodeName": "n2", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.2"}],
                       "conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .unwrap();
        let relist = [
            Update::Pod(WatchEvent::Init),
            Update::Pod(WatchEvent::InitApply(web())),
            Update::Pod(WatchEvent::InitDone),
            Update::Policy(WatchEvent::Init),
            Update::Policy(WatchEvent::InitApply(guard())),
            Update::Policy(WatchEvent::InitDone),
            Update::Pod(WatchEvent::Apply(restated)),
        ];
        for update in relist {
            let (changes, _) = cache.apply(update);
            assert!(changes.is_empty(), "{changes:?}");
        }
        let now = cache.snapshot();
        let key = PodKey::new("x", "a");
        assert!(std::ptr::eq(&*before.pods[&key], &*now.pods[&key]));
        let key = PolicyKey::new("x", "p");
        assert!(std::ptr::eq(&*before.policies[&key], &*now.policies[&key]));
        // A change is a value of its own.
        cache.apply(Update::Pod(WatchEvent::Apply(pod(
            "x",
            "a",
            &[],
            "10.0.0.2",
        ))));
        let key = PodKey::new("x", "a");
        assert!(!std::ptr::eq(
            &*before.pods[&key],
            &*cache.snapshot().pods[&key]
        ));
    }

    #[test]
    fn not_synced_until_every_kind_has_listed() {
        let mut cache = Cache::default();
        cache.apply(Update::Pod(WatchEvent::Init));
        cache.apply(Update::Pod(WatchEvent::InitDone));
        assert!(!cache.is_synced());
        assert!(synced(vec![]).is_synced());
    }

    #[test]
    fn objects_of_a_relist_wait_until_it_is_complete() {
        let mut cache = Cache::default();
        cache.apply(Update::Pod(WatchEvent::Init));
        cache.apply(Update::Pod(WatchEvent::InitApply(pod(
            "x",
            "a",
            &[],
            "10.0.0.2",
        ))));
        assert!(
            cache.snapshot().pods.is_empty(),
            "half a list is not the cluster"
        );
        let (changes, _) = cache.apply(Update::Pod(WatchEvent::InitDone));
        assert!(
            matches!(changes.as_slice(), [Event::Pod(p)] if p.key.name == "a"),
            "{changes:?}"
        );
        assert_eq!(cache.snapshot().pods.len(), 1);
    }

    #[test]
    fn a_relist_with_the_same_objects_changes_nothing() {
        let mut cache = synced(vec![pod("x", "a", &[("app", "web")], "10.0.0.2")]);
        cache.apply(Update::Pod(WatchEvent::Init));
        cache.apply(Update::Pod(WatchEvent::InitApply(pod(
            "x",
            "a",
            &[("app", "web")],
            "10.0.0.2",
        ))));
        let (changes, _) = cache.apply(Update::Pod(WatchEvent::InitDone));
        assert!(
            changes.is_empty(),
            "no churn after a 410 or a dropped watch: {changes:?}"
        );
    }

    #[test]
    fn a_relist_drops_what_was_deleted_while_the_watch_was_down() {
        let mut cache = synced(vec![
            pod("x", "a", &[], "10.0.0.2"),
            pod("x", "b", &[], "10.0.0.3"),
        ]);
        cache.apply(Update::Pod(WatchEvent::Init));
        cache.apply(Update::Pod(WatchEvent::InitApply(pod(
            "x",
            "a",
            &[],
            "10.0.0.2",
        ))));
        let (changes, _) = cache.apply(Update::Pod(WatchEvent::InitDone));
        assert!(
            matches!(changes.as_slice(), [Event::PodDeleted(k)] if k.name == "b"),
            "{changes:?}"
        );
        assert_eq!(
            cache
                .snapshot()
                .pods
                .keys()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>(),
            vec!["a"]
        );
    }

    #[test]
    fn apply_and_delete_change_the_snapshot() {
        let mut cache = synced(vec![]);
        let apply =
            |cache: &mut Cache, p: SlimPod| cache.apply(Update::Pod(WatchEvent::Apply(p))).0;
        assert_eq!(apply(&mut cache, pod("x", "a", &[], "10.0.0.2")).len(), 1);
        assert!(
            apply(&mut cache, pod("x", "a", &[], "10.0.0.2")).is_empty(),
            "same object again"
        );
        assert_eq!(
            apply(&mut cache, pod("x", "a", &[("app", "db")], "10.0.0.2")).len(),
            1
        );
        assert_eq!(
            cache
                .snapshot()
                .pods
                .values()
                .next()
                .unwrap()
                .labels
                .get("app")
                .map(String::as_str),
            Some("db")
        );
        let deleted = cache
            .apply(Update::Pod(WatchEvent::Delete(pod(
                "x",
                "a",
                &[],
                "10.0.0.2",
            ))))
            .0;
        assert!(matches!(deleted.as_slice(), [Event::PodDeleted(_)]));
        assert!(cache.snapshot().pods.is_empty());
        let gone = cache
            .apply(Update::Namespace(WatchEvent::Delete(namespace("x"))))
            .0;
        assert!(matches!(gone.as_slice(), [Event::NamespaceDeleted(n)] if n == "x"));
    }

    #[test]
    fn a_broken_policy_is_kept_as_its_fail_closed_stand_in_and_reported() {
        let mut cache = synced(vec![]);
        let (changes, broken) = cache.apply(Update::Policy(WatchEvent::Apply(policy(
            "x",
            "bad",
            "10.0.0.0/33",
        ))));
        assert_eq!(changes.len(), 1);
        assert_eq!(broken.len(), 1);
        assert_eq!(broken[0].name(), "x/bad");
        assert!(
            broken[0].errors[0].to_string().contains("10.0.0.0/33"),
            "{}",
            broken[0].errors[0]
        );
        let stand_in = cache.snapshot().policies.values().next().unwrap();
        assert!(stand_in.broken);
        let (_, fine) = cache.apply(Update::Policy(WatchEvent::Apply(policy(
            "x",
            "good",
            "10.0.0.0/8",
        ))));
        assert!(fine.is_empty());
    }

    #[test]
    fn pods_with_equal_labels_hold_one_copy_of_them_and_of_their_namespace() {
        let cache = synced(vec![
            pod("x", "a", &[("app", "web")], "10.0.0.2"),
            pod("x", "b", &[("app", "web")], "10.0.0.3"),
        ]);
        let pods: Vec<&Pod> = cache.snapshot().pods.values().collect();
        assert!(std::ptr::eq(&*pods[0].labels, &*pods[1].labels));
        assert!(std::ptr::eq(
            pods[0].key.namespace.as_str(),
            pods[1].key.namespace.as_str()
        ));
        let restarted = Cache::from_snapshot(cache.snapshot().clone());
        let pods: Vec<&Pod> = restarted.snapshot().pods.values().collect();
        assert!(std::ptr::eq(&*pods[0].labels, &*pods[1].labels));
    }

    #[test]
    fn the_store_snapshot_is_the_starting_point() {
        let cache = synced(vec![pod("x", "a", &[], "10.0.0.2")]);
        let restarted = Cache::from_snapshot(cache.snapshot().clone());
        assert_eq!(restarted.snapshot(), cache.snapshot());
        assert!(
            !restarted.is_synced(),
            "a stored state is not a synced cache"
        );
    }

    #[test]
    fn a_namespace_that_does_not_convert_is_skipped() {
        let mut cache = synced(vec![]);
        let nameless: ApiNamespace =
            serde_json::from_value(serde_json::json!({"metadata": {}})).unwrap();
        let skipped = cache.apply(Update::Namespace(WatchEvent::Apply(nameless.clone())));
        assert!(skipped.0.is_empty(), "{:?}", skipped.0);
        let skipped = cache.apply(Update::Namespace(WatchEvent::Delete(nameless.clone())));
        assert!(skipped.0.is_empty(), "{:?}", skipped.0);
        cache.apply(Update::Namespace(WatchEvent::Init));
        cache.apply(Update::Namespace(WatchEvent::InitApply(nameless)));
        cache.apply(Update::Namespace(WatchEvent::InitApply(namespace("y"))));
        let (changes, _) = cache.apply(Update::Namespace(WatchEvent::InitDone));
        assert!(
            matches!(changes.as_slice(), [Event::Namespace(y), Event::NamespaceDeleted(x)] if y.name == "y" && x == "x"),
            "{changes:?}"
        );
        assert_eq!(
            cache.snapshot().namespaces.keys().collect::<Vec<_>>(),
            ["y"]
        );
    }

    #[test]
    fn deleting_an_object_the_cache_does_not_hold_changes_nothing() {
        let mut cache = synced(vec![]);
        for update in [
            Update::Pod(WatchEvent::Delete(pod("x", "a", &[], "10.0.0.2"))),
            Update::Namespace(WatchEvent::Delete(namespace("y"))),
            Update::Policy(WatchEvent::Delete(policy("x", "p", "10.0.0.0/8"))),
        ] {
            let (changes, broken) = cache.apply(update);
            assert!(changes.is_empty(), "{changes:?}");
            assert!(broken.is_empty(), "{broken:?}");
        }
    }

    #[test]
    fn a_relist_of_policies_reports_broken_ones_as_listed_and_swaps_in_whole() {
        let mut cache = synced(vec![]);
        cache.apply(Update::Policy(WatchEvent::Apply(policy(
            "x",
            "gone",
            "10.0.0.0/8",
        ))));
        cache.apply(Update::Policy(WatchEvent::Init));
        let (changes, broken) = cache.apply(Update::Policy(WatchEvent::InitApply(policy(
            "x",
            "bad",
            "10.0.0.0/33",
        ))));
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(broken.len(), 1);
        assert_eq!(
            cache.snapshot().policies.len(),
            1,
            "half a list is not the cluster"
        );
        let (changes, broken) = cache.apply(Update::Policy(WatchEvent::InitDone));
        assert!(broken.is_empty(), "{broken:?}");
        assert!(
            matches!(changes.as_slice(), [Event::Policy(p), Event::PolicyDeleted(k)] if p.broken && k.name == "gone"),
            "{changes:?}"
        );
        let (changes, broken) = cache.apply(Update::Policy(WatchEvent::Delete(policy(
            "x",
            "bad",
            "10.0.0.0/33",
        ))));
        assert!(matches!(changes.as_slice(), [Event::PolicyDeleted(k)] if k.name == "bad"));
        assert!(
            broken.is_empty(),
            "a deleted policy is not reported: {broken:?}"
        );
    }
}
