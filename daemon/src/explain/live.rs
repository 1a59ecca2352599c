//! The cluster for `podwalld explain` from the API server, listed once (pages of 500) and
//! converted exactly as the daemon's watchers convert it: the same cache folds the lists, so
//! live and offline answers differ only if the cluster and the manifests do. Read-only: it
//! lists, and writes nothing (no Events for broken policies; they are printed).
//! ClusterNetworkPolicies are listed at the version their CRD serves, and are none when the
//! cluster has no CRD for them.

use anyhow::Context;
use k8s_openapi::api::core::v1::Namespace as ApiNamespace;
use k8s_openapi::api::networking::v1::NetworkPolicy as ApiPolicy;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::ListParams;
use kube::runtime::watcher::Event as WatchEvent;
use kube::{Api, Client, Resource};
use podwall_policy::Snapshot;
use serde::de::DeserializeOwned;

use crate::sources::kube::cluster::{Served, CRD_NAME};
use crate::sources::kube::{Cache, ClusterPolicyObject, SlimPod, Update};

const PAGE: u32 = 500;

/// The cluster as the API server lists it now, and one line per policy that converts with
/// errors (enforced fail-closed, as the daemon does).
pub async fn snapshot(client: Client) -> anyhow::Result<(Snapshot, Vec<String>)> {
    let mut cache = Cache::default();
    let mut broken = Vec::new();
    list(
        Api::<ApiNamespace>::all(client.clone()),
        &(),
        &mut cache,
        &mut broken,
        Update::Namespace,
    )
    .await?;
    list(
        Api::<SlimPod>::all(client.clone()),
        &(),
        &mut cache,
        &mut broken,
        Update::Pod,
    )
    .await?;
    list(
        Api::<ApiPolicy>::all(client.clone()),
        &(),
        &mut cache,
        &mut broken,
        Update::Policy,
    )
    .await?;
    let crd = Api::<CustomResourceDefinition>::all(client.clone())
        .get_opt(CRD_NAME)
        .await
        .with_context(|| format!("reading the CRD {CRD_NAME}"))?;
    // No CRD: no cluster policies, as the daemon sees it.
    match Served::of(crd.as_ref()) {
        Served::At(version) => {
            let api = Api::<ClusterPolicyObject>::all_with(client.clone(), &version);
            list(
                api,
                &version,
                &mut cache,
                &mut broken,
                Update::ClusterPolicy,
            )
            .await?;
        }
        Served::Nothing => {}
        Served::Unreadable(reason) => broken.push(format!(
            "{reason}: its ClusterNetworkPolicies are left out of this answer"
        )),
    }
    Ok((cache.snapshot().clone(), broken))
}

async fn list<K>(
    api: Api<K>,
    kind: &K::DynamicType,
    cache: &mut Cache,
    broken: &mut Vec<String>,
    wrap: fn(WatchEvent<K>) -> Update,
) -> anyhow::Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut fold = |event| {
        let (_, found) = cache.apply(wrap(event));
        broken.extend(found.iter().map(|b| {
            let errors: Vec<String> = b.errors.iter().map(ToString::to_string).collect();
            format!("policy {}: {}", b.name(), errors.join("; "))
        }));
    };
    fold(WatchEvent::Init);
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let page = (api.list(&params).await)
            .with_context(|| format!("listing {} from the API server", K::plural(kind)))?;
        for item in page.items {
            fold(WatchEvent::InitApply(item));
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    fold(WatchEvent::InitDone);
    Ok(())
}
