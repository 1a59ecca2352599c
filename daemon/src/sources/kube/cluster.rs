//! ClusterNetworkPolicies, whose kind a cluster serves only while their CRD is installed,
//! at the versions the CRD serves.
//!
//! So the watch has two levels: a watch of the one CRD object says whether, and at which
//! version, the kind is served; a watch of the kind at that version runs while it is. No CRD
//! is an empty list (one log line, health green), not an error; the CRD appearing starts the
//! watch at once, and the CRD going (which deletes every object of the kind) empties the
//! list. Nothing is polled.

use std::borrow::Cow;
use std::collections::VecDeque;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ClusterResourceScope;
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use podwall_policy::model::cluster_api::{ClusterNetworkPolicyApi, SpecApi, GROUP, VERSIONS};
use podwall_policy::model::ClusterPolicy;
use podwall_policy::ModelError;
use serde::Deserialize;
use serde_json::Value;
use tracing::info;

use super::{Kind, Update, LIST_PAGE};

/// The CRD's name: the kind's plural and group.
pub const CRD_NAME: &str = "clusternetworkpolicies.policy.networking.k8s.io";
const PLURAL: &str = "clusternetworkpolicies";

/// A ClusterNetworkPolicy as watched: its metadata, and its spec left as JSON until it is
/// converted, so that a spec of the wrong shape (a CRD without a schema lets one in) becomes
/// the fail-closed stand-in instead of failing the whole list.
#[derive(Clone, Debug, Deserialize)]
pub struct ClusterPolicyObject {
    #[serde(rename = "apiVersion", default)]
    api_version: Option<String>,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Value,
}

impl ClusterPolicyObject {
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    /// The policy, with the errors that make it (or some of its rules) fail closed.
    pub fn convert(&self) -> (ClusterPolicy, Vec<ModelError>) {
        match SpecApi::deserialize(&self.spec) {
            Ok(spec) => ClusterPolicy::from_api(&ClusterNetworkPolicyApi {
                metadata: self.metadata.clone(),
                spec,
            }),
            Err(e) => ClusterPolicy::from_malformed(self.name(), e.to_string()),
        }
    }

    /// The reference an Event about this object names (at the version it was read at).
    pub fn reference(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some(
                (self.api_version.clone()).unwrap_or_else(|| format!("{GROUP}/{}", VERSIONS[0])),
            ),
            kind: Some("ClusterNetworkPolicy".into()),
            name: self.metadata.name.clone(),
            uid: self.metadata.uid.clone(),
            resource_version: self.metadata.resource_version.clone(),
            ..Default::default()
        }
    }
}

/// One of the versions podwall reads (`VERSIONS`), chosen from the CRD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version(pub &'static str);

/// The kind at the version its CRD serves.
impl Resource for ClusterPolicyObject {
    type DynamicType = Version;
    type Scope = ClusterResourceScope;

    fn kind(_: &Version) -> Cow<'_, str> {
        Cow::Borrowed("ClusterNetworkPolicy")
    }
    fn group(_: &Version) -> Cow<'_, str> {
        Cow::Borrowed(GROUP)
    }
    fn version(version: &Version) -> Cow<'_, str> {
        Cow::Borrowed(version.0)
    }
    fn plural(_: &Version) -> Cow<'_, str> {
        Cow::Borrowed(PLURAL)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The version to read the kind at: the first of `VERSIONS` (newest first) the CRD serves.
pub fn served_version(crd: &CustomResourceDefinition) -> Option<Version> {
    VERSIONS.into_iter().map(Version).find(|Version(v)| {
        crd.spec.group == GROUP
            && (crd.spec.versions.iter()).any(|served| served.name == *v && served.served)
    })
}

/// The CRD watch folded into what matters: the version served, once it is known.
#[derive(Default)]
struct CrdState {
    /// The CRD of a list in progress.
    listing: Option<CustomResourceDefinition>,
}

impl CrdState {
    /// The served version after `event`, or `None` (outer) while a list is incomplete.
    fn apply(&mut self, event: WatchEvent<CustomResourceDefinition>) -> Option<Option<Version>> {
        match event {
            WatchEvent::Init => {
                self.listing = None;
                None
            }
            WatchEvent::InitApply(crd) => {
                self.listing = Some(crd);
                None
            }
            WatchEvent::InitDone => Some(self.listing.take().as_ref().and_then(served_version)),
            WatchEvent::Apply(crd) => Some(served_version(&crd)),
            WatchEvent::Delete(_) => Some(None),
        }
    }
}

type Item = (Kind, Result<Update, watcher::Error>);

/// The two watches, as one stream of the kind's watch events: the CRD's errors come out as
/// the kind's, and no CRD comes out as an empty list.
pub(super) fn stream(client: Client) -> impl Stream<Item = Item> {
    let crds = watcher::watcher(
        Api::<CustomResourceDefinition>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={CRD_NAME}")),
    )
    .default_backoff()
    .boxed();
    let watch = Watch {
        client,
        crds,
        crd: CrdState::default(),
        served: None,
        objects: None,
        pending: VecDeque::new(),
    };
    futures::stream::unfold(watch, |mut watch| async move {
        let item = watch.next().await;
        Some((item, watch))
    })
}

struct Watch {
    client: Client,
    crds: BoxStream<'static, Result<WatchEvent<CustomResourceDefinition>, watcher::Error>>,
    crd: CrdState,
    /// The version watched; `Some(None)` once the CRD is known to be absent.
    served: Option<Option<Version>>,
    objects: Option<BoxStream<'static, Result<WatchEvent<ClusterPolicyObject>, watcher::Error>>>,
    /// Events made up here (the empty list of an absent CRD), sent before anything else.
    pending: VecDeque<WatchEvent<ClusterPolicyObject>>,
}

impl Watch {
    async fn next(&mut self) -> Item {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return (
                    Kind::ClusterNetworkPolicies,
                    Ok(Update::ClusterPolicy(event)),
                );
            }
            let objects = async {
                match &mut self.objects {
                    Some(objects) => objects.next().await,
                    None => None,
                }
            };
            tokio::select! {
                event = self.crds.next() => match event {
                    Some(Ok(event)) => {
                        if let Some(version) = self.crd.apply(event) {
                            self.serve(version);
                        }
                    }
                    Some(Err(err)) => return (Kind::ClusterNetworkPolicies, Err(err)),
                    // A watcher's stream does not end; if it did, the kind stays as it is.
                    None => std::future::pending().await,
                },
                Some(event) = objects => {
                    return (Kind::ClusterNetworkPolicies, event.map(Update::ClusterPolicy));
                }
            }
        }
    }

    /// Follow the CRD: watch the kind at the version it serves, or list nothing without it.
    fn serve(&mut self, version: Option<Version>) {
        if self.served == Some(version) {
            return;
        }
        self.served = Some(version);
        match version {
            Some(version) => {
                info!(
                    crd = CRD_NAME,
                    version = version.0,
                    "ClusterNetworkPolicy CRD installed: watching its policies"
                );
                let api = Api::<ClusterPolicyObject>::all_with(self.client.clone(), &version);
                let config = watcher::Config::default().page_size(LIST_PAGE);
                self.objects = Some(watcher::watcher(api, config).default_backoff().boxed());
            }
            None => {
                info!(
                    crd = CRD_NAME,
                    "no ClusterNetworkPolicy CRD installed: no cluster policies to enforce until it is"
                );
                self.objects = None;
                self.pending
                    .extend([WatchEvent::Init, WatchEvent::InitDone]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(group: &str, versions: &[(&str, bool)]) -> CustomResourceDefinition {
        let versions: Vec<Value> = (versions.iter())
            .map(|(name, served)| serde_json::json!({"name": name, "served": served, "storage": false}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": CRD_NAME},
            "spec": {"group": group, "scope": "Cluster", "versions": versions,
                     "names": {"kind": "ClusterNetworkPolicy", "plural": PLURAL}},
        }))
        .expect("a CRD")
    }

    #[test]
    fn the_newest_served_version_podwall_reads_is_chosen() {
        let both = crd(GROUP, &[("v1alpha2", true), ("v1beta1", true)]);
        assert_eq!(served_version(&both), Some(Version("v1beta1")));
        let old = crd(GROUP, &[("v1alpha2", true), ("v1beta1", false)]);
        assert_eq!(served_version(&old), Some(Version("v1alpha2")));
        let unknown = crd(GROUP, &[("v1", true)]);
        assert_eq!(served_version(&unknown), None);
        let other_group = crd("example.com", &[("v1beta1", true)]);
        assert_eq!(served_version(&other_group), None);
    }

    #[test]
    fn the_crd_watch_says_the_version_once_a_list_is_complete() {
        let mut state = CrdState::default();
        assert_eq!(state.apply(WatchEvent::Init), None);
        assert_eq!(state.apply(WatchEvent::InitDone), Some(None), "no CRD");
        let v1beta1 = crd(GROUP, &[("v1beta1", true)]);
        assert_eq!(
            state.apply(WatchEvent::Apply(v1beta1.clone())),
            Some(Some(Version("v1beta1")))
        );
        assert_eq!(state.apply(WatchEvent::Init), None);
        assert_eq!(state.apply(WatchEvent::InitApply(v1beta1.clone())), None);
        assert_eq!(
            state.apply(WatchEvent::InitDone),
            Some(Some(Version("v1beta1")))
        );
        assert_eq!(state.apply(WatchEvent::Delete(v1beta1)), Some(None));
    }

    #[test]
    fn a_spec_of_the_wrong_shape_is_the_fail_closed_stand_in() {
        let object: ClusterPolicyObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "policy.networking.k8s.io/v1alpha2",
            "metadata": {"name": "odd", "uid": "u1", "resourceVersion": "3"},
            "spec": {"tier": "Admin", "priority": "high"},
        }))
        .expect("any spec decodes");
        let (policy, errors) = object.convert();
        assert_eq!(policy.name, "odd");
        assert!(policy.broken);
        assert!(errors[0].to_string().contains("spec"), "{}", errors[0]);
        let reference = object.reference();
        assert_eq!(
            reference.api_version.as_deref(),
            Some("policy.networking.k8s.io/v1alpha2")
        );
        assert_eq!(reference.resource_version.as_deref(), Some("3"));
    }
}
