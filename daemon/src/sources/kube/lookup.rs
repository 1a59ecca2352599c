//! A direct GET of one pod, for the plugin socket: the attach of a pod created a moment ago
//! may arrive before the watch delivers the pod. It is an API client, so it lives with the
//! watchers rather than in `server`.

use std::time::Duration;

use kube::{Api, Client};
use podwall_policy::Pod;
use tracing::warn;

use super::SlimPod;

/// Fetches a pod the watch cache has not seen yet, so that a pod attached right after it was
/// created still gets its labels (kube mode).
#[derive(Clone)]
pub struct PodLookup {
    client: Client,
}

/// A direct GET must not hold an ADD for long: past this, the pod attaches with the labels
/// the watch delivers moments later.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

impl PodLookup {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// The pod as the API server has it now, or `None` when it does not exist or does not
    /// answer in time.
    pub async fn get(&self, namespace: &str, name: &str) -> Option<Pod> {
        let api: Api<SlimPod> = Api::namespaced(self.client.clone(), namespace);
        match tokio::time::timeout(LOOKUP_TIMEOUT, api.get_opt(name)).await {
            Ok(Ok(Some(pod))) => Some(Pod::from_api(&pod.0).0),
            Ok(Ok(None)) => None,
            Ok(Err(err)) => {
                warn!(pod = %format!("{namespace}/{name}"), error = %err, "cannot get the pod; it attaches quarantined until its labels are known");
                None
            }
            Err(_) => None,
        }
    }
}
