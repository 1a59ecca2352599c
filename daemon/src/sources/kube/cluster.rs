//! ClusterNetworkPolicies, whose kind a cluster serves only while their CRD is installed,
//! at the versions the CRD serves.
//!
//! So the watch has two levels: a watch of the one CRD object says whether, and at which
//! version, the kind is served; a watch of the kind at that version runs while it is. No CRD
//! is an empty list (one log line, health green), not an error; the CRD appearing starts the
//! watch at once, and the CRD going (which deletes every object of the kind) empties the
//! list. Nothing is polled. A CRD that serves none of the versions podwall reads is the one
//! case the cluster has policies podwall cannot read: health says so until it changes, and
//! the policies last read stay enforced (they were not deleted; they cannot be read).

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

use super::{Item, Kind, Update, WatchError, LIST_PAGE};

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

    pub fn version(&self) -> &str {
        self.metadata
            .resource_version
            .as_deref()
            .unwrap_or_default()
    }

    /// The reference an Event about this object names (its apiVersion the one read).
    pub fn reference(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some(
                (self.api_version.clone()).unwrap_or_else(|| format!("{GROUP}/{}", VERSIONS[0])),
            ),
            kind: Some("ClusterNetworkPolicy".into()),
            name: self.metadata.name.clone(),
            uid: self.metadata.uid.clone(),
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

/// What the cluster serves of the kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Served {
    /// No CRD: there are no cluster policies.
    Nothing,
    At(Version),
    /// A CRD whose served versions podwall does not read (what it serves, said): its
    /// policies cannot be read.
    Unreadable(String),
}

impl Served {
    pub fn of(crd: Option<&CustomResourceDefinition>) -> Served {
        let Some(crd) = crd else {
            return Served::Nothing;
        };
        match served_version(crd) {
            Some(version) => Served::At(version),
            None => {
                let served: Vec<&str> = (crd.spec.versions.iter())
                    .filter(|v| v.served)
                    .map(|v| v.name.as_str())
                    .collect();
                Served::Unreadable(format!(
                    "the CRD {CRD_NAME} serves {} of group {}; podwall reads {} of {GROUP}",
                    served.join(", "),
                    crd.spec.group,
                    VERSIONS.join(", ")
                ))
            }
        }
    }
}

/// The CRD watch folded into what matters: the version served, once it is known.
#[derive(Default)]
struct CrdState {
    /// The CRD of a list in progress.
    listing: Option<CustomResourceDefinition>,
}

impl CrdState {
    /// What is served after `event`, or `None` while a list is incomplete.
    fn apply(&mut self, event: WatchEvent<CustomResourceDefinition>) -> Option<Served> {
        match event {
            WatchEvent::Init => {
                self.listing = None;
                None
            }
            WatchEvent::InitApply(crd) => {
                self.listing = Some(crd);
                None
            }
            WatchEvent::InitDone => Some(Served::of(self.listing.take().as_ref())),
            WatchEvent::Apply(crd) => Some(Served::of(Some(&crd))),
            WatchEvent::Delete(_) => Some(Served::Nothing),
        }
    }
}

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
    /// What is served, once the CRD's first list is complete.
    served: Option<Served>,
    objects: Option<BoxStream<'static, Result<WatchEvent<ClusterPolicyObject>, watcher::Error>>>,
    /// Items made up here (the empty list of an absent CRD), sent before anything else.
    pending: VecDeque<Result<Update, WatchError>>,
}

impl Watch {
    async fn next(&mut self) -> Item {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return (Kind::ClusterNetworkPolicies, item);
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
                        if let Some(served) = self.crd.apply(event) {
                            self.serve(served);
                        }
                    }
                    Some(Err(err)) => return (Kind::ClusterNetworkPolicies, Err(WatchError::Api(err))),
                    // A watcher's stream does not end; if it did, the kind stays as it is.
                    None => std::future::pending().await,
                },
                Some(event) = objects => {
                    let item = event.map(Update::ClusterPolicy).map_err(WatchError::Api);
                    return (Kind::ClusterNetworkPolicies, item);
                }
            }
        }
    }

    /// Follow the CRD: watch the kind at the version it serves, or list nothing without it
    /// (and say so, when the CRD is there but unreadable).
    fn serve(&mut self, served: Served) {
        if self.served.as_ref() == Some(&served) {
            return;
        }
        self.served = Some(served.clone());
        self.objects = None;
        match served {
            Served::At(version) => {
                info!(
                    crd = CRD_NAME,
                    version = version.0,
                    "ClusterNetworkPolicy CRD installed: watching its policies"
                );
                let api = Api::<ClusterPolicyObject>::all_with(self.client.clone(), &version);
                let config = watcher::Config::default().page_size(LIST_PAGE);
                self.objects = Some(watcher::watcher(api, config).default_backoff().boxed());
            }
            Served::Nothing => {
                info!(
                    crd = CRD_NAME,
                    "no ClusterNetworkPolicy CRD installed: no cluster policies to enforce until it is"
                );
                self.pending.extend(empty_list());
            }
            Served::Unreadable(reason) => {
                let kind = Kind::ClusterNetworkPolicies;
                self.pending.push_back(Ok(Update::Keep(kind)));
                let reason = format!(
                    "{reason}: ClusterNetworkPolicies cannot be read, the ones last read stay enforced"
                );
                self.pending.push_back(Err(WatchError::Unreadable(reason)));
            }
        }
    }
}

/// A complete list of no objects.
fn empty_list() -> [Result<Update, WatchError>; 2] {
    [WatchEvent::Init, WatchEvent::InitDone].map(|event| Ok(Update::ClusterPolicy(event)))
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
        assert_eq!(state.apply(WatchEvent::InitDone), Some(Served::Nothing));
        let v1beta1 = crd(GROUP, &[("v1beta1", true)]);
        let at = Some(Served::At(Version("v1beta1")));
        assert_eq!(state.apply(WatchEvent::Apply(v1beta1.clone())), at);
        assert_eq!(state.apply(WatchEvent::Init), None);
        assert_eq!(state.apply(WatchEvent::InitApply(v1beta1.clone())), None);
        assert_eq!(state.apply(WatchEvent::InitDone), at);
        assert_eq!(
            state.apply(WatchEvent::Delete(v1beta1)),
            Some(Served::Nothing)
        );
        let future = crd(GROUP, &[("v1", true), ("v1beta1", false)]);
        let Some(Served::Unreadable(reason)) = state.apply(WatchEvent::Apply(future)) else {
            panic!("a CRD podwall cannot read is not an absent one");
        };
        assert!(
            reason.contains("serves v1 of") && reason.contains("v1beta1, v1alpha2"),
            "{reason}"
        );
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
        assert_eq!(object.version(), "3");
    }
}
