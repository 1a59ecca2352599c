//! Issue 16: the README's cnitool walkthrough works as written. Its `sh` block is run line
//! for line by bash, but for its first line (`bash tests/setup.sh`, which `tests/run.sh`
//! has run), with the namespaces and the scratch directory given unique names, from a
//! directory that holds only links to the repository's `tests/` and build output (so that
//! the runner it builds lands there, not in the repository).

use std::path::Path;
use std::process::Command;

use podwall_tests::bins;
use podwall_tests::netns::{require_root, unique_name};

/// The first `sh` block after `heading` in the README.
fn block_after(readme: &str, heading: &str) -> String {
    let section = readme
        .split_once(heading)
        .unwrap_or_else(|| panic!("the README has no {heading:?}"))
        .1;
    let start = section.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let end = section[start..].find("```").expect("the block's end");
    section[start..start + end].to_string()
}

/// Removes what the walkthrough makes, whatever happened to it.
struct Cleanup {
    namespaces: [String; 2],
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let pids = Command::new("ip").args(["netns", "pids", ns]).output();
            for pid in pids
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
                .split_whitespace()
            {
                let _ = Command::new("kill").arg(pid).status();
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn the_cnitool_walkthrough_runs_as_written() {
    require_root();
    let readme = std::fs::read_to_string(bins::workspace_root().join("README.md"))
        .expect("reading the README");
    let block = block_after(&readme, "## Try it with cnitool");
    let (setup, rest) = block.split_once('\n').expect("more than one line");
    assert!(setup.starts_with("bash tests/setup.sh"), "{setup}");

    let scratch = tempfile::Builder::new()
        .prefix("pwt-readme-")
        .tempdir()
        .expect("a scratch directory");
    let here = scratch.path().join("cwd");
    std::fs::create_dir(&here).expect("a working directory");
    let link = |name: &str, to: &Path| {
        std::os::unix::fs::symlink(to, here.join(name)).expect("linking into the working directory")
    };
    link("tests", &bins::workspace_root().join("tests"));
    link("target", &bins::target_dir());
    let cleanup = Cleanup {
        namespaces: [unique_name("try-node"), unique_name("try-pod")],
    };
    let dir = scratch.path().join("try");
    let script = rest
        .replace("try-node", &cleanup.namespaces[0])
        .replace("try-pod", &cleanup.namespaces[1])
        .replace("/tmp/podwall-try", &dir.display().to_string());

    let out = Command::new("timeout")
        .args(["300", "bash", "-e", "-c", &script])
        .current_dir(&here)
        .output()
        .expect("running bash");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    let context =
        format!("--- script ---\n{script}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    assert!(out.status.success(), "{}\n{context}", out.status);
    // The chained conflist, the pod's table entry into deny-all's chain, its enforcement,
    // the daemon's log of the attach, and nothing left behind.
    assert!(
        stdout.contains(r#""type": "podwall""#) || stdout.contains(r#""type":"podwall""#),
        "{context}"
    );
    assert!(stdout.contains(": jump in_"), "{context}");
    let front = stdout.lines().find(|l| l.starts_with("shop/front\t"));
    let front = front.unwrap_or_else(|| panic!("podwalld pods lists no shop/front\n{context}"));
    assert!(
        front.contains("\tattached\t") && front.contains("shop/deny-all"),
        "{front}"
    );
    assert!(stderr.contains("attached pod=shop/front"), "{context}");
    assert!(!dir.exists(), "the walkthrough removes its directory");
    assert!(!here.join("cnitool").exists(), "and its runner");
    drop(cleanup);
}
