//! The `--manifests DIR` source: the YAML/JSON files of a directory, followed as they change.
//!
//! The directory is watched with inotify (`inotify`); a file whose events are over is read
//! again, alone, and its objects are compared with what it said before (`files`, pure), so a
//! change reaches the core as the per-object events the API watchers send, and costs the
//! files it touches rather than the directory. Reading and parsing happen on a blocking
//! thread, never under the core's lock. Every `SAFETY_POLL` the files are stat'ed (names,
//! sizes, modification times, inodes, following symlinks) and those that differ are read,
//! which catches what inotify cannot see (a symlink retargeted outside the directory); where
//! inotify cannot be used, or the directory's watch is lost, that check runs every `POLL`.

mod files;
mod inotify;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use podwall_policy::manifests::{load, Loaded, ManifestError};
use podwall_policy::{Event, Snapshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use self::files::{FileReport, Files, Outcome};
use self::inotify::{DirWatch, Due, CONFIGMAP_DATA};
use crate::metrics::Metrics;

/// How often the files are stat'ed while inotify watches the directory: a safety net.
pub const SAFETY_POLL: Duration = Duration::from_secs(10);
/// How often they are stat'ed where inotify cannot watch it.
pub const POLL: Duration = Duration::from_millis(250);

/// The files of `dir` that can hold manifests, as `(file name, text)`, in name order.
pub fn read_dir(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    for name in names(dir)? {
        let path = dir.join(&name);
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        files.push((name, text));
    }
    Ok(files)
}

/// The names in `dir` that can be manifest files, in name order.
fn names(dir: &Path) -> anyhow::Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("reading manifests directory {}", dir.display()))?
    {
        let entry =
            entry.with_context(|| format!("reading manifests directory {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_manifest(&name) {
            names.insert(name);
        }
    }
    Ok(names)
}

fn is_manifest(name: &str) -> bool {
    !name.starts_with('.')
        && [".yaml", ".yml", ".json"]
            .iter()
            .any(|ext| name.ends_with(ext))
}

/// Read and parse the directory.
pub fn load_dir(dir: &Path) -> anyhow::Result<Loaded> {
    let files = read_dir(dir)?;
    Ok(load(
        files
            .iter()
            .map(|(name, text)| (name.as_str(), text.as_str())),
    ))
}

/// What a file looked like when it was last read: a change to any of these is a change of
/// the file (a rename over it gives a new inode, an edit a new size or time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// The stamp of the regular file at `path` (following symlinks); `None` when there is none.
fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
    Some(Stamp {
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.size(),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        ctime: (meta.ctime(), meta.ctime_nsec()),
    })
}

/// The directory as last read: each file's stamp and what it says (see `files`).
pub struct Reader {
    dir: PathBuf,
    files: Files,
    stamps: BTreeMap<String, Stamp>,
    metrics: Arc<Metrics>,
}

impl Reader {
    pub fn new(dir: PathBuf, metrics: Arc<Metrics>) -> Self {
        Self {
            dir,
            files: Files::default(),
            stamps: BTreeMap::new(),
            metrics,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Read every file: the first load. Fails when the directory cannot be listed or a
    /// file in it cannot be read.
    pub fn load(&mut self) -> anyhow::Result<Snapshot> {
        let names = names(&self.dir)?;
        let texts = self.read(names, true)?;
        self.update(texts);
        Ok(self.files.snapshot())
    }

    /// Stat every file and read those that changed since they were last read, and those
    /// that appeared or went.
    pub fn rescan(&mut self) -> anyhow::Result<Vec<Event>> {
        let mut changed = names(&self.dir)?;
        changed.extend(self.stamps.keys().cloned());
        changed.retain(|name| stamp(&self.dir.join(name)) != self.stamps.get(name).copied());
        Ok(self.refresh(changed))
    }

    /// Read the files `names` again (a name that is not a file now is a file gone) and say
    /// which objects changed. A file that cannot be read keeps its last version.
    pub fn refresh(&mut self, names: BTreeSet<String>) -> Vec<Event> {
        match self.read(names, false) {
            Ok(texts) => self.update(texts),
            Err(_) => Vec::new(), // not strict: never an error
        }
    }

    /// The text of each of `names`, `None` for one that is not a file (any more). A file
    /// that cannot be read is an error when `strict`, else logged and left out.
    fn read(
        &mut self,
        names: BTreeSet<String>,
        strict: bool,
    ) -> anyhow::Result<Vec<(String, Option<String>)>> {
        let mut texts = Vec::new();
        for name in names.into_iter().filter(|n| is_manifest(n)) {
            let path = self.dir.join(&name);
            // Taken before the read: a write after it changes the stamp again.
            let Some(now) = stamp(&path) else {
                self.stamps.remove(&name);
                texts.push((name, None));
                continue;
            };
            self.metrics.count_manifest_read();
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    self.stamps.insert(name.clone(), now);
                    texts.push((name, Some(text)));
                }
                Err(err) if strict => {
                    return Err(err).with_context(|| format!("reading {}", path.display()))
                }
                // Its last version stays; the next poll tries again.
                Err(err) => {
                    warn!(dir = %self.dir.display(), file = %name, error = %err, "cannot read manifest file; enforcing its last version");
                }
            }
        }
        Ok(texts)
    }

    fn update(&mut self, texts: Vec<(String, Option<String>)>) -> Vec<Event> {
        if texts.is_empty() {
            return Vec::new();
        }
        let outcome = self.files.update(texts);
        self.report(&outcome);
        outcome.events
    }

    /// Log what was wrong with the files just read, once per version.
    fn report(&self, outcome: &Outcome) {
        let dir = self.dir.display();
        for file in &outcome.reports {
            report_errors(&self.dir, &file.errors, &file.skipped);
            if file.kept_last_readable {
                warn!(dir = %dir, file = %file.file, "file cannot be read; enforcing its last readable version");
            }
        }
        for duplicate in &outcome.duplicates {
            warn!(dir = %dir, error = %duplicate, "manifest problem");
        }
    }
}

/// Log what was wrong with the manifests.
pub fn report(dir: &Path, loaded: &Loaded) {
    report_errors(dir, &loaded.errors, &loaded.skipped);
}

fn report_errors(dir: &Path, errors: &[ManifestError], skipped: &[String]) {
    for error in errors {
        if error.is_fatal() {
            error!(dir = %dir.display(), error = %error, "manifest cannot be read; what it says is not enforced");
        } else {
            warn!(dir = %dir.display(), error = %error, "manifest problem");
        }
    }
    for skipped in skipped {
        info!(dir = %dir.display(), object = %skipped, "skipped manifest of an unused kind");
    }
}

/// What the watch loop asks the reader for.
enum Work {
    Names(BTreeSet<String>),
    Rescan,
}

/// Follow the reader's directory and send the objects that change. The first load is the
/// caller's; `watch` should be made before it, so that no change in between is missed
/// (`None`: inotify could not watch the directory, so it is polled every `POLL`).
pub async fn watch(
    reader: Reader,
    watch: Option<DirWatch>,
    tx: super::Updates,
    shutdown: CancellationToken,
) {
    let dir = reader.dir().to_path_buf();
    let reader = Arc::new(Mutex::new(reader));
    let mut watch = watch;
    let mut due = Due::default();
    let mut next_poll = tokio::time::Instant::now() + poll_period(&watch);
    loop {
        let wake = due.next().map_or(next_poll, |at| at.min(next_poll));
        let batch = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(wake) => None,
            batch = next_events(&mut watch) => Some(batch),
        };
        let now = tokio::time::Instant::now();
        match batch {
            Some(Ok(batch)) => {
                for (name, seen) in batch.names {
                    if name == CONFIGMAP_DATA || is_manifest(&name) {
                        due.note(&name, seen, now);
                    }
                }
                if batch.overflow {
                    due.note_rescan(now);
                }
                if batch.lost {
                    warn!(dir = %dir.display(), "the manifests directory went away; polling it");
                    watch = None;
                    due.note_rescan(now);
                }
            }
            Some(Err(err)) => {
                warn!(dir = %dir.display(), error = %err, "cannot follow the manifests directory's events; polling it");
                watch = None;
                due.note_rescan(now);
            }
            None => {}
        }
        let polled = now >= next_poll;
        if polled {
            if watch.is_none() {
                // Watch it again as soon as it is back.
                watch = DirWatch::new(&dir).ok();
            }
            next_poll = now + poll_period(&watch);
        }
        // A rescan reads every changed file, those named by events too.
        let work = match due.take(now) {
            (_, true) => Work::Rescan,
            _ if polled => Work::Rescan,
            (names, false) if !names.is_empty() => Work::Names(names),
            _ => continue,
        };
        if !read(&reader, work, &dir, &tx).await {
            return;
        }
    }
}

/// Read what `work` names on a blocking thread and send the changes; false once nobody
/// listens any more.
async fn read(reader: &Arc<Mutex<Reader>>, work: Work, dir: &Path, tx: &super::Updates) -> bool {
    let reader = reader.clone();
    let started = std::time::Instant::now();
    let read = tokio::task::spawn_blocking(move || {
        let mut reader = reader.lock().unwrap_or_else(|p| p.into_inner());
        match work {
            Work::Names(names) => Ok(reader.refresh(names)),
            Work::Rescan => reader.rescan(),
        }
    })
    .await;
    let events = match read {
        Ok(Ok(events)) => events,
        Ok(Err(err)) => {
            warn!(dir = %dir.display(), error = format!("{err:#}"), "cannot read manifests; keeping the last good state");
            return true;
        }
        Err(err) => {
            warn!(dir = %dir.display(), error = %err, "reading manifests panicked; keeping the last good state");
            return true;
        }
    };
    if events.is_empty() {
        return true;
    }
    info!(dir = %dir.display(), objects = events.len(), took = ?started.elapsed(), "manifests changed");
    tx.send(super::Update::Changes(events)).is_ok()
}

fn poll_period(watch: &Option<DirWatch>) -> Duration {
    if watch.is_some() {
        SAFETY_POLL
    } else {
        POLL
    }
}

/// The next events of `watch`; never, without one.
async fn next_events(watch: &mut Option<DirWatch>) -> std::io::Result<inotify::Batch> {
    match watch {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}

/// A watch on `dir`, to take before its first load; `None` (logged) where inotify cannot
/// watch it.
pub fn start_watching(dir: &Path) -> Option<DirWatch> {
    match DirWatch::new(dir) {
        Ok(watch) => Some(watch),
        Err(err) => {
            warn!(dir = %dir.display(), error = %err, poll = ?POLL, "inotify cannot watch the manifests directory; polling it");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::Update;

    const NS: &str =
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {team: web}\n";
    const POLICY: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: deny\n  namespace: shop\nspec:\n  podSelector: {}\n";

    fn reader(dir: &Path) -> (Reader, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        (Reader::new(dir.to_path_buf(), metrics.clone()), metrics)
    }

    fn files_read(metrics: &Metrics) -> u64 {
        let text = metrics.render();
        let line = text
            .lines()
            .find(|l| l.starts_with("podwall_manifest_files_read_total "))
            .unwrap();
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    #[test]
    fn reads_only_manifest_files_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.yaml"), POLICY).unwrap();
        std::fs::write(dir.path().join("a.yml"), NS).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not yaml").unwrap();
        std::fs::write(dir.path().join(".hidden.yaml"), "kind: [").unwrap();
        let names: Vec<String> = read_dir(dir.path())
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, vec!["a.yml", "b.yaml"]);
        let loaded = load_dir(dir.path()).unwrap();
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        assert_eq!(loaded.snapshot.policies.len(), 1);
        let (mut reader, metrics) = reader(dir.path());
        assert_eq!(reader.load().unwrap(), loaded.snapshot);
        assert_eq!(files_read(&metrics), 2);
    }

    #[test]
    fn a_file_broken_later_keeps_its_last_readable_version_and_others_still_apply() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
        let (mut reader, _) = reader(dir.path());
        assert_eq!(reader.load().unwrap().policies.len(), 1);
        std::fs::write(dir.path().join("policy.yaml"), "kind: [unclosed").unwrap();
        std::fs::write(dir.path().join("ns.yaml"), NS).unwrap();
        let events = reader.rescan().unwrap();
        assert!(
            matches!(&events[..], [Event::Namespace(ns)] if ns.name == "shop"),
            "the new file applies, the broken one changes nothing: {events:?}"
        );
        std::fs::remove_file(dir.path().join("policy.yaml")).unwrap();
        let events = reader.rescan().unwrap();
        assert!(
            matches!(&events[..], [Event::PolicyDeleted(key)] if key.name == "deny"),
            "a removed file is forgotten: {events:?}"
        );
    }

    #[test]
    fn a_file_never_readable_is_skipped_and_the_others_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.yaml"), "kind: [unclosed").unwrap();
        std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
        let snapshot = reader(dir.path()).0.load().unwrap();
        assert_eq!(snapshot.policies.len(), 1);
        assert!(load_dir(dir.path()).unwrap().has_fatal_errors());
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_it() {
        let err = load_dir(Path::new("/nonexistent/podwall-manifests")).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/podwall-manifests"));
        let mut reader = reader(Path::new("/nonexistent/podwall-manifests")).0;
        let err = reader.load().unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/podwall-manifests"));
    }

    #[test]
    fn a_rescan_reads_only_the_files_that_changed() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..20 {
            std::fs::write(
                dir.path().join(format!("{i}.yaml")),
                NS.replace("shop", &format!("ns{i}")),
            )
            .unwrap();
        }
        let (mut reader, metrics) = reader(dir.path());
        reader.load().unwrap();
        assert_eq!(files_read(&metrics), 20);
        assert!(reader.rescan().unwrap().is_empty());
        assert_eq!(files_read(&metrics), 20, "nothing changed: nothing read");
        std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
        let events = reader.rescan().unwrap();
        assert!(matches!(&events[..], [Event::Policy(_)]), "{events:?}");
        assert_eq!(files_read(&metrics), 21);
    }

    async fn next_changes(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Update>) -> Vec<Event> {
        let update = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an update within 5 s")
            .expect("the source runs");
        match update {
            Update::Changes(events) => events,
            Update::Snapshot(_) => panic!("a change is sent as the objects that changed"),
        }
    }

    /// The watch task on `dir` after its first load, with or without inotify.
    fn follow(
        dir: &Path,
        inotify: bool,
    ) -> (
        tokio::sync::mpsc::UnboundedReceiver<Update>,
        Arc<Metrics>,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let watch = inotify.then(|| DirWatch::new(dir).unwrap());
        let (mut reader, metrics) = reader(dir);
        reader.load().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(super::watch(reader, watch, tx, shutdown.clone()));
        (rx, metrics, shutdown, task)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_changed_file_is_sent_as_its_objects_and_only_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ns.yaml"), NS).unwrap();
        let (mut rx, metrics, shutdown, task) = follow(dir.path(), true);
        // Written as the tests and kubectl-like tools do: a dotfile renamed into place.
        std::fs::write(dir.path().join(".policy.yaml.tmp"), POLICY).unwrap();
        std::fs::rename(
            dir.path().join(".policy.yaml.tmp"),
            dir.path().join("policy.yaml"),
        )
        .unwrap();
        let events = next_changes(&mut rx).await;
        assert!(
            matches!(&events[..], [Event::Policy(p)] if p.key.name == "deny"),
            "{events:?}"
        );
        assert_eq!(
            files_read(&metrics),
            2,
            "the first load's file and the new one"
        );
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn without_inotify_the_directory_is_polled() {
        let dir = tempfile::tempdir().unwrap();
        let (mut rx, _, shutdown, task) = follow(dir.path(), false);
        std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
        let events = next_changes(&mut rx).await;
        assert!(matches!(&events[..], [Event::Policy(_)]), "{events:?}");
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_configmap_swap_of_its_data_symlink_is_seen() {
        // The layout kubelet gives a ConfigMap volume: files are links through `..data`,
        // which is swapped by a rename to publish a new version.
        let dir = tempfile::tempdir().unwrap();
        let version = |name: &str, policy: &str| {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("policy.yaml"), policy).unwrap();
        };
        version(
            "..v1",
            &POLICY.replace("podSelector: {}", "podSelector: {matchLabels: {a: b}}"),
        );
        std::os::unix::fs::symlink("..v1", dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/policy.yaml", dir.path().join("policy.yaml")).unwrap();
        let (mut rx, _, shutdown, task) = follow(dir.path(), true);
        version("..v2", POLICY);
        std::os::unix::fs::symlink("..v2", dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        let events = next_changes(&mut rx).await;
        assert!(
            matches!(&events[..], [Event::Policy(p)] if p.pod_selector.is_everything()),
            "the new version: {events:?}"
        );
        shutdown.cancel();
        task.await.unwrap();
    }
}
