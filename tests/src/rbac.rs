//! The API permissions `podwalld` needs in Kubernetes mode, in ClusterRole terms. The root
//! test `kube_rbac` checks that a daemon run through start, sync, attach, and a broken
//! policy makes no request outside this list and uses every entry of it; the install's
//! ClusterRole is checked against the same list.

/// `(API group, resource, verb)`; `""` is the core group.
pub const DAEMON_PERMISSIONS: &[(&str, &str, &str)] = &[
    // The watchers: every pod of the cluster (peers), namespaces, policies.
    ("", "pods", "list"),
    ("", "pods", "watch"),
    // An ADD of a pod the watch has not delivered yet looks it up directly.
    ("", "pods", "get"),
    ("", "namespaces", "list"),
    ("", "namespaces", "watch"),
    ("networking.k8s.io", "networkpolicies", "list"),
    ("networking.k8s.io", "networkpolicies", "watch"),
    // ClusterNetworkPolicies: their CRD (is it installed, at which version), then the kind.
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    ("policy.networking.k8s.io", "clusternetworkpolicies", "list"),
    (
        "policy.networking.k8s.io",
        "clusternetworkpolicies",
        "watch",
    ),
    // Warning Events on policies that do not compile: created, then patched for repeats.
    ("events.k8s.io", "events", "create"),
    ("events.k8s.io", "events", "patch"),
    // Its own Node's pod range, when the node runs the default conflist.
    ("", "nodes", "get"),
];
