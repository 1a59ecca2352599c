//! Where the cluster's Pods, Namespaces and NetworkPolicies come from: a manifests directory
//! (standalone mode, and `podwalld explain`). Sources read and watch; they hold no policy logic.

pub mod manifests;
