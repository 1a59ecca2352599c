//! Watches: each is a channel the HTTP layer drains. A new watch gets the current objects or
//! the history after its version replayed first; every later change is fanned out to it
//! (`notify`), as the event its filter makes of it; the watches of a kind no longer served
//! end (`end_watches`).

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{parse_rv, with_rv, Change, Filter, Store};
use crate::apiserver::kind::{Gvk, Kind};
use crate::apiserver::status::ApiError;

/// What a watch connection receives: a line of the stream, or the order to cut the connection
/// without closing the chunked body properly (a dropped watch, as after a network failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchMsg {
    Line(Bytes),
    Cut,
}

/// An open watch.
#[derive(Debug)]
pub(super) struct Watcher {
    /// The kind watched, and the version its events are served at.
    gvk: Gvk,
    filter: Filter,
    bookmarks: bool,
    tx: mpsc::UnboundedSender<WatchMsg>,
}

impl Store {
    /// Send `change` to every watch of its kind, as the event its filter makes of it.
    pub(super) fn notify(&mut self, change: &Change) {
        self.watchers.retain(|w| {
            if w.gvk.kind != change.kind {
                return !w.tx.is_closed();
            }
            match event_for(&w.filter, change, &w.gvk) {
                Some(line) => w.tx.send(WatchMsg::Line(line)).is_ok(),
                None => !w.tx.is_closed(),
            }
        });
    }

    /// End every watch of `kind` cleanly, after the events already queued: dropping its
    /// sender closes the stream with its final chunk.
    pub(super) fn end_watches(&mut self, kind: Kind) {
        self.watchers.retain(|w| w.gvk.kind != kind);
    }

    /// Cut every open watch connection.
    pub fn cut_watches(&mut self) {
        for w in self.watchers.drain(..) {
            let _ = w.tx.send(WatchMsg::Cut);
        }
    }

    /// Watches whose client is still connected.
    pub fn open_watches(&mut self) -> usize {
        self.watchers.retain(|w| !w.tx.is_closed());
        self.watchers.len()
    }

    /// Send a BOOKMARK with the current version to every watch that asked for bookmarks. Sent
    /// under the same lock as changes, so no later change can carry a lower version.
    pub fn bookmark_all(&mut self) {
        let rv = self.rv.to_string();
        self.watchers.retain(|w| {
            if !w.bookmarks {
                return !w.tx.is_closed();
            }
            let object = w.gvk.stamp(json!({"metadata": {"resourceVersion": rv}}));
            w.tx.send(WatchMsg::Line(event_line("BOOKMARK", &object)))
                .is_ok()
        });
    }

    /// Open a watch from `resource_version` (None, "" or "0": from now, starting with an
    /// ADDED for every existing object, as the real server does). The replayed events are
    /// already queued in the returned channel. A version older than the history answers with
    /// one ERROR event carrying a 410 `Expired` Status and ends the stream.
    pub fn watch(
        &mut self,
        gvk: Gvk,
        filter: Filter,
        resource_version: Option<&str>,
        bookmarks: bool,
    ) -> Result<mpsc::UnboundedReceiver<WatchMsg>, ApiError> {
        let (tx, rx) = mpsc::unbounded_channel();
        match parse_rv(resource_version)? {
            None => {
                for obj in self.current(gvk.kind, &filter) {
                    let _ = tx.send(WatchMsg::Line(event_line("ADDED", &gvk.stamp(obj))));
                }
            }
            Some(from) if from < self.floor => {
                let gone =
                    ApiError::expired(format!("too old resource version: {from} ({})", self.floor));
                let _ = tx.send(WatchMsg::Line(event_line("ERROR", &gone.to_status())));
                return Ok(rx);
            }
            Some(from) => {
                for change in self
                    .history
                    .iter()
                    .filter(|c| c.kind == gvk.kind && c.rv > from)
                {
                    if let Some(line) = event_for(&filter, change, &gvk) {
                        let _ = tx.send(WatchMsg::Line(line));
                    }
                }
            }
        }
        self.watchers.push(Watcher {
            gvk,
            filter,
            bookmarks,
            tx,
        });
        Ok(rx)
    }
}

/// The event a watch with `filter` at `gvk` sees for `change`, if any. An update that moves
/// an object into or out of the selection is ADDED or DELETED, as the real watch cache reports
/// it.
fn event_for(filter: &Filter, change: &Change, gvk: &Gvk) -> Option<Bytes> {
    let was = change.before.as_ref().is_some_and(|o| filter.matches(o));
    let is = change.after.as_ref().is_some_and(|o| filter.matches(o));
    let (kind, obj) = match (was, is, &change.after) {
        (false, true, Some(after)) => ("ADDED", Value::clone(after)),
        (true, true, Some(after)) => ("MODIFIED", Value::clone(after)),
        // Gone or no longer selected: the last state that matched, at this change's version.
        (true, false, _) => (
            "DELETED",
            with_rv(
                Value::clone(change.before.as_ref().expect("was matching")),
                change.rv,
            ),
        ),
        _ => return None,
    };
    Some(event_line(kind, &gvk.stamp(obj)))
}

/// `{"type":…,"object":…}` and a newline: one line of a watch stream.
fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object}))
        .expect("a JSON value serializes");
    line.push(b'\n');
    Bytes::from(line)
}
