//! The daemon's state: the node's attachments, what we applied to the kernel, and the one
//! place where requests turn into kernel transactions and store writes.
//!
//! `Core` is synchronous and owns its `Kernel` and `Store`; the socket server calls it from a
//! blocking task under one lock, so transactions never interleave.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Context;
use podwall::wire::{Attachment, AttachmentId, ErrorKind, Reply, Request, WireError};
use tracing::{info, warn};

use crate::dataplane::names::{pod_chain, Direction};
use crate::dataplane::{plan, Chain, Kernel, MapName, Rule, Table};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::store::Store;

pub struct Core {
    store: Store,
    kernel: Box<dyn Kernel>,
    attachments: BTreeMap<AttachmentId, Attachment>,
    applied: Table,
    metrics: std::sync::Arc<Metrics>,
    health: std::sync::Arc<Health>,
}

/// The table the attachments call for. Until policies are compiled in, every attached pod
/// gets chains that allow everything: present, so that the dispatch maps cover the pod.
pub fn desired_table(attachments: &BTreeMap<AttachmentId, Attachment>) -> Table {
    let mut table = Table::base();
    for attachment in attachments.values() {
        let ingress = pod_chain(&attachment.id, Direction::Ingress);
        let egress = pod_chain(&attachment.id, Direction::Egress);
        table.chains.insert(
            ingress.clone(),
            Chain {
                hook: None,
                rules: vec![Rule::Accept],
            },
        );
        table.chains.insert(
            egress.clone(),
            Chain {
                hook: None,
                rules: vec![Rule::Return],
            },
        );
        for ip in &attachment.ips {
            table
                .maps
                .entry(MapName::ingress(ip))
                .or_default()
                .insert(*ip, ingress.clone());
            table
                .maps
                .entry(MapName::egress(ip))
                .or_default()
                .insert(*ip, egress.clone());
        }
    }
    table
}

impl Core {
    /// Load the store and put its state in the kernel in one atomic replace: a restart never
    /// leaves a moment without rules, and never flushes before the new state is in.
    pub fn start(
        store: Store,
        mut kernel: Box<dyn Kernel>,
        metrics: std::sync::Arc<Metrics>,
        health: std::sync::Arc<Health>,
    ) -> anyhow::Result<Self> {
        let attachments = store.attachments().context("loading attachments")?;
        let desired = desired_table(&attachments);
        kernel
            .replace(&desired)
            .context("programming the kernel at start")?;
        info!(
            attachments = attachments.len(),
            "programmed kernel from store"
        );
        metrics.set_attachments(attachments.len());
        health.set_ready();
        Ok(Self {
            store,
            kernel,
            attachments,
            applied: desired,
            metrics,
            health,
        })
    }

    pub fn handle(&mut self, request: Request) -> Result<Reply, WireError> {
        match request {
            Request::Attach { attachment } => {
                let started = Instant::now();
                let result = self.attach(attachment);
                self.metrics
                    .observe_attach(started.elapsed(), result.is_ok());
                result
            }
            Request::Detach { id } => self.detach(&id),
            Request::Check { id } => self.check(&id),
            Request::Status => Ok(Reply::Status {
                ready: self.health.is_ready(),
                attachments: self.attachments.len(),
                reason: self.health.reason(),
            }),
            Request::Gc { valid } => self.gc(&valid),
        }
    }

    fn attach(&mut self, attachment: Attachment) -> Result<Reply, WireError> {
        validate(&attachment)?;
        let mut next = self.attachments.clone();
        // An address still held by another attachment means that pod went away without a DEL
        // and its address was handed out again: the new pod owns it now.
        let stale: Vec<AttachmentId> = next
            .values()
            .filter(|a| a.id != attachment.id && a.ips.iter().any(|ip| attachment.ips.contains(ip)))
            .map(|a| a.id.clone())
            .collect();
        for id in &stale {
            warn!(pod = %next[id].pod, container_id = %id.container_id, "address reused; dropping stale attachment");
            next.remove(id);
        }
        next.insert(attachment.id.clone(), attachment.clone());
        self.commit(next)?;
        for id in &stale {
            self.store.remove_attachment(id).map_err(store_error)?;
        }
        self.store
            .put_attachment(&attachment)
            .map_err(store_error)?;
        info!(pod = %attachment.pod, container_id = %attachment.id.container_id, "attached");
        let chains = vec![
            pod_chain(&attachment.id, Direction::Ingress),
            pod_chain(&attachment.id, Direction::Egress),
        ];
        Ok(Reply::Attached { chains })
    }

    fn detach(&mut self, id: &AttachmentId) -> Result<Reply, WireError> {
        let Some(attachment) = self.attachments.get(id).cloned() else {
            // Still clear a record the store might hold from a crash between writes.
            let existed = self.store.remove_attachment(id).map_err(store_error)?;
            return Ok(Reply::Detached { existed });
        };
        let mut next = self.attachments.clone();
        next.remove(id);
        self.commit(next)?;
        self.store.remove_attachment(id).map_err(store_error)?;
        info!(pod = %attachment.pod, container_id = %id.container_id, "detached");
        Ok(Reply::Detached { existed: true })
    }

    fn check(&mut self, id: &AttachmentId) -> Result<Reply, WireError> {
        let attachment = self
            .attachments
            .get(id)
            .ok_or_else(|| WireError::new(ErrorKind::NotAttached, format!("no attachment {id}")))?;
        let kernel = self
            .kernel
            .dump_table()
            .map_err(|e| {
                WireError::new(ErrorKind::Kernel, format!("{:#}", anyhow::Error::from(e)))
            })?
            .ok_or_else(|| {
                WireError::new(
                    ErrorKind::RulesMissing,
                    "the podwall table is missing from the kernel",
                )
            })?;
        let mut mine = BTreeMap::new();
        mine.insert(id.clone(), attachment.clone());
        let expected = desired_table(&mine);
        let mut missing = Vec::new();
        for (name, chain) in &expected.chains {
            if kernel.chains.get(name) != Some(chain) {
                missing.push(format!("chain {name}"));
            }
        }
        for (map, elements) in &expected.maps {
            for (addr, chain) in elements {
                if kernel.element(*map, addr) != Some(chain.as_str()) {
                    missing.push(format!("{} element {addr}", map.as_str()));
                }
            }
        }
        if missing.is_empty() {
            Ok(Reply::Checked)
        } else {
            Err(WireError::new(
                ErrorKind::RulesMissing,
                format!("{} is missing {}", attachment.pod, missing.join(", ")),
            ))
        }
    }

    fn gc(&mut self, valid: &[AttachmentId]) -> Result<Reply, WireError> {
        let removed: Vec<AttachmentId> = self
            .attachments
            .keys()
            .filter(|id| !valid.contains(id))
            .cloned()
            .collect();
        if removed.is_empty() {
            return Ok(Reply::Gc { removed });
        }
        let next = self
            .attachments
            .iter()
            .filter(|(id, _)| valid.contains(id))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.commit(next)?;
        for id in &removed {
            self.store.remove_attachment(id).map_err(store_error)?;
        }
        info!(removed = removed.len(), "garbage-collected attachments");
        Ok(Reply::Gc { removed })
    }

    /// Turn the kernel from what we applied into what `next` needs, as one transaction.
    fn commit(&mut self, next: BTreeMap<AttachmentId, Attachment>) -> Result<(), WireError> {
        let desired = desired_table(&next);
        let batch = plan(Some(&self.applied), &desired);
        let started = Instant::now();
        let result = self.kernel.apply(&batch);
        self.metrics
            .observe_transaction(started.elapsed(), result.is_ok());
        if let Err(err) = result {
            let err = anyhow::Error::from(err);
            self.health
                .set_failed(format!("last commit failed: {err:#}"));
            return Err(WireError::new(ErrorKind::Kernel, format!("{err:#}")));
        }
        self.health.set_ready();
        self.applied = desired;
        self.attachments = next;
        self.metrics.set_attachments(self.attachments.len());
        Ok(())
    }
}

fn validate(attachment: &Attachment) -> Result<(), WireError> {
    let bad = |what: &str| {
        Err(WireError::new(
            ErrorKind::BadRequest,
            format!("attachment {what}"),
        ))
    };
    if attachment.id.container_id.is_empty() || attachment.id.ifname.is_empty() {
        return bad("needs a container id and an interface name");
    }
    if attachment.ips.is_empty() {
        return bad("has no IP addresses");
    }
    Ok(())
}

fn store_error(err: crate::store::StoreError) -> WireError {
    WireError::new(ErrorKind::Store, format!("{:#}", anyhow::Error::from(err)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::RecordingKernel;
    use podwall::wire::PodRef;
    use std::sync::{Arc, Mutex};

    /// A kernel the test can look into after handing it to `Core`.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<RecordingKernel>>);

    impl Kernel for Shared {
        fn apply(
            &mut self,
            batch: &crate::dataplane::Batch,
        ) -> Result<(), crate::dataplane::DataplaneError> {
            self.0.lock().unwrap().apply(batch)
        }
        fn dump_table(&mut self) -> Result<Option<Table>, crate::dataplane::DataplaneError> {
            self.0.lock().unwrap().dump_table()
        }
        fn replace(&mut self, desired: &Table) -> Result<(), crate::dataplane::DataplaneError> {
            self.0.lock().unwrap().replace(desired)
        }
    }

    fn attachment(container: &str, ip: &str) -> Attachment {
        Attachment {
            id: AttachmentId {
                container_id: container.into(),
                ifname: "eth0".into(),
            },
            pod: PodRef {
                namespace: "x".into(),
                name: container.into(),
                uid: None,
            },
            netns: format!("/run/netns/{container}"),
            ips: vec![ip.parse().unwrap()],
            host_interface: None,
        }
    }

    fn core(dir: &std::path::Path) -> (Core, Shared) {
        let kernel = Shared::default();
        let core = Core::start(
            Store::open(dir).unwrap(),
            Box::new(kernel.clone()),
            Arc::new(Metrics::default()),
            Arc::new(Health::default()),
        )
        .unwrap();
        (core, kernel)
    }

    #[test]
    fn attach_adds_only_the_pods_chains_and_elements() {
        let dir = tempfile::tempdir().unwrap();
        let (mut core, kernel) = core(dir.path());
        core.handle(Request::Attach {
            attachment: attachment("a", "10.0.0.2"),
        })
        .unwrap();
        let k = kernel.0.lock().unwrap();
        let batch = k.batches.last().unwrap();
        assert_eq!(batch.len(), 4, "two chains, two elements: {batch:?}");
        let table = k.table.as_ref().unwrap();
        let chain = table
            .element(MapName::Ingress4, &"10.0.0.2".parse().unwrap())
            .unwrap();
        assert!(table.chains.contains_key(chain));
    }

    #[test]
    fn detach_removes_what_attach_added() {
        let dir = tempfile::tempdir().unwrap();
        let (mut core, kernel) = core(dir.path());
        core.handle(Request::Attach {
            attachment: attachment("a", "10.0.0.2"),
        })
        .unwrap();
        let reply = core
            .handle(Request::Detach {
                id: attachment("a", "10.0.0.2").id,
            })
            .unwrap();
        assert_eq!(reply, Reply::Detached { existed: true });
        assert_eq!(
            kernel.0.lock().unwrap().table.as_ref(),
            Some(&Table::base())
        );
        assert_eq!(
            core.handle(Request::Detach {
                id: attachment("a", "10.0.0.2").id
            })
            .unwrap(),
            Reply::Detached { existed: false }
        );
    }

    #[test]
    fn check_notices_a_deleted_element() {
        let dir = tempfile::tempdir().unwrap();
        let (mut core, kernel) = core(dir.path());
        core.handle(Request::Attach {
            attachment: attachment("a", "10.0.0.2"),
        })
        .unwrap();
        assert_eq!(
            core.handle(Request::Check {
                id: attachment("a", "10.0.0.2").id
            }),
            Ok(Reply::Checked)
        );
        kernel
            .0
            .lock()
            .unwrap()
            .table
            .as_mut()
            .unwrap()
            .maps
            .get_mut(&MapName::Egress4)
            .unwrap()
            .clear();
        let err = core
            .handle(Request::Check {
                id: attachment("a", "10.0.0.2").id,
            })
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::RulesMissing);
        assert!(
            err.message.contains("egress4 element 10.0.0.2"),
            "{}",
            err.message
        );
        let err = core
            .handle(Request::Check {
                id: attachment("zz", "10.0.0.9").id,
            })
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotAttached);
    }

    #[test]
    fn a_rejected_transaction_records_nothing_and_marks_health() {
        let dir = tempfile::tempdir().unwrap();
        let (mut core, kernel) = core(dir.path());
        kernel.0.lock().unwrap().fail_next = Some("no memory".into());
        let err = core
            .handle(Request::Attach {
                attachment: attachment("a", "10.0.0.2"),
            })
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Kernel);
        assert!(!core.health.is_ready());
        assert_eq!(core.store.attachments().unwrap().len(), 0);
        core.handle(Request::Attach {
            attachment: attachment("a", "10.0.0.2"),
        })
        .unwrap();
        assert!(core.health.is_ready(), "a later success clears the failure");
    }

    #[test]
    fn restart_restores_attachments_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut core, _) = core(dir.path());
            core.handle(Request::Attach {
                attachment: attachment("a", "10.0.0.2"),
            })
            .unwrap();
            core.handle(Request::Attach {
                attachment: attachment("b", "10.0.0.3"),
            })
            .unwrap();
        }
        let (mut core, kernel) = core(dir.path());
        let mut two = BTreeMap::new();
        for a in [attachment("a", "10.0.0.2"), attachment("b", "10.0.0.3")] {
            two.insert(a.id.clone(), a);
        }
        assert_eq!(
            kernel.0.lock().unwrap().table.as_ref(),
            Some(&desired_table(&two))
        );
        assert!(matches!(
            core.handle(Request::Status),
            Ok(Reply::Status {
                ready: true,
                attachments: 2,
                ..
            })
        ));
    }

    #[test]
    fn a_reused_address_moves_to_the_new_pod() {
        let dir = tempfile::tempdir().unwrap();
        let (mut core, _) = core(dir.path());
        core.handle(Request::Attach {
            attachment: attachment("old", "10.0.0.2"),
        })
        .unwrap();
        core.handle(Request::Attach {
            attachment: attachment("new", "10.0.0.2"),
        })
        .unwrap();
        let stored = core.store.attachments().unwrap();
        assert_eq!(
            stored
                .keys()
                .map(|k| k.container_id.as_str())
                .collect::<Vec<_>>(),
            vec!["new"]
        );
    }

    #[test]
    fn gc_keeps_only_valid_attachments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut core, _) = core(dir.path());
        core.handle(Request::Attach {
            attachment: attachment("a", "10.0.0.2"),
        })
        .unwrap();
        core.handle(Request::Attach {
            attachment: attachment("b", "10.0.0.3"),
        })
        .unwrap();
        let reply = core
            .handle(Request::Gc {
                valid: vec![attachment("b", "10.0.0.3").id],
            })
            .unwrap();
        assert_eq!(
            reply,
            Reply::Gc {
                removed: vec![attachment("a", "10.0.0.2").id]
            }
        );
        assert_eq!(core.attachments.len(), 1);
    }

    #[test]
    fn attachment_without_addresses_is_a_bad_request() {
        let dir = tempfile::tempdir().unwrap();
        let (mut core, _) = core(dir.path());
        let mut a = attachment("a", "10.0.0.2");
        a.ips.clear();
        assert_eq!(
            core.handle(Request::Attach { attachment: a })
                .unwrap_err()
                .kind,
            ErrorKind::BadRequest
        );
    }
}
