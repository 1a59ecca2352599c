use super::*;

fn pod(ns: &str, name: &str, labels: &[(&str, &str)], ip: &str) -> ApiPod {
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
fn synced(pods: Vec<ApiPod>) -> Cache {
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
    ] {
        cache.apply(update);
    }
    cache
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
    let apply = |cache: &mut Cache, p: ApiPod| cache.apply(Update::Pod(WatchEvent::Apply(p))).0;
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
