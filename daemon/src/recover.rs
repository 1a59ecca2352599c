//! Attachments the store lost, rebuilt from what the node knows: the container runtime's
//! libcni cache keeps every successful ADD's result and CNI_ARGS in
//! `<dir>/results/<network>-<container id>-<ifname>` until the DEL, and podwall returns the
//! bridge's result unchanged, so the entry says everything the attachment said.

use std::path::Path;

use podwall::cni::attachment_from_cache;
use podwall::wire::{Attachment, AttachmentId};

/// The attachment `id` as the runtime's cache under `cache_dir` records it, or why not.
pub fn from_cni_cache(cache_dir: &Path, id: &AttachmentId) -> Result<Attachment, String> {
    let results = cache_dir.join("results");
    // The network name is the conflist's and unknown here; the suffix names the attachment.
    let suffix = format!("-{}-{}", id.container_id, id.ifname);
    let entries = std::fs::read_dir(&results)
        .map_err(|e| format!("cannot read {}: {e}", results.display()))?;
    let mut unreadable = Vec::new();
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().ends_with(&suffix) {
            continue;
        }
        let path = entry.path();
        let read = std::fs::read(&path).map_err(|e| e.to_string());
        match read.and_then(|bytes| attachment_from_cache(&bytes).map_err(|e| e.to_string())) {
            Ok(attachment) if attachment.id == *id => return Ok(attachment),
            Ok(_) => {} // another attachment whose names end alike
            Err(e) => unreadable.push(format!("{}: {e}", path.display())),
        }
    }
    Err(format!(
        "no readable cached result for container {} interface {} in {}{}",
        id.container_id,
        id.ifname,
        results.display(),
        unreadable
            .iter()
            .map(|e| format!("; {e}"))
            .collect::<String>()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENTRY: &str = r#"{"kind":"cniCacheV1","containerId":"c1","ifName":"eth0",
        "networkName":"k8s","cniArgs":[["K8S_POD_NAMESPACE","shop"],["K8S_POD_NAME","front"]],
        "result":{"cniVersion":"1.0.0","interfaces":[{"name":"br0"},{"name":"veth9"},
        {"name":"eth0","sandbox":"/run/netns/p"}],"ips":[{"address":"10.244.1.5/24"}]}}"#;

    fn id(container: &str) -> AttachmentId {
        AttachmentId {
            container_id: container.into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn an_attachment_is_found_by_its_container_and_interface() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("results")).unwrap();
        std::fs::write(dir.path().join("results/k8s-c1-eth0"), ENTRY).unwrap();
        // Names that end alike: another container, and an entry that cannot be read.
        std::fs::write(
            dir.path().join("results/k8s-a-c1-eth0"),
            ENTRY.replace("\"c1\"", "\"a-c1\""),
        )
        .unwrap();
        std::fs::write(dir.path().join("results/other-c1-eth0"), "{").unwrap();
        let attachment = from_cni_cache(dir.path(), &id("c1")).unwrap();
        assert_eq!(attachment.pod.to_string(), "shop/front");
        assert_eq!(attachment.host_interface.as_deref(), Some("veth9"));
        let missing = from_cni_cache(dir.path(), &id("c2")).unwrap_err();
        assert!(missing.contains("c2"), "{missing}");
        let none = from_cni_cache(&dir.path().join("nope"), &id("c1")).unwrap_err();
        assert!(none.contains("cannot read"), "{none}");
    }
}
