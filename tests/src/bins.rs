//! Where the programs under test are: the static `podwall` plugin, `podwalld`, the Debian CNI
//! plugins, and the libcni runner (built from `tests/cnitool/main.go` once per process).
//!
//! `tests/setup.sh` builds podwall's binaries; the rig never runs cargo itself, so a test run
//! does not hide a stale or missing build behind a long compile.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cmd;

/// Where Debian's `containernetworking-plugins` puts bridge, host-local and friends.
pub const DEBIAN_CNI_DIR: &str = "/usr/lib/cni";

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
        .to_path_buf()
}

/// Cargo's target directory, as the scripts use it.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The static plugin (`PODWALL_PLUGIN` overrides).
pub fn plugin() -> PathBuf {
    built(
        "PODWALL_PLUGIN",
        target_dir().join("x86_64-unknown-linux-gnu/release/podwall"),
    )
}

/// The release daemon (`PODWALLD` overrides).
pub fn daemon() -> PathBuf {
    built("PODWALLD", target_dir().join("release/podwalld"))
}

fn built(var: &str, default: PathBuf) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or(default);
    if !path.is_file() {
        panic!(
            "{} not found (set {var} to override): run tests/setup.sh first",
            path.display()
        );
    }
    path
}

/// A Debian CNI plugin, checked to be installed.
pub fn debian_plugin(name: &str) -> PathBuf {
    let path = Path::new(DEBIAN_CNI_DIR).join(name);
    if !path.is_file() {
        panic!(
            "{} not found: install containernetworking-plugins (tests/setup.sh does)",
            path.display()
        );
    }
    path
}

/// The libcni runner, built on first use in this process.
pub fn cnitool() -> PathBuf {
    static TOOL: OnceLock<PathBuf> = OnceLock::new();
    TOOL.get_or_init(|| {
        build_cnitool().unwrap_or_else(|e| panic!("building the libcni runner: {e:#}"))
    })
    .clone()
}

fn build_cnitool() -> Result<PathBuf> {
    let source = workspace_root().join("tests/cnitool/main.go");
    let gopath = Path::new("/usr/share/gocode");
    if !gopath
        .join("src/github.com/containernetworking/cni/libcni")
        .is_dir()
    {
        bail!(
            "libcni source not found under {}: install golang-github-appc-cni-dev (tests/setup.sh does)",
            gopath.display()
        );
    }
    let dir = target_dir().join("pwt-cnitool");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let out = dir.join("pwt-cnitool");
    // Build under a private name and rename: test processes running side by side never see
    // a half-written binary.
    let partial = dir.join(format!("pwt-cnitool.{}", std::process::id()));
    let mut go = Command::new("go");
    go.arg("build")
        .arg("-o")
        .arg(&partial)
        .arg(&source)
        .env("GO111MODULE", "off")
        .env("GOPATH", gopath)
        .env("GOCACHE", dir.join("gocache"))
        .env("GOFLAGS", "");
    cmd::run(&mut go, None, Duration::from_secs(300))?
        .ok()
        .context("go build (install golang-go and golang-github-appc-cni-dev: tests/setup.sh)")?;
    std::fs::rename(&partial, &out)
        .with_context(|| format!("moving {} into place", out.display()))?;
    Ok(out)
}
