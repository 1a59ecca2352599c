//! The server's state, like etcd plus the API server's watch cache: objects by kind, one global
//! resourceVersion counter, a bounded history of changes for watches to replay, list
//! snapshots for paginated lists (`list.rs`), and the open watches that every change is fanned
//! out to (`watch.rs`).
//!
//! No I/O here: watches are channels the HTTP layer drains, so the rules (which version is too
//! old, which event a label change turns into for a selector) can be tested directly.
//!
//! Custom objects are kept at their CRD's storage version, and deleting a CRD deletes the
//! objects it served and ends their watches (the rules of CRDs are in `crd.rs`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{json, Value};

use super::crd;
use super::kind::Kind;
use super::selector::{FieldSelector, LabelSelector};
use super::status::{qualified, ApiError};

mod list;
mod watch;

pub use list::ListQuery;
use list::Snapshot;
pub use watch::WatchMsg;
use watch::Watcher;

/// Which objects a list or watch sees: namespace from the path, selectors from the query.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn matches(&self, obj: &Value) -> bool {
        let ns_ok = self
            .namespace
            .as_deref()
            .is_none_or(|ns| meta_str(obj, "namespace") == ns);
        ns_ok && self.labels.matches(obj) && self.fields.matches(obj)
    }
}

/// How a control call writes an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Fails with AlreadyExists if the object is there.
    Create,
    /// Fails with NotFound if it is not, and with Conflict if the object carries a
    /// resourceVersion that is no longer current (optimistic concurrency).
    Update,
    /// Create or replace, whatever the object's resourceVersion says.
    Apply,
}

/// One committed change: the object before and after (None for created / deleted).
#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    kind: Kind,
    before: Option<Arc<Value>>,
    after: Option<Arc<Value>>,
}

#[derive(Debug)]
pub struct Store {
    rv: u64,
    /// Every change with a resourceVersion above this is in `history`; watching from below it
    /// is 410 Gone.
    floor: u64,
    history: VecDeque<Change>,
    history_limit: usize,
    objects: BTreeMap<Kind, BTreeMap<(String, String), Arc<Value>>>,
    watchers: Vec<Watcher>,
    snapshots: BTreeMap<u64, Arc<Snapshot>>,
    next_id: u64,
}

impl Store {
    pub fn new(history_limit: usize) -> Self {
        Store {
            // Versions start well above 0, which clients treat as "any version".
            rv: 100,
            floor: 100,
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            objects: BTreeMap::new(),
            watchers: Vec::new(),
            snapshots: BTreeMap::new(),
            next_id: 0,
        }
    }

    /// The latest resourceVersion handed out.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Take the next version for a write that no watch sees (Events).
    pub fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        let ns = if kind.namespaced() { namespace } else { "" };
        self.objects
            .get(&kind)?
            .get(&(ns.to_string(), name.to_string()))
            .map(|obj| Value::clone(obj))
    }

    /// Create, update or apply `obj` (a full object with apiVersion and kind) and return it
    /// as stored, with uid, resourceVersion and creationTimestamp filled in.
    pub fn write(&mut self, mut obj: Value, mode: WriteMode) -> Result<Value, ApiError> {
        let kind = Kind::of_object(&obj).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unsupported object {}/{}: the test API server does not serve it",
                obj.get("apiVersion").and_then(Value::as_str).unwrap_or("?"),
                obj.get("kind").and_then(Value::as_str).unwrap_or("?"),
            ))
        })?;
        kind.validate(&obj).map_err(ApiError::bad_request)?;
        crd::to_storage_version(self, kind, &mut obj)?;
        kind.default_fields(&mut obj);
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        if meta_str(&obj, "name").is_empty() {
            let prefix = meta_str(&obj, "generateName").to_string();
            if prefix.is_empty() {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    format!("{} is invalid: metadata.name: Required value", kind.name()),
                ));
            }
            self.next_id += 1;
            obj["metadata"]["name"] = json!(format!("{prefix}{:05x}", self.next_id));
        }
        let namespace = if kind.namespaced() {
            let ns = meta_str(&obj, "namespace");
            let ns = if ns.is_empty() { "default" } else { ns }.to_string();
            obj["metadata"]["namespace"] = json!(ns);
            ns
        } else {
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("namespace");
            }
            String::new()
        };
        let name = meta_str(&obj, "name").to_string();
        let key = (namespace, name.clone());
        let existing = self.objects.get(&kind).and_then(|m| m.get(&key)).cloned();
        let before = match (mode, existing) {
            (WriteMode::Create, Some(_)) => {
                return Err(ApiError::already_exists(kind.plural(), kind.group(), &name))
            }
            (WriteMode::Update, None) => {
                return Err(ApiError::not_found(kind.plural(), kind.group(), &name))
            }
            (_, existing) => existing,
        };
        let new_rv = self.rv + 1;
        let meta = &mut obj["metadata"];
        match &before {
            None => {
                meta["uid"] = json!(self.uid());
                meta["creationTimestamp"] = json!(now_rfc3339());
                meta["generation"] = json!(1);
            }
            Some(old) => {
                let wanted = meta_str(&obj, "resourceVersion").to_string();
                if mode == WriteMode::Update
                    && !wanted.is_empty()
                    && wanted != meta_str(old, "resourceVersion")
                {
                    return Err(ApiError::new(
                        409,
                        "Conflict",
                        format!(
                            "Operation cannot be fulfilled on {} \"{name}\": the object has been \
                             modified; please apply your changes to the latest version and try again",
                            qualified(kind.plural(), kind.group())
                        ),
                    ));
                }
                let meta = &mut obj["metadata"];
                meta["uid"] = old["metadata"]["uid"].clone();
                meta["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
                let generation = old["metadata"]["generation"].as_u64().unwrap_or(1);
                let spec_changed = obj.get("spec") != old.get("spec");
                obj["metadata"]["generation"] = json!(generation + u64::from(spec_changed));
                // Like the real server, an update that changes nothing is not a new version.
                obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
                if obj == **old {
                    return Ok(obj);
                }
            }
        }
        obj["metadata"]["resourceVersion"] = json!(new_rv.to_string());
        self.rv = new_rv;
        let obj = Arc::new(obj);
        self.objects
            .entry(kind)
            .or_default()
            .insert(key, obj.clone());
        self.commit(Change {
            rv: new_rv,
            kind,
            before,
            after: Some(obj.clone()),
        });
        Ok(Arc::unwrap_or_clone(obj))
    }

    /// Delete an object; the DELETED event carries its last state at the deletion's version.
    /// Deleting a CRD deletes the objects it served first.
    pub fn delete(&mut self, kind: Kind, namespace: &str, name: &str) -> Result<Value, ApiError> {
        let ns = if kind.namespaced() { namespace } else { "" };
        let key = (ns.to_string(), name.to_string());
        let exists = self
            .objects
            .get(&kind)
            .is_some_and(|m| m.contains_key(&key));
        if kind == Kind::CustomResourceDefinition && exists {
            if let Some(custom) = Kind::defined_by(name) {
                self.remove_kind(custom);
            }
        }
        let Some(before) = self.objects.get_mut(&kind).and_then(|m| m.remove(&key)) else {
            return Err(ApiError::not_found(kind.plural(), kind.group(), name));
        };
        self.rv += 1;
        let rv = self.rv;
        self.commit(Change {
            rv,
            kind,
            before: Some(before.clone()),
            after: None,
        });
        Ok(with_rv(Value::clone(&before), rv))
    }

    /// Delete every object of `kind`, each a DELETED event, and end its watches, as the API
    /// server does when the CRD that served the kind goes: it is not served any more.
    fn remove_kind(&mut self, kind: Kind) {
        let keys: Vec<(String, String)> = self
            .objects
            .get(&kind)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for (ns, name) in keys {
            // Cannot fail: the key was just read from the map.
            let _ = self.delete(kind, &ns, &name);
        }
        self.end_watches(kind);
    }

    fn uid(&mut self) -> String {
        self.next_id += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.next_id)
    }

    /// Record a change and send it to every watch it concerns.
    fn commit(&mut self, change: Change) {
        self.notify(&change);
        self.history.push_back(change);
        while self.history.len() > self.history_limit {
            let oldest = self
                .history
                .pop_front()
                .expect("history is longer than its limit");
            self.floor = oldest.rv;
        }
    }

    /// Forget all history, as an etcd compaction does, and move on one version: every version
    /// handed out so far is now too old to watch from, and continue tokens expire.
    pub fn compact(&mut self) {
        self.rv += 1;
        self.floor = self.rv;
        self.history.clear();
        self.snapshots.clear();
    }

    /// Every object of `kind` as it is now, in namespace/name order.
    pub fn objects(&self, kind: Kind) -> Vec<Value> {
        self.current(kind, &Filter::default())
    }

    /// The matching objects as they are now, in namespace/name order.
    fn current(&self, kind: Kind, filter: &Filter) -> Vec<Value> {
        self.objects
            .get(&kind)
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|o| filter.matches(o))
            .map(|o| Value::clone(o))
            .collect()
    }
}

fn with_rv(mut obj: Value, rv: u64) -> Value {
    obj["metadata"]["resourceVersion"] = json!(rv.to_string());
    obj
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// None for "any version" (absent, "" or "0").
fn parse_rv(rv: Option<&str>) -> Result<Option<u64>, ApiError> {
    match rv {
        None | Some("") | Some("0") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resource version {v:?}"))),
    }
}

/// creationTimestamp in the API's RFC 3339 form, whole seconds.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    fn pod(name: &str, labels: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "shop", "labels": labels},
               "spec": {"containers": [], "nodeName": "n1"}})
    }

    fn lines(rx: &mut mpsc::UnboundedReceiver<WatchMsg>) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        while let Ok(msg) = rx.try_recv() {
            let WatchMsg::Line(line) = msg else {
                out.push(("CUT".into(), Value::Null));
                continue;
            };
            let v: Value = serde_json::from_slice(&line).unwrap();
            out.push((v["type"].as_str().unwrap().to_string(), v["object"].clone()));
        }
        out
    }

    fn types(events: &[(String, Value)]) -> Vec<&str> {
        events.iter().map(|(t, _)| t.as_str()).collect()
    }

    #[test]
    fn every_write_is_a_new_version_and_a_no_op_update_is_not() {
        let mut s = Store::new(100);
        let a = s.write(pod("a", json!({})), WriteMode::Create).unwrap();
        assert_eq!(meta_str(&a, "resourceVersion"), "101");
        assert!(!meta_str(&a, "uid").is_empty());
        let same = s.write(a.clone(), WriteMode::Update).unwrap();
        assert_eq!(meta_str(&same, "resourceVersion"), "101");
        let b = s
            .write(pod("a", json!({"x": "1"})), WriteMode::Apply)
            .unwrap();
        assert_eq!(meta_str(&b, "resourceVersion"), "102");
        assert_eq!(meta_str(&b, "uid"), meta_str(&a, "uid"));
        let stale = s.write(a, WriteMode::Update).unwrap_err();
        assert_eq!(stale.code, 409);
        assert_eq!(
            s.write(pod("a", json!({})), WriteMode::Create)
                .unwrap_err()
                .code,
            409
        );
        assert_eq!(
            s.delete(Kind::Pod, "shop", "a").unwrap()["metadata"]["resourceVersion"],
            "103"
        );
        assert_eq!(s.delete(Kind::Pod, "shop", "a").unwrap_err().code, 404);
    }

    #[test]
    fn watch_replays_after_its_version_and_410s_below_the_history() {
        let mut s = Store::new(2);
        s.write(pod("a", json!({})), WriteMode::Create).unwrap(); // 101
        s.write(pod("b", json!({})), WriteMode::Create).unwrap(); // 102
        s.write(pod("c", json!({})), WriteMode::Create).unwrap(); // 103, 101 falls out
        let mut rx = s
            .watch(Kind::Pod.at("v1"), Filter::default(), Some("101"), false)
            .unwrap();
        let names: Vec<_> = lines(&mut rx)
            .iter()
            .map(|(_, o)| meta_str(o, "name").to_string())
            .collect();
        assert_eq!(names, ["b", "c"]);
        let mut rx = s
            .watch(Kind::Pod.at("v1"), Filter::default(), Some("100"), false)
            .unwrap();
        let events = lines(&mut rx);
        assert_eq!(types(&events), ["ERROR"]);
        assert_eq!(events[0].1["code"], 410);
        assert_eq!(events[0].1["reason"], "Expired");
    }

    #[test]
    fn label_change_is_added_or_deleted_for_a_selecting_watch() {
        let mut s = Store::new(100);
        s.write(pod("a", json!({"app": "db"})), WriteMode::Create)
            .unwrap();
        let filter = Filter {
            labels: LabelSelector::parse("app=web").unwrap(),
            ..Filter::default()
        };
        let mut rx = s.watch(Kind::Pod.at("v1"), filter, None, false).unwrap();
        assert!(lines(&mut rx).is_empty());
        s.write(pod("a", json!({"app": "web"})), WriteMode::Apply)
            .unwrap();
        s.write(pod("a", json!({"app": "web", "v": "2"})), WriteMode::Apply)
            .unwrap();
        s.write(pod("a", json!({"app": "db"})), WriteMode::Apply)
            .unwrap();
        let events = lines(&mut rx);
        assert_eq!(types(&events), ["ADDED", "MODIFIED", "DELETED"]);
        assert_eq!(meta_str(&events[2].1, "resourceVersion"), "104");
        assert_eq!(
            events[2].1["metadata"]["labels"]["app"], "web",
            "last matching state"
        );
    }

    #[test]
    fn compaction_expires_old_versions_and_continue_tokens() {
        let mut s = Store::new(100);
        for n in ["a", "b", "c"] {
            s.write(pod(n, json!({})), WriteMode::Create).unwrap();
        }
        let q = ListQuery {
            limit: Some(2),
            ..ListQuery::default()
        };
        let page = s.list(Kind::Pod, &Filter::default(), &q).unwrap();
        let token = page.continue_token.clone().unwrap();
        s.compact();
        let next = ListQuery {
            continue_token: Some(token),
            ..ListQuery::default()
        };
        assert_eq!(
            s.list(Kind::Pod, &Filter::default(), &next)
                .unwrap_err()
                .code,
            410
        );
        let mut rx = s
            .watch(
                Kind::Pod.at("v1"),
                Filter::default(),
                Some(&page.resource_version.to_string()),
                false,
            )
            .unwrap();
        assert_eq!(types(&lines(&mut rx)), ["ERROR"]);
        let fresh = s
            .list(Kind::Pod, &Filter::default(), &ListQuery::default())
            .unwrap();
        let mut rx = s
            .watch(
                Kind::Pod.at("v1"),
                Filter::default(),
                Some(&fresh.resource_version.to_string()),
                true,
            )
            .unwrap();
        s.bookmark_all();
        assert_eq!(types(&lines(&mut rx)), ["BOOKMARK"]);
    }

    #[test]
    fn pages_come_from_one_snapshot_even_when_objects_change_between_them() {
        let mut s = Store::new(100);
        for n in ["a", "b", "c"] {
            s.write(pod(n, json!({})), WriteMode::Create).unwrap();
        }
        let q = ListQuery {
            limit: Some(2),
            ..ListQuery::default()
        };
        let first = s.list(Kind::Pod, &Filter::default(), &q).unwrap();
        assert_eq!(first.remaining, Some(1));
        s.delete(Kind::Pod, "shop", "c").unwrap();
        let q = ListQuery {
            continue_token: first.continue_token.clone(),
            ..ListQuery::default()
        };
        let second = s.list(Kind::Pod, &Filter::default(), &q).unwrap();
        assert_eq!(second.resource_version, first.resource_version);
        assert_eq!(second.items.len(), 1);
        assert_eq!(meta_str(&second.items[0], "name"), "c");
        assert!(second.continue_token.is_none());
    }

    #[test]
    fn exact_list_reads_the_past_and_refuses_the_compacted_past() {
        let mut s = Store::new(100);
        s.write(pod("a", json!({})), WriteMode::Create).unwrap(); // 101
        s.write(pod("b", json!({})), WriteMode::Create).unwrap(); // 102
        s.delete(Kind::Pod, "shop", "a").unwrap(); // 103
        let exact = |v: &str| ListQuery {
            resource_version: Some(v.into()),
            resource_version_match: Some("Exact".into()),
            ..ListQuery::default()
        };
        let at = s
            .list(Kind::Pod, &Filter::default(), &exact("101"))
            .unwrap();
        assert_eq!(at.items.len(), 1);
        assert_eq!(meta_str(&at.items[0], "name"), "a");
        assert_eq!(
            s.list(Kind::Pod, &Filter::default(), &exact("99"))
                .unwrap_err()
                .code,
            410
        );
        assert_eq!(
            s.list(Kind::Pod, &Filter::default(), &exact("999"))
                .unwrap_err()
                .code,
            504
        );
    }
}
