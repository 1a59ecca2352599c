//! Throw-away network namespaces, named `pwt-<pid>-<n>-<label>` and deleted on drop.
//!
//! A test never moves its own thread into a namespace: `run_in` runs the closure on a fresh
//! thread that `setns`es, so the test thread (and the rest of the process) stays where it was.
//! Sockets keep the namespace they were created in, so a closure may return a socket that the
//! test then uses from any thread.

use std::fs::File;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use nix::sched::CloneFlags;

use crate::cmd::{self, Output};

/// Every name the rig hands out in this process is unique thanks to this counter.
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh number, unique in this process.
pub fn next_id() -> usize {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// `pwt-<pid>-<n>-<label>`: the prefix lets the test scripts sweep leftovers of a crashed run.
pub fn unique_name(label: &str) -> String {
    format!("pwt-{}-{}-{label}", std::process::id(), next_id())
}

/// Root tests fail loudly without root instead of passing vacuously.
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "run as root: this test creates network namespaces \
             (sudo bash tests/run.sh, or as root: cargo test -p podwall-tests -- --ignored)"
        );
    }
}

/// A network namespace that exists while this value does.
#[derive(Debug)]
pub struct TestNetns {
    name: String,
}

impl TestNetns {
    /// Create `pwt-<pid>-<n>-<label>` with `lo` up. Panics when not root or when `ip` fails:
    /// nothing a test does makes sense without it.
    pub fn new(label: &str) -> Self {
        require_root();
        let name = unique_name(label);
        cmd::sh(&["ip", "netns", "add", &name])
            .unwrap_or_else(|e| panic!("creating netns {name}: {e:#}"));
        // From here on Drop deletes it, also if bringing lo up fails.
        let ns = TestNetns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"])
            .and_then(Output::ok)
            .unwrap_or_else(|e| panic!("bringing lo up in {}: {e:#}", ns.name));
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, what CNI calls the pod's netns path.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Run `f` on a new thread inside this namespace and return its result; a panic in `f`
    /// is passed on to the caller.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = File::open(self.path())
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.path().display()));
        let name = &self.name;
        std::thread::scope(|s| {
            let handle = s.spawn(move || {
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("entering netns {name}: {e}"));
                f()
            });
            handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// `ip netns exec <name> <program>`, to be completed by the caller (args, env).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Run a short command inside the namespace with the usual timeout. The exit status is
    /// the caller's to judge (see `Output::ok`).
    pub fn exec(&self, words: &[&str]) -> Result<Output> {
        let (program, args) = words.split_first().expect("a command has a program");
        cmd::run(self.command(program).args(args), None, cmd::SHORT)
            .with_context(|| format!("in netns {}", self.name))
    }

    /// Write a sysctl of this namespace (`net.ipv4.ip_forward` → `/proc/sys/net/ipv4/ip_forward`).
    /// `/proc/sys/net` shows the namespace of the thread that opens it, hence `run_in`.
    pub fn set_sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        self.run_in(|| std::fs::write(&path, value))
            .with_context(|| format!("setting {key}={value} in netns {}", self.name))
    }

    /// Read a sysctl of this namespace.
    pub fn sysctl(&self, key: &str) -> Result<String> {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        self.run_in(|| std::fs::read_to_string(&path))
            .map(|v| v.trim().to_string())
            .with_context(|| format!("reading {key} in netns {}", self.name))
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        if let Err(e) = cmd::sh(&["ip", "netns", "del", &self.name]) {
            // Not a panic: we may already be unwinding, and a leftover is swept by the scripts.
            eprintln!("warning: deleting netns {}: {e:#}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_carry_the_sweep_prefix() {
        let a = unique_name("x");
        let b = unique_name("x");
        assert_ne!(a, b);
        assert!(
            a.starts_with(&format!("pwt-{}-", std::process::id())),
            "{a}"
        );
    }
}
