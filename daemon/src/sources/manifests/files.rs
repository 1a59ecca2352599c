//! The pure part of the manifests source: what each file of the directory says, which copy
//! counts where several files define the same object, and the per-object events a changed
//! file causes (the same `Event`s the API watchers send).
//!
//! A file is parsed alone (`podwall_policy::manifests::load` of that file), so a change costs
//! the files it touches, not the directory. One file's objects are kept as it last read whole:
//! a version that cannot be read (a broken edit) leaves its last readable one enforcing. A
//! file never read whole contributes its documents before the first unreadable one.
//!
//! An object (kind, namespace, name) defined in several files is taken from the file whose
//! name sorts first, as a load of the whole directory does; the others are reported as
//! duplicates. When that copy changes or goes, the next file's copy counts.

use std::collections::{BTreeMap, BTreeSet};

use podwall_policy::manifests::{load, ManifestError};
use podwall_policy::{Event, ObjectKey, Snapshot};

/// An object of the cluster: its kind and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Namespace(String),
    Pod(ObjectKey),
    Policy(ObjectKey),
    ClusterPolicy(String),
}

impl Key {
    /// Every object of `snap`.
    fn all(snap: &Snapshot) -> impl Iterator<Item = Key> + '_ {
        let namespaces = snap.namespaces.keys().cloned().map(Key::Namespace);
        let pods = snap.pods.keys().cloned().map(Key::Pod);
        let policies = snap.policies.keys().cloned().map(Key::Policy);
        let cluster = snap
            .cluster_policies
            .keys()
            .cloned()
            .map(Key::ClusterPolicy);
        namespaces.chain(pods).chain(policies).chain(cluster)
    }

    /// The kind and name as a load of the whole directory reports a duplicate.
    fn describe(&self) -> (&'static str, String) {
        match self {
            Key::Namespace(name) => ("namespace", name.clone()),
            Key::Pod(key) => ("pod", key.to_string()),
            Key::Policy(key) => ("networkpolicy", key.to_string()),
            Key::ClusterPolicy(name) => ("clusternetworkpolicy", name.clone()),
        }
    }

    /// Copy this object from `from` into `into`, if `from` has it.
    fn copy(&self, from: &Snapshot, into: &mut Snapshot) {
        match self {
            Key::Namespace(name) => {
                if let Some(ns) = from.namespaces.get(name) {
                    into.namespaces.insert(name.clone(), ns.clone());
                }
            }
            Key::Pod(key) => {
                if let Some(pod) = from.pods.get(key) {
                    into.pods.insert(key.clone(), pod.clone());
                }
            }
            Key::Policy(key) => {
                if let Some(policy) = from.policies.get(key) {
                    into.policies.insert(key.clone(), policy.clone());
                }
            }
            Key::ClusterPolicy(name) => {
                if let Some(policy) = from.cluster_policies.get(name) {
                    into.cluster_policies.insert(name.clone(), policy.clone());
                }
            }
        }
    }
}

/// One file as last read.
#[derive(Debug, Default)]
struct File {
    /// The text last read, so that a write that changed nothing costs no parse.
    text: String,
    /// What the file contributes (see the module comment).
    objects: Snapshot,
    /// Whether `objects` come from a version read whole.
    whole: bool,
}

/// What one changed file said, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    pub file: String,
    /// Its problems, as `load` reports them (fatal ones mean a document could not be read).
    pub errors: Vec<ManifestError>,
    /// `file: kind name` of documents of kinds policy does not use.
    pub skipped: Vec<String>,
    /// The version read cannot be read whole; its last readable version keeps enforcing.
    pub kept_last_readable: bool,
}

/// What a change of some files amounts to.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The objects that changed, as compiler events in `Event::between`'s order.
    pub events: Vec<Event>,
    /// One per file whose text changed (a removed file has none).
    pub reports: Vec<FileReport>,
    /// Objects among those touched that more than one file defines.
    pub duplicates: Vec<ManifestError>,
    /// Files whose text was parsed.
    pub parsed: usize,
}

/// The directory's files as last read, and which file each object comes from.
#[derive(Debug, Default)]
pub struct Files {
    files: BTreeMap<String, File>,
    /// The files that define each object, in name order: the first counts.
    owners: BTreeMap<Key, BTreeSet<String>>,
}

impl Files {
    /// The cluster the files describe together.
    pub fn snapshot(&self) -> Snapshot {
        let keys: Vec<&Key> = self.owners.keys().collect();
        self.view(keys)
    }

    /// The objects `keys` as the files define them now (the first file's copy of each).
    fn view<'a>(&self, keys: impl IntoIterator<Item = &'a Key>) -> Snapshot {
        let mut snap = Snapshot::default();
        for key in keys {
            let first = self.owners.get(key).and_then(|files| files.first());
            if let Some(file) = first.and_then(|name| self.files.get(name)) {
                key.copy(&file.objects, &mut snap);
            }
        }
        snap
    }

    /// Take the new text of each changed file (`None`: the file is gone) and say which
    /// objects changed. A text equal to the one last read changes nothing and is not parsed.
    pub fn update(
        &mut self,
        changed: impl IntoIterator<Item = (String, Option<String>)>,
    ) -> Outcome {
        let mut outcome = Outcome::default();
        // The last word on each name counts.
        let changed: BTreeMap<String, Option<String>> = changed.into_iter().collect();
        let mut next: BTreeMap<String, Option<File>> = BTreeMap::new();
        for (name, text) in changed {
            let old = self.files.get(&name);
            let file = match text {
                None => None,
                Some(text) if old.is_some_and(|f| f.text == text) => continue,
                Some(text) => {
                    outcome.parsed += 1;
                    let loaded = load([(name.as_str(), text.as_str())]);
                    let broken = loaded.has_fatal_errors();
                    let keep = broken && old.is_some_and(|f| f.whole);
                    outcome.reports.push(FileReport {
                        file: name.clone(),
                        errors: loaded.errors,
                        skipped: loaded.skipped,
                        kept_last_readable: keep,
                    });
                    let objects = match old {
                        Some(old) if keep => old.objects.clone(),
                        _ => loaded.snapshot,
                    };
                    Some(File {
                        text,
                        objects,
                        whole: !broken || keep,
                    })
                }
            };
            next.insert(name, file);
        }
        let mut touched = BTreeSet::new();
        for (name, file) in &next {
            let old = self.files.get(name).map(|f| &f.objects);
            let new = file.as_ref().map(|f| &f.objects);
            touched.extend(old.into_iter().chain(new).flat_map(Key::all));
        }
        let before = self.view(&touched);
        for (name, file) in next {
            if let Some(old) = self.files.remove(&name) {
                for key in Key::all(&old.objects) {
                    if let Some(owners) = self.owners.get_mut(&key) {
                        owners.remove(&name);
                        if owners.is_empty() {
                            self.owners.remove(&key);
                        }
                    }
                }
            }
            if let Some(file) = file {
                for key in Key::all(&file.objects) {
                    self.owners.entry(key).or_default().insert(name.clone());
                }
                self.files.insert(name, file);
            }
        }
        let after = self.view(&touched);
        outcome.events = Event::between(&before, &after);
        outcome.duplicates = self.duplicates(&touched);
        outcome
    }

    /// Each later copy of the objects `keys`, as a load of the whole directory reports it.
    fn duplicates(&self, keys: &BTreeSet<Key>) -> Vec<ManifestError> {
        let mut found = Vec::new();
        for key in keys {
            let Some(owners) = self.owners.get(key) else {
                continue;
            };
            let mut files = owners.iter();
            let Some(first) = files.next() else { continue };
            let (kind, object) = key.describe();
            found.extend(files.map(|file| ManifestError::Duplicate {
                file: file.clone(),
                kind,
                object: object.clone(),
                first: first.clone(),
            }));
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podwall_policy::PodKey;

    const NS: &str =
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {team: web}}\n";
    const DENY: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: shop}\nspec: {podSelector: {}}\n";
    const BROKEN: &str = "kind: [unclosed";

    fn pod(name: &str, ip: &str) -> String {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop}}\nstatus: {{podIP: {ip}}}\n")
    }

    fn put(name: &str, text: &str) -> (String, Option<String>) {
        (name.to_string(), Some(text.to_string()))
    }

    fn gone(name: &str) -> (String, Option<String>) {
        (name.to_string(), None)
    }

    /// A short name for each event: `+pod shop/a`, `-policy shop/deny`.
    fn names(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|event| match event {
                Event::Pod(pod) => format!("+pod {}", pod.key),
                Event::PodDeleted(key) => format!("-pod {key}"),
                Event::Namespace(ns) => format!("+namespace {}", ns.name),
                Event::NamespaceDeleted(name) => format!("-namespace {name}"),
                Event::Policy(policy) => format!("+policy {}", policy.key),
                Event::PolicyDeleted(key) => format!("-policy {key}"),
                Event::ClusterPolicy(policy) => format!("+clusterpolicy {}", policy.name),
                Event::ClusterPolicyDeleted(name) => format!("-clusterpolicy {name}"),
            })
            .collect()
    }

    fn ip_of(files: &Files, name: &str) -> Option<String> {
        let snap = files.snapshot();
        let pod = snap.pods.get(&PodKey::new("shop", name))?;
        pod.ips.first().map(ToString::to_string)
    }

    /// What a source's events do to the core's copy of the cluster.
    fn apply(snap: &mut Snapshot, events: Vec<Event>) {
        for event in events {
            match event {
                Event::Pod(pod) => snap.upsert_pod(pod),
                Event::PodDeleted(key) => drop(snap.pods.remove(&key)),
                Event::Namespace(ns) => snap.upsert_namespace(ns),
                Event::NamespaceDeleted(name) => drop(snap.namespaces.remove(&name)),
                Event::Policy(policy) => snap.upsert_policy(policy),
                Event::PolicyDeleted(key) => drop(snap.policies.remove(&key)),
                Event::ClusterPolicy(policy) => {
                    snap.cluster_policies.insert(policy.name.clone(), policy);
                }
                Event::ClusterPolicyDeleted(name) => drop(snap.cluster_policies.remove(&name)),
            }
        }
    }

    #[test]
    fn a_changed_file_brings_only_its_own_objects() {
        let mut files = Files::default();
        let first = files.update([put("a.yaml", &format!("{NS}---\n{}", pod("a", "10.0.0.1")))]);
        assert_eq!(names(&first.events), ["+namespace shop", "+pod shop/a"]);
        let added = files.update([put("policy.yaml", DENY)]);
        assert_eq!(names(&added.events), ["+policy shop/deny"]);
        assert_eq!(added.parsed, 1);
        let relabelled =
            files.update([put("a.yaml", &format!("{NS}---\n{}", pod("a", "10.0.0.2")))]);
        assert_eq!(
            names(&relabelled.events),
            ["+pod shop/a"],
            "the namespace did not change"
        );
    }

    #[test]
    fn an_unchanged_text_is_not_parsed_again() {
        let mut files = Files::default();
        files.update([put("policy.yaml", DENY)]);
        let again = files.update([put("policy.yaml", DENY)]);
        assert_eq!(again.parsed, 0);
        assert!(again.events.is_empty() && again.reports.is_empty());
    }

    #[test]
    fn a_deleted_file_deletes_its_objects_policies_first() {
        let mut files = Files::default();
        files.update([put(
            "all.yaml",
            &format!("{NS}---\n{}---\n{DENY}", pod("a", "10.0.0.1")),
        )]);
        let outcome = files.update([gone("all.yaml")]);
        assert_eq!(
            names(&outcome.events),
            ["-policy shop/deny", "-pod shop/a", "-namespace shop"]
        );
        assert_eq!(files.snapshot(), Snapshot::default());
    }

    #[test]
    fn a_renamed_file_changes_nothing() {
        let mut files = Files::default();
        files.update([put("old.yaml", DENY)]);
        let outcome = files.update([gone("old.yaml"), put("new.yaml", DENY)]);
        assert!(outcome.events.is_empty(), "{:?}", names(&outcome.events));
        assert_eq!(files.snapshot().policies.len(), 1);
    }

    #[test]
    fn the_first_file_by_name_wins_and_removing_it_falls_back_to_the_next() {
        let mut files = Files::default();
        files.update([put("b.yaml", &pod("a", "10.0.0.2"))]);
        let shadowing = files.update([put("a.yaml", &pod("a", "10.0.0.1"))]);
        assert_eq!(names(&shadowing.events), ["+pod shop/a"]);
        assert_eq!(ip_of(&files, "a").as_deref(), Some("10.0.0.1"));
        let shown: Vec<String> = shadowing.duplicates.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            shown,
            ["b.yaml: pod shop/a is also defined in a.yaml, which is kept"]
        );

        // The shadowed copy changes: nothing is enforced differently.
        let hidden = files.update([put("b.yaml", &pod("a", "10.0.0.3"))]);
        assert!(hidden.events.is_empty(), "{:?}", names(&hidden.events));
        assert_eq!(hidden.duplicates.len(), 1);

        // The winning copy goes: the other one counts now.
        let fallback = files.update([gone("a.yaml")]);
        assert_eq!(names(&fallback.events), ["+pod shop/a"]);
        assert_eq!(ip_of(&files, "a").as_deref(), Some("10.0.0.3"));
        assert!(fallback.duplicates.is_empty());
        let last = files.update([gone("b.yaml")]);
        assert_eq!(names(&last.events), ["-pod shop/a"]);
    }

    #[test]
    fn a_file_broken_mid_edit_keeps_its_last_readable_version() {
        let mut files = Files::default();
        files.update([put("policy.yaml", DENY), put("ns.yaml", NS)]);
        let broken = files.update([put("policy.yaml", &format!("{DENY}---\n{BROKEN}"))]);
        assert!(broken.events.is_empty(), "{:?}", names(&broken.events));
        let report = &broken.reports[0];
        assert!(report.kept_last_readable && report.errors.iter().any(ManifestError::is_fatal));
        assert_eq!(files.snapshot().policies.len(), 1, "still enforced");

        // Other files still apply meanwhile, and the fixed file applies when it comes.
        let other = files.update([gone("ns.yaml")]);
        assert_eq!(names(&other.events), ["-namespace shop"]);
        let fixed = files.update([put("policy.yaml", &pod("a", "10.0.0.1"))]);
        assert_eq!(names(&fixed.events), ["+pod shop/a", "-policy shop/deny"]);
        assert!(!fixed.reports[0].kept_last_readable);
    }

    #[test]
    fn a_file_never_readable_contributes_the_documents_before_its_first_unreadable_one() {
        let mut files = Files::default();
        let outcome = files.update([put("bad.yaml", &format!("{DENY}---\n{BROKEN}"))]);
        assert_eq!(names(&outcome.events), ["+policy shop/deny"]);
        assert!(!outcome.reports[0].kept_last_readable);
        let worse = files.update([put("bad.yaml", BROKEN)]);
        assert_eq!(
            names(&worse.events),
            ["-policy shop/deny"],
            "no readable version to keep"
        );
    }

    /// The directory as a whole load sees it, each broken file replaced by its last
    /// readable text: how the manifests source read the directory before it went by file.
    fn whole_load(
        dir: &BTreeMap<String, String>,
        last_good: &mut BTreeMap<String, String>,
    ) -> Snapshot {
        last_good.retain(|name, _| dir.contains_key(name));
        let mut effective = Vec::new();
        for (name, text) in dir {
            if !load([(name.as_str(), text.as_str())]).has_fatal_errors() {
                last_good.insert(name.clone(), text.clone());
            }
            effective.push((name.as_str(), last_good.get(name).unwrap_or(text).clone()));
        }
        load(effective.iter().map(|(n, t)| (*n, t.as_str()))).snapshot
    }

    #[test]
    fn random_edits_agree_with_reloading_the_whole_directory_at_every_step() {
        let texts: Vec<Option<String>> = vec![
            None,
            Some(NS.to_string()),
            Some(DENY.to_string()),
            Some(BROKEN.to_string()),
            Some(pod("a", "10.0.0.1")),
            Some(pod("a", "10.0.0.2")),
            Some(format!("{}---\n{DENY}", pod("b", "10.0.0.3"))),
            Some(format!("{NS}---\n{}---\n{BROKEN}", pod("a", "10.0.0.4"))),
            Some(DENY.replace("podSelector: {}", "podSelector: {matchLabels: {a: b}}")),
        ];
        let names = ["a.yaml", "b.yaml", "c.yaml", "d.yaml"];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let (mut dir, mut last_good) = (BTreeMap::new(), BTreeMap::new());
        let mut files = Files::default();
        let mut core = Snapshot::default();
        for step in 0..500 {
            let mut change = Vec::new();
            for _ in 0..=next(2) {
                let name = names[next(names.len())].to_string();
                let text = texts[next(texts.len())].clone();
                match &text {
                    Some(text) => drop(dir.insert(name.clone(), text.clone())),
                    None => drop(dir.remove(&name)),
                }
                change.push((name, text));
            }
            let outcome = files.update(change);
            apply(&mut core, outcome.events);
            let whole = whole_load(&dir, &mut last_good);
            assert_eq!(files.snapshot(), whole, "step {step}");
            assert_eq!(
                core, whole,
                "step {step}: the events lead to the same cluster"
            );
        }
    }

    #[test]
    fn every_step_agrees_with_a_load_of_the_whole_directory() {
        let steps: Vec<Vec<(String, Option<String>)>> = vec![
            vec![
                put("a.yaml", &format!("{NS}---\n{}", pod("a", "10.0.0.1"))),
                put("c.yaml", DENY),
            ],
            vec![put(
                "b.yaml",
                &format!("{}---\n{DENY}", pod("a", "10.0.0.2")),
            )],
            vec![put("a.yaml", &pod("b", "10.0.0.3"))],
            vec![put(
                "c.json",
                r#"{"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}]}"#,
            )],
            vec![gone("b.yaml"), put("d.yaml", &pod("a", "10.0.0.4"))],
            vec![gone("a.yaml"), gone("c.json")],
        ];
        let mut dir: BTreeMap<String, String> = BTreeMap::new();
        let mut files = Files::default();
        let mut core = Snapshot::default();
        for (i, step) in steps.into_iter().enumerate() {
            for (name, text) in &step {
                match text {
                    Some(text) => drop(dir.insert(name.clone(), text.clone())),
                    None => drop(dir.remove(name)),
                }
            }
            let outcome = files.update(step);
            apply(&mut core, outcome.events);
            let whole = load(dir.iter().map(|(n, t)| (n.as_str(), t.as_str()))).snapshot;
            assert_eq!(files.snapshot(), whole, "step {i}");
            assert_eq!(core, whole, "step {i}: the events lead to the same cluster");
        }
    }
}
