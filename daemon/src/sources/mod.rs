//! Where the cluster's Pods, Namespaces and NetworkPolicies come from: the API server's
//! watchers (`kube`), or a manifests directory (standalone mode, and `podwalld explain`). Sources read and watch; they hold no policy logic.

pub mod kube;
pub mod manifests;

/// What a source tells the core: a whole new state (the API watchers' first complete list),
/// or the objects that changed (the API's watch events, the changed files of a manifests
/// directory), which the core compiles alone.
#[derive(Debug, Clone)]
pub enum Update {
    Snapshot(podwall_policy::Snapshot),
    Changes(Vec<podwall_policy::Event>),
}

/// Where a source sends its updates, in order.
pub type Updates = tokio::sync::mpsc::UnboundedSender<Update>;
