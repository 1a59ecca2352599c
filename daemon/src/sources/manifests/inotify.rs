//! Which names of the manifests directory changed, as the kernel's inotify tells it, and
//! when each is due to be read.
//!
//! One watch on the directory itself (not on its files): creations, writes, closes, moves
//! and deletions of its entries, and the directory itself going away. A ConfigMap volume
//! swaps its `..data` symlink to a new directory, so its files' contents change without an
//! event on their own names: an event on `..data` asks for every file to be looked at
//! again. `nix`'s inotify is read by one small thread (tokio's `AsyncFd` needs `unsafe`
//! to register a descriptor, which this crate forbids) that waits in `poll` and hands each
//! batch of events to the source's task.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The symlink a ConfigMap volume swaps to publish a new version of all its files.
pub const CONFIGMAP_DATA: &str = "..data";

/// A name's burst of events is over once it has been quiet this long: a burst of writes
/// becomes one read.
pub const DEBOUNCE: Duration = Duration::from_millis(5);
/// A file opened for writing is read when its writer closes it, or once it has not been
/// written to for this long (a writer that keeps it open).
pub const WRITE_GRACE: Duration = Duration::from_millis(500);

/// What an event says of a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Written and closed, moved in or out, deleted: read it once the burst is over.
    Done,
    /// Created or written to, maybe not finished: read it when its writer closes it.
    Writing,
}

/// The names events have marked, and when each is due.
#[derive(Debug, Default)]
pub struct Due {
    /// Names to read, each with its last event.
    names: BTreeMap<String, (Seen, Instant)>,
    /// Every file is to be looked at (a ConfigMap swap, a lost event queue, a lost watch).
    rescan: Option<Instant>,
}

impl Due {
    pub fn note(&mut self, name: &str, seen: Seen, now: Instant) {
        if name == CONFIGMAP_DATA {
            self.rescan = Some(now);
            return;
        }
        let entry = self.names.entry(name.to_string()).or_insert((seen, now));
        // A close after writes finishes them; a write after a close starts a new burst.
        *entry = (seen, now);
    }

    pub fn note_rescan(&mut self, now: Instant) {
        self.rescan = Some(now);
    }

    /// When the next name (or the rescan) is due.
    pub fn next(&self) -> Option<Instant> {
        let names = self.names.values().map(|(seen, at)| *at + wait(*seen));
        names.chain(self.rescan.map(|at| at + DEBOUNCE)).min()
    }

    /// The names due at `now`, and whether a rescan is; they are forgotten.
    pub fn take(&mut self, now: Instant) -> (BTreeSet<String>, bool) {
        let due: BTreeSet<String> = (self.names.iter())
            .filter(|(_, (seen, at))| *at + wait(*seen) <= now)
            .map(|(name, _)| name.clone())
            .collect();
        self.names.retain(|name, _| !due.contains(name));
        let rescan = self.rescan.is_some_and(|at| at + DEBOUNCE <= now);
        if rescan {
            self.rescan = None;
        }
        (due, rescan)
    }
}

fn wait(seen: Seen) -> Duration {
    match seen {
        Seen::Done => DEBOUNCE,
        Seen::Writing => WRITE_GRACE,
    }
}

/// What one wait for the directory's events found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub names: Vec<(String, Seen)>,
    /// Events were lost (the queue overflowed): every file must be looked at.
    pub overflow: bool,
    /// The directory was deleted, moved or unmounted: the watch is gone.
    pub lost: bool,
}

/// How long the thread waits in `poll` before it looks whether anyone still listens.
const LISTENER_CHECK: u16 = 1000;

/// An inotify watch on one directory.
pub struct DirWatch {
    batches: mpsc::UnboundedReceiver<std::io::Result<Batch>>,
}

impl DirWatch {
    /// Watch `dir`. Fails where inotify is not available or its limits are reached; the
    /// caller polls instead. The thread ends when this is dropped or the watch is lost.
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        let mask = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_ONLYDIR;
        inotify.add_watch(dir, mask)?;
        let (tx, batches) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("manifests-inotify".into())
            .spawn(move || pump(&inotify, &tx))?;
        Ok(Self { batches })
    }

    /// The next batch of events.
    pub async fn next(&mut self) -> std::io::Result<Batch> {
        self.batches
            .recv()
            .await
            .unwrap_or_else(|| Err(std::io::Error::other("the inotify thread stopped")))
    }
}

/// Wait for events and send each batch, until nobody listens or the watch is gone.
fn pump(inotify: &Inotify, tx: &mpsc::UnboundedSender<std::io::Result<Batch>>) {
    while !tx.is_closed() {
        let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(LISTENER_CHECK)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(errno) => {
                let _ = tx.send(Err(errno.into()));
                return;
            }
        }
        let mut batch = Batch::default();
        loop {
            match inotify.read_events() {
                Ok(events) => {
                    for event in events {
                        note(&mut batch, event.mask, event.name.as_deref());
                    }
                }
                Err(Errno::EAGAIN) => break,
                Err(errno) => {
                    let _ = tx.send(Err(errno.into()));
                    return;
                }
            }
        }
        let lost = batch.lost;
        if tx.send(Ok(batch)).is_err() || lost {
            return;
        }
    }
}

/// What one event means.
fn note(batch: &mut Batch, mask: AddWatchFlags, name: Option<&std::ffi::OsStr>) {
    if mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
        batch.overflow = true;
    }
    let gone = AddWatchFlags::IN_IGNORED
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_UNMOUNT;
    if mask.intersects(gone) {
        batch.lost = true;
    }
    let Some(name) = name else { return };
    let name = name.to_string_lossy().into_owned();
    let writing = AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MODIFY;
    // A directory created in the watched one is not written to (a ConfigMap's new version
    // is, and its `..data` swap follows).
    let seen = if mask.intersects(writing) && !mask.contains(AddWatchFlags::IN_ISDIR) {
        Seen::Writing
    } else {
        Seen::Done
    };
    batch.names.push((name, seen));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_file_is_due_after_the_debounce_and_one_being_written_after_its_grace() {
        let t0 = Instant::now();
        let mut due = Due::default();
        due.note("a.yaml", Seen::Done, t0);
        due.note("b.yaml", Seen::Writing, t0);
        assert_eq!(due.next(), Some(t0 + DEBOUNCE));
        assert_eq!(due.take(t0), (BTreeSet::new(), false), "nothing yet");
        let (names, rescan) = due.take(t0 + DEBOUNCE);
        assert_eq!(names, BTreeSet::from(["a.yaml".to_string()]));
        assert!(!rescan);
        assert_eq!(due.next(), Some(t0 + WRITE_GRACE));
        // Its writer closes it: due after the debounce, not the grace.
        due.note("b.yaml", Seen::Done, t0 + DEBOUNCE);
        let (names, _) = due.take(t0 + DEBOUNCE * 2);
        assert_eq!(names, BTreeSet::from(["b.yaml".to_string()]));
        assert_eq!(due.next(), None);
    }

    #[test]
    fn a_burst_of_writes_is_one_read_after_the_last() {
        let t0 = Instant::now();
        let mut due = Due::default();
        for i in 0..10u32 {
            due.note("a.yaml", Seen::Done, t0 + Duration::from_millis(i.into()));
        }
        assert!(due.take(t0 + DEBOUNCE).0.is_empty(), "the burst goes on");
        assert_eq!(
            due.take(t0 + Duration::from_millis(9) + DEBOUNCE).0.len(),
            1
        );
    }

    #[test]
    fn a_configmap_swap_asks_for_a_rescan() {
        let t0 = Instant::now();
        let mut due = Due::default();
        due.note(CONFIGMAP_DATA, Seen::Done, t0);
        let (names, rescan) = due.take(t0 + DEBOUNCE);
        assert!(names.is_empty() && rescan);
        assert_eq!(due.next(), None);
    }

    #[test]
    fn events_say_what_they_mean() {
        let mut batch = Batch::default();
        let name = Some(std::ffi::OsStr::new("p.yaml"));
        note(&mut batch, AddWatchFlags::IN_MODIFY, name);
        note(&mut batch, AddWatchFlags::IN_CLOSE_WRITE, name);
        note(
            &mut batch,
            AddWatchFlags::IN_CREATE | AddWatchFlags::IN_ISDIR,
            name,
        );
        note(&mut batch, AddWatchFlags::IN_Q_OVERFLOW, None);
        assert_eq!(
            batch.names,
            [
                ("p.yaml".to_string(), Seen::Writing),
                ("p.yaml".to_string(), Seen::Done),
                ("p.yaml".to_string(), Seen::Done),
            ]
        );
        assert!(batch.overflow && !batch.lost);
        note(&mut batch, AddWatchFlags::IN_DELETE_SELF, None);
        assert!(batch.lost);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_file_written_in_the_directory_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let mut watch = DirWatch::new(dir.path()).unwrap();
        std::fs::write(dir.path().join("p.yaml"), "x").unwrap();
        // The create may come in a batch of its own, before the write is closed.
        let done = ("p.yaml".to_string(), Seen::Done);
        let mut seen = Vec::new();
        while !seen.contains(&done) {
            let batch = tokio::time::timeout(Duration::from_secs(5), watch.next())
                .await
                .unwrap_or_else(|_| panic!("no close of p.yaml in 5 s: {seen:?}"))
                .unwrap();
            seen.extend(batch.names);
        }
    }
}
