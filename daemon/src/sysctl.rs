//! Kernel settings the dataplane depends on. Pod↔pod traffic on one bridge is switched at
//! layer 2 and reaches the `inet` forward hook only through br_netfilter with
//! `bridge-nf-call-iptables` (and `-ip6tables`) on; with them off, same-node traffic would
//! bypass every policy. The settings are per network namespace.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

const KNOBS: [&str; 2] = ["bridge-nf-call-iptables", "bridge-nf-call-ip6tables"];

/// Turn the knobs on under `proc_bridge` (normally `/proc/sys/net/bridge`), loading
/// br_netfilter first if the directory is missing. Returns the knobs that were off.
pub fn ensure_bridge_netfilter(proc_bridge: &Path) -> anyhow::Result<Vec<&'static str>> {
    if !proc_bridge.exists() {
        let status = Command::new("modprobe")
            .arg("br_netfilter")
            .status()
            .context("running modprobe br_netfilter")?;
        if !status.success() || !proc_bridge.exists() {
            bail!("br_netfilter is not available ({} missing): same-node pod traffic cannot be filtered", proc_bridge.display());
        }
    }
    let mut switched = Vec::new();
    for knob in KNOBS {
        let path: PathBuf = proc_bridge.join(knob);
        let value = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        if value.trim() != "1" {
            std::fs::write(&path, "1")
                .with_context(|| format!("writing 1 to {}", path.display()))?;
            switched.push(knob);
        }
    }
    Ok(switched)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_on_only_what_is_off() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bridge-nf-call-iptables"), "0\n").unwrap();
        std::fs::write(dir.path().join("bridge-nf-call-ip6tables"), "1\n").unwrap();
        assert_eq!(
            ensure_bridge_netfilter(dir.path()).unwrap(),
            vec!["bridge-nf-call-iptables"]
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("bridge-nf-call-iptables")).unwrap(),
            "1"
        );
        assert!(ensure_bridge_netfilter(dir.path()).unwrap().is_empty());
    }
}
