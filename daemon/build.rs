//! The commit the daemon is built from, for its start log and `podwall_build_info`:
//! `PODWALL_COMMIT` when the build sets it (an image built without the repository), else
//! `git` in a checkout, else `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PODWALL_COMMIT");
    let commit = std::env::var("PODWALL_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(git_head)
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=PODWALL_COMMIT={commit}");
}

/// HEAD's short id, and a rerun whenever HEAD moves.
fn git_head() -> Option<String> {
    let git = |args: &[&str]| {
        let out = Command::new("git").args(args).output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
    };
    let head_log = git(&[
        "rev-parse",
        "--path-format=absolute",
        "--git-path",
        "logs/HEAD",
    ])?;
    println!("cargo:rerun-if-changed={head_log}");
    git(&["rev-parse", "--short=12", "HEAD"])
}
