//! Where the cluster's Pods, Namespaces and NetworkPolicies come from: the API server's
//! watchers (`kube`), or a manifests directory (standalone mode, and `podwalld explain`). Sources read and watch; they hold no policy logic.

pub mod kube;
pub mod manifests;
