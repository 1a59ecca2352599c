//! Issue 2: the daemon's Unix socket is for root only and survives hostile input.

use std::io::{BufRead, BufReader, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use podwall::wire::{ErrorKind, Outcome, ReplyFrame, MAX_FRAME, VERSION};
use podwall_tests::cni::{entry_config, outcome};
use podwall_tests::node::socket_mode;
use podwall_tests::{bins, cmd, Node, Pod};

/// CNI error code of the plugin when the daemon refuses the caller.
const REFUSED: u64 = 103;

/// Run the podwall plugin as uid/gid 65534 that can still open the 0600 socket
/// (CAP_DAC_OVERRIDE): only the daemon's peer check stands in the way.
fn plugin_as_nobody(
    node: &Node,
    command: &str,
    pod: &Pod,
    config: &serde_json::Value,
) -> podwall_tests::CniOutcome {
    let mut setpriv = Command::new("setpriv");
    setpriv
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=+dac_override",
            "--ambient-caps=+dac_override",
        ])
        .arg(bins::plugin())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &pod.container_id)
        .env("CNI_NETNS", pod.netns.path())
        .env("CNI_IFNAME", &pod.ifname)
        .env("CNI_PATH", node.cni_path())
        .env_remove("CNI_ARGS");
    let stdin = serde_json::to_vec(config).expect("json serialises");
    outcome(cmd::run(&mut setpriv, Some(&stdin), cmd::SHORT).expect("setpriv runs"))
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn socket_is_mode_0600_and_non_root_peers_are_forbidden() {
    let node = Node::started("perm");
    assert_eq!(
        socket_mode(&node.socket()).expect("the daemon created its socket"),
        0o600
    );
    let pod = Pod::new("perm");
    node.add(&pod)
        .unwrap_or_else(|e| panic!("ADD as root: {e}"));
    let conf = entry_config(&node.podwall_entry(), "1.0.0");

    let check = plugin_as_nobody(&node, "CHECK", &pod, &conf).expect_err("CHECK as nobody");
    assert_eq!(check.code, Some(REFUSED), "{check}");

    let del = plugin_as_nobody(&node, "DEL", &pod, &conf).expect_err("DEL as nobody");
    assert_eq!(del.code, Some(REFUSED), "{del}");
    node.expect_attached(pod.ip4());
    assert_eq!(node.status(), (true, 1), "nobody changed nothing");
}

/// Send raw bytes, optionally close our side, and read one reply line.
fn exchange(node: &Node, bytes: &[u8], close_write: bool) -> Result<ReplyFrame, String> {
    let mut stream = UnixStream::connect(node.socket()).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // A daemon that stops reading a too-long frame may close on us mid-write; its reply
    // (or its silence) is what the test judges.
    let _ = stream.write_all(bytes);
    if close_write {
        let _ = stream.shutdown(Shutdown::Write);
    }
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| format!("reading the reply: {e}"))?;
    serde_json::from_str(&line).map_err(|e| format!("reply {line:?} is not a reply frame: {e}"))
}

/// Bytes that are no JSON and not UTF-8 either, without a newline (a fixed LCG: the same
/// every run, so a failure reproduces).
fn noise(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x2545_f491;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            match (x >> 16) as u8 {
                b'\n' => 0xff,
                b => b,
            }
        })
        .collect()
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn garbage_on_the_socket_gets_an_error_line_and_the_daemon_keeps_serving() {
    let mut node = Node::started("garbage");
    // An idle client must not stop others from being served.
    let idle = UnixStream::connect(node.socket()).expect("idle connection");

    let mut random_line = noise(512);
    random_line.push(b'\n');
    let cases: Vec<(&str, Vec<u8>, bool, ErrorKind)> = vec![
        (
            "random bytes, newline",
            random_line,
            false,
            ErrorKind::BadRequest,
        ),
        (
            "random bytes, then EOF",
            noise(300),
            true,
            ErrorKind::BadRequest,
        ),
        (
            "truncated JSON, newline",
            b"{\"version\":1,\"request\":{\"op\":\"sta\n".to_vec(),
            false,
            ErrorKind::BadRequest,
        ),
        (
            "truncated JSON, then EOF",
            b"{\"version\":1,\"requ".to_vec(),
            true,
            ErrorKind::BadRequest,
        ),
        (
            "unknown operation",
            b"{\"version\":1,\"request\":{\"op\":\"teleport\"}}\n".to_vec(),
            false,
            ErrorKind::BadRequest,
        ),
        ("empty line", b"\n".to_vec(), false, ErrorKind::BadRequest),
        (
            "other protocol version",
            b"{\"version\":99,\"request\":{\"op\":\"status\"}}\n".to_vec(),
            false,
            ErrorKind::UnsupportedVersion,
        ),
        (
            "frame over MAX_FRAME",
            vec![b'x'; MAX_FRAME + 4096],
            false,
            ErrorKind::BadRequest,
        ),
    ];
    let mut failures = Vec::new();
    for (name, bytes, close_write, kind) in cases {
        match exchange(&node, &bytes, close_write) {
            Ok(ReplyFrame {
                version,
                outcome: Outcome::Error(err),
            }) if version == VERSION && err.kind == kind => {}
            other => failures.push(format!(
                "{name}: expected a {kind:?} error line, got {other:?}"
            )),
        }
        if !node.daemon_running() {
            panic!("podwalld exited after {name}\n{}", node.daemon_log());
        }
        let (ready, _) = node.status();
        assert!(ready, "status after {name}");
    }
    drop(idle);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(node.daemon_running(), "podwalld is still alive");
}
