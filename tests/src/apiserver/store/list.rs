//! Lists: one page at a time, of the state now or at an exact past version (by undoing the
//! later changes in the history), with `continue` tokens that page through a snapshot frozen
//! at the first page, as etcd serves later pages at the first page's revision.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{meta_str, parse_rv, Change, Filter, Store};
use crate::apiserver::kind::Kind;
use crate::apiserver::status::ApiError;

/// The list parameters that decide which state is read and how it is paged.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ListPage {
    pub resource_version: u64,
    /// Shared with the store: a list of a big cluster copies no object.
    pub items: Vec<Arc<Value>>,
    pub continue_token: Option<String>,
    pub remaining: Option<usize>,
}

/// The items of a paginated list, frozen at its first page like etcd serves later pages at
/// the first page's revision.
#[derive(Debug)]
pub(super) struct Snapshot {
    resource_version: u64,
    items: Vec<Arc<Value>>,
}

/// How many list snapshots are kept for `continue` tokens; older tokens get 410.
const SNAPSHOTS_KEPT: usize = 64;

impl Store {
    /// One page of a list, following the real server's rules for `resourceVersion`,
    /// `resourceVersionMatch`, `limit` and `continue`.
    pub fn list(
        &mut self,
        kind: Kind,
        filter: &Filter,
        q: &ListQuery,
    ) -> Result<ListPage, ApiError> {
        let rv = q.resource_version.as_deref().filter(|v| !v.is_empty());
        let (snapshot, offset) = if let Some(token) = &q.continue_token {
            if rv.is_some() {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            self.resume(token)?
        } else {
            let at =
                match (rv, q.resource_version_match.as_deref()) {
                    (None, Some(m)) if !m.is_empty() => {
                        return Err(ApiError::bad_request(
                            "resourceVersionMatch is forbidden unless resourceVersion is provided",
                        ))
                    }
                    (Some(v), Some("Exact")) => match parse_rv(Some(v))? {
                        Some(n) => n,
                        None => return Err(ApiError::bad_request(
                            "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"",
                        )),
                    },
                    (None | Some(_), None | Some("NotOlderThan") | Some("")) => {
                        if let Some(n) = parse_rv(rv)? {
                            if n > self.rv {
                                return Err(too_large(n, self.rv));
                            }
                        }
                        self.rv
                    }
                    (_, Some(other)) => {
                        return Err(ApiError::bad_request(format!(
                            "unsupported resourceVersionMatch {other:?}"
                        )))
                    }
                };
            let items = self.state_at(kind, filter, at)?;
            let snapshot = Arc::new(Snapshot {
                resource_version: at,
                items,
            });
            (snapshot, 0)
        };
        let limit = q.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let end = offset.saturating_add(limit).min(snapshot.items.len());
        let items = snapshot.items[offset..end].to_vec();
        let (continue_token, remaining) = if end < snapshot.items.len() {
            (
                Some(self.save(snapshot.clone(), end)),
                Some(snapshot.items.len() - end),
            )
        } else {
            (None, None)
        };
        Ok(ListPage {
            resource_version: snapshot.resource_version,
            items,
            continue_token,
            remaining,
        })
    }

    fn save(&mut self, snapshot: Arc<Snapshot>, offset: usize) -> String {
        self.next_id += 1;
        self.snapshots.insert(self.next_id, snapshot);
        while self.snapshots.len() > SNAPSHOTS_KEPT {
            self.snapshots.pop_first();
        }
        format!("pwt-{}-{offset}", self.next_id)
    }

    fn resume(&self, token: &str) -> Result<(Arc<Snapshot>, usize), ApiError> {
        let parsed = token
            .strip_prefix("pwt-")
            .and_then(|t| t.split_once('-'))
            .and_then(|(id, off)| Some((id.parse::<u64>().ok()?, off.parse::<usize>().ok()?)));
        let Some((id, offset)) = parsed else {
            return Err(ApiError::bad_request(format!(
                "invalid continue token {token:?}"
            )));
        };
        match self.snapshots.get(&id) {
            Some(s) => Ok((s.clone(), offset)),
            None => Err(ApiError::expired(
                "The provided continue parameter is too old to display a consistent list result. \
                 You can start a new list without the continue parameter.",
            )),
        }
    }
    /// The matching objects as they were at version `at`, by undoing the later changes.
    fn state_at(&self, kind: Kind, filter: &Filter, at: u64) -> Result<Vec<Arc<Value>>, ApiError> {
        if at > self.rv {
            return Err(too_large(at, self.rv));
        }
        if at < self.floor {
            return Err(ApiError::expired(format!(
                "too old resource version: {at} ({})",
                self.floor
            )));
        }
        let later: Vec<&Change> = self
            .history
            .iter()
            .rev()
            .take_while(|c| c.rv > at)
            .filter(|c| c.kind == kind)
            .collect();
        let now = self.objects.get(&kind);
        if later.is_empty() {
            // The usual list, of the latest version: no copy of the kind's map.
            return Ok(now
                .into_iter()
                .flat_map(|m| m.values())
                .filter(|o| filter.matches(o))
                .cloned()
                .collect());
        }
        let mut objects = now.cloned().unwrap_or_default();
        for change in later {
            let obj = change.before.as_ref().or(change.after.as_ref());
            let obj = obj.expect("a change has an object before or after");
            let key = (
                meta_str(obj, "namespace").to_string(),
                meta_str(obj, "name").to_string(),
            );
            match &change.before {
                Some(before) => objects.insert(key, before.clone()),
                None => objects.remove(&key),
            };
        }
        Ok(objects
            .into_values()
            .filter(|o| filter.matches(o))
            .collect())
    }
}

/// The real server waits a few seconds for a future version and then answers this.
fn too_large(asked: u64, current: u64) -> ApiError {
    ApiError::new(
        504,
        "Timeout",
        format!("Too large resource version: {asked}, current: {current}"),
    )
    .with_details(json!({"causes": [{"reason": "ResourceVersionTooLarge",
        "message": "Too large resource version"}], "retryAfterSeconds": 1}))
}
