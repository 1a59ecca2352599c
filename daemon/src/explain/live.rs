//! The cluster for `podwalld explain` from the API server, listed once (pages of 500) and
//! converted exactly as the daemon's watchers convert it: the same cache folds the lists, so
//! live and offline answers differ only if the cluster and the manifests do. Read-only: it
//! lists, and writes nothing (no Events for broken policies; they are printed).

use anyhow::Context;
use k8s_openapi::api::core::v1::Namespace as ApiNamespace;
use k8s_openapi::api::networking::v1::NetworkPolicy as ApiPolicy;
use kube::api::ListParams;
use kube::runtime::watcher::Event as WatchEvent;
use kube::{Api, Client};
use podwall_policy::Snapshot;
use serde::de::DeserializeOwned;

use crate::sources::kube::{Cache, SlimPod, Update};

const PAGE: u32 = 500;

/// The cluster as the API server lists it now, and one line per policy that converts with
/// errors (enforced fail-closed, as the daemon does).
pub async fn snapshot(client: Client) -> anyhow::Result<(Snapshot, Vec<String>)> {
    let mut cache = Cache::default();
    let mut broken = Vec::new();
    list::<ApiNamespace>(&client, &mut cache, &mut broken, Update::Namespace).await?;
    list::<SlimPod>(&client, &mut cache, &mut broken, Update::Pod).await?;
    list::<ApiPolicy>(&client, &mut cache, &mut broken, Update::Policy).await?;
    Ok((cache.snapshot().clone(), broken))
}

async fn list<K>(
    client: &Client,
    cache: &mut Cache,
    broken: &mut Vec<String>,
    wrap: fn(WatchEvent<K>) -> Update,
) -> anyhow::Result<()>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    let mut fold = |event| {
        let (_, found) = cache.apply(wrap(event));
        broken.extend(found.iter().map(|b| {
            let errors: Vec<String> = b.errors.iter().map(ToString::to_string).collect();
            format!(
                "policy {}/{}: {}",
                b.policy.metadata.namespace.as_deref().unwrap_or_default(),
                b.policy.metadata.name.as_deref().unwrap_or_default(),
                errors.join("; ")
            )
        }));
    };
    fold(WatchEvent::Init);
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let page = (api.list(&params).await)
            .with_context(|| format!("listing {} from the API server", K::plural(&())))?;
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
