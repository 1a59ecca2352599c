//! Kubernetes Events on the NetworkPolicies and ClusterNetworkPolicies that fail to compile,
//! so that their authors see the problem in `kubectl describe`, not only in this node's log.

use std::collections::BTreeSet;

use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::Client;
use tracing::warn;

use super::Broken;

/// Posts one Warning Event per broken policy version: a policy relisted or re-sent unchanged
/// is logged again but not posted again.
pub(super) struct BrokenPolicyEvents {
    recorder: Recorder,
    /// The (uid, resourceVersion) of each version already posted.
    posted: BTreeSet<(String, String)>,
}

impl BrokenPolicyEvents {
    /// Events signed by this node's podwall.
    pub(super) fn new(client: Client, node: String) -> Self {
        let reporter = Reporter {
            controller: "podwall".into(),
            instance: Some(node),
        };
        Self {
            recorder: Recorder::new(client, reporter),
            posted: BTreeSet::new(),
        }
    }

    pub(super) async fn report(&mut self, broken: &Broken) {
        let name = broken.name();
        let note: Vec<String> = broken.errors.iter().map(ToString::to_string).collect();
        let kind = broken.object.kind.as_deref().unwrap_or("NetworkPolicy");
        warn!(policy = %name, kind, errors = ?note, "policy does not compile; the pods it selects stay isolated");
        let object = &broken.object;
        let read = (
            object.uid.clone().unwrap_or_default(),
            broken.version.clone(),
        );
        if !self.posted.insert(read) {
            return;
        }
        let event = KubeEvent {
            type_: EventType::Warning,
            reason: format!("Invalid{kind}"),
            note: Some(truncate(
                &format!(
                    "podwall enforces nothing this policy allows, and isolates the pods it selects: {}",
                    note.join("; ")
                ),
                1000,
            )),
            action: "Compile".into(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, object).await {
            warn!(policy = %name, error = %err, "cannot post the event on the policy");
        }
    }
}

/// Shortens a note, marking the cut: the API server rejects an Event whose note exceeds 1 kB.
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}
