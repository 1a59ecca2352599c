//! The `--manifests DIR` source: the YAML/JSON files of a directory, re-read when they change.
//!
//! Parsing is `podwall_policy::manifests::load` (pure); this module only reads files and
//! notices changes by polling names, sizes and modification times, which works the same on
//! every filesystem (ConfigMap volumes swap a symlink, which inotify watches easily miss).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use podwall_policy::manifests::{load, Loaded};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// The files of `dir` that can hold manifests, as `(file name, text)`, in name order.
pub fn read_dir(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("reading manifests directory {}", dir.display()))?
    {
        let entry =
            entry.with_context(|| format!("reading manifests directory {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !is_manifest(&name) {
            continue;
        }
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        files.push((name, text));
    }
    files.sort();
    Ok(files)
}

fn is_manifest(name: &str) -> bool {
    [".yaml", ".yml", ".json"]
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

/// Reads the directory again and again, keeping for each file its last version that could
/// be read whole: a file broken mid-edit keeps enforcing what it said before, and the other
/// files' changes still apply. A file that was never readable contributes the documents
/// before its first unreadable one, and is reported.
pub struct Reader {
    dir: PathBuf,
    last_good: BTreeMap<String, String>,
}

impl Reader {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            last_good: BTreeMap::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn load(&mut self) -> anyhow::Result<Loaded> {
        let mut files = read_dir(&self.dir)?;
        let mut kept = Vec::new();
        for (name, text) in &mut files {
            if load([(name.as_str(), text.as_str())]).has_fatal_errors() {
                if let Some(good) = self.last_good.get(name.as_str()) {
                    kept.push(name.clone());
                    *text = good.clone();
                }
            } else {
                self.last_good.insert(name.clone(), text.clone());
            }
        }
        self.last_good
            .retain(|name, _| files.iter().any(|(n, _)| n == name));
        let loaded = load(
            files
                .iter()
                .map(|(name, text)| (name.as_str(), text.as_str())),
        );
        report(&self.dir, &loaded);
        for name in kept {
            warn!(dir = %self.dir.display(), file = %name, "file cannot be read; enforcing its last readable version");
        }
        Ok(loaded)
    }
}

/// What changes when a file is written, added or removed.
type Fingerprint = Vec<(String, u64, Option<SystemTime>)>;

fn fingerprint(dir: &Path) -> std::io::Result<Fingerprint> {
    let mut prints = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !is_manifest(&name) {
            continue;
        }
        // Follow symlinks: a ConfigMap volume's files are links into a swapped directory.
        if let Ok(meta) = std::fs::metadata(entry.path()) {
            prints.push((name, meta.len(), meta.modified().ok()));
        }
    }
    prints.sort();
    Ok(prints)
}

/// Log what was wrong with the manifests, once per load.
pub fn report(dir: &Path, loaded: &Loaded) {
    for error in &loaded.errors {
        if error.is_fatal() {
            error!(dir = %dir.display(), error = %error, "manifest cannot be read; what it says is not enforced");
        } else {
            warn!(dir = %dir.display(), error = %error, "manifest problem");
        }
    }
    for skipped in &loaded.skipped {
        info!(dir = %dir.display(), object = %skipped, "skipped manifest of an unused kind");
    }
}

/// Poll the reader's directory every `period` and publish a new snapshot whenever its
/// files change. The first load is the caller's.
pub async fn watch(
    mut reader: Reader,
    period: Duration,
    mut last: Fingerprint,
    tx: super::Updates,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let dir = reader.dir().display().to_string();
        let now = match fingerprint(reader.dir()) {
            Ok(now) => now,
            Err(err) => {
                warn!(dir = %dir, error = %err, "cannot list manifests directory; keeping the last good state");
                continue;
            }
        };
        if now == last {
            continue;
        }
        match reader.load() {
            Ok(loaded) => {
                info!(dir = %dir, pods = loaded.snapshot.pods.len(), policies = loaded.snapshot.policies.len(), "manifests changed");
                last = now;
                if tx.send(super::Update::Snapshot(loaded.snapshot)).is_err() {
                    return;
                }
            }
            Err(err) => {
                warn!(dir = %dir, error = format!("{err:#}"), "cannot read manifests; keeping the last good state")
            }
        }
    }
}

/// The fingerprint to start watching from.
pub fn initial_fingerprint(dir: &Path) -> Fingerprint {
    fingerprint(dir).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str =
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {team: web}\n";
    const POLICY: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: deny\n  namespace: shop\nspec:\n  podSelector: {}\n";

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
    }

    #[test]
    fn a_file_broken_later_keeps_its_last_readable_version_and_others_still_apply() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
        let mut reader = Reader::new(dir.path().to_path_buf());
        assert_eq!(reader.load().unwrap().snapshot.policies.len(), 1);
        std::fs::write(dir.path().join("policy.yaml"), "kind: [unclosed").unwrap();
        std::fs::write(dir.path().join("ns.yaml"), NS).unwrap();
        let loaded = reader.load().unwrap();
        assert_eq!(
            loaded.snapshot.policies.len(),
            1,
            "the broken file still enforces its policy"
        );
        assert!(
            loaded.snapshot.namespaces.contains_key("shop"),
            "the new file applies"
        );
        std::fs::remove_file(dir.path().join("policy.yaml")).unwrap();
        assert!(
            reader.load().unwrap().snapshot.policies.is_empty(),
            "a removed file is forgotten"
        );
    }

    #[test]
    fn a_file_never_readable_is_reported_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.yaml"), "kind: [unclosed").unwrap();
        std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
        let loaded = Reader::new(dir.path().to_path_buf()).load().unwrap();
        assert!(loaded.has_fatal_errors());
        assert!(loaded
            .errors
            .iter()
            .any(|e| e.to_string().contains("bad.yaml")));
        assert_eq!(loaded.snapshot.policies.len(), 1);
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_it() {
        let err = load_dir(Path::new("/nonexistent/podwall-manifests")).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/podwall-manifests"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_changed_file_is_published() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ns.yaml"), NS).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(watch(
            Reader::new(dir.path().to_path_buf()),
            Duration::from_millis(10),
            initial_fingerprint(dir.path()),
            tx,
            shutdown.clone(),
        ));
        std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
        let update = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        let super::super::Update::Snapshot(snapshot) = update else {
            panic!("a reload is a whole snapshot")
        };
        assert_eq!(snapshot.policies.len(), 1);
        shutdown.cancel();
        task.await.unwrap();
    }
}
